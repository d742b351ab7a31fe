"""mmcam's maps against pytorch-grad-cam and captum on a seeded torchvision resnet18."""

import copy

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import mmcam

REFERENCES = {  # mmcam's name -> pytorch-grad-cam's class
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "xgradcam": "XGradCAM",
    "hirescam": "HiResCAM",
    "layercam": "LayerCAM",
    "eigencam": "EigenCAM",
    "gradcam-elementwise": "GradCAMElementWise",
    "eigengradcam": "EigenGradCAM",
    "fem": "FEM",
    "ablationcam": "AblationCAM",
    "kpcacam": "KPCA_CAM",
}


@pytest.fixture(scope="module")
def grad_cam():
    """pytorch-grad-cam, or a skip of the tests that compare with it only (each peer is imported apart, so
    a missing captum does not skip the pytorch-grad-cam comparisons)."""
    return pytest.importorskip("pytorch_grad_cam", reason="the comparison needs the dev extra (grad-cam)")


@pytest.fixture(scope="module")
def captum_attr():
    return pytest.importorskip("captum.attr", reason="the comparison needs the dev extra (captum)")


def _class_targets(classes):
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    return [ClassifierOutputTarget(c) for c in classes]


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
def test_matches_pytorch_grad_cam(scaled, batch, method, grad_cam):
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection, get_2d_projection_kernel

    classes = [3, 7]
    if method == "ablationcam":  # one forward per channel (512): a smaller image, a 2x2 grid
        batch = batch[..., :64, :64]
    side = batch.shape[-1] // 32
    reference = getattr(grad_cam, REFERENCES[method])(model=scaled, target_layers=[scaled.net.layer4])
    reference.get_target_width_height = lambda _: (side, side)  # compare at the layer's grid, no resize
    expected = reference(batch, targets=_class_targets(classes))
    captured = reference.activations_and_grads
    activations = captured.activations[0].numpy()
    gradients = captured.gradients[0].numpy() if captured.gradients else None
    captured.release()

    ours = mmcam.explain(scaled, batch, classes, layer="net.layer4", method=method)
    got = _minmax(ours.raw[:, 0].numpy())
    if method in ("eigencam", "eigengradcam", "kpcacam"):  # a component's sign is arbitrary, per image
        projection = {
            "eigencam": lambda: get_2d_projection(activations),
            "eigengradcam": lambda: get_2d_projection(gradients * activations),
            "kpcacam": lambda: get_2d_projection_kernel(activations),
        }[method]()
        for b in range(len(got)):
            either = [_minmax(np.maximum(sign * projection[b : b + 1], 0))[0] for sign in (1, -1)]
            assert min(np.abs(got[b] - e).max() for e in either) < 1e-4
    else:
        assert np.abs(got - expected).max() < 1e-4


