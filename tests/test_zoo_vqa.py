"""The bundled shapes VQA model: loads from safetensors + json and answers fresh scenes' questions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mmcam.zoo import ANSWERS, load, make_scenes
from mmcam.zoo.models import WEIGHTS_DIR
from mmcam.zoo.world import QUESTION_TYPES

NAME = "shapes-vqa"


@pytest.fixture(scope="module")
def vqa():
    return load(NAME)


def test_loads_in_eval_mode_with_answers_and_a_grid_layer(vqa):
    model, processor = vqa
    assert not model.training
    assert processor.answers == ANSWERS
    captured = []
    model.get_submodule(model.default_layer).register_forward_hook(
        lambda m, i, output: captured.append(output)
    )
    with torch.no_grad():
        logits = model(**processor([np.zeros((128, 128, 3), np.uint8)] * 2, ["is there a red circle?"] * 2))
    assert logits.shape == (2, len(ANSWERS))
    assert captured[0].shape[0] == 2 and captured[0].shape[2:] in {(16, 16), (8, 8)}


def test_accuracy_on_fresh_scenes_overall_and_per_type(vqa):
    model, processor = vqa
    rows = [(s.image, q) for s in make_scenes(400, seed=10_400) for q in s.questions]
    with torch.no_grad():
        predicted = [
            answer
            for i in range(0, len(rows), 500)
            for answer in processor.decode(
                model(
                    **processor(
                        [image for image, _ in rows[i : i + 500]], [q.text for _, q in rows[i : i + 500]]
                    )
                )
            )
        ]
    correct = np.array([answer == q.answer for answer, (_, q) in zip(predicted, rows)])
    types = np.array([q.type for _, q in rows])
    per_type = {t: round(float(correct[types == t].mean()), 3) for t in QUESTION_TYPES}
    assert correct.mean() >= 0.9, per_type
    assert min(per_type.values()) >= 0.9, per_type


def test_processor_pads_questions_without_changing_answers(vqa):
    model, processor = vqa
    image = make_scenes(1, seed=10_000)[0].image
    short, long = "is there a red circle?", "what size is the yellow triangle?"
    batch = processor([image, image], [short, long])
    pad = processor.tokenizer.pad_id
    assert batch["input_ids"].tolist()[0] == [
        *processor.tokenizer.encode(short, add_special_tokens=False),
        pad,
    ]
    assert not batch["input_ids"][1].eq(pad).any()
    alone = processor(image, short)
    padded = torch.nn.functional.pad(alone["input_ids"], (0, 5), value=pad)
    with torch.no_grad():
        expected = model(**alone)
        torch.testing.assert_close(model(**batch)[:1], expected, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(model(alone["pixel_values"], padded), expected, rtol=1e-4, atol=1e-4)


def test_processor_rejects_mismatched_images_and_questions(vqa):
    _, processor = vqa
    with pytest.raises(ValueError, match="2 questions"):
        processor(
            np.zeros((128, 128, 3), np.uint8), ["is there a red circle?", "how many objects are there?"]
        )


def test_weights_are_small_and_described():
    assert (WEIGHTS_DIR / f"{NAME}.safetensors").stat().st_size <= 6_000_000
    spec = json.loads((WEIGHTS_DIR / f"{NAME}.json").read_text())
    assert spec["answers"] == ANSWERS
    assert (
        spec["eval"]["accuracy"] >= 0.9 and min(spec["eval"][f"accuracy_{t}"] for t in QUESTION_TYPES) >= 0.9
    )
