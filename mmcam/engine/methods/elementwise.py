"""Element-wise CAMs: the map combines G and A cell by cell, with no weight per channel."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from mmcam.engine.methods.base import CamMethod, CamResult

if TYPE_CHECKING:
    from mmcam.engine.context import CamContext


class HiResCAM(CamMethod):
    """HiResCAM (Draelos & Carin, arXiv 2011.08891): gradients times activations, element-wise.

    L_kij = ReLU(sum_c G_kcij A_cij)
    """

    name = "hirescam"
    per_target = True
    map_in_score_units = True
    summary = "gradient x activation, per element"
    paper = "Draelos & Carin, arXiv 2011.08891"
    peers = "pytorch-grad-cam (1e-4)"

    def __call__(self, ctx: CamContext) -> CamResult:
        return CamResult((ctx.gradients * ctx.activations[:, None]).sum(dim=2))


class LayerCAM(CamMethod):
    """LayerCAM (Jiang et al., IEEE TIP 2021): positive gradients as per-pixel weights.

    L_kij = ReLU(sum_c ReLU(G_kcij) A_cij)
    """

    name = "layercam"
    per_target = True
    summary = "positive gradient x activation, per element"
    paper = "Jiang et al., IEEE TIP 2021"
    peers = "pytorch-grad-cam (1e-4); torch-cam"

    def __call__(self, ctx: CamContext) -> CamResult:
        return CamResult((torch.relu(ctx.gradients) * ctx.activations[:, None]).sum(dim=2))


class GradCAMElementWise(CamMethod):
    """Grad-CAM element-wise (pytorch-grad-cam's ``GradCAMElementWise``): HiResCAM with each channel's
    product clipped before the sum, so no channel's negative evidence cancels another's positive one.

    L_kij = sum_c ReLU(G_kcij A_cij)
    """

    name = "gradcam-elementwise"
    per_target = True
    summary = "ReLU of gradient x activation per channel and element, summed"
    paper = "pytorch-grad-cam's GradCAMElementWise"
    peers = "pytorch-grad-cam (1e-4)"

    def __call__(self, ctx: CamContext) -> CamResult:
        return CamResult(torch.relu(ctx.gradients * ctx.activations[:, None]).sum(dim=2))


class NormGrad(CamMethod):
    """NormGrad (Rebuffi et al., arXiv 2004.02866), with a virtual 1x1 identity layer at A.

    The weight gradient of that layer at position ij is the outer product G_:ij A_:ij^T, whose
    Frobenius norm is the map:  L_kij = ||A_:ij||_2 ||G_k:ij||_2
    """

    name = "normgrad"
    per_target = True
    summary = "norm of activation x norm of gradient, per position"
    paper = "Rebuffi et al., arXiv 2004.02866"

    def __call__(self, ctx: CamContext) -> CamResult:
        return CamResult(ctx.activations.norm(dim=1)[:, None] * ctx.gradients.norm(dim=2))


class GradNorm(CamMethod):
    """Gradient norm per cell: Simonyan et al.'s saliency (arXiv 1312.6034) taken at a layer instead of
    the input, one number per cell (token) of the grid: how strongly the target depends on that cell.

    L_kij = ||G_k:ij||_2 over the channels: NormGrad without the activation norm. Unsigned, with no
    channel weights; on the trained transformer fixtures it pointed within 0.01 of NormGrad and well
    above Grad-CAM (README: "Maps on trained standard architectures").
    """

    name = "gradnorm"
    per_target = True
    summary = "norm of the gradient, per position (Simonyan et al.'s saliency at a layer)"
    paper = "Simonyan et al., arXiv 1312.6034"

    def __call__(self, ctx: CamContext) -> CamResult:
        return CamResult(ctx.gradients.norm(dim=2))
