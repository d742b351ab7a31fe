"""Options and output shared by the task commands: the JSON schema, figures, errors per image. The
options import nothing heavy (--help stays fast); the helpers that run a command import what they use."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from contextlib import closing
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmcam.cli.choices import METHODS

if TYPE_CHECKING:
    from torch import Tensor


def comma_separated(text: str) -> list[str]:
    """An option's comma-separated names, blanks dropped: 'a, b,' -> ['a', 'b']."""
    return [name.strip() for name in text.split(",") if name.strip()]


def add_explain_options(
    parser: argparse.ArgumentParser, default_output: str = "mmcam-out", default_method: str | None = None
) -> None:
    parser.add_argument(
        "--method",
        default=default_method,
        metavar="M",
        help=f"one of: {', '.join(METHODS)} (default "
        + (default_method or "per model family, chosen by measurement (README); gradcam with --concepts")
        + ")",
    )
    parser.add_argument(
        "--layer", default=None, metavar="L", help="layer to explain (dotted name); default per model"
    )
    parser.add_argument(
        "-o",
        "--output",
        default=default_output,
        metavar="DIR",
        help=f"where figures go (default ./{default_output})",
    )
    parser.add_argument(
        "--device",
        default=None,
        metavar="D",
        help="where the model runs: cpu, cuda, cuda:N or mps (default: cuda when available, else cpu)",
    )
    add_trust_pickle_option(parser)
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the report of an earlier run in -o DIR (kept otherwise)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object per image on stdout")
    parser.add_argument(
        "--save-maps",
        action="store_true",
        help="also write the maps for scripts, DIR/<image>-<task>-maps.safetensors (rl: episode-N-maps): 'raw' "
        "(B, K, h, w) at the layer's grid and 'maps' (B, K, H, W) in [0, 1] at the model's input size; the "
        "record's maps_file names it",
    )


def add_trust_pickle_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow checkpoints stored as pickles (PyTorch .bin, stable-baselines3 .zip), which can run code "
        "when loaded; without it only safetensors are read",
    )


def add_concept_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--concepts",
        action="store_true",
        help="name the units behind each target by the concepts they detect (the layer's concept table, "
        "built on first use and cached: see mmcam dissect)",
    )
    parser.add_argument(
        "--probe-dataset",
        metavar="PATH",
        help="with --concepts: name units on this datasets.Dataset (save_to_disk folder; images with masks "
        "and per-object concepts, or captions) instead of the shapes world",
    )


def add_smoothing_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--eigen-smooth",
        action="store_true",
        help="a channel-weight method's map as the first principal component of its weighted activations "
        "(pytorch-grad-cam's eigen_smooth)",
    )
    parser.add_argument(
        "--aug-smooth",
        action="store_true",
        help="average the maps of the input flipped or not and scaled by 0.9, 1 and 1.1 (six passes; "
        "pytorch-grad-cam's aug_smooth)",
    )


def smoothing(arguments: argparse.Namespace) -> dict:
    """The ``Explainer`` options of ``--eigen-smooth`` and ``--aug-smooth`` (after ``chosen_method``);
    ``--eigen-smooth`` with a method that has no channel weights is refused before any work."""
    from mmcam.engine.methods import CHANNEL_WEIGHT_METHODS, get_method

    if arguments.eigen_smooth and get_method(arguments.method).name not in CHANNEL_WEIGHT_METHODS:
        raise ValueError(
            f"--eigen-smooth needs a method with channel weights, not {arguments.method}: pass --method with "
            f"one of {', '.join(CHANNEL_WEIGHT_METHODS)}"
        )
    return {"eigen_smooth": arguments.eigen_smooth, "aug_smooth": arguments.aug_smooth}


def chosen_method(arguments: argparse.Namespace, model) -> str:
    """``--method``, else the model's default method; with ``--concepts``, a default without channel
    weights gives way to Grad-CAM (the sentences are built from channel weights)."""
    from mmcam.engine.methods import CHANNEL_WEIGHT_METHODS

    if arguments.method:
        return arguments.method
    if getattr(arguments, "concepts", False) and model.method not in CHANNEL_WEIGHT_METHODS:
        return "gradcam"
    return model.method


