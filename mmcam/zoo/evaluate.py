"""Localization of the bundled models' explanations on fresh shapes scenes, where the right answer is known.

Each function returns hit counts per category; ``rate`` turns them into shares. Tests assert the
acceptance thresholds on them and the recipes in ``tasks/`` print them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch
from PIL import Image

from mmcam.metrics.pointing import peak_hits
from mmcam.zoo.world import Scene


def rate(hits: Counter, totals: Counter) -> dict[str, float]:
    return {key: hits[key] / totals[key] for key in totals}


def classifier_pointing(classifier, scenes: Sequence[Scene], batch_size: int = 64) -> tuple[Counter, Counter]:
    """Grad-CAM of each present class: does its peak fall inside that object? Scenes with the same
    number of objects are explained together, every present class of a batch in one pass."""
    explainer = classifier.explainer()
    hits, totals = Counter(), Counter()
    for count in sorted({len(scene.objects) for scene in scenes}):
        group = [scene for scene in scenes if len(scene.objects) == count]
        for start in range(0, len(group), batch_size):
            batch = group[start : start + batch_size]
            pixels = classifier.preprocess([Image.fromarray(scene.image) for scene in batch])
            explanation = explainer(pixels, [[obj.class_index for obj in scene.objects] for scene in batch])
            masks = torch.stack([torch.from_numpy(obj.mask) for scene in batch for obj in scene.objects])
            hits["class"] += int(peak_hits(explanation.maps.flatten(0, 1), masks).sum())
            totals["class"] += len(masks)
    return hits, totals
