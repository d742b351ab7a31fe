"""Idefics3 and SmolVLM as chat models (``chat_family.ChatFamily``): split images, read by the vision tower
as tiles, whose maps are stitched back onto the image.

The image processor (``Idefics3ImageProcessor``; SmolVLM's splits the same way) resizes an image of H x W
pixels to a longest edge of ``size["longest_edge"]``, then to rows x columns tiles of
``max_image_size["longest_edge"]`` pixels (each side rounded up to whole tiles, so the aspect ratio is
nearly kept, without padding), and cuts it row-major into those tiles; the whole image, resized to one
tile, comes last (``get_number_of_image_patches`` gives rows and columns). An image no larger than a tile
is that one tile. The vision tower reads every tile as one grid of patch tokens; a pixel shuffle makes
fewer, wider tokens of them for the language model, whose prompt spells the tiles out: per tile a
``<fake_token_around_image>``, its ``<row_r_col_c>`` tag and its image tokens, a newline after each row,
then the global image's (``replace_image_token``).

mmcam's inputs for these models: ``pixel_values`` is the image itself (B, C, H, W), in [0, 1]; the forward
hands it to the model's own image processor, which splits it (``arguments``), and the one image token of
each prompt is replaced by the tokens the processor spells out for an image of that size
(``image_tokens``). The default layer is the tower's second block's pre-attention norm
(``tokens.TOKEN_BLOCK``), whose rows are tiles (``engine.tiles.Tiles``): tile (r, c) covers rows
r H / R .. (r + 1) H / R and columns c W / C .. (c + 1) W / C of the image, the global tile all of it; an
image's map is the sum of its tiles' maps.

A batch has one image size: the images of one call are resized to the first one's.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmcam.adapters.tiled import TiledChat


def split_boxes(size: tuple[int, int], rows: int, columns: int) -> list[tuple[float, float, float, float]]:
    """Where each tile of an image of ``size`` (H, W) split into ``rows`` x ``columns`` lies on it, the tiles
    row-major then the global image: (top, left, bottom, right) in the image's pixels. Without splitting
    (0 x 0) the one tile is the whole image."""
    height, width = size
    tiles = [
        (r * height / rows, c * width / columns, (r + 1) * height / rows, (c + 1) * width / columns)
        for r in range(rows)
        for c in range(columns)
    ]
    return [*tiles, (0.0, 0.0, float(height), float(width))]


class Idefics3(TiledChat):
    """The ``chat_family.ChatFamily`` of Idefics3 and SmolVLM (``ForConditionalGeneration`` and its processor)."""

    TOWER = "vision_model"

    def __init__(self, model: nn.Module, processor):
        super().__init__(model, processor, processor.image_processor.max_image_size["longest_edge"])
        self._spelled: dict[tuple[int, int], Tensor] = {}

    def split(self, size: tuple[int, int]) -> tuple[int, int]:
        """(rows, columns) of the tiles the processor splits an image of ``size`` into (0, 0: none)."""
        _, rows, columns = self.processor.image_processor.get_number_of_image_patches(*size)
        return rows, columns

    def image_token_ids(self, pixels: Tensor) -> Tensor:
        """The tokens the processor spells an image of ``pixels``' size out as, tiles and global image."""
        size = tuple(pixels.shape[-2:])
        if size not in self._spelled:
            rows, columns = self.split(size)
            text = self.processor.replace_image_token({"rows": [[rows]], "cols": [[columns]]}, 0)
            ids = self.processor.tokenizer(text, add_special_tokens=False)["input_ids"]
            self._spelled[size] = torch.tensor(ids)
        return self._spelled[size]

    def image_inputs(self, pixels: Tensor) -> dict[str, Tensor]:
        """The tiles (B, tiles, C, h, w) and their pixel mask, from the model's image processor."""
        split = self.processor.image_processor(
            images=[[image] for image in pixels], do_rescale=False, return_tensors="pt"
        )
        return {
            "pixel_values": split["pixel_values"].to(pixels),
            "pixel_attention_mask": split["pixel_attention_mask"].to(pixels.device),
        }

    def boxes(self, size: tuple[int, int]) -> list[tuple[float, float, float, float]]:
        return split_boxes(size, *self.split(size))
