"""Where concept tables live, and building one for a model's layer when none is cached."""

from __future__ import annotations

import os
import re
from pathlib import Path

from mmcam.concepts.dissect import ConceptTable
from mmcam.concepts.probes import ProbeSet, Subject, name_units, shapes_probe


def cache_dir() -> Path:
    """``$MMCAM_CACHE/concepts`` or ``~/.cache/mmcam/concepts``."""
    return Path(os.environ.get("MMCAM_CACHE", Path.home() / ".cache" / "mmcam")) / "concepts"


def table_path(model_name: str, layer: str, probe: str = "shapes") -> Path:
    """Where the table of ``model_name``'s ``layer`` named on ``probe`` (a probe set's name) is cached."""
    parts = [model_name, layer] + ([] if probe == "shapes" else [probe])
    return cache_dir() / ("--".join(re.sub(r"[^A-Za-z0-9.]+", "-", part) for part in parts) + ".json")


def concept_table(
    subject: Subject, probe: ProbeSet | None = None, progress: bool = True, rebuild: bool = False
) -> ConceptTable:
    """The cached table of the subject's layer on ``probe`` (default: 200 shapes scenes), or a new one,
    named and saved."""
    probe = probe or shapes_probe()
    path = table_path(subject.name, subject.layer, probe.name)
    if path.is_file() and not rebuild:
        return ConceptTable.load(path)
    table = name_units(subject, probe, progress)
    table.save(path)
    return table
