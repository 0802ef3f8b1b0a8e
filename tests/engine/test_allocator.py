"""Freed memory kept for reuse: large blocks stop costing page faults (glibc only)."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="the setting exists on glibc only",
)

BLOCK_MB = 64
"""The test block: above glibc's largest mmap threshold (32 MB)."""

# The child sets things up as ``mode`` says, makes a 64 MB array and frees it, and
# reports glibc's own accounting (mallinfo2): bytes in mmap-served blocks while the
# array lives, and free bytes kept at the heap top after it is freed. The setting
# lasts for the process, hence a child per mode.
CHILD = """
import ctypes, json, sys
import numpy as np
from slidewise.engine.core.allocator import reuse_freed_memory
from slidewise.engine.core.runtime import RuntimeOptions, apply

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd",
        "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = MallInfo2
mode, took = sys.argv[1], None
if mode == "reuse":
    took = reuse_freed_memory()
elif mode.startswith("apply-"):
    apply(RuntimeOptions(), uses_torch=mode == "apply-torch")
block = np.ones(int(sys.argv[2]) * 1024 * 1024 // 4, dtype=np.float32)
mapped = mallinfo2().hblkhd
del block
kept = mallinfo2().keepcost
print(json.dumps({"took": took, "mapped_mb": mapped / 2**20, "kept_mb": kept / 2**20}))
"""


def _child(mode: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(BLOCK_MB)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_large_blocks_come_from_the_heap_and_stay_for_reuse() -> None:
    default, reuse = _child("default"), _child("reuse")
    # glibc's default: the block is its own mapping, unmapped (gone) when freed.
    assert default["mapped_mb"] >= BLOCK_MB
    assert default["kept_mb"] < BLOCK_MB
    # Kept for reuse: served from the heap and still there after it is freed.
    assert reuse["took"] is True
    assert reuse["mapped_mb"] < BLOCK_MB
    assert reuse["kept_mb"] >= BLOCK_MB


def test_runtime_apply_sets_it_for_torch_jobs_only() -> None:
    assert _child("apply-torch")["kept_mb"] >= BLOCK_MB
    assert _child("apply-plain")["kept_mb"] < BLOCK_MB
