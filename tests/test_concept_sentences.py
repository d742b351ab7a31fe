"""Sentences by concept, compositional labels, and the ablation that shows a sentence's units carry its score."""

import math

import numpy as np
import pytest
import torch

from mmcam.concepts.ablation import ablation_sets, curve_sets, deletion_curves, sentence_drops
from mmcam.concepts.compose import SignatureCounter, positive_atoms, search
from mmcam.concepts.dissect import ConceptTable, UnitName
from mmcam.concepts.probes import name_units, shapes_probe
from mmcam.concepts.sentences import ablation_text, concept_evidence, describe, verb_of
from mmcam.loading import load_classifier
from mmcam.zoo import make_scenes
from mmcam.zoo.concepts import ATOMS, concept_masks


def _atoms(*names):
    return [ATOMS.index(name) for name in names]


@pytest.fixture(scope="module")
def scene_masks():
    """(N, K, P) bool atom masks of 60 shapes scenes."""
    scenes = make_scenes(60, seed=60_000)
    return torch.from_numpy(np.stack([concept_masks(scene, ATOMS) for scene in scenes])).flatten(2)


def test_planted_units_get_the_formula_they_fire_on(scene_masks):
    """Units that fire exactly on red AND circle, on red, on green OR blue, and on circle AND NOT small get
    those formulas with IoU 1 (or one true on the same pixels); red alone stays red: a longer form that adds
    nothing is not kept."""
    m = {name: scene_masks[:, ATOMS.index(name)] for name in ATOMS}
    planted = [
        m["red"] & m["circle"],
        m["red"],
        m["blue"] | m["green"],
        m["circle"] & ~m["small"],
    ]
    counter = SignatureCounter(len(planted), len(ATOMS))
    counter.add(torch.stack(planted, 1), scene_masks)
    formulas, scores, atoms, atom_scores = search(counter.active, counter.pixels, counter.truth())
    texts = [f.text(ATOMS) for f in formulas]
    assert texts[0] == "red AND circle" and float(scores[0]) == pytest.approx(1.0)
    assert texts[1] == "red" and float(scores[1]) == pytest.approx(1.0)
    assert texts[2] == "green OR blue" and float(scores[2]) == pytest.approx(1.0)
    assert "circle" in positive_atoms(texts[3]) and float(scores[3]) == pytest.approx(1.0)
    assert float(atom_scores[0]) < 0.5 and ATOMS[int(atoms[0])] in ("red", "circle")


def test_formula_iou_from_signatures_equals_iou_on_pixels(scene_masks):
    """The histogram IoU of a unit's formula equals the IoU counted pixel by pixel."""
    generator = torch.Generator().manual_seed(0)
    active = torch.rand(scene_masks.shape[0], 3, scene_masks.shape[2], generator=generator) > 0.97
    active[:, 0] |= scene_masks[:, ATOMS.index("yellow")]
    counter = SignatureCounter(3, len(ATOMS))
    counter.add(active, scene_masks)
    formulas, scores, _, _ = search(counter.active, counter.pixels, counter.truth())
    for c, formula in enumerate(formulas):
        truth = scene_masks[:, formula.atoms[0]]
        for op, atom in zip(formula.ops, formula.atoms[1:]):
            other = scene_masks[:, atom]
            truth = truth & other if op == "AND" else truth | other if op == "OR" else truth & ~other
        iou = (active[:, c] & truth).sum() / (active[:, c] | truth).sum()
        assert float(scores[c]) == pytest.approx(float(iou), abs=1e-6)


def _table(labels):
    units = [UnitName(i, label, 0.2 + 0.02 * i, "masks") for i, label in enumerate(labels)]
    return ConceptTable("planted", "layer", ["red", "circle", "blue"], units)


def test_sentences_aggregate_units_by_concept_and_never_list_one_on_both_sides():
    table = _table(["red", "red", "red", "circle", "circle", "blue", "blue AND circle", None])
    contributions = torch.tensor([2.0, 1.0, -0.5, 1.0, 0.5, -3.0, -0.2, 10.0])
    supporting, opposing = concept_evidence(contributions, table)
    assert [(e.concept, e.weight, e.units, e.outweighed) for e in supporting] == [
        ("red", 2.5, [0, 1], 1),
        ("circle", 1.5, [3, 4], 0),
    ]
    assert [e.concept for e in opposing] == ["blue", "blue AND circle"]
    text = describe("red circle", contributions, table, score="logit 3.00").text
    assert text == (
        "The model predicted 'red circle' (logit 3.00) because of units detecting red (2 units, IoU 0.21; 1 "
        "against, outweighed) and circle (2 units, IoU 0.27); against it: blue (1 unit, IoU 0.30) and blue AND "
        "circle (1 unit, IoU 0.32)."
    )


