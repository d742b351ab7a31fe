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
from mmcam.evaluation.grounding import is_single_object, word_objects
from mmcam.metrics.pointing import peak_hit_shares
from mmcam.targets import logits_of
from mmcam.zoo.world import Scene


def rate(hits: Counter, totals: Counter) -> dict[str, float]:
    return {key: hits[key] / totals[key] for key in totals if totals[key]}


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
    those the model predicts (logit > 0 for a multi-label model, the top classes otherwise)."""
    explainer = classifier.explainer(layer, method)
    hits, totals = Counter(), Counter()
    for count in sorted({len(scene.objects) for scene in scenes}):
        group = [scene for scene in scenes if len(scene.objects) == count]
        for start in range(0, len(group), batch_size):
            batch = group[start : start + batch_size]
            pixels = classifier.preprocess([Image.fromarray(scene.image) for scene in batch])
            explanation = explainer(pixels, [[obj.class_index for obj in scene.objects] for scene in batch])
            masks = torch.cat([scene_masks(scene, range(count)) for scene in batch])
            inside = peak_hit_shares(explanation.maps.flatten(0, 1), masks)
            predicted = _predicted(classifier, pixels, explanation.scores, count)
            hits["class"] += float(inside.sum())
            totals["class"] += len(masks)
            hits["predicted class"] += float(inside[predicted].sum())
            totals["predicted class"] += int(predicted.sum())
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


def word_hits(scene: Scene, words: Sequence[str], maps: torch.Tensor) -> list[tuple[int, str, float]]:
    """(position, kind, hit) for each size, color and shape word of a caption of ``scene`` (generated, so
    not necessarily the true one), ``maps[position]`` being that word's map, against the object the word
    names (``grounding.word_objects``); one batched pointing per scene."""
    found = word_objects(words, scene.caption.words, scene.caption.links)
    if not found:
        return []
    positions = [position for position, _, _ in found]
    inside = peak_hit_shares(maps[positions], scene_masks(scene, [about for _, _, about in found])).tolist()
    return [(position, kind, hit) for (position, kind, _), hit in zip(found, inside)]


def caption_pointing(
    captioner: CaptionModel, scenes: Sequence[Scene], layer: str | None = None, method: str | None = None
) -> tuple[Counter, Counter]:
    """For every size, color and shape word of the *generated* caption: does the word's map (the
    captioner's default layer and method unless given) peak inside the object it names? Also scores the
    whole-caption map against the same objects, the comparison of the Grad-CAM paper's captioning study.
    "(word right)": only the words true of the object they name (a trained model's caption may be wrong)."""
    explainer = captioner.explainer(layer, method)
    hits, totals = Counter(), Counter()
    for scene in scenes:
        image = Image.fromarray(scene.image)
        result = explain_caption(captioner, image, words="all", whole_caption=True, explainer=explainer)
        maps = result.explanation.maps[0]
        whole = maps[-1].expand(len(result.words), -1, -1)
        right = {
            position: about is not None and getattr(scene.objects[about], kind) == result.words[position]
            for position, kind, about in word_objects(result.words, scene.caption.words, scene.caption.links)
        }
        for suffix, word_maps in (("", maps), (" (whole-caption map)", whole)):
            for position, kind, hit in word_hits(scene, result.words, word_maps):
                for category in [kind + suffix] + (
                    [f"{kind}{suffix} (word right)"] if right[position] else []
                ):
                    hits[category] += hit
                    totals[category] += 1
    return hits, totals


def vqa_pointing(
    vqa: VQAModel, scenes: Sequence[Scene], layer: str | None = None, method: str | None = None
) -> tuple[Counter, Counter]:
    """Questions about one object (``grounding.is_single_object``): does the predicted answer's map (the
    model's default layer and method unless given) peak inside it? And for "what color is the <shape>?"
    with two or more objects: does the map of a wrong color present in the scene peak on the objects
    that have that color? "(answered right)": only the questions the model answers right."""
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
            hit = float(peak_hit_shares(maps[:1], scene_masks(scene, question.objects[:1])))
            for category in [question.type] + [f"{question.type} (answered right)"] * (
                result.answer == question.answer
            ):
                totals[category] += 1
                hits[category] += hit
            if contrast:
                painted = [i for i, o in enumerate(scene.objects) if o.color == others[0].color]
                totals["wrong color, on its object"] += 1
                hits["wrong color, on its object"] += float(
                    peak_hit_shares(maps[-1:], scene_masks(scene, painted).any(0)[None])
                )
    return hits, totals
