"""The attention methods against their formulas (Chefer et al.'s relevance, LeGrad), on the ways transformers
compute attention (Hugging Face eager and sdpa, nn.MultiheadAttention)."""

import numpy as np
import pytest
import torch
from torch import nn

import mmcam
from mmcam.engine.attention import AttentionRecorder, explicit_attention

LAYER = "vit.layers.0.layernorm_before"


def tiny_vit(attention: str):
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    config = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=5,
        attn_implementation=attention,
    )
    return ViTForImageClassification(config).eval()


def rollout_by_hand(model, image, classes):
    """Chefer et al.'s rule written out from the model's own attention outputs (eager, output_attentions).

    Pbar_b = mean_h ReLU(dy/dP_b * P_b); R = I; R <- R + Pbar_b R; map_j = sum_i (sum_l Pbar_n,il) R_ij
    over the 16 patch tokens j (token 0 is the class token)."""
    maps = []
    for k in classes:
        output = model(image, output_attentions=True)
        attentions = output.attentions
        gradients = torch.autograd.grad(output.logits[0, k], attentions)
        tokens = attentions[0].shape[-1]
        relevance = np.eye(tokens)
        for p, g in zip(attentions, gradients):
            routed = np.maximum((g * p)[0].detach().numpy(), 0).mean(axis=0)
            relevance = relevance + routed @ relevance
        readout = routed.sum(axis=1)
        column = np.array([sum(readout[i] * relevance[i, j] for i in range(tokens)) for j in range(tokens)])
        maps.append(column[1:].reshape(4, 4))
    return np.stack(maps)


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_relevance_follows_the_formula(attention):
    model = tiny_vit(attention)
    image = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    classes = [0, 3]
    explanation = mmcam.explain(model, image, [classes], layer=LAYER, method="attention-relevance")
    expected = rollout_by_hand(tiny_vit("eager"), image, classes)
    np.testing.assert_allclose(explanation.raw[0].numpy(), expected, rtol=1e-4, atol=1e-7)
    assert model.config._attn_implementation == attention


def test_explicit_attention_equals_scaled_dot_product_attention():
    generator = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(2, 4, 6, 8, generator=generator) for _ in range(3))
    additive = torch.randn(2, 1, 6, 6, generator=generator)
    keep = torch.rand(2, 1, 6, 6, generator=generator) > 0.3
    keep[..., 0] = True
    grouped = (torch.randn(2, 2, 6, 8, generator=generator) for _ in range(2))
    for options in ({}, {"attn_mask": additive}, {"attn_mask": keep}, {"is_causal": True}, {"scale": 0.3}):
        expected = nn.functional.scaled_dot_product_attention(q, k, v, **options)
        torch.testing.assert_close(explicit_attention(q, k, v, **options)[0], expected)
    k2, v2 = grouped
    expected = nn.functional.scaled_dot_product_attention(q, k2, v2, enable_gqa=True)
    torch.testing.assert_close(explicit_attention(q, k2, v2, enable_gqa=True)[0], expected)


@pytest.mark.parametrize(
    "module_options, call_options",
    [
        ({}, {"need_weights": True}),
        ({"batch_first": True}, {"need_weights": False}),
        ({"kdim": 6, "vdim": 5, "bias": False}, {"average_attn_weights": False}),
    ],
)
def test_multihead_attention_under_the_recorder_gives_the_same_output_and_is_recorded(
    module_options, call_options
):
    torch.manual_seed(3)
    attention = nn.MultiheadAttention(8, 2, **module_options).eval()
    generator = torch.Generator().manual_seed(4)
    queries, keys, batch = 4, 6, 3
    batch_first = module_options.get("batch_first", False)

    def sequence(length, features):
        shape = (batch, length, features) if batch_first else (length, batch, features)
        return torch.randn(*shape, generator=generator)

    query = sequence(queries, 8)
    key, value = sequence(keys, module_options.get("kdim", 8)), sequence(keys, module_options.get("vdim", 8))
    excluded = torch.rand(queries, keys, generator=generator) > 0.6
    excluded[:, 0] = False
    padding = torch.zeros(batch, keys, dtype=torch.bool)
    padding[1, -2:] = True
    additive = torch.randn(batch * 2, queries, keys, generator=generator)
    for masks in ({}, {"attn_mask": excluded, "key_padding_mask": padding}, {"attn_mask": additive}):
        expected = attention(query, key, value, **masks, **call_options)
        with AttentionRecorder() as recorder:
            got = attention(query, key, value, **masks, **call_options)
        torch.testing.assert_close(got[0], expected[0])
        if expected[1] is None:
            assert got[1] is None
        else:
            torch.testing.assert_close(got[1], expected[1])
        assert [tuple(p.shape) for p in recorder.probabilities] == [(batch, 2, queries, keys)]


def test_recorder_sees_every_layer_and_changes_no_output():
    model = tiny_vit("sdpa")
    image = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        plain = model(image).logits
        with AttentionRecorder() as recorder:
            recorded = model(image).logits
    torch.testing.assert_close(recorded, plain)
    assert [tuple(p.shape) for p in recorder.probabilities] == [(2, 4, 17, 17)] * 3


def test_relevance_on_a_cnn_layer_says_what_to_pick(cam_net, images):
    with pytest.raises(ValueError, match="token layer"):
        mmcam.explain(cam_net, images, 0, layer="features", method="attention-relevance")


def test_relevance_above_the_last_attention_says_what_to_pick():
    model = tiny_vit("eager")
    with pytest.raises(ValueError, match="no self-attention"):
        mmcam.explain(
            model, torch.randn(1, 3, 32, 32), 0, layer="vit.layernorm", method="attention-relevance"
        )


