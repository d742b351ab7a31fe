"""Visual question answering: why this answer, and why not that one.

Classifier-style models (answer logits over a vocabulary, such as ViLT) explain
the predicted answer, named answers and the top-k together, from one forward and one backward; "why
not X" adds the negated score of X and the contrast (predicted minus X). Generative models (BLIP, chat
models) explain an answer's log-probability under teacher forcing, one answer per pass, and the same
contrasts: the two replies of a contrast are rows of one batch, copies of the image and question. Every target also
weighs the question's words: gradient x input on the question's word embeddings, from the same backward.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial

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
from mmcam.adapters.tokens import TOKEN_METHOD, VILT_METHOD, block_norm
from mmcam.engine import Explainer, Layout
from mmcam.engine.devices import on_model_device
from mmcam.engine.state import model_lock
from mmcam.explanation import Explanation, join_targets, split_samples
from mmcam.targets import (
    ClassScore,
    Difference,
    Negated,
    Target,
    TokenLogProb,
    TopClass,
    logits_of,
    right_padded,
)

PROBE_QUESTION = "what is in the image?"  # the question asked while naming units


@dataclass(kw_only=True)
class VQAModel(ExplainedModel):
    """A VQA model behind one interface.

    ``prepare(images, questions)`` makes the model inputs (``pixel_values`` and the question's
    tensors); ``forward`` runs the model on them; ``answers`` is the answer vocabulary of a
    classifier-style model (None for a generative one, which has ``generate``, the greedy answer of
    each sample, and ``answer_inputs`` instead: the inputs extended with the teacher-forced ids of one
    answer per sample, padded on the right, and each answer's token positions).
    ``question_tokens`` names the question's tokens as the token layer sees them, None for special
    and padding tokens; ``question_layer`` is the layer whose tokens are weighed.
    """

    prepare: Callable[[Sequence[Image.Image], Sequence[str]], dict[str, Tensor]]
    question_tokens: Callable[[dict[str, Tensor]], list[str | None]]
    question_layer: str
    answers: list[str] | None = None
    generate: Callable[[dict[str, Tensor]], list[str]] | None = None
    answer_inputs: (
        Callable[[dict[str, Tensor], Sequence[str]], tuple[dict[str, Tensor], list[list[int]]]] | None
    ) = None

    def explainer_options(self) -> dict:
        """The answers name the targets; the question's tokens are weighed at ``question_layer``."""
        return {"class_names": self.answers, "token_layer": self.question_layer}

    def probe_inputs(self, images: Sequence[Image.Image]) -> dict[str, Tensor]:
        """Images and one neutral question."""
        return self.prepare(list(images), [PROBE_QUESTION] * len(images))


NO_ANSWER = "the model's answer is empty: there is no word of it to explain"


@dataclass
class VQAExplanation:
    """The answers to one question about one image, explained; ``inputs`` and ``targets``: that image's
    model inputs and its answers' targets (fixed answers), to score them again with units zeroed
    (``concepts.ablation``); None for a generative model, whose answers are read in rows of copies."""

    question: str
    tokens: list[str | None]
    answer: str
    explanation: Explanation
    inputs: dict[str, Tensor] | None = None
    targets: list[Target] | None = None


def _folded(answer: str) -> str:
    """An answer as answers are compared: case and surrounding spaces do not matter."""
    return answer.strip().casefold()


def _answer_index(vqa: VQAModel, answer: str) -> int:
    """The index of ``answer`` in the model's answers (compared ``_folded``)."""
    folded = [_folded(known) for known in vqa.answers]
    if _folded(answer) not in folded:
        shown = ", ".join(vqa.answers[:20]) + (" ..." if len(vqa.answers) > 20 else "")
        raise ValueError(f"'{answer}' is not an answer of {vqa.name}; its answers are: {shown}")
    return folded.index(_folded(answer))


def _require_question(question: str) -> None:
    """Refuse an empty (or blank) question."""
    if not question.strip():
        raise ValueError("the question is empty")


def _require_ranked(vqa: VQAModel, top: int) -> None:
    """Refuse ``top`` > 1 on a generative model: it has one answer, not a ranking."""
    if vqa.answers is None and top > 1:
        raise ValueError(f"{vqa.name} generates its answer: --top needs a classifier-style VQA model")


def _refuse_predicted(predicted: str, why_not: Sequence[str]) -> None:
    """Refuse a ``why_not`` answer that is the predicted one (compared ``_folded``)."""
    for other in why_not:
        if _folded(other) == _folded(predicted):
            raise ValueError(
                f"'{other}' is the predicted answer: --why-not asks why the model did not answer something else"
            )


def answer_targets(
    logits: Tensor, vqa: VQAModel, answers: Sequence[str] = (), top: int = 1, why_not: Sequence[str] = ()
) -> list[Target]:
    """The predicted answer (and the rest of the top ``top``), each named answer, and for each X in
    ``why_not``: the negated score of X and the contrast predicted - X. Duplicates are dropped."""
    ranked = logits[0].topk(min(max(top, 1), logits.shape[1])).indices.tolist()
    indices = list(dict.fromkeys([*ranked, *(_answer_index(vqa, a) for a in answers)]))
    targets: list[Target] = [ClassScore(i) for i in indices]
    _refuse_predicted(vqa.answers[ranked[0]], why_not)
    for other in why_not:
        against = ClassScore(_answer_index(vqa, other))
        targets += [Negated(against), Difference(ClassScore(ranked[0]), against)]
    return targets


def explain_answers(
    vqa: VQAModel,
    image: Image.Image,
    question: str,
    answers: Sequence[str] = (),
    top: int = 1,
    why_not: Sequence[str] = (),
    method: str | None = None,
    layer: str | None = None,
    explainer: Explainer | None = None,
) -> VQAExplanation:
    """Explain ``question`` about ``image``: the predicted answer first, then the others asked for.

    ``explainer`` (default ``vqa.explainer(layer, method)``) can be built once and reused for many
    questions and images. The model runs on its device; the explanation comes back on the CPU."""
    _require_question(question)
    inputs = on_model_device(vqa.prepare([image], [question]), vqa.model)
    tokens = vqa.question_tokens(inputs)
    explainer = explainer or vqa.explainer(layer, method)
    if vqa.answers is None:
        return _explain_generated(vqa, explainer, inputs, question, tokens, answers, top, why_not)
    with torch.no_grad():
        logits = logits_of(vqa.forward(vqa.model, inputs))
    targets = answer_targets(logits, vqa, answers, top, why_not)
    explanation = explainer(inputs, targets).cpu()
    return VQAExplanation(question, tokens, explanation.labels[0][0], explanation, inputs, targets)


def explain_top_answers(
    vqa: VQAModel,
    images: Sequence[Image.Image],
    question: str,
    top: int = 1,
    explainer: Explainer | None = None,
) -> list[VQAExplanation | ValueError]:
    """The same ``question`` about many images, each image's ``top`` answers explained, one forward and
    one backward per image size (images of one size share a batch, so none is padded to another's shape).

    A classifier-style model's top answers are read from the forward that explains them (``TopClass``);
    a generative model's answer (``top`` = 1) is generated for the whole batch at once, then scored by
    its teacher-forced log-probability (``TokenLogProb``, one answer per sample). An image the model
    answered with nothing gets, in its place, the ``ValueError`` that says so."""
    _require_question(question)
    _require_ranked(vqa, top)
    explainer = explainer or vqa.explainer()
    results: dict[int, VQAExplanation | ValueError] = {}
    for size in dict.fromkeys(image.size for image in images):
        indices = [i for i, image in enumerate(images) if image.size == size]
        inputs = vqa.prepare([images[i] for i in indices], [question] * len(indices))
        inputs = on_model_device(inputs, vqa.model)
        tokens = vqa.question_tokens(inputs)
        if vqa.answers is None:
            with torch.no_grad():
                answers = vqa.generate(inputs)
            results.update({i: ValueError(NO_ANSWER) for i, answer in zip(indices, answers) if not answer})
            kept = [k for k, answer in enumerate(answers) if answer]
            if not kept:
                continue
            indices, answers = [indices[k] for k in kept], [answers[k] for k in kept]
            extended, target = answer_scores(vqa, {name: v[kept] for name, v in inputs.items()}, answers)
            explained = explainer(extended, target)
            explanation = replace(explained, token_weights=explained.token_weights[..., : len(tokens)]).cpu()
        else:
            explanation = explainer(inputs, [TopClass(rank) for rank in range(top)]).cpu()
        for j, (i, one) in enumerate(zip(indices, split_samples(explanation))):
            replay = (None, None)
            if vqa.answers is not None:  # this image alone, its ranked answers fixed
                alone = {name: value[j : j + 1] for name, value in inputs.items()}
                replay = (alone, [ClassScore(index) for index in one.indices[0]])
            results[i] = VQAExplanation(question, tokens, one.labels[0][0], one, *replay)
    return [results[i] for i in range(len(images))]


def answer_scores(vqa: VQAModel, inputs: dict[str, Tensor], answers: Sequence[str]) -> tuple[dict, Target]:
    """A generative model's ``inputs`` extended with one teacher-forced answer per sample
    (``answer_inputs``), and the target that reads each sample's answer: its log-probability under teacher
    forcing, s_b = sum_{p in answer b} log p(a_{b,p} | image, question, a_{b,<p}) (``TokenLogProb``)."""
    extended, positions = vqa.answer_inputs(inputs, answers)
    return extended, TokenLogProb(extended["answer_ids"], positions, list(answers))


def _explain_generated(
    vqa: VQAModel, explainer: Explainer, inputs, question, tokens, answers, top, why_not
) -> VQAExplanation:
    """Generative VQA: each answer's teacher-forced log-probability, one pass per answer; for each X in
    ``why_not``, one pass for its negation and the contrast predicted - X, the two replies rows of one batch,
    copies of the image and question (``Explainer(..., copies=...)``), so that the contrast is differentiated
    at the activation they share. Question token weights are kept for the question's tokens (a chat model
    reads the answer in the same sequence)."""
    _require_ranked(vqa, top)
    with torch.no_grad():
        predicted = vqa.generate(inputs)[0]
    if not predicted:
        raise ValueError(NO_ANSWER)
    _refuse_predicted(predicted, why_not)

    def explained(replies: list[str], targets_of: Callable) -> Explanation:
        """One pass over ``replies`` (a row each) for the targets ``targets_of(score)`` builds, ``score(a)``
        being reply a's log-probability read in its own row (the other rows score 0)."""
        rows = {key: value.expand(len(replies), *value.shape[1:]) for key, value in inputs.items()}
        extended, positions = vqa.answer_inputs(rows, replies)

        def score(answer: str) -> Target:
            row = replies.index(answer)
            read = [positions[row] if r == row else [] for r in range(len(replies))]
            return TokenLogProb(extended["answer_ids"], read, answer)

        copies = torch.zeros(len(replies), dtype=torch.long) if len(replies) > 1 else None
        part = explainer(extended, targets_of(score), copies=copies)
        return replace(part, token_weights=part.token_weights[..., : len(tokens)])

    parts = [
        explained([answer], lambda score, a=answer: [score(a)])
        for answer in dict.fromkeys([predicted, *answers])
    ]
    parts += [
        explained(
            [predicted, other],
            lambda score, x=other: [Negated(score(x)), Difference(score(predicted), score(x))],
        )
        for other in dict.fromkeys(why_not)
    ]
    return VQAExplanation(question, tokens, predicted, join_targets(parts).cpu())


def answer_token_ids(tokenizer, answer: str) -> list[int]:
    """The token ids of a generative model's answer, without special tokens; an empty answer is refused."""
    ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError("the answer is empty")
    return ids


def hf_question_tokens(tokenizer, inputs: dict[str, Tensor]) -> list[str | None]:
    """A Hugging Face question's tokens, None for special tokens ([CLS], [SEP], padding)."""
    ids = inputs["input_ids"][0].tolist()
    special = set(tokenizer.all_special_ids)
    return [None if i in special else token for i, token in zip(ids, tokenizer.convert_ids_to_tokens(ids))]


def row_major_slots(patch_index: Tensor, valid: Tensor, grid: tuple[int, int]) -> Tensor:
    """For ViLT's image tokens (B, N) drawn in any order: the grid cell each token goes to, row-major.

    ``patch_index`` (B, N, 2) holds each token's (row, column), ``valid`` (B, N) whether it lies on the
    image (not on ``pixel_mask`` padding). A valid token goes to its own cell; padding tokens, which
    attention never reads, fill the padded cells in the order they come. Needs N = h * w.
    """
    height, width = grid
    batch, count = valid.shape
    if count != height * width:
        raise ValueError(
            f"ViLT kept {count} image tokens for a {height}x{width} patch grid (it drops patches beyond "
            "config.max_image_length and pads a batch to its largest image): explain one image at a time, "
            "at a size within max_image_length patches"
        )
    cells = patch_index[..., 0] * width + patch_index[..., 1]
    slots = torch.empty_like(cells)
    for b in range(batch):
        taken = torch.zeros(count, dtype=torch.bool, device=cells.device)
        taken[cells[b][valid[b]]] = True
        slots[b] = torch.where(valid[b], cells[b], 0)
        slots[b][~valid[b]] = (~taken).nonzero()[:, 0]
    return slots


@contextmanager
def row_major_patches(model: nn.Module, embeddings: nn.Module) -> Iterator[None]:
    """Inside: ViLT's ``visual_embed`` returns its patch tokens in row-major grid order.

    ViLT draws its patch tokens in a random order on every forward (``torch.multinomial`` in
    ``visual_embed``), so the same input gives its tokens in another order each time. Self-attention
    does not depend on the order (positions are in the embeddings), so putting each token in its own
    cell (``row_major_slots``) leaves the outputs unchanged and lets the grid be read row-major, the
    same in every forward. The method is shadowed on the instance (``embeddings``, a part of ``model``)
    for the block, under ``model``'s lock (``engine.state.model_lock``): another thread's forward of the
    model waits, so it neither reads the shadow nor removes it midway; what the instance held before
    (nothing, or an earlier shadow of this thread) is put back on the way out.
    """
    with model_lock(model):
        shadowed = "visual_embed" in vars(embeddings)
        previous = vars(embeddings).get("visual_embed")
        embeddings.visual_embed = _row_major(embeddings.visual_embed)
        try:
            yield
        finally:
            if shadowed:
                embeddings.visual_embed = previous
            else:
                del embeddings.visual_embed


def _row_major(original: Callable) -> Callable:
    """ViLT's ``visual_embed`` (``original``) with its tokens put in row-major grid order."""

    def visual_embed(pixel_values: Tensor, pixel_mask: Tensor, max_image_length: int = 200):
        tokens, mask, (patch_index, grid) = original(pixel_values, pixel_mask, max_image_length)
        slots = row_major_slots(patch_index, mask[:, 1:].bool(), grid)
        order = 1 + slots.argsort(dim=1)  # the token for each cell; the image's class token stays first
        order = torch.cat([torch.zeros_like(order[:, :1]), order], dim=1)

        def reorder(x: Tensor) -> Tensor:
            return x.gather(1, order.view(*order.shape, *[1] * (x.ndim - 2)).expand_as(x))

        patch_index = reorder(torch.cat([patch_index[:, :1], patch_index], dim=1))[:, 1:]
        return reorder(tokens), reorder(mask), (patch_index, grid)

    return visual_embed


def _vilt(model: nn.Module, processor, name: str) -> VQAModel:
    patch = model.config.patch_size

    def layout(inputs: dict[str, Tensor]) -> Layout:
        """Text tokens and the image's class token come first, then the patch grid (row-major, see
        ``row_major_patches``)."""
        height, width = inputs["pixel_values"].shape[-2:]
        return Layout(
            "tokens", prefix=inputs["input_ids"].shape[1] + 1, grid=(height // patch, width // patch)
        )

    def prepare(images, questions):
        encoded = processor(images=list(images), text=list(questions), return_tensors="pt", padding=True)
        check_text_length(encoded["input_ids"].shape[-1], text_limit(model.config), "question")
        return dict(encoded)

    def forward(m: nn.Module, inputs: dict[str, Tensor]) -> Tensor:
        with row_major_patches(m, m.vilt.embeddings):
            return m(**inputs).logits

    return VQAModel(
        name=name,
        model=model.eval(),
        prepare=prepare,
        forward=forward,
        question_tokens=lambda inputs: hf_question_tokens(processor.tokenizer, inputs),
        layer=block_norm(model, "vilt.encoder") or "auto",
        method=VILT_METHOD,
        question_layer="vilt.embeddings.text_embeddings.word_embeddings",
        answers=[model.config.id2label[i] for i in range(len(model.config.id2label))],
        layout=layout,
        unknown_words=partial(unknown_words, processor.tokenizer),
    )


def _blip(model: nn.Module, processor, name: str) -> VQAModel:
    """BLIP VQA: its ``forward`` returns no answer logits, so the score is built from its three parts:
    vision model -> question encoder (cross-attending to the image) -> answer decoder."""
    tokenizer = processor.tokenizer
    start = model.config.text_config.bos_token_id

    def forward(m: nn.Module, inputs: dict[str, Tensor]) -> Tensor:
        image = m.vision_model(pixel_values=inputs["pixel_values"])[0]
        question = m.text_encoder(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            encoder_hidden_states=image,
        )[0]
        return m.text_decoder(input_ids=inputs["answer_ids"], encoder_hidden_states=question).logits

    def prepare(images, questions):
        encoded = processor(images=list(images), text=list(questions), return_tensors="pt", padding=True)
        check_text_length(encoded["input_ids"].shape[-1], text_limit(model.config), "question")
        return {k: encoded[k] for k in ("pixel_values", "input_ids", "attention_mask")}

    def generate(inputs: dict[str, Tensor]) -> list[str]:
        question = {k: inputs[k] for k in ("pixel_values", "input_ids", "attention_mask")}
        with quiet_generation():
            ids = model.generate(**question, max_new_tokens=10)
        return [answer.strip() for answer in tokenizer.batch_decode(ids, skip_special_tokens=True)]

    def answer_inputs(inputs: dict[str, Tensor], answers: Sequence[str]) -> tuple[dict, list[list[int]]]:
        rows = [[start, *answer_token_ids(tokenizer, answer)] for answer in answers]
        ids = right_padded(rows, inputs["input_ids"].device)
        return {**inputs, "answer_ids": ids}, [list(range(1, len(row))) for row in rows]

    return VQAModel(
        name=name,
        model=model.eval(),
        prepare=prepare,
        forward=forward,
        question_tokens=lambda inputs: hf_question_tokens(tokenizer, inputs),
        layer=block_norm(model, "vision_model") or "auto",
        method=TOKEN_METHOD,
        question_layer="text_encoder.embeddings.word_embeddings",
        generate=generate,
        answer_inputs=answer_inputs,
        unknown_words=partial(unknown_words, tokenizer),
    )


@dataclass(frozen=True)
class VQAFamily:
    """A Hugging Face VQA family: ``title`` as users name it, its transformers class (``model_class``, read
    when loading) and ``build(model, processor, name)``, its ``VQAModel``."""

    title: str
    model_class: str
    build: Callable[[nn.Module, object, str], VQAModel]


# the family of each config.model_type
FAMILIES = {
    "vilt": VQAFamily("ViLT", "ViltForQuestionAnswering", _vilt),
    "blip": VQAFamily("BLIP", "BlipForQuestionAnswering", _blip),
}


def from_pretrained(path: str, trust_pickle: bool = False) -> VQAModel:
    """A VQA model of a family in ``FAMILIES`` and its processor, from a local directory or the local
    Hugging Face cache."""
    import transformers
    from transformers import AutoConfig, AutoProcessor

    try:
        model_type = load_local(AutoConfig, path, weights=False).model_type
        if model_type not in FAMILIES:
            raise ValueError(f"'{path}' is a {model_type} model; VQA supports {family_titles(FAMILIES)}")
        family = FAMILIES[model_type]
        model = load_local(getattr(transformers, family.model_class), path, trust_pickle)
        return family.build(model, load_local(AutoProcessor, path, weights=False), model_name(path))
    except OSError as error:
        raise ValueError(
            f"cannot load the VQA model '{path}' from a local directory or the local cache: "
            f"{str(error).splitlines()[0]}"
        ) from error
