"""Textual explanations: the units that drove a decision, named by the concepts they detect.

The importance of unit c for target k is the method's channel weight (Grad-CAM's alpha_kc). The top
supporting units are the named ones with the largest positive weights, the opposing ones those with
the most negative: "it is X because of units detecting A, B and C; evidence against: D".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import Tensor

from mmcam.concepts.dissect import ConceptTable


@dataclass(frozen=True)
class UnitEvidence:
    unit: int
    weight: float
    concept: str
    score: float


@dataclass
class TextualExplanation:
    label: str
    supporting: list[UnitEvidence]
    opposing: list[UnitEvidence]
    text: str

    def as_json(self) -> dict:
        return {
            "supporting": [asdict(e) for e in self.supporting],
            "opposing": [asdict(e) for e in self.opposing],
            "text": self.text,
        }


def named_units(
    weights: Tensor, table: ConceptTable, top: int = 5
) -> tuple[list[UnitEvidence], list[UnitEvidence]]:
    """The ``top`` named units with the largest positive and the most negative weights (C,)."""
    evidence = [
        UnitEvidence(unit.unit, float(weights[unit.unit]), unit.concept, unit.score)
        for unit in table.units
        if unit.concept is not None
    ]
    ranked = sorted(evidence, key=lambda e: -e.weight)
    return [e for e in ranked if e.weight > 0][:top], [e for e in reversed(ranked) if e.weight < 0][:top]


def _listing(evidence: list[UnitEvidence], source: str) -> str:
    measure = "IoU" if source == "masks" else "AUC"
    parts = [f"{e.concept} (unit {e.unit}, {measure} {e.score:.2f})" for e in evidence]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def describe(
    label: str, weights: Tensor, table: ConceptTable, top: int = 5, verb: str = "predicted"
) -> TextualExplanation:
    """ "The model predicted 'red circle' because of units detecting red (unit 12, IoU 0.41) and ...;
    evidence against: blue (unit 3, IoU 0.22)." built from the structured evidence."""
    supporting, opposing = named_units(weights, table, top)
    source = table.units[0].source if table.units else "masks"
    text = f"The model {verb} '{label}'"
    text += (
        f" because of units detecting {_listing(supporting, source)}"
        if supporting
        else " (no named unit supports it)"
    )
    if opposing:
        text += f"; evidence against: {_listing(opposing, source)}"
    return TextualExplanation(label, supporting, opposing, text + ".")
