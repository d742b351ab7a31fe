"""The bundled shapes captioner: loads from safetensors + json, captions fresh scenes, and its word maps localize."""

from __future__ import annotations

import json

import pytest
import torch

from mmcam.zoo import load, make_scenes
from mmcam.zoo.captioner import center_targets, pointer_targets
from mmcam.zoo.models import WEIGHTS_DIR

NAME = "shapes-captioner"


@pytest.fixture(scope="module")
def captioner():
    return load(NAME)


@pytest.fixture(scope="module")
def scenes():
    return make_scenes(200, seed=10_300)


def test_loads_in_eval_mode_with_a_grid_layer(captioner):
    model, _ = captioner
    assert not model.training
    captured = []
    model.get_submodule(model.default_layer).register_forward_hook(
        lambda m, i, output: captured.append(output)
    )
    with torch.no_grad():
        model.generate(torch.zeros(1, 3, 128, 128), max_length=3)
    assert captured[0].shape == (1, model.encoder.out_channels, 16, 16)


def test_teacher_forced_logits_have_one_row_per_input_token(captioner, scenes):
    model, processor = captioner
    batch = processor([s.image for s in scenes[:3]], [s.caption.text for s in scenes[:3]])
    with torch.no_grad():
        logits = model(**batch)
    assert batch["input_ids"][:, 0].eq(processor.tokenizer.bos_id).all()
    assert logits.shape == (3, batch["input_ids"].shape[1], len(processor.tokenizer.vocab))


def test_exact_match_accuracy_on_fresh_scenes(captioner, scenes):
    model, processor = captioner
    with torch.no_grad():
        ids = model.generate(processor([s.image for s in scenes])["pixel_values"])
    assert not ids.eq(processor.tokenizer.bos_id).any()
    captions = processor.batch_decode(ids)
    misses = [(c, s.caption.text) for c, s in zip(captions, scenes) if c != s.caption.text]
    assert 1 - len(misses) / len(scenes) >= 0.9, misses[:5]


def test_pointer_rests_on_the_object_each_word_is_about(captioner, scenes):
    model, processor = captioner
    chosen = scenes[:50]
    batch = processor([s.image for s in chosen], [s.caption.text for s in chosen])
    with torch.no_grad():
        _, pointers = model.decode(model.memory(model.encoder(batch["pixel_values"])), batch["input_ids"])
    on_object = []
    for scene, pointer in zip(chosen, pointers):
        targets = pointer_targets(scene)[:-1]  # every word; not <eos>
        mass = (pointer[: len(targets)] * targets).sum(dim=-1)
        on_object += [m > 0.5 for m, link in zip(mass.tolist(), scene.caption.links) if link >= 0]
    assert sum(on_object) / len(on_object) >= 0.95


def test_centers_are_read_to_a_few_pixels(captioner, scenes):
    model, processor = captioner
    with torch.no_grad():
        offsets = model.memory(
            model.encoder(processor([s.image for s in scenes[:50]])["pixel_values"])
        ).offsets
    targets = torch.stack([center_targets(s) for s in scenes[:50]])
    kept = ~targets.isnan().any(dim=-1)
    assert (offsets[kept] - targets[kept]).abs().mul(8).median() < 1.5  # pixels


def test_tokenizer_round_trip(captioner, scenes):
    _, processor = captioner
    tokenizer = processor.tokenizer
    for scene in scenes[:20]:
        ids = tokenizer.encode(scene.caption.text)
        assert ids[0] == tokenizer.bos_id and ids[-1] == tokenizer.eos_id
        assert [tokenizer.vocab[i] for i in ids[1:-1]] == scene.caption.words
        assert tokenizer.decode(ids) == scene.caption.text
        assert tokenizer.decode([*ids, tokenizer.pad_id]) == scene.caption.text
    assert tokenizer.encode("a tiny red circle", add_special_tokens=False)[1] == tokenizer.unk_id
    assert tokenizer.pad_id != tokenizer.bos_id != tokenizer.eos_id


def test_weights_are_small_and_described():
    assert (WEIGHTS_DIR / f"{NAME}.safetensors").stat().st_size <= 3_000_000
    spec = json.loads((WEIGHTS_DIR / f"{NAME}.json").read_text())
    assert spec["vocab"][:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    assert spec["eval"]["exact_match"] >= 0.9
