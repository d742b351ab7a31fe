"""Options and output shared by the task commands: the JSON schema, output folders, errors per image."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from mmcam.engine.methods import METHODS


def add_explain_options(parser: argparse.ArgumentParser, default_output: str = "mmcam-out") -> None:
    parser.add_argument("--method", default="gradcam", metavar="M", help=f"one of: {', '.join(METHODS)}")
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
    parser.add_argument("--json", action="store_true", help="print one JSON object per image on stdout")


def target_record(label: str, index: Any, score: float, peak: tuple[int, int], map_path: Path) -> dict:
    """One explained target in the shared JSON schema."""
    return {
        "label": label,
        "index": index,
        "score": round(float(score), 6),
        "peak": list(peak),
        "map": str(map_path),
    }


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "target"


def for_each_image(
    paths: list[str], explain_one: Callable[[str], dict], as_json: bool, describe: Callable[[dict], str]
) -> int:
    """Run ``explain_one`` on each path; a failing image prints one line and the rest go on.

    Returns 0 when all succeeded, 1 when some failed (the failures are on stderr).
    """
    failures = 0
    progress: Iterable[str] = tqdm(
        paths, desc="explaining", unit="image", disable=len(paths) < 2, file=sys.stderr
    )
    for path in progress:
        try:
            record = explain_one(path)
        except ValueError as error:
            failures += 1
            if len(paths) == 1:
                raise
            print(f"mmcam: skipped {path}: {error}", file=sys.stderr)
            continue
        print(json.dumps(record) if as_json else describe(record))
    return 1 if failures else 0
