"""One forward and one vectorized backward for K targets; the forms targets come in; precision and layout."""

from dataclasses import replace

import pytest
import torch

import mmcam
from mmcam.explanation import Explanation


def _count_forwards(model):
    calls = []
    handle = model.register_forward_pre_hook(lambda module, args: calls.append(1))
    return calls, handle


def test_k_targets_share_one_forward(resnet18, images):
    calls, handle = _count_forwards(resnet18)
    try:
        explanation = mmcam.explain(resnet18, images, [list(range(8))] * 2, layer="layer4")
    finally:
        handle.remove()
    assert len(calls) == 1
    assert explanation.maps.shape == (2, 8, 96, 96)


def test_batched_targets_equal_one_call_per_target(resnet18, images):
    together = mmcam.explain(resnet18, images, [[0, 5, 9], [1, 2, 3]], layer="layer4", chunk_size=2)
    for k in range(3):
        alone = mmcam.explain(resnet18, images, [[0, 5, 9][k], [1, 2, 3][k]], layer="layer4")
        torch.testing.assert_close(together.raw[:, k], alone.raw[:, 0], rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(together.scores[:, k], alone.scores[:, 0])
    assert together.indices == [[0, 5, 9], [1, 2, 3]]


def test_batch_equals_one_sample_at_a_time(resnet18, images):
    batch = mmcam.explain(resnet18, images, [4, 6], layer="layer4")
    for b, target in enumerate([4, 6]):
        single = mmcam.explain(resnet18, images[b], target, layer="layer4")
        torch.testing.assert_close(batch.raw[b], single.raw[0], rtol=1e-4, atol=1e-7)


def test_counterfactual_method_equals_negated_target(resnet18, images):
    method = mmcam.explain(resnet18, images, 3, layer="layer4", method="counterfactual")
    negated = mmcam.explain(resnet18, images, -mmcam.ClassScore(3), layer="layer4")
    torch.testing.assert_close(method.raw, negated.raw)
    assert negated.labels[0] == ["not class 3"]
    assert not torch.allclose(method.raw, mmcam.explain(resnet18, images, 3, layer="layer4").raw)


def test_target_forms(resnet18, images):
    names = [f"n{i}" for i in range(10)]
    explainer = mmcam.Explainer(resnet18, layer="layer4", class_names=names)
    assert explainer(images, 2).labels == [["n2"], ["n2"]]
    assert explainer(images, [2, 3]).labels == [["n2"], ["n3"]]
    assert explainer(images, [[2, 3], [4, 5]]).labels == [["n2", "n3"], ["n4", "n5"]]
    custom = explainer(images, [lambda out: out[:, 1] - out[:, 2], mmcam.ClassScore(1)])
    assert custom.labels[0] == ["<lambda>", "n1"]
    torch.testing.assert_close(custom.scores[:, 1], resnet18(images)[:, 1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "targets, message",
    [
        ([1, 2, 3], "list of 2 ints"),
        ([[1, 2], [3]], "equal-length"),
        (12, "out of range"),
        ("cat", "cannot read"),
    ],
)
def test_bad_targets_say_what_to_pass(resnet18, images, targets, message):
    with pytest.raises(ValueError, match=message):
        mmcam.explain(resnet18, images, targets, layer="layer4")


def test_target_must_return_one_scalar_per_sample(resnet18, images):
    with pytest.raises(ValueError, match="one scalar per sample"):
        mmcam.explain(resnet18, images, lambda out: out, layer="layer4")


def test_bad_images_say_what_to_pass(resnet18):
    with pytest.raises(ValueError, match="float tensor"):
        mmcam.explain(resnet18, torch.zeros(1, 3, 8, 8, dtype=torch.uint8), 0, layer="layer4")


def test_maps_are_normalized_without_dividing_by_zero(resnet18, images):
    explanation = mmcam.explain(
        resnet18, images, [mmcam.ClassScore(1), lambda out: out[:, 0] * 0], layer="layer4"
    )
    assert torch.isfinite(explanation.maps).all()
    assert explanation.maps[:, 0].amax() == 1 and explanation.maps.amin() == 0
    assert (explanation.maps[:, 1] == 0).all()


def test_chunking_does_not_change_the_maps(resnet18, images):
    targets = [list(range(10))] * 2
    big = mmcam.explain(resnet18, images, targets, layer="layer4", chunk_size=32)
    small = mmcam.explain(resnet18, images, targets, layer="layer4", chunk_size=3)
    torch.testing.assert_close(big.raw, small.raw)


def test_channels_last_input(resnet18, images):
    expected = mmcam.explain(resnet18, images, [1, 2], layer="layer4")
    resnet18.to(memory_format=torch.channels_last)
    try:
        got = mmcam.explain(resnet18, images.to(memory_format=torch.channels_last), [1, 2], layer="layer4")
    finally:
        resnet18.to(memory_format=torch.contiguous_format)
    torch.testing.assert_close(got.raw, expected.raw, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_gives_float32_maps_close_to_full_precision(resnet18, images, dtype):
    expected = mmcam.explain(resnet18, images, [1, 2], layer="layer4")
    with torch.autocast("cpu", dtype=dtype):
        got = mmcam.explain(resnet18, images, [1, 2], layer="layer4")
    assert got.maps.dtype == torch.float32 and got.raw.dtype == torch.float32
    correlation = torch.corrcoef(torch.stack([got.maps.flatten(), expected.maps.flatten()]))[0, 1]
    assert correlation > 0.95


def test_smooth_gradcam_plusplus_is_reproducible_and_differs_from_gradcam_plusplus(resnet18, images):
    first = mmcam.explain(resnet18, images, 1, layer="layer3", method="smooth-gradcam++")
    second = mmcam.explain(resnet18, images, 1, layer="layer3", method="smooth-gradcam++")
    torch.testing.assert_close(first.raw, second.raw)
    plain = mmcam.explain(resnet18, images, 1, layer="layer3", method="gradcam++")
    assert not torch.allclose(first.raw, plain.raw)


def test_peaks_are_x_y_of_the_maximum():
    maps = torch.zeros(1, 2, 4, 6)
    maps[0, 0, 1, 5] = 1
    maps[0, 1, 3, 0] = 1
    explanation = Explanation(maps, maps, torch.zeros(1, 2), [["a", "b"]], [[0, 1]], "layer", "gradcam")
    assert explanation.peaks().tolist() == [[[5, 1], [0, 3]]]


def test_every_target_says_what_its_score_is(cam_net, images):
    from mmcam.targets import ClassScore, Difference, FunctionTarget, TokenLogProb

    targets = [
        ClassScore(1),
        -ClassScore(2),
        Difference(ClassScore(0), ClassScore(3)),
        FunctionTarget(lambda o: o[:, 0]),
    ]
    explanation = mmcam.explain(cam_net, images, targets, layer="features")
    assert explanation.kinds == ["logit", "minus the logit", "logit difference", "score"]
    word = TokenLogProb(torch.zeros(1, 3, dtype=torch.long), [1], "red")
    assert Difference(word, ClassScore(0)).kind == "log-probability minus logit"


def test_class_scores_relative_to_the_other_classes():
    """log softmax(y)_c, y_c - mean_j y_j and y_c - max_{j != c} y_j, per sample."""
    from mmcam.targets import ClassAdvantage, ClassLogProb, ClassMargin

    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 3.0, 3.0]])
    chosen = [0, 2]
    log_prob = ClassLogProb(chosen)(logits)
    expected = [2.0 - float(torch.logsumexp(logits[0], 0)), 3.0 - float(torch.logsumexp(logits[1], 0))]
    torch.testing.assert_close(log_prob, torch.tensor(expected))
    torch.testing.assert_close(ClassAdvantage(chosen)(logits), torch.tensor([2.0 - 0.5, 3.0 - 2.0]))
    torch.testing.assert_close(ClassMargin(chosen)(logits), torch.tensor([2.0 - 0.5, 0.0]))  # a tie: 0
    torch.testing.assert_close(ClassMargin([1, 0])(logits), torch.tensor([0.5 - 2.0, 0.0 - 3.0]))
    kinds = [t.kind for t in (ClassLogProb(0), ClassAdvantage(0), ClassMargin(0))]
    assert kinds == ["log-probability", "logit minus the mean logit", "logit difference"]


