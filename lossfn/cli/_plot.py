"""The figure of ``lossfn fit --plot``: each group's points and its three fitted lines."""

from __future__ import annotations

import math
from typing import Dict, List

from ._table import Groups

__all__ = ["MAX_PANELS", "draw_fits"]

#: At most this many groups are drawn (the first ones), to keep the figure readable.
MAX_PANELS = 12

_STYLE = {
    "ols": ("OLS (mse)", "-", "tab:blue"),
    "lad": ("LAD (mae)", "--", "tab:orange"),
    "huber": ("Huber", ":", "tab:green"),
}


def draw_fits(plt, groups: Groups, records: List[Dict]):
    """One panel per group (up to :data:`MAX_PANELS`); returns the figure."""
    count = min(len(records), MAX_PANELS)
    cols = min(count, 3)
    rows = math.ceil(count / cols)
    figure, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= count:
            ax.set_visible(False)
            continue
        record = records[k]
        present = groups.mask[k]
        x = groups.x[k][present].numpy()
        y = groups.y[k][present].numpy()
        ax.scatter(x, y, s=9, color="0.4", alpha=0.7)
        if record["ok"]:
            lo, hi = float(x.min()), float(x.max())
            for method, (label, style, color) in _STYLE.items():
                a, b = record[method]["intercept"], record[method]["slope"]
                ax.plot([lo, hi], [a + b * lo, a + b * hi], style, color=color, label=label)
            title = f"{record['group']} (n={record['n']}): use {record['recommended']}"
        else:
            title = f"{record['group']} (n={record['n']}): not fitted"
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("x")
        ax.set_ylabel("y")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        figure.legend(handles, labels, loc="lower center", ncol=3, frameon=False)
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    return figure
