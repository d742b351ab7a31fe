"""The CAM family. Notation: A (B, C, h, w) activations of the layer, G = dy/dA (B, K, C, h, w) for
K targets y per sample; ij runs over the layer's grid cells ((t, h, w) for video: every formula sums or
averages over all grid axes alike). Every method returns the signed map before its final ReLU
(B, K, h, w) and, where it has them, the per-channel importance weights (B, K, C) that name neurons in
textual explanations; ``CamResult.raw`` applies the ReLU each formula ends with."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torchvision.transforms.functional import gaussian_blur

from mmcam.engine.resize import normalize, upsample

if TYPE_CHECKING:
    from mmcam.engine.context import CamContext


@dataclass
class CamResult:
    """``signed``: the map before the final ReLU; ``raw``: ReLU(signed), the map the formulas define."""

    signed: Tensor
    weights: Tensor | None = None

    @property
    def raw(self) -> Tensor:
        return torch.relu(self.signed)


def grid_axes(x: Tensor, first: int) -> tuple[int, ...]:
    """The grid axes of ``x``: every axis from ``first`` on (2 for A, 3 for G)."""
    return tuple(range(first, x.ndim))


def weighted_activations(weights: Tensor, activations: Tensor) -> Tensor:
    """sum_c w_kc A_c: (B, K, C) weights and (B, C, *grid) activations -> (B, K, *grid)."""
    return torch.einsum("bkc,bc...->bk...", weights, activations)


def _safe_divide(numerator: Tensor, denominator: Tensor) -> Tensor:
    return torch.where(denominator != 0, numerator / torch.where(denominator != 0, denominator, 1), 0)


class GradCAM:
    """Grad-CAM (Selvaraju et al., arXiv 1610.02391).

    alpha_kc = 1/(hw) sum_ij G_kcij;   L_k = ReLU(sum_c alpha_kc A_c)
    """

    name = "gradcam"

    def __call__(self, ctx: CamContext) -> CamResult:
        alpha = ctx.gradients.mean(dim=grid_axes(ctx.gradients, 3))
        return CamResult(weighted_activations(alpha, ctx.activations), alpha)


class CounterfactualCAM:
    """Counterfactual Grad-CAM: the regions whose presence lowers the target (negated gradients).

    alpha_kc = 1/(hw) sum_ij -G_kcij;   L_k = ReLU(sum_c alpha_kc A_c)
    """

    name = "counterfactual"

    def __call__(self, ctx: CamContext) -> CamResult:
        alpha = -ctx.gradients.mean(dim=grid_axes(ctx.gradients, 3))
        return CamResult(weighted_activations(alpha, ctx.activations), alpha)


def _plusplus_weights(activations: Tensor, g1: Tensor, g2: Tensor, g3: Tensor) -> Tensor:
    """Grad-CAM++ weights from the first three derivative moments (Chattopadhyay et al., eq. 19).

    a_kcij = g2 / (2 g2 + sum_ab A_cab g3)   (0 where the gradient vanishes)
    w_kc   = sum_ij a_kcij ReLU(g1_kcij)
    """
    activation_sums = activations.sum(dim=grid_axes(activations, 2), keepdim=True)[:, None]
    alpha = _safe_divide(g2, 2 * g2 + activation_sums * g3)
    return (alpha * torch.relu(g1)).sum(dim=grid_axes(g1, 3))


class GradCAMPlusPlus:
    """Grad-CAM++ (arXiv 1710.11063): per-pixel weighted positive gradients.

    w_kc = sum_ij a_kcij ReLU(G_kcij),  a_kcij = G^2 / (2 G^2 + sum_ab A_cab G^3);
    L_k = ReLU(sum_c w_kc A_c)
    """

    name = "gradcam++"

    def __call__(self, ctx: CamContext) -> CamResult:
        g = ctx.gradients
        weights = _plusplus_weights(ctx.activations, g, g**2, g**3)
        return CamResult(weighted_activations(weights, ctx.activations), weights)


class SmoothGradCAMPlusPlus:
    """Smooth Grad-CAM++ (arXiv 1908.01224): Grad-CAM++ with SmoothGrad-averaged derivatives.

    D_n = 1/S sum_s (G(x + eps_s))^n for n = 1, 2, 3, eps_s ~ N(0, (sigma * (max x - min x))^2);
    w_kc = sum_ij D2 / (2 D2 + sum_ab A_cab D3) ReLU(D1);   L_k = ReLU(sum_c w_kc A_c)
    """

    name = "smooth-gradcam++"

    def __init__(self, samples: int = 8, sigma: float = 0.15):
        self.samples = samples
        self.sigma = sigma

    def __call__(self, ctx: CamContext) -> CamResult:
        g1, g2, g3 = ctx.noisy_gradient_moments(self.samples, self.sigma)
        weights = _plusplus_weights(ctx.activations, g1, g2, g3)
        return CamResult(weighted_activations(weights, ctx.activations), weights)


class ShapleyCAM:
    """ShapleyCAM (Cai et al., arXiv 2501.06261): Grad-CAM with the channel weights corrected by the
    target's curvature, the second-order term of a Taylor approximation of each channel's Shapley value.

    w_kc = 1/(hw) sum_ij (G_kcij - 1/2 (H_k A)_cij);   L_k = ReLU(sum_c w_kc A_c)
    H_k A: the Hessian of y_k with respect to A times A (``CamContext.curvature``), from a second
    vectorized backward for all K targets. It vanishes, and ShapleyCAM is Grad-CAM, where y_k is linear
    in A above the layer (a ReLU network's logit); the paper explains probabilities (softmax outputs).
    """

    name = "shapleycam"
    second_order = True

    def __call__(self, ctx: CamContext) -> CamResult:
        corrected = ctx.gradients - 0.5 * ctx.curvature
        weights = corrected.mean(dim=grid_axes(corrected, 3))
        return CamResult(weighted_activations(weights, ctx.activations), weights)


class XGradCAM:
    """XGrad-CAM (Fu et al., arXiv 2008.02312): activation-normalized gradient weights.

    w_kc = sum_ij (A_cij / sum_ab A_cab) G_kcij;   L_k = ReLU(sum_c w_kc A_c)
    """

    name = "xgradcam"

    def __call__(self, ctx: CamContext) -> CamResult:
        a = ctx.activations
        share = _safe_divide(a, a.sum(dim=grid_axes(a, 2), keepdim=True))
        weights = (share[:, None] * ctx.gradients).sum(dim=grid_axes(ctx.gradients, 3))
        return CamResult(weighted_activations(weights, a), weights)


class HiResCAM:
    """HiResCAM (Draelos & Carin, arXiv 2011.08891): gradients times activations, element-wise.

    L_kij = ReLU(sum_c G_kcij A_cij)
    """

    name = "hirescam"

    def __call__(self, ctx: CamContext) -> CamResult:
        return CamResult((ctx.gradients * ctx.activations[:, None]).sum(dim=2))


class LayerCAM:
    """LayerCAM (Jiang et al., IEEE TIP 2021): positive gradients as per-pixel weights.

    L_kij = ReLU(sum_c ReLU(G_kcij) A_cij)
    """

    name = "layercam"

    def __call__(self, ctx: CamContext) -> CamResult:
        return CamResult((torch.relu(ctx.gradients) * ctx.activations[:, None]).sum(dim=2))


class GradCAMElementWise:
    """Grad-CAM element-wise (pytorch-grad-cam's ``GradCAMElementWise``): HiResCAM with each channel's
    product clipped before the sum, so no channel's negative evidence cancels another's positive one.

    L_kij = sum_c ReLU(G_kcij A_cij)
    """

    name = "gradcam-elementwise"

    def __call__(self, ctx: CamContext) -> CamResult:
        return CamResult(torch.relu(ctx.gradients * ctx.activations[:, None]).sum(dim=2))


class NormGrad:
    """NormGrad (Rebuffi et al., arXiv 2004.02866), with a virtual 1x1 identity layer at A.

    The weight gradient of that layer at position ij is the outer product G_:ij A_:ij^T, whose
    Frobenius norm is the map:  L_kij = ||A_:ij||_2 ||G_k:ij||_2
    """

    name = "normgrad"

    def __call__(self, ctx: CamContext) -> CamResult:
        return CamResult(ctx.activations.norm(dim=1)[:, None] * ctx.gradients.norm(dim=2))


class GradNorm:
    """Gradient norm per cell: Simonyan et al.'s saliency (arXiv 1312.6034) taken at a layer instead of
    the input, one number per cell (token) of the grid: how strongly the target depends on that cell.

    L_kij = ||G_k:ij||_2 over the channels: NormGrad without the activation norm. Unsigned, with no
    channel weights; on the trained transformer fixtures it pointed within 0.01 of NormGrad and well
    above Grad-CAM (README: "Maps on trained standard architectures").
    """

    name = "gradnorm"

    def __call__(self, ctx: CamContext) -> CamResult:
        return CamResult(ctx.gradients.norm(dim=2))


class AttentionRelevance:
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


class LeGrad:
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
    reads_attention = True

    def __call__(self, ctx: CamContext) -> CamResult:
        _, gradients = ctx.attention_gradients
        tokens = sum(torch.relu(g).mean(dim=(2, 3)) for g in gradients) / len(gradients)  # (B, K, L)
        return CamResult(ctx.layout.to_grid(tokens[..., None], leading=2)[:, :, 0])


def first_component(x: Tensor, reference: Tensor) -> Tensor:
    """The projection of each sample's cells on the first principal component of its channels.

    x (N, C, *grid) -> M = x^T reshaped (cells, C), centred per channel; M = U S V^T; returns M V_1
    (N, *grid). The sign of V_1 is arbitrary: it is chosen so the projection correlates positively with
    ``reference`` (N, *grid).
    """
    n, c, grid = x.shape[0], x.shape[1], x.shape[2:]
    centred = x.reshape(n, c, -1).transpose(1, 2)
    centred = centred - centred.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    projection = (centred @ vh[:, 0, :, None])[..., 0]
    return agreeing(projection, reference.reshape(n, -1)).reshape(n, *grid)


def agreeing(projection: Tensor, reference: Tensor) -> Tensor:
    """Each row of ``projection`` (N, cells), a component of arbitrary sign, flipped where it correlates
    negatively with the same row of ``reference`` (N, cells)."""
    agreement = (
        (projection - projection.mean(1, keepdim=True)) * (reference - reference.mean(1, keepdim=True))
    ).sum(1)
    return projection * torch.where(agreement < 0, -1.0, 1.0).to(projection.dtype)[:, None]


def eigen_smoothed(result: CamResult, activations: Tensor) -> CamResult:
    """pytorch-grad-cam's ``eigen_smooth``: in place of the sum over channels of the weighted activations
    w_kc A_c, their first principal component over the channels, per sample and target
    (``first_component``), signed to correlate with the sum: L_k = ReLU(first component of {w_kc A_c}_c).
    It keeps the map's dominant pattern and drops the rest (noise, in the authors' words)."""
    if result.weights is None:
        raise ValueError(
            "eigen smoothing needs a method with channel weights: one of " + ", ".join(CHANNEL_WEIGHT_METHODS)
        )
    weights = result.weights.reshape(*result.weights.shape, *[1] * (activations.ndim - 2))
    weighted = (weights * activations[:, None]).flatten(0, 1)  # (B K, C, *grid)
    projection = first_component(weighted, result.signed.flatten(0, 1))
    return CamResult(projection.reshape(result.signed.shape), result.weights)


class EigenCAM:
    """Eigen-CAM (arXiv 2008.00299): the first principal component of the activations; no gradients.

    M = A^T reshaped (hw, C), centred per channel;  M = U S V^T;  L_ij = ReLU((M V_1)_ij).
    The sign of V_1 is arbitrary: it is chosen so L correlates positively with sum_c A_c.
    The map is class-agnostic: every target gets the same one.
    """

    name = "eigencam"

    def __call__(self, ctx: CamContext) -> CamResult:
        a = ctx.activations
        projection = first_component(a, a.sum(dim=1))
        return CamResult(projection[:, None].expand(a.shape[0], ctx.target_count, *a.shape[2:]))


class EigenGradCAM:
    """Eigen-Grad-CAM (pytorch-grad-cam's ``EigenGradCAM``): Eigen-CAM of the gradient-weighted
    activations, one map per target.

    M_k = (G_k * A)^T reshaped (hw, C), centred per channel;  L_kij = ReLU((M_k V_k1)_ij), V_k1 signed
    to correlate positively with sum_c G_kc A_c (HiResCAM's map).
    """

    name = "eigengradcam"

    def __call__(self, ctx: CamContext) -> CamResult:
        product = (ctx.gradients * ctx.activations[:, None]).flatten(0, 1)  # (B K, C, *grid)
        projection = first_component(product, product.sum(dim=1))
        return CamResult(projection.reshape(*ctx.gradients.shape[:2], *ctx.gradients.shape[3:]))


class KPCACAM:
    """KPCA-CAM (pytorch-grad-cam's ``KPCA_CAM``): Eigen-CAM with kernel
    PCA, the first kernel principal component of the activations; no gradients, one map for every target.

    x_i = the centred activation of cell i (C,);  K_ij = k(x_i, x_j) with k(x, y) = tanh(gamma x.y + 1)
    (``"sigmoid"``) or exp(-gamma ||x - y||^2) (``"rbf"``), gamma = 1/C;  K~ = K centred in feature space;
    K~ = V diag(lambda) V^T;  L_i = ReLU(sqrt(lambda_1) V_i1), V_1 signed to correlate positively with
    sum_c A_c as Eigen-CAM's.
    """

    name = "kpcacam"

    def __init__(self, kernel: str = "sigmoid", gamma: float | None = None):
        if kernel not in ("sigmoid", "rbf"):
            raise ValueError(f"unknown kernel '{kernel}'; use sigmoid or rbf")
        self.kernel = kernel
        self.gamma = gamma

    def __call__(self, ctx: CamContext) -> CamResult:
        a = ctx.activations.double()
        b, c, grid = a.shape[0], a.shape[1], a.shape[2:]
        cells = a.reshape(b, c, -1).transpose(1, 2)
        cells = cells - cells.mean(dim=1, keepdim=True)
        gamma = self.gamma or 1.0 / c
        if self.kernel == "sigmoid":
            kernel = torch.tanh(gamma * cells @ cells.transpose(1, 2) + 1)
        else:
            kernel = torch.exp(-gamma * torch.cdist(cells, cells) ** 2)
        n = kernel.shape[1]
        ones = torch.full((n, n), 1.0 / n, dtype=kernel.dtype, device=kernel.device)
        centred = kernel - ones @ kernel - kernel @ ones + ones @ kernel @ ones
        values, vectors = torch.linalg.eigh(centred)
        projection = vectors[..., -1] * values[:, -1:].clamp(min=0).sqrt()
        projection = agreeing(projection, a.sum(dim=1).reshape(b, -1)).to(ctx.activations.dtype)
        return CamResult(projection.reshape(b, 1, *grid).expand(b, ctx.target_count, *grid))


class FEM:
    """FEM, the feature explanation method (Fuad et al., IPTA 2020): channels weighted by how much of
    their grid is unusually active; no gradients, the same map for every target.

    w_c = 1/(hw) sum_ij [A_cij > mu_c + k sigma_c]  (mu, sigma: the channel's mean and standard
    deviation over the grid, k = 2);  L_ij = ReLU(sum_c w_c A_cij)
    """

    name = "fem"

    def __init__(self, k: float = 2.0):
        self.k = k

    def __call__(self, ctx: CamContext) -> CamResult:
        a = ctx.activations
        axes = grid_axes(a, 2)
        threshold = a.mean(dim=axes, keepdim=True) + self.k * a.std(dim=axes, keepdim=True, correction=0)
        weights = (a > threshold).to(a.dtype).mean(dim=axes)[:, None].expand(-1, ctx.target_count, -1)
        return CamResult(weighted_activations(weights, a), weights)


class RandomCAM:
    """Random channel weights, a baseline for the others (pytorch-grad-cam's ``RandomCAM``): a method
    that scores no better than this says nothing about the model.

    w_kc ~ U(-1, 1) (seeded: the same call gives the same map);  L_k = ReLU(sum_c w_kc A_c)
    """

    name = "randomcam"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def __call__(self, ctx: CamContext) -> CamResult:
        a = ctx.activations
        generator = torch.Generator().manual_seed(self.seed)
        weights = torch.rand(a.shape[0], ctx.target_count, a.shape[1], generator=generator) * 2 - 1
        weights = weights.to(a.device, a.dtype)
        return CamResult(weighted_activations(weights, a), weights)


def score_masks(ctx: CamContext) -> Tensor:
    """Score-CAM's masks: each channel of the activations upsampled to the input and min-max scaled,
    M_c = normalize(upsample(A_c)) in [0, 1], (B, C, *input grid)."""
    return normalize(upsample(ctx.activations, ctx.image_size), len(ctx.image_size))


def softmax_weighted(scores: Tensor, activations: Tensor) -> CamResult:
    """(B, C, K) channel scores -> w_kc = softmax_c(s_kc), L_k = ReLU(sum_c w_kc A_c)."""
    weights = torch.softmax(scores.transpose(1, 2), dim=-1)
    return CamResult(weighted_activations(weights, activations), weights)


class ScoreCAM:
    """Score-CAM (Wang et al., arXiv 1910.01279): channel weights from the scores of masked inputs.

    M_c = normalize(upsample(A_c)) in [0, 1];  s_kc = y_k(x * M_c);
    w_kc = softmax_c(s_kc - y_k(baseline)) = softmax_c(s_kc);   L_k = ReLU(sum_c w_kc A_c)
    (softmax is shift-invariant, so the baseline score of the paper's CIC drops out.)
    """

    name = "scorecam"

    def __init__(self, batch_size: int = 64):
        self.batch_size = batch_size

    def __call__(self, ctx: CamContext) -> CamResult:
        return softmax_weighted(ctx.masked_scores(score_masks(ctx), self.batch_size), ctx.activations)


class ISCAM:
    """IS-CAM (Naidu et al., arXiv 2010.03023): Score-CAM with each mask's score integrated over scaled
    copies of the mask, as torch-cam computes it:

    s_kc = 1/N sum_{i=1}^N y_k(x * a_i M_c),  a_i = sum_{j=1}^{i} j / N;  w_kc = softmax_c(s_kc);
    L_k = ReLU(sum_c w_kc A_c), M_c Score-CAM's masks, N = ``samples`` (10).
    """

    name = "iscam"

    def __init__(self, samples: int = 10, batch_size: int = 64):
        self.samples = samples
        self.batch_size = batch_size

    def __call__(self, ctx: CamContext) -> CamResult:
        masks = score_masks(ctx)
        total, factor = 0.0, 0.0
        for i in range(1, self.samples + 1):
            factor += i / self.samples
            total = total + ctx.masked_scores(factor * masks, self.batch_size)
        return softmax_weighted(total / self.samples, ctx.activations)


class SSCAM:
    """SS-CAM (Wang et al., arXiv 2006.14255): Score-CAM with the masks' scores averaged over noisy masks,
    as torch-cam computes it:

    s_kc = 1/N sum_{i=1}^N y_k(x * (M_c + delta_i)),  delta_i ~ N(0, sigma^2) per pixel (seeded);
    w_kc = softmax_c(s_kc);  L_k = ReLU(sum_c w_kc A_c), M_c Score-CAM's masks, N = 35, sigma = 2.
    """

    name = "sscam"

    def __init__(self, samples: int = 35, sigma: float = 2.0, batch_size: int = 64, seed: int = 0):
        self.samples = samples
        self.sigma = sigma
        self.batch_size = batch_size
        self.seed = seed

    def __call__(self, ctx: CamContext) -> CamResult:
        masks = score_masks(ctx)
        generator = torch.Generator(device=masks.device).manual_seed(self.seed)
        total = 0.0
        for _ in range(self.samples):
            noise = torch.randn(masks.shape, generator=generator, device=masks.device) * self.sigma
            total = total + ctx.masked_scores(masks + noise, self.batch_size)
        return softmax_weighted(total / self.samples, ctx.activations)


class AblationCAM:
    """Ablation-CAM (Desai & Ramaswamy, WACV 2020): a channel weighs what the score loses without it.

    y_k^c = y_k with channel c of the layer's output set to 0;  w_kc = (y_k - y_k^c) / y_k;
    L_k = ReLU(sum_c w_kc A_c). No gradients: one forward per channel, ``batch_size`` rows a forward.
    """

    name = "ablationcam"

    def __init__(self, batch_size: int = 256):
        self.batch_size = batch_size

    def __call__(self, ctx: CamContext) -> CamResult:
        ctx.refuse_rows("Ablation-CAM weighs the channels by each image's scores")
        ablated = ctx.ablated_scores(self.batch_size).transpose(1, 2)  # (B, K, C)
        clean = ctx.scores.detach().to(ctx.activations.dtype)[..., None]
        weights = _safe_divide(clean - ablated, clean.expand_as(ablated))
        return CamResult(weighted_activations(weights, ctx.activations), weights)


class Perturbation:
    """Perturbation saliency (Greydanus et al., arXiv 1711.00138): how much each target's score changes
    when the image around a point is blurred, for every point of a grid; no gradient, no layer.

    M_ij(x) = exp(-||x - p_ij||^2 / (2 sigma^2)),  Phi_ij(I) = I (1 - M_ij) + blur(I) M_ij,
    S_k(i, j) = 1/2 (y_k(I) - y_k(Phi_ij(I)))^2,
    p_ij the centres of an h x w grid of cells of side ``stride``. ``stride``, ``sigma`` and the blur's
    standard deviation default to the paper's 5, 5 and 3 px at 84 px, scaled to the image's shorter
    side. All points of all samples share batched forwards (``batch_size`` rows each).
    """

    name = "perturbation"

    def __init__(self, batch_size: int = 256, stride: int | None = None, sigma: float | None = None):
        self.batch_size = batch_size
        self.stride = stride
        self.sigma = sigma

    def __call__(self, ctx: CamContext) -> CamResult:
        if len(ctx.image_size) != 2:
            raise ValueError("perturbation saliency explains images; for video use a CAM method")
        height, width = ctx.image_size
        scale = min(height, width) / 84
        stride = self.stride or max(1, round(5 * scale))
        sigma = self.sigma or 5 * scale
        rows, columns = math.ceil(height / stride), math.ceil(width / stride)
        device = ctx.image.device
        across_y = _bumps(height, rows, sigma, device)[:, None, :, None]  # (rows, 1, H, 1)
        across_x = _bumps(width, columns, sigma, device)[None, :, None, :]  # (1, columns, 1, W)
        blurred_disc = (across_y * across_x).flatten(0, 1)  # (rows * columns, H, W): M_ij
        blur_sigma = 3 * scale
        kernel = 2 * math.ceil(3 * blur_sigma) + 1
        blurred = gaussian_blur(
            ctx.image.to(ctx.activations.dtype), [kernel, kernel], [blur_sigma, blur_sigma]
        )
        keep = (1 - blurred_disc)[None].expand(ctx.image.shape[0], -1, -1, -1)
        scores = ctx.masked_scores(keep, self.batch_size, fill=blurred)  # (B, P, K)
        change = 0.5 * (ctx.scores.detach().to(ctx.activations.dtype)[:, None] - scores) ** 2
        batch, targets = ctx.scores.shape
        return CamResult(change.transpose(1, 2).reshape(batch, targets, rows, columns))


def _bumps(length: int, count: int, sigma: float, device: torch.device) -> Tensor:
    """(count, length) Gaussians exp(-(t - c)^2 / (2 sigma^2)) centred on the middles of ``count`` equal
    cells of a line of ``length`` pixels."""
    pixels = torch.arange(length, device=device, dtype=torch.float32)
    centres = (torch.arange(count, device=device, dtype=torch.float32) + 0.5) * length / count
    return torch.exp(-((pixels[None] - centres[:, None]) ** 2) / (2 * sigma**2))


class GuidedBackprop:
    """Guided Backpropagation (Springenberg et al., arXiv 1412.6806), at input resolution.

    R = dy/dx with every ReLU passing back only positive gradients where its input was positive;
    L_kij = ||R_k:ij||_2 over the input channels.
    """

    name = "guided-backprop"

    def __call__(self, ctx: CamContext) -> CamResult:
        return CamResult(ctx.guided_input_gradients.norm(dim=2))


def _scaled_channels(parts: Tensor, axes: int) -> Tensor:
    """FullGrad's post-processing: |m| min-max scaled per channel map, then summed over the channels,
    (B, K, C, *grid) -> (B, K, *grid)."""
    return normalize(parts.abs(), axes).sum(dim=2)


class FullGrad:
    """FullGrad (Srinivas & Fleuret, arXiv 1905.00780): the input-gradient and every bias-gradient, each
    made a map at input resolution and summed; the layer is not used.

    L_k = psi(x * dy_k/dx) + sum_l up(psi(b_l * dy_k/dz_l)),  psi(m) = sum_c normalize(|m_c|)
    z_l the output of each convolution and batch norm l with a bias b_l per channel (a batch norm's
    effective bias beta - mu gamma / sqrt(var + eps)), ``up`` the explainer's upsampling to the input.
    Each channel is min-max scaled on its own, as pytorch-grad-cam does, so a bias's size drops out (only
    whether it is 0 counts); the paper's code scales a layer's channels together. ``up`` is linear, so the
    channels are summed before it, not after. Two forwards (the explainer's and FullGrad's own, from the
    image) and one vectorized backward to the image for all K targets.
    """

    name = "fullgrad"

    def __call__(self, ctx: CamContext) -> CamResult:
        input_part, bias_parts = ctx.full_gradients
        axes = len(ctx.image_size)
        total = _scaled_channels(input_part, axes)
        for part in bias_parts:
            total = total + upsample(_scaled_channels(part, axes), ctx.image_size, ctx.upsampling)
        return CamResult(total)


class GuidedGradCAM:
    """Guided Grad-CAM (the Grad-CAM paper): guided backprop times the upsampled Grad-CAM map.

    L_kij = upsample(Grad-CAM_k)_ij * ||R_k:ij||_2, R the guided input gradient, the upsampling the
    explainer's (captum's GuidedGradCam with ``interpolate_mode="nearest"`` is this map per input
    channel: its L2 norm over channels equals ours with ``upsampling="nearest"``).
    """

    name = "guided-gradcam"

    def __call__(self, ctx: CamContext) -> CamResult:
        cam = GradCAM()(ctx)
        guided = ctx.guided_input_gradients.norm(dim=2)
        return CamResult(upsample(cam.raw, ctx.image_size, ctx.upsampling) * guided, cam.weights)


METHODS = {
    method.name: method
    for method in (
        GradCAM,
        CounterfactualCAM,
        GradCAMPlusPlus,
        SmoothGradCAMPlusPlus,
        ShapleyCAM,
        XGradCAM,
        HiResCAM,
        LayerCAM,
        GradCAMElementWise,
        NormGrad,
        GradNorm,
        AttentionRelevance,
        LeGrad,
        EigenCAM,
        EigenGradCAM,
        KPCACAM,
        FEM,
        RandomCAM,
        ScoreCAM,
        ISCAM,
        SSCAM,
        AblationCAM,
        Perturbation,
        GuidedBackprop,
        GuidedGradCAM,
        FullGrad,
    )
}


def _key(name: str) -> str:
    return name.lower().replace("plusplus", "++").replace("_", "").replace("-", "").replace(" ", "")


# Methods whose map is ReLU(sum_c w_kc A_c): their channel weights w_kc say which units a target rests on.
CHANNEL_WEIGHT_METHODS = (
    "gradcam",
    "counterfactual",
    "gradcam++",
    "smooth-gradcam++",
    "shapleycam",
    "xgradcam",
    "scorecam",
    "iscam",
    "sscam",
    "ablationcam",
    "guided-gradcam",
)


def get_method(method: str | object) -> object:
    """A method instance from its name (case, '-' and '_' ignored; 'plusplus' = '++') or an instance."""
    if not isinstance(method, str):
        return method
    by_key = {_key(name): cls for name, cls in METHODS.items()}
    if _key(method) not in by_key:
        raise ValueError(f"unknown method '{method}'; choose one of: {', '.join(METHODS)}")
    return by_key[_key(method)]()
