"""Model SPECs to ready task adapters: the bundled shapes-world models, torchvision, Hugging Face, SB3.

The one module that knows both the zoo (the bundled models) and the adapters (the task interfaces), so
neither has to import the other. Nothing here downloads: checkpoints come from local files and caches.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from torch import Tensor

from mmcam.adapters import captioning, chat, classification, vqa
from mmcam.adapters.captioning import CaptionModel, Tokenized
from mmcam.adapters.classification import ImageClassifier
from mmcam.adapters.hub import WrongCheckpoint, family_titles
from mmcam.adapters.vqa import VQAModel
from mmcam.zoo import load

BUNDLED = "shapes"  # the SPEC of the bundled shapes-world model of each image task
# the families each task loads, as users name them: from the adapters' registries
FAMILY_TITLES = {
    "captioners": family_titles(captioning.FAMILIES),
    "vqa": family_titles(vqa.FAMILIES),
    "chat": family_titles(chat.FAMILIES),
}


# what a user is told a checkpoint of each task is, and the command that explains it
TASKS = {
    "classify": "an image classifier (mmcam classify)",
    "caption": "a captioner (mmcam caption)",
    "vqa": "a VQA model (mmcam vqa)",
}


def _task_of(architectures: list[str]) -> str | None:
    """The task of a checkpoint saved from ``architectures``: the captioning and VQA registries' classes,
    and transformers' image classifiers."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

    tasks = {name: "classify" for name in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES.values()}
    tasks.update({family.model_class: "caption" for family in captioning.FAMILIES.values()})
    tasks.update({family.model_class: "vqa" for family in vqa.FAMILIES.values()})
    return next((tasks[name] for name in architectures if name in tasks), None)


@contextmanager
def _naming_the_task(asked: str) -> Iterator[None]:
    """Inside: a checkpoint that does not fill the model of the ``asked`` task is refused in one line that
    names the task it is for (``hub.WrongCheckpoint``)."""
    try:
        yield
    except WrongCheckpoint as error:
        task = _task_of(error.architectures)
        if task is not None and task != asked:
            raise ValueError(f"{error}: it is {TASKS[task]}, not {TASKS[asked]}") from error
        raise ValueError(
            f"{error}: its maps would explain random weights; use a checkpoint trained for it"
        ) from error


def _listing_families(function):
    """A loader whose docstring's ``{captioners}``, ``{vqa}`` and ``{chat}`` are the registries' families."""
    function.__doc__ = function.__doc__.format(**FAMILY_TITLES)
    return function


def _supported(model_type: str, path: str, task: str, own: dict) -> None:
    """Refuse a checkpoint whose ``model_type`` is in neither ``own`` (the task's registry) nor the chat
    families, naming both lists."""
    if model_type is not None and model_type not in own and model_type not in chat.FAMILIES:
        raise ValueError(
            f"'{path}' is a {model_type} model; {task} supports {family_titles(own)} and the chat models "
            f"{FAMILY_TITLES['chat']}"
        )


def _is_pretrained(spec: str) -> bool:
    """Whether ``spec`` names a Hugging Face checkpoint; a local folder must hold its ``config.json``."""
    path = Path(spec.removeprefix("hf:"))
    if path.is_dir() and not (path / "config.json").is_file():
        raise ValueError(
            f"'{path}' has no config.json: a Hugging Face model folder holds config.json and its weights "
            f"(model.safetensors); for a torchvision state dict use torchvision:NAME:{path}"
        )
    return spec.startswith("hf:") or path.is_dir()


def load_classifier(spec: str, trust_pickle: bool = False) -> ImageClassifier:
    """A classifier from a model SPEC.

    ``shapes``: the bundled shapes-world classifier. ``torchvision:NAME`` (or a bare torchvision
    name): pretrained weights from the local torch cache (a cached file that holds more than tensors only
    with ``trust_pickle``); ``torchvision:NAME:random`` for random weights. ``hf:ID_OR_PATH`` or a local directory: a Hugging Face image classifier from a local
    directory or the local Hugging Face cache (safetensors only, unless ``trust_pickle``).
    """
    if spec == BUNDLED:
        return bundled_classifier()
    if _is_pretrained(spec):
        with _naming_the_task("classify"):
            return classification.from_pretrained(spec.removeprefix("hf:"), trust_pickle)
    return classification.from_torchvision(spec.removeprefix("torchvision:"), trust_pickle)


