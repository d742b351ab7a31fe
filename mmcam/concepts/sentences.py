"""Textual explanations: the concepts whose units drove a decision, strongest first.

The evidence of unit c for target k is its contribution x_kc (``Explanation.contributions``): with Grad-CAM its
first-order part in the score, sum_ij G_kcij A_cij (exactly what zeroing it removes where the score reads the
layer linearly), with another method its channel weight times its mean activation, w_kc mean_ij A_cij. Units
are grouped by their concept label l: the concept's net evidence is X_kl = sum_{c in l}
x_kc. A concept stands on the side of its net sign (for the target where X_kl > 0, against it where
X_kl < 0) and only there; the units of that concept pulling the other way are counted in the sentence as
outweighed ("blue (4 units, IoU 0.17; 1 against, outweighed)"). Concepts are ranked by |X_kl|.

The verb follows what the model did with the target: the task's verb where its output took it ("predicted",
"answered", "wrote", "chose"), "rejected" where its score says no (a negative multi-label logit, a class
below the top), "scored" where the score decides nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from torch import Tensor

from mmcam.concepts.dissect import ConceptTable

TOP_CONCEPTS = 4  # concepts named on each side of a sentence


@dataclass(frozen=True)
class ConceptEvidence:
    """One concept's units on one side: ``weight`` their net contribution X_kl (signed), ``units`` the
    units on its side, ``score`` their mean IoU (AUC), ``outweighed`` how many of its units pull the other way."""

    concept: str
    weight: float
    units: list[int]
    score: float
    outweighed: int


@dataclass
class TextualExplanation:
    label: str
    verb: str
    supporting: list[ConceptEvidence]
    opposing: list[ConceptEvidence]
    text: str
    ablation: dict = field(
        default_factory=dict
    )  # score drops when the sentence's units are zeroed, if measured

    def as_json(self) -> dict:
        record = {
            "verb": self.verb,
            "supporting": [asdict(e) for e in self.supporting],
            "opposing": [asdict(e) for e in self.opposing],
            "text": self.text,
        }
        return {**record, "ablation": self.ablation} if self.ablation else record


def concept_evidence(
    contributions: Tensor, table: ConceptTable
) -> tuple[list[ConceptEvidence], list[ConceptEvidence]]:
    """Per concept of the table, its net evidence from the units' contributions (C,): the supporting
    concepts (X > 0) by decreasing X, the opposing ones (X < 0) by increasing X."""
    groups: dict[str, list[tuple[int, float, float]]] = {}
    for unit in table.units:
        if unit.concept is not None:
            groups.setdefault(unit.concept, []).append(
                (unit.unit, float(contributions[unit.unit]), unit.score)
            )
    evidence = []
    for concept, members in groups.items():
        net = sum(x for _, x, _ in members)
        if net == 0:
            continue
        side = [(u, s) for u, x, s in members if (x > 0) == (net > 0) and x != 0]
        outweighed = sum(1 for _, x, _ in members if x != 0 and (x > 0) != (net > 0))
        score = sum(s for _, s in side) / len(side)
        evidence.append(ConceptEvidence(concept, net, [u for u, _ in side], score, outweighed))
    evidence.sort(key=lambda e: -abs(e.weight))
    return [e for e in evidence if e.weight > 0], [e for e in evidence if e.weight < 0]


def ablation_text(ablation: dict, score_kind: str = "score", inputs: str = "inputs") -> str:
    """What zeroing the sentence's units did (``ablation.sentence_drops``): "Zeroing its 13 units lowers the
    logit by 13.70 (as many random units: 0.96; as many units of the next concepts: 4.80)."; empty where it
    names no unit, and without the next concepts' where there are none. Over several inputs (``mean_drops``) the drops are means, and the text says over how many
    ``inputs`` ("steps" for an RL action)."""
    if not ablation.get("units"):
        return ""
    units = f"{ablation['units']} unit{'s' if ablation['units'] > 1 else ''}"
    named = ablation["named"]
    change = f"{'lowers' if named >= 0 else 'raises'} the {score_kind} by {abs(named):.2f}"
    count = ablation.get("inputs")
    over = f" on average over {count} {inputs.removesuffix('s') if count == 1 else inputs}" if count else ""
    following = (
        f"; as many units of the next concepts: {ablation['next']:.2f}" if ablation.get("next_units") else ""
    )
    return f"Zeroing its {units} {change}{over} (as many random units: {ablation['random']:.2f}{following})."


def verb_of(action: str, decided: bool | None) -> str:
    """``action`` where the model's output took the target, "rejected" where its score says it did not,
    "scored" where nothing is decided (``decided`` None)."""
    return "scored" if decided is None else action if decided else "rejected"


def _listing(evidence: list[ConceptEvidence], source: str) -> str:
    measure = "IoU" if source == "masks" else "AUC"
    parts = []
    for e in evidence:
        units = f"{len(e.units)} unit{'s' if len(e.units) > 1 else ''}"
        against = f"; {e.outweighed} against, outweighed" if e.outweighed else ""
        parts.append(f"{e.concept} ({units}, {measure} {e.score:.2f}{against})")
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def describe(
    label: str,
    contributions: Tensor,
    table: ConceptTable,
    verb: str = "predicted",
    top: int = TOP_CONCEPTS,
    score: str = "",
) -> TextualExplanation:
    """The sentence of one target from its units' contributions (C,): "The model predicted 'red circle'
    (logit 4.1) because of units detecting red AND circle (3 units, IoU 0.41) and ...; against it: blue
    (2 units, IoU 0.22)." A rejected target leads with what speaks against it; ``score`` ("logit 4.1") is
    quoted where given."""
    supporting, opposing = concept_evidence(contributions, table)
    supporting, opposing = supporting[:top], opposing[:top]
    source = table.units[0].source if table.units else "masks"
    quoted = f" ({score})" if score else ""
    lead, rest, rest_name = (
        (opposing, supporting, "for it") if verb == "rejected" else (supporting, opposing, "against it")
    )
    if verb == "scored":
        text = f"The model scored '{label}'{quoted}: "
        text += (
            f"units detecting {_listing(supporting, source)} raise it"
            if supporting
            else "no named unit raises it"
        )
        text += f"; {_listing(opposing, source)} lower it" if opposing else ""
    else:
        text = f"The model {verb} '{label}'{quoted}"
        text += (
            f" because of units detecting {_listing(lead, source)}"
            if lead
            else " (no named unit explains it)"
        )
        text += f"; {rest_name}: {_listing(rest, source)}" if rest else ""
    return TextualExplanation(label, verb, supporting, opposing, text + ".")
