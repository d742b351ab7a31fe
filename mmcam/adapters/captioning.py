"""Image captioning: explain every word of a caption with one teacher-forced forward and one backward.

A ``CaptionModel`` puts a model family behind four functions: read images, generate a caption,
split a caption into decoder tokens grouped by word, and run the teacher-forced decoder. The Hugging Face
families are the entries of ``FAMILIES`` (one per ``config.model_type``); chat models caption through
``adapters.chat``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn

from mmcam.adapters.explained import ExplainedModel
from mmcam.adapters.hub import (
    check_text_length,
    family_titles,
    load_local,
    model_name,
    quiet_generation,
    text_limit,
    unknown_words,
)
from mmcam.adapters.tokens import TOKEN_METHOD, block_norm
from mmcam.engine import Explainer
from mmcam.engine.devices import on_model_device
from mmcam.explanation import Explanation, select_targets, split_samples
from mmcam.targets import Target, TokenLogProb, right_padded
from mmcam.words import analyze

WORD_CHOICES = ("all", "content")  # which caption words to explain: every word, or nouns and adjectives

# The bundled captioner's word maps default to HiResCAM (gradient x activation per cell, summed over
# channels; Hugging Face captioners: ``adapters.tokens``). A word is
# written from the cells its decoder attends to, and that attention lives in where the gradient falls;
# Grad-CAM's spatially averaged channel weights keep only which features the word needs, so a word's
# map lights every object sharing them (two red objects: "red" of either). On the bundled captioner,
# word pointing is 0.973 (color) / 0.976 (shape) with HiResCAM against 0.856 / 0.870 with Grad-CAM.
WORD_METHOD = "hirescam"


@dataclass(frozen=True)
class Tokenized:
    """A caption as decoder inputs: ``ids`` start with the start token; ``words[w]`` lists the positions
    (into ``ids``) of word w's tokens."""

    ids: list[int]
    words: list[str]
    positions: list[list[int]]


@dataclass(kw_only=True)
class CaptionModel(ExplainedModel):
    """A captioner behind four functions: ``preprocess`` reads images into pixels, ``generate`` captions
    pixels, ``tokenize`` splits a caption into decoder tokens grouped by word, and ``forward`` (of
    ``ExplainedModel``) runs the teacher-forced decoder on ``pixel_values`` and ``input_ids``."""

    preprocess: Callable[[Sequence[Image.Image]], Tensor]
    generate: Callable[[Tensor], list[str]]
    tokenize: Callable[[str], Tokenized]
    method: str = WORD_METHOD

    def probe_inputs(self, images: Sequence[Image.Image]) -> dict[str, Tensor]:
        """Images and the start token only (the vision tower does not read the text)."""
        start = self.tokenize("").ids
        return {"pixel_values": self.preprocess(images), "input_ids": torch.tensor([start] * len(images))}


@dataclass
class CaptionExplanation:
    """One image's caption, its words and their explanation; ``inputs`` and ``targets``: the image's model
    inputs and word targets alone, to score its words again with units zeroed (``concepts.ablation``)."""

    caption: str
    words: list[str]
    explanation: Explanation
    inputs: dict[str, Tensor] | None = None
    targets: list[Target] | None = None


def word_targets(
    tokenized: Tokenized | Sequence[Tokenized], words: str = "all", whole_caption: bool = False
) -> list[Target]:
    """One target per selected word (``"all"`` or ``"content"``: nouns and adjectives), optionally the
    whole caption last. Word targets are labelled with the word; ``index`` is its position in the caption.

    For a batch of captions, target k is the k-th selected word of each caption (``TokenLogProb`` with
    positions per sample; a caption with fewer words scores 0 there), the token ids padded on the right.
    """
    if words not in WORD_CHOICES:
        raise ValueError(f"unknown word selection '{words}'; use one of {', '.join(WORD_CHOICES)}")
    captions = [tokenized] if isinstance(tokenized, Tokenized) else list(tokenized)
    chosen = [chosen_words(caption, words) for caption in captions]
    ids = right_padded([caption.ids for caption in captions])

    def kth(values: list, k: int, empty):
        return values[k] if k < len(values) else empty

    targets: list[Target] = [
        TokenLogProb(
            ids,
            [kth([c.positions[w] for w in ws], k, []) for c, ws in zip(captions, chosen)],
            [kth([c.words[w] for w in ws], k, "") for c, ws in zip(captions, chosen)],
            [kth(ws, k, None) for ws in chosen],
        )
        for k in range(max(map(len, chosen)))
    ]
    if whole_caption:
        every = [sorted(p for positions in c.positions for p in positions) for c in captions]
        targets.append(TokenLogProb(ids, every, [" ".join(c.words) for c in captions], None))
    return targets


def chosen_words(tokenized: Tokenized, words: str) -> list[int]:
    """The indices of a caption's ``words`` (all, or content words), refused when there are none."""
    if not tokenized.words:
        raise ValueError("the caption is empty: there is no word to explain")
    analyzed = analyze(tokenized.words)
    chosen = [w for w, info in enumerate(analyzed) if words == "all" or info.content]
    if not chosen:
        raise ValueError(f"no {words} words in the caption {' '.join(tokenized.words)!r}")
    return chosen