@_listing_families
def load_captioner(spec: str, trust_pickle: bool = False, prompt: str | None = None) -> CaptionModel:
    """``shapes`` (the bundled captioner), or ``hf:ID_OR_PATH`` / a local directory holding a captioner
    ({captioners}) or a chat model ({chat}; its reply to ``prompt`` is the caption) and its processor
    (local directory or local Hugging Face cache)."""
    path = spec.removeprefix("hf:")
    model_type = chat.model_type(path) if _is_pretrained(spec) else None
    if model_type in chat.FAMILIES:
        with _naming_the_task("caption"):
            return chat.from_pretrained(path, "caption", trust_pickle, prompt or chat.CAPTION_PROMPT)
    if prompt is not None:
        raise ValueError(
            f"--prompt is for chat models ({FAMILY_TITLES['chat']}); {spec} writes captions without one"
        )
    if spec == BUNDLED:
        return bundled_captioner()
    if not _is_pretrained(spec):
        raise ValueError(f"unknown captioning model '{spec}': use 'shapes' or hf:<id or local dir>")
    _supported(model_type, path, "captioning", captioning.FAMILIES)
    with _naming_the_task("caption"):
        return captioning.from_pretrained(path, trust_pickle)


@_listing_families
def load_vqa(spec: str, trust_pickle: bool = False) -> VQAModel:
    """``shapes`` (the bundled VQA model), or ``hf:ID_OR_PATH`` / a local directory with a VQA model
    ({vqa}) or a chat model ({chat}: its reply to the question is the answer)."""
    if spec == BUNDLED:
        return bundled_vqa()
    if not _is_pretrained(spec):
        raise ValueError(f"unknown VQA model '{spec}': use 'shapes' or hf:<id or local dir>")
    path = spec.removeprefix("hf:")
    model_type = chat.model_type(path)
    with _naming_the_task("vqa"):
        if model_type in chat.FAMILIES:
            return chat.from_pretrained(path, "vqa", trust_pickle)
        _supported(model_type, path, "VQA", vqa.FAMILIES)
        return vqa.from_pretrained(path, trust_pickle)


def load_policy(spec: str, venv=None, trust_pickle: bool = False):
    """A policy by name: ``strong`` or ``weak`` (the bundled ShapesReach agents, no pickle),
    ``sb3:ALGO:PATH`` (a model saved by stable-baselines3: its loader unpickles, so trusted files only)
    or ``random:ALGO`` (a randomly initialized CnnPolicy for ``venv``'s spaces, seed 0); ALGO is one of
    ppo, a2c, dqn. Needs the RL extra (``pip install "mmcam[rl]"``). ``trust_pickle``: see the loaders
    below; Hugging Face and sb3 checkpoints are unpickled only when it is given."""
    from mmcam.adapters.rl import sb3_from_spec, sb3_policy  # the RL extra is optional
    from mmcam.zoo.agents import AGENTS, agent_name, load_agent, load_spec

    if spec not in (*AGENTS, *AGENTS.values()):
        return sb3_from_spec(spec, venv, trust_pickle)
    name = agent_name(spec)
    return sb3_policy(load_agent(name), name=name, layer=load_spec(name)["default_layer"])


def bundled_classifier() -> ImageClassifier:
    """The bundled multi-label shapes-world classifier (20 color-shape classes)."""
    model, processor = load("shapes-classifier")
    return ImageClassifier(
        BUNDLED,
        model,
        lambda images: processor(list(images))["pixel_values"],
        list(processor.labels),
        model.default_layer,
        multi_label=True,
    )


def bundled_captioner() -> CaptionModel:
    """The bundled captioner: one token per word, so word w is decoder position w + 1."""
    model, processor = load("shapes-captioner")
    tokenizer = processor.tokenizer

    def tokenize(caption: str) -> Tokenized:
        ids = tokenizer.encode(caption)[:-1]  # drop <eos>: its probability is no word's evidence
        words = caption.split()
        return Tokenized(ids, words, [[p] for p in range(1, len(words) + 1)])

    def generate(pixels: Tensor) -> list[str]:
        return [tokenizer.decode(row.tolist()) for row in model.generate(pixels)]

    return CaptionModel(
        name=BUNDLED,
        model=model,
        preprocess=lambda images: processor(list(images))["pixel_values"],
        generate=generate,
        tokenize=tokenize,
        forward=lambda m, inputs: m(inputs["pixel_values"], inputs["input_ids"]),
        layer=model.default_layer,
        unknown_words=tokenizer.unknown_words,
    )


def bundled_vqa() -> VQAModel:
    """The bundled VQA model: answer logits over the shapes world's 16 answers."""
    model, processor = load("shapes-vqa")
    vocabulary = processor.tokenizer.vocab

    def prepare(images, questions):
        return processor(list(images), list(questions))

    return VQAModel(
        name=BUNDLED,
        model=model,
        prepare=prepare,
        forward=lambda m, inputs: m(inputs["pixel_values"], inputs["input_ids"]),
        question_tokens=lambda inputs: [
            None if i == processor.tokenizer.pad_id else vocabulary[i]
            for i in inputs["input_ids"][0].tolist()
        ],
        layer=model.default_layer,
        question_layer="embed",
        unknown_words=processor.tokenizer.unknown_words,
        answers=list(processor.answers),
    )
