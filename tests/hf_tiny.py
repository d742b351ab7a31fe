"""Tiny randomly initialized Hugging Face models and processors, saved like downloaded checkpoints (no network)."""

from pathlib import Path

import torch

VOCAB = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "[DEC]",
    "a",
    "red",
    "blue",
    "circle",
    "square",
    "small",
    "large",
    "to",
    "the",
    "left",
    "of",
    "is",
    "what",
    "color",
    "yes",
    "no",
    "cir",
    "##cle",
    "##s",
    "?",
]
VISION = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "image_size": 32,
    "patch_size": 8,
}
TEXT = {
    "vocab_size": len(VOCAB),
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}


def bert_tokenizer():
    from transformers import BertTokenizerFast

    return BertTokenizerFast(vocab={word: i for i, word in enumerate(VOCAB)}, bos_token="[DEC]")


def _save_blip(folder: Path, model_class) -> Path:
    """A tiny BLIP of ``model_class`` (captioning or VQA) and its processor."""
    from transformers import BlipConfig, BlipImageProcessor, BlipProcessor

    torch.manual_seed(0)
    text = dict(TEXT, bos_token_id=VOCAB.index("[DEC]"), pad_token_id=0, sep_token_id=3, eos_token_id=3)
    model_class(
        BlipConfig(vision_config=VISION, text_config=dict(text, encoder_hidden_size=32))
    ).save_pretrained(folder)
    BlipProcessor(BlipImageProcessor(size={"height": 32, "width": 32}), bert_tokenizer()).save_pretrained(
        folder
    )
    return folder


def save_blip_captioner(folder: Path) -> Path:
    from transformers import BlipForConditionalGeneration

    return _save_blip(folder, BlipForConditionalGeneration)


def save_git_captioner(folder: Path) -> Path:
    from transformers import CLIPImageProcessor, GitConfig, GitForCausalLM, GitProcessor

    torch.manual_seed(0)
    config = GitConfig(vision_config=VISION, **TEXT, bos_token_id=2, eos_token_id=3, pad_token_id=0)
    GitForCausalLM(config).save_pretrained(folder)
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    GitProcessor(images, bert_tokenizer()).save_pretrained(folder)
    return folder


def save_vision_encoder_decoder(folder: Path) -> Path:
    from transformers import (
        BertConfig,
        BertLMHeadModel,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessor,
        ViTModel,
    )

    torch.manual_seed(0)
    decoder = BertLMHeadModel(BertConfig(**TEXT, is_decoder=True, add_cross_attention=True))
    model = VisionEncoderDecoderModel(encoder=ViTModel(ViTConfig(**VISION)), decoder=decoder)
    model.config.decoder_start_token_id = 2
    model.config.pad_token_id = 0
    model.config.eos_token_id = 3
    model.save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    bert_tokenizer().save_pretrained(folder)
    return folder


def save_vilt_vqa(folder: Path) -> Path:
    from transformers import ViltConfig, ViltForQuestionAnswering, ViltImageProcessor, ViltProcessor

    torch.manual_seed(0)
    answers = ["red", "blue", "yes", "no", "circle"]
    config = ViltConfig(
        **VISION,
        vocab_size=len(VOCAB),
        max_position_embeddings=40,
        num_images=1,
        id2label=dict(enumerate(answers)),
        label2id={a: i for i, a in enumerate(answers)},
    )
    ViltForQuestionAnswering(config).save_pretrained(folder)
    images = ViltImageProcessor(size={"shortest_edge": 32}, size_divisor=8, do_pad=True)
    ViltProcessor(images, bert_tokenizer()).save_pretrained(folder)
    return folder


def save_blip_vqa(folder: Path) -> Path:
    from transformers import BlipForQuestionAnswering

    return _save_blip(folder, BlipForQuestionAnswering)


CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }} : {% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image> {% else %}{{ part['text'] }}{% endif %}{% endfor %} "
    "{% endfor %}{% if add_generation_prompt %}assistant : {% endif %}"
)


