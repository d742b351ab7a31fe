"""Where a map's mass goes: the share of it on each object, against the share of the image the object covers."""

from __future__ import annotations

import torch
from torch import Tensor


def mass_shares(maps: Tensor, masks: dict[str, Tensor]) -> dict[str, Tensor]:
    """(N, H, W) maps and boolean (N, H, W) masks by name -> (N,) share of each map's mass on each mask.

    share_k = sum_x L(x) M_k(x) / sum_x L(x), for a map L >= 0 and a mask M_k; a map with no mass
    (all zero) has share 0 everywhere. Disjoint masks have shares that sum to at most 1.
    """
    maps = maps.float()
    total = maps.sum(dim=(-2, -1))
    safe = torch.where(total > 0, total, 1)
    return {
        name: (maps * mask.to(maps.device, maps.dtype)).sum(dim=(-2, -1)) / safe * (total > 0)
        for name, mask in masks.items()
    }


def area_shares(masks: dict[str, Tensor]) -> dict[str, Tensor]:
    """The share of the image each mask covers, (N,) per name: what a uniform map would put on it."""
    return {name: mask.float().mean(dim=(-2, -1)) for name, mask in masks.items()}
