"""The one result type every task, metric, figure and command consumes."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Explanation:
    """Maps for B samples and K targets each.

    maps:    (B, K, H, W) in [0, 1], at input resolution, on the input's device.
    raw:     (B, K, h, w) unnormalized maps at the method's resolution (the layer's grid; the
             input's for the pixel-level guided methods).
    scores:  (B, K) the explained scalars.
    labels:  B lists of K names; indices: the output index each target read (class, answer, word).
    weights: (B, K, C) per-channel importance where the method has it (Grad-CAM's alpha), else None.
    """

    maps: Tensor
    raw: Tensor
    scores: Tensor
    labels: list[list[str]]
    indices: list[list[int | None]]
    layer: str
    method: str
    weights: Tensor | None = None

    def peaks(self) -> Tensor:
        """(B, K, 2) integer (x, y) input-pixel coordinates of each map's maximum."""
        width = self.maps.shape[-1]
        flat = self.maps.flatten(-2).argmax(dim=-1)
        return torch.stack((flat % width, flat // width), dim=-1)
