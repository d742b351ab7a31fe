"""The engine at its edges: shared models, odd layers and outputs, bad targets, batch-mixing models, RNNs."""

import collections
import copy
import threading
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

import mmcam
from mmcam.engine import Layout
from mmcam.engine.methods import METHODS
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
    errors = _hammer([lambda: whole(x, 1), lambda: part(x, lambda out: out.mean(dim=(1, 2, 3)))])
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

    with pytest.raises(
        ValueError, match="target 'sqrt_at_zero' has inf or NaN gradients at layer 'features'"
    ):
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
    "nhwc (B, 7, 7, 8)": lambda: (
        Ambiguous(8, 32, lambda a: a.permute(0, 2, 3, 1), 49),
        "layout='nhwc'",
        "nhwc",
    ),
    "channels-first tokens (B, 256, 196)": lambda: (
        Ambiguous(256, 16, lambda a: a.flatten(2), 196),
        "layout=Layout('tokens', prefix=0, grid=(14, 14), features_first=True)",
        Layout("tokens", prefix=0, grid=(14, 14), features_first=True),
    ),
}


@pytest.mark.parametrize("case", list(AMBIGUOUS))
def test_an_ambiguous_inferred_layout_warns_and_names_the_fix(case):
    net, fix, layout = AMBIGUOUS[case]()
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


# --- layer outputs, checkpointing, batch-mixing models, RNNs -------------------------------------

Pair = collections.namedtuple("Pair", ["features", "extra"])


class StructuredOutputs(nn.Module):
    """A conv block whose output is a namedtuple or a Hugging Face ModelOutput, then a linear head."""

    def __init__(self, kind):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.block = Lambda(self._wrap)
        self.kind = kind
        self.fc = nn.Linear(6, 3)

    def _wrap(self, x):
        features = torch.relu(self.conv(x))
        if self.kind == "namedtuple":
            return Pair(features, features.mean())
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        return BaseModelOutputWithPooling(last_hidden_state=features, pooler_output=features.mean(dim=(2, 3)))

    def forward(self, x):
        out = self.block(x)
        features = out.features if self.kind == "namedtuple" else out.last_hidden_state
        return self.fc(features.mean(dim=(2, 3)))


@pytest.mark.parametrize("kind", ["namedtuple", "modeloutput"])
def test_a_layer_returning_a_namedtuple_or_model_output_is_explained_at_its_first_tensor(kind):
    net = StructuredOutputs(kind).eval()
    x = _small()
    got = mmcam.explain(net, x, [[0, 2]] * 2, layer="block")
    features = torch.relu(net.conv(x))
    weights = net.fc.weight[[0, 2]] / features[0, 0].numel()
    expected = torch.relu(torch.einsum("kc,bchw->bkhw", weights, features))
    torch.testing.assert_close(got.raw, expected.detach(), rtol=1e-4, atol=1e-6)


class Checkpointed(nn.Module):
    """conv -> head, the head (or the conv) run under torch.utils.checkpoint."""

    def __init__(self, where, reentrant):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.head = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))
        self.where, self.reentrant = where, reentrant

    def forward(self, x):
        if self.where == "above":
            return checkpoint(self.head, self.conv(x), use_reentrant=self.reentrant)
        return self.head(checkpoint(self.conv, x, use_reentrant=self.reentrant))


def test_reentrant_checkpointing_above_the_layer_is_named():
    net = Checkpointed("above", reentrant=True).eval()
    before = snapshot(net)
    with pytest.raises(ValueError, match="reentrant gradient checkpointing above layer 'conv'"):
        mmcam.explain(net, _small(), 1, layer="conv")
    assert_unchanged(net, before)


def test_a_layer_inside_reentrant_checkpointing_is_named():
    with pytest.raises(ValueError, match="layer 'conv' ran with gradients turned off inside the model"):
        mmcam.explain(Checkpointed("around", reentrant=True).eval(), _small(), 1, layer="conv")


def test_non_reentrant_checkpointing_above_the_layer_gives_the_plain_maps():
    x = _small()
    plain = Checkpointed("none", reentrant=False).eval()
    plain.forward = lambda x: plain.head(plain.conv(x))
    expected = mmcam.explain(plain, x, [0, 1], layer="conv").raw
    got = mmcam.explain(Checkpointed("above", reentrant=False).eval(), x, [0, 1], layer="conv").raw
    torch.testing.assert_close(got, expected)


