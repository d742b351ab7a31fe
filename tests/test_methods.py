"""Each CAM method against its published formula, written out with loops on small hand-made tensors."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import mmcam
from mmcam.engine.methods import METHODS, get_method
from mmcam.engine.methods.channel import RandomCAM

B, K, C, H, W = 2, 3, 4, 3, 5


@pytest.fixture
def ctx():
    generator = torch.Generator().manual_seed(0)
    activations = torch.relu(torch.randn(B, C, H, W, generator=generator))
    gradients = torch.randn(B, K, C, H, W, generator=generator)
    curvature = torch.randn(B, K, C, H, W, generator=generator)
    return SimpleNamespace(
        activations=activations,
        gradients=gradients,
        curvature=curvature,
        target_count=K,
        image_size=(H, W),
        refuse_rows=lambda what: None,  # a row per image
    )


def _relu(x):
    return max(x, 0.0)


def _weighted(weights, a):
    """ReLU(sum_c w[c] A[c]) with explicit loops."""
    out = np.zeros((H, W))
    for i in range(H):
        for j in range(W):
            out[i, j] = _relu(sum(weights[c] * a[c, i, j] for c in range(C)))
    return out


def _expected(method, a, g, hvp):
    """One sample, one target: a (C, H, W), g (C, H, W), hvp = H A (C, H, W) as numpy."""
    if method in ("gradcam", "counterfactual"):
        sign = 1 if method == "gradcam" else -1
        return _weighted([sign * g[c].sum() / (H * W) for c in range(C)], a)
    if method == "shapleycam":
        return _weighted([(g[c] - 0.5 * hvp[c]).sum() / (H * W) for c in range(C)], a)
    if method == "gradcam++":
        weights = []
        for c in range(C):
            total = 0.0
            for i in range(H):
                for j in range(W):
                    gij = g[c, i, j]
                    alpha = gij**2 / (2 * gij**2 + a[c].sum() * gij**3) if gij != 0 else 0.0
                    total += alpha * _relu(gij)
            weights.append(total)
        return _weighted(weights, a)
    if method == "xgradcam":
        return _weighted([(a[c] * g[c]).sum() / a[c].sum() for c in range(C)], a)
    if method == "hirescam":
        return np.maximum((g * a).sum(0), 0)
    if method == "layercam":
        return np.maximum((np.maximum(g, 0) * a).sum(0), 0)
    if method == "normgrad":
        return np.sqrt((a**2).sum(0)) * np.sqrt((g**2).sum(0))
    if method == "gradnorm":
        return np.sqrt((g**2).sum(0))
    if method == "gradcam-elementwise":
        return np.maximum(g * a, 0).sum(0)
    raise AssertionError(method)


@pytest.mark.parametrize(
    "method",
    [
        "gradcam",
        "counterfactual",
        "gradcam++",
        "shapleycam",
        "xgradcam",
        "hirescam",
        "layercam",
        "gradcam-elementwise",
        "normgrad",
        "gradnorm",
    ],
)
def test_formula(ctx, method):
    raw = get_method(method)(ctx).raw
    assert raw.shape == (B, K, H, W)
    for b in range(B):
        for k in range(K):
            expected = _expected(
                method,
                ctx.activations[b].double().numpy(),
                ctx.gradients[b, k].double().numpy(),
                ctx.curvature[b, k].double().numpy(),
            )
            np.testing.assert_allclose(raw[b, k].numpy(), expected, rtol=1e-4, atol=1e-6)


def test_eigencam_is_first_component_with_positive_sign(ctx):
    raw = get_method("eigencam")(ctx).raw
    for b in range(B):
        flat = ctx.activations[b].reshape(C, -1).T.double().numpy()
        centred = flat - flat.mean(0)
        component = np.linalg.svd(centred)[2][0]
        projection = centred @ component
        if np.corrcoef(projection, flat.sum(1))[0, 1] < 0:
            projection = -projection
        for k in range(K):
            np.testing.assert_allclose(raw[b, k].reshape(-1).numpy(), np.maximum(projection, 0), atol=1e-5)


def _first_component(x, reference):
    """Loops-free numpy: x (C, H, W) projected on its centred first principal component, signed to
    correlate with ``reference`` (H, W)."""
    flat = x.reshape(C, -1).T
    centred = flat - flat.mean(0)
    projection = centred @ np.linalg.svd(centred)[2][0]
    return -projection if np.corrcoef(projection, reference.reshape(-1))[0, 1] < 0 else projection


def test_eigengradcam_is_the_first_component_of_gradient_times_activation(ctx):
    raw = get_method("eigengradcam")(ctx).raw
    for b in range(B):
        for k in range(K):
            product = (ctx.gradients[b, k] * ctx.activations[b]).double().numpy()
            expected = np.maximum(_first_component(product, product.sum(0)), 0)
            np.testing.assert_allclose(raw[b, k].reshape(-1).numpy(), expected, atol=1e-5)


def test_kpcacam_is_the_first_kernel_component_with_sklearn(ctx):
    """The first kernel principal component of the centred cells, as scikit-learn's KernelPCA computes it
    (sigmoid kernel, gamma = 1/C, coef0 = 1), signed to agree with the sum of the activations."""
    decomposition = pytest.importorskip("sklearn.decomposition", reason="needs scikit-learn (dev extra)")
    raw = get_method("kpcacam")(ctx).raw
    for b in range(B):
        flat = ctx.activations[b].reshape(C, -1).T.double().numpy()
        centred = flat - flat.mean(0)
        projection = decomposition.KernelPCA(n_components=1, kernel="sigmoid").fit_transform(centred)[:, 0]
        if np.corrcoef(projection, flat.sum(1))[0, 1] < 0:
            projection = -projection
        for k in range(K):
            np.testing.assert_allclose(raw[b, k].reshape(-1).numpy(), np.maximum(projection, 0), atol=1e-5)


def test_fem_weights_are_the_share_of_cells_above_mean_plus_two_deviations(ctx):
    result = get_method("fem")(ctx)
    for b in range(B):
        a = ctx.activations[b].double().numpy()
        weights = [float((a[c] > a[c].mean() + 2 * a[c].std()).mean()) for c in range(C)]
        for k in range(K):
            np.testing.assert_allclose(result.weights[b, k].numpy(), weights, atol=1e-7)
            np.testing.assert_allclose(result.raw[b, k].numpy(), _weighted(weights, a), rtol=1e-5, atol=1e-6)


def test_randomcam_weights_are_seeded_and_uniform_in_minus_one_one(ctx):
    first, again = get_method("randomcam")(ctx), get_method("randomcam")(ctx)
    torch.testing.assert_close(first.weights, again.weights)
    assert not torch.equal(first.weights, RandomCAM(seed=1)(ctx).weights)
    wide = SimpleNamespace(activations=torch.rand(1, 20_000, 1, 1), target_count=2)
    drawn = get_method("randomcam")(wide).weights.flatten()  # 40 000 weights
    assert -1 <= drawn.min() and drawn.max() <= 1
    shares = torch.histc(drawn, bins=10, min=-1, max=1) / drawn.numel()
    assert (shares - 0.1).abs().max() < 0.01  # each tenth of [-1, 1] holds a tenth of them
    assert not torch.equal(*get_method("randomcam")(wide).weights[0])  # each target its own
    for b in range(B):
        for k in range(K):
            expected = _weighted(first.weights[b, k].double().numpy(), ctx.activations[b].double().numpy())
            np.testing.assert_allclose(first.raw[b, k].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_ablationcam_weights_are_the_relative_score_lost_without_each_channel(ctx):
    ctx.scores = torch.randn(B, K)
    ablated = torch.randn(B, C, K)
    ctx.ablated_scores = lambda batch_size: ablated
    result = get_method("ablationcam")(ctx)
    for b in range(B):
        for k in range(K):
            y = float(ctx.scores[b, k])
            weights = [(y - float(ablated[b, c, k])) / y for c in range(C)]
            np.testing.assert_allclose(result.weights[b, k].numpy(), weights, rtol=1e-5)
            expected = _weighted(weights, ctx.activations[b].double().numpy())
            np.testing.assert_allclose(result.raw[b, k].numpy(), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("extra_input", [False, True], ids=["image only", "image and another input"])
def test_ablated_scores_zero_one_channel_of_the_layer_per_copy(extra_input):
    """On a model whose score is the sum of the layer's channels (plus another input, if given), zeroing
    channel c loses exactly its sum: with the image alone the layer's output is copied, otherwise the
    inputs are."""
    from mmcam.engine.context import CamContext
    from mmcam.engine.precision import Precision
    from mmcam.targets import FunctionTarget

    model = nn.Sequential(nn.Conv2d(3, 5, 1), nn.ReLU()).eval()
    image = torch.rand(2, 3, 4, 6, generator=torch.Generator().manual_seed(3))
    inputs = {"pixel_values": image, **({"shift": torch.tensor([[1.0], [-2.0]])} if extra_input else {})}

    def forward(m, given):
        sums = m(given["pixel_values"]).sum(dim=(2, 3))
        return sums + given["shift"] if "shift" in given else sums

    target = FunctionTarget(lambda output: output.sum(dim=1))
    ctx = CamContext(
        model, forward, inputs, "pixel_values", "1", "auto", [target], 4, Precision.current("cpu")
    )
    with torch.no_grad():
        channel_sums = model(image).sum(dim=(2, 3))  # (B, C)
    ablated = ctx.ablated_scores(batch_size=4)  # 2 copies of the batch a forward: 3 forwards for 5 channels
    expected = channel_sums.sum(dim=1, keepdim=True) - channel_sums
    if extra_input:
        expected = expected + 5 * inputs["shift"]
    torch.testing.assert_close(ablated[..., 0], expected, rtol=1e-5, atol=1e-5)


class _TwoLayers(nn.Module):
    """conv (3 -> 6, stride 2) -> ReLU, the explained layer ``layer``; then a nonlinear head to 3 scores,
    so gradients at the layer change with the input."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.layer = nn.Sequential(nn.Conv2d(3, 6, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Sequential(
            nn.Conv2d(6, 5, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(5 * 4 * 4, 3)
        )
        with torch.no_grad():
            self.head[0].weight.mul_(8)  # the tanh saturates in places: gradients vary with the input

    def forward(self, x):
        return self.head(self.layer(x)) * 3


