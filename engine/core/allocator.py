"""Keep freed memory in the worker process so that large tensors reuse it.

glibc's ``malloc`` serves every block above 32 MB (its largest mmap threshold)
with a fresh ``mmap`` and gives it back with ``munmap`` when it is freed, so
each such tensor costs a page fault per 4 KB page every time it is made. A
U-Net on a 576 px tile makes several (the 128-channel skip concatenation at
half resolution and the 32-channel upsampling at full resolution are 42 MB
each), and faulting them in took about a third of the tile's time on the
benchmark CPU. PyTorch's CPU tuning advice is a caching allocator (jemalloc
or tcmalloc) for this reason; :func:`reuse_freed_memory` gets the same effect
from glibc itself: large blocks come from the heap, and freed memory at the
top of the heap is kept (up to ``keep_mb``) for the next tile instead of
being returned to the system.

The setting lasts for the process. Jobs run in their own worker process, so
it is set per job by :func:`slidewise.engine.core.runtime.apply`. Elsewhere than on
glibc (macOS, Windows, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import platform

M_TRIM_THRESHOLD = -1
"""glibc ``mallopt`` parameter: free bytes at the heap top before they are returned."""
M_MMAP_MAX = -4
"""glibc ``mallopt`` parameter: most blocks served by ``mmap`` at once (0: none)."""
KEEP_MB = 1024
"""Free memory kept at the heap top for reuse, in MB."""


def reuse_freed_memory(keep_mb: int = KEEP_MB) -> bool:
    """Serve large blocks from the heap and keep up to ``keep_mb`` MB of freed memory.

    Peak resident memory is unchanged (what is kept is what the last tile
    used); memory is returned to the system once more than ``keep_mb`` MB
    is free at the heap top, and in full when the worker process ends.

    Args:
        keep_mb: Free memory at the heap top kept for reuse, in MB.

    Returns:
        ``True`` when glibc took both settings; ``False`` elsewhere.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    keep = max(0, min(int(keep_mb) * 1024 * 1024, 2**31 - 1))
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, keep))
