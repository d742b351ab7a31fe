"""Qwen2-VL and Qwen2.5-VL as chat models (``chat_family.ChatFamily``): dynamic resolution, packed patch tokens,
an m x m token merge.

What the model does (transformers 5, ``models/qwen2_vl`` and ``models/qwen2_5_vl``):

- The processor stretches each image to H x W, multiples of P m (P the patch size, m the merge size: 14
  and 2, 28 px, for the released models) with H W within its min and max pixels, and hands it over as
  flat patches (h w, C T P P), h = H / P, w = W / P, each patch repeated over T temporal steps, with
  ``image_grid_thw`` = (1, h, w). The patches come in merge windows: the m x m patches of one merged
  token in a row, the windows row-major (``patchify``).
- The vision tower runs on the patches of all images packed into one sequence (sum of h w, C) with no
  batch axis, each image attending within itself. Its positions are rotary (rows and columns), added in
  attention, so each block's tokens stay on their patches. Qwen2.5-VL reorders the merged
  tokens into attention windows before its first block and back after its merger
  (``get_vision_window_index``), so its blocks see the patches in window order (``token_cells``).
- The prompt holds one image token per merged token, h w / m^2 of them, put there by the processor.

mmcam's inputs for these models: ``pixel_values`` is the stretched, normalized image (B, C, H, W), which
is what the maps are drawn on (and, stretched back as the processor stretched it, on the original image);
``input_ids`` hold one image token per prompt, whatever the image's size, and are expanded to the
image's tokens in the forward (``arguments``); the logits are read back at the compact positions
(``logits``). The default layer, the second block's pre-attention norm (``tokens.TOKEN_BLOCK``), is read
through the tower's token order (``layout``, ``engine.Layout.packed``).

A batch has one image size: the images of one call are stretched to the size the processor gives the
first one (it stretches every image anyway); an image alone is processed exactly as the processor does.
Callers with images of several sizes explain them per size (``vqa.explain_top_answers`` groups them).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image
from torch import Tensor, nn

from mmcam.adapters.chat_family import chat_template_prompt, image_grid_positions
from mmcam.adapters.image_tokens import OneImageToken
from mmcam.adapters.tokens import block_norm
from mmcam.engine import Layout

PRE_ATTENTION_NORM = "norm1"  # Qwen2VLVisionBlock / Qwen2_5_VLVisionBlock


def patchify(images: Tensor, patch: int, merge: int, temporal: int) -> Tensor:
    """Images (B, C, H, W) as the processor's flat patches (B h w, C T P P): (B, C, h/m, m, P, w/m, m, P)
    taken in the order (B, h/m, w/m, m, m, C, P, P), each patch repeated T times after its channels."""
    batch, channels, height, width = images.shape
    rows, columns = height // patch, width // patch
    x = images.reshape(batch, channels, rows // merge, merge, patch, columns // merge, merge, patch)
    x = x.permute(0, 2, 5, 3, 6, 1, 4, 7).unsqueeze(6).expand(*[-1] * 6, temporal, -1, -1)
    return x.reshape(batch * rows * columns, channels * temporal * patch * patch)


def unpatchify(
    patches: Tensor, batch: int, grid: tuple[int, int], patch: int, merge: int, temporal: int
) -> Tensor:
    """The inverse of ``patchify``: ``batch`` images of ``grid`` = (h, w) patches (B, C, H, W), each patch
    taken from the first of its T repeats."""
    rows, columns = grid
    x = patches.reshape(batch, rows // merge, columns // merge, merge, merge, -1, temporal, patch, patch)
    x = x.select(6, 0).permute(0, 5, 1, 3, 6, 2, 4, 7)
    return x.reshape(batch, -1, rows * patch, columns * patch)


class QwenVL(OneImageToken):
    """The ``chat_family.ChatFamily`` of Qwen2-VL and Qwen2.5-VL (``ForConditionalGeneration`` and its processor)."""

    def __init__(self, model: nn.Module, processor):
        vision = model.config.vision_config
        images = processor.image_processor
        self.patch, self.merge, self.temporal = (
            vision.patch_size,
            vision.spatial_merge_size,
            vision.temporal_patch_size,
        )
        processed = (images.patch_size, images.merge_size, images.temporal_patch_size)
        if processed != (self.patch, self.merge, self.temporal):
            raise ValueError(
                f"the processor cuts {processed} (patch, merge, temporal patch) but the model's vision tower "
                f"expects {(self.patch, self.merge, self.temporal)}: save the model with its own processor"
            )
        self.processor = processor
        self.image_token = model.config.image_token_id
        self.window = vision.window_size if model.config.model_type == "qwen2_5_vl" else None
        tower = next(name for name, _ in model.named_modules() if name.split(".")[-1] == "visual")
        self.layer = block_norm(model, tower, (PRE_ATTENTION_NORM,)) or "auto"

    def prompt(self, text: str) -> str:
        return chat_template_prompt(self.processor, text)

    def grid(self, pixels: Tensor) -> tuple[int, int]:
        """The patch grid (h, w) of ``pixel_values`` (B, C, H, W), whose sides must be multiples of P m."""
        side = self.patch * self.merge
        if pixels.ndim != 4 or pixels.shape[-2] % side or pixels.shape[-1] % side:
            raise ValueError(
                f"Qwen2-VL's pixel_values are images (B, C, H, W) with sides multiples of {side}, got "
                f"{tuple(pixels.shape)}: make them with the adapter's preprocess (or prepare)"
            )
        return pixels.shape[-2] // self.patch, pixels.shape[-1] // self.patch

    def pixels(self, images: Sequence[Image.Image]) -> Tensor:
        """The images as the processor resizes and normalizes them, all at the first one's size (B, C, H, W)."""
        processor = self.processor.image_processor
        encoded = processor(images=list(images), return_tensors="pt")
        grids = encoded["image_grid_thw"]
        rows, columns = grids[0, 1:].tolist()
        if (grids != grids[0]).any():
            size = (columns * self.patch, rows * self.patch)  # (W, H), which the processor keeps as it is
            same = [
                image if (grid == grids[0]).all() else image.resize(size, Image.Resampling.BICUBIC)
                for image, grid in zip(images, grids)
            ]
            encoded = processor(images=same, return_tensors="pt")
        patches = encoded["pixel_values"]
        return unpatchify(patches, len(images), (rows, columns), self.patch, self.merge, self.temporal)

    def image_token_ids(self, pixels: Tensor) -> Tensor:
        """The image token once per merged m x m patches."""
        rows, columns = self.grid(pixels)
        return torch.full((rows * columns // self.merge**2,), self.image_token)

    def arguments(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """The model's inputs: each row's image token repeated once per merged token
        (``image_tokens.expanded``), the image as flat patches, its grid and the token types (1: image)."""
        pixels = inputs["pixel_values"]
        rows, columns = self.grid(pixels)
        ids, mask = self.expanded_ids(inputs)
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "pixel_values": patchify(pixels, self.patch, self.merge, self.temporal),
            "image_grid_thw": torch.tensor([[1, rows, columns]] * len(pixels), device=ids.device),
            "mm_token_type_ids": (ids == self.image_token).long(),
        }

    def language_tokens(self, inputs: dict[str, Tensor]) -> tuple[Tensor, tuple[int, int]]:
        """The image's merged tokens in the expanded sequence: the patch grid merged m x m, row-major."""
        rows, columns = self.grid(inputs["pixel_values"])
        grid = (rows // self.merge, columns // self.merge)
        return image_grid_positions(self.expanded_ids(inputs)[0], self.image_token, grid), grid

    def token_cells(self, rows: int, columns: int) -> Tensor:
        """(h w,) the grid cell (row-major index) of each of one image's tokens at the tower's blocks, in the
        tower's order: merge windows (``patchify`` of the cells' own indices) and, for Qwen2.5-VL, the
        merged tokens in its attention windows' order (the tower's own ``get_vision_window_index``)."""
        cells = torch.arange(rows * columns).reshape(1, 1, rows, columns)
        order = patchify(cells, 1, self.merge, 1)[:, 0]
        if self.window is None:
            return order
        from transformers.vision_utils import get_vision_window_index

        grid = torch.tensor([[1, rows, columns]])
        windows, _ = get_vision_window_index(grid, self.merge, self.window, self.patch)
        return order.reshape(-1, self.merge**2)[windows].flatten()

    def layout(self, inputs: dict[str, Tensor]) -> Layout:
        """The patch grid, read from the tower's packed tokens: cell l of image b is row b h w + the
        position of l in ``token_cells``."""
        pixels = inputs["pixel_values"]
        rows, columns = self.grid(pixels)
        offsets = rows * columns * torch.arange(len(pixels))[:, None]
        return Layout(
            "tokens", grid=(rows, columns), packed=self.token_cells(rows, columns).argsort() + offsets
        )
