"""Acceptance pointing of a model's default explanations on fresh shapes scenes, batched per scene:
does each map peak inside the object it is about? (``peak_hit_shares``: ties share the hit.)

Each function returns hit and total counts per category; ``rate`` turns them into shares. Tests assert
the acceptance thresholds on them and the recipes in ``tasks/`` print them. ``mmcam eval`` measures the
same pointing, with more metrics and methods, on records.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from mmcam.adapters.captioning import CaptionModel, explain_caption
from mmcam.adapters.classification import ImageClassifier
from mmcam.adapters.vqa import VQAModel, explain_answers
from mmcam.engine.resize import upsample
from mmcam.evaluation.grounding import answer_objects, is_single_object, word_objects
from mmcam.metrics.pointing import peak_hit_shares, tolerance_px, within_distance
from mmcam.targets import logits_of
from mmcam.zoo.world import Scene

TOLERANT = " (tolerant)"  # the category's tolerant pointing game


def rate(hits: Counter, totals: Counter) -> dict[str, float]:
    return {key: hits[key] / totals[key] for key in totals if totals[key]}


def strict_and_tolerant(maps: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, H, W) maps and masks -> (N,) hits of the strict pointing game (the peak inside the mask) and
    of the tolerant one (within ``tolerance_px`` of it: 15 px at 224 px, Zhang et al.); ties share."""
    near = within_distance(masks, tolerance_px(tuple(masks.shape[-2:])))
    return peak_hit_shares(maps, masks), peak_hit_shares(maps, near)


def add(hits: Counter, totals: Counter, category: str, strict: torch.Tensor, tolerant: torch.Tensor) -> None:
    """Add the strict and tolerant hits of some targets to ``category`` and ``category + TOLERANT``."""
    for name, hit in ((category, strict), (category + TOLERANT, tolerant)):
        hits[name] += float(hit.sum())
        totals[name] += hit.numel()


def scene_masks(scene: Scene, objects: Sequence[int | None]) -> torch.Tensor:
    """(N, H, W) the masks of ``objects`` (None: no object, an empty mask where every peak misses)."""
    nothing = np.zeros(scene.image.shape[:2], dtype=bool)
    return torch.from_numpy(np.stack([nothing if o is None else scene.objects[o].mask for o in objects]))


def grid_ceiling(scenes: Sequence[Scene], side: int) -> float:
    """The pointing a perfect map on a ``side`` x ``side`` grid reaches on ``scenes``' objects: each
    cell holds the share of it the object covers, and the grid is upsampled bilinearly, as mmcam's maps are.
    A layer whose grid is this coarse cannot point higher, whatever the method (an object smaller than a
    cell, or off its centre, leaves the peak outside its mask)."""
    masks = torch.cat([scene_masks(scene, range(len(scene.objects))) for scene in scenes]).float()
    cells = F.interpolate(masks[:, None], size=(side, side), mode="area")[:, 0]
    return float(peak_hit_shares(upsample(cells, tuple(masks.shape[-2:])), masks.bool()).mean())


def classifier_pointing(
    classifier: ImageClassifier,
    scenes: Sequence[Scene],
    batch_size: int = 64,
    layer: str | None = None,
    method: str | None = None,
) -> tuple[Counter, Counter]:
    """The map of each present class (the classifier's default layer and method unless given): does its
    peak fall inside that object? Scenes with the same number of objects are explained together, every
    present class of a batch in one pass. "class" counts every present class; "predicted class" only
    those the model predicts (logit > 0 for a multi-label model, the top classes otherwise); each also
    with the tolerant pointing game (``TOLERANT``)."""
    explainer = classifier.explainer(layer, method)
    hits, totals = Counter(), Counter()
    for count in sorted({len(scene.objects) for scene in scenes}):
        group = [scene for scene in scenes if len(scene.objects) == count]
        for start in range(0, len(group), batch_size):
            batch = group[start : start + batch_size]
            pixels = classifier.preprocess([Image.fromarray(scene.image) for scene in batch])
            explanation = explainer(pixels, [[obj.class_index for obj in scene.objects] for scene in batch])
            masks = torch.cat([scene_masks(scene, range(count)) for scene in batch])
            inside, near = strict_and_tolerant(explanation.maps.flatten(0, 1), masks)
            predicted = _predicted(classifier, pixels, explanation.scores, count)
            add(hits, totals, "class", inside, near)
            add(hits, totals, "predicted class", inside[predicted], near[predicted])
    return hits, totals


