"""The inputs of a task command in batches: decoded and prepared by worker processes while the model runs,
their figures drawn by worker processes too, so the model is what the main process waits for.

Under ``torchrun`` each process takes every N-th input; the leader gathers the records in input order.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset


@dataclass
class Loaded:
    """One input as a worker left it: the decoded image (or clip) and the model's inputs made from it, or
    the sentence that says why it could not be read."""

    path: str
    stem: str
    image: Any = None
    inputs: Any = None
    error: str | None = None


class _Inputs(Dataset):
    def __init__(self, paths: list[str], stems: dict[str, str], load: Callable, prepare: Callable):
        self.paths, self.stems, self.load, self.prepare = paths, stems, load, prepare

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Loaded:
        path = self.paths[index]
        try:
            image = self.load(path)
            return Loaded(path, self.stems[path], image, self.prepare(image))
        except ValueError as error:
            return Loaded(path, self.stems[path], error=str(error))


def loaded_batches(
    paths: list[str], stems: dict[str, str], load: Callable, prepare: Callable, batch_size: int, workers: int
) -> Iterator[list[Loaded]]:
    """``paths`` in batches of ``batch_size``, each input loaded (``load(path)``) and prepared
    (``prepare(image)``) by one of ``workers`` processes (none: here), a few batches ahead of the model."""
    loader = DataLoader(
        _Inputs(paths, stems, load, prepare),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=list,
        multiprocessing_context="fork" if workers else None,
    )
    yield from loader


def _one_thread() -> None:
    """A forked worker computes with one thread, as DataLoader workers do (a pool of intra-op threads
    copied from the parent by fork can hang)."""
    torch.set_num_threads(1)


class FigureWriters:
    """Run the jobs that draw figures and make records in ``workers`` processes (none: here, at once),
    handing the records back in the order the jobs were given."""

    def __init__(self, workers: int):
        context = multiprocessing.get_context("fork")
        self._pool = (
            ProcessPoolExecutor(workers, mp_context=context, initializer=_one_thread) if workers else None
        )
        self._pending: deque[tuple[Future | dict, Callable[[dict], Any]]] = deque()

    def submit(self, job: Callable[[], dict], then: Callable[[dict], Any]) -> None:
        """Run ``job`` (a picklable call) and later ``then(record)`` here, in submission order."""
        self._pending.append((self._pool.submit(job) if self._pool else job(), then))

    def ready(self, wait: bool = False) -> None:
        """Hand every finished record (all of them with ``wait``) to its ``then``, in order."""
        while self._pending:
            job, then = self._pending[0]
            if isinstance(job, Future) and not (wait or job.done()):
                return
            self._pending.popleft()
            then(job.result() if isinstance(job, Future) else job)

    def close(self) -> None:
        if self._pool:
            self._pool.shutdown(cancel_futures=True)
