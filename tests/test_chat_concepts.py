"""--concepts on every chat family: units named on the layer's image tokens laid out as the explainer lays them
(a vision tower's patch tokens, LLaVA-NeXT's and Idefics3's tiles stitched onto the image, Qwen2-VL's packed
tokens, the image's tokens among a language model's hidden states), each sentence's recorded drop checked against
the model run with its units zeroed by hand; a layer whose image tokens lie on no one grid is one clear error."""

import json
from contextlib import nullcontext

import pytest
import torch
from PIL import Image

from mmcam.adapters.captioning import explain_caption
from mmcam.cli import main
from mmcam.concepts.dissect import ConceptTable, layer_activations
from mmcam.concepts.probes import name_units, shapes_probe
from mmcam.loading import load_captioner
from mmcam.zoo.dataset import shapes_dataset
from tests.hf_tiny import (
    save_gemma3,
    save_idefics3,
    save_llava,
    save_llava_next,
    save_paligemma,
    save_qwen_vl,
)
from tests.model_state import assert_unchanged, snapshot
from tests.test_concepts_cli import _check_concepts, _named, _zeroed

CAPTION = "a red circle"
LANGUAGE = "model.language_model.layers.0.input_layernorm"
# one tiny model per chat family class of adapters.chat.FAMILIES, and the layer --concepts names (None: default)
FAMILIES = {
    "llava": (save_llava, None),  # the projector's output
    "llava-language": (save_llava, LANGUAGE),  # the image's tokens among the language model's hidden states
    "llava_next": (save_llava_next, None),  # tiles
    "paligemma": (save_paligemma, None),
    "gemma3": (save_gemma3, None),
    "idefics3": (save_idefics3, None),  # tiles
    "qwen2_vl": (save_qwen_vl, None),  # packed tokens
    "qwen2_vl-language": (save_qwen_vl, LANGUAGE),
}


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    folder = tmp_path_factory.mktemp("probe")
    dataset = shapes_dataset(24, seed=62_000)
    dataset.save_to_disk(str(folder))
    image = folder / "scene.png"
    dataset[0]["image"].save(image)
    return folder, image, dataset[0]["image"]