def _predicted(
    classifier: ImageClassifier, pixels: torch.Tensor, scores: torch.Tensor, count: int
) -> torch.Tensor:
    """(B * count,) whether each explained class (score ``scores``) is predicted: logit > 0 for a
    multi-label classifier; for exclusive classes, a score among the image's ``count`` highest logits."""
    if classifier.multi_label:
        return (scores > 0).flatten()
    with torch.no_grad():
        lowest_kept = logits_of(classifier.model(pixels)).topk(count, dim=1).values[:, -1:]
    return (scores >= lowest_kept).flatten()


def scene_objects(scene: Scene) -> list[dict[str, str]]:
    """The attributes of ``scene``'s objects, as ``grounding`` reads them."""
    return [{"color": o.color, "shape": o.shape, "size": o.size} for o in scene.objects]


def word_hits(
    scene: Scene, words: Sequence[str], maps: torch.Tensor, tolerant: bool = False
) -> list[tuple[int, str, float]]:
    """(position, kind, hit) for each size, color and shape word of a caption of ``scene`` (generated, so
    not necessarily the true one) that describes an object of it, ``maps[position]`` being that word's
    map, against the objects the word names (``grounding.word_objects``: any object with the word's
    attribute), in the strict pointing game or the ``tolerant`` one; a word of a hallucinated phrase is
    left out. One batched pointing per scene."""
    found = [g for g in word_objects(words, scene_objects(scene)) if g.described]
    if not found:
        return []
    masks = torch.stack([scene_masks(scene, g.about).any(dim=0) for g in found])
    inside, near = strict_and_tolerant(maps[[g.position for g in found]], masks)
    return [(g.position, g.kind, hit) for g, hit in zip(found, (near if tolerant else inside).tolist())]


def caption_pointing(
    captioner: CaptionModel, scenes: Sequence[Scene], layer: str | None = None, method: str | None = None
) -> tuple[Counter, Counter]:
    """For every size, color and shape word of the *generated* caption: does the word's map (the
    captioner's default layer and method unless given) peak inside the object it names? Also scores the
    whole-caption map against the same objects, the comparison of the Grad-CAM paper's captioning study.
    Words of phrases that describe no object of the scene are counted apart ("hallucinated")."""
    explainer = captioner.explainer(layer, method)
    hits, totals = Counter(), Counter()
    for scene in scenes:
        image = Image.fromarray(scene.image)
        result = explain_caption(captioner, image, words="all", whole_caption=True, explainer=explainer)
        maps = result.explanation.maps[0]
        whole = maps[-1].expand(len(result.words), -1, -1)
        for grounded in word_objects(result.words, scene_objects(scene)):
            hits["hallucinated"] += not grounded.described
            totals["hallucinated"] += 1
        for suffix, word_maps in (("", maps), (" (whole-caption map)", whole)):
            for tolerant, tag in ((False, ""), (True, TOLERANT)):
                for _, kind, hit in word_hits(scene, result.words, word_maps, tolerant):
                    hits[kind + suffix + tag] += hit
                    totals[kind + suffix + tag] += 1
    return hits, totals


def vqa_pointing(
    vqa: VQAModel, scenes: Sequence[Scene], layer: str | None = None, method: str | None = None
) -> tuple[Counter, Counter]:
    """Questions about one object (``grounding.is_single_object``): does the predicted answer's map (the
    model's default layer and method unless given) peak inside it? And for "what color is the <shape>?"
    with two or more objects: does the map of a wrong color present in the scene peak on the objects
    that have that color? "(answered right)": only the questions the model answers right. The answer is
    about the asked object and every other object sharing the true answer (``grounding.answer_objects``);
    each category also with the tolerant pointing game (``TOLERANT``)."""
    explainer = vqa.explainer(layer, method)
    hits, totals = Counter(), Counter()
    for scene in scenes:
        image = Image.fromarray(scene.image)
        for question in scene.questions:
            if not is_single_object(question.type, question.answer):
                continue
            subject = scene.objects[question.objects[0]]
            others = [o for o in scene.objects if o is not subject and o.color != subject.color]
            contrast = question.type == "color" and others
            asked = [others[0].color] if contrast else []
            result = explain_answers(vqa, image, question.text, answers=asked, explainer=explainer)
            maps = result.explanation.maps[0]
            about = answer_objects(question.type, question.answer, question.objects[:1], scene_objects(scene))
            hit, near = strict_and_tolerant(maps[:1], scene_masks(scene, about).any(0)[None])
            for category in [question.type] + [f"{question.type} (answered right)"] * (
                result.answer == question.answer
            ):
                add(hits, totals, category, hit, near)
            if contrast:
                painted = [i for i, o in enumerate(scene.objects) if o.color == others[0].color]
                totals["wrong color, on its object"] += 1
                hits["wrong color, on its object"] += float(
                    peak_hit_shares(maps[-1:], scene_masks(scene, painted).any(0)[None])
                )
    return hits, totals
