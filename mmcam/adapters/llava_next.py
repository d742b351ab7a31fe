"""LLaVA-NeXT's any-resolution images: where each tile's token grid lies in the original image, and one
map of the image from the maps of its tiles.

The image processor (``LlavaNextImageProcessor``) makes of an image of H x W pixels, in this order:

- the base tile: the whole image resized to the vision tower's input, its aspect ratio not kept;
- the tiles of a canvas: the resolution of ``image_grid_pinpoints`` that fits the image best
  (``select_best_resolution``), on which the image, resized to keep its aspect ratio
  (``get_patch_output_size``), lies centred between padding (the odd pixel of padding at the bottom and
  right); the canvas is cut row-major into square tiles of ``crop_size`` pixels.

The vision tower reads every tile, the base tile first, as one h x w grid of patch tokens (all tiles of
all images in one batch). The language model reads the base tile's tokens, then the canvas tokens with
the padding's rows or columns left out (``unpad_image``) and one newline token closing each row.

A map of the image, from the maps of its tiles on their token grids, is the sum of two maps on the
image's pixels: the base tile's grid stretched over the whole image, and the tiles' grids stitched on the
canvas with the padding cut off. Both measure how strongly a score depends on the tokens over a pixel,
seen at two resolutions; the sum keeps what either sees.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import Tensor

from mmcam.engine.resize import upsample


@dataclass(frozen=True)
class Tiling:
    """How the processor tiles one image: ``image`` (H, W) its size; ``canvas`` (H_c, W_c) the chosen
    resolution; the image resized to ``resized`` lies at ``offset`` (top, left) on the canvas; ``tiles``
    (rows, columns) of ``tile`` pixels a side cover the canvas."""

    image: tuple[int, int]
    canvas: tuple[int, int]
    resized: tuple[int, int]
    offset: tuple[int, int]
    tile: int
    tiles: tuple[int, int]

    @property
    def count(self) -> int:
        """The number of tiles the vision tower reads: the base tile and the canvas's."""
        return 1 + self.tiles[0] * self.tiles[1]


def tiling(image_size: tuple[int, int], pinpoints: list[list[int]], tile: int) -> Tiling:
    """The processor's tiling of an image of ``image_size`` (H, W), from its ``image_grid_pinpoints``
    and its tile size (``crop_size["height"]``), computed by the processor's own functions."""
    from transformers.image_processing_utils import get_patch_output_size, select_best_resolution
    from transformers.image_utils import ChannelDimension

    canvas = tuple(select_best_resolution(image_size, pinpoints))
    shape_only = np.empty((0, *image_size))  # the function reads an image's size only
    resized = tuple(get_patch_output_size(shape_only, canvas, ChannelDimension.FIRST))
    offset = ((canvas[0] - resized[0]) // 2, (canvas[1] - resized[1]) // 2)
    return Tiling(tuple(image_size), canvas, resized, offset, tile, (canvas[0] // tile, canvas[1] // tile))


def image_map(tile_maps: Tensor, layout: Tiling, mode: str = "bilinear") -> Tensor:
    """One map on the image's pixels, (..., H, W), from the maps of its tiles on their token grids,
    (count, ..., h, w) with the base tile first: the base tile's map stretched over the image plus the
    canvas tiles' maps stitched row-major, upsampled to the canvas's pixels (``mode``) and cut to the
    image's place on it, then resized to the image."""
    if tile_maps.shape[0] != layout.count:
        raise ValueError(f"{tile_maps.shape[0]} tile maps for an image of {layout.count} tiles")
    rows, columns = layout.tiles
    h, w = tile_maps.shape[-2:]
    inner = tile_maps.shape[1:-2]
    grids = tile_maps[1:].reshape(rows, columns, -1, h, w).permute(2, 0, 3, 1, 4)
    canvas = upsample(grids.reshape(-1, rows * h, columns * w), layout.canvas, mode)
    (top, left), (height, width) = layout.offset, layout.resized
    tiles = upsample(canvas[:, top : top + height, left : left + width], layout.image, mode)
    base = upsample(tile_maps[0].reshape(-1, h, w), layout.image, mode)
    return (base + tiles).reshape(*inner, *layout.image)
