"""Are the sentences faithful? A sentence says the model decided "because of units detecting red": zero those
units at the layer and the target's score must fall, more than when as many random units are zeroed, and more
than when as many units of the next concepts (those ranked after the sentence's) are.

For target k with clean score s_k, the drop of a set U of units is d_k(U) = s_k - s_k(A_U = 0). The sets:
``named``, the units of the sentence's supporting concepts; ``random``, as many units drawn at random (seeded);
``next``, as many units of the supporting concepts ranked after them, strongest first (fewer if they have
fewer). The deletion curve zeroes the units of the top 1, 2, ..., n supporting concepts in turn.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mmcam.concepts.dissect import ConceptTable
from mmcam.concepts.sentences import TOP_CONCEPTS, concept_evidence
from mmcam.engine import Explainer

CURVE_CONCEPTS = 5  # concepts zeroed, one more per step, on the concept-deletion curve


def ablation_sets(
    contributions: Tensor, table: ConceptTable, top: int = TOP_CONCEPTS, seed: int = 0
) -> dict[str, list[int]]:
    """The ``named``, ``random`` and ``next`` unit sets of one target from its units' contributions (C,)."""
    supporting, _ = concept_evidence(contributions, table)
    named = [u for e in supporting[:top] for u in e.units]
    following = [u for e in supporting[top:] for u in sorted(e.units, key=lambda u: -float(contributions[u]))]
    generator = torch.Generator().manual_seed(seed)
    drawn = torch.randperm(contributions.shape[-1], generator=generator)[: len(named)].tolist()
    return {"named": named, "random": drawn, "next": following[: len(named)]}


def curve_sets(contributions: Tensor, table: ConceptTable, steps: int = CURVE_CONCEPTS) -> list[list[int]]:
    """The units of the top 1, 2, ..., ``steps`` supporting concepts (fewer steps where fewer concepts)."""
    supporting, _ = concept_evidence(contributions, table)
    return [[u for e in supporting[: i + 1] for u in e.units] for i in range(min(steps, len(supporting)))]


def zeroed_drops(
    explainer: Explainer, inputs, targets: list, sets: list[list[list[int]]]
) -> list[list[float]]:
    """For one input (B = 1) and its K targets, ``sets[k]`` unit sets each: the drop s_k - s_k(A_U = 0) of
    each set, in one batched call (an empty set drops nothing)."""
    flat = [units for per_target in sets for units in per_target]
    owner = [k for k, per_target in enumerate(sets) for _ in per_target]
    if not flat:
        return [[] for _ in sets]
    clean, zeroed = explainer.zeroed_scores(inputs, targets, flat)
    drops = (clean[0][owner] - zeroed[0, torch.arange(len(flat)), owner]).tolist()
    result, start = [], 0
    for per_target in sets:
        result.append(
            [0.0 if not units else d for units, d in zip(per_target, drops[start : start + len(per_target)])]
        )
        start += len(per_target)
    return result


def sentence_drops(
    explainer: Explainer, inputs, targets: list, contributions: Tensor, table: ConceptTable, seed: int = 0
) -> list[dict]:
    """Per target of one input (contributions (K, C)): the drops of its ``named``, ``random`` and ``next``
    sets, how many units ``named`` holds (``units``) and ``next`` holds (``next_units``: fewer, or none, where
    the table has few concepts), NaN drops where the sentence names no supporting unit."""
    chosen = [ablation_sets(row, table, seed=seed + k) for k, row in enumerate(contributions)]
    drops = zeroed_drops(explainer, inputs, targets, [list(sets.values()) for sets in chosen])
    return [
        {"units": len(sets["named"]), "next_units": len(sets["next"])}
        | {name: round(d, 6) if sets["named"] else float("nan") for name, d in zip(sets, per_target)}
        for sets, per_target in zip(chosen, drops)
    ]


def mean_drops(
    explainer: Explainer, replays: list[tuple], contributions: Tensor, table: ConceptTable, seed: int = 0
) -> dict:
    """One sentence over many inputs (an RL action over the steps it was chosen at, from their mean
    contributions (C,)): its ``named``, ``random`` and ``next`` sets, and each set's drop of the first target
    averaged over ``replays``, (inputs, targets) of one input each: mean_n d_n(U)."""
    sets = ablation_sets(contributions, table, seed=seed)
    if not sets["named"]:
        return {"units": 0} | {name: float("nan") for name in sets}
    per_input = [
        zeroed_drops(explainer, inputs, targets[:1], [list(sets.values())])[0] for inputs, targets in replays
    ]
    means = [sum(column) / len(per_input) for column in zip(*per_input)]
    counts = {"units": len(sets["named"]), "next_units": len(sets["next"]), "inputs": len(replays)}
    return counts | {name: round(d, 6) for name, d in zip(sets, means)}


def deletion_curves(
    explainer: Explainer, inputs, targets: list, contributions: Tensor, table: ConceptTable
) -> list[list[float]]:
    """Per target of one input: the score drop with the units of the top 1, 2, ... supporting concepts zeroed."""
    return zeroed_drops(explainer, inputs, targets, [curve_sets(row, table) for row in contributions])