def concept_table_of(arguments: argparse.Namespace, subject, probe=None):
    """The concept table for ``--concepts`` (None without it), named on ``probe``, on ``--probe-dataset``
    or on the shapes world; one clear error for a layer or method that has no named channels."""
    if not arguments.concepts:
        return None
    from mmcam.concepts.tables import concept_table
    from mmcam.engine.methods import CHANNEL_WEIGHT_METHODS, get_method

    if subject.layer == "auto" or get_method(arguments.method).name not in CHANNEL_WEIGHT_METHODS:
        raise ValueError(
            "--concepts needs a named --layer and a method with channel weights: "
            + ", ".join(CHANNEL_WEIGHT_METHODS)
        )
    if probe is None and getattr(arguments, "probe_dataset", None):
        import datasets

        from mmcam.concepts.probes import dataset_probe

        probe = dataset_probe(datasets.load_from_disk(arguments.probe_dataset), arguments.probe_dataset)
    return concept_table(subject, probe)


def add_concepts(record: dict, weights: Tensor, table, verb: str) -> None:
    """Each target k of ``record`` gets ``"concepts"`` (its top supporting and opposing named units, from
    its channel weights ``weights[k]``) and ``"text"``, the sentence built from them."""
    from mmcam.concepts.sentences import describe

    for target, row in zip(record["targets"], weights):
        described = describe(target["label"], row, table, verb=verb)
        target["concepts"], target["text"] = described.as_json(), described.text


def output_folder(arguments: argparse.Namespace) -> Path:
    """The command's ``-o DIR``, created if missing and checked before any work: it must be writable,
    and an earlier run's report in it is kept unless ``--overwrite`` is given."""
    output = Path(arguments.output)
    try:
        output.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=output):
            pass
    except OSError as error:
        reason = (error.strerror or str(error)).lower()
        raise ValueError(
            f"cannot write to the output folder {output}: {reason}; pass another -o DIR"
        ) from None
    if (output / "report.html").exists() and not getattr(arguments, "overwrite", False):
        raise ValueError(
            f"{output} holds the report of an earlier run; pass --overwrite to replace it, or another -o DIR"
        )
    return output


def unknown_words_said(unknown_words: Callable[[str], list[str]], texts: dict[str, str | None]) -> list[str]:
    """The words of ``texts`` (the question, a given caption or answer, by what they are) that the model's
    tokenizer reads as its unknown token, each said once on stderr in a sentence."""
    found = []
    for what, text in texts.items():
        unknown = unknown_words(text or "")
        if unknown:
            found.extend(unknown)
            print(
                f"mmcam: the model does not know {', '.join(map(repr, unknown))} in the {what}: it reads "
                "them as its unknown token, like any other unknown word; rephrase with words it knows",
                file=sys.stderr,
            )
    return found


def check_top(arguments: argparse.Namespace) -> None:
    if arguments.top < 1:
        raise ValueError("--top must be at least 1")


def add_batch_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--batch-size",
        type=int,
        default=8,
        metavar="B",
        help="inputs per forward and backward pass (default 8; vqa --answer and --why-not go one by one)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="W",
        help="processes that decode the images and draw the figures while the model runs (default: 2, "
        "0 for none; none for a single image)",
    )
    parser.add_argument(
        "--no-figures",
        action="store_true",
        help="write no figures and no report: the JSON (and --save-maps) only, for whole folders at speed",
    )


# Per input: (a picklable call that writes its figures and makes its record, what to add to the record),
# or the error that stopped that input.
Job = tuple[Callable[[], dict], Callable[[dict], dict]] | ValueError


def record_job(
    arguments: argparse.Namespace,
    output: Path,
    task: str,
    model: str,
    item,
    explanation,
    clip: bool = False,
    **extra,
) -> Callable[[], dict]:
    """The picklable call that writes the figures of one loaded input's explanation and makes its record
    (``explanation_record``, ``clip_record`` for a clip), as the options ask."""
    from mmcam.cli.records import clip_record, explanation_record

    return partial(
        clip_record if clip else explanation_record,
        task,
        model,
        item.path,
        item.image,
        explanation,
        output,
        stem=item.stem,
        save_maps=arguments.save_maps,
        figures=not arguments.no_figures,
        **extra,
    )


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


