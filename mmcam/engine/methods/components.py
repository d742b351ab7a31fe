"""Principal components of a grid's channels, for Eigen-CAM and eigen smoothing."""

from __future__ import annotations

import torch
from torch import Tensor


def first_component(x: Tensor, reference: Tensor) -> Tensor:
    """The projection of each sample's cells on the first principal component of its channels.

    x (N, C, *grid) -> M = x^T reshaped (cells, C), centred per channel; M = U S V^T; returns M V_1
    (N, *grid). The sign of V_1 is arbitrary: it is chosen so the projection correlates positively with
    ``reference`` (N, *grid).
    """
    n, c, grid = x.shape[0], x.shape[1], x.shape[2:]
    centred = x.reshape(n, c, -1).transpose(1, 2)
    centred = centred - centred.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    projection = (centred @ vh[:, 0, :, None])[..., 0]
    return agreeing(projection, reference.reshape(n, -1)).reshape(n, *grid)


def agreeing(projection: Tensor, reference: Tensor) -> Tensor:
    """Each row of ``projection`` (N, cells), a component of arbitrary sign, flipped where it correlates
    negatively with the same row of ``reference`` (N, cells)."""
    agreement = (
        (projection - projection.mean(1, keepdim=True)) * (reference - reference.mean(1, keepdim=True))
    ).sum(1)
    return projection * torch.where(agreement < 0, -1.0, 1.0).to(projection.dtype)[:, None]
