"""Image-text-to-text chat models (LLaVA): a caption or an answer is the model's reply to a chat prompt that
holds the image, and each word of the reply is explained under teacher forcing, all from one forward.

The prompt is the processor's chat template on one user turn, ``[image, text]``, with the generation
prompt; the processor expands the image into its tokens. A reply's word scores are log-probabilities of
its sub-word tokens given the prompt and the reply before them (``TokenLogProb``). The explained layer is
in the vision tower, whose tokens are the image's patches (``tokens.first_block_norm``).

Models of a fixed input resolution are supported (LLaVA 1.5 and its architecture); models that tile the
image (LLaVA-NeXT, Idefics3) or merge patches on the fly (Qwen2-VL) are not yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from PIL import Image
from torch import Tensor, nn

from mmcam.adapters.captioning import CaptionModel, Tokenized, huggingface_tokenize
from mmcam.adapters.hub import quiet_generation, unknown_words
from mmcam.adapters.tokens import TOKEN_METHOD, first_block_norm
from mmcam.adapters.vqa import VQAModel, answer_token_ids, hf_question_tokens
from mmcam.targets import right_padded

CHAT_MODEL_TYPES = ("llava",)  # config.model_type of the supported families
CAPTION_PROMPT = "Describe the image."
MAX_CAPTION_TOKENS = 30
MAX_ANSWER_TOKENS = 10


def prompt_text(processor, text: str) -> str:
    """The chat prompt of one user turn holding the image and ``text``, ready for the reply."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True)


def chat_inputs(processor, images: Sequence[Image.Image], texts: Sequence[str]) -> dict[str, Tensor]:
    """The model inputs of one prompt per image: ``input_ids``, ``attention_mask``, ``pixel_values``."""
    encoded = processor(
        images=list(images),
        text=[prompt_text(processor, t) for t in texts],
        return_tensors="pt",
        padding=True,
    )
    return {key: encoded[key] for key in ("input_ids", "attention_mask", "pixel_values")}


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


def _forward(m: nn.Module, inputs: dict[str, Tensor]) -> Tensor:
    mask = inputs.get("attention_mask")
    return m(input_ids=inputs["input_ids"], attention_mask=mask, pixel_values=inputs["pixel_values"]).logits


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


def captioner(model: nn.Module, processor, name: str, prompt: str = CAPTION_PROMPT) -> CaptionModel:
    """A chat model as a captioner: its reply to ``prompt`` is the caption."""
    tokenizer = processor.tokenizer
    blank = Image.new("RGB", (8, 8))
    prompt_ids = chat_inputs(processor, [blank], [prompt])["input_ids"][0].tolist()
    words = huggingface_tokenize(tokenizer, prompt_ids[-1])

    def preprocess(images: Sequence[Image.Image]) -> Tensor:
        return processor.image_processor(images=list(images), return_tensors="pt")["pixel_values"]

    def generate(pixels: Tensor) -> list[str]:
        ids = torch.tensor([prompt_ids] * len(pixels), device=pixels.device)
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": pixels}
        return _replies(model, tokenizer, inputs, MAX_CAPTION_TOKENS)

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
        preprocess,
        generate,
        tokenize,
        _forward,
        _vision_layer(model),
        TOKEN_METHOD,
        partial(unknown_words, tokenizer),
    )


def vqa_model(model: nn.Module, processor, name: str) -> VQAModel:
    """A chat model answering questions: its reply to the question is the answer (generative VQA)."""
    tokenizer = processor.tokenizer

    def prepare(images: Sequence[Image.Image], questions: Sequence[str]) -> dict[str, Tensor]:
        return chat_inputs(processor, images, questions)

    def answer_inputs(inputs: dict[str, Tensor], answers: Sequence[str]) -> tuple[dict, list[list[int]]]:
        replies = [answer_token_ids(tokenizer, answer) for answer in answers]
        extended = with_replies(inputs, replies)
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
