"""What a chat model family says (``ChatFamily``), and the chat-template prompt most families share.

``adapters.chat`` turns any family into a captioner or a VQA model; each family lives in its own module
(``llava``, ``paligemma``, ``qwen_vl``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from PIL import Image
from torch import Tensor

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
    the default layer, read as ``layout(inputs)`` says.
    """

    layer: str

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
