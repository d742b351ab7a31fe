"""``--concepts``: the layer's concept table, and the named units and sentence added to each target of a
record."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmcam.cli.options import ConceptOptions

if TYPE_CHECKING:
    from torch import Tensor


def concept_table_of(options: ConceptOptions, method: str, subject, probe=None):
    """The concept table for ``--concepts`` (None without it), named on ``probe``, on ``--probe-dataset``
    or on the shapes world; one clear error for a layer or ``method`` that has no named channels."""
    if not options.concepts:
        return None
    from mmcam.concepts.tables import concept_table
    from mmcam.engine.methods import capable, get_method

    if subject.layer == "auto" or not get_method(method).channel_weights:
        raise ValueError(
            "--concepts needs a named --layer and a method with channel weights: "
            + ", ".join(capable("channel_weights"))
        )
    if probe is None and options.probe_dataset:
        import datasets

        from mmcam.concepts.probes import dataset_probe

        probe = dataset_probe(datasets.load_from_disk(options.probe_dataset), options.probe_dataset)
    return concept_table(subject, probe)


def add_concepts(record: dict, contributions: Tensor, table, action: str, decided=None, ablate=None) -> None:
    """Each target k of ``record`` gets ``"concepts"`` (its concepts for and against, from its units'
    contributions ``contributions[k]``) and ``"text"``, the sentence; its verb is ``action`` where
    ``decided[k]`` is True, "rejected" where False, "scored" where None or without ``decided``.
    ``ablate(contributions)``, if given, gives per target the score drops of zeroing its sentence's units
    (``concepts.ablation.sentence_drops``)."""
    from mmcam.concepts.sentences import ablation_text, describe, verb_of

    drops = ablate(contributions) if ablate is not None else [{}] * len(record["targets"])
    for k, target in enumerate(record["targets"]):
        verb = verb_of(action, None if decided is None else decided[k])
        kind = target.get("score_kind", "score")
        described = describe(
            target["label"], contributions[k], table, verb, score=f"{kind} {target['score']:.2f}"
        )
        described.ablation = drops[k]
        said = ablation_text(drops[k], kind)
        described.text += f" {said}" if said else ""
        target["concepts"], target["text"] = described.as_json(), described.text


def replayed_drops(explainer, inputs, targets, table):
    """``add_concepts``' ``ablate`` for one input scored again: its model ``inputs`` and ``targets``, fixed
    as the record's (None where there are none to replay, e.g. a generative model's answers: no ablation)."""
    if inputs is None:
        return None
    from functools import partial

    from mmcam.concepts.ablation import sentence_drops

    return partial(sentence_drops, explainer, inputs, targets, table=table)
