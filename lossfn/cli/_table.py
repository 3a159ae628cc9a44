"""Reading a CSV file into a batch of ragged groups, without pandas.

The csv module splits the cells; numpy turns the chosen columns into numbers.
Every way the file can be wrong becomes a :class:`CLIError` with one line that
says what is wrong, where, and what to do.
"""

from __future__ import annotations

import csv
import difflib
import io
from dataclasses import dataclass
from importlib import resources
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from ._errors import CLIError

__all__ = ["MISSING", "Table", "Groups", "read_csv", "read_sample", "select_groups"]

#: Cells read as a missing value (compared case-insensitively, after stripping).
MISSING = frozenset({"", "na", "n/a", "nan", "null", "none", "-"})


@dataclass(frozen=True)
class Table:
    """The header and the rows of a CSV file, as strings."""

    source: str
    header: Tuple[str, ...]
    rows: Tuple[Tuple[str, ...], ...]


@dataclass(frozen=True)
class Groups:
    """Ragged groups padded into one batch.

    ``x`` and ``y`` are ``(G, m)`` float64 tensors, ``mask`` ``(G, m)`` bool marks the
    points that exist (padding holds 0), ``names`` the group labels in order of first
    appearance, ``dropped`` the number of rows dropped for a missing value.
    """

    names: Tuple[str, ...]
    x: torch.Tensor
    y: torch.Tensor
    mask: torch.Tensor
    dropped: int

    @property
    def n(self) -> torch.Tensor:
        """Points per group, ``(G,)``."""
        return self.mask.sum(-1)


def _parse(text: str, source: str) -> Table:
    # Sniff only the delimiter, among the usual ones; a one-column file has none.
    sample = text[:4096]
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    try:
        records = [row for row in csv.reader(io.StringIO(text), dialect) if any(c.strip() for c in row)]
    except csv.Error as err:
        raise CLIError(f"{source}: not a readable CSV file ({err}).") from None
    if not records:
        raise CLIError(f"{source}: the file is empty; expected a header line and rows of data.")
    header = tuple(cell.strip() for cell in records[0])
    if not records[1:]:
        raise CLIError(f"{source}: the file has a header ({', '.join(header)}) but no rows of data.")
    width = len(header)
    rows = []
    for line, row in enumerate(records[1:], start=2):
        if len(row) != width:
            raise CLIError(
                f"{source}: row {line} has {len(row)} cells but the header has {width}; "
                "every row needs one cell per column (leave a cell empty if it is missing)."
            )
        rows.append(tuple(cell.strip() for cell in row))
    return Table(source, header, tuple(rows))


def read_csv(path: str) -> Table:
    """Read ``path`` (never modified) into a :class:`Table`."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise CLIError(f"{path}: no such file. Check the path, or omit it to use the sample data.") from None
    except IsADirectoryError:
        raise CLIError(f"{path}: is a folder, not a CSV file.") from None
    except PermissionError:
        raise CLIError(f"{path}: permission denied when reading it.") from None
    except UnicodeDecodeError:
        raise CLIError(f"{path}: not a text file in UTF-8; save it as UTF-8 CSV.") from None
    return _parse(text, path)


def read_sample() -> Table:
    """The sample dataset shipped inside the package (``lossfn/data/sample.csv``)."""
    text = resources.files("lossfn.data").joinpath("sample.csv").read_text(encoding="utf-8")
    return _parse(text, "sample.csv (shipped with lossfn)")


def _column(table: Table, name: str, option: str) -> int:
    if name in table.header:
        return table.header.index(name)
    close = difflib.get_close_matches(name, table.header, n=1, cutoff=0.5)
    folded = [h for h in table.header if h.lower() == name.lower()]
    hint = folded[0] if folded else (close[0] if close else None)
    suggestion = f" Did you mean {option} {hint!r}?" if hint else ""
    raise CLIError(
        f"{table.source}: no column {name!r} (given by {option}); the columns are "
        f"{', '.join(repr(h) for h in table.header)}.{suggestion}"
    )


def _numbers(table: Table, values: Sequence[str], lines: Sequence[int], name: str) -> np.ndarray:
    try:
        out = np.asarray(values, dtype=np.float64)  # numpy parses the strings in one call
    except ValueError:
        out = None
    if out is None or not np.isfinite(out).all():
        # Slow path, only to name the first bad cell.
        for cell, line in zip(values, lines):
            try:
                number = float(cell)
            except ValueError:
                raise CLIError(
                    f"{table.source}: column {name!r}, row {line} holds {cell!r}, which is not "
                    "a number; fix the cell or leave it empty to drop the row."
                ) from None
            if not np.isfinite(number):
                raise CLIError(
                    f"{table.source}: column {name!r}, row {line} holds {cell!r}; values must "
                    "be finite numbers."
                )
        out = np.array([float(cell) for cell in values], dtype=np.float64)
    return out


def select_groups(table: Table, *, x: str, y: str, group: Optional[str]) -> Groups:
    """Pick the ``x``, ``y`` (and ``group``) columns and pad the groups into a batch.

    Rows with a missing cell (one of :data:`MISSING`) in a used column are dropped
    and counted. Groups keep the order in which they first appear.
    """
    ix = _column(table, x, "--x")
    iy = _column(table, y, "--y")
    ig = _column(table, group, "--group") if group is not None else None
    used = [ix, iy] + ([ig] if ig is not None else [])
    kept: List[Tuple[str, ...]] = []
    lines: List[int] = []
    for line, row in enumerate(table.rows, start=2):
        if any(row[i].lower() in MISSING for i in used):
            continue
        kept.append(row)
        lines.append(line)
    dropped = len(table.rows) - len(kept)
    if not kept:
        raise CLIError(
            f"{table.source}: all {len(table.rows)} rows miss a value in "
            f"{', '.join(repr(table.header[i]) for i in used)}; nothing to fit."
        )
    xs = _numbers(table, [r[ix] for r in kept], lines, x)
    ys = _numbers(table, [r[iy] for r in kept], lines, y)
    labels = [r[ig] if ig is not None else "all" for r in kept]
    names = tuple(dict.fromkeys(labels))
    index = {name: i for i, name in enumerate(names)}
    which = np.array([index[label] for label in labels], dtype=np.int64)
    counts = np.bincount(which, minlength=len(names))
    # Position of each row inside its group: rank among the rows of that group.
    order = np.argsort(which, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.empty_like(which)
    slot[order] = np.arange(len(which)) - np.repeat(starts, counts)
    width = int(counts.max())
    bx = np.zeros((len(names), width))
    by = np.zeros((len(names), width))
    bm = np.zeros((len(names), width), dtype=bool)
    bx[which, slot], by[which, slot], bm[which, slot] = xs, ys, True
    return Groups(names, torch.from_numpy(bx), torch.from_numpy(by), torch.from_numpy(bm), dropped)