def test_token_log_probs_with_positions_per_sample_score_a_shorter_sample_zero():
    from mmcam.targets import TokenLogProb

    logits = torch.randn(2, 4, 5, generator=torch.Generator().manual_seed(0))
    ids = torch.tensor([[0, 1, 2, 3], [0, 4, 0, 0]])
    target = TokenLogProb(ids, [[2, 3], []], ["big word", ""], [1, None])
    log_probs = logits.log_softmax(-1)
    expected = torch.stack([log_probs[0, 1, 2] + log_probs[0, 2, 3], torch.tensor(0.0)])
    torch.testing.assert_close(target(logits), expected)
    torch.testing.assert_close(target(torch.cat([logits, logits]))[2:], expected)  # tiled blocks of the batch
    assert (target.label(0), target.index(0), target.index(1)) == ("big word", 1, None)
    with pytest.raises(ValueError, match="start at 1"):
        TokenLogProb(ids, [[], []], ["", ""])


def test_fuse_layers_takes_the_maximum_of_the_upsampled_maps(cam_net, images):
    """torch-cam's fuse_cams: each layer's map upsampled (bilinear, half-pixel) to the finest grid, scaled
    by tanh(2 L) for LayerCAM, and the element-wise maximum."""
    import torch.nn.functional as F

    coarse = mmcam.explain(cam_net, images, 1, layer="features", method="layercam")
    pooled = torch.nn.functional.avg_pool2d(coarse.raw[:, 0], 2)  # a coarser map of the same targets
    coarser = replace(coarse, raw=pooled[:, None], layer="pooled")
    fused = mmcam.fuse_layers([coarse, coarser], gamma=2.0)
    up = F.interpolate(pooled[:, None], size=coarse.raw.shape[-2:], mode="bilinear", align_corners=False)
    expected = torch.maximum(torch.tanh(2 * coarse.raw), torch.tanh(2 * up))
    torch.testing.assert_close(fused.raw, expected)
    assert fused.layer == "features + pooled" and fused.weights is None and fused.scores is coarse.scores
    assert fused.maps.shape == coarse.maps.shape and float(fused.maps.max()) == 1.0


