"""Native kernels: fused passes over the data, compiled from C on first use.

torch runs a fit's passes one operator at a time: each one reads the data
from memory and writes a temporary back. A kernel that makes every pass over
one dataset while it is in cache reads the data once (``kernels.c``):

* :func:`line_sums`, the centred moments of one predictor and the response
  (``fit.ols`` with an intercept, ``fit.standardized``): a whole ``fit.ols``
  call 1.5-2x faster from about 100 points per dataset (about even for very
  short ones, where per-call costs dominate), and, accumulated in float64,
  more accurate in float32, where no sum can over- or underflow;
* :func:`centred_gram`, the Gram matrices of several predictors for the
  least-squares solver (:mod:`lossfn.fit._solve`), both passes of CholeskyQR2
  included: ``fit.ols`` with several predictors 1.5-2.5x faster than on the
  torch route's batched Gram products at 1000 datasets of 500 points, less on
  short datasets, where the small algebra after the passes dominates (about
  even at 100 points with d = 20).

(``benchmarks/fits.py`` measures both against the pure-torch route.)

The kernels are an accelerator for the plain eager case, never a requirement:
:func:`line_sums` and :func:`centred_gram` return None, and the caller runs
its pure-torch path, whenever the kernels cannot serve the call exactly:

* a ``torch.func`` transform is active (``vmap``, ``grad``, ...), autograd
  must record the call (backward or forward mode), or torch is tracing it
  (``torch.compile``, export, ``torch.jit.trace``): the torch path composes
  with all of them;
* the data are not plain float32/float64 CPU tensors whose batch dims flatten
  to one row stride, with the points contiguous;
* the environment variable ``LOSSFN_NATIVE`` is ``0``;
* no C compiler is available (``$CC``, else ``cc``; ``$CC`` may carry
  arguments, which come after lossfn's own and so win, as in
  ``CC="cc -march=x86-64-v2"``): then a RuntimeWarning says so once per
  process, and everything still works, only slower.

The shared library is built with ``cc -O3 -march=native -fopenmp-simd``
(``-march=native`` dropped if the compiler refuses it) into
``$LOSSFN_CACHE_DIR``, else ``$XDG_CACHE_HOME/lossfn`` (``~/.cache/lossfn``),
else a private ``lossfn-<uid>`` in the temporary directory; its name holds a
hash of the source, the compiler and the CPU, so a changed source or a home
directory shared with another machine never loads a stale or foreign build,
and a checksum written after each build keeps a truncated file (which would
crash the process that loads it) from ever being loaded: it is rebuilt.
Building takes a few seconds, once per machine.
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

import torch

__all__ = ["available", "line_sums", "centred_gram", "MAX_COLUMNS"]

#: Most columns of ``[X y]`` that :func:`centred_gram` takes (``KMAX`` in kernels.c).
MAX_COLUMNS = 64

SOURCE = Path(__file__).with_name("kernels.c")
FLAGS = ["-O3", "-fopenmp-simd", "-fPIC", "-shared", "-pthread"]


def enabled() -> bool:
    """False where the environment variable ``LOSSFN_NATIVE`` is ``0``."""
    return os.environ.get("LOSSFN_NATIVE", "1") != "0"


def available() -> bool:
    """True if the kernels are enabled and built (building them now if needed)."""
    return enabled() and _library() is not None


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
            cmd = [compiler[0], *FLAGS, *extra, *compiler[1:], "-o", partial, str(SOURCE)]
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


_BUILDING = threading.Lock()  # threads of one process build once, not each their own


@functools.lru_cache(maxsize=None)  # memoizes a pure function of the source and the machine
def _library() -> Optional[ctypes.CDLL]:
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
    source = SOURCE.read_bytes()
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
    lib.lossfn_centred_gram.restype = ctypes.c_int
    lib.lossfn_centred_gram.argtypes = [
        ctypes.c_int, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64,
        ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
        ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int,
    ]
    lib.lossfn_line_sums.restype = None
    lib.lossfn_line_sums.argtypes = [
        ctypes.c_int, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64,
        ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
        ctypes.c_int,
    ]
    return lib


def _unavailable(reason: str) -> None:
    warnings.warn(
        f"lossfn: native kernels unavailable ({reason}); fits use the pure-torch path, which "
        "gives the same results more slowly. Set LOSSFN_NATIVE=0 to silence this.",
        RuntimeWarning, stacklevel=3,
    )


def _plain(t: Optional[torch.Tensor]) -> bool:
    """A CPU tensor whose memory the kernels may read: no subclass, wrapper or view bit."""
    return t is None or (
        type(t) is torch.Tensor
        and t.device.type == "cpu"
        and t.layout == torch.strided
        and not torch._C._functorch.is_functorch_wrapped_tensor(t)
        and not t.is_neg()
        and not t._is_zerotensor()  # no memory behind it
    )


def _rows(t: Optional[torch.Tensor], m: int) -> Optional[torch.Tensor]:
    """``t`` as (rows, m) with contiguous points, as a view; None if it is none."""
    try:
        flat = t.view(-1, m)
    except RuntimeError:
        return None
    return flat if m <= 1 or flat.stride(1) == 1 else None


def _eligible(*tensors: Optional[torch.Tensor]) -> bool:
    if not enabled() or torch._C._are_functorch_transforms_active():
        return False
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    if torch.autograd.forward_ad._current_level >= 0:  # inside fwAD.dual_level(): tangents
        return False
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return False
    return all(_plain(t) for t in tensors)


def line_sums(x: torch.Tensor, y: torch.Tensor, present: Optional[torch.Tensor]):
    """Centred moments of one predictor and the response, per dataset, or None.

    ``x``, ``y`` (..., m) of one dtype, ``present`` None or bool (..., m), all
    broadcast to one shape already. Returns float64 tensors (...,)
    ``(mean_x, mean_y, Sxx, Sxy, Syy)`` over the present points (nan where
    none is), or None where the kernels cannot serve the call (see the module).
    """
    m = y.shape[-1]
    if x.dtype not in (torch.float32, torch.float64) or y.dtype != x.dtype or m == 0:
        return None
    if not _eligible(x, y, present):
        return None
    flat = [_rows(t, m) if t is not None else None for t in (x, y, present)]
    if flat[0] is None or flat[1] is None or (present is not None and flat[2] is None):
        return None
    lib = _library()
    if lib is None:
        return None
    fx, fy, fm = flat
    rows = fy.shape[0]
    out = torch.empty(rows, 5, dtype=torch.float64, device="cpu")  # not the default device
    # Threads only where each gets enough work to pay for starting it.
    threads = max(1, min(torch.get_num_threads(), rows * m // (1 << 16)))
    lib.lossfn_line_sums(
        int(x.dtype == torch.float64), fx.data_ptr(), fx.stride(0), fy.data_ptr(), fy.stride(0),
        None if fm is None else fm.data_ptr(), 0 if fm is None else fm.stride(0),
        rows, m, out.data_ptr(), threads,
    )
    return tuple(column.view(y.shape[:-1]) for column in out.unbind(-1))


def centred_gram(
    x: torch.Tensor,
    y: torch.Tensor,
    present: Optional[torch.Tensor],
    *,
    means: Optional[torch.Tensor] = None,
    transform: Optional[torch.Tensor] = None,
):
    """Gram matrices of the centred ``[X y]``, per dataset, or None.

    ``x`` (..., m, d), ``y`` (..., m) of one dtype, ``present`` None or bool
    (..., m), batch dims broadcast already. With ``z_t = [x_t y_t] − means``
    over the present points and ``q_t = Tᵀz_t``, returns float64
    ``(means (..., k), Σ q_t q_tᵀ (..., k, k))``, ``k = d + 1``: ``means`` are
    the column means unless given (zeros: no centring), ``T`` (..., k, k) is
    upper triangular, the identity unless given (the second pass of
    CholeskyQR2, :mod:`lossfn.fit._solve`). None where the kernels cannot
    serve the call (see the module) or ``k`` exceeds :data:`MAX_COLUMNS`.
    """
    m, d = x.shape[-2], x.shape[-1]
    if x.dtype not in (torch.float32, torch.float64) or y.dtype != x.dtype or m == 0:
        return None
    if not 1 <= d < MAX_COLUMNS or not _eligible(x, y, present, means, transform):
        return None
    try:
        fx = x.view(-1, m, d)
    except RuntimeError:
        return None
    if fx.stride(-1) != 1 or fx.stride(-2) != d:  # points must be contiguous rows of d values
        return None
    fy = _rows(y, m)
    fm = None if present is None else _rows(present, m)
    if fy is None or (present is not None and fm is None):
        return None
    lib = _library()
    if lib is None:
        return None
    rows, k = fy.shape[0], d + 1
    batch = y.shape[:-1]
    given = means is not None
    cpu64 = {"dtype": torch.float64, "device": "cpu"}  # not the default device
    means = (torch.empty(rows, k, **cpu64) if means is None
             else means.to(**cpu64).reshape(rows, k).contiguous())
    if transform is not None:
        transform = transform.to(**cpu64).reshape(rows, k, k).contiguous()
    out = torch.empty(rows, k, k, **cpu64)
    threads = max(1, min(torch.get_num_threads(), rows * m * k // (1 << 16)))
    status = lib.lossfn_centred_gram(
        int(x.dtype == torch.float64), fx.data_ptr(), fx.stride(0), fy.data_ptr(), fy.stride(0),
        None if fm is None else fm.data_ptr(), 0 if fm is None else fm.stride(0), rows, m, d,
        int(given), None if transform is None else transform.data_ptr(), means.data_ptr(),
        out.data_ptr(), threads,
    )
    if status != 0:  # out of scratch memory
        return None
    return means.view(batch + (k,)), out.view(batch + (k, k))
