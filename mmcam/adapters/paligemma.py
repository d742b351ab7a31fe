"""PaliGemma (``model_type`` "paligemma"): what differs from LLaVA in a chat model's request and reply.

PaliGemma has no chat template. Its input is a prefix, the image's ``image_seq_length`` tokens, the BOS
token, the request and a newline, then the suffix, the reply. The processor builds the prefix from a
text that starts with its image token (``<image>``) and marks it ``token_type_ids`` 0; the language
model attends over the prefix in both directions and over the suffix causally, so a reply given under
teacher forcing must be marked 1 (suffix), as ``generate`` marks the tokens it writes. A reply marked 0
would be read as part of the prefix: every token would see the ones after it.
"""

from __future__ import annotations

REPLY_TOKEN_TYPE = 1  # token_type_ids of the suffix


def prompt_text(processor, text: str) -> str:
    """The processor's text for one request about one image: its image token, then the request."""
    return processor.image_token + text
