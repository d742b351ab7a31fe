"""Reliance agreement: does the map point at the object the model relies on? The shapes world re-renders a
scene without any one of its O objects (``Truth.removed``); the object whose removal lowers a target's
score most is the one the model relies on for it. This separates the explainer's error from the model's
use of context (a word read off a neighbour is a faithful map's right answer, and a pointing miss).

The O re-rendered scenes go through the model in one forward per input, every target read from it, once
for every method (``Case.once_per_input``). A scene with fewer than two objects gives NaN: there is no
choice of object to agree on.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mmcam.metrics.contract import Case, Metric
from mmcam.metrics.pointing import peak_hit_shares, tolerance_px, within_distance
from mmcam.metrics.ranks import spearman


def removal_effects(case: Case) -> Tensor | None:
    """(O, K) the drop of each target's score when each object is removed, s_k(x) - s_k(x without o),
    from one forward of the O re-rendered scenes (and one of the input); None where the scene cannot be
    re-rendered or has fewer than two objects."""
    truth = case.truth
    if truth.removed is None or len(truth.objects) < 2:
        return None

    def run() -> Tensor:
        clean = case.score(case.image[None]).float()
        return clean - case.score(truth.removed()).float()

    return case.once_per_input("removal effects", run)


def object_mass(maps: Tensor, objects: Tensor) -> Tensor:
    """(K, H, W) maps and (O, H, W) object masks -> (O, K) the map mass on each object, sum_x L_k(x) M_o(x)."""
    return torch.einsum("khw,ohw->ok", maps.float(), objects.to(maps.device).float())


class ReliancePeak(Metric):
    """1 where the map's peak lies on the relied-on object, r_k = argmax_o effect(o, k), within the
    tolerant pointing game's radius (``tolerance_px``; ties at the peak share the hit), else 0."""

    name, label, better = "reliance-peak", "peak on the object the model relies on", "higher"
    needs = frozenset({"truth", "score", "shared"})

    def __call__(self, case: Case) -> Tensor:
        effects = removal_effects(case)
        if effects is None:
            return case.nothing()
        relied = case.truth.objects.to(case.maps.device)[effects.argmax(dim=0).to(case.maps.device)]
        return peak_hit_shares(case.maps, within_distance(relied, tolerance_px(case.maps.shape[-2:])))


class RelianceMass(Metric):
    """1 where the object with the most map mass (``object_mass``) is the relied-on object, else 0."""

    name, label, better = "reliance-mass", "most mass on the object the model relies on", "higher"
    needs = frozenset({"truth", "score", "shared"})

    def __call__(self, case: Case) -> Tensor:
        effects = removal_effects(case)
        if effects is None:
            return case.nothing()
        mass = object_mass(case.maps, case.truth.objects)
        return (mass.argmax(dim=0) == effects.argmax(dim=0).to(mass.device)).float()


class RelianceRank(Metric):
    """Spearman's rank correlation, over the scene's objects, between each object's map mass and the
    score drop of removing it (``ranks.spearman``; 0 where either is constant)."""

    name, label, better = "reliance-rank", "rank corr. of object mass and removal effect", "higher"
    needs = frozenset({"truth", "score", "shared"})

    def __call__(self, case: Case) -> Tensor:
        effects = removal_effects(case)
        if effects is None:
            return case.nothing()
        mass = object_mass(case.maps, case.truth.objects)
        return spearman(mass.T, effects.T.to(mass.device))