class ReadsHiddenStates(nn.Module):
    """A ViT classifier's head on the class token of hidden state ``index``: with -2, as LLaVA reads its
    tower (``vision_feature_layer``), the last block runs but no score depends on it."""

    def __init__(self, model, index: int):
        super().__init__()
        self.model, self.index = model, index

    def forward(self, image):
        hidden = self.model.vit(image, output_hidden_states=True).hidden_states[self.index]
        return self.model.classifier(hidden[:, 0])


@pytest.mark.parametrize("method", ["attention-relevance", "legrad"])
def test_attention_methods_stop_at_the_last_block_the_scores_read(method):
    """Explaining a model that reads the hidden states below its last block gives the maps of the same
    model with that block removed: the unread block's attention (whose gradient is zero) is left out,
    for every target of the one batched backward."""
    reading_below = ReadsHiddenStates(tiny_vit("eager"), -2)
    truncated = tiny_vit("eager")
    truncated.vit.layers = nn.ModuleList(list(truncated.vit.layers)[:-1])
    image = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    classes = [[0, 1, 3], [2, 4, 0]]
    maps = [
        mmcam.explain(model, image, classes, layer=f"model.{LAYER}", method=method).raw
        for model in (reading_below, ReadsHiddenStates(truncated, -1))
    ]
    assert maps[0].flatten(2).std(dim=2).min() > 0
    torch.testing.assert_close(maps[0], maps[1], rtol=1e-4, atol=1e-7)


def legrad_by_hand(model, image, classes, first_block):
    """LeGrad written out from the model's own attention outputs (eager, output_attentions): for the blocks
    from ``first_block`` on, mean over heads and query rows of ReLU(dy/dP_b), mean over the blocks, on the
    16 patch keys (key 0 is the class token)."""
    maps = []
    for k in classes:
        output = model(image, output_attentions=True)
        attentions = output.attentions[first_block:]
        gradients = torch.autograd.grad(output.logits[0, k], attentions)
        keys = np.mean([np.maximum(g[0].numpy(), 0).mean(axis=(0, 1)) for g in gradients], axis=0)
        maps.append(keys[1:].reshape(4, 4))
    return np.stack(maps)


@pytest.mark.parametrize("first_block", [0, 1])
def test_legrad_follows_the_formula_for_the_blocks_above_the_layer(first_block):
    model = tiny_vit("sdpa")
    image = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    classes = [0, 3]
    layer = f"vit.layers.{first_block}.layernorm_before"
    explanation = mmcam.explain(model, image, [classes], layer=layer, method="legrad")
    expected = legrad_by_hand(tiny_vit("eager"), image, classes, first_block)
    np.testing.assert_allclose(explanation.raw[0].numpy(), expected, rtol=1e-4, atol=1e-8)


class PlantedAttention(nn.Module):
    """One attention block over a [CLS] token and the 4x4 patch means of a 32x32 image, with uniform
    attention (Q = K = 0 * tokens) and V the tokens: the [CLS] output is the mean of the tokens and class c reads
    its channel c. dy_c/dP_h,0,j = V_j,c: the class is decided where its channel is high."""

    def __init__(self):
        super().__init__()
        self.tokens = nn.Identity()

    def forward(self, image):
        patches = nn.functional.avg_pool2d(image, 8).flatten(2).transpose(1, 2)  # (B, 16, 3)
        tokens = self.tokens(torch.cat([torch.zeros_like(patches[:, :1]), patches], dim=1))[:, None]
        flat = 0 * tokens  # zero queries and keys that still depend on the tokens, as a real block's do
        output = nn.functional.scaled_dot_product_attention(flat, flat, tokens)
        return output[:, 0, 0]


def test_legrad_points_at_the_patch_that_decides_the_class():
    image = torch.zeros(1, 3, 32, 32)
    image[0, 0, 8:16, 16:24] = 1  # patch (1, 2) holds class 0's channel
    image[0, 2, 24:32, 0:8] = 1  # patch (3, 0) holds class 2's channel
    explanation = mmcam.explain(PlantedAttention(), image, [[0, 2]], layer="tokens", method="legrad")
    raw = explanation.raw[0]
    assert [divmod(int(m.argmax()), 4) for m in raw] == [(1, 2), (3, 0)]
    assert raw[0, 1, 2] == pytest.approx(1 / 17) and raw[0].sum() == pytest.approx(1 / 17)


def test_legrad_on_a_cnn_layer_says_what_to_pick(cam_net, images):
    with pytest.raises(ValueError, match="token layer"):
        mmcam.explain(cam_net, images, 0, layer="features", method="legrad")


@pytest.mark.parametrize("method", ["legrad", "attention-relevance"])
def test_attention_below_the_layer_is_left_out_when_a_token_layer_reaches_it(method):
    """A token layer below the explained one (ViLT's question words) starts a second graph, so the attention
    below the layer carries gradients too; the maps still read only the blocks above the layer. Before,
    ViLT's maps at every block were those of its first block."""
    model = tiny_vit("eager")
    image = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    classes = [0, 3]
    layer = "vit.layers.1.layernorm_before"
    with_tokens = mmcam.explain(
        model, image, [classes], layer=layer, method=method, token_layer="vit.embeddings"
    )
    alone = mmcam.explain(model, image, [classes], layer=layer, method=method)
    torch.testing.assert_close(with_tokens.raw, alone.raw, rtol=1e-4, atol=1e-8)
    if method == "legrad":
        expected = legrad_by_hand(tiny_vit("eager"), image, classes, first_block=1)
        np.testing.assert_allclose(with_tokens.raw[0].numpy(), expected, rtol=1e-4, atol=1e-8)
