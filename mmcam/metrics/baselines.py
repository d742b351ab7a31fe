"""Maps that know nothing about the model, scored by the same metrics as the methods."""

from __future__ import annotations

import torch
from torch import Tensor

CENTER_SIGMA = 0.25  # of the image side


def uniform_maps(count: int, size: tuple[int, int], device: torch.device | str = "cpu") -> Tensor:
    """(count, H, W) constant maps: L(x) = 1 everywhere."""
    return torch.ones(count, *size, device=device)


def center_maps(
    count: int, size: tuple[int, int], sigma: float = CENTER_SIGMA, device: torch.device | str = "cpu"
) -> Tensor:
    """(count, H, W) center-prior maps, a Gaussian at the image center in [0, 1]:

        L(x, y) = exp(-((x - cx)^2 / (2 (sigma W)^2) + (y - cy)^2 / (2 (sigma H)^2))),

    at pixel centers, (cx, cy) = (W / 2, H / 2); the center baseline of the pointing game (Zhang et al.,
    arXiv 1608.00507)."""
    height, width = size
    ys = (torch.arange(height, device=device) + 0.5 - height / 2) / (sigma * height)
    xs = (torch.arange(width, device=device) + 0.5 - width / 2) / (sigma * width)
    prior = torch.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / 2)
    return prior.expand(count, height, width).clone()


BASELINES = {"uniform": uniform_maps, "center": center_maps}
