"""The options the task commands share: argparse builders (torch-free, so --help stays fast) and the typed
options a command parses its command line into once (``parsed``). Nothing below ``cli/`` sees an
argparse ``Namespace``: a command hands its tasks these typed options' fields."""

from __future__ import annotations

import argparse
import sys
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, is_dataclass
from typing import TypeVar

from mmcam.cli.choices import DROP, FILLS, METHODS

Options = TypeVar("Options")


def parsed(kind: type[Options], arguments: argparse.Namespace) -> Options:
    """The typed options ``kind`` (a dataclass) read from the parsed command line: a field named like an
    option takes its value, a field that is itself a dataclass is read the same way from the same line."""
    hints = typing.get_type_hints(kind)
    values = {}
    for field in fields(kind):
        hint = hints[field.name]
        values[field.name] = parsed(hint, arguments) if is_dataclass(hint) else getattr(arguments, field.name)
    return kind(**values)


@dataclass(frozen=True)
class ExplainOptions:
    """``add_explain_options``: the method and layer asked for (None: the model's default), where the
    outputs go and what they hold."""

    method: str | None
    layer: str | None
    output: str
    device: str | None
    trust_pickle: bool
    overwrite: bool
    json: bool
    save_maps: bool


@dataclass(frozen=True)
class ConceptOptions:
    """``add_concept_options``: name the units behind each target, on the shapes world or ``probe_dataset``."""

    concepts: bool
    probe_dataset: str | None


@dataclass(frozen=True)
class SmoothingOptions:
    """``add_smoothing_options``."""

    eigen_smooth: bool
    aug_smooth: bool


@dataclass(frozen=True)
class PerturbationOptions:
    """``add_perturbation_options``: occlusion's window and stride, RISE's mask count and grid (in cells), and
    what fills the cells they remove; None where the option was not given (the method's default)."""

    occlusion_window: int | None
    occlusion_stride: int | None
    rise_masks: int | None
    rise_cells: int | None
    fill: str | float | None


@dataclass(frozen=True)
class BatchOptions:
    """``add_batch_options`` and the inputs: files, folders or glob patterns (clips with ``--video``)."""

    images: list[str]
    batch_size: int
    workers: int | None
    no_figures: bool


def check_top(top: int) -> None:
    if top < 1:
        raise ValueError("--top must be at least 1")


def capped_top(top: int, names: Sequence[str] | None, what: str) -> int:
    """``--top``, at most the number of ``names`` the model has (its classes or answers, ``what``; no cap
    when it does not name them): a larger ``--top`` explains every one, and says so on stderr."""
    if names and top > len(names):
        print(
            f"mmcam: the model has {len(names)} {what}: --top {top} explains all {len(names)}",
            file=sys.stderr,
        )
        return len(names)
    return top


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer of ``minimum`` or more, refused at parse time (before any folder is made)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, got {value}")
        return value

    return parse


def fill_value(text: str) -> str | float:
    """An argparse type: one of ``FILLS``, ``DROP``, or a number (a constant baseline, in the model's input
    units)."""
    if text in (*FILLS, DROP):
        return text
    try:
        return float(text)
    except ValueError:
        names = ", ".join((*FILLS, DROP))
        raise argparse.ArgumentTypeError(f"expected one of {names} or a number, got {text!r}") from None


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
        + (
            default_method
            or "per model family, chosen by measurement: docs/families.md; gradcam with --concepts"
        )
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


def add_batch_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--batch-size",
        type=at_least(1),
        default=8,
        metavar="B",
        help="inputs per forward and backward pass (default 8; vqa --answer and --why-not go one by one)",
    )
    parser.add_argument(
        "--workers",
        type=at_least(0),
        default=None,
        metavar="W",
        help="processes that decode the images and draw the figures while the model runs (default: 2 on a "
        "GPU; on the CPU the cores torch's threads leave free, at most 2; none for a single image; 0 for none)",
    )
    parser.add_argument(
        "--no-figures",
        action="store_true",
        help="write no figures and no report: the JSON (and --save-maps) only, for whole folders at speed",
    )


def add_perturbation_options(parser: argparse.ArgumentParser) -> None:
    """The settings of the perturbation methods (``--method occlusion`` or ``rise``), in cells of the
    explained grid: a token model's patches, a CNN's cells of the explained layer."""
    parser.add_argument(
        "--occlusion-window",
        type=at_least(1),
        metavar="N",
        help="occlusion: fill N x N cells of the explained grid at a time (a token model's patches, a CNN "
        "layer's cells; default 1)",
    )
    parser.add_argument(
        "--occlusion-stride",
        type=at_least(1),
        metavar="N",
        help="occlusion: move the window N cells at a time (default 1)",
    )
    parser.add_argument(
        "--rise-masks",
        type=at_least(1),
        metavar="N",
        help="RISE: how many random masks to score (default 1000)",
    )
    parser.add_argument(
        "--rise-cells",
        type=at_least(1),
        metavar="N",
        help="RISE: draw each mask as N x N cells, each kept with probability 0.5, then upsampled smoothly "
        "to the image (default: the explained layer's grid)",
    )
    parser.add_argument(
        "--fill",
        type=fill_value,
        metavar="F",
        help=f"occlusion and RISE: what fills a removed cell: {', '.join(FILLS)} or a number (a constant "
        "baseline in the model's input units, after its normalization); background (default) is each "
        "image's per-channel median over its outermost pixels, blur a Gaussian blur of the image. "
        f"Occlusion of a token layer also takes {DROP}: the window's patch tokens leave the sequence "
        "(ViT-family towers, which run on fewer tokens)",
    )
