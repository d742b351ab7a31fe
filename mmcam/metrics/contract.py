"""The metric contract: a metric is an object with a name, a label, which way is better and what of a
``Case`` it reads (``needs``); called on a case, it gives one value per target. ``mmcam eval`` builds one
case per input and method and calls the requested metrics of ``registry.METRICS`` on it.

A case is one input (a batch of one) with its K targets, the method's (K, H, W) maps, the ground truth of
each target and what a metric may run: the model, its explainer, a randomized copy of it. Values a group
of metrics share (the three ROAD figures, the two unit drops) are computed once per case (``Case.once``);
values every method of an input shares (the occlusion reference) once per input (``Case.shared``).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from mmcam.engine import Explainer
from mmcam.explanation import Explanation
from mmcam.metrics.baselines import BASELINES
from mmcam.targets import Target, per_row


@dataclass(frozen=True)
class Settings:
    """How the metrics run: curve ``steps`` and perturbation ``baseline``, occlusion ``patch`` and
    ``stride`` (px), pointing ``tolerance`` (px), forwards per batch, seed of ties and randomization."""

    steps: int = 16
    baseline: str = "blur"
    patch: int = 16
    stride: int = 8
    tolerance: int = 0
    batch_size: int = 64
    seed: int = 0


@dataclass
class Truth:
    """What each of the K targets is about, on the scene's O objects (masks at the input's size).

    masks:  (K, H, W) bool, the pixels of the objects target k is about (all False: none; every hit misses).
    boxes:  (K, J, 4) the boxes of those objects (zero rows pad).
    others: (K, H, W) bool, the scene's other objects.
    objects: (O, H, W) bool, every object of the scene.
    about:  per target, the objects it is about (several: an attribute they share, any of them counts).
    described: per target, False where it names no object of the scene (a hallucinated phrase).
    removed: None, or a function giving the input re-rendered without each object, (O, C, H, W).
    """

    masks: Tensor
    boxes: Tensor
    others: Tensor
    objects: Tensor
    about: list[list[int]]
    described: list[bool]
    removed: Callable[[], Tensor] | None = None

    @property
    def unambiguous(self) -> list[bool]:
        """Per target, whether it is about exactly one object."""
        return [len(objects) == 1 for objects in self.about]


@dataclass
class Case:
    """One input and its K targets, explained by ``method`` (its maps, and its ``explanation`` unless the
    method is a model-free baseline), with what a metric may read or run."""

    method: str
    inputs: dict[str, Tensor]
    image_key: str
    targets: list[Target]
    maps: Tensor  # (K, H, W) float
    explanation: Explanation | None
    truth: Truth
    settings: Settings
    model: nn.Module
    forward: Callable[[nn.Module, dict[str, Tensor]], Any]
    probabilities: Callable[[Any], Tensor]  # model output on M rows -> (M, K) the targets' probabilities
    explainer: Callable[[nn.Module | None], Explainer]  # the method's explainer on the model (or another)
    randomized: Callable[[int], nn.Module]  # the model with every layer randomized, per seed
    concept_table: Callable[[str], Any]  # a layer's named units, or None
    shared: dict = field(default_factory=dict)  # values every method of this input shares
    memo: dict = field(default_factory=dict)  # values the metrics of this case share

    @property
    def image(self) -> Tensor:
        """The (C, H, W) input image."""
        return self.inputs[self.image_key][0]

    @property
    def model_free(self) -> bool:
        """Whether the maps are a baseline's, which knows nothing of the model."""
        return self.method in BASELINES

    def nothing(self) -> Tensor:
        """(K,) NaN: the metric does not apply to this case."""
        return torch.full((len(self.targets),), torch.nan)

    def score(self, images: Tensor) -> Tensor:
        """Images (M, C, H, W) in place of the input's -> (M, K) the targets' probabilities (no gradients)."""
        with torch.no_grad():
            return self.probabilities(self.forward(self.model, self.with_images(images)))

    def with_images(self, images: Tensor) -> dict[str, Tensor]:
        """The inputs with ``images`` (M, C, H, W) in place of the image, the other inputs repeated."""
        return {
            key: images if key == self.image_key else per_row(value, len(images))
            for key, value in self.inputs.items()
        }

    def maps_of(self, images: Tensor, model: nn.Module | None = None) -> Tensor:
        """(M, K, H, W) the method's maps of the targets on M images in place of the input's, in one call
        (on the case's model, or ``model``)."""
        if self.model_free:
            maps = BASELINES[self.method](len(self.targets), tuple(images.shape[-2:]), device=images.device)
            return maps[None].expand(len(images), -1, -1, -1)
        return self.explainer(model)(self.with_images(images), self.targets).maps

    def once(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """``compute()``, computed at most once per case."""
        if key not in self.memo:
            self.memo[key] = compute()
        return self.memo[key]

    def once_per_input(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """``compute()``, computed at most once per input, whatever the method (it must not read the maps)."""
        if key not in self.shared:
            self.shared[key] = compute()
        return self.shared[key]


CASE_FIELDS = frozenset(f.name for f in fields(Case)) | {"image", "model_free", "score", "maps_of"}


class Metric:
    """A metric: ``name`` (what ``mmcam eval --metric`` takes), ``label`` (the table's), ``better``
    ("lower" or "higher"), ``needs`` (the parts of a ``Case`` it reads besides the maps, names of
    ``CASE_FIELDS``). ``__call__(case)`` gives (K,) values, NaN where it does not apply; ``details(case)``
    anything else it records per case (a JSON-able dict, default none)."""

    name: ClassVar[str]
    label: ClassVar[str]
    better: ClassVar[str]
    needs: ClassVar[frozenset[str]] = frozenset()

    def __call__(self, case: Case) -> Tensor:
        raise NotImplementedError

    def details(self, case: Case) -> dict:
        return {}


def by_name(*metrics: Metric) -> dict[str, Metric]:
    """The metrics by name, in the given order; one clear error for a duplicate name, a direction other
    than lower / higher, or a need that no case has."""
    found: dict[str, Metric] = {}
    for metric in metrics:
        if metric.name in found:
            raise ValueError(f"two metrics are named {metric.name!r}")
        if metric.better not in ("lower", "higher"):
            raise ValueError(f"metric {metric.name!r}: better must be 'lower' or 'higher'")
        unknown = set(metric.needs) - CASE_FIELDS
        if unknown:
            raise ValueError(f"metric {metric.name!r} needs {sorted(unknown)}, which no Case has")
        found[metric.name] = metric
    return found