def test_fuse_layers_by_product_is_refinecam(cam_net, images):
    """RefineCAM: each layer's map min-max scaled, upsampled to the finest grid and multiplied; equal to
    torch-cam's RefineCAM.fuse_cams on the same maps (before its final scaling)."""
    torchcam = pytest.importorskip("torchcam.methods", reason="the comparison needs the dev extra (torchcam)")
    coarse = mmcam.explain(cam_net, images, 1, layer="features", method="layercam")
    coarser = replace(
        coarse, raw=torch.nn.functional.avg_pool2d(coarse.raw[:, 0], 2)[:, None], layer="pooled"
    )
    fused = mmcam.fuse_layers([coarse, coarser], rule="product")
    expected = torchcam.RefineCAM.fuse_cams([coarse.raw[:, 0], coarser.raw[:, 0]], normalized=False)
    torch.testing.assert_close(fused.raw[:, 0], expected, rtol=0, atol=5e-4)  # torch-cam adds 1e-8 to the max
    assert fused.method == "layercam, fused (product)"
    with pytest.raises(ValueError, match="unknown fusion rule 'sum'; choose one of: maximum, product"):
        mmcam.fuse_layers([coarse, coarser], rule="sum")


def test_similar_class_contrast_weighs_the_nearest_classes_by_probability():
    from mmcam.targets import SimilarClassContrast

    logits = torch.tensor([[4.0, 3.5, -1.0, 3.0, 0.0]])
    target = SimilarClassContrast(comparisons=2, alpha=0.5)
    p = logits.softmax(dim=1)[0]
    expected = (p[1] * (4.0 - 0.5 * 3.5) + p[3] * (4.0 - 0.5 * 3.0)) / (p[1] + p[3])
    torch.testing.assert_close(target(logits), expected[None])
    assert target.indices.tolist() == [0] and target.similar.tolist() == [[1, 3]]
    chosen = SimilarClassContrast(index=4, comparisons=1)  # a given class: its nearest is class 2 (-1.0)
    chosen(logits)
    assert chosen.similar.tolist() == [[2]] and chosen.label(0, list("abcde")) == "e"
