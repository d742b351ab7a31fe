"""Are the textual explanations faithful? A sentence says the model decided "because of units detecting
red": zero those units at the layer and the target's score should fall, more than when as many random units
of the same layer are zeroed, and more than when as many units of the next concepts are
(``mmcam eval --metric cited-units,random-units,next-units``); ``concept-deletion`` zeroes the units of the
top 1, 2, ..., 5 concepts in turn and records the curve. The sets and drops are ``concepts.ablation``'s."""

from __future__ import annotations

import torch
from torch import Tensor

from mmcam.concepts.ablation import deletion_curves, sentence_drops
from mmcam.metrics.contract import Case, Metric

NEEDS = frozenset({"explanation", "concept_table", "explainer", "inputs", "targets", "settings"})


def _table_and_contributions(case: Case):
    """The case's concept table and unit contributions (K, C), or None for a baseline, a method without
    channel weights or a model without named units."""
    explanation = case.explanation
    if explanation is None or explanation.contributions is None:
        return None
    table = case.concept_table(explanation.layer)
    return None if table is None else (table, explanation.contributions[0])


def case_unit_drops(case: Case) -> dict[str, Tensor]:
    """Per set (``named``, ``random``, ``next``), the (K,) score drops of zeroing it, once per case; NaN
    where the metric does not apply."""

    def run() -> dict[str, Tensor]:
        found = _table_and_contributions(case)
        if found is None:
            return {key: case.nothing() for key in ("named", "random", "next")}
        table, contributions = found
        drops = sentence_drops(
            case.explainer(None), case.inputs, case.targets, contributions, table, case.settings.seed
        )
        return {key: torch.tensor([d[key] for d in drops]) for key in ("named", "random", "next")}

    return case.once("unit drops", run)


def case_deletion_curves(case: Case) -> list[list[float]]:
    """Per target, the score drop with the units of its top 1, 2, ... concepts zeroed, once per case."""

    def run() -> list[list[float]]:
        found = _table_and_contributions(case)
        if found is None:
            return []
        table, contributions = found
        return deletion_curves(case.explainer(None), case.inputs, case.targets, contributions, table)

    return case.once("concept deletion", run)


class CitedUnits(Metric):
    """The score drop when the units of a target's sentence's concepts are zeroed."""

    name, label, better = "cited-units", "score drop, the sentence's units zeroed", "higher"
    needs = NEEDS

    def __call__(self, case: Case) -> Tensor:
        return case_unit_drops(case)["named"]


class RandomUnits(Metric):
    """The score drop when as many random units are zeroed."""

    name, label, better = "random-units", "score drop, as many random units zeroed", "lower"
    needs = NEEDS

    def __call__(self, case: Case) -> Tensor:
        return case_unit_drops(case)["random"]


class NextUnits(Metric):
    """The score drop when as many units of the concepts ranked after the sentence's are zeroed."""

    name, label, better = "next-units", "score drop, as many units of the next concepts zeroed", "lower"
    needs = NEEDS

    def __call__(self, case: Case) -> Tensor:
        return case_unit_drops(case)["next"]


class ConceptDeletion(Metric):
    """The mean score drop over the concept-deletion curve, d_k = (1/n) sum_i (s_k - s_k(units of the top i
    concepts zeroed)), i = 1..n (n <= 5); ``details`` records each curve."""

    name, label, better = "concept-deletion", "mean score drop, top 1..5 concepts' units zeroed", "higher"
    needs = NEEDS

    def __call__(self, case: Case) -> Tensor:
        curves = case_deletion_curves(case)
        if not curves:
            return case.nothing()
        return torch.tensor([sum(c) / len(c) if c else float("nan") for c in curves])

    def details(self, case: Case) -> dict:
        return {"concept_deletion_steps": case_deletion_curves(case)}
