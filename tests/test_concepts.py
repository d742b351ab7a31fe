"""Naming units by the concepts they detect, and sentences from the units behind a decision."""

import dataclasses
import json

import pytest
import torch

import mmcam
from mmcam.cli import main
from mmcam.concepts.compose import positive_atoms
from mmcam.concepts.dissect import ConceptTable, layer_activations
from mmcam.concepts.probes import dataset_probe, name_units, shapes_probe
from mmcam.concepts.sentences import concept_evidence
from mmcam.loading import load_classifier
from mmcam.zoo import make_scenes
from mmcam.zoo.concepts import ATOMS, CONCEPTS, concept_masks
from mmcam.zoo.dataset import shapes_dataset
from mmcam.zoo.world import CLASS_NAMES

PROBES = 200


@pytest.fixture(scope="module")
def classifier():
    return load_classifier("shapes")


@pytest.fixture(scope="module")
def scenes():
    return make_scenes(PROBES, seed=60_000)


@pytest.fixture(scope="module")
def table(classifier):
    return name_units(classifier.subject(), shapes_probe(PROBES, seed=60_000), progress=False)


@pytest.fixture(scope="module")
def dataset():
    return shapes_dataset(PROBES, seed=60_000)


def test_concept_masks_are_the_union_of_the_objects_with_the_concept(scenes):
    scene = next(s for s in scenes if len(s.objects) == 3)
    masks = concept_masks(scene)
    for obj in scene.objects:
        for attribute in (obj.color, obj.shape, obj.size):
            assert masks[CONCEPTS.index(attribute)][obj.mask].all()
    assert masks.sum() == sum(3 * obj.mask.sum() for obj in scene.objects)


def test_most_active_units_get_a_concept_from_masks(classifier, scenes, table):
    active = (
        torch.cat(
            [
                layer_activations(classifier.model, classifier.layer, classifier.preprocess(images)).amax(
                    dim=(0, 2, 3)
                )[None]
                for images, _ in shapes_probe(PROBES, seed=60_000).batches()
            ]
        ).amax(0)
        > 0
    )
    named = torch.tensor([unit.concept is not None for unit in table.units])
    assert (named & active).sum() >= 0.5 * active.sum(), f"{int((named & active).sum())}/{int(active.sum())}"


def test_unit_scores_are_the_iou_of_the_top_quantile_with_the_named_concept(classifier, table):
    """Network Dissection by hand for three named units: threshold each at its top 0.5% over all probe
    pixels (a sort, not the running top-k), IoU with each concept's masks; the best is the table's single
    concept, and the unit's formula scores at least as well."""
    images, masks = zip(*shapes_probe(PROBES, seed=60_000).batches())
    masks = torch.cat(masks)  # (N, K, H, W)
    activations = torch.cat(
        [layer_activations(classifier.model, classifier.layer, classifier.preprocess(i)) for i in images]
    )
    up = torch.nn.functional.interpolate(
        activations, size=masks.shape[-2:], mode="bilinear", align_corners=False
    )
    for unit in [u for u in table.units if u.atom][:3]:
        values = up[:, unit.unit].flatten()
        threshold = values.sort(descending=True).values[round(0.005 * values.numel()) - 1]
        active = up[:, unit.unit] > threshold
        ious = [float((active & masks[:, k]).sum() / (active | masks[:, k]).sum()) for k in range(len(ATOMS))]
        best = max(range(len(ATOMS)), key=ious.__getitem__)
        assert (ATOMS[best], round(ious[best], 4)) == (unit.atom, unit.atom_score)
        assert unit.score >= unit.atom_score


def _classes_named_by_top_units(classifier, table) -> int:
    """How many classes have their color or shape among the concepts of their top-5 supporting units."""
    probe = make_scenes(400, seed=61_000)
    agree = 0
    for index, name in enumerate(CLASS_NAMES):
        scene = next(s for s in probe if index in [o.class_index for o in s.objects])
        explanation = mmcam.explain(
            classifier.model, classifier.preprocess([scene.image]), index, layer=classifier.layer
        )
        supporting, _ = concept_evidence(explanation.contributions[0, 0], table)
        agree += any(positive_atoms(e.concept) & set(name.split()) for e in supporting[:2])
    return agree


