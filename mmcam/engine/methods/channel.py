"""Channel-weight CAMs whose weights come from the gradients or the activations themselves: each says how
it weighs the channels (``weights``), the map is ReLU(sum_c w_kc A_c) (``base.ChannelWeightCAM``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from mmcam.engine.methods.base import CamResult, ChannelWeightCAM, grid_axes, safe_divide

if TYPE_CHECKING:
    from mmcam.engine.context import CamContext


class GradCAM(ChannelWeightCAM):
    """Grad-CAM (Selvaraju et al., arXiv 1610.02391).

    alpha_kc = 1/(hw) sum_ij G_kcij;   L_k = ReLU(sum_c alpha_kc A_c)
    """

    name = "gradcam"
    per_target = True
    map_in_score_units = True
    summary = "spatial mean of gradients"
    paper = "Selvaraju et al., arXiv 1610.02391"
    peers = "pytorch-grad-cam (1e-4), captum (1e-6); torch-cam"

    def weights(self, ctx: CamContext) -> Tensor:
        return ctx.gradients.mean(dim=grid_axes(ctx.gradients, 3))

    def unit_contributions(self, ctx: CamContext, result: CamResult) -> Tensor:
        """x_kc = sum_ij G_kcij A_cij, the channel's first-order part in the score (what zeroing it removes, to
        first order; exactly, where the score reads the layer linearly). Where the gradient is the same over the
        grid (a pooled linear head) it is hw alpha_kc mean_ij A_cij, Grad-CAM's weight times the activation;
        where the score reads the cells unequally (a policy's flatten-and-linear head, a ViT's attention) it
        counts the activation where the gradient reaches it."""
        return first_order_units(ctx)


def first_order_units(ctx: CamContext) -> Tensor:
    """(B, K, C): sum_ij G_kcij A_cij, each channel's first-order contribution to each target."""
    return (ctx.gradients * ctx.activations[:, None]).flatten(3).sum(-1)


class CounterfactualCAM(ChannelWeightCAM):
    """Counterfactual Grad-CAM: the regions whose presence lowers the target (negated gradients).

    alpha_kc = 1/(hw) sum_ij -G_kcij;   L_k = ReLU(sum_c alpha_kc A_c)
    """

    name = "counterfactual"
    per_target = True
    map_in_score_units = True
    summary = "Grad-CAM of the negated target"
    paper = "Selvaraju et al., arXiv 1610.02391"

    def weights(self, ctx: CamContext) -> Tensor:
        return -ctx.gradients.mean(dim=grid_axes(ctx.gradients, 3))

    def unit_contributions(self, ctx: CamContext, result: CamResult) -> Tensor:
        """x_kc = -sum_ij G_kcij A_cij: Grad-CAM's, of the negated target."""
        return -first_order_units(ctx)


def plusplus_weights(activations: Tensor, g1: Tensor, g2: Tensor, g3: Tensor) -> Tensor:
    """Grad-CAM++ weights from the first three derivative moments (Chattopadhyay et al., eq. 19).

    a_kcij = g2 / (2 g2 + sum_ab A_cab g3)   (0 where the gradient vanishes)
    w_kc   = sum_ij a_kcij ReLU(g1_kcij)
    """
    activation_sums = activations.sum(dim=grid_axes(activations, 2), keepdim=True)[:, None]
    alpha = safe_divide(g2, 2 * g2 + activation_sums * g3)
    return (alpha * torch.relu(g1)).sum(dim=grid_axes(g1, 3))


class GradCAMPlusPlus(ChannelWeightCAM):
    """Grad-CAM++ (arXiv 1710.11063): per-pixel weighted positive gradients.

    w_kc = sum_ij a_kcij ReLU(G_kcij),  a_kcij = G^2 / (2 G^2 + sum_ab A_cab G^3);
    L_k = ReLU(sum_c w_kc A_c)
    """

    name = "gradcam++"
    per_target = True
    summary = "positive gradients weighted per pixel"
    paper = "Chattopadhyay et al., arXiv 1710.11063"
    peers = "pytorch-grad-cam (1e-4); torch-cam"

    def weights(self, ctx: CamContext) -> Tensor:
        g = ctx.gradients
        return plusplus_weights(ctx.activations, g, g**2, g**3)


class SmoothGradCAMPlusPlus(ChannelWeightCAM):
    """Smooth Grad-CAM++ (arXiv 1908.01224): Grad-CAM++ with SmoothGrad-averaged derivatives.

    D_n = 1/S sum_s (G(x + eps_s))^n for n = 1, 2, 3, eps_s ~ N(0, (sigma * (max x - min x))^2);
    w_kc = sum_ij D2 / (2 D2 + sum_ab A_cab D3) ReLU(D1);   L_k = ReLU(sum_c w_kc A_c)
    """

    name = "smooth-gradcam++"
    summary = "Grad-CAM++ with noise-averaged derivatives"
    paper = "Omeiza et al., arXiv 1908.01224"
    peers = (
        "torch-cam (a formula of its own: not compared); the paper's formula written in the tests on "
        "pytorch-grad-cam's Grad-CAM++ hooks, fed the same noisy copies: 1e-4"
    )

    def __init__(self, samples: int = 8, sigma: float = 0.15):
        self.samples = samples
        self.sigma = sigma

    def weights(self, ctx: CamContext) -> Tensor:
        g1, g2, g3 = ctx.noisy_gradient_moments(self.samples, self.sigma)
        return plusplus_weights(ctx.activations, g1, g2, g3)


