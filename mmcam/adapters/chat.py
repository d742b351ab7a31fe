"""Image-text-to-text chat models (LLaVA 1.5, LLaVA-NeXT, LLaVA-OneVision, PaliGemma, Gemma 3, Qwen2-VL,
Qwen2.5-VL, Idefics3, SmolVLM): a caption or an answer is the model's reply to a request about the image,
and each word of the reply is explained under teacher forcing, all from one forward.

The prompt is the family's text for one request about one image: the processor's chat template on one
user turn, ``[image, text]``, with the generation prompt, or PaliGemma's image token and the request (it
has no chat template). A reply's word scores are log-probabilities of its sub-word tokens given the
prompt and the reply before them (``TokenLogProb``). The explained layer is the family's (``layer``): the
vision tower's second block (``tokens.TOKEN_BLOCK``), whose tokens still sit on the image's patches, or for
LLaVA the projector's output (the image's tokens as the language model reads them); any layer's layout
comes from ``chat_family.layouts``.

What differs between families (the prompt, how images and prompts become the model's inputs, how replies
are marked, how its logits are read, the layer and its layout) is a ``chat_family.ChatFamily``:
``llava.Llava`` (a fixed input resolution, LLaVA 1.5 and its architecture), ``paligemma.PaliGemma`` (its
prompt without a chat template, its reply marked as the causal suffix), ``gemma3.Gemma3`` (its image's
tokens marked as such), ``qwen_vl.QwenVL`` (dynamic resolution, packed patch tokens),
``llava_next.LlavaNext`` (LLaVA-NeXT and LLaVA-OneVision: any-resolution tiles, whose maps are stitched
onto the image), ``idefics3.Idefics3`` (Idefics3 and SmolVLM: split images, stitched the same way).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import torch
from PIL import Image
from torch import Tensor, nn

from mmcam.adapters.captioning import CaptionModel, Tokenized, huggingface_tokenize
from mmcam.adapters.chat_family import ChatFamily, layouts
from mmcam.adapters.gemma3 import Gemma3
from mmcam.adapters.hub import model_name, quiet_generation, text_limit, unknown_words
from mmcam.adapters.idefics3 import Idefics3
from mmcam.adapters.llava import Llava
from mmcam.adapters.llava_next import LlavaNext
from mmcam.adapters.paligemma import PaliGemma
from mmcam.adapters.qwen_vl import QwenVL
from mmcam.adapters.tokens import TOKEN_METHOD
from mmcam.adapters.vqa import VQAModel, answer_token_ids, hf_question_tokens
from mmcam.targets import TailLogits, right_padded

CAPTION_PROMPT = "Describe the image."
MAX_CAPTION_TOKENS = 30
MAX_ANSWER_TOKENS = 10


@dataclass(frozen=True)
class ChatEntry:
    """A chat family as registered: ``title`` as users name it, ``family`` the ``ChatFamily`` that reads it."""

    title: str
    family: type[ChatFamily]


# the family of each config.model_type
FAMILIES = {
    "llava": ChatEntry("LLaVA 1.5", Llava),
    "llava_next": ChatEntry("LLaVA-NeXT", LlavaNext),
    "llava_onevision": ChatEntry("LLaVA-OneVision", LlavaNext),
    "paligemma": ChatEntry("PaliGemma", PaliGemma),
    "gemma3": ChatEntry("Gemma 3", Gemma3),
    "idefics3": ChatEntry("Idefics3", Idefics3),
    "smolvlm": ChatEntry("SmolVLM", Idefics3),
    "qwen2_vl": ChatEntry("Qwen2-VL", QwenVL),
    "qwen2_5_vl": ChatEntry("Qwen2.5-VL", QwenVL),
}


def chat_inputs(family: ChatFamily, images: Sequence[Image.Image], texts: Sequence[str]) -> dict[str, Tensor]:
    """The model inputs of one request per image (``ChatFamily.inputs``)."""
    return family.inputs(images, [family.prompt(text) for text in texts])


def check_fits(model: nn.Module, prompt: int, reply: int, follows: str, fix: str) -> None:
    """Refuse, in one line, a prompt of ``prompt`` tokens (the image's tokens included) that ``follows`` of
    ``reply`` tokens would run past the language model's positions (``hub.text_limit``): prompt + reply >
    limit. Beyond the limit the model's replies come back empty or its forward fails on a size mismatch."""
    limit = text_limit(model.config)
    if limit is not None and prompt + reply > limit:
        raise ValueError(
            f"the prompt is {prompt} tokens long with the image's tokens and {follows} takes up to {reply} more; "
            f"this model's language model reads at most {limit} (max_position_embeddings of its text config): "
            f"{fix}"
        )


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


def reply_forward(family: ChatFamily, start: int, m: nn.Module, inputs: dict[str, Tensor]) -> TailLogits:
    """The logits of rows ``start`` .. L - 1 of ``inputs["input_ids"]`` (B, L) only (``TailLogits``), the rows a
    reply after a prompt of ``start + 1`` tokens is read from; the families' own ``logits`` would leave them as
    they are (they compact image-token rows only)."""
    kept = inputs["input_ids"].shape[1] - start
    return TailLogits(m(**family.arguments(inputs), logits_to_keep=kept).logits, start)


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
    """A chat model as a captioner: its reply to ``prompt`` is the caption. Every image has the same
    prompt, so a caption's ids are the prompt's, then the caption's; the prompt's other inputs
    (PaliGemma's token types) go with every forward. ``family`` defaults to LLaVA's."""
    family = family or Llava(model, processor)
    layout_of = layouts(family, model)
    tokenizer = processor.tokenizer
    request = chat_inputs(family, [Image.new("RGB", (8, 8))], [prompt])
    del request["pixel_values"]
    prompt_ids = request["input_ids"][0].tolist()
    others = {key: value for key, value in request.items() if key not in ("input_ids", "attention_mask")}
    words = huggingface_tokenize(tokenizer, prompt_ids[-1])
    shift = len(prompt_ids) - 1  # a caption's first position (its start token, the prompt's last)

    def repeated(inputs: dict[str, Tensor], pixels: Tensor) -> dict[str, Tensor]:
        """``inputs`` of the one prompt, for every image of ``pixels``, with the images."""
        rows = {key: value.to(pixels.device).expand(len(pixels), -1) for key, value in inputs.items()}
        return {**rows, "pixel_values": pixels}

    def generate(pixels: Tensor) -> list[str]:
        check_fits(model, len(prompt_ids), MAX_CAPTION_TOKENS, "the caption", "shorten the prompt (--prompt)")
        return _replies(family, model, tokenizer, repeated(request, pixels), MAX_CAPTION_TOKENS)

    def tokenize(caption: str) -> Tokenized:
        """The prompt, then the caption: word positions count from the prompt's start."""
        reply = words(caption)
        check_fits(model, len(prompt_ids), len(reply.ids) - 1, "the given caption", "shorten the caption")
        return Tokenized(
            prompt_ids[:-1] + reply.ids,
            reply.words,
            [[p + shift for p in group] for group in reply.positions],
        )

    def forward(m: nn.Module, inputs: dict[str, Tensor]) -> TailLogits:
        """The captioner's inputs (images, prompt and caption ids) with the prompt's other inputs; the logits
        from the prompt's last token on only (``reply_forward``: no caption word reads the rows before)."""
        return reply_forward(family, shift, m, {**repeated(others, inputs["pixel_values"]), **inputs})

    return CaptionModel(
        name=name,
        model=model.eval(),
        preprocess=family.pixels,
        generate=generate,
        tokenize=tokenize,
        forward=forward,
        layer=family.layer,
        method=TOKEN_METHOD,
        unknown_words=partial(unknown_words, tokenizer),
        layout=layout_of(family.layer),
        layouts=layout_of,
    )


def vqa_model(model: nn.Module, processor, name: str, family: ChatFamily | None = None) -> VQAModel:
    """A chat model answering questions: its reply to the question is the answer (generative VQA).
    ``family`` defaults to LLaVA's."""
    family = family or Llava(model, processor)
    layout_of = layouts(family, model)
    tokenizer = processor.tokenizer

    def prepare(images: Sequence[Image.Image], questions: Sequence[str]) -> dict[str, Tensor]:
        inputs = chat_inputs(family, images, questions)
        check_fits(
            model,
            family.arguments(inputs)["input_ids"].shape[1],
            MAX_ANSWER_TOKENS,
            "the answer",
            "shorten the question",
        )
        return inputs

    def answer_inputs(inputs: dict[str, Tensor], answers: Sequence[str]) -> tuple[dict, list[list[int]]]:
        replies = [answer_token_ids(tokenizer, answer) for answer in answers]
        check_fits(
            model,
            family.arguments(inputs)["input_ids"].shape[1],
            max(map(len, replies)),
            "the given answer",
            "shorten the question or the answer",
        )
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
        layout=layout_of(family.layer),
        generate=lambda inputs: _replies(family, model, tokenizer, inputs, MAX_ANSWER_TOKENS),
        answer_inputs=answer_inputs,
        method=TOKEN_METHOD,
        unknown_words=partial(unknown_words, tokenizer),
        layouts=layout_of,
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
    family = FAMILIES[model.config.model_type].family(model, processor)
    if task == "caption":
        return captioner(model, processor, model_name(path), prompt, family)
    return vqa_model(model, processor, model_name(path), family)
