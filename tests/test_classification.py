"""The classification adapter on real model families built offline: torchvision and Hugging Face ViT."""

import numpy as np
import pytest
import torch
from PIL import Image

from mmcam.adapters.classification import default_layer_and_method, from_module, imagenet_preprocess
from mmcam.images import load_image
from mmcam.loading import load_classifier
from tests.model_state import assert_unchanged, snapshot


@pytest.fixture(scope="module")
def tiny_vit_dir(tmp_path_factory):
    """A randomly initialized ViT classifier and its processor, saved like a downloaded checkpoint."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    config = ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=64,
        patch_size=8,
        num_labels=5,
        id2label={i: f"thing{i}" for i in range(5)},
        label2id={f"thing{i}": i for i in range(5)},
        attn_implementation="eager",
    )
    path = tmp_path_factory.mktemp("tiny-vit")
    ViTForImageClassification(config).save_pretrained(path)
    ViTImageProcessor(size={"height": 64, "width": 64}).save_pretrained(path)
    return path


@pytest.fixture
def picture():
    return Image.fromarray((np.random.default_rng(0).random((48, 80, 3)) * 255).astype(np.uint8))


def test_huggingface_vit_from_a_local_directory(tiny_vit_dir, picture):
    classifier = load_classifier(str(tiny_vit_dir))
    assert (classifier.layer, classifier.method) == ("vit.layers.0.layernorm_before", "attention-relevance")
    before = snapshot(classifier.model)
    explanation = classifier.explain([picture], top=3)
    assert_unchanged(classifier.model, before)
    assert explanation.raw.shape == (1, 3, 8, 8)  # 64 tokens after the class token, as an 8x8 grid
    assert explanation.labels[0][0].startswith("thing")
    for k in range(3):
        assert explanation.maps[0, k].amax() == 1 and explanation.maps[0, k].std() > 0.05


def _save_hierarchical(folder, family: str):
    """A tiny Swin or ConvNeXt classifier and its processor (64 px), saved like a downloaded checkpoint."""
    from transformers import (
        ConvNextConfig,
        ConvNextForImageClassification,
        ConvNextImageProcessor,
        SwinConfig,
        SwinForImageClassification,
    )

    torch.manual_seed(0)
    if family == "swin":
        config = SwinConfig(
            image_size=64, embed_dim=16, depths=[1, 2], num_heads=[1, 2], window_size=4, num_labels=4
        )
        model = SwinForImageClassification(config)
    else:
        config = ConvNextConfig(
            image_size=64, hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1], num_labels=4
        )
        model = ConvNextForImageClassification(config)
    model.save_pretrained(folder)
    ConvNextImageProcessor(size={"shortest_edge": 64}, crop_pct=1.0).save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    "family, layer, method, grid",
    [
        ("swin", "swin.encoder.layers.1.blocks.1.layernorm_before", "gradcam", (8, 8)),
        ("convnext", "auto", "gradcam", (8, 8)),
    ],
)
def test_hierarchical_huggingface_classifiers(tmp_path, picture, family, layer, method, grid):
    """Swin keeps Grad-CAM at its last block (attention relevance cannot follow merged tokens and windows);
    ConvNeXt's auto layer is its last stage with at least 7x7 cells (at 64 px the second, 8x8), not the
    backbone whose head reads the pooled tensor."""
    classifier = load_classifier(str(_save_hierarchical(tmp_path, family)))
    assert (classifier.layer, classifier.method) == (layer, method)
    before = snapshot(classifier.model)
    explanation = classifier.explain([picture], top=2)
    assert_unchanged(classifier.model, before)
    assert explanation.raw.shape == (1, 2, *grid) and (explanation.raw.flatten(2).amax(-1) > 0).all()
    assert family == "swin" or explanation.layer == "convnext.encoder.stages.1"


def test_vit_auto_layer_lands_in_the_last_block_with_spatial_gradients(tiny_vit_dir, picture):
    classifier = load_classifier(f"hf:{tiny_vit_dir}")
    explanation = classifier.explain([picture], top=1, layer="auto", method="gradcam")
    assert explanation.layer.startswith("vit.layers.1.")
    assert explanation.maps.std() > 0.05


def test_torchvision_random_weights_and_default_layer(picture):
    classifier = load_classifier("torchvision:resnet18:random")
    explanation = classifier.explain([picture], top=2)
    assert explanation.layer == "layer4" and explanation.maps.shape == (1, 2, 224, 224)
    assert classifier.class_names is None and explanation.labels[0][0].startswith("class ")


def test_any_module_returning_logits(cam_net):
    classifier = from_module(cam_net)
    assert default_layer_and_method(cam_net) == ("auto", "gradcam") and classifier.preprocess(
        [Image.new("RGB", (30, 20))]
    ).shape == (
        1,
        3,
        224,
        224,
    )


def test_unknown_specs_say_what_is_valid():
    with pytest.raises(ValueError, match="torchvision name"):
        load_classifier("not-a-model")
    with pytest.raises(ValueError, match=":random"):
        load_classifier("torchvision:resnet18:tiny")
    with pytest.raises(ValueError, match="local directory or the local cache"):
        load_classifier("hf:/nonexistent/model-dir")


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "RGB"])
def test_images_of_any_mode_become_rgb(tmp_path, mode):
    path = tmp_path / f"picture-{mode}.png"
    Image.new(mode, (7, 5)).save(path)
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (7, 5)


def test_unreadable_image_is_one_clear_error(tmp_path):
    (tmp_path / "broken.png").write_text("not an image")
    with pytest.raises(ValueError, match="cannot read image .*broken.png"):
        load_image(tmp_path / "broken.png")
    with pytest.raises(ValueError, match="no such file"):
        load_image(tmp_path / "missing.png")


def test_a_torchvision_checkpoint_of_your_own_loads_from_safetensors_and_a_json(tmp_path):
    import json

    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3).eval()
    save_file(model.state_dict(), tmp_path / "model.safetensors")
    config = {
        "num_classes": 3,
        "labels": ["a", "b", "c"],
        "image_size": 64,
        "mean": [0.5] * 3,
        "std": [0.25] * 3,
    }
    (tmp_path / "config.json").write_text(json.dumps({**config, "multi_label": True}))
    classifier = load_classifier(f"torchvision:resnet18:{tmp_path}")
    assert classifier.class_names == ["a", "b", "c"] and classifier.multi_label
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    pixels = classifier.preprocess([image])
    expected = (torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255 - 0.5) / 0.25
    torch.testing.assert_close(pixels[0], expected)
    with torch.no_grad():
        torch.testing.assert_close(classifier.model(pixels), model(pixels))
    (tmp_path / "config.json").unlink()
    with pytest.raises(ValueError, match="model.safetensors and config.json"):
        load_classifier(f"torchvision:resnet18:{tmp_path}")


def test_pickled_checkpoints_load_only_when_trusted(tiny_vit_dir, tmp_path):
    import shutil

    from safetensors.torch import load_file

    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_vit_dir, pickled)
    torch.save(load_file(pickled / "model.safetensors"), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="pickled weights, which can run code.*--trust-pickle"):
        load_classifier(str(pickled))
    trusted = load_classifier(str(pickled), trust_pickle=True)
    assert trusted.class_names == load_classifier(str(tiny_vit_dir)).class_names


def test_pretrained_weights_not_in_the_cache_are_not_downloaded(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(ValueError, match=rf"not in the local torch cache \({tmp_path}/checkpoints/resnet18-"):
        load_classifier("resnet18")
    assert capsys.readouterr().out == ""


def test_torchvision_checkpoint_in_shards(tmp_path):
    """A state dict split by huggingface_hub (model.safetensors.index.json + shards) loads as one."""
    import json

    import torchvision
    from huggingface_hub import save_torch_state_dict

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3).eval()
    save_torch_state_dict(model.state_dict(), tmp_path, max_shard_size="10MB")
    assert len(list(tmp_path.glob("model-*-of-*.safetensors"))) >= 2
    (tmp_path / "config.json").write_text(json.dumps({"num_classes": 3, "image_size": 64}))
    loaded = load_classifier(f"torchvision:resnet18:{tmp_path}").model
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor)


def test_eval_unpickles_a_checkpoint_only_with_trust_pickle(tiny_vit_dir, tmp_path, capsys):
    import shutil

    from safetensors.torch import load_file

    from mmcam.cli import main

    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_vit_dir, pickled)
    torch.save(load_file(pickled / "model.safetensors"), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    argv = ["eval", "--task", "classify", "--model", str(pickled), "--limit", "1", "--methods", "gradcam"]
    assert main([*argv, "--metric", "pointing", "-o", str(tmp_path / "refused")]) == 2
    assert "pickled weights, which can run code" in capsys.readouterr().err
    # trusted, it loads and goes on to the data, where this model's classes are not the shapes world's
    assert main([*argv, "--metric", "pointing", "--trust-pickle", "-o", str(tmp_path / "trusted")]) == 2
    assert "has no class" in capsys.readouterr().err


def test_preprocessing_is_the_resized_pixels_normalized_channel_by_channel():
    """(p / 255 - mean) / std per channel of the resized RGB pixels, as one multiply-add over the batch."""
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)) for _ in range(2)]
    images.append(images[0].convert("L"))  # a gray image is made RGB first
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.3, 0.4)
    pixels = imagenet_preprocess(16, mean, std)(images)
    for image, row in zip(images, pixels):
        resized = np.asarray(image.convert("RGB").resize((16, 16), Image.BILINEAR), dtype=np.float64) / 255
        expected = (resized - np.array(mean)) / np.array(std)
        assert row.shape == (3, 16, 16) and row.is_contiguous()
        np.testing.assert_allclose(row.permute(1, 2, 0).numpy(), expected, atol=1e-5)