class ShapleyCAM(ChannelWeightCAM):
    """ShapleyCAM (Cai et al., arXiv 2501.06261): Grad-CAM with the channel weights corrected by the
    target's curvature, the second-order term of a Taylor approximation of each channel's Shapley value.

    w_kc = 1/(hw) sum_ij (G_kcij - 1/2 (H_k A)_cij);   L_k = ReLU(sum_c w_kc A_c)
    H_k A: the Hessian of y_k with respect to A times A (``CamContext.curvature``), from a second
    vectorized backward for all K targets. It vanishes, and ShapleyCAM is Grad-CAM, where y_k is linear
    in A above the layer (a ReLU network's logit); the paper explains probabilities (softmax outputs).
    """

    name = "shapleycam"
    map_in_score_units = True
    summary = (
        "Grad-CAM's weights corrected by the target's curvature, mean of G - 1/2 (H A) (a second vectorized "
        "backward for all targets; equal to Grad-CAM for a logit above a linear head)"
    )
    paper = "Cai et al., arXiv 2501.06261"
    peers = "pytorch-grad-cam (1e-4, logit and log-softmax targets)"
    second_order = True

    def weights(self, ctx: CamContext) -> Tensor:
        corrected = ctx.gradients - 0.5 * ctx.curvature
        return corrected.mean(dim=grid_axes(corrected, 3))


class XGradCAM(ChannelWeightCAM):
    """XGrad-CAM (Fu et al., arXiv 2008.02312): activation-normalized gradient weights.

    w_kc = sum_ij (A_cij / sum_ab A_cab) G_kcij;   L_k = ReLU(sum_c w_kc A_c)
    """

    name = "xgradcam"
    per_target = True
    map_in_score_units = True
    summary = "activation-normalized gradients"
    paper = "Fu et al., arXiv 2008.02312"
    peers = "pytorch-grad-cam (1e-4); torch-cam"

    def weights(self, ctx: CamContext) -> Tensor:
        a = ctx.activations
        share = safe_divide(a, a.sum(dim=grid_axes(a, 2), keepdim=True))
        return (share[:, None] * ctx.gradients).sum(dim=grid_axes(ctx.gradients, 3))


class FEM(ChannelWeightCAM):
    """FEM, the feature explanation method (Fuad et al., IPTA 2020): channels weighted by how much of
    their grid is unusually active; no gradients, the same map for every target.

    w_c = 1/(hw) sum_ij [A_cij > mu_c + k sigma_c]  (mu, sigma: the channel's mean and standard
    deviation over the grid, k = 2);  L_ij = ReLU(sum_c w_c A_cij)
    """

    name = "fem"
    summary = "channels weighted by their share of cells above mean + 2 std (no gradients)"
    paper = "Fuad et al., IPTA 2020"
    peers = "pytorch-grad-cam (1e-4)"
    needs_gradients = False

    def __init__(self, k: float = 2.0):
        self.k = k

    def weights(self, ctx: CamContext) -> Tensor:
        a = ctx.activations
        axes = grid_axes(a, 2)
        threshold = a.mean(dim=axes, keepdim=True) + self.k * a.std(dim=axes, keepdim=True, correction=0)
        return (a > threshold).to(a.dtype).mean(dim=axes)[:, None].expand(-1, ctx.target_count, -1)


class RandomCAM(ChannelWeightCAM):
    """Random channel weights, a baseline for the others (pytorch-grad-cam's ``RandomCAM``): a method
    that scores no better than this says nothing about the model.

    w_kc ~ U(-1, 1) (seeded: the same call gives the same map);  L_k = ReLU(sum_c w_kc A_c)
    """

    name = "randomcam"
    summary = "uniform random channel weights in [-1, 1], seeded: a baseline"
    paper = "pytorch-grad-cam's RandomCAM"
    peers = "pytorch-grad-cam (its weights are unseeded)"
    needs_gradients = False

    def __init__(self, seed: int = 0):
        self.seed = seed

    def weights(self, ctx: CamContext) -> Tensor:
        a = ctx.activations
        generator = torch.Generator().manual_seed(self.seed)
        weights = torch.rand(a.shape[0], ctx.target_count, a.shape[1], generator=generator) * 2 - 1
        return weights.to(a.device, a.dtype)