def _rescored(model: str, picture, layer: str, units: list[int]) -> list[float]:
    """The caption's word scores with ``units`` of ``layer`` zeroed by the test's own hooks, through the public
    API: on every row of a vision tower's output (each tile, each packed token), and at a layer of the language
    model at the image's tokens only (the positions of the image token in the ids the model is called with)."""
    captioner = load_captioner(model)
    handles, ids = [], {}
    if layer.startswith(LANGUAGE.split(".layers.")[0]):
        image_token = captioner.model.config.image_token_id

        def record(_module, _args, kwargs):
            ids["image"] = kwargs["input_ids"] == image_token

        def zero(_module, _inputs, output):
            zeroed = output.clone()
            rows, positions = ids["image"].nonzero(as_tuple=True)
            zeroed[rows[:, None], positions[:, None], torch.tensor(units)] = 0
            return zeroed

        handles.append(captioner.model.register_forward_pre_hook(record, with_kwargs=True))
        handles.append(captioner.model.get_submodule(layer).register_forward_hook(zero))
        zeroing = nullcontext()
    else:
        zeroing = _zeroed(captioner.model, layer, units)
    try:
        with zeroing:
            explained = explain_caption(captioner, picture, CAPTION, explainer=captioner.explainer(layer))
    finally:
        for handle in handles:
            handle.remove()
    return explained.explanation.scores[0].tolist()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_concepts_on_every_chat_family(family, probe, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MMCAM_CACHE", str(tmp_path / "cache"))
    folder, image, picture = probe
    save, layer = FAMILIES[family]
    model = str(save(tmp_path / "model"))
    arguments = _caption_arguments(model, image, folder, tmp_path)
    assert main(arguments + (["--layer", layer] if layer else [])) == 0
    record = json.loads(capsys.readouterr().out)
    _check_concepts(record, "wrote", layer or record["layer"])
    checked = 0
    for k, target in enumerate(record["targets"]):
        if _named(target):  # the recorded drop is the model's own when those units are zeroed
            rescored = _rescored(model, picture, record["layer"], _named(target))[k]
            assert target["concepts"]["ablation"]["named"] == pytest.approx(
                target["score"] - rescored, abs=1e-4
            )
            checked += 1
    assert checked >= 1
    (cached,) = (tmp_path / "cache" / "concepts").glob("*.json")
    table = ConceptTable.load(cached)
    assert table.layer == record["layer"] and any(unit.concept for unit in table.units)


def test_units_are_read_on_the_images_tokens_as_the_explainer_reads_them(tmp_path):
    """The naming reads a language layer at the image's tokens (not the prompt's) and a tiled tower's rows
    stitched onto the image: planted values on those tokens come back where the image shows them."""
    captioner = load_captioner(str(save_llava(tmp_path / "llava")))
    subject = captioner.subject(LANGUAGE)
    inputs = captioner.probe_inputs([Image.new("RGB", (32, 32), (200, 30, 30))])
    positions, grid = captioner.layouts(subject.layer)(inputs).selected, (4, 4)
    planted = torch.arange(16.0)

    def plant(_module, _inputs, output):
        output = output.clone()
        output[:, :, 0] = -1.0  # every prompt token
        output[0, positions[0], 0] = planted  # the image's tokens, row-major over the 4 x 4 grid
        return output

    handle = captioner.model.get_submodule(subject.layer).register_forward_hook(plant)
    try:
        grid_values = layer_activations(subject.model, subject.layer, inputs, subject.forward, subject.layout)
    finally:
        handle.remove()
    assert grid_values.shape[-2:] == grid
    torch.testing.assert_close(grid_values[0, 0], planted.reshape(grid))


def test_a_tiled_models_language_layer_is_one_clear_error_before_naming(probe, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MMCAM_CACHE", str(tmp_path / "cache"))
    folder, image, _ = probe
    model = str(save_llava_next(tmp_path / "next"))
    captioner = load_captioner(model)
    before = snapshot(captioner.model)
    arguments = _caption_arguments(model, image, folder, tmp_path)
    assert main(arguments + ["--layer", LANGUAGE]) == 2
    error = capsys.readouterr().err
    assert "tokens form no one grid" in error and "layer of the vision tower" in error
    assert not (tmp_path / "cache" / "concepts").exists() or not list(
        (tmp_path / "cache" / "concepts").iterdir()
    )
    with pytest.raises(ValueError, match="tokens form no one grid"):
        name_units(captioner.subject(LANGUAGE), shapes_probe(4), progress=False)
    assert_unchanged(captioner.model, before)


def test_the_llava_shapes_fixture_names_its_units_in_sentences(tmp_path, monkeypatch, capsys, probe):
    monkeypatch.setenv("MMCAM_CACHE", str(tmp_path / "cache"))
    folder, image, picture = probe
    model = "tests/fixtures/models/llava-shapes"
    arguments = _caption_arguments(model, image, folder, tmp_path)
    assert main(arguments) == 0
    record = json.loads(capsys.readouterr().out)
    _check_concepts(record, "wrote", record["layer"])
    named = [target for target in record["targets"] if _named(target)]
    assert named and all(target["concepts"]["supporting"][0]["concept"] for target in named)
    for k, target in enumerate(record["targets"]):
        if _named(target):
            rescored = _rescored(model, picture, record["layer"], _named(target))[k]
            assert target["concepts"]["ablation"]["named"] == pytest.approx(
                target["score"] - rescored, abs=1e-3
            )


def _caption_arguments(model, image, folder, tmp_path):
    """`mmcam caption` of ``image`` by ``model`` with the given caption, units named on ``folder``, JSON only."""
    arguments = ["caption", str(image), "--model", model, "--caption", CAPTION, "--concepts", "--json"]
    return arguments + [
        "--probe-dataset",
        str(folder),
        "--no-figures",
        "--workers",
        "0",
        "-o",
        str(tmp_path / "out"),
    ]