def test_scorecam_weights_are_softmax_of_masked_scores():
    """Score-CAM written out: each channel's mask (upsampled, min-max scaled) applied to the image and
    scored by a forward of its own, the softmax over the channels of those scores, the weighted sum."""
    import math

    import torch.nn.functional as F

    model = _TwoLayers().eval()
    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    classes = [0, 2]
    ours = mmcam.explain(model, images, [classes] * 2, layer="layer", method="scorecam")
    with torch.no_grad():
        activations = model.layer(images)
        for b in range(2):
            for k, cls in enumerate(classes):
                scores = []
                for c in range(6):
                    mask = F.interpolate(activations[b : b + 1, c : c + 1], size=(8, 8), mode="bilinear")[
                        0, 0
                    ]
                    span = mask.max() - mask.min()  # a constant channel masks everything out
                    mask = (mask - mask.min()) / span if span > 0 else torch.zeros_like(mask)
                    scores.append(float(model(images[b : b + 1] * mask)[0, cls]))
                total = sum(math.exp(score) for score in scores)
                weights = [math.exp(score) / total for score in scores]
                np.testing.assert_allclose(ours.weights[b, k].numpy(), weights, rtol=1e-5)
                expected = torch.relu(sum(w * activations[b, c] for c, w in enumerate(weights)))
                torch.testing.assert_close(ours.raw[b, k], expected, rtol=1e-5, atol=1e-6)