@pytest.fixture(scope="module")
def biased(scaled):
    """The scaled resnet18 with seeded batch-norm statistics and affine parameters: torchvision starts every
    batch norm as the identity (mean 0, variance 1, gamma 1, beta 0), whose effective bias is 0, and
    FullGrad would see the input-gradient alone."""
    model = copy.deepcopy(scaled)
    generator = torch.Generator().manual_seed(8)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                shape = module.running_mean.shape
                module.running_mean.copy_(torch.randn(shape, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(shape, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(shape, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(shape, generator=generator) * 0.1)
    return model


def test_fullgrad_matches_pytorch_grad_cam(biased, batch, grad_cam):
    """FullGrad at the input's resolution (pytorch-grad-cam ignores the layer and takes every Conv2d and
    BatchNorm2d with a bias). pytorch-grad-cam adds 1e-7 to each channel map's max when it scales it, which
    the x1000 logits make negligible (3e-6 here; 2e-3 without them)."""
    classes, batch = [3, 7], batch[..., :96, :96]
    reference = grad_cam.FullGrad(model=biased, target_layers=[])
    expected = reference(batch, targets=_class_targets(classes))
    reference.activations_and_grads.release()
    ours = mmcam.explain(biased, batch, classes, layer="net.layer4", method="fullgrad")
    assert ours.maps.shape == (2, 1, 96, 96)
    assert np.abs(ours.maps[:, 0].numpy() - expected).max() < 1e-4


@pytest.mark.parametrize("kind", ["logit", "log-probability"])
def test_shapleycam_matches_pytorch_grad_cam(scaled, batch, kind, grad_cam):
    """ShapleyCAM with the target pytorch-grad-cam is given, on the resnet18 without the x1000 (whose
    softmax is one-hot). Above resnet's linear head a logit has no curvature, and the map is Grad-CAM's; a
    log-probability's is not. pytorch-grad-cam scales a map twice (the layer's, then the layers' mean),
    each time adding 1e-7 to its max: the same is done to mmcam's raw map."""
    from mmcam.targets import ClassLogProb

    classes, model = [3, 7], scaled.net
    if kind == "logit":
        ours_target, theirs = classes, _class_targets(classes)
    else:
        ours_target, theirs = ClassLogProb(classes), [lambda o, c=c: o.log_softmax(-1)[c] for c in classes]
    reference = grad_cam.ShapleyCAM(model=model, target_layers=[model.layer4])
    reference.get_target_width_height = lambda _: (5, 5)
    expected = reference(batch, targets=theirs)
    reference.activations_and_grads.release()

    def scaled_twice(method):
        raw = mmcam.explain(model, batch, ours_target, layer="layer4", method=method).raw
        return _minmax(_minmax(raw[:, 0].numpy()))

    assert np.abs(scaled_twice("shapleycam") - expected).max() < 1e-4
    assert (np.abs(scaled_twice("gradcam") - expected).max() < 1e-4) == (kind == "logit")


def test_gradcam_matches_captum(resnet18, images, captum_attr):
    classes = [1, 8]
    expected = captum_attr.LayerGradCam(resnet18, resnet18.layer4).attribute(
        images, target=classes, relu_attributions=True
    )
    ours = mmcam.explain(resnet18, images, classes, layer="layer4")
    torch.testing.assert_close(ours.raw[:, 0], expected[:, 0].detach(), atol=1e-6, rtol=1e-4)


def test_a_layer_over_features_is_refused_where_captum_gives_one_value(captum_attr):
    """Issue 32 item 18, a deliberate difference (docs/python.md, 'What is refused'): on a (B, F) layer
    captum's LayerGradCam has no positions to map, so it returns one value per sample, the sum over features of
    gradient x activation (captum's LayerGradientXActivation per feature); mmcam refuses such inputs in one
    line that says what to take instead, and the model comes back in training mode as it went in."""
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).train()
    features = torch.tensor([[0.5, -1.0, 2.0], [1.0, 0.3, -0.2]])
    one_value = captum_attr.LayerGradCam(mlp, mlp[0]).attribute(features, target=1, relu_attributions=False)
    per_feature = captum_attr.LayerGradientXActivation(mlp, mlp[0]).attribute(features, target=1)
    assert one_value.shape == (2, 1)
    torch.testing.assert_close(one_value[:, 0], per_feature.sum(dim=1))
    with pytest.raises(ValueError, match=r"\(2, 3\) \(B, F\) have no spatial grid.*gradient times"):
        mmcam.explain(mlp, features, 1, layer="0")
    assert mlp.training and all(module.training for module in mlp.modules())


def test_scorecam_matches_pytorch_grad_cam(scaled, monkeypatch, grad_cam):
    """Score-CAM exactly, with one convention of pytorch-grad-cam's brought to ours: it upsamples the
    masks with ``UpsamplingBilinear2d`` (align_corners=True), mmcam with half-pixel centres like every
    other resize in mmcam (the paper says only "upsample"). The model is the seeded resnet18 without the
    x1000 (softmax over x1000 scores would make the weights one-hot)."""
    import torch.nn.functional as F

    class HalfPixelBilinear(nn.Module):
        def __init__(self, size):
            super().__init__()
            self.size = size

        def forward(self, x):
            return F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)

    monkeypatch.setattr(torch.nn, "UpsamplingBilinear2d", HalfPixelBilinear)
    torch.manual_seed(4)
    batch = torch.randn(2, 3, 48, 48)
    classes = [3, 7]
    reference = grad_cam.ScoreCAM(model=scaled.net, target_layers=[scaled.net.layer3])
    reference.get_target_width_height = lambda _: (3, 3)  # compare at the layer's 3x3 grid
    expected = reference(batch, targets=_class_targets(classes))
    reference.activations_and_grads.release()

    ours = mmcam.explain(scaled.net, batch, classes, layer="layer3", method="scorecam")
    assert np.abs(_minmax(ours.raw[:, 0].numpy()) - expected).max() < 1e-4


def _smooth_gradcam_plusplus_on_pytorch_grad_cam(grad_cam, noisy_inputs):
    """Not a peer's method: pytorch-grad-cam has no Smooth Grad-CAM++ (torch-cam's ``SmoothGradCAMpp`` weighs
    the last noisy copy's gradient and sums A G^3 over the grid, a formula of its own). This is the paper's
    formula (arXiv 1908.01224) written in this test on pytorch-grad-cam's Grad-CAM++ machinery (its gradient
    hooks, its per-sample ``.backward()``, its eq. 19) with the derivative moments averaged over
    ``noisy_inputs``: D1, D2, D3 in place of G, G^2, G^3. Its eps is dropped: eq. 19 has none and mmcam
    divides exactly (0 where the gradient vanishes); at layer3 the eps alone moves the map by 3e-4, all
    the rest of the difference is 5e-5."""

    class Reference(grad_cam.GradCAMPlusPlus):
        def get_cam_weights(self, input_tensor, target_layers, targets, activations, grads):
            moments = [0.0, 0.0, 0.0]
            for noisy in noisy_inputs:
                outputs = self.activations_and_grads(noisy)
                self.model.zero_grad()
                sum(target(output) for target, output in zip(targets, outputs)).backward()
                g = self.activations_and_grads.gradients[0].numpy()
                moments = [moments[0] + g, moments[1] + g**2, moments[2] + g**3]
            d1, d2, d3 = (m / len(noisy_inputs) for m in moments)
            sum_activations = activations.sum(axis=(2, 3))[:, :, None, None]
            aij = np.where(d1 != 0, d2 / (2 * d2 + sum_activations * d3), 0)
            return (np.maximum(d1, 0) * aij).sum(axis=(2, 3))

    return Reference


def test_smooth_gradcam_plusplus_matches_the_paper_written_on_pytorch_grad_cam_hooks(scaled, batch, grad_cam):
    """mmcam's noise, drawn here as its docstring states it: a generator seeded 0, 8 copies, std 0.15 x each
    image's value range. At layer3, not layer4: above layer4 the network is linear (pool, fc), so its
    gradient ignores the noise."""
    classes = [3, 7]
    generator = torch.Generator().manual_seed(0)
    span = (batch.amax(dim=(1, 2, 3)) - batch.amin(dim=(1, 2, 3)))[:, None, None, None]
    noisy = [batch + 0.15 * span * torch.randn(batch.shape, generator=generator) for _ in range(8)]
    reference = _smooth_gradcam_plusplus_on_pytorch_grad_cam(grad_cam, noisy)(
        model=scaled, target_layers=[scaled.net.layer3]
    )
    reference.get_target_width_height = lambda _: (10, 10)
    expected = reference(batch, targets=_class_targets(classes))
    reference.activations_and_grads.release()

    ours = mmcam.explain(scaled, batch, classes, layer="net.layer3", method="smooth-gradcam++")
    assert np.abs(_minmax(ours.raw[:, 0].numpy()) - expected).max() < 1e-4
    plain = mmcam.explain(scaled, batch, classes, layer="net.layer3", method="gradcam++")
    assert np.abs(_minmax(plain.raw[:, 0].numpy()) - expected).max() > 1e-2  # the noise matters


def test_signed_nearest_gradcam_matches_captum_layer_gradcam_and_interpolate(resnet18, images, captum_attr):
    """captum's LayerGradCam(relu_attributions=False) and LayerAttribution.interpolate(mode nearest)."""
    classes = [1, 8]
    layer_map = (
        captum_attr.LayerGradCam(resnet18, resnet18.layer4)
        .attribute(images, target=classes, relu_attributions=False)
        .detach()
    )
    upsampled = captum_attr.LayerAttribution.interpolate(layer_map, (96, 96), interpolate_mode="nearest")
    ours = mmcam.explain(resnet18, images, classes, layer="layer4", signed=True, upsampling="nearest")
    assert (ours.raw < 0).any()  # the sign is kept
    torch.testing.assert_close(ours.raw[:, 0], layer_map[:, 0], atol=1e-6, rtol=1e-4)
    scale = upsampled.abs().amax(dim=(-2, -1), keepdim=True)
    torch.testing.assert_close(ours.maps, upsampled / scale, atol=1e-6, rtol=1e-4)


def test_guided_gradcam_matches_captum_per_input_channel(resnet18, images, captum_attr):
    """captum's GuidedGradCam is guided backprop times the nearest-upsampled Grad-CAM per input channel;
    mmcam's is the same product with the guided gradient's L2 norm over channels."""
    classes = [1, 8]
    expected = captum_attr.GuidedGradCam(resnet18, resnet18.layer4).attribute(
        images, target=classes, interpolate_mode="nearest"
    )
    ours = mmcam.explain(
        resnet18, images, classes, layer="layer4", method="guided-gradcam", upsampling="nearest"
    )
    torch.testing.assert_close(ours.raw[:, 0], expected.detach().norm(dim=1), atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_eigen_smooth_matches_pytorch_grad_cam(scaled, batch, method, grad_cam):
    """eigen_smooth=True: the first principal component of the weighted activations, up to its sign."""
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

    classes = [3, 7]
    reference = getattr(grad_cam, REFERENCES[method])(model=scaled, target_layers=[scaled.net.layer4])
    reference.get_target_width_height = lambda _: (5, 5)
    expected = reference(batch, targets=_class_targets(classes), eigen_smooth=True)
    activations = reference.activations_and_grads.activations[0].numpy()
    reference.activations_and_grads.release()
    ours = mmcam.explain(scaled, batch, classes, layer="net.layer4", method=method, eigen_smooth=True)
    weights = ours.weights[:, 0].numpy()[..., None, None]
    flipped = -get_2d_projection(weights * activations)  # pytorch-grad-cam's projection, other sign
    got = _minmax(ours.raw[:, 0].numpy())
    for b in range(len(got)):
        either = [expected[b], _minmax(np.maximum(flipped[b : b + 1], 0))[0]]
        assert min(np.abs(got[b] - e).max() for e in either) < 1e-4
    plain = mmcam.explain(scaled, batch, classes, layer="net.layer4", method=method)
    torch.testing.assert_close(ours.weights, plain.weights)
    with pytest.raises(ValueError, match="eigen_smooth needs a method with channel weights"):
        mmcam.explain(scaled, batch, classes, layer="net.layer4", method="hirescam", eigen_smooth=True)


def test_aug_smooth_matches_pytorch_grad_cam(scaled, batch, grad_cam):
    """aug_smooth=True: the mean of the min-max scaled maps of the image flipped or not and multiplied by
    0.9, 1 and 1.1, the flipped ones flipped back. pytorch-grad-cam is told to keep its maps at the
    layer's grid: the same mean of min-max scaled raw maps equals it to 1e-4; mmcam's maps are that
    mean taken at the input's size."""
    classes, batch = [3, 7], batch[..., :96, :96]  # a 3x3 grid at layer4
    reference = grad_cam.GradCAM(model=scaled, target_layers=[scaled.net.layer4])
    reference.get_target_width_height = lambda _: (3, 3)
    expected = reference(batch, targets=_class_targets(classes), aug_smooth=True)
    reference.activations_and_grads.release()
    ours = mmcam.Explainer(scaled, layer="net.layer4", aug_smooth=True)(batch, classes)
    plain = mmcam.explain(scaled, batch, classes, layer="net.layer4")
    torch.testing.assert_close(ours.scores, plain.scores)
    grids, maps = [], []
    for flip in (False, True):
        for factor in (0.9, 1.0, 1.1):
            image = batch * factor
            part = mmcam.explain(scaled, image.flip(-1) if flip else image, classes, layer="net.layer4")
            grids.append(_minmax((part.raw.flip(-1) if flip else part.raw)[:, 0].numpy()))
            maps.append(part.maps.flip(-1) if flip else part.maps)
    assert np.abs(np.mean(grids, axis=0) - expected).max() < 1e-4
    torch.testing.assert_close(ours.maps, torch.stack(maps).mean(dim=0), rtol=1e-5, atol=1e-6)


def test_similar_class_contrast_is_finer_cam(scaled, batch, grad_cam):
    """Grad-CAM of SimilarClassContrast (each image's predicted class against the 3 classes whose logits
    are nearest) equals pytorch-grad-cam's FinerCAM with its defaults."""
    from mmcam.targets import SimilarClassContrast

    reference = grad_cam.FinerCAM(model=scaled, target_layers=[scaled.net.layer4])
    reference.base_cam.get_target_width_height = lambda _: (5, 5)
    expected = reference(batch)
    reference.base_cam.activations_and_grads.release()
    target = SimilarClassContrast()
    ours = mmcam.explain(scaled, batch, target, layer="net.layer4")
    assert np.abs(_minmax(ours.raw[:, 0].numpy()) - expected).max() < 1e-4
    with torch.no_grad():
        assert target.indices.tolist() == scaled(batch).argmax(dim=1).tolist()


class FullResolution(nn.Module):
    """A small CNN whose explained layer keeps the input's resolution: Score-CAM's masks need no
    upsampling, where torch-cam (min-max scaling at the layer's grid, then upsampling) and mmcam and
    pytorch-grad-cam (upsampling, then scaling) would differ."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.conv = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(
            nn.Conv2d(6, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)
        )

    def forward(self, x):
        return self.head(self.conv(x)) * 10


def test_iscam_matches_torch_cam():
    torchcam = pytest.importorskip("torchcam.methods", reason="the comparison needs the dev extra (torchcam)")
    model = FullResolution().eval()
    images = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(6))
    classes = [1, 3]
    with torchcam.ISCAM(model, target_layer="conv", input_shape=(3, 12, 12)) as extractor:
        scores = model(images)
        (expected,) = extractor(class_idx=classes, scores=scores, normalized=False)
    ours = mmcam.explain(model, images, classes, layer="conv", method="iscam")
    torch.testing.assert_close(ours.raw[:, 0], expected.detach(), rtol=1e-4, atol=1e-6)


def test_sscam_matches_torch_cam_with_the_same_noise():
    """torch-cam draws SS-CAM's noise from the global generator; here it is handed mmcam's seeded
    sequence (the same shapes, in the same order), and the maps agree."""
    torchcam = pytest.importorskip("torchcam.methods", reason="the comparison needs the dev extra (torchcam)")
    model = FullResolution().eval()
    images = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(6))
    classes = [1, 3]
    generator = torch.Generator().manual_seed(0)

    class SameNoise:
        def sample(self, size):
            return torch.randn(size, generator=generator) * 2.0

    with torchcam.SSCAM(model, target_layer="conv", input_shape=(3, 12, 12)) as extractor:
        extractor._distrib = SameNoise()
        scores = model(images)
        (expected,) = extractor(class_idx=classes, scores=scores, normalized=False)
    ours = mmcam.explain(model, images, classes, layer="conv", method="sscam")
    torch.testing.assert_close(ours.raw[:, 0], expected.detach(), rtol=1e-4, atol=1e-6)


def test_legrad_matches_torch_cam_on_the_last_block():
    """torch-cam's LeGrad differentiates each block's own score (the head applied to that block's tokens); for
    the last block, read by the model's own head, that score is the model's and the maps are equal."""
    torchcam = pytest.importorskip("torchcam.methods", reason="the comparison needs the dev extra (torchcam)")
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=3, num_heads=4, hidden_dim=32, mlp_dim=64, num_classes=5
    ).eval()
    nn.init.normal_(model.heads.head.weight)  # torchvision starts the head at zero: every gradient would be 0
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    classes = [1, 3]
    expected = []
    for c in classes:
        with torchcam.LeGrad(
            model,
            [model.encoder.layers[-1]],
            score_projection=lambda tokens: model.heads(model.encoder.ln(tokens)[:, 0]),
        ) as extractor:
            (cam,) = extractor(class_idx=c, scores=model(images), normalized=False)
        expected.append(cam.detach())
    ours = mmcam.explain(model, images, [classes] * 2, layer="encoder.layers.-1.ln_1", method="legrad")
    torch.testing.assert_close(ours.raw, torch.stack(expected, dim=1), rtol=1e-4, atol=1e-6)


def test_factorize_reconstructs_layer4_as_well_as_pytorch_grad_cam(scaled, batch, grad_cam):
    """pytorch-grad-cam's Deep Feature Factorization runs scikit-learn's NMF (coordinate descent from another
    random start), so the factors differ; the reconstruction error of the shifted activations is compared."""
    from pytorch_grad_cam.feature_factorization.deep_feature_factorization import dff

    from mmcam.concepts.dissect import layer_activations

    ours = mmcam.factorize(scaled.net, batch, layer="layer4", concepts=4)
    activations = layer_activations(scaled.net, "layer4", batch).numpy()
    concepts, explanations = dff(activations.copy(), n_components=4)
    channels = activations.transpose(1, 0, 2, 3).reshape(activations.shape[1], -1)  # (C, B h w)
    offset = channels.min(axis=1, keepdims=True)
    factors = explanations.transpose(1, 0, 2, 3).reshape(4, -1)  # (n, B h w)
    theirs = np.linalg.norm(channels - offset - (concepts - offset) @ factors) / np.linalg.norm(
        channels - offset
    )
    assert ours.error <= 1.05 * theirs
