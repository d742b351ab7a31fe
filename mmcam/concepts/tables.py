"""Where concept tables live, and building one for a model's layer when none is cached."""

from __future__ import annotations

import os
import re
from pathlib import Path

from mmcam.concepts.compose import MAX_LENGTH
from mmcam.concepts.dissect import ConceptTable
from mmcam.concepts.probes import ProbeSet, Subject, name_units, shapes_probe


def cache_dir() -> Path:
    """``$MMCAM_CACHE/concepts`` or ``~/.cache/mmcam/concepts``."""
    return Path(os.environ.get("MMCAM_CACHE", Path.home() / ".cache" / "mmcam")) / "concepts"


def table_path(model_name: str, layer: str, probe: str = "shapes", max_length: int = MAX_LENGTH) -> Path:
    """Where the table of ``model_name``'s ``layer`` named on ``probe`` (a probe set's name) by formulas of up
    to ``max_length`` concepts is cached."""
    parts = [model_name, layer] + ([] if probe == "shapes" else [probe])
    parts += [] if max_length == 1 else [f"formulas{max_length}"]
    return cache_dir() / ("--".join(re.sub(r"[^A-Za-z0-9.]+", "-", part) for part in parts) + ".json")


def concept_table(
    subject: Subject,
    probe: ProbeSet | None = None,
    progress: bool = True,
    rebuild: bool = False,
    max_length: int = MAX_LENGTH,
) -> ConceptTable:
    """The cached table of the subject's layer on ``probe`` (default: 200 shapes scenes), or a new one,
    named (by formulas of up to ``max_length`` concepts) and saved."""
    probe = probe or shapes_probe()
    path = table_path(subject.name, subject.layer, probe.name, max_length)
    if path.is_file() and not rebuild:
        return ConceptTable.load(path)
    table = name_units(subject, probe, progress, max_length)
    table.save(path)
    return table
