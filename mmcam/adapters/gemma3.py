"""Gemma 3 (``model_type`` "gemma3") as a chat model (``chat_family.ChatFamily``): LLaVA's fixed resolution,
processor-expanded image tokens and chat template, with token types.

The processor puts the image's ``mm_tokens_per_image`` soft tokens between its begin- and end-of-image
tokens and marks them ``token_type_ids`` 1: the language model lets an image's tokens attend to each other
in both directions, and the text causally. A reply is text, marked 0, as ``generate`` reads the tokens it
writes. The vision tower (SigLIP) reads the image as a grid of patches that the projector pools into the
soft tokens; the maps are drawn on the tower's patch grid.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image
from torch import Tensor

from mmcam.adapters.llava import Llava


class Gemma3(Llava):
    """Gemma 3: inputs carry the prompt's ``token_type_ids``; a reply's tokens are text (0)."""

    KEYS = (*Llava.KEYS, "token_type_ids")
    LANGUAGE_DEFAULT = False
    REPLY_TOKEN_TYPE = 0

    def inputs(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> dict[str, Tensor]:
        """As LLaVA's, each prompt's image in a list of its own (the processor's images per prompt)."""
        return super().inputs([[image] for image in images], prompts)
