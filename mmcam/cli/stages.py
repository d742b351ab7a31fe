"""Seconds a task command spends per stage in this process (decode, forward + backward, map
post-processing, colouring, encoding, file writes, report), summed over the run: ``mmcam bench --task
folder`` prints them. Worker processes keep their own sums, so the breakdown is read from a run without
workers."""

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


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Add the seconds the ``with`` block takes to ``SECONDS[name]``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        SECONDS[name] += time.perf_counter() - start