def save_llava(folder: Path, image_size: int = 32, patch_size: int = 8) -> Path:
    """A tiny LLaVA (CLIP vision tower, projector, Llama language model) and its processor with a chat
    template; the image becomes (image_size / patch_size)^2 tokens."""
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = bert_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    vision = {**VISION, "image_size": image_size, "patch_size": patch_size}
    text = {**TEXT, "vocab_size": len(tokenizer), "num_key_value_heads": 2, "max_position_embeddings": 256}
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**vision),
        text_config=LlamaConfig(**text, pad_token_id=0),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
        image_seq_length=(image_size // patch_size) ** 2,
    )
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).save_pretrained(folder)
    size = {"height": image_size, "width": image_size}
    LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size=size),
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        chat_template=CHAT_TEMPLATE,
        num_additional_image_tokens=1,
    ).save_pretrained(folder)
    return folder


QWEN_TOKENS = ["<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"]
QWEN_CHAT_TEMPLATE = CHAT_TEMPLATE.replace("<image>", "<|vision_start|><|image_pad|><|vision_end|>")


def save_qwen_vl(folder: Path, version: str = "2", patch_size: int = 8) -> Path:
    """A tiny Qwen2-VL (``version="2"``) or Qwen2.5-VL (``"2.5"``, windows of 2x2 merged tokens, full attention
    in its second block) and its processor with a chat template; an image is stretched to sides that are
    multiples of 2 * patch_size, between 32x32 and 128x128 pixels in area."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    tokenizer = bert_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": QWEN_TOKENS})
    ids = dict(
        zip(("image", "video", "vision_start", "vision_end"), tokenizer.convert_tokens_to_ids(QWEN_TOKENS))
    )
    cuts = {"patch_size": patch_size, "spatial_merge_size": 2, "temporal_patch_size": 2}
    text = {
        **TEXT,
        "vocab_size": len(tokenizer),
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
        "pad_token_id": 0,
        "bos_token_id": VOCAB.index("[DEC]"),
        "eos_token_id": VOCAB.index("[SEP]"),
    }
    if version == "2":
        vision = {**cuts, "depth": 2, "embed_dim": 32, "hidden_size": 32, "num_heads": 2, "mlp_ratio": 2}
        config_class, model_class = Qwen2VLConfig, Qwen2VLForConditionalGeneration
    else:
        windows = {"window_size": 4 * patch_size, "fullatt_block_indexes": [1]}
        vision = {**cuts, **windows, "depth": 2, "hidden_size": 32, "out_hidden_size": 32, "num_heads": 2}
        vision["intermediate_size"] = 64
        config_class, model_class = Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    config = config_class(
        vision_config=vision,
        text_config=text,
        **{f"{name}_token_id": token for name, token in ids.items()},
    )
    torch.manual_seed(0 if version == "2" else 4)  # seeds whose models reply with words, not special tokens
    model_class(config).save_pretrained(folder)
    processing = {"patch_size": patch_size, "merge_size": 2, "temporal_patch_size": 2}
    size = {"shortest_edge": 32 * 32, "longest_edge": 128 * 128}
    Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(**processing, size=size),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(**processing),
        chat_template=QWEN_CHAT_TEMPLATE,
    ).save_pretrained(folder)
    return folder


def plain_tokenizer(named_tokens: dict[str, str] | None = None):
    """The BERT vocabulary's word pieces with no special tokens added around a text, as Gemma's tokenizer
    in PaliGemma's processor (which adds its BOS itself); ``named_tokens`` adds special tokens the
    tokenizer names (Gemma 3's ``boi_token``, ...)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordPiece({word: i for i, word in enumerate(VOCAB)}, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="[DEC]",
        eos_token="[SEP]",
        pad_token="[PAD]",
        unk_token="[UNK]",
        extra_special_tokens=named_tokens,
    )


