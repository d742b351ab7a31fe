"""Perturbation methods: no gradient, no layer weights; the map is how each target's score changes when
a region of the input is altered, every region a copy of the input in batched forwards."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torchvision.transforms.functional import gaussian_blur

from mmcam.engine.methods.base import CamMethod, CamResult

if TYPE_CHECKING:
    from mmcam.engine.context import CamContext


class Perturbation(CamMethod):
    """Perturbation saliency (Greydanus et al., arXiv 1711.00138): how much each target's score changes
    when the image around a point is blurred, for every point of a grid; no gradient, no layer.

    M_ij(x) = exp(-||x - p_ij||^2 / (2 sigma^2)),  Phi_ij(I) = I (1 - M_ij) + blur(I) M_ij,
    S_k(i, j) = 1/2 (y_k(I) - y_k(Phi_ij(I)))^2,
    p_ij the centres of an h x w grid of cells of side ``stride``. ``stride``, ``sigma`` and the blur's
    standard deviation default to the paper's 5, 5 and 3 px at 84 px, scaled to the image's shorter
    side. All points of all samples share batched forwards (``batch_size`` rows each).
    """

    name = "perturbation"
    summary = (
        "half the squared score change when a blurred disc replaces the image around each grid point "
        "(batched points; no layer; fails the RL sanity check, see the README's RL actions)"
    )
    paper = "Greydanus et al., arXiv 1711.00138"
    needs_gradients = False
    perturbation = True

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
