"""--concepts on caption and vqa: units of a vision-language model's layer named on a user's dataset."""

import json

import pytest

from mmcam.cli import main
from mmcam.concepts.compose import positive_atoms
from mmcam.concepts.dissect import ConceptTable
from mmcam.zoo.dataset import shapes_dataset
from tests.hf_tiny import save_blip_captioner, save_vilt_vqa


@pytest.fixture(scope="module")
def probe_dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("probe")
    dataset = shapes_dataset(24, seed=62_000)
    dataset.save_to_disk(str(folder))
    return folder, dataset[0]["image"]


def _check_concepts(record: dict, verb: str, layer: str) -> None:
    assert record["layer"] == layer
    for target in record["targets"]:
        assert target["text"].startswith(f"The model {target['concepts']['verb']} '{target['label']}'")
        assert target["concepts"]["verb"] in (verb, "rejected", "scored")
        assert set(target["concepts"]) == {"verb", "supporting", "opposing", "text"}
        for concept in target["concepts"]["supporting"]:
            assert concept["weight"] > 0 and concept["concept"] and concept["score"] >= 0.05


@pytest.mark.parametrize("task", ["caption", "vqa"])
def test_concepts_name_units_on_a_probe_dataset(task, tmp_path, monkeypatch, capsys, probe_dataset):
    monkeypatch.setenv("MMCAM_CACHE", str(tmp_path / "cache"))
    folder, picture = probe_dataset
    image = tmp_path / "scene.png"
    picture.save(image)
    if task == "caption":
        model, extra, verb = save_blip_captioner(tmp_path / "blip"), ["--caption", "a red circle"], "wrote"
    else:
        model, extra, verb = save_vilt_vqa(tmp_path / "vilt"), ["-q", "what color is the circle?"], "answered"
    common = ["--model", str(model), "--concepts", "--probe-dataset", str(folder), "--json"]
    assert main([task, str(image), *extra, *common, "-o", str(tmp_path / "out")]) == 0
    record = json.loads(capsys.readouterr().out)
    _check_concepts(record, verb, record["layer"])
    cached = list((tmp_path / "cache" / "concepts").glob("*.json"))
    assert len(cached) == 1 and ConceptTable.load(cached[0]).layer == record["layer"]


def test_concepts_with_a_method_without_channel_weights_is_one_clear_error(tmp_path, capsys, probe_dataset):
    image = tmp_path / "scene.png"
    probe_dataset[1].save(image)
    model = save_blip_captioner(tmp_path / "blip")
    arguments = ["caption", str(image), "--model", str(model), "--concepts", "--method", "layercam"]
    assert main([*arguments, "-o", str(tmp_path / "out")]) == 2
    assert "--concepts needs a named --layer and a method with channel weights" in capsys.readouterr().err


def test_rl_concepts_name_the_strong_agents_units_by_the_objects_they_detect(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MMCAM_CACHE", str(tmp_path / "cache"))
    assert main(["rl", "--episodes", "2", "--concepts", "--json", "-o", str(tmp_path / "out")]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records) >= 4
    for record in records:
        target = record["targets"][0]
        assert target["text"].startswith(f"The model chose '{record['action']}'")
        named = target["concepts"]["supporting"] + target["concepts"]["opposing"]
        assert set().union(*(positive_atoms(e["concept"]) for e in named)) <= {"agent", "goal", "distractors"}
    (cached,) = (tmp_path / "cache" / "concepts").glob("*.json")
    table = ConceptTable.load(cached)
    concepts = [unit.atom for unit in table.units if unit.atom]
    assert len(concepts) >= 0.5 * len(table.units) and {"agent", "goal"} <= set(concepts), concepts
    report = (tmp_path / "out" / "report.html").read_text()
    actions = {record["action"] for record in records}
    assert report.count("<li>The model chose") == len(actions) * 2  # each action's sentence, in both episodes
