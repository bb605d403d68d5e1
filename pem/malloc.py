"""glibc malloc tuning for eager PyTorch on the CPU: keep large freed buffers instead of unmapping.

Eager PyTorch allocates its large activations (32 MB per (1, 256, 128, 256) float tensor at 1/8
of 1024x2048) through ``malloc``. glibc serves blocks above its mmap threshold (dynamic, at most
32 MiB) with a fresh ``mmap`` and unmaps them on free, so every forward page-faults all of its
big tensors in again: measured ~1 M minor faults and ~45 % of an eager PEM-CA layer's time at
1/8 on a 2-core VM, whichever layer it is (the Mask2Former baselines suffer the same). Raising
the mmap and trim thresholds with ``mallopt`` makes glibc keep freed memory in its heap and hand
it out again, which is what tcmalloc or jemalloc do when preloaded, without a preload and from
inside the process.

The cost is that freed memory stays with the process (its RSS stays at its peak) until it ends:
right for training, evaluation, export and benchmarks (one long job whose peak is reached on
the first batch anyway), so the ``pem-deploy`` commands that run the eager model apply it, and
library code never does it behind the caller's back (:func:`apply_malloc_policy` is explicit).
``PEM_DEPLOY_MALLOC=system`` keeps glibc's defaults. The torch-free runtime does not need it:
onnxruntime and TensorRT keep their own arenas.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Mapping

from contract.errors import UsageError

__all__ = ["MALLOC_ENV", "apply_malloc_policy", "tune_glibc_malloc"]

MALLOC_ENV = "PEM_DEPLOY_MALLOC"

# mallopt parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

# 1 GiB: every activation of the paper's models at 1024x2048 stays in the heap; glibc versions
# that cap the threshold lower refuse it, and then the cap (32 MiB) is used.
_MMAP_THRESHOLD = 1 << 30
_MMAP_THRESHOLD_FALLBACK = 32 << 20
_TRIM_THRESHOLD = (1 << 31) - 1  # mallopt takes an int: never give the heap top back

_PRELOADED_ALLOCATORS = ("tcmalloc", "jemalloc", "mimalloc")


def _glibc() -> ctypes.CDLL | None:
    """The process's C library if it is glibc (``mallopt`` means something else or nothing on
    musl and with a preloaded allocator), else None."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # noqa: B018 - the attribute exists on glibc only
        libc.mallopt  # noqa: B018
    except (OSError, AttributeError):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return libc


def tune_glibc_malloc() -> bool:
    """Raise glibc's mmap and trim thresholds for this process (see the module docstring).

    Returns:
        True if glibc accepted both settings; False where the C library is not glibc or an
        allocator is preloaded (then nothing is changed).
    """
    preload = os.environ.get("LD_PRELOAD", "")
    if any(name in preload for name in _PRELOADED_ALLOCATORS):
        return False
    libc = _glibc()
    if libc is None:
        return False
    mmap_ok = libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) == 1
    if not mmap_ok:
        mmap_ok = libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_FALLBACK) == 1
    return mmap_ok and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1


def apply_malloc_policy(environ: Mapping[str, str] | None = None) -> str:
    """Apply the policy named by ``PEM_DEPLOY_MALLOC`` (default ``tuned``).

    Args:
        environ: the environment to read (default ``os.environ``).

    Returns:
        What is in effect: ``"tuned"`` (glibc thresholds raised), ``"system"`` (asked for, or
        not glibc / an allocator preloaded: nothing changed).

    Raises:
        UsageError: ``PEM_DEPLOY_MALLOC`` is neither ``tuned`` nor ``system``.
    """
    env = os.environ if environ is None else environ
    policy = env.get(MALLOC_ENV, "tuned").strip().lower() or "tuned"
    if policy not in ("tuned", "system"):
        raise UsageError(f"{MALLOC_ENV}={policy!r}: must be 'tuned' or 'system'")
    if policy == "system":
        return "system"
    return "tuned" if tune_glibc_malloc() else "system"
