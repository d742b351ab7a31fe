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

from mmcam.adapters.llava import Llava


class PaliGemma(Llava):
    """PaliGemma: inputs carry the prompt's ``token_type_ids``; every token after the prompt is a reply,
    marked 1 (the suffix)."""

    KEYS = (*Llava.KEYS, "token_type_ids")
    LANGUAGE_DEFAULT = False
    REPLY_TOKEN_TYPE = 1

    def prompt(self, text: str) -> str:
        """Its image token, then the request (the processor adds the BOS token and the newline)."""
        return self.processor.image_token + text
