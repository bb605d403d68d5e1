"""glibc malloc tuning (pem/malloc.py): applied in a child process, measured by its page faults."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from contract.errors import UsageError
from pem.malloc import MALLOC_ENV, apply_malloc_policy

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Allocates and frees a 48 MiB buffer 20 times; prints the policy and the minor faults of the loop.
_CHILD = """
import ctypes, resource, sys
from pem.malloc import apply_malloc_policy
policy = apply_malloc_policy()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size = 48 << 20
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    p = libc.malloc(size)
    ctypes.memset(p, 1, size)  # touch every page
    libc.free(p)
print(policy, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _run_child(policy: str) -> tuple[str, int]:
    env = {**os.environ, MALLOC_ENV: policy, "PYTHONPATH": ROOT}
    env.pop("LD_PRELOAD", None)
    out = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, check=True)
    name, faults = out.stdout.split()
    return name, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only")
def test_tuned_malloc_reuses_large_freed_blocks():
    system_name, system_faults = _run_child("system")
    tuned_name, tuned_faults = _run_child("tuned")
    assert system_name == "system"
    if tuned_name != "tuned":
        pytest.skip("the C library is not glibc: nothing to tune")
    pages = (48 << 20) // 4096
    assert system_faults > 10 * pages  # glibc maps and unmaps the 48 MiB block every time
    assert tuned_faults < 2 * pages  # faulted in once, then reused from the heap


def test_policy_names_are_checked():
    assert apply_malloc_policy({MALLOC_ENV: "system"}) == "system"
    with pytest.raises(UsageError, match=MALLOC_ENV):
        apply_malloc_policy({MALLOC_ENV: "fast"})
