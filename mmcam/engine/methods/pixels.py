"""Methods at the input's resolution: gradients at the image (guided backprop, FullGrad), alone or times
an upsampled CAM (guided Grad-CAM)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor

from mmcam.engine.methods.base import CamMethod, CamResult
from mmcam.engine.methods.channel import GradCAM
from mmcam.engine.resize import normalize, upsample

if TYPE_CHECKING:
    from mmcam.engine.context import CamContext


class GuidedBackprop(CamMethod):
    """Guided Backpropagation (Springenberg et al., arXiv 1412.6806), at input resolution.

    R = dy/dx with every ReLU passing back only positive gradients where its input was positive;
    L_kij = ||R_k:ij||_2 over the input channels.
    """

    name = "guided-backprop"
    summary = "guided ReLU gradients at the input"
    paper = "Springenberg et al., arXiv 1412.6806"
    peers = "pytorch-grad-cam, captum (not compared)"

    def __call__(self, ctx: CamContext) -> CamResult:
        return CamResult(ctx.guided_input_gradients.norm(dim=2))


class GuidedGradCAM(CamMethod):
    """Guided Grad-CAM (the Grad-CAM paper): guided backprop times the upsampled Grad-CAM map.

    L_kij = upsample(Grad-CAM_k)_ij * ||R_k:ij||_2, R the guided input gradient, the upsampling the
    explainer's (captum's GuidedGradCam with ``interpolate_mode="nearest"`` is this map per input
    channel: its L2 norm over channels equals ours with ``upsampling="nearest"``). Its channel weights are
    Grad-CAM's; eigen smoothing smooths the Grad-CAM factor.
    """

    name = "guided-gradcam"
    summary = "guided backprop x upsampled Grad-CAM"
    paper = "Selvaraju et al., arXiv 1610.02391"
    peers = "captum (GuidedGradCam, 1e-4 per its channel norm)"
    channel_weights = True

    def __call__(self, ctx: CamContext) -> CamResult:
        return self._guided(GradCAM()(ctx), ctx)

    def eigen_smoothed(self, ctx: CamContext) -> CamResult:
        return self._guided(GradCAM().eigen_smoothed(ctx), ctx)

    @staticmethod
    def _guided(cam: CamResult, ctx: CamContext) -> CamResult:
        guided = ctx.guided_input_gradients.norm(dim=2)
        return CamResult(upsample(cam.raw, ctx.image_size, ctx.upsampling) * guided, cam.weights)


def _scaled_channels(parts: Tensor, axes: int) -> Tensor:
    """FullGrad's post-processing: |m| min-max scaled per channel map, then summed over the channels,
    (B, K, C, *grid) -> (B, K, *grid)."""
    return normalize(parts.abs(), axes).sum(dim=2)


class FullGrad(CamMethod):
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
    summary = (
        "the input gradient x input and every convolution's and batch norm's bias x its output gradient, each "
        "channel min-max scaled, upsampled and summed (no layer; one extra forward and one backward to the "
        "image for all targets)"
    )
    paper = "Srinivas & Fleuret, arXiv 1905.00780"
    peers = (
        "pytorch-grad-cam (1e-4 on the seeded resnet18 scaled x1000; on the plain one 2e-3, its 1e-7 guard "
        "against tiny gradients)"
    )

    def __call__(self, ctx: CamContext) -> CamResult:
        input_part, bias_parts = ctx.full_gradients
        axes = len(ctx.image_size)
        total = _scaled_channels(input_part, axes)
        for part in bias_parts:
            total = total + upsample(_scaled_channels(part, axes), ctx.image_size, ctx.upsampling)
        return CamResult(total)
