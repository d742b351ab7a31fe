"""Image-text-to-text chat models (LLaVA, Qwen2-VL, Qwen2.5-VL): a caption or an answer is the model's
reply to a chat prompt that holds the image, and each word of the reply is explained under teacher
forcing, all from one forward.

The prompt is the processor's chat template on one user turn, ``[image, text]``, with the generation
prompt. A reply's word scores are log-probabilities of its sub-word tokens given the prompt and the reply
before them (``TokenLogProb``). The explained layer is in the vision tower, whose tokens are the image's
patches (``tokens.first_block_norm``).

What differs between families (how images and prompts become the model's inputs, how its logits are
read, the layer and its layout) is a ``ChatFamily``: ``Llava`` here (a fixed input resolution, LLaVA 1.5
and its architecture), ``qwen_vl.QwenVL`` (dynamic resolution, packed patch tokens). Models that tile
the image (LLaVA-NeXT, Idefics3) are not supported yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Protocol

import torch
from PIL import Image
from torch import Tensor, nn

from mmcam.adapters.captioning import CaptionModel, Tokenized, huggingface_tokenize
from mmcam.adapters.hub import quiet_generation, unknown_words
from mmcam.adapters.qwen_vl import QwenVL
from mmcam.adapters.tokens import TOKEN_METHOD, first_block_norm
from mmcam.adapters.vqa import VQAModel, answer_token_ids, hf_question_tokens
from mmcam.engine import Layout
from mmcam.targets import right_padded

CAPTION_PROMPT = "Describe the image."
MAX_CAPTION_TOKENS = 30
MAX_ANSWER_TOKENS = 10


class ChatFamily(Protocol):
    """The family-specific part of a chat model, built from the model and its processor.

    ``pixels(images)``: the images as ``pixel_values`` (B, C, H, W), the image the maps are drawn on.
    ``inputs(images, prompts)``: ``input_ids``, ``attention_mask`` and ``pixel_values`` of one chat prompt
    (text, template applied) per image. ``arguments(inputs)``: the keyword arguments of the model and of
    its ``generate`` for such inputs, also when replies follow the prompts. ``logits(logits, inputs)``: the
    model's logits at the positions of ``inputs["input_ids"]``. ``layer``: the default layer, read as
    ``layout(inputs)`` says.
    """

    layer: str

    def pixels(self, images: Sequence[Image.Image]) -> Tensor: ...

    def inputs(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> dict[str, Tensor]: ...

    def arguments(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]: ...

    def logits(self, logits: Tensor, inputs: dict[str, Tensor]) -> Tensor: ...

    def layout(self, inputs: dict[str, Tensor]) -> str | Layout: ...


class Llava:
    """LLaVA 1.5: the processor resizes every image to one size and expands it into its tokens."""

    KEYS = ("input_ids", "attention_mask", "pixel_values")

    def __init__(self, model: nn.Module, processor):
        self.processor = processor
        tower = next(name for name, _ in model.named_modules() if name.endswith("vision_tower"))
        self.layer = first_block_norm(model, tower) or "auto"

    def pixels(self, images: Sequence[Image.Image]) -> Tensor:
        return self.processor.image_processor(images=list(images), return_tensors="pt")["pixel_values"]

    def inputs(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> dict[str, Tensor]:
        encoded = self.processor(images=list(images), text=list(prompts), return_tensors="pt", padding=True)
        return {key: encoded[key] for key in self.KEYS}

    def arguments(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        return {key: inputs[key] for key in self.KEYS if key in inputs}

    def logits(self, logits: Tensor, inputs: dict[str, Tensor]) -> Tensor:
        return logits

    def layout(self, inputs: dict[str, Tensor]) -> str:
        return "auto"


FAMILIES = {"llava": Llava, "qwen2_vl": QwenVL, "qwen2_5_vl": QwenVL}  # by config.model_type
CHAT_MODEL_TYPES = tuple(FAMILIES)


def prompt_text(processor, text: str) -> str:
    """The chat prompt of one user turn holding the image and ``text``, ready for the reply."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True)


def chat_inputs(family: ChatFamily, processor, images: Sequence[Image.Image], texts: Sequence[str]):
    """The model inputs of one prompt per image: ``input_ids``, ``attention_mask``, ``pixel_values``."""
    return family.inputs(images, [prompt_text(processor, text) for text in texts])


