"""What the chat families that cut an image into tiles share (LLaVA-NeXT and LLaVA-OneVision in
``llava_next``, Idefics3 and SmolVLM in ``idefics3``): the image itself as ``pixel_values`` (B, C, H, W),
in [0, 1], tiled in the forward by the model's own image processor; one image token per prompt, expanded
there (``image_tokens``); and the vision tower's rows read as tiles, each laid on its box of the image
(``engine.tiles.Tiles``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image
from torch import Tensor, nn

from mmcam.adapters.chat_family import chat_template_prompt
from mmcam.adapters.image_tokens import OneImageToken, unit_pixels
from mmcam.adapters.tokens import block_norm
from mmcam.engine import Layout
from mmcam.engine.tiles import Tiles


class TiledChat(OneImageToken):
    """A ``chat_family.ChatFamily`` whose vision tower reads tiles of the image. A subclass sets ``TOWER`` (the
    suffix of the vision tower's module name) and gives ``tile`` (a tile's side in pixels), ``image_token_ids``,
    ``image_inputs(pixels)`` (the model's image inputs, from its image processor) and ``boxes(size)`` (each
    tile's (top, left, bottom, right) on an image of ``size``, in the tower's order)."""

    TOWER = "vision_tower"

    def __init__(self, model: nn.Module, processor, tile: int):
        self.processor = processor
        self.image_token = model.config.image_token_id
        self.tile = tile
        tower_name = next(name for name, _ in model.named_modules() if name.endswith(self.TOWER))
        embeddings = next(
            m
            for m in model.get_submodule(tower_name).modules()
            if hasattr(m, "num_positions") and hasattr(m, "num_patches")
        )
        self.prefix = embeddings.num_positions - embeddings.num_patches  # CLIP's CLS token
        self.side = tile // model.config.vision_config.patch_size
        self.layer = block_norm(model, tower_name) or "auto"

    def prompt(self, text: str) -> str:
        return chat_template_prompt(self.processor, text)

    def pixels(self, images: Sequence[Image.Image]) -> Tensor:
        """The images in [0, 1] (B, C, H, W), all at the first one's size."""
        return unit_pixels(images)

    def arguments(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """The model's inputs: the images tiled by its image processor (``image_inputs``) and each row's
        image token expanded into the image's tokens."""
        pixels = inputs["pixel_values"]
        if pixels.ndim != 4:
            raise ValueError(
                f"{type(self).__name__}'s pixel_values are images (B, C, H, W) in [0, 1], got "
                f"{tuple(pixels.shape)}: make them with the adapter's preprocess (or prepare)"
            )
        ids, mask = self.expanded_ids(inputs)
        return {"input_ids": ids, "attention_mask": mask, **self.image_inputs(pixels)}

    def language_tokens(self, inputs: dict[str, Tensor]) -> tuple[Tensor, tuple[int, int]]:
        raise ValueError(
            f"{type(self).__name__} reads an image as tiles, whose tokens form no one grid in the language model: "
            "explain a layer of the vision tower (the default)"
        )

    def layout(self, inputs: dict[str, Tensor]) -> Layout:
        """Each tile's patch grid, the rows the tiles of every image in turn (``boxes``)."""
        pixels = inputs["pixel_values"]
        boxes = self.boxes(tuple(pixels.shape[-2:]))
        owners = torch.arange(len(pixels)).repeat_interleave(len(boxes))
        tiles = Tiles(owners, torch.tensor(boxes * len(pixels)))
        return Layout("tokens", prefix=self.prefix, grid=(self.side, self.side), tiles=tiles)
