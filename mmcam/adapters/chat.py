"""Image-text-to-text chat models (LLaVA, PaliGemma): a caption or an answer is the model's reply to a
request about the image, and each word of the reply is explained under teacher forcing, all from one
forward.

A family (``ChatFamily``) says how a request becomes the processor's text and how the reply's tokens are
marked: LLaVA's prompt is the processor's chat template on one user turn, ``[image, text]``, with the
generation prompt; PaliGemma's is its image token and the text (``adapters.paligemma``). The processor
expands the image into its tokens. A reply's word scores are log-probabilities of its sub-word tokens
given the prompt and the reply before them (``TokenLogProb``). The explained layer is in the vision tower,
whose tokens are the image's patches (``tokens.first_block_norm``).

Models of a fixed input resolution are supported (LLaVA 1.5, PaliGemma and their architectures); models
that tile the image (LLaVA-NeXT, Idefics3) or merge patches on the fly (Qwen2-VL) are not yet: their
vision tower's rows are tiles or packed patches, not samples, which the engine does not read yet
(LLaVA-NeXT's tiles are put back on the image by ``adapters.llava_next``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn

from mmcam.adapters import paligemma
from mmcam.adapters.captioning import CaptionModel, Tokenized, huggingface_tokenize
from mmcam.adapters.hub import quiet_generation, unknown_words
from mmcam.adapters.tokens import TOKEN_METHOD, first_block_norm
from mmcam.adapters.vqa import VQAModel, answer_token_ids, hf_question_tokens
from mmcam.targets import right_padded

CAPTION_PROMPT = "Describe the image."
MAX_CAPTION_TOKENS = 30
MAX_ANSWER_TOKENS = 10
# the processor's outputs a chat model's forward reads (``labels`` and the like are left out)
MODEL_INPUTS = ("input_ids", "attention_mask", "pixel_values", "token_type_ids")


def chat_template_prompt(processor, text: str) -> str:
    """The chat prompt of one user turn holding the image and ``text``, ready for the reply."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True)


@dataclass(frozen=True)
class ChatFamily:
    """What differs between chat model families. ``prompt(processor, text)``: the processor's text for one
    request about one image; ``reply_token_type``: the ``token_type_ids`` of the reply's tokens, for the
    families whose processor gives them."""

    prompt: Callable[[Any, str], str] = chat_template_prompt
    reply_token_type: int = 0


FAMILIES = {  # by config.model_type
    "llava": ChatFamily(),
    "paligemma": ChatFamily(paligemma.prompt_text, paligemma.REPLY_TOKEN_TYPE),
}
CHAT_MODEL_TYPES = tuple(FAMILIES)


def chat_inputs(
    processor, family: ChatFamily, images: Sequence[Image.Image], texts: Sequence[str]
) -> dict[str, Tensor]:
    """The model inputs of one request per image: ``input_ids``, ``attention_mask``, ``pixel_values`` and
    the family's others (``MODEL_INPUTS``)."""
    encoded = processor(
        images=list(images),
        text=[family.prompt(processor, t) for t in texts],
        return_tensors="pt",
        padding=True,
    )
    return {key: encoded[key] for key in MODEL_INPUTS if key in encoded}


def continued_types(types: Tensor, length: int, reply_type: int) -> Tensor:
    """The ``token_type_ids`` (B, L) of prompts (B, L_prompt) followed by replies up to ``length`` tokens."""
    reply = types.new_full((types.shape[0], length - types.shape[1]), reply_type)
    return torch.cat([types, reply], dim=1)


def with_replies(
    inputs: dict[str, Tensor], replies: Sequence[Sequence[int]], reply_type: int = 0
) -> dict[str, Tensor]:
    """The inputs of B prompts of one length, each followed by its reply's token ids (teacher forcing),
    padded on the right; the padding is masked out of attention, and reply tokens get ``token_type_ids``
    ``reply_type`` where the prompt has token types."""
    device = inputs["input_ids"].device
    ids = right_padded(replies, device).to(inputs["input_ids"].dtype)
    read = right_padded([[1] * len(reply) for reply in replies], device).to(inputs["attention_mask"].dtype)
    extended = {
        **inputs,
        "input_ids": torch.cat([inputs["input_ids"], ids], dim=1),
        "attention_mask": torch.cat([inputs["attention_mask"], read], dim=1),
    }
    if "token_type_ids" in inputs:
        length = extended["input_ids"].shape[1]
        extended["token_type_ids"] = continued_types(inputs["token_type_ids"], length, reply_type)
    return extended


def _forward(m: nn.Module, inputs: dict[str, Tensor]) -> Tensor:
    return m(**{key: inputs[key] for key in MODEL_INPUTS if key in inputs}).logits


