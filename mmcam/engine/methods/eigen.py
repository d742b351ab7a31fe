"""Eigen methods: the map is the first (kernel) principal component of the layer's channels."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from mmcam.engine.methods.base import CamMethod, CamResult
from mmcam.engine.methods.components import agreeing, first_component

if TYPE_CHECKING:
    from mmcam.engine.context import CamContext


class EigenCAM(CamMethod):
    """Eigen-CAM (arXiv 2008.00299): the first principal component of the activations; no gradients.

    M = A^T reshaped (hw, C), centred per channel;  M = U S V^T;  L_ij = ReLU((M V_1)_ij).
    The sign of V_1 is arbitrary: it is chosen so L correlates positively with sum_c A_c.
    The map is class-agnostic: every target gets the same one.
    """

    name = "eigencam"
    summary = "first principal component of the activations (no gradients)"
    paper = "Muhammad & Yeasin, arXiv 2008.00299"
    peers = "pytorch-grad-cam (1e-4, up to the component's sign)"
    needs_gradients = False

    def __call__(self, ctx: CamContext) -> CamResult:
        a = ctx.activations
        projection = first_component(a, a.sum(dim=1))
        return CamResult(projection[:, None].expand(a.shape[0], ctx.target_count, *a.shape[2:]))


class EigenGradCAM(CamMethod):
    """Eigen-Grad-CAM (pytorch-grad-cam's ``EigenGradCAM``): Eigen-CAM of the gradient-weighted
    activations, one map per target.

    M_k = (G_k * A)^T reshaped (hw, C), centred per channel;  L_kij = ReLU((M_k V_k1)_ij), V_k1 signed
    to correlate positively with sum_c G_kc A_c (HiResCAM's map).
    """

    name = "eigengradcam"
    summary = "first principal component of gradient x activation, per target"
    paper = "pytorch-grad-cam's EigenGradCAM"
    peers = "pytorch-grad-cam (1e-4, up to the sign)"

    def __call__(self, ctx: CamContext) -> CamResult:
        product = (ctx.gradients * ctx.activations[:, None]).flatten(0, 1)  # (B K, C, *grid)
        projection = first_component(product, product.sum(dim=1))
        return CamResult(projection.reshape(*ctx.gradients.shape[:2], *ctx.gradients.shape[3:]))


class KPCACAM(CamMethod):
    """KPCA-CAM (pytorch-grad-cam's ``KPCA_CAM``): Eigen-CAM with kernel
    PCA, the first kernel principal component of the activations; no gradients, one map for every target.

    x_i = the centred activation of cell i (C,);  K_ij = k(x_i, x_j) with k(x, y) = tanh(gamma x.y + 1)
    (``"sigmoid"``) or exp(-gamma ||x - y||^2) (``"rbf"``), gamma = 1/C;  K~ = K centred in feature space;
    K~ = V diag(lambda) V^T;  L_i = ReLU(sqrt(lambda_1) V_i1), V_1 signed to correlate positively with
    sum_c A_c as Eigen-CAM's.
    """

    name = "kpcacam"
    summary = "first kernel principal component of the activations (sigmoid or RBF kernel; no gradients)"
    paper = "pytorch-grad-cam's KPCA_CAM"
    peers = "pytorch-grad-cam (1e-4, up to the sign; scikit-learn's KernelPCA, 1e-5)"
    needs_gradients = False

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
