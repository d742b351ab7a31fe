"""The bundled shapes classifier: loads from safetensors + json and classifies fresh scenes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from mmcam.zoo import CLASS_NAMES, load, make_scenes
from mmcam.zoo.models import WEIGHTS_DIR


@pytest.fixture(scope="module")
def classifier():
    return load("shapes-classifier")


def test_loads_in_eval_mode_with_labels_and_a_grid_layer(classifier):
    model, processor = classifier
    assert not model.training
    assert model.labels == CLASS_NAMES == processor.labels
    layer = dict(model.named_modules())[model.default_layer]
    captured = []
    layer.register_forward_hook(lambda module, inputs, output: captured.append(output))
    with torch.no_grad():
        logits = model(torch.zeros(2, 3, 128, 128))
    assert logits.shape == (2, 20)
    assert captured[0].ndim == 4 and captured[0].shape[2:] in {(16, 16), (8, 8)}


def test_weights_are_small_and_described():
    weights = WEIGHTS_DIR / "shapes-classifier.safetensors"
    assert weights.stat().st_size < 3_000_000
    spec = json.loads((WEIGHTS_DIR / "shapes-classifier.json").read_text())
    assert spec["labels"] == CLASS_NAMES and spec["eval"]["mean_f1"] >= 0.95


def test_processor_accepts_pil_arrays_and_other_sizes(classifier):
    _, processor = classifier
    image = make_scenes(1, seed=10_000)[0].image
    from_array = processor(image)["pixel_values"]
    from_pil = processor([Image.fromarray(image)])["pixel_values"]
    assert from_array.shape == (1, 3, 128, 128) and from_array.dtype == torch.float32
    assert torch.equal(from_array, from_pil)
    resized = processor([Image.fromarray(image).resize((64, 48)).convert("L"), image])["pixel_values"]
    assert resized.shape == (2, 3, 128, 128)


def test_mean_per_class_f1_on_fresh_scenes(classifier):
    model, processor = classifier
    scenes = make_scenes(1000, seed=10_000)
    labels = np.stack([s.labels for s in scenes]).astype(bool)
    with torch.no_grad():
        logits = torch.cat(
            [model(**processor([s.image for s in scenes[i : i + 250]])) for i in range(0, 1000, 250)]
        )
    predicted = torch.sigmoid(logits).numpy() > 0.5
    tp = (predicted & labels).sum(0)
    f1 = 2 * tp / (2 * tp + (predicted & ~labels).sum(0) + (~predicted & labels).sum(0))
    assert f1.mean() >= 0.95, dict(zip(CLASS_NAMES, f1.round(3)))


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="shapes-classifier") as error:
        load("shapes-resnet")
    assert "shapes-resnet" in str(error.value)