class BatchStatistics(nn.Module):
    """conv -> batch normalization with the batch's own statistics whatever the mode -> linear."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 16 * 16, 3)

    def forward(self, x):
        h = F.batch_norm(self.conv(x), None, None, training=True)
        return self.fc(torch.relu(h).flatten(1))


def test_a_model_whose_samples_mix_warns_and_gets_per_sample_gradients():
    net = BatchStatistics().eval()
    x = torch.randn(3, 3, 16, 16)
    with pytest.warns(UserWarning, match="depend on other samples after layer 'conv'"):
        got = mmcam.explain(net, x, [[0, 1]] * 3, layer="conv")
    activation = net.conv(x).detach().requires_grad_(True)
    scores = net.fc(torch.relu(F.batch_norm(activation, None, None, training=True)).flatten(1))
    for b in range(3):
        for k in range(2):
            (gradient,) = torch.autograd.grad(scores[b, k], activation, retain_graph=True)
            alpha = gradient[b].mean(dim=(1, 2))
            expected = torch.relu(torch.einsum("c,chw->hw", alpha, activation[b].detach()))
            torch.testing.assert_close(got.raw[b, k], expected, rtol=1e-4, atol=1e-6)


class Recurrent(nn.Module):
    """conv -> GRU over the rows of the feature map -> linear; records cuDNN's state in its forward."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.gru = nn.GRU(4 * 16, 8, batch_first=True)
        self.fc = nn.Linear(8, 2)
        self.cudnn_seen = []
        self.gru.register_forward_pre_hook(lambda m, a: self.cudnn_seen.append(torch.backends.cudnn.enabled))

    def forward(self, x):
        rows = self.conv(x).permute(0, 2, 1, 3).flatten(2)
        return self.fc(self.gru(rows)[0][:, -1])


def test_models_with_rnns_run_without_cudnn_during_the_call():
    net = Recurrent().eval()
    assert torch.backends.cudnn.enabled
    mmcam.explain(net, _small(), 1, layer="conv")
    assert net.cudnn_seen and not any(net.cudnn_seen)
    assert torch.backends.cudnn.enabled
    net.cudnn_seen.clear()
    net(_small())
    assert net.cudnn_seen == [True]


# --- the auto layer ------------------------------------------------------------------------------


def _count_forwards(model):
    calls = []
    return calls, model.register_forward_pre_hook(lambda module, args: calls.append(1))


def test_auto_layer_is_found_once_per_model_and_shape_and_logged(caplog):
    from tests.conftest import ConvPoolLinear

    torch.manual_seed(0)
    net = ConvPoolLinear().eval()
    calls, handle = _count_forwards(net)
    try:
        with caplog.at_level("INFO", logger="mmcam"):
            first = mmcam.explain(net, _small(), 1)
        assert len(calls) == 2  # the probe, then the explanation
        assert "auto layer for ConvPoolLinear" in caplog.text and "'features'" in caplog.text
        calls.clear()
        again = mmcam.explain(net, _small(), 1)
        assert len(calls) == 1 and again.layer == first.layer == "features"
        torch.testing.assert_close(again.raw, first.raw)
        calls.clear()
        mmcam.explain(net, torch.randn(2, 3, 24, 24), 1)
        assert len(calls) == 2  # a new input shape probes again
    finally:
        handle.remove()


def test_auto_probe_asks_no_parameter_for_gradients(resnet18, images):
    seen = []
    hooks = [
        m.register_forward_hook(
            lambda m, a, o: seen.append(any(p.requires_grad for p in m.parameters(False)))
        )
        for m in resnet18.modules()
    ]
    try:
        mmcam.Explainer(resnet18)(images[:1, :, :40, :40], 1)
    finally:
        for hook in hooks:
            hook.remove()
    assert seen and not any(seen)


def test_an_auto_explainer_keeps_its_layer_setting_and_the_cache_frees_models():
    import gc
    import weakref

    from mmcam.engine.layers import _auto_layers
    from tests.conftest import ConvPoolLinear

    cam_net = ConvPoolLinear().eval()
    explainer = mmcam.Explainer(cam_net)
    assert explainer(_small(), 1).layer == "features"
    assert explainer.layer is None  # still "auto": the choice lives in the per-model cache
    reference = weakref.ref(cam_net)
    del explainer, cam_net
    gc.collect()
    assert reference() is None and all(model is not None for model in _auto_layers)


