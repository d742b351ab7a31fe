"""The user's model comes back exactly as it went in, after success and after failure."""

import gc

import pytest
import torch

import mmcam
from tests.model_state import assert_unchanged, snapshot


@pytest.fixture
def mixed_state_model(resnet18):
    """A model in train mode with one frozen block and one submodule in eval mode."""
    resnet18.train()
    resnet18.layer1.eval()
    for p in resnet18.layer2.parameters():
        p.requires_grad_(False)
    yield resnet18
    resnet18.eval()
    for p in resnet18.parameters():
        p.requires_grad_(True)


@pytest.mark.parametrize(
    "method", ["gradcam", "scorecam", "guided-gradcam", "smooth-gradcam++", "shapleycam", "fullgrad"]
)
def test_unchanged_after_success(mixed_state_model, method):
    before = snapshot(mixed_state_model)
    mmcam.explain(mixed_state_model, torch.randn(1, 3, 32, 32), [2], method=method)
    assert_unchanged(mixed_state_model, before)


def test_unchanged_after_a_target_raises(mixed_state_model):
    before = snapshot(mixed_state_model)

    def broken(output):
        raise RuntimeError("induced failure")

    with pytest.raises(RuntimeError, match="induced failure"):
        mmcam.explain(mixed_state_model, torch.randn(1, 3, 32, 32), broken, layer="layer4")
    assert_unchanged(mixed_state_model, before)


def test_unchanged_after_bad_input(mixed_state_model):
    before = snapshot(mixed_state_model)
    with pytest.raises(ValueError, match="could not run on inputs"):
        mmcam.explain(mixed_state_model, torch.randn(1, 4, 32, 32), 0, layer="layer4")
    assert_unchanged(mixed_state_model, before)


def test_unchanged_after_auto_layer_probe(mixed_state_model):
    before = snapshot(mixed_state_model)
    assert mmcam.explain(mixed_state_model, torch.randn(1, 3, 64, 64), 1).layer == "layer2"  # 8x8
    assert_unchanged(mixed_state_model, before)


def test_works_under_no_grad_and_on_frozen_models(resnet18, images):
    expected = mmcam.explain(resnet18, images, 1, layer="layer4").raw
    with torch.no_grad():
        assert torch.equal(mmcam.explain(resnet18, images, 1, layer="layer4").raw, expected)
    for p in resnet18.parameters():
        p.requires_grad_(False)
    try:
        assert torch.equal(mmcam.explain(resnet18, images, 1, layer="layer4").raw, expected)
    finally:
        for p in resnet18.parameters():
            p.requires_grad_(True)


def test_inference_mode_gives_a_clear_error(resnet18, images):
    with torch.inference_mode(), pytest.raises(RuntimeError, match="outside torch.inference_mode"):
        mmcam.explain(resnet18, images, 1, layer="layer4")


def _live_tensors():
    gc.collect()
    return sum(1 for o in gc.get_objects() if torch.is_tensor(o))


def test_no_growth_of_live_tensors_over_200_calls(cam_net, images):
    explainer = mmcam.Explainer(cam_net, layer="features")
    explainer(images, [0, 1])
    before = _live_tensors()
    for _ in range(200):
        explainer(images, [0, 1])
    assert _live_tensors() <= before
