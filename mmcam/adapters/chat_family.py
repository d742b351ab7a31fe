"""What a chat model family says (``ChatFamily``), and the chat-template prompt most families share.

``adapters.chat`` turns any family into a captioner or a VQA model; each family lives in its own module
(``llava``, ``paligemma``, ``gemma3``, ``qwen_vl``, ``llava_next``, ``idefics3``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol

from PIL import Image
from torch import Tensor, nn

from mmcam.engine import Layout


class ChatFamily(Protocol):
    """The family-specific part of a chat model, built from the model and its processor.

    ``prompt(text)``: the processor's text for one request about one image (a chat template's user turn,
    or PaliGemma's image token and the request). ``pixels(images)``: the images as ``pixel_values``
    (B, C, H, W), the image the maps are drawn on. ``inputs(images, prompts)``: ``input_ids``,
    ``attention_mask``, ``pixel_values`` and the family's other inputs (PaliGemma's prompt
    ``token_type_ids``) of one prompt per image. ``arguments(inputs)``: the keyword arguments of the model
    and of its ``generate`` for such inputs, also when replies follow the prompts (``input_ids`` longer
    than the prompts: the reply tokens are marked as replies where the family marks them).
    ``logits(logits, inputs)``: the model's logits at the positions of ``inputs["input_ids"]``. ``layer``:
    the default layer, read as ``layout(inputs)`` says. ``language_tokens(inputs)``: the positions (B, h w)
    of the image's tokens in the sequence the language model reads and the grid (h, w) they form, row-major
    (``image_grid_positions``; raises for a family whose image tokens form no one grid).
    """

    layer: str

    def language_tokens(self, inputs: dict[str, Tensor]) -> tuple[Tensor, tuple[int, int]]: ...

    def prompt(self, text: str) -> str: ...

    def pixels(self, images: Sequence[Image.Image]) -> Tensor: ...

    def inputs(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> dict[str, Tensor]: ...

    def arguments(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]: ...

    def logits(self, logits: Tensor, inputs: dict[str, Tensor]) -> Tensor: ...

    def layout(self, inputs: dict[str, Tensor]) -> str | Layout: ...


def chat_template_prompt(processor, text: str) -> str:
    """The processor's chat template on one user turn holding the image and ``text``, ready for the reply."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True)


def image_grid_positions(ids: Tensor, image_token: int, grid: tuple[int, int]) -> Tensor:
    """(B, h w) the positions of the image token in each row of ``ids``, which must hold h w of them."""
    found = ids == image_token
    if not (found.sum(dim=1) == math.prod(grid)).all():
        raise ValueError(
            f"each sequence must hold the image's {math.prod(grid)} tokens once, as a {grid[0]}x{grid[1]} grid, "
            f"for a layer of the language model; found {found.sum(dim=1).tolist()}"
        )
    return found.nonzero()[:, 1].reshape(len(ids), -1)


def language_layout(family: ChatFamily, inputs: dict[str, Tensor]) -> Layout:
    """The image's tokens among the language model's hidden states (B, S, C), at the positions
    ``family.language_tokens`` gives."""
    positions, grid = family.language_tokens(inputs)
    return Layout("tokens", grid=grid, selected=positions)


def language_model_name(model: nn.Module) -> str:
    """The module name of a chat model's language model (its decoder)."""
    decoder = model.get_decoder()
    return next(name for name, module in model.named_modules() if module is decoder)


def projector_output(model: nn.Module) -> str | None:
    """The module that projects the vision tower's tokens into the language model's inputs (a name ending in
    ``multi_modal_projector``), None if the model has none."""
    return next((name for name, _ in model.named_modules() if name.endswith("multi_modal_projector")), None)


def layouts(
    family: ChatFamily, model: nn.Module
) -> Callable[[str], Callable[[dict[str, Tensor]], Layout | str]]:
    """The layout of each layer: the language model's image tokens for a layer of the language model
    (``language_layout``), the family's own (its vision tower's) for the others."""
    language = language_model_name(model)

    def layout_of(layer: str) -> Callable[[dict[str, Tensor]], Layout | str]:
        if layer.startswith(language + "."):
            return lambda inputs: language_layout(family, inputs)
        return family.layout

    return layout_of


def square_grid(count: int) -> tuple[int, int]:
    """The h x h grid of ``count`` tokens (a fixed-resolution family's image tokens)."""
    side = math.isqrt(count)
    if side * side != count:
        raise ValueError(
            f"{count} image tokens form no square grid: pass the layout of a layer of the language model"
        )
    return side, side
