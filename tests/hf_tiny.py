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
