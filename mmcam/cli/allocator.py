"""Keep the memory a batch frees for the next batch, in the ``mmcam`` command's process.

glibc's ``malloc`` gives memory back to the system as soon as enough of it is free at the top of the heap
(``M_TRIM_THRESHOLD``), and serves large blocks from pages mapped for them alone (``M_MMAP_THRESHOLD``);
both thresholds move with what the program has freed before. A model's activations are blocks of megabytes
freed after every batch, so once the history has moved the thresholds, every forward maps and faults its
activations in anew: on the 2-core CPU, resnet18 over 200 images (batches of 4) went from 0 to
420,000-470,000 page faults per run after one folder run had moved them, and its forward alone from 3.4 to
4.1 s (2026-12-06, docs/speed.md). Fixing both keeps the freed memory in the process, which reuses it.

The mmap threshold is fixed at glibc's own ceiling for it (``MMAP_THRESHOLD``, 32 MiB), so blocks are
served as glibc serves them once it has settled, and larger ones (a large model's weights) are still given
back when freed; the trim threshold at ``TRIM_THRESHOLD``, the most free memory the heap keeps. A Python
program gets the same from the shell: ``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=268435456``.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # bytes: DEFAULT_MMAP_THRESHOLD_MAX on 64-bit systems
TRIM_THRESHOLD = 256 << 20  # bytes


def keep_freed_memory() -> bool:
    """Fix glibc's mmap threshold at ``MMAP_THRESHOLD`` and then its trim threshold at ``TRIM_THRESHOLD``,
    for this process. Either alone would stop the thresholds' moving with the other at its small default
    (128 KiB), which is worse than both moving (the folder run above: 1.9-2.7 million page faults with the
    trim threshold alone); so the trim threshold is set only once the mmap threshold is. False where nothing was
    set: a C library without glibc's ``mallopt`` (macOS, Windows) keeps its own allocator's behaviour."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    if not mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD):
        return False
    return bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