def test_top_supporting_units_name_the_class_color_or_shape_above_chance(classifier, table):
    """Against chance: the same table with its concept names shuffled across units (the first two concepts
    of a sentence then assert one of a class's two words about half of the time)."""
    agree = _classes_named_by_top_units(classifier, table)
    generator = torch.Generator().manual_seed(0)
    chance = []
    for _ in range(5):
        names = [u.concept for u in table.units]
        order = torch.randperm(len(names), generator=generator).tolist()
        shuffled = ConceptTable(
            table.model,
            table.layer,
            table.concepts,
            [dataclasses.replace(u, concept=names[i]) for u, i in zip(table.units, order)],
        )
        chance.append(_classes_named_by_top_units(classifier, shuffled))
    assert agree >= 0.8 * len(CLASS_NAMES), f"{agree}/{len(CLASS_NAMES)}"
    assert agree >= sum(chance) / len(chance) + 0.2 * len(CLASS_NAMES), f"{agree} against chance {chance}"


def test_a_dataset_with_masks_names_units_as_the_shapes_probe_does(classifier, dataset):
    """The same scenes as a dataset (11 concepts, no positions, listed in another order): the same single
    concepts and formula IoUs (equal formulas, such as red AND small and red AND NOT large, may tie)."""
    probe = dataset_probe(dataset.remove_columns(["caption"]), "shapes-as-dataset")
    assert probe.kind == "masks" and sorted(probe.concepts) == sorted(CONCEPTS)
    from_dataset = name_units(classifier.subject(), probe, progress=False)
    from_world = name_units(
        classifier.subject(), shapes_probe(PROBES, seed=60_000, positions=False), progress=False
    )

    def labels(table):
        return [(u.score, u.atom, u.atom_score) for u in table.units]

    assert labels(from_dataset) == labels(from_world)


def test_caption_words_name_units_like_the_masks_do(classifier, dataset, table):
    probe = dataset_probe(dataset.remove_columns(["masks"]), "shapes-captions")
    assert probe.kind == "labels"
    assert {"red", "circle", "small", "large"} <= set(probe.concepts) and "a" not in probe.concepts
    by_labels = name_units(classifier.subject(), probe, progress=False)
    both = [(a.atom, b.concept) for a, b in zip(table.units, by_labels.units) if a.atom and b.concept]
    assert len(both) >= 30
    assert sum(a == b for a, b in both) >= 0.7 * len(both), f"{sum(a == b for a, b in both)}/{len(both)}"


def test_a_dataset_without_masks_or_captions_gets_one_clear_error(dataset):
    with pytest.raises(ValueError, match="needs an 'image' column and either 'masks'"):
        dataset_probe(dataset.remove_columns(["masks", "caption"]), "bare")
    with pytest.raises(ValueError, match="no per-object concept column"):
        dataset_probe(dataset.select_columns(["image", "masks"]), "no-concepts")


def test_table_round_trip(table, tmp_path):
    table.save(tmp_path / "table.json")
    assert ConceptTable.load(tmp_path / "table.json") == table


def test_a_table_read_another_way_is_not_found_in_the_cache(monkeypatch):
    """A change of how activations are read (tables.READING) moves every cached table's path, so a table read
    the old way is rebuilt, not reused."""
    from mmcam.concepts import tables

    before = tables.table_path("llava", "model.language_model.layers.0.input_layernorm")
    monkeypatch.setattr(tables, "READING", tables.READING + 1)
    assert tables.table_path("llava", "model.language_model.layers.0.input_layernorm") != before


def test_dissect_caches_a_table_that_classify_concepts_reuses(tmp_path, monkeypatch, capsys, scenes):
    from PIL import Image

    monkeypatch.setenv("MMCAM_CACHE", str(tmp_path / "cache"))
    assert main(["dissect", "--probes", "32", "--json"]) == 0
    dissected = json.loads(capsys.readouterr().out)
    assert len(dissected["units"]) == 128 and (tmp_path / "cache" / "concepts").is_dir()
    image = tmp_path / "scene.png"
    Image.fromarray(scenes[0].image).save(image)
    assert (
        main(["classify", str(image), "--top", "1", "--concepts", "-o", str(tmp_path / "o"), "--json"]) == 0
    )
    target = json.loads(capsys.readouterr().out)["targets"][0]
    verb = "predicted" if target["score"] > 0 else "rejected"
    assert target["text"].startswith(f"The model {verb} '{target['label']}' (logit {target['score']:.2f})")
    assert {"verb", "supporting", "opposing", "text", "ablation"} == set(target["concepts"])
    ablation = target["concepts"]["ablation"]
    assert ablation["units"] == sum(len(e["units"]) for e in target["concepts"]["supporting"])
