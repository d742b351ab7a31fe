"""ROAD, RemOve And Debias (Rong et al., arXiv 2202.00449): remove the pixels a map ranks most (or least)
relevant, fill them by noisy linear imputation, which leaves no trace of the removal's shape for the model
to read, and watch the target's score. As pytorch-grad-cam computes it (``ROADMostRelevantFirstAverage``,
``ROADLeastRelevantFirstAverage``, ``ROADCombined``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.linalg import spsolve
from torch import Tensor

from mmcam.metrics.contract import Case, Metric

# (row offset, column offset) -> weight of that neighbour in a filled pixel's average
NEIGHBOURS = {
    (-1, -1): 1 / 12,
    (-1, 0): 1 / 6,
    (-1, 1): 1 / 12,
    (0, -1): 1 / 6,
    (0, 1): 1 / 6,
    (1, -1): 1 / 12,
    (1, 0): 1 / 6,
    (1, 1): 1 / 12,
}
PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)


def linear_imputation(image: Tensor, keep: Tensor, noise: float = 0.01, seed: int = 0) -> Tensor:
    """``image`` (C, H, W) with the pixels where ``keep`` (H, W) is False filled so that each one equals the
    weighted mean of its in-image neighbours (``NEIGHBOURS``): one sparse linear system for all of them,
    solved exactly, then Gaussian noise of std ``noise`` added to the filled pixels (seeded). With no pixel
    kept, every pixel becomes the channel's mean."""
    height, width = keep.shape
    known = keep.flatten().cpu().numpy()
    values = image.detach().reshape(image.shape[0], -1).cpu().double().numpy()
    missing = np.flatnonzero(~known)
    if not len(missing):
        return image.clone()
    if not known.any():  # nothing to interpolate from (a constant map removes every pixel): the mean
        return image.detach().mean(dim=(1, 2), keepdim=True).expand_as(image).clone()
    number = np.full(height * width, -1)
    number[missing] = np.arange(len(missing))
    rows, cols = np.divmod(missing, width)
    entries, right = ([], [], []), np.zeros((len(missing), image.shape[0]))
    total = np.zeros(len(missing))
    for (dr, dc), weight in NEIGHBOURS.items():
        r, c = rows + dr, cols + dc
        inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
        neighbour = r[inside] * width + c[inside]
        equation = np.flatnonzero(inside)
        total[equation] += weight
        filled = ~known[neighbour]
        entries[0].extend(equation[filled])
        entries[1].extend(number[neighbour[filled]])
        entries[2].extend([weight] * int(filled.sum()))
        right[equation[~filled]] -= weight * values[:, neighbour[~filled]].T
    size = len(missing)
    diagonal = np.arange(size)
    system = coo_matrix(
        (
            np.concatenate([entries[2], -total]),
            (np.concatenate([entries[0], diagonal]), np.concatenate([entries[1], diagonal])),
        ),
        shape=(size, size),
    ).tocsc()
    solution = spsolve(system, right).reshape(size, -1)
    generator = torch.Generator().manual_seed(seed)
    filled_values = torch.from_numpy(solution.T).float() + noise * torch.randn(
        (image.shape[0], size), generator=generator
    )
    result = image.detach().reshape(image.shape[0], -1).clone()
    result[:, torch.from_numpy(missing).to(result.device)] = filled_values.to(result.device, result.dtype)
    return result.reshape(image.shape)


@dataclass(frozen=True)
class RoadScores:
    """Per target (K,): the mean change of the target's score when the most relevant pixels are filled
    (``most_first``, MoRF: lower is better), when the least relevant are (``least_first``, LeRF: higher is
    better), and ``combined`` = (LeRF - MoRF) / 2 (higher is better)."""

    most_first: Tensor
    least_first: Tensor

    @property
    def combined(self) -> Tensor:
        return (self.least_first - self.most_first) / 2


def road(
    scorer: Callable[[Tensor], Tensor],
    image: Tensor,
    maps: Tensor,
    percentiles: Sequence[float] = PERCENTILES,
    noise: float = 0.01,
    seed: int = 0,
) -> RoadScores:
    """ROAD, (C, H, W) image and (K, H, W) maps in [0, 1]:

    MoRF_k = 1/P sum_p (y_k(MoRF_p) - y_k(x)),   LeRF_k = 1/P sum_p (y_k(LeRF_p) - y_k(x)),

    MoRF_p: the image with the pixels where L_k >= its p-th percentile filled (``linear_imputation``);
    LeRF_p: with those where 1 - L_k >= the p-th percentile of 1 - L_k. The image and all 2 P K filled
    images are scored in one batch.
    """
    copies = [image]
    for k in range(maps.shape[0]):
        for ranking in (maps[k], 1 - maps[k]):  # most relevant first, least relevant first
            for p in percentiles:
                keep = ranking < torch.quantile(ranking.flatten().double(), p / 100).to(ranking.dtype)
                copies.append(linear_imputation(image, keep, noise, seed))
    scores = scorer(torch.stack(copies)).float()  # (1 + K * 2 * P, K)
    clean, filled = scores[0], scores[1:].reshape(maps.shape[0], 2, len(percentiles), -1)
    own = torch.stack([filled[k, :, :, k] for k in range(maps.shape[0])])  # (K, 2, P)
    changes = (own - clean[:, None, None]).mean(dim=2)
    return RoadScores(changes[:, 0], changes[:, 1])


class RoadFigure(Metric):
    """One figure of ``road`` (its three share one run per case): ``part`` names the ``RoadScores`` field."""

    part: str
    needs = frozenset({"settings", "score"})

    def __call__(self, case: Case) -> Tensor:
        scores = case.once("road", lambda: road(case.score, case.image, case.maps, seed=case.settings.seed))
        return getattr(scores, self.part)


class Road(RoadFigure):
    name, label, better, part = "road", "ROAD (LeRF - MoRF) / 2", "higher", "combined"


class RoadMostFirst(RoadFigure):
    name, label, better, part = (
        "road-morf",
        "ROAD MoRF: score change, most relevant removed",
        "lower",
        "most_first",
    )


class RoadLeastFirst(RoadFigure):
    name, label, better = "road-lerf", "ROAD LeRF: score change, least relevant removed", "higher"
    part = "least_first"
