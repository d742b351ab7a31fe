"""Layers whose rows are tiles of the images, not the images themselves, and one map per image from the
maps of its tiles.

Models that read an image at several resolutions cut it into views before their vision tower: LLaVA-NeXT
and LLaVA-OneVision a base view of the whole image plus the tiles of a padded canvas, Idefics3 and SmolVLM
the tiles of a split image plus the whole image. The tower then runs on N rows for B images. A method
computes one map per row, as for a sample (the gradient of image b's score at a row of another image is
zero); ``Tiles.stitch`` lays each row's map over the box of the image it shows and adds them up.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from mmcam.engine.resize import UPSAMPLING


@dataclass(frozen=True)
class Tiles:
    """Where each row of a layer lies: ``owners`` (N,) the image (batch index) it shows; ``boxes`` (N, 4)
    the part of that image its grid covers, (top, left, bottom, right) in the image's pixels, float. A box
    may reach past the image where the tile shows padding; that part of its map is dropped."""

    owners: Tensor = field(compare=False)
    boxes: Tensor = field(compare=False)

    def __post_init__(self) -> None:
        if self.owners.ndim != 1 or tuple(self.boxes.shape) != (len(self.owners), 4):
            raise ValueError(
                "tiles need one owner and one box (top, left, bottom, right) per row: (N,) and (N, 4)"
            )
        top, left, bottom, right = self.boxes.unbind(dim=1)
        if not ((bottom > top) & (right > left)).all():
            raise ValueError("a tile's box must have bottom > top and right > left")

    @property
    def count(self) -> int:
        """The number of rows (tiles) the layer gives."""
        return len(self.owners)

    def check(self, rows: int, images: int, layer: str) -> None:
        """Raise when the layer's ``rows`` or the batch's ``images`` are not those of these tiles."""
        if rows != self.count or not bool((self.owners >= 0).all() and (self.owners < images).all()):
            raise ValueError(
                f"layer '{layer}' gives {rows} rows, but its tiles describe {self.count} tiles of {images} images: "
                "pick a layer of the vision tower, which runs on the tiles"
            )

    def summed(self, values: Tensor, images: int) -> Tensor:
        """Per image, the sum of its tiles' rows: (N, ...) -> (B, ...), v_b = sum over the tiles t of b of v_t."""
        owners = self.owners.to(values.device)
        return values.new_zeros(images, *values.shape[1:]).index_add_(0, owners, values)

    def stitch(self, maps: Tensor, images: int, size: tuple[int, int], mode: str = "bilinear") -> Tensor:
        """One map per image, (B, K, H, W), from the tiles' maps (N, K, h, w): M_b(p) = sum over the tiles
        t of image b whose box holds pixel p of m_t sampled at p's place in the box (``mode``: "bilinear"
        with half-pixel centres, or "nearest"; beyond a map's outer cell centres its edge value is kept)."""
        if mode not in UPSAMPLING:
            raise ValueError(f"unknown upsampling '{mode}'; use one of {', '.join(UPSAMPLING)}")
        height, width = size
        stitched = maps.new_zeros(images, maps.shape[1], height, width)
        ys = torch.arange(height, device=maps.device, dtype=maps.dtype) + 0.5
        xs = torch.arange(width, device=maps.device, dtype=maps.dtype) + 0.5
        for row, (image, box) in enumerate(zip(self.owners.tolist(), self.boxes.tolist())):
            top, left, bottom, right = box
            gy = (ys - top) / (bottom - top) * 2 - 1  # -1 .. 1 over the box, the grid_sample convention
            gx = (xs - left) / (right - left) * 2 - 1
            inside = (gy.abs() <= 1)[:, None] & (gx.abs() <= 1)[None, :]
            grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)  # (H, W, 2): x, y
            sampled = F.grid_sample(
                maps[row][None], grid[None], mode=mode, padding_mode="border", align_corners=False
            )[0]
            stitched[image] += sampled * inside
        return stitched
