"""Where concept tables live, and building one for a model on the shapes world when none is cached."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from torch import nn

from mmcam.text.dissect import ConceptTable, dissect


def cache_dir() -> Path:
    """``$MMCAM_CACHE/concepts`` or ``~/.cache/mmcam/concepts``."""
    return Path(os.environ.get("MMCAM_CACHE", Path.home() / ".cache" / "mmcam")) / "concepts"


def table_path(model_name: str, layer: str) -> Path:
    return cache_dir() / f"{re.sub(r'[^A-Za-z0-9.]+', '-', model_name)}--{layer}.json"


def shapes_table(
    model_name: str,
    model: nn.Module,
    layer: str,
    preprocess: Callable,
    probes: int = 200,
    seed: int = 60_000,
    progress: bool = True,
    rebuild: bool = False,
) -> ConceptTable:
    """The cached table of (model, layer), or a new one dissected on ``probes`` shapes scenes and saved."""
    from mmcam.zoo import make_scenes
    from mmcam.zoo.concepts import CONCEPTS, probe_batches

    path = table_path(model_name, layer)
    if path.is_file() and not rebuild:
        return ConceptTable.load(path)
    scenes = make_scenes(probes, seed=seed)
    table = dissect(
        model,
        layer,
        probe_batches(scenes, preprocess),
        CONCEPTS,
        probes,
        model_name=model_name,
        progress=progress,
    )
    table.save(path)
    return table
