"""Are the textual explanations faithful? A sentence says the model decided "because of units detecting
red": zero those units at the layer and the target's score should fall, more than when as many random
units of the same layer are zeroed. Both drops are reported (``mmcam eval --metric cited-units,random-units``)."""

from __future__ import annotations

import torch
from torch import Tensor

from mmcam.concepts.dissect import ConceptTable
from mmcam.concepts.sentences import named_units
from mmcam.engine import Explainer
from mmcam.metrics.contract import Case, Metric

CITED_UNITS = 5  # a sentence cites at most this many supporting units (``concepts.sentences.describe``)


def cited_units(weights: Tensor, table: ConceptTable, top: int = CITED_UNITS) -> list[list[int]]:
    """Per target, the units its sentence cites as supporting it: (K, C) channel weights -> K lists."""
    return [[evidence.unit for evidence in named_units(row, table, top)[0]] for row in weights]


def unit_ablation_drops(
    explainer: Explainer,
    inputs: dict[str, Tensor],
    targets: list,
    weights: Tensor,
    table: ConceptTable,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """For one input (B = 1) and its K targets with channel weights (K, C): the drop of each target's score
    when the units its sentence cites are zeroed, and when as many units drawn at random (seeded) are;
    NaN for a target whose sentence cites none. Drop = s - s_zeroed, in the score's units."""
    cited = cited_units(weights, table)
    generator = torch.Generator().manual_seed(seed)
    drawn = [torch.randperm(weights.shape[-1], generator=generator)[: len(units)].tolist() for units in cited]
    clean, zeroed = explainer.zeroed_scores(inputs, targets, cited + drawn)
    count = len(cited)
    k = torch.arange(count)
    cites_none = torch.tensor([not units for units in cited], device=clean.device)
    cited_drop = torch.where(cites_none, torch.nan, clean[0] - zeroed[0, k, k])
    random_drop = torch.where(cites_none, torch.nan, clean[0] - zeroed[0, count + k, k])
    return cited_drop, random_drop


def case_unit_drops(case: Case) -> tuple[Tensor, Tensor]:
    """``unit_ablation_drops`` of the case (cited by its explanation's channel weights), once per case;
    NaN for a baseline, a method without channel weights or a model without named units."""

    def run() -> tuple[Tensor, Tensor]:
        explanation = case.explanation
        if explanation is None or explanation.weights is None:
            return case.nothing(), case.nothing()
        table = case.concept_table(explanation.layer)
        if table is None:
            return case.nothing(), case.nothing()
        return unit_ablation_drops(
            case.explainer(None), case.inputs, case.targets, explanation.weights[0], table, case.settings.seed
        )

    return case.once("unit drops", run)


class CitedUnits(Metric):
    """The score drop when the units a target's sentence cites are zeroed (``case_unit_drops``)."""

    name, label, better = "cited-units", "score drop, cited units zeroed", "higher"
    needs = frozenset({"explanation", "concept_table", "explainer", "inputs", "targets", "settings"})

    def __call__(self, case: Case) -> Tensor:
        return case_unit_drops(case)[0]


class RandomUnits(Metric):
    """The score drop when as many random units are zeroed (``case_unit_drops``)."""

    name, label, better = "random-units", "score drop, as many random units zeroed", "lower"
    needs = CitedUnits.needs

    def __call__(self, case: Case) -> Tensor:
        return case_unit_drops(case)[1]
