"""Why the ViT fixture's sentences miss issue 33's goals: do its token channels carry the concepts, and do the
units that carry a class's score detect that class's color and shape? Three measurements per layer, on the
held-out scenes of tasks/concepts/measure.py (seed 70000; labels: compositional, 200 probe scenes of seed 60000):

* rankings: the sentences' goals (first concept asserts the class's color or shape; supporting concepts assert
  both) and the ablation (named / random units) when units are ranked by Grad-CAM's contribution
  x_c = mean_ij(G_cij) mean_ij(A_cij) (what mmcam does), by the first-order contribution mean_ij(G_cij A_cij),
  or by the exact drop of the score when the unit alone is zeroed, d_c = s - s(A_c = 0);
* roles: the mean single-unit drop d_c of a predicted class's score over units whose single-concept label is
  the class's own color (shape) and over units labelled with another color (shape);
* carry (``--carry``): per concept, the patch-level AUC of the best single channel (either sign) and of a
  least-squares linear probe on all channels (fit on the probe scenes, scored on 100 held-out scenes).

Run: ``PYTHONPATH=$PWD .venv/bin/python tasks/concepts/diagnose_units.py --model vit --layers vit.layers.2``
(``--model`` as in measure.py's MODELS: shapes, resnet18, vit).
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import torch
from measure import MODELS  # tasks/concepts/measure.py, beside this script
from PIL import Image
from torch.nn import functional as F

from mmcam.concepts.ablation import sentence_drops
from mmcam.concepts.compose import positive_atoms
from mmcam.concepts.dissect import layer_activations
from mmcam.concepts.probes import shapes_probe
from mmcam.concepts.sentences import describe
from mmcam.concepts.tables import concept_table
from mmcam.engine.layouts import as_layout
from mmcam.loading import load_classifier
from mmcam.zoo import make_scenes
from mmcam.zoo.concepts import COLORS, CONCEPTS, SHAPES, concept_masks

RANKINGS = ("gradcam", "grad-x-activation", "zero-drop")


def _logits_and_output(model, module, inputs):
    """The model's logits and ``module``'s output on ``inputs``, both in the autograd graph."""
    captured = {}
    handle = module.register_forward_hook(lambda m, a, out: captured.update(a=out))
    try:
        logits = model(inputs)
    finally:
        handle.remove()
    output = captured["a"][0] if isinstance(captured["a"], tuple) else captured["a"]
    return getattr(logits, "logits", logits), output


def rankings_and_roles(name: str, layer: str, scenes: int) -> dict:
    classifier = load_classifier(MODELS[name][0])
    table = concept_table(classifier.subject(layer), shapes_probe(), progress=False)
    explainer = classifier.explainer(layer, "gradcam")
    module = classifier.model.get_submodule(explainer.layer)
    channels = len(table.units)
    tally = {r: {"n": 0, "first": 0, "both": 0, "named": [], "random": []} for r in RANKINGS}
    roles = {key: [] for key in ("own color", "other color", "own shape", "other shape")}
    for scene in make_scenes(scenes, seed=70_000):
        inputs = classifier.preprocess([Image.fromarray(scene.image)])
        present = sorted({obj.class_index for obj in scene.objects})
        explanation = explainer(inputs, [present])
        kept = [k for k, s in enumerate(explanation.scores[0].tolist()) if s > 0]
        if not kept:
            continue
        classes = [present[k] for k in kept]
        logits, activation = _logits_and_output(classifier.model, module, inputs)
        clean, zeroed = explainer.zeroed_scores(inputs, [classes], [[u] for u in range(channels)])
        for j, (k, c) in enumerate(zip(kept, classes)):
            (gradient,) = torch.autograd.grad(logits[0, c], activation, retain_graph=True)
            layout = as_layout("auto", activation, tuple(inputs.shape[-2:]), explainer.layer)
            grid_a, grid_g = (layout.to_grid(t) for t in (activation.detach(), gradient))
            drop = clean[0, j] - zeroed[0, :, j]
            ranked = {
                "gradcam": explanation.contributions[0, k],
                "grad-x-activation": (grid_g * grid_a).flatten(2).mean(-1)[0],
                "zero-drop": drop,
            }
            color, shape = classifier.class_names[c].split()
            for unit in table.units:
                atom = unit.atom
                if atom in COLORS:
                    roles["own color" if atom == color else "other color"].append(float(drop[unit.unit]))
                if atom in SHAPES:
                    roles["own shape" if atom == shape else "other shape"].append(float(drop[unit.unit]))
            for ranking, contributions in ranked.items():
                described = describe(classifier.class_names[c], contributions, table)
                asserted = [positive_atoms(e.concept) for e in described.supporting]
                counts = tally[ranking]
                counts["n"] += 1
                counts["first"] += bool(asserted) and bool({color, shape} & asserted[0])
                counts["both"] += any(color in a for a in asserted) and any(shape in a for a in asserted)
                ablation = sentence_drops(explainer, inputs, [[c]], contributions[None], table)[0]
                if not math.isnan(ablation["named"]):
                    counts["named"].append(ablation["named"]), counts["random"].append(ablation["random"])
    mean = lambda values: sum(values) / max(len(values), 1)
    result = {"model": name, "layer": explainer.layer, "units": channels}
    for ranking, counts in tally.items():
        n = max(counts["n"], 1)
        result[ranking] = {
            "sentences": counts["n"],
            "first": round(counts["first"] / n, 3),
            "both": round(counts["both"] / n, 3),
            "named_over_random": round(mean(counts["named"]) / mean(counts["random"]), 1),
        }
    result["roles"] = {key: {"mean_drop": round(mean(v), 4), "units": len(v)} for key, v in roles.items()}
    return result


def carry(name: str, layer: str) -> dict:
    """Per concept: the best single channel's patch-level AUC and a linear probe's."""
    classifier = load_classifier(MODELS[name][0])

    def patches(seed: int, count: int):
        features, labels = [], []
        scenes = make_scenes(count, seed=seed)
        for start in range(0, count, 16):
            chunk = scenes[start : start + 16]
            images = classifier.preprocess([Image.fromarray(scene.image) for scene in chunk])
            grid = layer_activations(classifier.model, layer, images)  # (B, C, h, w)
            masks = torch.from_numpy(np.stack([concept_masks(s, list(CONCEPTS)) for s in chunk])).float()
            present = F.adaptive_avg_pool2d(masks, grid.shape[-2:]) > 0.3  # a patch a third covered or more
            features.append(grid.permute(0, 2, 3, 1).flatten(0, 2))
            labels.append(present.permute(0, 2, 3, 1).flatten(0, 2))
        return torch.cat(features).double(), torch.cat(labels)

    def auc(score, truth):
        ranks = score.argsort().argsort().double() + 1
        positives = truth.sum().double()
        return float(
            (ranks[truth].sum() - positives * (positives + 1) / 2) / (positives * (len(truth) - positives))
        )

    train, train_labels = patches(60_000, 200)
    test, test_labels = patches(70_000, 100)
    mean, std = train.mean(0), train.std(0) + 1e-6
    design = lambda x: torch.cat([(x - mean) / std, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    weights = torch.linalg.lstsq(design(train), train_labels.double() * 2 - 1).solution
    result = {}
    for k, concept in enumerate(CONCEPTS):
        truth = test_labels[:, k]
        singles = [auc(test[:, c], truth) for c in range(test.shape[1])]
        result[concept] = {
            "best_unit": round(max(max(singles), 1 - min(singles)), 3),
            "linear_probe": round(auc(design(test) @ weights[:, k], truth), 3),
        }
    return {"model": name, "layer": layer, "carry": result}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="vit", choices=sorted(MODELS))
    parser.add_argument("--layers", default="vit.layers.2")
    parser.add_argument("--scenes", type=int, default=40)
    parser.add_argument("--carry", action="store_true", help="measure what single channels carry instead")
    arguments = parser.parse_args()
    for layer in arguments.layers.split(","):
        measured = carry if arguments.carry else rankings_and_roles
        args = (arguments.model, layer) if arguments.carry else (arguments.model, layer, arguments.scenes)
        print(json.dumps(measured(*args)), flush=True)


if __name__ == "__main__":
    main()