def test_the_verb_follows_the_score():
    table = _table(["red", "blue"])
    contributions = torch.tensor([1.0, -2.0])
    assert [verb_of("answered", d) for d in (True, False, None)] == ["answered", "rejected", "scored"]
    rejected = describe("red", contributions, table, verb="rejected", score="logit -2.10").text
    assert rejected == (
        "The model rejected 'red' (logit -2.10) because of units detecting blue (1 unit, IoU 0.22); for it: red "
        "(1 unit, IoU 0.20)."
    )
    scored = describe("red", contributions, table, verb="scored").text
    assert (
        scored
        == "The model scored 'red': units detecting red (1 unit, IoU 0.20) raise it; blue (1 unit, IoU 0.22) lower it."
    )


def test_ablation_sets_take_the_named_concepts_then_the_next_ones():
    table = _table(["red", "red", "circle", "blue", "blue", "green", None])
    contributions = torch.tensor([3.0, 2.0, 4.0, 0.5, 0.4, 0.3, 9.0])
    sets = ablation_sets(contributions, table, top=2)
    assert sets["named"] == [0, 1, 2] and sets["next"] == [3, 4, 5] and len(sets["random"]) == 3
    assert curve_sets(contributions, table) == [[0, 1], [0, 1, 2], [0, 1, 2, 3, 4], [0, 1, 2, 3, 4, 5]]


def test_the_ablation_is_said_in_the_scores_units_and_direction():
    drops = {"units": 3, "next_units": 3, "named": 1.234, "random": 0.1, "next": -0.05}
    assert ablation_text(drops, "logit") == (
        "Zeroing its 3 units lowers the logit by 1.23 (as many random units: 0.10; "
        "as many units of the next concepts: -0.05)."
    )
    raised = {**drops, "units": 1, "named": -0.5, "inputs": 7, "next_units": 0}  # no next concepts: unsaid
    assert ablation_text(raised, "log-probability", "steps") == (
        "Zeroing its 1 unit raises the log-probability by 0.50 on average over 7 steps "
        "(as many random units: 0.10)."
    )
    assert " on average over 1 step (" in ablation_text({**raised, "inputs": 1}, "logit", "steps")
    assert ablation_text({"units": 0, "named": math.nan, "random": math.nan, "next": math.nan}) == ""


@pytest.mark.parametrize("head", ["pooled", "flattened"])
def test_a_units_contribution_is_what_zeroing_it_removes_from_a_linear_read_of_the_layer(head):
    """Grad-CAM's unit contributions sum_ij G_kcij A_cij: for a head that reads the layer linearly, pooled (a
    classifier) or cell by cell (a policy's flatten-and-linear head), exactly the score lost when the unit alone
    is zeroed; the channel weight times the mean activation is that only for the pooled head."""
    from torch import nn

    from mmcam.engine import Explainer

    torch.manual_seed(0)
    pooled = head == "pooled"
    read = (
        nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
        if pooled
        else nn.Sequential(nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    )
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), *read).eval()
    explainer = Explainer(model, layer="1", method="gradcam")
    image = torch.randn(1, 3, 8, 8)
    explanation = explainer(image, [[0, 1, 2]])
    clean, zeroed = explainer.zeroed_scores(image, [[0, 1, 2]], [[c] for c in range(4)])
    drops = (clean[:, None] - zeroed)[0].T  # (K, C)
    assert torch.allclose(explanation.contributions[0], drops, atol=1e-5)
    weighted = explanation.weights[0] * _summed_activations(model, image)  # alpha_kc * mean_ij A_cij * hw
    assert torch.allclose(weighted, drops, atol=1e-5) == pooled


def _summed_activations(model, image):
    """(C,) hw * mean_ij A_cij at the model's ReLU."""
    with torch.no_grad():
        return model[1](model[0](image))[0].flatten(1).sum(-1)


@pytest.fixture(scope="module")
def classifier():
    return load_classifier("shapes")


@pytest.fixture(scope="module")
def table(classifier):
    return name_units(classifier.subject(), shapes_probe(100, seed=60_000), progress=False)


def test_zeroing_a_sentences_units_lowers_the_score_more_than_random_or_next_units(classifier, table):
    """The bundled classifier on 8 held-out scenes, each present class: zeroing the units of its sentence's
    concepts drops the class logit more than as many random units and more than as many units of the next
    concepts, in the mean (3x for random) and for most classes; the deletion curve falls as concepts go."""
    explainer = classifier.explainer(classifier.layer, "gradcam")
    named, drawn, following, curves = [], [], [], []
    for scene in make_scenes(8, seed=70_000):
        inputs = classifier.preprocess([scene.image])
        present = sorted({obj.class_index for obj in scene.objects})
        contributions = explainer(inputs, [present]).contributions[0]
        for drops in sentence_drops(explainer, inputs, [present], contributions, table):
            named.append(drops["named"]), drawn.append(drops["random"]), following.append(drops["next"])
        curves += deletion_curves(explainer, inputs, [present], contributions, table)
    assert not any(math.isnan(d) for d in named)
    mean = lambda values: sum(values) / len(values)
    assert mean(named) > 3 * mean(drawn) and mean(named) > mean(following), (named, drawn, following)
    assert sum(n > r for n, r in zip(named, drawn)) >= 0.8 * len(named)
    assert sum(n > f for n, f in zip(named, following)) >= 0.6 * len(named)
    assert mean([c[-1] for c in curves]) > mean([c[0] for c in curves]) > 0