def test_layout_may_depend_on_the_inputs():
    """One explainer for inputs whose token grid starts after another input's tokens (ViLT's question):
    planted evidence, a lit patch among dark ones after bright text tokens, is found in its own cell for
    every question length; a layout that missed the length would read text tokens as patches (their
    activations are 5x the lit patch's) and peak on the first cells."""

    class TextThenPatches(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch = nn.Conv2d(3, 8, 4, stride=4, bias=False)
            self.text = nn.Embedding(10, 8)
            nn.init.constant_(self.patch.weight, 1 / 48)  # a lit 4x4 patch: 1 in every channel, else 0
            nn.init.constant_(self.text.weight, 5.0)
            self.tokens = nn.Identity()
            self.fc = nn.Linear(8, 2)
            nn.init.constant_(self.fc.weight, 1.0)

        def forward(self, pixel_values, input_ids):
            patches = self.patch(pixel_values).flatten(2).transpose(1, 2)
            tokens = self.tokens(torch.cat([self.text(input_ids), patches], dim=1))
            return self.fc(tokens.sum(dim=1))

    net = TextThenPatches().eval()
    explainer = mmcam.Explainer(
        net,
        layer="tokens",
        layout=lambda inputs: Layout("tokens", prefix=inputs["input_ids"].shape[1], grid=(4, 4)),
    )
    for length, (row, column) in ((3, (2, 1)), (5, (1, 3))):
        image = torch.zeros(1, 3, 16, 16)
        image[..., 4 * row : 4 * row + 4, 4 * column : 4 * column + 4] = 1.0
        got = explainer({"pixel_values": image, "input_ids": torch.arange(length)[None]}, 1)
        assert got.raw.shape == (1, 1, 4, 4)
        assert int(got.raw[0, 0].argmax()) == 4 * row + column
        assert float(got.raw[0, 0, row, column]) > 0.99 * float(got.raw[0, 0].sum())


def test_inputs_go_to_the_model_device_as_copies_and_explanations_come_back_to_the_cpu():
    from mmcam.engine.devices import model_device, on_model_device
    from tests.conftest import ConvPoolLinear

    on_meta = nn.Linear(2, 2, device="meta")
    pixels = torch.zeros(1, 3, 4, 4)
    moved = on_model_device({"pixel_values": pixels, "question": "why?"}, on_meta)
    assert moved["pixel_values"].device.type == "meta" and moved["question"] == "why?"
    assert pixels.device.type == "cpu"  # the caller's tensor stays where it was
    assert model_device(nn.ReLU()) is None and on_model_device(pixels, nn.ReLU()) is pixels

    explanation = mmcam.explain(ConvPoolLinear().eval(), torch.randn(1, 3, 8, 8), [[0, 1]])
    assert explanation.cpu() is explanation  # already there: nothing copied


def test_top_class_targets_choose_their_classes_in_the_pass_that_explains_them():
    """TopClass(r) explains each sample's r-th best class, read from the clean forward: the same maps as
    naming those classes, also for Score-CAM, whose masked copies would rank the classes differently."""
    from mmcam.targets import TopClass
    from tests.conftest import ConvPoolLinear

    torch.manual_seed(3)
    model, images = ConvPoolLinear(classes=5).eval(), torch.randn(3, 3, 16, 16)
    ranked = model(images).argsort(dim=1, descending=True)
    for method in ("gradcam", "scorecam"):
        got = mmcam.explain(model, images, [TopClass(0), TopClass(2)], method=method)
        expected = mmcam.explain(model, images, ranked[:, [0, 2]].tolist(), method=method)
        assert got.indices == expected.indices
        torch.testing.assert_close(got.raw, expected.raw)
    with pytest.raises(ValueError, match="the class ranked 6 was asked for, but the model has 5 outputs"):
        mmcam.explain(model, images, [TopClass(5)])


def test_samples_do_not_mix_where_the_scores_do_not_reach_the_layer():
    """A start the scores do not depend on (no gradient at all) mixes nothing, whether its rows are samples
    or tiles of them; rows of another sample that the scores of sample 0 reach do."""
    from mmcam.engine.gradients import mixes_samples

    start = torch.ones(4, 3, requires_grad=True)
    unrelated = torch.ones(2, 1, requires_grad=True) * torch.tensor([[1.0], [2.0]])
    assert not mixes_samples(unrelated, start)
    assert not mixes_samples(unrelated, start, torch.tensor([0, 0, 1, 1]))
    mixed = torch.stack([start.sum(dim=1)[:2].sum() + start[2].sum(), start[2:].sum()])[:, None]
    assert mixes_samples(mixed, start, torch.tensor([0, 0, 1, 1]))
    own = torch.stack([start[:2].sum(), start[2:].sum()])[:, None]
    assert not mixes_samples(own, start, torch.tensor([0, 0, 1, 1]))


@pytest.mark.parametrize("chunk_size", [1, 2, 32])
def test_a_start_no_score_reaches_gets_zeros_for_every_target(chunk_size):
    """One seed per chunk or several batched: the unreached start's gradient has the target axis too."""
    from mmcam.engine.gradients import target_gradients

    reached = torch.randn(2, 4, requires_grad=True)
    unreached = torch.randn(2, 5, 5, requires_grad=True)
    scores = torch.stack([reached.sum(1), (reached**2).sum(1), reached[:, 0]], dim=1)  # (2, 3)
    found, zeros = target_gradients(scores, [reached, unreached], chunk_size=chunk_size)
    torch.testing.assert_close(found[:, 1], 2 * reached.detach())
    assert zeros.shape == (2, 3, 5, 5) and not zeros.any()


# --- the peers' own cases (issue 32) ---------------------------------------------------------------


def test_a_model_that_is_not_a_module_is_refused_in_a_sentence():
    for model in (None, lambda x: x):
        with pytest.raises(TypeError, match="the model must be a torch.nn.Module"):
            mmcam.explain(model, _small(), 0)


def test_training_flags_come_back_when_model_eval_raises():
    """``model.eval()`` that raises midway (a submodule refusing to leave training) leaves no flag changed:
    the flags ``nn.Module.train`` had already set are put back, and the model can be explained again."""
    from mmcam.engine.state import _evaluated, _frozen
    from tests.conftest import ConvPoolLinear

    class Stubborn(nn.Module):
        def train(self, mode: bool = True):
            if not mode:
                raise RuntimeError("this block cannot leave training mode")
            return super().train(mode)

    net = ConvPoolLinear()
    net.add_module("stubborn", Stubborn())
    net.train()
    before = snapshot(net)
    with pytest.raises(RuntimeError, match="cannot leave training mode"):
        mmcam.explain(net, _small(), 0, layer="features")
    assert_unchanged(net, before)
    assert all(module.training for module in net.modules())
    assert not _frozen and not _evaluated


@pytest.mark.parametrize(
    "method",
    sorted(name for name, method in METHODS.items() if not getattr(method, "reads_attention", False)),
)
def test_float64_models_and_inputs_give_float64_maps(method):
    """torch-cam keeps the input's dtype: a float64 model and image give float64 maps, raw maps and scores,
    equal to the float32 maps to float32's precision (the attention methods need a transformer)."""
    from tests.conftest import ConvPoolLinear

    torch.manual_seed(0)
    net32 = ConvPoolLinear().eval()
    net64 = copy.deepcopy(net32).double()
    image = torch.rand(1, 3, 12, 12)
    torch.manual_seed(1)
    got = mmcam.explain(net64, image.double(), [[1, 2]], layer="features", method=method)
    torch.manual_seed(1)
    expected = mmcam.explain(net32, image, [[1, 2]], layer="features", method=method)
    assert got.maps.dtype == got.raw.dtype == got.scores.dtype == torch.float64
    torch.testing.assert_close(got.maps.float(), expected.maps, atol=1e-4, rtol=1e-4)


class _OutMatmul(torch.autograd.Function):
    """x @ w whose backward writes into a buffer (``out=``), as a torch.compile graph's backward does:
    such a backward has no batching rule, so the targets cannot share one vectorized backward."""

    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(w)
        return x @ w

    @staticmethod
    def backward(ctx, grad):
        (w,) = ctx.saved_tensors
        out = torch.empty(grad.shape[0], w.shape[0], dtype=grad.dtype)
        torch.mm(grad, w.t(), out=out)
        return out, None


def test_a_backward_without_a_batching_rule_falls_back_to_one_backward_per_target():
    """torch.compile's backward (CPU, inductor) refused the vectorized backward of K > 1 targets
    ("Batching rule not implemented for aten::mm.out"): the targets then get one backward each, with a
    warning, and the maps of each target alone."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU())
            self.head = nn.Parameter(torch.randn(6, 4))

        def forward(self, x):
            return _OutMatmul.apply(self.features(x).mean(dim=(2, 3)), self.head)

    net, image = Net().eval(), torch.rand(2, 3, 8, 8)
    with pytest.warns(UserWarning, match="cannot be batched over targets"):
        together = mmcam.explain(net, image, [[0, 1, 2], [3, 2, 1]], layer="features")
    for k in range(3):
        alone = mmcam.explain(net, image, [[0, 1, 2][k], [3, 2, 1][k]], layer="features")
        torch.testing.assert_close(together.raw[:, k], alone.raw[:, 0])


def test_a_long_list_of_targets_shows_its_progress_and_a_short_one_does_not(capsys):
    """The batched backward over many targets (a long caption's words) is the long part of a call: from
    four chunks of targets on, a progress bar on stderr counts them."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(40)).eval()
    image = torch.randn(1, 3, 8, 8)
    net(image)
    mmcam.explain(net, image, [list(range(40))], layer="0", chunk_size=10)
    assert "targets:   0%|          | 0/4" in capsys.readouterr().err  # four chunks of 10 targets
    mmcam.explain(net, image, [list(range(30))], layer="0", chunk_size=10)
    assert "targets" not in capsys.readouterr().err
