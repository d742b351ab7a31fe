"""Rank correlation between maps, batched: the measure behind the occlusion and sanity checks."""

from __future__ import annotations

import torch
from torch import Tensor


def average_ranks(values: Tensor) -> Tensor:
    """(N, L) values -> (N, L) float ranks 0..L-1 along each row, tied values sharing their mean rank.

    rank(x_i) = (#{j: x_j < x_i} + #{j: x_j <= x_i} - 1) / 2, which is the average of the positions the
    ties occupy in sorted order (ReLU'd maps have large tied zero regions, so ties matter).
    """
    values = values.float().contiguous()
    ordered = values.sort(dim=1).values
    below = torch.searchsorted(ordered, values, right=False)
    at_most = torch.searchsorted(ordered, values, right=True)
    return (below + at_most - 1).float() / 2


def spearman(first: Tensor, second: Tensor) -> Tensor:
    """Spearman's rank correlation of each pair of rows: (N, ...) and (N, ...) -> (N,) in [-1, 1].

    rho = Pearson(rank(a), rank(b)) = cov(R_a, R_b) / (sd(R_a) sd(R_b)), with average ranks for ties
    (Spearman 1904). A constant row has no ranking: its correlation is defined as 0.
    """
    if first.shape != second.shape:
        raise ValueError(
            f"rank correlation needs maps of one shape, got {tuple(first.shape)} and {tuple(second.shape)}"
        )
    ranks_a = average_ranks(first.flatten(1))
    ranks_b = average_ranks(second.flatten(1))
    ranks_a = ranks_a - ranks_a.mean(dim=1, keepdim=True)
    ranks_b = ranks_b - ranks_b.mean(dim=1, keepdim=True)
    spread = ranks_a.norm(dim=1) * ranks_b.norm(dim=1)
    covariance = (ranks_a * ranks_b).sum(dim=1)
    return torch.where(spread > 0, covariance / torch.where(spread > 0, spread, 1), 0.0)
