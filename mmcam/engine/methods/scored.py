"""Channel-weight CAMs whose weights come from forwards of altered copies of the input: the image masked
by each channel (Score-CAM and its variants) or the layer with each channel zeroed (Ablation-CAM)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from mmcam.engine.methods.base import ChannelWeightCAM, safe_divide
from mmcam.engine.resize import normalize, upsample

if TYPE_CHECKING:
    from mmcam.engine.context import CamContext


def score_masks(ctx: CamContext) -> Tensor:
    """Score-CAM's masks: each channel of the activations upsampled to the input and min-max scaled,
    M_c = normalize(upsample(A_c)) in [0, 1], (B, C, *input grid)."""
    return normalize(upsample(ctx.activations, ctx.image_size), len(ctx.image_size))


def channel_softmax(scores: Tensor) -> Tensor:
    """(B, C, K) channel scores -> w_kc = softmax_c(s_kc), (B, K, C)."""
    return torch.softmax(scores.transpose(1, 2), dim=-1)


class ScoreCAM(ChannelWeightCAM):
    """Score-CAM (Wang et al., arXiv 1910.01279): channel weights from the scores of masked inputs.

    M_c = normalize(upsample(A_c)) in [0, 1];  s_kc = y_k(x * M_c);
    w_kc = softmax_c(s_kc - y_k(baseline)) = softmax_c(s_kc);   L_k = ReLU(sum_c w_kc A_c)
    (softmax is shift-invariant, so the baseline score of the paper's CIC drops out.)
    """

    name = "scorecam"
    summary = "softmax of the scores of masked inputs (batched masks)"
    paper = "Wang et al., arXiv 1910.01279"
    peers = (
        "pytorch-grad-cam (1e-4 with its mask upsampling); torch-cam (it scales the masks before upsampling "
        "them, mmcam and pytorch-grad-cam after)"
    )
    needs_gradients = False
    perturbation = True

    def __init__(self, batch_size: int = 64):
        self.batch_size = batch_size

    def weights(self, ctx: CamContext) -> Tensor:
        return channel_softmax(ctx.masked_scores(score_masks(ctx), self.batch_size))


class ISCAM(ChannelWeightCAM):
    """IS-CAM (Naidu et al., arXiv 2010.03023): Score-CAM with each mask's score integrated over scaled
    copies of the mask, as torch-cam computes it:

    s_kc = 1/N sum_{i=1}^N y_k(x * a_i M_c),  a_i = sum_{j=1}^{i} j / N;  w_kc = softmax_c(s_kc);
    L_k = ReLU(sum_c w_kc A_c), M_c Score-CAM's masks, N = ``samples`` (10).
    """

    name = "iscam"
    summary = "Score-CAM with each mask's score integrated over 10 scaled copies of the mask"
    paper = "Naidu et al., arXiv 2010.03023"
    peers = "torch-cam (1e-4, on a layer at the input's resolution, where the mask conventions meet)"
    needs_gradients = False
    perturbation = True

    def __init__(self, samples: int = 10, batch_size: int = 64):
        self.samples = samples
        self.batch_size = batch_size

    def weights(self, ctx: CamContext) -> Tensor:
        masks = score_masks(ctx)
        total, factor = 0.0, 0.0
        for i in range(1, self.samples + 1):
            factor += i / self.samples
            total = total + ctx.masked_scores(factor * masks, self.batch_size)
        return channel_softmax(total / self.samples)


class SSCAM(ChannelWeightCAM):
    """SS-CAM (Wang et al., arXiv 2006.14255): Score-CAM with the masks' scores averaged over noisy masks,
    as torch-cam computes it:

    s_kc = 1/N sum_{i=1}^N y_k(x * (M_c + delta_i)),  delta_i ~ N(0, sigma^2) per pixel (seeded);
    w_kc = softmax_c(s_kc);  L_k = ReLU(sum_c w_kc A_c), M_c Score-CAM's masks, N = 35, sigma = 2.
    """

    name = "sscam"
    summary = "Score-CAM with the scores averaged over 35 noisy copies of each mask (seeded)"
    paper = "Wang et al., arXiv 2006.14255"
    peers = "torch-cam (1e-4 when handed the same noise)"
    needs_gradients = False
    perturbation = True

    def __init__(self, samples: int = 35, sigma: float = 2.0, batch_size: int = 64, seed: int = 0):
        self.samples = samples
        self.sigma = sigma
        self.batch_size = batch_size
        self.seed = seed

    def weights(self, ctx: CamContext) -> Tensor:
        masks = score_masks(ctx)
        generator = torch.Generator(device=masks.device).manual_seed(self.seed)
        total = 0.0
        for _ in range(self.samples):
            noise = torch.randn(masks.shape, generator=generator, device=masks.device) * self.sigma
            total = total + ctx.masked_scores(masks + noise, self.batch_size)
        return channel_softmax(total / self.samples)


class AblationCAM(ChannelWeightCAM):
    """Ablation-CAM (Desai & Ramaswamy, WACV 2020): a channel weighs what the score loses without it.

    y_k^c = y_k with channel c of the layer's output set to 0;  w_kc = (y_k - y_k^c) / y_k;
    L_k = ReLU(sum_c w_kc A_c). No gradients: one forward per channel, ``batch_size`` rows a forward.
    """

    name = "ablationcam"
    summary = "channel weights from the relative score lost when each channel is zeroed (batched forwards)"
    paper = "Desai & Ramaswamy, WACV 2020"
    peers = "pytorch-grad-cam (1e-4)"
    needs_gradients = False
    perturbation = True

    def __init__(self, batch_size: int = 256):
        self.batch_size = batch_size

    def weights(self, ctx: CamContext) -> Tensor:
        ctx.refuse_rows("Ablation-CAM weighs the channels by each image's scores")
        ablated = ctx.ablated_scores(self.batch_size).transpose(1, 2)  # (B, K, C)
        clean = ctx.scores.detach().to(ctx.activations.dtype)[..., None]
        return safe_divide(clean - ablated, clean.expand_as(ablated))
