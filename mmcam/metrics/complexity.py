"""How concentrated a map is, whatever it points at: sparseness (Chalasani et al., arXiv 1810.06583, the
Gini index of the map) and complexity (Bhatt et al., arXiv 2005.00631, the entropy of the map's
fractional contributions), as Quantus defines them. Both take (K, H, W) maps and give (K,)."""

from __future__ import annotations

import torch
from torch import Tensor

from mmcam.metrics.contract import Case, Metric


def sparseness(maps: Tensor) -> Tensor:
    """Gini index of |L| over the pixels, in [0, 1] (1: all mass on one pixel; higher is sparser):
    with a_1 <= ... <= a_n the sorted values, G = sum_i (2i - n - 1) a_i / (n sum_i a_i); 0 for an
    all-zero map."""
    values = maps.abs().flatten(1).double().sort(dim=1).values
    n = values.shape[1]
    ranks = torch.arange(1, n + 1, dtype=values.dtype, device=values.device)
    total = values.sum(dim=1)
    gini = ((2 * ranks - n - 1) * values).sum(dim=1) / (n * torch.where(total > 0, total, 1))
    return gini.float()


def complexity(maps: Tensor) -> Tensor:
    """Entropy of the fractional contributions p_i = |L_i| / sum_j |L_j| (lower is simpler):
    H = -sum_i p_i ln p_i, with 0 ln 0 = 0; ln n (the most complex) for an all-zero map read as uniform."""
    values = maps.abs().flatten(1).double()
    total = values.sum(dim=1, keepdim=True)
    shares = torch.where(total > 0, values / torch.where(total > 0, total, 1), 1.0 / values.shape[1])
    return -(torch.special.xlogy(shares, shares)).sum(dim=1).float()


class Sparseness(Metric):
    """``sparseness`` of each map."""

    name, label, better = "sparseness", "sparseness (Gini)", "higher"

    def __call__(self, case: Case) -> Tensor:
        return sparseness(case.maps)


class Complexity(Metric):
    """``complexity`` of each map."""

    name, label, better = "complexity", "complexity (entropy)", "lower"

    def __call__(self, case: Case) -> Tensor:
        return complexity(case.maps)