def with_replies(inputs: dict[str, Tensor], replies: Sequence[Sequence[int]]) -> dict[str, Tensor]:
    """The inputs of B prompts of one length, each followed by its reply's token ids (teacher forcing),
    padded on the right; the padding is masked out of attention."""
    device = inputs["input_ids"].device
    ids = right_padded(replies, device).to(inputs["input_ids"].dtype)
    read = right_padded([[1] * len(reply) for reply in replies], device).to(inputs["attention_mask"].dtype)
    return {
        **inputs,
        "input_ids": torch.cat([inputs["input_ids"], ids], dim=1),
        "attention_mask": torch.cat([inputs["attention_mask"], read], dim=1),
    }


def _forward(family: ChatFamily, m: nn.Module, inputs: dict[str, Tensor]) -> Tensor:
    return family.logits(m(**family.arguments(inputs)).logits, inputs)


def _replies(family: ChatFamily, model: nn.Module, tokenizer, inputs: dict[str, Tensor], max_tokens: int):
    """The model's greedy replies to ``inputs``, without the prompt."""
    arguments = family.arguments(inputs)
    with quiet_generation():
        ids = model.generate(**arguments, max_new_tokens=max_tokens, do_sample=False)
    return [
        text.strip()
        for text in tokenizer.batch_decode(
            ids[:, arguments["input_ids"].shape[1] :], skip_special_tokens=True
        )
    ]


def captioner(
    model: nn.Module, processor, name: str, prompt: str = CAPTION_PROMPT, family: ChatFamily | None = None
) -> CaptionModel:
    """A chat model as a captioner: its reply to ``prompt`` is the caption. ``family`` defaults to LLaVA's."""
    family = family or Llava(model, processor)
    tokenizer = processor.tokenizer
    blank = Image.new("RGB", (8, 8))
    prompt_ids = chat_inputs(family, processor, [blank], [prompt])["input_ids"][0].tolist()
    words = huggingface_tokenize(tokenizer, prompt_ids[-1])

    def generate(pixels: Tensor) -> list[str]:
        ids = torch.tensor([prompt_ids] * len(pixels), device=pixels.device)
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": pixels}
        return _replies(family, model, tokenizer, inputs, MAX_CAPTION_TOKENS)

    def tokenize(caption: str) -> Tokenized:
        """The prompt, then the caption: word positions count from the prompt's start."""
        reply = words(caption)
        shift = len(prompt_ids) - 1
        return Tokenized(
            prompt_ids[:-1] + reply.ids,
            reply.words,
            [[p + shift for p in group] for group in reply.positions],
        )

    return CaptionModel(
        name,
        model.eval(),
        family.pixels,
        generate,
        tokenize,
        partial(_forward, family),
        family.layer,
        TOKEN_METHOD,
        partial(unknown_words, tokenizer),
        family.layout,
    )


def vqa_model(model: nn.Module, processor, name: str, family: ChatFamily | None = None) -> VQAModel:
    """A chat model answering questions: its reply to the question is the answer (generative VQA).
    ``family`` defaults to LLaVA's."""
    family = family or Llava(model, processor)
    tokenizer = processor.tokenizer

    def prepare(images: Sequence[Image.Image], questions: Sequence[str]) -> dict[str, Tensor]:
        return chat_inputs(family, processor, images, questions)

    def answer_inputs(inputs: dict[str, Tensor], answers: Sequence[str]) -> tuple[dict, list[list[int]]]:
        replies = [answer_token_ids(tokenizer, answer) for answer in answers]
        extended = with_replies(inputs, replies)
        start = inputs["input_ids"].shape[1]
        positions = [list(range(start, start + len(reply))) for reply in replies]
        return {**extended, "answer_ids": extended["input_ids"]}, positions

    def question_tokens(inputs: dict[str, Tensor]) -> list[str | None]:
        """The tokens of the sequence the language model reads (the image's tokens are None)."""
        return hf_question_tokens(tokenizer, family.arguments(inputs))

    return VQAModel(
        name=name,
        model=model.eval(),
        prepare=prepare,
        forward=partial(_forward, family),
        question_tokens=question_tokens,
        layer=family.layer,
        question_layer=next(n for n, m in model.named_modules() if m is model.get_input_embeddings()),
        layout=family.layout,
        generate=lambda inputs: _replies(family, model, tokenizer, inputs, MAX_ANSWER_TOKENS),
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
    family = FAMILIES[model.config.model_type](model, processor)
    if task == "caption":
        return captioner(model, processor, f"hf:{path}", prompt, family)
    return vqa_model(model, processor, f"hf:{path}", family)
