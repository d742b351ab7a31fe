"""mmcam's maps against pytorch-grad-cam and captum on a seeded torchvision resnet18."""

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import mmcam

pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam", reason="reference needs the dev extra (grad-cam)")
captum_attr = pytest.importorskip("captum.attr", reason="reference needs the dev extra (captum)")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

REFERENCES = {
    "gradcam": pytorch_grad_cam.GradCAM,
    "gradcam++": pytorch_grad_cam.GradCAMPlusPlus,
    "xgradcam": pytorch_grad_cam.XGradCAM,
    "hirescam": pytorch_grad_cam.HiResCAM,
    "layercam": pytorch_grad_cam.LayerCAM,
    "eigencam": pytorch_grad_cam.EigenCAM,
}


class ScaledLogits(nn.Module):
    """resnet18 with logits x1000: keeps gradients far above pytorch-grad-cam's Grad-CAM++ eps (1e-6),
    which would otherwise dominate its denominators on a randomly initialized network."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torchvision.models.resnet18().eval()

    def forward(self, x):
        return self.net(x) * 1000


@pytest.fixture(scope="module")
def scaled():
    return ScaledLogits().eval()


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(2)
    return torch.randn(2, 3, 160, 160)


def _minmax(raw: np.ndarray) -> np.ndarray:
    """pytorch-grad-cam's scaling: (L - min) / (1e-7 + max(L - min))."""
    shifted = raw - raw.min(axis=(-2, -1), keepdims=True)
    return shifted / (1e-7 + shifted.max(axis=(-2, -1), keepdims=True))


@pytest.mark.parametrize("method", list(REFERENCES))
def test_matches_pytorch_grad_cam(scaled, batch, method):
    classes = [3, 7]
    reference = REFERENCES[method](model=scaled, target_layers=[scaled.net.layer4])
    reference.get_target_width_height = lambda _: (5, 5)  # compare at the layer's 5x5 grid, no resize
    expected = reference(batch, targets=[ClassifierOutputTarget(c) for c in classes])
    reference.activations_and_grads.release()

    ours = mmcam.explain(scaled, batch, classes, layer="net.layer4", method=method)
    got = _minmax(ours.raw[:, 0].numpy())
    if method == "eigencam":  # a principal component's sign is arbitrary: either sign of the reference's
        projection = _reference_projection(scaled, batch)
        expected = np.stack([_minmax(np.maximum(sign * projection, 0)) for sign in (1, -1)])
        assert min(np.abs(got - e).max() for e in expected) < 1e-4
    else:
        assert np.abs(got - expected).max() < 1e-4


def _reference_projection(model, batch):
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

    captured = {}
    handle = model.net.layer4.register_forward_hook(lambda m, a, o: captured.setdefault("a", o.detach()))
    with torch.no_grad():
        model(batch)
    handle.remove()
    return get_2d_projection(captured["a"].numpy())


def test_gradcam_matches_captum(resnet18, images):
    classes = [1, 8]
    expected = captum_attr.LayerGradCam(resnet18, resnet18.layer4).attribute(
        images, target=classes, relu_attributions=True
    )
    ours = mmcam.explain(resnet18, images, classes, layer="layer4")
    torch.testing.assert_close(ours.raw[:, 0], expected[:, 0].detach(), atol=1e-6, rtol=1e-4)
