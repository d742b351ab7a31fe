"""Seconds a task command spends per stage in this process (decode, forward + backward, map
post-processing, colouring, encoding, file writes, report), summed over the run, on the clock and in CPU
time of all the process's threads: ``mmcam bench --task folder`` prints them (a stage whose CPU seconds are
its clock seconds kept one core busy while the others waited). Worker processes keep their own sums, so the
breakdown is read from a run without workers."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

STAGES = (
    "decode",
    "forward + backward",
    "map post-processing",
    "colouring",
    "encoding",
    "file writes",
    "report",
)
SECONDS: defaultdict[str, float] = defaultdict(float)
CPU_SECONDS: defaultdict[str, float] = defaultdict(float)


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Add the seconds the ``with`` block takes to ``SECONDS[name]``, and the CPU seconds of all this
    process's threads meanwhile to ``CPU_SECONDS[name]``."""
    start, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        SECONDS[name] += time.perf_counter() - start
        CPU_SECONDS[name] += time.process_time() - cpu
