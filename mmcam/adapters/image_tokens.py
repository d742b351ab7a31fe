"""Prompts that hold one image token, expanded into the image's tokens in the forward, and the model's logits
read back at the prompt's own positions.

Families whose number of image tokens depends on the image's size (Qwen2-VL's dynamic resolution,
LLaVA-NeXT's tiles) keep mmcam's ``input_ids`` compact, one image token per prompt whatever the image, so
that word positions, reply padding and batching do not depend on the image; ``expanded`` puts the image's
n tokens in its place just before the model runs, and ``compact_logits`` reads the logits back.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor


def image_positions(ids: Tensor, image_token: int) -> Tensor:
    """(B,) the position of each row's one image token."""
    found = ids == image_token
    if not (found.sum(dim=1) == 1).all():
        raise ValueError(
            "each prompt must hold the image token once (one image per prompt, as the chat template puts it): "
            "mmcam expands it to the image's tokens itself; pass prompts that the processor has not expanded"
        )
    return found.int().argmax(dim=1)


def expanded(ids: Tensor, mask: Tensor | None, image_token: int, tokens: Tensor) -> tuple[Tensor, Tensor]:
    """``input_ids`` (B, L) and their attention mask with each row's image token, at p, replaced by the
    image's ``tokens`` (n,): expanded position e reads row position e (e < p), tokens[e - p] (p <= e < p + n)
    or row position e - n + 1 (after); the image's tokens are attended to."""
    count = len(tokens)
    start = image_positions(ids, image_token)[:, None]
    positions = torch.arange(ids.shape[1] + count - 1, device=ids.device)[None]
    in_image = (positions >= start) & (positions < start + count)
    source = torch.where(positions < start, positions, positions - count + 1).clamp(0, ids.shape[1] - 1)
    image = tokens.to(ids)[(positions - start).clamp(0, count - 1)]
    mask = torch.ones_like(ids) if mask is None else mask
    return (
        torch.where(in_image, image, ids.gather(1, source)),
        torch.where(in_image, torch.ones_like(image), mask.gather(1, source)),
    )


def compact_logits(logits: Tensor, ids: Tensor, image_token: int, count: int) -> Tensor:
    """The logits of expanded rows (``expanded``, ``count`` image tokens) at the compact positions of ``ids``:
    position q reads q before the image token and q + count - 1 from it on (the image token's are those of
    the image's last token, which the text after it follows)."""
    positions = torch.arange(ids.shape[1], device=ids.device)[None]
    shift = (count - 1) * (positions >= image_positions(ids, image_token)[:, None])
    return logits.gather(1, (positions + shift)[..., None].expand(-1, -1, logits.shape[-1]))


def unit_pixels(images: Sequence[Image.Image]) -> Tensor:
    """RGB images as (B, 3, H, W) in [0, 1], all at the first one's size (the others resized, bicubic)."""
    size = images[0].size
    arrays = [np.asarray(image.convert("RGB").resize(size, Image.Resampling.BICUBIC)) for image in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div(255)


class OneImageToken:
    """The ``inputs`` and ``logits`` of a ``chat_family.ChatFamily`` whose prompts hold one image token,
    expanded in its ``arguments``. A subclass has ``processor``, ``image_token`` (its id), ``pixels(images)``
    and ``image_token_ids(pixels)``, the tokens (n,) the image of ``pixel_values`` expands into."""

    def inputs(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> dict[str, Tensor]:
        """Prompts with one image token each (the template's), not yet expanded to the image's tokens."""
        encoded = self.processor.tokenizer(list(prompts), return_tensors="pt", padding=True)
        return {
            "input_ids": encoded["input_ids"],
            "attention_mask": encoded["attention_mask"],
            "pixel_values": self.pixels(images),
        }

    def expanded_ids(self, inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """``input_ids`` and attention mask with each row's image token replaced by the image's tokens
        (``expanded``)."""
        tokens = self.image_token_ids(inputs["pixel_values"])
        return expanded(inputs["input_ids"], inputs.get("attention_mask"), self.image_token, tokens)

    def logits(self, logits: Tensor, inputs: dict[str, Tensor]) -> Tensor:
        """The expanded rows' logits at the compact positions (``compact_logits``)."""
        count = len(self.image_token_ids(inputs["pixel_values"]))
        return compact_logits(logits, inputs["input_ids"], self.image_token, count)
