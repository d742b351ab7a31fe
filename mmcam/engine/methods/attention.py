"""Attention methods: maps from the attention probabilities of the transformer blocks above a token layer
and the targets' gradients with respect to them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from mmcam.engine.methods.base import CamMethod, CamResult

if TYPE_CHECKING:
    from mmcam.engine.context import CamContext


class AttentionRelevance(CamMethod):
    """Gradient-weighted attention relevance (Chefer, Gur & Wolf, arXiv 2103.15679), on a token layer.

    For the self-attention layers b = 1..n that run on the layer's L tokens above it, up to the last the
    targets depend on, with probabilities P_b (B, H, L, L) and gradients G_kb = dy_k/dP_b:
      Pbar_kb = mean_h ReLU(G_kb * P_b);   R_k = (I + Pbar_kn) ... (I + Pbar_k1)   (R <- R + Pbar_kb R)
    R_k,ij: how much token j of the layer feeds token i after the last block. What the model reads from
    the tokens after the last block is weighed by the relevance its last attention routes through each
    query token, r_ki = sum_j Pbar_kn,ij (for a classifier that reads the class token, r_k is that token:
    the paper's R_k[CLS]; a decoder reading every image token weighs each by it). The map is the
    relevance reaching each patch token j: L_kj = sum_i r_ki R_k,ij, laid out on the patch grid.
    Non-negative; no channel weights.
    """

    name = "attention-relevance"
    summary = (
        "gradient-weighted attention, propagated from the layer's tokens through every attention block above "
        "it (transformers: a token layer, eager or SDPA attention)"
    )
    paper = "Chefer et al., arXiv 2103.15679"
    reads_attention = True

    def __call__(self, ctx: CamContext) -> CamResult:
        probabilities, gradients = ctx.attention_gradients
        relevance = torch.eye(probabilities[0].shape[-1], device=probabilities[0].device)
        for p, g in zip(probabilities, gradients):
            routed = torch.relu(g * p[:, None]).mean(dim=2)  # (B, K, L, L)
            relevance = relevance + routed @ relevance
        readout = routed.sum(dim=-1)  # (B, K, L): what the last attention routes through each query token
        tokens = (readout[..., None] * relevance).sum(dim=-2)
        return CamResult(ctx.layout.to_grid(tokens[..., None], leading=2)[:, :, 0])


class LeGrad(CamMethod):
    """LeGrad (Bousselham et al., arXiv 2404.03214): the gradient of the target with respect to the
    attention maps, kept where positive, as the map; on a token layer.

    For the self-attention layers b = 1..n that run on the layer's L tokens above it, up to the last the
    targets depend on, with probabilities P_b (B, H, L, L) and gradients G_kb = dy_k/dP_b:
      E_kb,j = 1/(H L) sum_h sum_i ReLU(G_kb,hij)   (averaged over heads h and query rows i);
      L_kj = 1/n sum_b E_kb,j, laid out on the patch grid (the prefix keys, such as [CLS], dropped).
    The blocks are those above the layer (the layer below block m explains blocks m..n). y_k is the
    model's own score for every block, so all K targets come from the one backward; the paper and
    torch-cam differentiate instead, for each block b, a score s_b computed from that block's output tokens
    (the head applied to them), which takes one backward per block and the model's head. Both agree for
    one block below the head (``tests/test_reference.py``). Non-negative; no channel weights.
    """

    name = "legrad"
    summary = (
        "positive gradients of the target w.r.t. the attention maps of the blocks above the layer, averaged "
        "over heads, query rows and blocks (ViTs: a token layer; torchvision's nn.MultiheadAttention too)"
    )
    paper = "Bousselham et al., arXiv 2404.03214"
    peers = (
        "torch-cam (1e-7 on one block below the head; over several blocks torch-cam differentiates each "
        "block's own head score, one backward per block, mmcam the model's score in one backward: "
        "correlation 0.10-0.95 on a random tiny ViT)"
    )
    reads_attention = True

    def __call__(self, ctx: CamContext) -> CamResult:
        _, gradients = ctx.attention_gradients
        tokens = sum(torch.relu(g).mean(dim=(2, 3)) for g in gradients) / len(gradients)  # (B, K, L)
        return CamResult(ctx.layout.to_grid(tokens[..., None], leading=2)[:, :, 0])