def _replies(model: nn.Module, tokenizer, inputs: dict[str, Tensor], max_tokens: int) -> list[str]:
    """The model's greedy replies to ``inputs``, without the prompt."""
    with quiet_generation():
        ids = model.generate(**inputs, max_new_tokens=max_tokens, do_sample=False)
    return [
        text.strip()
        for text in tokenizer.batch_decode(ids[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    ]


def _vision_layer(model: nn.Module) -> str:
    return first_block_norm(model, _vision_tower(model)) or "auto"


def _vision_tower(model: nn.Module) -> str:
    """The name of the vision tower module (``model.vision_tower`` in transformers 5)."""
    return next(name for name, _ in model.named_modules() if name.endswith("vision_tower"))


def family_of(model: nn.Module) -> ChatFamily:
    """The chat family of a model, from its ``config.model_type``; an unknown one is refused."""
    kind = model.config.model_type
    if kind not in FAMILIES:
        raise ValueError(f"{kind} is no supported chat model; supported: {', '.join(CHAT_MODEL_TYPES)}")
    return FAMILIES[kind]


def captioner(model: nn.Module, processor, name: str, prompt: str = CAPTION_PROMPT) -> CaptionModel:
    """A chat model as a captioner: its reply to ``prompt`` is the caption. Every image has the same
    prompt (a fixed number of image tokens), so a caption's ids are the prompt's, then the caption's."""
    tokenizer = processor.tokenizer
    family = family_of(model)
    request = chat_inputs(processor, family, [Image.new("RGB", (8, 8))], [prompt])
    request.pop("pixel_values")
    prompt_ids = request["input_ids"][0].tolist()
    words = huggingface_tokenize(tokenizer, prompt_ids[-1])

    def preprocess(images: Sequence[Image.Image]) -> Tensor:
        return processor.image_processor(images=list(images), return_tensors="pt")["pixel_values"]

    def generate(pixels: Tensor) -> list[str]:
        inputs = {key: value.to(pixels.device).expand(len(pixels), -1) for key, value in request.items()}
        return _replies(model, tokenizer, {**inputs, "pixel_values": pixels}, MAX_CAPTION_TOKENS)

    def tokenize(caption: str) -> Tokenized:
        """The prompt, then the caption: word positions count from the prompt's start."""
        reply = words(caption)
        shift = len(prompt_ids) - 1
        return Tokenized(
            prompt_ids[:-1] + reply.ids,
            reply.words,
            [[p + shift for p in group] for group in reply.positions],
        )

    def forward(m: nn.Module, inputs: dict[str, Tensor]) -> Tensor:
        """The captioner's inputs (pixels, prompt and caption ids) with the prompt's token types, if any,
        continued over the caption."""
        if "token_type_ids" in request:
            ids = inputs["input_ids"]
            types = request["token_type_ids"].to(ids.device).expand(len(ids), -1)
            inputs = {
                **inputs,
                "token_type_ids": continued_types(types, ids.shape[1], family.reply_token_type),
            }
        return _forward(m, inputs)

    return CaptionModel(
        name,
        model.eval(),
        preprocess,
        generate,
        tokenize,
        forward,
        _vision_layer(model),
        TOKEN_METHOD,
        partial(unknown_words, tokenizer),
    )


def vqa_model(model: nn.Module, processor, name: str) -> VQAModel:
    """A chat model answering questions: its reply to the question is the answer (generative VQA)."""
    tokenizer = processor.tokenizer
    family = family_of(model)

    def prepare(images: Sequence[Image.Image], questions: Sequence[str]) -> dict[str, Tensor]:
        return chat_inputs(processor, family, images, questions)

    def answer_inputs(inputs: dict[str, Tensor], answers: Sequence[str]) -> tuple[dict, list[list[int]]]:
        replies = [answer_token_ids(tokenizer, answer) for answer in answers]
        extended = with_replies(inputs, replies, family.reply_token_type)
        start = inputs["input_ids"].shape[1]
        positions = [list(range(start, start + len(reply))) for reply in replies]
        return {**extended, "answer_ids": extended["input_ids"]}, positions

    return VQAModel(
        name=name,
        model=model.eval(),
        prepare=prepare,
        forward=_forward,
        question_tokens=lambda inputs: hf_question_tokens(tokenizer, inputs),
        layer=_vision_layer(model),
        question_layer=next(n for n, m in model.named_modules() if m is model.get_input_embeddings()),
        generate=lambda inputs: _replies(model, tokenizer, inputs, MAX_ANSWER_TOKENS),
        answer_inputs=answer_inputs,
        method=TOKEN_METHOD,
        unknown_words=partial(unknown_words, tokenizer),
    )


def model_type(path: str) -> str | None:
    """The ``model_type`` of the checkpoint at ``path`` (local directory or local cache), None if unreadable."""
    from transformers import AutoConfig

    from mmcam.adapters.hub import load_local

    try:
        return load_local(AutoConfig, path, weights=False).model_type
    except (OSError, ValueError):
        return None


def from_pretrained(path: str, task: str, trust_pickle: bool = False, prompt: str = CAPTION_PROMPT):
    """A chat model from a local directory or the local Hugging Face cache, as a ``"caption"`` or ``"vqa"``
    adapter."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from mmcam.adapters.hub import load_local

    try:
        model = load_local(AutoModelForImageTextToText, path, trust_pickle)
        processor = load_local(AutoProcessor, path, weights=False)
    except OSError as error:
        raise ValueError(f"cannot load the chat model '{path}': {str(error).splitlines()[0]}") from error
    if task == "caption":
        return captioner(model, processor, f"hf:{path}", prompt)
    return vqa_model(model, processor, f"hf:{path}")
