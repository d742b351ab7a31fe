"""The runtime of a task command: its inputs in batches, decoded and prepared by worker processes while the
model runs, their figures drawn by worker processes too, so the model is what the main process waits for;
records printed in input order and gathered into the report.

Under ``torchrun`` each process takes every N-th input; the leader gathers the records in input order.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import closing
from dataclasses import dataclass, fields, is_dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from mmcam.cli.options import BatchOptions
from mmcam.cli.output import note_written, write_records_report
from mmcam.cli.records import Made
from mmcam.cli.stages import stage
from mmcam.engine.evidence import negligible_note
from mmcam.evaluation.distributed import Processes

if TYPE_CHECKING:
    from mmcam.report import RecordPictures

# Per input: (a picklable call that writes its figures and makes its record and the report's pictures, what
# to add to the record), or the error that stopped that input.
Job = tuple[Callable[[], Made], Callable[[dict], dict]] | ValueError


@dataclass
class Loaded:
    """One input as a worker left it: the decoded image (or clip) and the model's inputs made from it, or
    the sentence that says why it could not be read."""

    path: str
    stem: str
    image: Any = None
    inputs: Any = None
    error: str | None = None

    def pin_memory(self) -> Loaded:
        """The same input with its model inputs in page-locked memory (DataLoader's ``pin_memory`` on
        CUDA), so their copy to the GPU can overlap the computation."""
        if isinstance(self.inputs, torch.Tensor):
            self.inputs = self.inputs.pin_memory()
        return self


class _Inputs(Dataset):
    def __init__(self, paths: list[str], stems: dict[str, str], load: Callable, prepare: Callable):
        self.paths, self.stems, self.load, self.prepare = paths, stems, load, prepare

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Loaded:
        path = self.paths[index]
        try:
            with stage("decode"):
                image = self.load(path)
                return Loaded(path, self.stems[path], image, self.prepare(image))
        except ValueError as error:
            return Loaded(path, self.stems[path], error=str(error))


def loaded_batches(
    paths: list[str],
    stems: dict[str, str],
    load: Callable,
    prepare: Callable,
    batch_size: int,
    workers: int,
    pin: bool = False,
) -> Iterator[list[Loaded]]:
    """``paths`` in batches of ``batch_size``, each input loaded (``load(path)``) and prepared
    (``prepare(image)``) by one of ``workers`` processes (none: here), a few batches ahead of the model;
    with ``pin`` (a CUDA model) the prepared inputs come in page-locked memory."""
    loader = DataLoader(
        _Inputs(paths, stems, load, prepare),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=list,
        pin_memory=pin,
        multiprocessing_context="fork" if workers else None,
    )
    yield from loader


# the tensor types NumPy holds: a job's tensors of these types travel to a writer process as NumPy copies
_NUMPY_TYPES = {
    torch.float64,
    torch.float32,
    torch.float16,
    torch.int64,
    torch.int32,
    torch.uint8,
    torch.bool,
}


@dataclass(frozen=True)
class _Array:
    """A CPU tensor on its way to a writer process, as a NumPy copy of its elements."""

    values: np.ndarray


def _mapped(value: Any, leaf: Callable[[Any], Any]) -> Any:
    """``value`` with ``leaf`` applied to every argument of a ``partial`` and every field of a dataclass,
    recursively (the structure of a figure job: a partial over the job's explanation)."""
    if isinstance(value, partial):
        args = [_mapped(argument, leaf) for argument in value.args]
        return partial(value.func, *args, **{key: _mapped(v, leaf) for key, v in value.keywords.items()})
    if is_dataclass(value) and not isinstance(value, type) and not isinstance(value, _Array):
        return replace(
            value, **{f.name: _mapped(getattr(value, f.name), leaf) for f in fields(value) if f.init}
        )
    return leaf(value)


def _packed(value: Any) -> Any:
    """``value`` as a job is handed to a writer process: each CPU tensor in a ``partial``'s arguments or a
    dataclass's fields (the job's explanation) as an ``_Array``, pickled into the job's own bytes. A tensor
    itself would travel through shared memory, its descriptor fetched by the worker from this process over
    a connection of its own, per tensor: 200 jobs (a 256 px image and an explanation split from a batch of
    8) cost both processes 0.67-1.1 CPU s that way in 3 rounds, 0.29-0.30 CPU s as copies in 2 (2026-12-06,
    the 2-core CPU under load)."""

    def leaf(item: Any) -> Any:
        if isinstance(item, torch.Tensor) and item.device.type == "cpu" and item.dtype in _NUMPY_TYPES:
            return _Array(item.detach().numpy().copy())
        return item

    return _mapped(value, leaf)


def _unpacked(value: Any) -> Any:
    """The inverse of ``_packed``, in the writer process."""
    return _mapped(value, lambda item: torch.from_numpy(item.values) if isinstance(item, _Array) else item)


def _run_packed(job: Callable[[], Made]) -> Made:
    """Run a job handed over ``_packed``, in the writer process."""
    return _unpacked(job)()


def _one_thread() -> None:
    """A forked worker computes with one thread, as DataLoader workers do (a pool of intra-op threads
    copied from the parent by fork can hang)."""
    torch.set_num_threads(1)


class FigureWriters:
    """Run the jobs that draw figures and make records in ``workers`` processes (none: here, at once)
    while the model goes on with the next batch, handing the records back in the order the jobs were
    given. At most ``waiting`` jobs wait at a time (a bounded queue: the model waits for the writers
    rather than holding every batch's maps); a job that fails fails its own input only."""

    def __init__(self, workers: int, waiting: int = 32):
        context = multiprocessing.get_context("fork")
        self._pool = (
            ProcessPoolExecutor(workers, mp_context=context, initializer=_one_thread) if workers else None
        )
        self._waiting = max(waiting, workers)
        self._pending: deque[tuple[Future, Callable[[Made], Any], Callable[[str], Any]]] = deque()

    def submit(
        self, job: Callable[[], Made], then: Callable[[Made], Any], failed: Callable[[str], Any]
    ) -> None:
        """Run ``job`` (a picklable call) and later, here and in submission order, ``then(made)``, or
        ``failed(reason)`` when the job raised ``OSError`` or ``ValueError``."""
        while len(self._pending) >= self._waiting:
            self._hand_first()
        if self._pool:
            future = self._pool.submit(_run_packed, _packed(job))
        else:
            future = Future()
            try:
                future.set_result(job())
            except (OSError, ValueError) as error:
                future.set_exception(error)
        self._pending.append((future, then, failed))

    def ready(self, wait: bool = False) -> None:
        """Hand every finished record (all of them with ``wait``) on, in order."""
        while self._pending and (wait or self._pending[0][0].done()):
            self._hand_first()

    def finished(self) -> None:
        """Hand on, in order, every record its job still makes, up to the first job that fails (after
        Ctrl-C: the workers were interrupted too)."""
        while self._pending:
            try:
                self._pending[0][0].result()
            except BaseException:  # noqa: BLE001 - an interrupted worker's KeyboardInterrupt included
                return
            self._hand_first()

    def _hand_first(self) -> None:
        future, then, failed = self._pending.popleft()
        try:
            made = future.result()
        except (OSError, ValueError) as error:
            failed(str(error))
            return
        then(made)

    def close(self) -> None:
        if self._pool:
            self._pool.shutdown(cancel_futures=True)


def one_by_one(explain_one: Callable[[Any], Job]) -> Callable[[list], list[Job]]:
    """An ``explain_batch`` that explains each loaded input on its own (a model that is not run in
    batches); an input's error stops that input only."""

    def explain_batch(loaded: list) -> list[Job]:
        jobs: list[Job] = []
        for item in loaded:
            try:
                jobs.append(explain_one(item))
            except ValueError as error:
                jobs.append(error)
        return jobs

    return explain_batch


def explained(explain_batch: Callable[[list], list[Job]], loaded: list[Loaded]) -> list[Job]:
    """The jobs of a batch; when ``explain_batch`` refuses the batch as a whole, each input is explained
    alone, so the error stays with the inputs that cause it and the others still succeed."""
    try:
        return explain_batch(loaded)
    except ValueError as error:
        if len(loaded) == 1:
            return [error]
    return [job for item in loaded for job in explained(explain_batch, [item])]


def default_workers(device: str, inputs: int) -> int:
    """The worker processes of a run without ``--workers``: none for a single input; 2 while the model
    runs on an accelerator (the CPU waits for it); on the CPU, the cores torch's own threads leave free, at
    most 2. A process beside a forward whose threads already hold every core takes turns with them, and each
    turn stalls the forward's parallel work: on the 2-core CPU (2 threads), 200 JPEGs through resnet18 with
    no figures ran at 0.666 of the forward's throughput with 2 workers and 0.813 with none, with figures at
    0.589 and 0.614 (2026-12-06: the bench's folder cases at 2 and 0 workers alternated in one process;
    docs/speed.md)."""
    if inputs < 2:
        return 0
    if not device.startswith("cpu"):
        return 2
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(0, min(2, cores - torch.get_num_threads()))


def inputs_of(names: list[str]) -> list[str]:
    """The image files ``names`` give (``image_paths``); the subfolders of a named folder, not read, are
    said in a line. (An earlier run's outputs in ``-o DIR`` are gone by now: ``output_folder`` refuses
    them or, with ``--overwrite``, removes them, so a rerun with ``-o`` in an input folder never reads
    them.)"""
    from mmcam.images import image_paths

    paths = image_paths(names)
    for name in names:
        folder = Path(name)
        inner = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
        if inner:
            print(
                f"mmcam: {name} has {len(inner)} subfolder(s) ({', '.join(inner[:3])}"
                f"{', ...' if len(inner) > 3 else ''}) whose images are not read: name them too",
                file=sys.stderr,
            )
    return paths


def for_each_input(
    options: BatchOptions,
    json_lines: bool,
    processes: Processes,
    load: Callable[[str], Any],
    prepare: Callable[[Any], Any],
    explain_batch: Callable[[list], list[Job]],
    output: Path | None = None,
    clips: bool = False,
) -> int:
    """Explain the inputs named by ``options.images`` (files, folders, glob patterns; with ``clips`` each
    path is one clip) in batches of ``--batch-size``: worker processes ``load`` and ``prepare`` each input
    while the model runs, ``explain_batch(loaded)`` explains a batch and gives per input a ``Job``: a
    call that writes its figures and makes its record (run by worker processes too) and a function
    adding the keys only this process knows, or the error that stopped the input. Records are printed in
    input order as they are ready (JSON lines with ``json_lines``); with ``output`` and figures they also
    go into the folder's ``report.html``. Under ``torchrun`` (``processes``) each process takes every
    N-th input and the first prints every record.

    A failing input prints one line and the rest go on (a single input's error is raised). Returns 0
    when all succeeded, 1 when some failed.
    """
    from tqdm import tqdm

    from mmcam.cli.records import describe_record, unique_stems

    if options.batch_size < 1:
        raise ValueError("--batch-size must be at least 1")
    paths = list(options.images) if clips else inputs_of(options.images)
    stems = unique_stems(paths)
    mine = [path for i, path in enumerate(paths) if processes.owns(i)]
    workers = default_workers(processes.device, len(paths)) if options.workers is None else options.workers
    figures = output is not None and not options.no_figures
    records: list[tuple[int, dict, RecordPictures | None]] = []  # (input number, record, report's pictures)
    failures: list[str] = []
    order = {path: i for i, path in enumerate(paths)}

    def done(path: str, record: dict, pictures: RecordPictures | None) -> None:
        records.append((order[path], record, pictures))
        if output is not None:
            maps = [target["map"] for target in record["targets"] if "map" in target]
            note_written(output, maps + ([record["maps_file"]] if "maps_file" in record else []))
        if processes.world == 1:
            said(record)

    def said(record: dict) -> None:
        for note in record.get("notes", []):
            tqdm.write(f"mmcam: {record['image']}: {note}", file=sys.stderr)
        print(json.dumps(record) if json_lines else describe_record(record), flush=True)

    def skip(path: str, error: str) -> None:
        if len(paths) == 1:
            raise ValueError(error)
        tqdm.write(f"mmcam: skipped {path}: {error}", file=sys.stderr)  # on its own line
        failures.append(path)

    progress = tqdm(total=len(mine), desc="explaining", unit="image", disable=len(paths) < 2, file=sys.stderr)
    pin = processes.device.startswith("cuda")
    with closing(FigureWriters(workers if figures else 0)) as writers:
        try:
            for batch in loaded_batches(mine, stems, load, prepare, options.batch_size, workers, pin):
                good = [item for item in batch if item.error is None]
                for item in batch:
                    if item.error is not None:
                        skip(item.path, item.error)
                with stage("forward + backward"):
                    jobs = explained(explain_batch, good) if good else []
                for item, job in zip(good, jobs):
                    if isinstance(job, ValueError):
                        skip(item.path, str(job))
                    else:
                        writers.submit(
                            job[0],
                            lambda made, item=item, finish=job[1]: done(
                                item.path, finish(made.record), made.pictures
                            ),
                            lambda error, item=item: skip(item.path, error),
                        )
                progress.update(len(batch))
                writers.ready()
            writers.ready(wait=True)
        except KeyboardInterrupt:
            progress.close()
            writers.finished()
            if processes.world == 1 and figures and records:  # the report of everything finished
                ordered = sorted(records, key=lambda row: row[0])
                report = write_records_report(
                    [record for _, record, _ in ordered],
                    [shown for _, _, shown in ordered],
                    output / "report.html",
                )
                note_written(output, [report])
                print(
                    f"report of the {len(ordered)} finished inputs: open {report.resolve()}", file=sys.stderr
                )
            raise
    progress.close()
    everything = processes.gather(records)
    failed = len(processes.gather(failures))
    if not processes.leader:
        return 0  # the leader says how the whole run went
    rows = sorted(everything, key=lambda row: row[0])
    ordered = [record for _, record, _ in rows]
    if processes.world > 1:
        for record in ordered:
            said(record)
    shown = [target for record in ordered for target in record["targets"]]
    if any(target.get("negligible") for target in shown):
        count = sum(bool(target.get("negligible")) for target in shown)
        print(f"mmcam: warning: {negligible_note(count, len(shown))}", file=sys.stderr)
    if figures and ordered and not clips:
        with stage("report"):
            report = write_records_report(ordered, [shown for _, _, shown in rows], output / "report.html")
        note_written(output, [report])
        print(f"report: open {report.resolve()}", file=sys.stderr if json_lines else sys.stdout)
    return 1 if failed else 0
