"""What is explained per task, and against which pixels: each record becomes items, one input with K
targets, each target with the objects it is about (``metrics.contract.Truth``), and how to read the
targets' probabilities from the model's output (for the faithfulness curves). Maps come from the task
adapter's own explainer (``classifier.explainer``, ``captioner.explainer``, ...): the same maps as
``mmcam classify|caption|vqa|rl`` give for the same model, layout included."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from mmcam.adapters.captioning import generate_captions, right_padded, word_targets
from mmcam.adapters.vqa import VQAModel, answer_scores
from mmcam.concepts.dissect import ConceptTable
from mmcam.engine import Explainer
from mmcam.engine.context import Forward
from mmcam.engine.methods import CamMethod, get_method
from mmcam.evaluation.data import REACH_OBJECTS, object_boxes, object_masks, without_each_object
from mmcam.evaluation.grounding import answer_objects, is_single_object, record_objects, word_objects
from mmcam.loading import load_captioner, load_classifier, load_policy, load_vqa
from mmcam.metrics.contract import Truth
from mmcam.subject import Subject
from mmcam.targets import ClassLogProb, ClassScore, Target, logits_of

TASKS = ("classify", "caption", "vqa", "rl")
DEFAULT_MODELS = {"classify": "shapes", "caption": "shapes", "vqa": "shapes", "rl": "strong"}  # bundled


@dataclass
class Item:
    """One input (a batch of one) and its K targets, what they are about (``truth``, at the input's size)
    and ``probabilities``: model output on M rows -> (M, K) the targets' probabilities. ``shared`` holds
    what every method's metrics share on this input (the occlusion reference)."""

    inputs: dict[str, Tensor]
    targets: list[Target]
    truth: Truth
    probabilities: Callable[[Any], Tensor]
    shared: dict = field(default_factory=dict)


@dataclass
class Task:
    """A model under evaluation: how to explain it (also a randomized copy of it) and its items."""

    name: str
    model_name: str
    model: nn.Module
    forward: Forward
    make_explainer: Callable[[nn.Module, CamMethod], Explainer]
    items: Callable[[dict], list[Item]]
    image_key: str = "pixel_values"
    subject: Callable[[str], Subject] | None = None  # a layer of the model, to name its units
    method_options: dict[str, dict] = field(default_factory=dict)  # by method name: its constructor's options
    _explainers: dict[str, Explainer] = field(default_factory=dict, repr=False)
    _tables: dict[str, ConceptTable] = field(default_factory=dict, repr=False)
    _randomized: dict[int, nn.Module] = field(default_factory=dict, repr=False)

    def concept_table(self, layer: str) -> ConceptTable | None:
        """The units of ``layer`` named on the shapes-world probe (cached on disk, as ``mmcam dissect``
        does), or None for a model whose units are not named (RL policies: their concepts come from
        rollouts)."""
        if self.subject is None:
            return None
        if layer not in self._tables:
            from mmcam.concepts.tables import concept_table

            self._tables[layer] = concept_table(self.subject(layer), progress=False)
        return self._tables[layer]

    def randomized(self, seed: int) -> nn.Module:
        """A copy of the model with every layer randomized (``metrics.sanity.fully_randomized``), made once
        per seed for all items."""
        if seed not in self._randomized:
            from mmcam.metrics.sanity import fully_randomized

            self._randomized[seed] = fully_randomized(self.model, seed)
        return self._randomized[seed]

    def explainer(self, method: str, model: nn.Module | None = None) -> Explainer:
        """The explainer of ``method`` (built with its ``method_options``) on the task's model (one per
        method, reused by every item), or on ``model`` (such as a randomized copy, built anew)."""
        if model is not None and model is not self.model:
            return self.make_explainer(model, self.built_method(method))
        if method not in self._explainers:
            self._explainers[method] = self.make_explainer(self.model, self.built_method(method))
        return self._explainers[method]

    def built_method(self, method: str) -> CamMethod:
        """The method named ``method``, built with its entry of ``method_options`` (none: its defaults)."""
        return get_method(method, **self.method_options.get(method, {}))


def ground_truth(
    record: dict,
    size: tuple[int, int],
    groups: list[list[int]],
    described: list[bool] | None = None,
    preprocess: Callable[[list[Image.Image]], Tensor] | None = None,
) -> Truth:
    """The truth of K targets at the input's ``size``, target k being about the objects ``groups[k]``
    (empty: about none), ``described[k]`` False where it names no object of the scene (default: where
    its group is empty); with ``preprocess`` (PIL images -> the model's image input), the scene
    re-rendered without each object, made when a metric asks."""
    masks, boxes = object_masks(record, size), object_boxes(record, size)
    width = max(1, max(len(group) for group in groups))
    target_masks = torch.zeros(len(groups), *size, dtype=torch.bool)
    target_boxes = torch.zeros(len(groups), width, 4)
    others = torch.zeros(len(groups), *size, dtype=torch.bool)
    for k, group in enumerate(groups):
        rest = [o for o in range(len(masks)) if o not in group]
        if group:
            target_masks[k] = masks[group].any(dim=0)
            target_boxes[k, : len(group)] = boxes[group]
        if rest:
            others[k] = masks[rest].any(dim=0)
    described = [bool(group) for group in groups] if described is None else described
    images = without_each_object(record) if preprocess is not None else None
    removed = None if images is None else (lambda: preprocess(images))
    return Truth(target_masks, target_boxes, others, masks, groups, described, removed)


def adapter_explainers(adapter: Any, layer: str | None) -> Callable[[nn.Module, CamMethod], Explainer]:
    """``(model, method) -> explainer``: the task adapter's own explainer of ``layer`` (None: its default)
    and ``method``, on its model or on another one of the same architecture (a randomized copy)."""

    def make(model: nn.Module, method: CamMethod) -> Explainer:
        own = adapter if model is adapter.model else replace(adapter, model=model)
        return own.explainer(layer, method)

    return make


def _stacked(targets: list[Target], transform: Callable[[Tensor], Tensor]) -> Callable[[Any], Tensor]:
    return lambda output: transform(torch.stack([target(output) for target in targets], dim=1).float())


def object_classes(record: dict) -> list[str]:
    """Each object's class name: its ``categories`` entry, else "<color> <shape>" (the shapes world's)."""
    if "categories" in record:
        return list(record["categories"])
    if "colors" in record and "shapes" in record:
        return [f"{color} {shape}" for color, shape in zip(record["colors"], record["shapes"])]
    raise ValueError("--task classify needs a 'categories' column, or 'colors' and 'shapes' columns")


def classify_task(spec: str, layer: str | None, device: torch.device, trust_pickle: bool = False) -> Task:
    """Every class present in the image, against its objects. The class of an object is its
    ``categories`` entry if the dataset has one, else "<color> <shape>". Probabilities: sigmoid of the
    logits for a multi-label classifier (such as the bundled one), softmax over classes otherwise."""
    classifier = load_classifier(spec, trust_pickle)
    classifier.model.to(device)
    names = list(classifier.class_names or [])

    def items(record: dict) -> list[Item]:
        objects = object_classes(record)
        unknown = sorted(set(objects) - set(names))
        if unknown:
            raise ValueError(f"the classifier {classifier.name} has no class {', '.join(map(repr, unknown))}")
        classes = list(dict.fromkeys(names.index(name) for name in objects))
        if not classes:
            return []
        pixels = classifier.preprocess([record["image"]]).to(device)
        groups = [[o for o, name in enumerate(objects) if names.index(name) == c] for c in classes]
        truth = ground_truth(
            record,
            tuple(pixels.shape[-2:]),
            groups,
            preprocess=lambda images: classifier.preprocess(images).to(device),
        )

        def probabilities(output: Any) -> Tensor:
            logits = logits_of(output).float()
            return (logits.sigmoid() if classifier.multi_label else logits.softmax(dim=1))[:, classes]

        targets = [ClassScore(c) for c in classes]
        return [Item({"pixel_values": pixels}, targets, truth, probabilities)]

    return Task(
        "classify",
        classifier.name,
        classifier.model,
        lambda m, x: m(x["pixel_values"]),
        adapter_explainers(classifier, layer),
        items,
        subject=classifier.subject,
    )


def caption_task(spec: str, layer: str | None, device: torch.device, trust_pickle: bool = False) -> Task:
    """Each color, shape and size word of the *generated* caption, against the objects it names
    (``grounding.word_objects``: phrases matched by their attributes; a hallucinated phrase's words are
    about no object); the word targets are ``captioning.word_targets``', as ``mmcam caption``
    explains them. Probabilities: p(word) under teacher forcing."""
    captioner = load_captioner(spec, trust_pickle)
    captioner.model.to(device)

    def items(record: dict) -> list[Item]:
        pixels = captioner.preprocess([record["image"]]).to(device)
        tokenized = captioner.tokenize(generate_captions(captioner, pixels)[0])
        found = word_objects(tokenized.words, record_objects(record))
        if not found:
            return []
        every_word = word_targets(tokenized)
        targets = [every_word[grounded.position] for grounded in found]
        truth = ground_truth(
            record,
            tuple(pixels.shape[-2:]),
            [grounded.about for grounded in found],
            [grounded.described for grounded in found],
            lambda images: captioner.preprocess(images).to(device),
        )
        inputs = {"pixel_values": pixels, "input_ids": right_padded([tokenized.ids]).to(device)}
        return [Item(inputs, targets, truth, _stacked(targets, torch.exp))]

    return Task(
        "caption",
        captioner.name,
        captioner.model,
        captioner.forward,
        adapter_explainers(captioner, layer),
        items,
        subject=captioner.subject,
    )


def vqa_task(spec: str, layer: str | None, device: torch.device, trust_pickle: bool = False) -> Task:
    """Questions about one object (color, shape, size; "is there ..." answered yes): the model's answer,
    against that object and the others that share the true answer (``grounding.answer_objects``). The
    target and its probability are those of ``answered``: a classifier-style model's (the bundled one,
    ViLT) predicted answer, a generative model's (BLIP, chat models such as LLaVA) greedy answer."""
    vqa = load_vqa(spec, trust_pickle)
    vqa.model.to(device)

    def items(record: dict) -> list[Item]:
        found = []
        for question, kind, answer, objects in zip(
            record["questions"], record["question_types"], record["answers"], record["question_objects"]
        ):
            if not is_single_object(kind, answer):
                continue
            asked = {k: v.to(device) for k, v in vqa.prepare([record["image"]], [question]).items()}
            given = answered(vqa, asked)
            if given is None:
                continue
            inputs, target, probabilities = given
            about = answer_objects(kind, answer, objects[:1], record_objects(record))

            def preprocess(images: list[Image.Image], question: str = question) -> Tensor:
                return vqa.prepare(images, [question] * len(images))["pixel_values"].to(device)

            truth = ground_truth(
                record, tuple(inputs["pixel_values"].shape[-2:]), [about], preprocess=preprocess
            )
            found.append(Item(inputs, [target], truth, probabilities))
        return found

    return Task(
        "vqa", vqa.name, vqa.model, vqa.forward, adapter_explainers(vqa, layer), items, subject=vqa.subject
    )


def answered(
    vqa: VQAModel, inputs: dict[str, Tensor]
) -> tuple[dict[str, Tensor], Target, Callable[[Any], Tensor]] | None:
    """The model's answer to the one question of ``inputs``, as ``mmcam vqa`` explains it: the inputs that
    score it, its target and its probability (output on M rows -> (M, 1)).

    Classifier-style: the top answer a*; target its logit z_a*, probability softmax(z)_a*. Generative: the
    greedy answer a; the inputs extended with its teacher-forced ids, target its log-probability
    log p(a) = sum_p log p(a_p | image, question, a_<p) (``answer_scores``), probability p(a) = exp(log p(a)).
    None when a generative model answers nothing (the question is left out)."""
    if vqa.answers is None:
        with torch.no_grad():
            answer = vqa.generate(inputs)[0]
        if not answer:
            return None
        extended, target = answer_scores(vqa, inputs, [answer])
        return extended, target, _stacked([target], torch.exp)
    with torch.no_grad():
        predicted = int(logits_of(vqa.forward(vqa.model, inputs)).argmax(dim=1))

    def probabilities(output: Any) -> Tensor:
        return logits_of(output).float().softmax(dim=1)[:, [predicted]]

    return inputs, ClassScore(predicted), probabilities


def rl_task(spec: str, layer: str | None, device: torch.device, trust_pickle: bool = False) -> Task:
    """The action a ShapesReach agent (``strong``, ``weak``, ``sb3:ALGO:PATH``) chooses in a state,
    against the agent and the goal together (the action depends on where both are); the distractors are
    the other objects. The target is the action's log-probability (``mmcam rl``'s default); probabilities:
    softmax over the actions' logits."""
    policy = load_policy(spec, trust_pickle=trust_pickle)
    policy.model.to(device)
    agent_and_goal = [REACH_OBJECTS.index("agent"), REACH_OBJECTS.index("goal")]

    def items(record: dict) -> list[Item]:
        pixels = policy.to_pixels(np.array(record["image"])[None]).to(device)
        with torch.no_grad():
            action = int(policy.forward(policy.model, {"pixel_values": pixels}).logits.argmax(dim=1))
        truth = ground_truth(record, tuple(pixels.shape[-2:]), [agent_and_goal])

        def probabilities(output: Any) -> Tensor:
            return output.logits.float().softmax(dim=1)[:, [action]]

        return [Item({"pixel_values": pixels}, [ClassLogProb(action)], truth, probabilities)]

    return Task("rl", policy.name, policy.model, policy.forward, adapter_explainers(policy, layer), items)


BUILDERS = {"classify": classify_task, "caption": caption_task, "vqa": vqa_task, "rl": rl_task}


def build_task(
    name: str,
    spec: str,
    layer: str | None = None,
    device: torch.device | str = "cpu",
    trust_pickle: bool = False,
    method_options: dict[str, dict] | None = None,
) -> Task:
    """The task ``name`` on the model ``spec`` (``shapes``: the bundled one); ``trust_pickle`` lets the
    loader unpickle a checkpoint (which can run code), as ``--trust-pickle`` does; ``method_options``: by
    method name, the options its explainer's method is built with (``{"occlusion": {"window": 2}}``)."""
    if name not in BUILDERS:
        raise ValueError(f"unknown task '{name}'; choose one of: {', '.join(BUILDERS)}")
    return replace(
        BUILDERS[name](spec, layer, torch.device(device), trust_pickle), method_options=method_options or {}
    )