def save_paligemma(folder: Path) -> Path:
    """A tiny PaliGemma (SigLIP vision tower, linear projector, Gemma language model) and its processor;
    a 32 px image becomes 4x4 tokens. The processor adds its image token and PaliGemma's 1152 location and
    segmentation tokens to the vocabulary; their rows of the output layer are zero, so that the random
    model writes words. The output layer is not tied to the input embeddings (as it is in PaliGemma): a
    random model with tied ones writes its last prompt token again and again."""
    from transformers import (
        PaliGemmaConfig,
        PaliGemmaForConditionalGeneration,
        PaliGemmaProcessor,
        SiglipImageProcessor,
    )

    images = SiglipImageProcessor(size={"height": 32, "width": 32}, image_seq_length=16)
    processor = PaliGemmaProcessor(image_processor=images, tokenizer=plain_tokenizer())
    tokenizer = processor.tokenizer
    text = {
        **TEXT,
        "model_type": "gemma",
        "vocab_size": len(tokenizer),
        "num_key_value_heads": 1,
        "head_dim": 16,
        "tie_word_embeddings": False,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    config = PaliGemmaConfig(
        vision_config={**VISION, "model_type": "siglip_vision_model"},
        text_config=text,
        image_token_index=processor.image_token_id,
        projection_dim=32,
        hidden_size=32,
        vocab_size=len(tokenizer),
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = PaliGemmaForConditionalGeneration(config)
    with torch.no_grad():
        model.lm_head.weight[len(VOCAB) + 1 :] = 0  # after the words and the image token
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


GEMMA3_TOKENS = {
    "boi_token": "<start_of_image>",
    "eoi_token": "<end_of_image>",
    "image_token": "<image_soft_token>",
}


def save_gemma3(folder: Path) -> Path:
    """A tiny Gemma 3 (SigLIP vision tower, projector, Gemma 3 language model) and its processor with a chat
    template; a 32 px image becomes 4x4 patches and as many soft tokens (the projector pools 1x1)."""
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3ImageProcessor,
        Gemma3Processor,
        Gemma3TextConfig,
        SiglipVisionConfig,
    )

    tokenizer = plain_tokenizer(GEMMA3_TOKENS)
    text = Gemma3TextConfig(
        **{**TEXT, "vocab_size": len(tokenizer)},
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=256,
        sliding_window=64,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    config = Gemma3Config(
        text_config=text,
        vision_config=SiglipVisionConfig(**VISION),
        mm_tokens_per_image=16,
        image_token_index=tokenizer.image_token_id,
        boi_token_index=tokenizer.boi_token_id,
        eoi_token_index=tokenizer.eoi_token_id,
    )
    torch.manual_seed(0)
    model = Gemma3ForConditionalGeneration(config)
    with torch.no_grad():  # Gemma 3 starts its projection at zero: the image would not reach the text
        model.model.multi_modal_projector.mm_input_projection_weight.normal_(std=0.2)
    model.save_pretrained(folder)
    Gemma3Processor(
        image_processor=Gemma3ImageProcessor(size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE.replace("<image>", GEMMA3_TOKENS["boi_token"]),
        image_seq_length=16,
    ).save_pretrained(folder)
    return folder


TILE_PINPOINTS = [[32, 64], [64, 32], [64, 64]]  # canvases of 1x2, 2x1 and 2x2 tiles of 32 px


def save_llava_next(folder: Path, version: str = "next") -> Path:
    """A tiny LLaVA-NeXT (``version`` "next": CLIP vision tower, projector, Llama language model) or
    LLaVA-OneVision ("onevision": a SigLIP tower, without a CLS token) and its processor with a chat
    template: an image becomes a base tile and the tiles of a canvas from ``TILE_PINPOINTS``, each tile 4x4
    tokens."""
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
        SiglipVisionConfig,
    )

    tokenizer = bert_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>", "<video>"]})
    text = LlamaConfig(
        **{**TEXT, "vocab_size": len(tokenizer)},
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=0,
    )
    common = {
        "text_config": text,
        "image_token_index": tokenizer.convert_tokens_to_ids("<image>"),
        "image_grid_pinpoints": TILE_PINPOINTS,
        "vision_feature_layer": -1,
    }
    torch.manual_seed(0)
    if version == "next":
        config = LlavaNextConfig(vision_config=CLIPVisionConfig(**VISION), **common)
        LlavaNextForConditionalGeneration(config).save_pretrained(folder)
        images = LlavaNextImageProcessor(
            size={"shortest_edge": 32},
            crop_size={"height": 32, "width": 32},
            image_grid_pinpoints=TILE_PINPOINTS,
        )
        processor = LlavaNextProcessor(
            image_processor=images,
            tokenizer=tokenizer,
            patch_size=8,
            vision_feature_select_strategy="default",
            num_additional_image_tokens=1,
            chat_template=CHAT_TEMPLATE,
        )
    else:
        vision = SiglipVisionConfig(**VISION)
        config = LlavaOnevisionConfig(vision_config=vision, vision_feature_select_strategy="full", **common)
        LlavaOnevisionForConditionalGeneration(config).save_pretrained(folder)
        images = LlavaOnevisionImageProcessor(
            size={"height": 32, "width": 32}, image_grid_pinpoints=TILE_PINPOINTS
        )
        processor = LlavaOnevisionProcessor(
            image_processor=images,
            tokenizer=tokenizer,
            video_processor=LlavaOnevisionVideoProcessor(size={"height": 32, "width": 32}),
            num_image_tokens=16,
            vision_feature_select_strategy="full",
            chat_template=CHAT_TEMPLATE,
        )
    processor.save_pretrained(folder)
    return folder


SPLIT_TOKENS = [
    "<fake_token_around_image>",
    "<image>",
    "<end_of_utterance>",
    "<global-img>",
    *[f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)],
]


def save_idefics3(folder: Path, version: str = "idefics3") -> Path:
    """A tiny Idefics3 (``version`` "idefics3") or SmolVLM ("smolvlm": SigLIP-style vision tower, pixel
    shuffle connector, Llama language model) and its processor with a chat template: an image is resized
    to a longest edge of 64 px and split into tiles of 32 px, plus the whole image as one more tile; each
    tile is 4x4 patches, 2x2 tokens after the pixel shuffle."""
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
        LlamaConfig,
        SmolVLMConfig,
        SmolVLMForConditionalGeneration,
        SmolVLMImageProcessor,
        SmolVLMProcessor,
        SmolVLMVideoProcessor,
    )

    tokenizer = bert_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": SPLIT_TOKENS})
    text = LlamaConfig(
        **{**TEXT, "vocab_size": len(tokenizer)},
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=VOCAB.index("[DEC]"),
        eos_token_id=VOCAB.index("[SEP]"),
    )
    vision = {**VISION, "model_type": f"{version}_vision"}
    sizes = {"size": {"longest_edge": 64}, "max_image_size": {"longest_edge": 32}}
    common = {"tokenizer": tokenizer, "image_seq_len": 4, "chat_template": CHAT_TEMPLATE}
    image_token = tokenizer.convert_tokens_to_ids("<image>")
    torch.manual_seed(0)
    if version == "idefics3":
        config = Idefics3Config(
            vision_config=vision, text_config=text, scale_factor=2, image_token_id=image_token
        )
        model = Idefics3ForConditionalGeneration(config)
        processor = Idefics3Processor(image_processor=Idefics3ImageProcessor(**sizes), **common)
    else:
        config = SmolVLMConfig(
            vision_config=vision, text_config=text, scale_factor=2, image_token_id=image_token
        )
        model = SmolVLMForConditionalGeneration(config)
        processor = SmolVLMProcessor(
            image_processor=SmolVLMImageProcessor(**sizes), video_processor=SmolVLMVideoProcessor(), **common
        )
    with torch.no_grad():  # the image's and the chat's special tokens: the random model writes words
        model.lm_head.weight[len(VOCAB) :] = 0
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
