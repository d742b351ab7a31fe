"""Published chat model architectures as Hugging Face configs, with the language model cut to N layers.

The numbers are the released checkpoints' ``config.json`` values, written down here because nothing is
downloaded; each entry says where they were read. Weights are random: these configs exist to measure what
an explanation costs at a real model's widths (``chat_cost``), not to explain anything.

- ``llava-1.5-7b`` (``llava-hf/llava-1.5-7b-hf``): CLIP ViT-L/14 at 336 px (24 layers, 1024 wide, 16
  heads, MLP 4096, patch 14: 24 x 24 = 576 image tokens, the second-to-last layer's patch tokens without
  the CLS token), a 2-layer GELU projector, and Vicuna-7B (Llama 2 7B: 4096 wide, 32 layers, 32 heads,
  MLP 11008, vocabulary 32064 with the image token at 32000). Read from the LLaVA-NeXT-Video-7B config's
  ``text_config`` (``lmsys/vicuna-7b-v1.5``, the same language model) and LLaVA 1.5's
  ``mm_vision_tower`` ``openai/clip-vit-large-patch14-336``, ``mm_vision_select_layer`` -2 and
  ``image_seq_length`` 576, as the transformers ``LlavaConfig`` documentation describes them.
- ``qwen2-vl-7b`` (``Qwen/Qwen2-VL-7B-Instruct``): its printed module tree: vision tower of 32 blocks
  1280 wide (MLP 5120, 16 heads, patch 14, temporal patch 2, 2 x 2 merge into 3584), Qwen2-7B (3584 wide,
  28 layers, 28 heads, 4 key-value heads of 128, MLP 18944, vocabulary 152064, image token 151655).
  A 448 x 448 image: 32 x 32 patches merged into 256 tokens.
- ``smolvlm-2b`` (``HuggingFaceTB/SmolVLM-Instruct``, an ``Idefics3ForConditionalGeneration``): its model
  card (81 visual tokens per 384 x 384 tile, larger images split into tiles; "based on Idefics3", SmolLM2
  1.7B) and the SmolVLM report's summary (pixel shuffle 9x: ``scale_factor`` 3; SigLIP with 14 px patches at
  384 px; RoPE base raised to 273k for a 16k context). The vision tower is SigLIP so400m (27 layers, 1152
  wide, 16 heads of 72, MLP 4304, patch 14: 27 x 27 patches, 81 tokens after the shuffle); the language
  model SmolLM2-1.7B's Llama layers (2048 wide, 24 layers, 32 heads, 32 key-value heads, MLP 8192, RoPE
  base 273768, untied head) over a vocabulary of 49280. Read from kornia-rs's SmolVLM-Instruct port
  (``crates/kornia-vlm/src/smolvlm``, which loads that checkpoint's weights: 27 vision blocks of 16 heads of
  72, 24 text blocks of 32 heads of 64 with as many key-value heads, RoPE base 273768 over 16384 positions,
  an ``lm_head`` of its own, tiles of 384 px and 81 tokens) and, for the MLP's 8192 and the vocabulary's
  49280, a candle port's Llama config for the same checkpoint; not from the checkpoint's own
  ``config.json``, which was not at hand. The vision MLP's 4304 is SigLIP so400m's published width. The
  image token's id, 49190, is the SmolVLM family's ``<image>`` (as in SmolVLM2's published configs; assumed
  the same for SmolVLM-Instruct): the cost does not depend on it.
  Its processor resizes an image to a longest edge of 1536 px (4 tiles; kornia-rs's port does the same)
  and splits it into 384 px tiles: a square image is 4 x 4 tiles and the global image, 17 x 81 = 1377
  image tokens (``chat_cost.SpelledTiles`` spells them out).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Architecture:
    """A published architecture: ``config(depth)`` its Hugging Face config with ``depth`` language model
    layers (None: the published ``full_depth``), ``model_class`` the transformers class that builds it,
    ``image_tokens`` the number of image tokens its language model reads for the benchmark's image."""

    name: str
    full_depth: int
    model_class: str
    image_tokens: int
    config: Callable[[int], object]


def _llava(depth: int):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision = CLIPVisionConfig(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        patch_size=14,
        image_size=336,
        projection_dim=768,
        hidden_act="quick_gelu",
    )
    text = LlamaConfig(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=depth,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=32064,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
    )
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=32000,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        image_seq_length=576,
    )


def _qwen2_vl(depth: int):
    from transformers import Qwen2VLConfig

    return Qwen2VLConfig(
        text_config={
            "hidden_size": 3584,
            "intermediate_size": 18944,
            "num_hidden_layers": depth,
            "num_attention_heads": 28,
            "num_key_value_heads": 4,
            "vocab_size": 152064,
            "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
        },
        vision_config={
            "depth": 32,
            "embed_dim": 1280,
            "hidden_size": 3584,
            "mlp_ratio": 4,
            "num_heads": 16,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        image_token_id=151655,
        vision_start_token_id=151652,
        vision_end_token_id=151653,
        video_token_id=151656,
    )


def _smolvlm(depth: int):
    from transformers import Idefics3Config

    return Idefics3Config(
        vision_config={
            "hidden_size": 1152,
            "intermediate_size": 4304,
            "num_hidden_layers": 27,
            "num_attention_heads": 16,
            "image_size": 384,
            "patch_size": 14,
        },
        text_config={
            "model_type": "llama",
            "hidden_size": 2048,
            "intermediate_size": 8192,
            "num_hidden_layers": depth,
            "num_attention_heads": 32,
            "num_key_value_heads": 32,
            "vocab_size": 49280,
            "max_position_embeddings": 16384,
            "rope_theta": 273768.0,
            "rms_norm_eps": 1e-5,
        },
        scale_factor=3,
        image_token_id=49190,
        tie_word_embeddings=False,
    )


ARCHITECTURES = {
    "llava-1.5-7b": Architecture("llava-1.5-7b", 32, "LlavaForConditionalGeneration", 576, _llava),
    "qwen2-vl-7b": Architecture("qwen2-vl-7b", 28, "Qwen2VLForConditionalGeneration", 256, _qwen2_vl),
    "smolvlm-2b": Architecture("smolvlm-2b", 24, "Idefics3ForConditionalGeneration", 17 * 81, _smolvlm),
}


def build(name: str, depth: int | None, dtype: torch.dtype = torch.bfloat16, seed: int = 0):
    """The architecture ``name`` with ``depth`` language model layers (None: all), random weights drawn
    from ``seed``, in ``dtype``, in eval mode on the CPU."""
    import transformers

    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture '{name}'; use one of {', '.join(ARCHITECTURES)}")
    architecture = ARCHITECTURES[name]
    config = architecture.config(architecture.full_depth if depth is None else depth)
    torch.manual_seed(seed)
    model_class = getattr(transformers, architecture.model_class)
    return model_class._from_config(config, dtype=dtype).eval()