def generate_captions(captioner: CaptionModel, pixels: Tensor) -> list[str]:
    """The captioner's captions of preprocessed images (a batch), without gradients."""
    with torch.no_grad():
        return captioner.generate(on_model_device(pixels, captioner.model))


def explain_captions(
    captioner: CaptionModel,
    pixels: Tensor,
    captions: Sequence[str] | None = None,
    words: str = "all",
    whole_caption: bool = False,
    counterfactual: bool = False,
    explainer: Explainer | None = None,
) -> list[CaptionExplanation]:
    """Generate (or take) the captions of a batch of preprocessed images and explain every word of every
    caption in one forward and one backward (target k is each caption's k-th word).

    ``counterfactual`` explains the negated word targets: where the evidence against each word is.
    The model runs on its device; the explanations come back on the CPU, one per image.
    """
    pixels = on_model_device(pixels, captioner.model)
    captions = list(captions) if captions is not None else generate_captions(captioner, pixels)
    tokenized = [captioner.tokenize(caption) for caption in captions]
    targets = word_targets(tokenized, words, whole_caption)
    own = [[k for k, target in enumerate(targets) if target.reads_sample(b)] for b in range(len(captions))]
    explainer = explainer or captioner.explainer()
    inputs, targets = _caption_inputs(pixels, tokenized, targets, counterfactual)
    explanation = explainer(inputs, targets).cpu()
    alone = [
        _caption_inputs(pixels[b : b + 1], [t], word_targets([t], words, whole_caption), counterfactual)
        for b, t in enumerate(tokenized)
    ]
    return [
        CaptionExplanation(caption, t.words, select_targets(one, keep), *replay)
        for caption, t, one, keep, replay in zip(captions, tokenized, split_samples(explanation), own, alone)
    ]


def _caption_inputs(
    pixels: Tensor, tokenized: Sequence[Tokenized], targets: list[Target], counterfactual: bool
) -> tuple[dict[str, Tensor], list[Target]]:
    """The decoder's inputs for ``tokenized`` captions of ``pixels``, and ``targets`` negated where
    ``counterfactual``."""
    inputs = {"pixel_values": pixels, "input_ids": right_padded([t.ids for t in tokenized])}
    return inputs, [-target for target in targets] if counterfactual else targets


def explain_caption(
    captioner: CaptionModel,
    image: Image.Image,
    caption: str | None = None,
    words: str = "all",
    whole_caption: bool = False,
    counterfactual: bool = False,
    explainer: Explainer | None = None,
) -> CaptionExplanation:
    """``explain_captions`` for one image: its caption's words from one forward and one backward."""
    pixels = captioner.preprocess([image])
    captions = None if caption is None else [caption]
    return explain_captions(captioner, pixels, captions, words, whole_caption, counterfactual, explainer)[0]


def huggingface_tokenize(tokenizer, start_id: int, limit: int | None = None) -> Callable[[str], Tokenized]:
    """Sub-word tokens grouped into words by a fast tokenizer's word ids; ``start_id`` goes first. A caption
    longer than ``limit`` tokens (the model's text positions) is refused in one line."""

    def tokenize(caption: str) -> Tokenized:
        encoding = tokenizer(caption, add_special_tokens=False, return_offsets_mapping=True)
        groups: dict[int, list[int]] = {}
        for position, word_id in enumerate(encoding.word_ids(), start=1):
            groups.setdefault(word_id, []).append(position)
        offsets = encoding["offset_mapping"]
        words = [caption[offsets[group[0] - 1][0] : offsets[group[-1] - 1][1]] for group in groups.values()]
        check_text_length(1 + len(encoding["input_ids"]), limit, "caption")
        return Tokenized([start_id, *encoding["input_ids"]], words, list(groups.values()))

    return tokenize


def _blip_logits(m: nn.Module, inputs: dict[str, Tensor]) -> Tensor:
    return m(pixel_values=inputs["pixel_values"], input_ids=inputs["input_ids"]).logits


def _git_logits(m: nn.Module, inputs: dict[str, Tensor]) -> Tensor:
    """GIT reads the image's tokens and the caption as one sequence: the caption's logits are its last."""
    ids = inputs["input_ids"]
    return m(pixel_values=inputs["pixel_values"], input_ids=ids).logits[:, -ids.shape[1] :]


def _encoder_decoder_logits(m: nn.Module, inputs: dict[str, Tensor]) -> Tensor:
    return m(pixel_values=inputs["pixel_values"], decoder_input_ids=inputs["input_ids"]).logits


