"""Writing results: atomically, so a reader never sees half a file.

Every file is written to a temporary file in the destination's folder and then
moved over the destination with :func:`os.replace`, which is atomic on POSIX and
Windows when both lie on the same file system.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Dict, List

from ._errors import CLIError

__all__ = ["OUTPUT_FORMATS", "check_destination", "write_atomic", "write_records", "write_plot"]

OUTPUT_FORMATS = (".json", ".csv")


def check_destination(path: str, option: str, suffixes) -> Path:
    """Fail early (before any work) if ``path`` cannot be written as one of ``suffixes``."""
    target = Path(path)
    if target.suffix.lower() not in suffixes:
        raise CLIError(
            f"{option} {path}: unknown file type {target.suffix or '(none)'!r}; "
            f"use a name ending in {' or '.join(suffixes)}."
        )
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise CLIError(f"{option} {path}: the folder {str(folder)!r} does not exist; create it first.")
    if target.is_dir():
        raise CLIError(f"{option} {path}: is a folder; give a file name.")
    return target


def write_atomic(path: Path, write: Callable[[io.IOBase], None], *, binary: bool = False) -> None:
    """Call ``write(handle)`` on a temporary file next to ``path``, then move it over ``path``."""
    folder = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as err:
        raise CLIError(f"{path}: cannot write in {str(folder)!r} ({err.strerror}).") from None
    try:
        mode = "wb" if binary else "w"
        kwargs = {} if binary else {"encoding": "utf-8", "newline": ""}
        with os.fdopen(fd, mode, **kwargs) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_records(path: Path, records: List[Dict], flatten: Callable[[Dict], Dict]) -> None:
    """Write ``records`` as a JSON list, or as CSV with flattened columns."""
    if path.suffix.lower() == ".json":
        def write(handle):
            json.dump(records, handle, indent=2)
            handle.write("\n")
    else:
        rows = [flatten(r) for r in records]

        def write(handle):
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    write_atomic(path, write)


def write_plot(path: Path, draw: Callable) -> None:
    """Draw with matplotlib's Agg backend (no display needed) and save atomically.

    ``draw(plt)`` returns the figure to save.
    """
    try:
        import matplotlib
    except ImportError:
        raise CLIError(
            "--plot needs matplotlib, which is not installed: pip install 'lossfn[plot]'."
        ) from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    figure = draw(plt)
    fmt = path.suffix.lower().lstrip(".")
    try:
        write_atomic(path, lambda handle: figure.savefig(handle, format=fmt, dpi=110), binary=True)
    finally:
        plt.close(figure)