def test_smooth_gradcam_plusplus_uses_averaged_moments():
    """Smooth Grad-CAM++ written out: the noisy copies drawn as the docstring states (a generator seeded 0,
    8 copies, std 0.15 x the image's range), each copy's gradient at the layer from a backward of its own
    per target, the moments averaged, eq. 19 with loops on the clean activations."""
    model = _TwoLayers().eval()
    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    classes = [0, 2]
    ours = mmcam.explain(model, images, [classes] * 2, layer="layer", method="smooth-gradcam++")
    generator = torch.Generator().manual_seed(0)
    span = (images.amax(dim=(1, 2, 3)) - images.amin(dim=(1, 2, 3)))[:, None, None, None]
    noisy = [images + 0.15 * span * torch.randn(images.shape, generator=generator) for _ in range(8)]
    clean = model.layer(images).detach().double()
    for b in range(2):
        a = clean[b].numpy()
        for k, cls in enumerate(classes):
            moments = [np.zeros_like(a) for _ in range(3)]
            for copy in noisy:
                layer = model.layer(copy[b : b + 1]).detach().requires_grad_(True)
                (g,) = torch.autograd.grad(model.head(layer)[0, cls] * 3, layer)
                g = g[0].double().numpy()
                moments = [moments[0] + g, moments[1] + g**2, moments[2] + g**3]
            d1, d2, d3 = (m / 8 for m in moments)
            weights = []
            for c in range(6):
                total = 0.0
                for i in range(4):
                    for j in range(4):
                        denominator = 2 * d2[c, i, j] + a[c].sum() * d3[c, i, j]
                        alpha = d2[c, i, j] / denominator if denominator != 0 else 0.0
                        total += alpha * _relu(d1[c, i, j])
                weights.append(total)
            np.testing.assert_allclose(ours.weights[b, k].numpy(), weights, rtol=1e-4, atol=1e-7)
            expected = np.maximum(sum(w * a[c] for c, w in enumerate(weights)), 0)
            np.testing.assert_allclose(ours.raw[b, k].numpy(), expected, rtol=1e-4, atol=1e-6)
    plain = mmcam.explain(model, images, [classes] * 2, layer="layer", method="gradcam++")
    assert (plain.weights - ours.weights).abs().max() > 1e-3  # the noise matters


