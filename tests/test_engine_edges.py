"""The engine at its edges: shared models, odd layers and outputs, bad targets, batch-mixing models, RNNs."""

import collections
import threading
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

import mmcam
from mmcam.engine import Layout
from tests.model_state import assert_unchanged, snapshot


def _small(seed=1):
    torch.manual_seed(seed)
    return torch.randn(2, 3, 16, 16)


# --- two threads, one model -------------------------------------------------------------------


def _hammer(jobs, calls=200):
    """Run each job ``calls`` times in its own thread; the errors they raised."""
    errors = []

    def loop(job):
        try:
            for _ in range(calls):
                job()
        except Exception as error:  # noqa: BLE001 - reported to the test
            errors.append(error)

    threads = [threading.Thread(target=loop, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_two_threads_on_one_model_get_the_single_thread_maps(cam_net):
    cam_net.train()
    x = _small()
    with torch.no_grad():
        cam_net.eval()
        expected = mmcam.explain(cam_net, x, [0, 1], layer="features").raw
        cam_net.train()
    before = snapshot(cam_net)
    explainer = mmcam.Explainer(cam_net, layer="features")

    def job():
        torch.testing.assert_close(explainer(x, [0, 1]).raw, expected)

    assert _hammer([job, job]) == []
    assert_unchanged(cam_net, before)


def test_a_model_and_its_submodule_from_two_threads_restore_every_flag(cam_net):
    """Thread 1 explains the model, thread 2 its feature block: the counted freeze restores each flag once."""
    cam_net.train()
    x = _small()
    before = snapshot(cam_net)
    whole = mmcam.Explainer(cam_net, layer="features.0")
    part = mmcam.Explainer(cam_net.features, layer="0")
    errors = _hammer(
        [lambda: whole(x, 1), lambda: part(x, lambda out: out.mean(dim=(1, 2, 3)))]
    )
    assert errors == []
    assert_unchanged(cam_net, before)


# --- layer= -------------------------------------------------------------------------------------


@pytest.mark.parametrize("layer", [3, ["layer4"], None, 2.5])
def test_layer_of_the_wrong_type_says_what_to_pass(resnet18, layer):
    with pytest.raises(TypeError, match="layer= takes a submodule of the model, its dotted name"):
        mmcam.Explainer(resnet18, layer=layer)


@pytest.mark.parametrize("layer", ["model", ""])
def test_the_model_itself_is_not_a_layer(resnet18, layer):
    with pytest.raises(ValueError, match="is the model itself"):
        mmcam.Explainer(resnet18, layer=resnet18 if layer == "model" else layer)


# --- targets ------------------------------------------------------------------------------------


def test_negative_class_indices_are_refused_before_any_forward(resnet18, images):
    with pytest.raises(ValueError, match="negative: give output numbers 0..C-1"):
        mmcam.explain(resnet18, images, -1, layer="layer4")
    with pytest.raises(ValueError, match="negative"):
        mmcam.explain(resnet18, images, [[0, -2], [1, 2]], layer="layer4")


class TwoBranches(nn.Module):
    """The score reads only ``used``; ``unused`` runs but no gradient path joins it to the score."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.used = nn.Conv2d(3, 4, 3, padding=1)
        self.unused = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        self.unused(x)
        return self.fc(self.used(x).mean(dim=(2, 3)))


def test_a_layer_the_target_does_not_depend_on_is_one_clear_error():
    net = TwoBranches().eval()
    before = snapshot(net)
    with pytest.raises(ValueError, match="target 'class 1' does not depend on layer 'unused'"):
        mmcam.explain(net, _small(), 1, layer="unused")
    assert_unchanged(net, before)
    # a method without gradients still works there
    assert mmcam.explain(net, _small(), 1, layer="unused", method="eigencam").maps.shape == (2, 1, 16, 16)


def test_a_non_finite_score_raises_naming_the_target(cam_net):
    def log_of_zero(out):
        return torch.log(out[:, 0] * 0)

    with pytest.raises(ValueError, match="target 'log_of_zero' scored inf or NaN"):
        mmcam.explain(cam_net, _small(), [mmcam.ClassScore(1), log_of_zero], layer="features")


def test_a_non_finite_gradient_raises_naming_the_target(cam_net):
    def sqrt_at_zero(out):
        return torch.sqrt(out[:, 0] - out[:, 0].detach())  # value 0, gradient inf

    with pytest.raises(ValueError, match="target 'sqrt_at_zero' has inf or NaN gradients at layer 'features'"):
        mmcam.explain(cam_net, _small(), sqrt_at_zero, layer="features")
    with pytest.raises(ValueError, match="target 'class 1', 'sqrt_at_zero' has inf or NaN gradients"):
        mmcam.explain(cam_net, _small(), [mmcam.ClassScore(1), sqrt_at_zero], layer="features")


# --- layouts ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layer, layout, message",
    [
        ("layer4", "tokens", "not a token sequence"),
        ("layer4", Layout("tokens", prefix=1, grid=(3, 3)), r"expects \(B, L, C\) activations"),
        ("fc", "nhwc", r"expects \(B, h, w, C\) activations, but layer 'fc' gives \(2, 10\)"),
        ("fc", "nchw", r"expects \(B, C, h, w\) activations, but layer 'fc' gives \(2, 10\)"),
    ],
)
def test_an_explicit_layout_that_does_not_fit_says_so(resnet18, images, layer, layout, message):
    with pytest.raises(ValueError, match=message):
        mmcam.explain(resnet18, images, 1, layer=layer, layout=layout)


class Lambda(nn.Module):
    def __init__(self, function):
        super().__init__()
        self.function = function

    def forward(self, x):
        return self.function(x)


class Ambiguous(nn.Module):
    """conv (NCHW) -> ``view`` re-reads the same values in another layout -> linear head."""

    def __init__(self, channels, stride, reread, cells):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, channels, stride, stride=stride)
        self.view = Lambda(reread)
        self.fc = nn.Linear(channels * cells, 2)

    def forward(self, x):
        return self.fc(torch.relu(self.view(self.conv(x))).flatten(1))


AMBIGUOUS = {
    "nhwc (B, 7, 7, 8)": (
        Ambiguous(8, 32, lambda a: a.permute(0, 2, 3, 1), 49),
        "layout='nhwc'",
        "nhwc",
    ),
    "channels-first tokens (B, 256, 196)": (
        Ambiguous(256, 16, lambda a: a.flatten(2), 196),
        "layout=Layout('tokens', prefix=0, grid=(14, 14), features_first=True)",
        Layout("tokens", prefix=0, grid=(14, 14), features_first=True),
    ),
}


@pytest.mark.parametrize("case", list(AMBIGUOUS))
def test_an_ambiguous_inferred_layout_warns_and_names_the_fix(case):
    net, fix, layout = AMBIGUOUS[case]
    net.eval()
    x = torch.randn(2, 3, 224, 224)
    with pytest.warns(UserWarning, match="pass layout= explicitly") as record:
        mmcam.explain(net, x, 1, layer="view")
    assert fix in str(record[0].message)
    assert record[0].filename == __file__  # the warning points at the caller's line
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fixed = mmcam.explain(net, x, 1, layer="view", layout=layout)
    torch.testing.assert_close(fixed.raw, mmcam.explain(net, x, 1, layer="conv", layout="nchw").raw)
