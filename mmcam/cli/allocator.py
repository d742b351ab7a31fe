"""Keep the memory a batch frees for the next batch, in the ``mmcam`` command's process.

glibc's ``malloc`` gives memory back to the system as soon as enough of it is free at the top of the heap
(``M_TRIM_THRESHOLD``), and serves large blocks from fresh ``mmap`` pages (``M_MMAP_THRESHOLD``); both
thresholds move with the program's history. A model's activations are large blocks freed after every
batch, so once the history tips the thresholds, every forward touches its activations' pages anew: on the
2-core CPU, resnet18 over 200 images (batches of 4) went from 0 to 420,000-470,000 page faults per run
after one folder run had tipped them, and the forward alone from 3.4 to 4.1 s (2026-12-06, docs/speed.md).
Fixing both thresholds high keeps the freed memory in the process, which reuses it: the run holds its peak
memory until it ends, as PyTorch's recommended allocators (jemalloc, tcmalloc) do.

Library users set the same from the shell: ``MALLOC_TRIM_THRESHOLD_=1073741824
MALLOC_MMAP_THRESHOLD_=1073741824``.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
KEPT = 1 << 30  # bytes: free memory kept, and the block size below which blocks come from the heap
OLD_MMAP_MAX = 32 << 20  # the highest mmap threshold a glibc before 2.35 accepts on 64-bit systems


def keep_freed_memory() -> bool:
    """Fix glibc's mmap threshold at ``KEPT`` (``OLD_MMAP_MAX`` where that is refused), then its trim
    threshold at ``KEPT``, for this process. Either alone would stop the thresholds' moving with the
    other at its small default, which is worse than both moving; so nothing is set unless the mmap
    threshold is. False where nothing was set: a C library without glibc's ``mallopt`` (macOS, Windows)
    keeps its own allocator's behaviour."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    if not (mallopt(M_MMAP_THRESHOLD, KEPT) or mallopt(M_MMAP_THRESHOLD, OLD_MMAP_MAX)):
        return False
    return bool(mallopt(M_TRIM_THRESHOLD, KEPT))
