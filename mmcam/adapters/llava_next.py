"""LLaVA-NeXT and LLaVA-OneVision as chat models (``chat_family.ChatFamily``): any-resolution images, read
by the vision tower as tiles, whose maps are stitched back onto the image.

The image processor (``LlavaNextImageProcessor``; OneVision's cuts the same way) makes of an image of
H x W pixels, in this order:

- the base tile: the whole image resized to the vision tower's input, its aspect ratio not kept;
- the tiles of a canvas: the resolution of ``image_grid_pinpoints`` that fits the image best
  (``select_best_resolution``), on which the image, resized to keep its aspect ratio
  (``get_patch_output_size``), lies centred between padding (the odd pixel of padding at the bottom and
  right); the canvas is cut row-major into square tiles of the tower's input size.

The vision tower reads every tile as one h x w grid of patch tokens (after a CLS token in CLIP), the
tiles of all images in one batch, each image's base tile first. The language model reads the base tile's
tokens, then the canvas tokens with the padding's rows or columns left out and one newline token closing
each row; the processor expands the prompt's image token to as many tokens.

mmcam's inputs for these models: ``pixel_values`` is the image itself (B, C, H, W), in [0, 1], which is
what the maps are drawn on; the forward hands it to the model's own image processor, which tiles it
(``arguments``), so perturbation methods and augmentations act on the image. ``input_ids`` hold one image
token per prompt, expanded to the image's tokens in the forward (``image_tokens``). The default layer is the
tower's second block's pre-attention norm (``tokens.TOKEN_BLOCK``), whose rows are tiles
(``engine.tiles.Tiles``): each tile gets a map, and an image's map is the sum of its base tile's map
stretched over the image and its canvas tiles' maps laid where they came from, the padding cut off: how
strongly a score depends on the tokens over a pixel, seen at two resolutions.

A batch has one image size: the images of one call are resized to the first one's (an image alone is
processed as the processor does, up to the rounding of its pixels to bytes, which the forward skips).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from mmcam.adapters.tiled import TiledChat


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


def tile_boxes(layout: Tiling) -> list[tuple[float, float, float, float]]:
    """Where each tile of an image lies on it, base tile first: (top, left, bottom, right) in the image's
    pixels; a canvas tile reaches past the image where it holds padding."""
    (height, width), (top, left), (resized_h, resized_w) = layout.image, layout.offset, layout.resized
    scale_y, scale_x, side = height / resized_h, width / resized_w, layout.tile
    canvas = [
        (
            (r * side - top) * scale_y,
            (c * side - left) * scale_x,
            ((r + 1) * side - top) * scale_y,
            ((c + 1) * side - left) * scale_x,
        )
        for r in range(layout.tiles[0])
        for c in range(layout.tiles[1])
    ]
    return [(0.0, 0.0, float(height), float(width)), *canvas]


def tile_side(image_processor) -> int:
    """The side of a tile, as the image processor cuts them (its crop size, or its size)."""
    for size in (image_processor.crop_size, image_processor.size):
        if size and size.get("height"):
            return size["height"]
    return image_processor.size["shortest_edge"]


class LlavaNext(TiledChat):
    """The ``chat_family.ChatFamily`` of LLaVA-NeXT and LLaVA-OneVision (``ForConditionalGeneration`` and its
    processor)."""

    def __init__(self, model: nn.Module, processor):
        images = processor.image_processor
        super().__init__(model, processor, tile_side(images))
        self.pinpoints = images.image_grid_pinpoints

    def image_token_ids(self, pixels: Tensor) -> Tensor:
        """The image token as many times as the processor expands it for an image of ``pixels``' size."""
        height, width = pixels.shape[-2:]
        described = {
            "image_sizes": [[height, width]],
            "pixel_values": [[torch.empty(0, self.tile, self.tile)]],
            "batch_num_images": [1],
        }
        count = self.processor.replace_image_token(described, 0).count(self.processor.image_token)
        return torch.full((count,), self.image_token)

    def image_inputs(self, pixels: Tensor) -> dict[str, Tensor]:
        """The tiles (B, tiles, C, h, w) and the images' sizes, from the model's image processor."""
        tiled = self.processor.image_processor(images=list(pixels), do_rescale=False, return_tensors="pt")
        return {
            "pixel_values": tiled["pixel_values"].to(pixels),
            "image_sizes": tiled["image_sizes"].to(pixels.device),
        }

    def boxes(self, size: tuple[int, int]) -> list[tuple[float, float, float, float]]:
        return tile_boxes(tiling(size, self.pinpoints, self.tile))