def for_each_input(
    arguments: argparse.Namespace,
    processes,
    load: Callable[[str], Any],
    prepare: Callable[[Any], Any],
    explain_batch: Callable[[list], list[Job]],
    output: Path | None = None,
    clips: bool = False,
) -> int:
    """Explain the inputs named by ``arguments.images`` (files, folders, glob patterns; with ``clips`` each
    path is one clip) in batches of ``--batch-size``: worker processes ``load`` and ``prepare`` each input
    while the model runs, ``explain_batch(loaded)`` explains a batch and gives per input a ``Job``: a
    call that writes its figures and makes its record (run by worker processes too) and a function
    adding the keys only this process knows, or the error that stopped the input. Records are printed in input order as they are ready (JSON lines with
    ``--json``); with ``output`` and figures they also go into the folder's ``report.html``. Under
    ``torchrun`` (``processes``, from ``start_processes``) each process takes every N-th input and the
    first prints every record.

    A failing input prints one line and the rest go on (a single input's error is raised). Returns 0
    when all succeeded, 1 when some failed.
    """
    from tqdm import tqdm

    from mmcam.cli.batches import FigureWriters, loaded_batches
    from mmcam.cli.records import describe_record, unique_stems
    from mmcam.evaluation.distributed import stop_processes
    from mmcam.images import image_paths

    if arguments.batch_size < 1:
        raise ValueError("--batch-size must be at least 1")
    paths = list(arguments.images) if clips else image_paths(arguments.images)
    stems = unique_stems(paths)
    mine = [path for i, path in enumerate(paths) if processes.owns(i)]
    workers = (0 if len(paths) == 1 else 2) if arguments.workers is None else arguments.workers
    records: list[tuple[int, dict]] = []
    failures: list[str] = []
    order = {path: i for i, path in enumerate(paths)}

    def done(path: str, record: dict) -> None:
        records.append((order[path], record))
        if processes.world == 1:
            said(record)

    def said(record: dict) -> None:
        for note in record.get("notes", []):
            tqdm.write(f"mmcam: {record['image']}: {note}", file=sys.stderr)
        print(json.dumps(record) if arguments.json else describe_record(record), flush=True)

    progress = tqdm(total=len(mine), desc="explaining", unit="image", disable=len(paths) < 2, file=sys.stderr)
    with closing(FigureWriters(workers if output is not None and not arguments.no_figures else 0)) as writers:
        for batch in loaded_batches(mine, stems, load, prepare, arguments.batch_size, workers):
            good = [item for item in batch if item.error is None]
            skipped = [(item.path, item.error) for item in batch if item.error is not None]
            try:
                jobs = explain_batch(good) if good else []
            except ValueError as error:
                jobs = [error] * len(good)
            for item, job in zip(good, jobs):
                if isinstance(job, ValueError):
                    skipped.append((item.path, str(job)))
                else:
                    writers.submit(
                        job[0], lambda record, item=item, finish=job[1]: done(item.path, finish(record))
                    )
            if skipped and len(paths) == 1:
                raise ValueError(skipped[0][1])
            for path, error in skipped:
                tqdm.write(f"mmcam: skipped {path}: {error}", file=sys.stderr)  # on its own line
            failures += [path for path, _ in skipped]
            progress.update(len(batch))
            writers.ready()
        writers.ready(wait=True)
    progress.close()
    everything = processes.gather(records)
    failed = len(processes.gather(failures))
    stop_processes(processes)
    if not processes.leader:
        return 0  # the leader says how the whole run went
    ordered = [record for _, record in sorted(everything, key=lambda pair: pair[0])]
    if processes.world > 1:
        for record in ordered:
            said(record)
    if output is not None and ordered and not clips and not arguments.no_figures:
        report = write_records_report(ordered, output / "report.html")
        print(f"report: open {report.resolve()}", file=sys.stderr if arguments.json else sys.stdout)
    return 1 if failed else 0


def write_records_report(records: list[dict], path: Path) -> Path:
    """The interactive HTML report of classify, caption or vqa records, at ``path``."""
    from mmcam.report import record_view, write_report

    return write_report(path, [record_view(record) for record in records], f"mmcam {records[0]['task']}")
