"""LLaVA 1.5 as a chat model (``chat_family.ChatFamily``): a fixed input resolution, the image expanded
into its tokens by the processor, the prompt the processor's chat template. Families of the same shape
whose inputs also mark token types (PaliGemma, Gemma 3) set ``REPLY_TOKEN_TYPE``: the prompt's
``token_type_ids`` are continued with it over the reply.

LLaVA's default layer is the projector's output: the image's tokens as the language model reads them, after
the vision tower and the projector. Judged by the model's own evidence on the trained ``llava-shapes``
fixture (docs/evaluation.md, "Defaults judged by the model's own evidence": 100 scenes, seed 41000), NormGrad
there puts a caption word's peak on the object the model relies on 0.613 of the time against 0.550 at the
language model's first input norm (the default before; paired difference +0.063, 95% interval [+0.028,
+0.100]), with a lower deletion AUC (0.268 against 0.280, [-0.015, -0.009]); on answers (200 scenes) its peak
agrees a little less often, within the noise (0.652 against 0.681, [-0.062, +0.004]; deletion AUC equal,
[-0.001, +0.002]): over both tasks the projector's output leads. Lone objects 12 and 12 of 12 (caption,
answer) against 11 and 12. By the strict pointing game of ``tasks/fixtures/pointing.py`` (200
scenes) the two were close: answers 0.451 at the input norm, 0.448 at the projector's output; caption words
0.243 and 0.273. PaliGemma and Gemma 3 take the vision tower's second block, as the other families: not
measured on a trained model, and Gemma 3's projector pools the tower's patches into a coarser grid."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image
from torch import Tensor, nn

from mmcam.adapters.chat_family import (
    chat_template_prompt,
    image_grid_positions,
    projector_output,
    square_grid,
)
from mmcam.adapters.tokens import block_norm


class Llava:
    """LLaVA 1.5: the processor resizes every image to one size and expands it into its tokens."""

    KEYS = ("input_ids", "attention_mask", "pixel_values")  # the processor's outputs the model reads
    REPLY_TOKEN_TYPE: int | None = None  # the token type of a reply's tokens, where inputs mark token types
    # the default layer is the image's tokens as the language model reads them (else the tower's)
    LANGUAGE_DEFAULT = True

    def __init__(self, model: nn.Module, processor):
        self.processor = processor
        self.image_token = model.config.image_token_id
        tower = next(name for name, _ in model.named_modules() if name.endswith("vision_tower"))
        language = projector_output(model) if self.LANGUAGE_DEFAULT else None
        self.layer = language or block_norm(model, tower) or "auto"

    def prompt(self, text: str) -> str:
        return chat_template_prompt(self.processor, text)

    def pixels(self, images: Sequence[Image.Image]) -> Tensor:
        return self.processor.image_processor(images=list(images), return_tensors="pt")["pixel_values"]

    def inputs(self, images: Sequence, prompts: Sequence[str]) -> dict[str, Tensor]:
        encoded = self.processor(images=list(images), text=list(prompts), return_tensors="pt", padding=True)
        return {key: encoded[key] for key in self.KEYS}

    def arguments(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """The inputs the model reads; with ``REPLY_TOKEN_TYPE``, the prompt's ``token_type_ids`` continued
        with it over the ``input_ids`` after the prompt."""
        arguments = {key: inputs[key] for key in self.KEYS if key in inputs}
        if self.REPLY_TOKEN_TYPE is None:
            return arguments
        types, ids = inputs.get("token_type_ids"), inputs["input_ids"]
        if types is None or types.shape[0] != ids.shape[0] or types.shape[1] > ids.shape[1]:
            raise ValueError(
                f"{type(self).__name__}'s inputs hold the prompts' token_type_ids (B, prompt length) before the "
                "replies' input_ids: make them with the adapter's prepare"
            )
        reply = types.new_full((len(ids), ids.shape[1] - types.shape[1]), self.REPLY_TOKEN_TYPE)
        return {**arguments, "token_type_ids": torch.cat([types, reply], dim=1)}

    def logits(self, logits: Tensor, inputs: dict[str, Tensor]) -> Tensor:
        return logits

    def layout(self, inputs: dict[str, Tensor]) -> str:
        return "auto"

    def language_tokens(self, inputs: dict[str, Tensor]) -> tuple[Tensor, tuple[int, int]]:
        """The image's tokens, which the processor put in ``input_ids``: the tower's patch grid (after a
        projector's pooling), square, row-major."""
        ids = inputs["input_ids"]
        grid = square_grid(int((ids[0] == self.image_token).sum()))
        return image_grid_positions(ids, self.image_token, grid), grid
