"""Build and load the native kernels' shared library (see :mod:`lossfn._native`).

``cc -O3 -march=native`` compiles ``kernels.c``, ``ols.c``, ``huber.c`` and ``lad.c`` on first use
into a cache directory; the file's name holds a hash of the source, the
compiler and the CPU, and a checksum written after each build keeps a
truncated file (which would crash the process that loads it) from ever being
loaded: it is rebuilt. A build that cannot be done warns once and returns
None; the callers then take their pure-torch route.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Optional

__all__ = ["library"]

HERE = Path(__file__).parent
#: The C sources compiled into the library, then the headers they share.
SOURCES = [HERE / "kernels.c", HERE / "ols.c", HERE / "huber.c", HERE / "lad.c"]
HEADERS = [HERE / "common.h", HERE / "gram.h", HERE / "robust.h"]
FLAGS = ["-O3", "-fPIC", "-shared", "-pthread", "-fno-math-errno"]


def _cache_dirs() -> list:
    """``(directory, private)`` pairs where the library may be built, in order of preference.

    The user's cache directory, then a private directory (mode 700, checked to
    be the user's own and closed to others) in the system's temporary
    directory, for a home that cannot be written (some CI runners, containers).
    """
    explicit = os.environ.get("LOSSFN_CACHE_DIR")
    if explicit:
        return [(Path(explicit), False)]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    user = str(os.getuid()) if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    fallback = (Path(tempfile.gettempdir()) / f"lossfn-{user}", True)
    # No HOME and no passwd entry leave "~" as it is: a relative path, which
    # would put the library in whatever directory the process runs in.
    return [(Path(base) / "lossfn", False), fallback] if os.path.isabs(base) else [fallback]


def _usable(directory: Path, private: bool) -> bool:
    """Create ``directory`` if needed; True if this user owns it and may write it
    (and, for a ``private`` one in a shared place, nobody else may)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = directory.stat()
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        return False
    if private and info.st_mode & 0o077:
        return False
    return directory.is_dir() and os.access(directory, os.W_OK)


def _cpu_identity() -> str:
    """What ``-march=native`` depends on: the CPU's feature flags where Linux lists them."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.processor() + platform.machine()


def _checksum_path(target: Path) -> Path:
    return target.with_suffix(".sha256")


def _intact(target: Path) -> bool:
    """True if ``target`` is the library a finished build wrote: its checksum,
    written after it, matches. A truncated or half-copied file (which would
    crash the process when loaded, with SIGBUS) never is."""
    try:
        digest = hashlib.sha256(target.read_bytes()).hexdigest()
        return _checksum_path(target).read_text(encoding="ascii").strip() == digest
    except OSError:
        return False


def _replace_with(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically: a temporary file, synced, then renamed."""
    handle, partial = tempfile.mkstemp(dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def _build(compiler: list, target: Path) -> Optional[str]:
    """Compile the kernels into ``target`` and its checksum; None on success, else why not.

    Compiled to a temporary name and moved into place whole, the checksum
    last: processes building at once never load a half-written library.
    """
    handle, partial = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(handle)
    errors = ""
    try:
        for extra in (["-march=native"], []):  # some compilers (or CPUs) refuse -march=native
            # $CC's own arguments last, so that they win (CC="cc -march=x86-64-v2")
            cmd = [compiler[0], *FLAGS, *extra, *compiler[1:], "-o", partial, *map(str, SOURCES)]
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=300)
            except subprocess.TimeoutExpired:
                return f"{' '.join(cmd)} took over 300 s"
            library = Path(partial).read_bytes()
            if done.returncode == 0 and library:
                _replace_with(target, library)
                _replace_with(_checksum_path(target), hashlib.sha256(library).hexdigest().encode())
                return None
            errors = done.stderr.strip()[-500:] or f"exit code {done.returncode}, no library written"
        return f"{' '.join(cmd)} failed: {errors}"
    finally:
        if os.path.exists(partial):
            os.remove(partial)


# The kernels' C signatures (kernels.c, ols.c, huber.c, lad.c), for ctypes.
_I, _I64, _F64, _P = ctypes.c_int, ctypes.c_int64, ctypes.c_double, ctypes.c_void_p
_SIGNATURES = {
    "lossfn_line_sums": (None, [_I, _P, _I64, _P, _I64, _P, _I64, _I64, _I64, _P, _I]),
    "lossfn_line_fit": (_I, [_I, _P, _I64, _P, _I64, _P, _I64, _I64, _I64, _F64, _F64,
                             _P, _P, _P, _I]),
    "lossfn_centred_gram": (_I, [_I, _P, _I64, _P, _I64, _P, _I64, _I64, _I64, _I64, _I, _P, _P,
                                 _P, _I]),
    "lossfn_ols_record": (_I, [_P, _P, _P, _I64, _I64, _I, _I, _F64, _F64, _I, _F64, _P, _P, _P,
                               _I]),
    "lossfn_ols_fit": (_I, [_I, _P, _I64, _P, _I64, _P, _I64, _I64, _I64, _I64, _I, _P, _P, _P,
                            _I, _F64, _F64, _I, _F64, _P, _P, _P, _I]),
    "lossfn_huber": (_I, [_P, _P, _P, _P, _P, _I64, _I64, _I64, _I64, _F64, _F64, _F64,
                          _P, _P, _P, _P, _P, _I]),
    "lossfn_lad": (_I, [_P, _P, _P, _P, _I64, _I64, _I64, _I64, _F64, _F64,
                        _P, _P, _P, _P, _P, _I]),
}

_BUILDING = threading.Lock()  # threads of one process build once, not each their own


@functools.lru_cache(maxsize=None)  # memoizes a pure function of the source and the machine
def library() -> Optional[ctypes.CDLL]:
    """The kernels' library with its functions' signatures set, or None (and one warning)."""
    with _BUILDING:
        return _load()


def _load() -> Optional[ctypes.CDLL]:
    wanted = os.environ.get("CC", "cc")
    words = shlex.split(wanted)  # CC="ccache gcc" or "gcc -std=c11" work too
    found = shutil.which(words[0]) if words else None
    if found is None:
        _unavailable(f"no C compiler found (set CC, or install cc; looked for {wanted!r})")
        return None
    compiler = [found, *words[1:]]
    source = b"\0".join(path.read_bytes() for path in SOURCES + HEADERS)
    key = hashlib.sha256(b"\0".join([
        source, " ".join(compiler).encode(), " ".join(FLAGS).encode(), _cpu_identity().encode(),
        sys.platform.encode(),
    ])).hexdigest()[:20]
    problems = []
    for directory, private in _cache_dirs():
        target = directory / f"kernels-{key}.so"
        try:
            if not _usable(directory, private):
                problems.append(f"{directory} is not a directory that only this user can write")
                continue
            if not _intact(target):  # missing, or a build that did not finish: (re)build
                reason = _build(compiler, target)
                if reason is not None:  # a compiler that fails will fail in any directory
                    _unavailable(reason)
                    return None
            lib = ctypes.CDLL(str(target))
            break
        except OSError as err:
            problems.append(f"{target}: {err}")
    else:
        _unavailable("; ".join(problems))
        return None
    for name, (result, arguments) in _SIGNATURES.items():
        function = getattr(lib, name)
        function.restype, function.argtypes = result, arguments
    return lib


def _unavailable(reason: str) -> None:
    warnings.warn(
        f"lossfn: native kernels unavailable ({reason}); fits use the pure-torch path, which "
        "gives the same fits more slowly. Set LOSSFN_NATIVE=0 to silence this.",
        RuntimeWarning, stacklevel=3,
    )