@dataclass(frozen=True)
class CaptionFamily:
    """A Hugging Face captioner family: ``title`` as users name it, its transformers class (``model_class``,
    read when loading), the vision ``tower``, its decoder's start token ``start(model, tokenizer)``, its
    teacher-forced ``forward`` and ``reads(model)``: the name of the module whose output (the image's tokens)
    the text decoder reads, explained by default where the model has it (``default_layer``)."""

    title: str
    model_class: str
    tower: str
    start: Callable[[nn.Module, Any], int | None]
    forward: Callable[[nn.Module, dict[str, Tensor]], Tensor]
    reads: Callable[[nn.Module], str | None]


def _named(name: str) -> Callable[[nn.Module], str | None]:
    return lambda model: name


def _last_block(stack: str) -> Callable[[nn.Module], str | None]:
    """The last block of the module list ``stack`` (BLIP's final norm also runs on the pooled token, so
    the decoder's tokens are read at the block before it)."""

    def last(model: nn.Module) -> str | None:
        blocks = dict(model.named_modules()).get(stack)
        return f"{stack}.{len(blocks) - 1}" if isinstance(blocks, nn.ModuleList) and len(blocks) else None

    return last


# the family of each config.model_type
FAMILIES = {
    "blip": CaptionFamily(
        "BLIP",
        "BlipForConditionalGeneration",
        "vision_model",
        lambda model, tokenizer: model.config.text_config.bos_token_id,
        _blip_logits,
        _last_block("vision_model.encoder.layers"),
    ),
    "git": CaptionFamily(
        "GIT",
        "GitForCausalLM",
        "git.image_encoder",
        lambda model, tokenizer: tokenizer.cls_token_id,
        _git_logits,
        _named("git.visual_projection"),
    ),
    "vision-encoder-decoder": CaptionFamily(
        "VisionEncoderDecoder",
        "VisionEncoderDecoderModel",
        "encoder",
        lambda model, tokenizer: model.config.decoder_start_token_id,
        _encoder_decoder_logits,
        _named("encoder.layernorm"),
    ),
}


def default_layer(model: nn.Module, family: CaptionFamily) -> str:
    """The layer a captioner's word maps are read at by default: the image's tokens as the text decoder reads
    them (``family.reads``: BLIP's last vision block, GIT's visual projection, a VisionEncoderDecoder's final
    encoder norm) where the model has that module, else the tower's second block's pre-attention norm
    (``tokens.block_norm``), else ``"auto"``. On the three trained captioner fixtures, NormGrad there puts
    its peak on the object the model relies on more often than at the second block, with a deletion AUC as
    low or lower (docs/evaluation.md, "Defaults judged by the model's own evidence")."""
    reads = family.reads(model)
    if reads and reads in dict(model.named_modules()):
        return reads
    return block_norm(model, family.tower) or "auto"


def family_of(model_type: str, where: str) -> CaptionFamily:
    """The captioner family of ``model_type``; any other is refused, naming ``where`` it came from."""
    if model_type not in FAMILIES:
        raise ValueError(f"{where} is a {model_type} model; captioning supports {family_titles(FAMILIES)}")
    return FAMILIES[model_type]


def from_huggingface(model: nn.Module, image_processor, tokenizer, name: str | None = None) -> CaptionModel:
    """A CaptionModel for a Hugging Face captioner of a family in ``FAMILIES`` (found by its config's
    ``model_type``), its image processor and its (fast) tokenizer."""
    family = family_of(model.config.model_type, name or type(model).__name__)

    def preprocess(images: Sequence[Image.Image]) -> Tensor:
        return image_processor(images=list(images), return_tensors="pt")["pixel_values"]

    def generate(pixels: Tensor) -> list[str]:
        with quiet_generation():
            ids = model.generate(pixel_values=pixels, max_new_tokens=30)
        return tokenizer.batch_decode(ids, skip_special_tokens=True)

    start = family.start(model, tokenizer)
    if start is None:
        raise ValueError(f"{family.title} has no start token id in its config; set it before explaining")
    return CaptionModel(
        name=name or family.title,
        model=model.eval(),
        preprocess=preprocess,
        generate=generate,
        tokenize=huggingface_tokenize(tokenizer, start, text_limit(model.config)),
        forward=family.forward,
        layer=default_layer(model, family),
        method=TOKEN_METHOD,
        unknown_words=partial(unknown_words, tokenizer),
    )


def from_pretrained(path: str, trust_pickle: bool = False) -> CaptionModel:
    """A captioner of a family in ``FAMILIES`` and its processor, from a local directory or the local Hugging
    Face cache."""
    import transformers
    from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer

    try:
        family = family_of(load_local(AutoConfig, path, weights=False).model_type, f"'{path}'")
        model = load_local(getattr(transformers, family.model_class), path, trust_pickle)
        image_processor = load_local(AutoImageProcessor, path, weights=False)
        tokenizer = load_local(AutoTokenizer, path, weights=False)
    except OSError as error:
        raise ValueError(
            f"cannot load the captioner '{path}' from a local directory or the local cache: "
            f"{str(error).splitlines()[0]}"
        ) from error
    return from_huggingface(model, image_processor, tokenizer, name=model_name(path))
