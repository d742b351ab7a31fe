"""LLaVA 1.5 as a chat model (``chat_family.ChatFamily``): a fixed input resolution, the image expanded
into its tokens by the processor, the prompt the processor's chat template."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image
from torch import Tensor, nn

from mmcam.adapters.chat_family import chat_template_prompt
from mmcam.adapters.tokens import first_block_norm


class Llava:
    """LLaVA 1.5: the processor resizes every image to one size and expands it into its tokens."""

    KEYS = ("input_ids", "attention_mask", "pixel_values")  # the processor's outputs the model reads

    def __init__(self, model: nn.Module, processor):
        self.processor = processor
        tower = next(name for name, _ in model.named_modules() if name.endswith("vision_tower"))
        self.layer = first_block_norm(model, tower) or "auto"

    def prompt(self, text: str) -> str:
        return chat_template_prompt(self.processor, text)

    def pixels(self, images: Sequence[Image.Image]) -> Tensor:
        return self.processor.image_processor(images=list(images), return_tensors="pt")["pixel_values"]

    def inputs(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> dict[str, Tensor]:
        encoded = self.processor(images=list(images), text=list(prompts), return_tensors="pt", padding=True)
        return {key: encoded[key] for key in self.KEYS}

    def arguments(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        return {key: inputs[key] for key in self.KEYS if key in inputs}

    def logits(self, logits: Tensor, inputs: dict[str, Tensor]) -> Tensor:
        return logits

    def layout(self, inputs: dict[str, Tensor]) -> str:
        return "auto"
