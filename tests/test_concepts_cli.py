"""--concepts on caption, vqa and rl: units named on a user's dataset (or the agent's play), and each sentence
with the score drop of zeroing its units, checked against the model run with those units zeroed by hand."""

import json
import re
from contextlib import contextmanager

import pytest
import torch

from mmcam.adapters.rl import make_env, play
from mmcam.cli import main
from mmcam.concepts.compose import positive_atoms
from mmcam.concepts.dissect import ConceptTable
from mmcam.loading import load_policy
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
        assert set(target["concepts"]) == {"verb", "supporting", "opposing", "text", "ablation"}
        for concept in target["concepts"]["supporting"]:
            assert concept["weight"] > 0 and concept["concept"] and concept["score"] >= 0.05
        ablation = target["concepts"]["ablation"]
        assert ablation["units"] == len(_named(target))
        if ablation["units"]:
            assert f"Zeroing its {ablation['units']} unit" in target["text"]


def _named(target: dict) -> list[int]:
    """The units a target's sentence names (those of its supporting concepts)."""
    return [unit for concept in target["concepts"]["supporting"] for unit in concept["units"]]


@contextmanager
def _zeroed(model, layer: str, units: list[int], channel_axis: int = -1):
    """The model with ``units`` of ``layer``'s output set to zero (on ``channel_axis``), by a hook of the test's."""

    def hook(_module, _inputs, output):
        tensor = output[0] if isinstance(output, tuple) else output
        index = [slice(None)] * tensor.ndim
        index[channel_axis] = units
        tensor = tensor.clone()
        tensor[tuple(index)] = 0
        return (tensor, *output[1:]) if isinstance(output, tuple) else tensor

    handle = model.get_submodule(layer).register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _rescored(task: str, model: str, image, record: dict, units: list[int]) -> list[float]:
    """The record's targets scored again with ``units`` zeroed, through the public API, not the ablation code."""
    from mmcam.adapters.captioning import explain_caption
    from mmcam.loading import load_captioner, load_vqa
    from mmcam.targets import logits_of

    if task == "caption":
        captioner = load_captioner(model)
        with _zeroed(captioner.model, record["layer"], units):
            explained = explain_caption(
                captioner, image, record["caption"], explainer=captioner.explainer(record["layer"])
            )
        return explained.explanation.scores[0].tolist()
    vqa = load_vqa(model)
    with _zeroed(vqa.model, record["layer"], units), torch.no_grad():
        logits = logits_of(vqa.forward(vqa.model, vqa.prepare([image], [record["question"]])))
    return [float(logits[0, target["index"]]) for target in record["targets"]]


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
    checked = 0
    for k, target in enumerate(record["targets"]):
        if _named(target):  # the recorded drop is the model's own when those units are zeroed
            rescored = _rescored(task, str(model), picture, record, _named(target))[k]
            assert target["concepts"]["ablation"]["named"] == pytest.approx(
                target["score"] - rescored, abs=1e-4
            )
            checked += 1
    assert checked >= 1
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
    policy, venv = load_policy("strong", make_env(records[0]["env"])), make_env(records[0]["env"])
    trajectories = {}
    for record in records:
        target = record["targets"][0]
        assert target["text"].startswith(f"The model chose '{record['action']}'")
        assert target["score_kind"] == "logit minus the mean logit"  # the advantage: it does not saturate
        assert target["concepts"]["ablation"]["units"] == len(_named(target))
        if _named(target):  # the recorded drop: the chosen action's advantage with those units zeroed
            episode = record["episode"]
            trajectory = trajectories.setdefault(episode, play(policy, venv, record["seed"]))
            pixels = policy.to_pixels(trajectory.observations[record["step"] : record["step"] + 1])
            with _zeroed(policy.model, record["layer"], _named(target), channel_axis=1), torch.no_grad():
                logits = policy.forward(policy.model, {"pixel_values": pixels}).logits
            rescored = float(logits[0, record["action_index"]] - logits[0].mean())
            assert target["concepts"]["ablation"]["named"] == pytest.approx(
                target["score"] - rescored, abs=1e-4
            )
        named = target["concepts"]["supporting"] + target["concepts"]["opposing"]
        assert set().union(*(positive_atoms(e["concept"]) for e in named)) <= {"agent", "goal", "distractors"}
    (cached,) = (tmp_path / "cache" / "concepts").glob("*.json")
    table = ConceptTable.load(cached)
    concepts = [unit.atom for unit in table.units if unit.atom]
    assert len(concepts) >= 0.5 * len(table.units) and {"agent", "goal"} <= set(concepts), concepts
    report = (tmp_path / "out" / "report.html").read_text()
    actions = {record["action"] for record in records}
    assert report.count("<li>The model chose") == len(actions) * 2  # each action's sentence, in both episodes
    sentences = re.findall(r"<li>(The model chose.*?)</li>", report)
    for sentence in sentences:  # a sentence that names units says what zeroing them did at the action's steps
        assert ("because of units detecting" in sentence) == (" on average over " in sentence), sentence
    assert any(" on average over " in sentence for sentence in sentences)
