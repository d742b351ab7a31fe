"""Batches whose rows are copies of fewer samples: one image and question, a row per answer of a
generative VQA model, so that answers of different lengths, and a contrast between two of them, come
from one forward.

A target that reads one row (an answer's log-probability) or several (a contrast: one answer's row minus
another's) scores the sample as the sum over its copies; its gradient at the sample's activation, which
every copy holds alike, is the sum of the copies' gradients: dy/dA = sum_r dy/dA_r.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mmcam.engine.tiles import Tiles


def summed(values: Tensor, samples: Tensor, count: int) -> Tensor:
    """Rows (R, ...) summed per sample, ``samples`` (R,) the sample of each row: (count, ...)."""
    total = values.new_zeros(count, *values.shape[1:])
    return total.index_add(0, samples.to(values.device), values)


class RowGroups:
    """The rows of a layer grouped into the copies of one row of a sample: one group per sample, or per
    sample and tile for a layer of tiles (``tiles.owners``: the batch row of each tile, in order).
    ``groups`` (N,) the group of each row, ``first`` (G,) the first row of each group, whose activation
    stands for the group's, ``samples`` (N,) the sample of each row, ``tiles`` the groups' tiles."""

    def __init__(self, copies: Tensor, tiles: Tiles | None = None):
        copies = copies.cpu()
        self.count = int(copies.max()) + 1
        if tiles is None:
            self.samples, keys = copies, copies
        else:
            owners = tiles.owners.cpu()
            position = torch.arange(len(owners)) - torch.searchsorted(
                owners, owners
            )  # a tile's place in its row
            self.samples = copies[owners]
            keys = self.samples * (int(position.max()) + 1) + position
        unique, self.groups = torch.unique(keys, return_inverse=True)
        rows = torch.arange(len(keys))
        self.first = torch.full((len(unique),), len(keys)).scatter_reduce(0, self.groups, rows, "amin")
        self.tiles = None if tiles is None else Tiles(self.samples[self.first], tiles.boxes[self.first])

    def merged(self, values: Tensor) -> Tensor:
        """(N, ...) rows of the layer summed per group: (G, ...)."""
        return summed(values, self.groups, len(self.first))

    def representatives(self, values: Tensor) -> Tensor:
        """(N, ...) rows of the layer, the first of each group: (G, ...)."""
        return values[self.first.to(values.device)]