def test_method_names_are_forgiving_and_unknown_ones_list_the_valid():
    assert get_method("GradCAMPlusPlus").name == "gradcam++"
    assert get_method("grad_cam").name == "gradcam"
    with pytest.raises(ValueError, match="gradcam, counterfactual"):
        get_method("gradcam+++")
    assert len(METHODS) == 28


def test_gradcam_equals_cam_up_to_positive_scale(cam_net, images):
    """For conv -> GAP -> linear, alpha_kc = W_kc / (hw), so Grad-CAM = ReLU(CAM) / (hw)."""
    explanation = mmcam.explain(cam_net, images, [[0, 1, 2, 3]] * 2, layer="features")
    features = cam_net.features(images)
    cam = torch.einsum("kc,bchw->bkhw", cam_net.fc.weight, features)
    hw = features.shape[-1] * features.shape[-2]
    torch.testing.assert_close(explanation.raw * hw, torch.relu(cam), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(explanation.weights, cam_net.fc.weight.expand(2, 4, 6) / hw)


class OnePixelNet(nn.Module):
    """x (1, 1, 2, 2) -> 1x1 conv to 2 channels -> ReLU -> flatten -> linear to 1 score."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(8, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -2.0]).reshape(2, 1, 1, 1))
            self.fc.weight.copy_(torch.tensor([[1.0, -3.0, 2.0, 0.5, -1.0, 4.0, 2.0, -2.0]]))

    def forward(self, x):
        return self.fc(self.relu(self.conv(x)).flatten(1))


def test_guided_backprop_keeps_positive_gradients_through_active_relus():
    net = OnePixelNet().eval()
    x = torch.tensor([[[[1.0, -1.0], [2.0, -0.5]]]])
    explanation = mmcam.explain(net, x, 0, layer="conv", method="guided-backprop")
    conv = net.conv.weight.flatten().tolist()
    fc = net.fc.weight.reshape(2, 4).tolist()
    pixels = x.flatten().tolist()
    expected = []
    for p, value in enumerate(pixels):
        total = 0.0
        for c in range(2):
            active = conv[c] * value > 0
            total += conv[c] * active * max(fc[c][p], 0.0)
        expected.append(abs(total))
    torch.testing.assert_close(explanation.raw.flatten(), torch.tensor(expected))
    plain = torch.autograd.functional.jacobian(net, x).flatten().abs()
    assert not torch.allclose(plain, explanation.raw.flatten())
    assert all(not m._forward_hooks for m in net.modules())


def test_guided_gradcam_is_guided_backprop_times_upsampled_gradcam(cam_net, images):
    guided = mmcam.explain(cam_net, images, 1, layer="features", method="guided-backprop").raw
    cam = mmcam.explain(cam_net, images, 1, layer="features", method="gradcam").raw
    combined = mmcam.explain(cam_net, images, 1, layer="features", method="guided-gradcam").raw
    torch.testing.assert_close(combined, guided * cam)


class _LinearScores(nn.Module):
    """Two scores linear in the image: a random weighting of a 1x1 conv's output, and the mean red
    value inside the box rows 4-8, columns 16-22 (the only region it reads)."""

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(1)
        self.conv = nn.Conv2d(3, 3, 1)
        self.register_buffer("weights", torch.randn(3, 20, 28, generator=generator))

    def forward(self, x):
        h = self.conv(x)
        box = x[:, 0, 4:9, 16:23].mean(dim=(1, 2)) + 0 * h.sum(dim=(1, 2, 3))
        return torch.stack([(h * self.weights).sum(dim=(1, 2, 3)), box], dim=1)


def test_perturbation_is_half_the_squared_score_change_under_a_blurred_disc():
    """S_k(i, j) = 1/2 (y_k(I) - y_k(I (1 - M_ij) + blur(I) M_ij))^2, written out for a few points; the
    score that reads one box alone peaks inside it."""
    from torchvision.transforms.functional import gaussian_blur

    model = _LinearScores().eval()
    image = torch.rand(1, 3, 20, 28, generator=torch.Generator().manual_seed(2))
    explanation = mmcam.explain(model, image, [[0, 1]], layer="conv", method="perturbation")
    scale = 20 / 84
    sigma, blur_sigma = 5 * scale, 3 * scale
    assert explanation.raw.shape == (1, 2, 20, 28)  # stride round(5 * scale) = 1: one point per pixel
    kernel = 2 * int(np.ceil(3 * blur_sigma)) + 1
    blurred = gaussian_blur(image, [kernel, kernel], [blur_sigma, blur_sigma])
    yy, xx = torch.meshgrid(torch.arange(20.0), torch.arange(28.0), indexing="ij")
    with torch.no_grad():
        clean = model(image)[0]
        for i, j in [(0, 0), (6, 19), (13, 5)]:
            disc = torch.exp(-((yy - (i + 0.5)) ** 2 + (xx - (j + 0.5)) ** 2) / (2 * sigma**2))
            changed = model(image * (1 - disc) + blurred * disc)[0]
            torch.testing.assert_close(
                explanation.raw[0, :, i, j], 0.5 * (clean - changed) ** 2, rtol=1e-4, atol=1e-7
            )
    planted = torch.zeros(1, 3, 20, 28)
    planted[:, :, 5:8, 18:21] = 1.0  # a bright square inside the box the second score reads
    planted[:, :, 12:15, 3:6] = 1.0  # and one outside it
    explanation = mmcam.explain(model, planted, [[1]], layer="conv", method="perturbation")
    row, column = divmod(int(explanation.raw[0, 0].argmax()), 28)
    assert 5 <= row <= 7 and 18 <= column <= 20


def test_curvature_is_the_hessian_of_each_target_times_the_activation(cam_net, images):
    """H_k A of K log-probability targets, from one batched double backward (in chunks of 2), equals
    torch's Hessian-vector product of each target alone, the head above the layer a function of A."""
    from mmcam.engine.context import CamContext
    from mmcam.engine.precision import Precision
    from mmcam.targets import ClassLogProb

    classes, images = (0, 2, 3), images[..., :8, :8]  # few cells: the mean above them keeps H A large
    ctx = CamContext(
        cam_net,
        lambda model, inputs: model(inputs["pixel_values"]),
        {"pixel_values": images},
        "pixel_values",
        "features",
        "auto",
        [ClassLogProb(c) for c in classes],
        2,
        Precision.current("cpu"),
        second_order=True,
    )
    activations = cam_net.features(images).detach()

    def log_probabilities(a):
        return cam_net.fc(cam_net.pool(a).flatten(1)).log_softmax(dim=1)

    for k, c in enumerate(classes):
        _, expected = torch.autograd.functional.hvp(
            lambda a, c=c: log_probabilities(a)[:, c].sum(), activations, activations
        )
        torch.testing.assert_close(ctx.curvature[:, k], expected, rtol=1e-4, atol=1e-7)
    assert ctx.curvature.abs().amax() > 0.01 * ctx.gradients.abs().amax()  # not negligible next to G


def test_shapleycam_is_gradcam_for_logits_above_a_linear_head_only(cam_net, images):
    """Above a linear head a logit has no curvature; a log-probability has."""
    from mmcam.targets import ClassLogProb

    for targets, same in (([[0, 2]] * 2, True), ([ClassLogProb(0), ClassLogProb(2)], False)):
        shapley, gradcam = (
            mmcam.explain(cam_net, images, targets, layer="features", method=method).raw
            for method in ("shapleycam", "gradcam")
        )
        assert torch.allclose(shapley, gradcam, rtol=1e-4, atol=1e-6) == same


class BiasNet(nn.Module):
    """conv -> batch norm (seeded statistics) -> in-place ReLU -> strided conv -> ReLU -> mean -> linear."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(4, 5, 3, stride=2, padding=1)
        self.fc = nn.Linear(5, 3)
        with torch.no_grad():
            self.bn.weight.uniform_(0.5, 1.5)
            self.bn.bias.uniform_(-0.5, 0.5)
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 1.5)
            self.bn.bias[0] = 0  # its effective bias is not: a channel that beta alone would drop

    def forward(self, x):
        return self.fc(torch.relu(self.conv2(self.relu(self.bn(self.conv1(x))))).mean(dim=(2, 3)))


def _psi(part, size):
    """FullGrad's post-processing, written out: each channel of |part| (C, h, w) min-max scaled on its own
    grid, upsampled to ``size`` (bilinear, half-pixel centres), and the channels summed."""
    import torch.nn.functional as F

    total = torch.zeros(size, dtype=torch.float64)
    for channel in part.abs().double():
        span = channel.max() - channel.min()
        scaled = (channel - channel.min()) / span if span > 0 else torch.zeros_like(channel)
        total += F.interpolate(scaled[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
    return total


def test_fullgrad_sums_the_scaled_input_and_bias_gradients():
    """L_k = psi(x dy_k/dx) + sum_l psi(b_l dy_k/dz_l) over conv1, the batch norm (its effective bias
    beta - mu gamma / sqrt(var + eps)) and conv2 (a 4x5 grid, upsampled to the 8x10 input), each target
    differentiated on its own."""
    net = BiasNet().eval()
    images = torch.rand(2, 3, 8, 10, generator=torch.Generator().manual_seed(4))
    classes = (0, 2)
    explanation = mmcam.explain(net, images, [list(classes)] * 2, layer="conv2", method="fullgrad")
    bn = net.bn
    biases = [
        net.conv1.bias,
        bn.bias - bn.running_mean * bn.weight / (bn.running_var + bn.eps).sqrt(),
        net.conv2.bias,
    ]
    for b in range(2):
        x = images[b].clone().requires_grad_(True)
        z1 = net.conv1(x[None])
        z2 = net.bn(z1)
        z3 = net.conv2(torch.relu(z2))
        y = net.fc(torch.relu(z3).mean(dim=(2, 3)))[0]
        for k, c in enumerate(classes):
            gx, *gz = torch.autograd.grad(y[c], [x, z1, z2, z3], retain_graph=True)
            expected = _psi(x * gx, (8, 10))
            for bias, g in zip(biases, gz):
                expected += _psi(bias[:, None, None] * g[0], (8, 10))
            torch.testing.assert_close(explanation.raw[b, k].double(), expected, rtol=1e-4, atol=1e-5)


class Binarized(nn.Module):
    """A model that thresholds its input: no gradient reaches the image."""

    def __init__(self):
        super().__init__()
        self.net = BiasNet()

    def forward(self, x):
        return self.net((x > 0.5).to(x.dtype))


def test_fullgrad_errors_say_what_to_do_and_leave_the_model_as_it_was():
    from tests.model_state import assert_unchanged, snapshot

    calls = []

    def fails_on_fullgrads_forward(output):  # the first forward captures the layer, the second is FullGrad's
        calls.append(output)
        if len(calls) == 2:
            raise RuntimeError("induced failure")
        return output[:, 0]

    no_bias = nn.Sequential(
        nn.Conv2d(3, 16, 3, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 6 * 8, 2)
    )
    cases = [
        (no_bias, "0", 0, ValueError, "has no Conv2d or BatchNorm2d with a bias: use another method"),
        (Binarized(), "net.conv2", 0, ValueError, "no gradient path joins them"),
        (BiasNet(), "conv2", fails_on_fullgrads_forward, RuntimeError, "induced failure"),
    ]
    images = torch.rand(2, 3, 8, 10)
    for model, layer, target, error, message in cases:
        model.train()
        next(model.parameters()).requires_grad_(False)
        before = snapshot(model)
        with pytest.raises(error, match=message):
            mmcam.explain(model, images, target, layer=layer, method="fullgrad")
        assert_unchanged(model, before)
    assert len(calls) == 2


class FusedAttention(nn.Module):
    """conv -> tokens -> torch's scaled-dot-product attention, on contiguous CPU tensors its flash kernel,
    which has no second derivative."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 4, stride=4)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        tokens = self.conv(x).flatten(2).transpose(1, 2)[:, None].contiguous()  # (B, heads, L, D)
        attended = nn.functional.scaled_dot_product_attention(tokens, tokens, tokens)
        return self.fc(attended.mean(dim=(1, 2)))


def test_shapleycam_names_an_operation_without_a_second_derivative():
    from mmcam.targets import ClassLogProb

    with pytest.raises(
        ValueError, match="above layer 'conv' has no second derivative .* attn_implementation='eager'"
    ):
        mmcam.explain(
            FusedAttention().eval(),
            torch.rand(2, 3, 16, 16),
            ClassLogProb(0),
            layer="conv",
            method="shapleycam",
        )


USES = {  # a capability -> what of the CamContext a method that declares it reads
    "needs_gradients": {
        "gradients",
        "curvature",
        "attention_gradients",
        "guided_input_gradients",
        "full_gradients",
        "noisy_gradient_moments",
    },
    "second_order": {"curvature"},
    "reads_attention": {"attention_gradients"},
    "perturbation": {"masked_scores", "ablated_scores"},
}


@pytest.mark.parametrize("name", list(METHODS))
def test_each_method_declares_what_it_does(name, monkeypatch):
    """The declared capabilities are what the method does: it reads the gradients (or the curvature, the
    attention, the masked or ablated scores) of the context if and only if it says so, and returns channel
    weights if and only if it declares them. On a small CNN, or a small ViT for the attention methods."""
    from mmcam.engine import explainer
    from mmcam.engine.context import CamContext

    used = set()

    class Watched(CamContext):
        def __getattribute__(self, attribute):
            if any(attribute in names for names in USES.values()):
                used.add(attribute)
            return super().__getattribute__(attribute)

    monkeypatch.setattr(explainer, "CamContext", Watched)
    method = METHODS[name]
    torch.manual_seed(0)
    if method.reads_attention:
        model = torchvision.models.VisionTransformer(
            image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=4
        ).eval()
        nn.init.normal_(model.heads.head.weight)
        layer = "encoder.layers.0.ln_1"
    else:
        from tests.conftest import ConvPoolLinear

        model, layer = ConvPoolLinear().eval(), "features"
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    explanation = mmcam.explain(model, images, [[0, 1]] * 2, layer=layer, method=name)
    assert (explanation.weights is not None) == method.channel_weights
    for capability, names in USES.items():
        assert bool(used & names) == getattr(method, capability), (capability, used)


def test_capability_lists_are_derived_from_the_classes():
    from mmcam.engine.methods import capable

    assert {"fem", "randomcam", "gradcam", "guided-gradcam"} <= set(capable("channel_weights"))
    assert "hirescam" not in capable("channel_weights")
    assert capable("reads_attention") == ("attention-relevance", "legrad")
    with pytest.raises(ValueError, match="unknown capability"):
        capable("speed")


def test_guided_gradcam_eigen_smooths_its_gradcam_factor(cam_net, images):
    """--eigen-smooth with guided-gradcam: the eigen-smoothed Grad-CAM map, upsampled, times guided backprop
    (it ended in a RuntimeError of sizes before)."""
    guided = mmcam.explain(cam_net, images, 1, layer="features", method="guided-backprop").raw
    cam = mmcam.explain(cam_net, images, 1, layer="features", method="gradcam", eigen_smooth=True).raw
    combined = mmcam.explain(
        cam_net, images, 1, layer="features", method="guided-gradcam", eigen_smooth=True
    ).raw
    torch.testing.assert_close(combined, guided * cam)
    plain = mmcam.explain(cam_net, images, 1, layer="features", method="guided-gradcam").raw
    assert (plain - combined).abs().max() > 0.1 * plain.abs().max()  # the smoothing shows


def test_eigen_smooth_without_channel_weights_is_refused_at_once(cam_net):
    with pytest.raises(
        ValueError, match="eigen_smooth needs a method with channel weights, not hirescam: one of"
    ):
        mmcam.Explainer(cam_net, layer="features", method="hirescam", eigen_smooth=True)


def test_the_method_page_lists_every_method_as_its_class_declares_it():
    """docs/methods.md's table is what docs/make_methods.py writes from the classes: a method added without
    its row, or a capability changed without the page, fails here (run the script)."""
    import runpy
    from pathlib import Path

    docs = Path(__file__).resolve().parents[1] / "docs"
    script = runpy.run_path(str(docs / "make_methods.py"))
    page = (docs / "methods.md").read_text()
    assert script["written"](page) == page, "run python docs/make_methods.py"
    assert all(f"| `{name}` |" in page for name in METHODS)
