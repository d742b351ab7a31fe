"""Where concept tables live, and building one for a model's layer when none is cached."""

from __future__ import annotations

import os
import re
from pathlib import Path

from mmcam.concepts.compose import MAX_LENGTH
from mmcam.concepts.dissect import ConceptTable
from mmcam.concepts.probes import ProbeSet, Subject, name_units, shapes_probe

# How a table's activations are read; raised when that changes, so a table read the old way is rebuilt instead
# of found. 2: a chat model's layer is read at the image's tokens, in the explainer's layout (tiles stitched,
# packed tokens placed), where 1 read a language-model layer's first tokens, prompt included.
READING = 2


def cache_dir() -> Path:
    """``$MMCAM_CACHE/concepts`` or ``~/.cache/mmcam/concepts``."""
    return Path(os.environ.get("MMCAM_CACHE", Path.home() / ".cache" / "mmcam")) / "concepts"


def table_path(model_name: str, layer: str, probe: str = "shapes", max_length: int = MAX_LENGTH) -> Path:
    """Where the table of ``model_name``'s ``layer`` named on ``probe`` (a probe set's name) by formulas of up
    to ``max_length`` concepts and read as ``READING`` says is cached."""
    parts = [model_name, layer] + ([] if probe == "shapes" else [probe])
    parts += [] if max_length == 1 else [f"formulas{max_length}"]
    parts += [f"reading{READING}"]
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
