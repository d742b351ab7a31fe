"""PaliGemma (``model_type`` "paligemma") as a chat model (``chat_family.ChatFamily``): LLaVA's fixed
resolution and processor-expanded image tokens, with its own request and reply.

PaliGemma has no chat template. Its input is a prefix, the image's ``image_seq_length`` tokens, the BOS
token, the request and a newline, then the suffix, the reply. The processor builds the prefix from a
text that starts with its image token (``<image>``) and marks it ``token_type_ids`` 0; the language
model attends over the prefix in both directions and over the suffix causally, so a reply given under
teacher forcing must be marked 1 (suffix), as ``generate`` marks the tokens it writes. A reply marked 0
would be read as part of the prefix: every token would see the ones after it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mmcam.adapters.llava import Llava

REPLY_TOKEN_TYPE = 1  # token_type_ids of the suffix


class PaliGemma(Llava):
    """PaliGemma: inputs carry the prompt's ``token_type_ids``; every token after the prompt is a reply."""

    KEYS = (*Llava.KEYS, "token_type_ids")

    def prompt(self, text: str) -> str:
        """Its image token, then the request (the processor adds the BOS token and the newline)."""
        return self.processor.image_token + text

    def arguments(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """The inputs, their prompt's ``token_type_ids`` continued with the reply's over the ``input_ids``
        after the prompt."""
        types, ids = inputs.get("token_type_ids"), inputs["input_ids"]
        if types is None or types.shape[0] != ids.shape[0] or types.shape[1] > ids.shape[1]:
            raise ValueError(
                "PaliGemma's inputs hold the prompts' token_type_ids (B, prompt length) before the replies' "
                "input_ids: make them with the adapter's prepare"
            )
        reply = types.new_full((len(ids), ids.shape[1] - types.shape[1]), REPLY_TOKEN_TYPE)
        return {**super().arguments(inputs), "token_type_ids": torch.cat([types, reply], dim=1)}
