"""Per-target values of every metric for one method on one item: the rows the summary aggregates."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mmcam.engine.methods import get_method
from mmcam.evaluation.tasks import Item, Task
from mmcam.explanation import Explanation
from mmcam.metrics.baselines import BASELINES
from mmcam.metrics.complexity import complexity, sparseness
from mmcam.metrics.discrimination import peaks_on_others
from mmcam.metrics.faithfulness import (
    baseline_image,
    confidence_changes,
    curve_area,
    infidelity,
    max_sensitivity,
    occlusion_correlation,
    occlusion_maps,
    perturbation_curves,
)
from mmcam.metrics.localization import localization_errors
from mmcam.metrics.pointing import energy_inside, peak_hit_shares
from mmcam.metrics.road import road
from mmcam.metrics.sanity import (
    cascading_randomization,
    complexity_rise,
    noisy_copies,
    parametrized_layers,
    smoothed_correlation,
)
from mmcam.metrics.similarity import flat_ssim, random_other_classes
from mmcam.metrics.unit_ablation import unit_ablation_drops
from mmcam.targets import ClassAdvantage, ClassLogProb, ClassMargin, ClassScore, logits_of, per_row


@dataclass(frozen=True)
class Metric:
    label: str
    better: str  # "lower" or "higher"


METRICS = {
    "localization": Metric("localization error (IoU<0.5)", "lower"),
    "pointing": Metric("pointing game", "higher"),
    "energy": Metric("energy pointing", "higher"),
    "deletion": Metric("deletion AUC", "lower"),
    "insertion": Metric("insertion AUC", "higher"),
    "occlusion": Metric("occlusion rank corr.", "higher"),
    "discrimination": Metric("peak on another object", "lower"),
    "sanity": Metric("rank corr. after randomization", "lower"),
    "sanity-smooth": Metric("rank corr. after randomization, noise-averaged maps", "lower"),
    "sanity-efficient": Metric("rise in histogram entropy after randomization", "higher"),
    "drop": Metric("average drop in confidence", "lower"),
    "increase": Metric("increase in confidence", "higher"),
    "sparseness": Metric("sparseness (Gini)", "higher"),
    "complexity": Metric("complexity (entropy)", "lower"),
    "random-logit": Metric("SSIM with a random other class's map", "lower"),
    "road": Metric("ROAD (LeRF - MoRF) / 2", "higher"),
    "road-morf": Metric("ROAD MoRF: score change, most relevant removed", "lower"),
    "road-lerf": Metric("ROAD LeRF: score change, least relevant removed", "higher"),
    "sensitivity": Metric("max-sensitivity", "lower"),
    "infidelity": Metric("infidelity", "lower"),
    "cited-units": Metric("score drop, cited units zeroed", "higher"),
    "random-units": Metric("score drop, as many random units zeroed", "lower"),
}
MODEL_FREE = tuple(BASELINES)  # maps that do not depend on the model: no sanity check for them
# Noise for max-sensitivity (uniform, this radius) and infidelity (Gaussian, this standard deviation), as a
# share of each input's value range, so that pixels in 0-255 and normalized images are moved alike.
SENSITIVITY_RADIUS = 0.01
INFIDELITY_SIGMA = 0.05
# Smooth MPRT: maps averaged over this many copies of the input (the last one clean), with Gaussian noise of
# this share of the input's value range (Quantus's default share; it averages 50 copies).
SMOOTH_SAMPLES = 10
SMOOTH_NOISE = 0.1


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


def check_methods(methods: list[str]) -> list[str]:
    """Canonical method names (CAM methods and the baselines ``uniform``, ``center``), or one clear error."""
    return [name if name in BASELINES else get_method(name).name for name in methods]


def method_maps(task: Task, item: Item, method: str, model: nn.Module | None = None) -> Tensor:
    """(K, H, W) maps of the item's targets: a baseline's, or the method's on ``model`` (the task's by default)."""
    image = item.inputs[task.image_key]
    if method in BASELINES:
        return BASELINES[method](len(item.targets), tuple(image.shape[-2:]), device=image.device)
    return task.explainer(method, model)(item.inputs, item.targets).maps[0]


def occlusion_of(task: Task, item: Item, settings: Settings) -> Tensor:
    """(K, h, w) occlusion maps of the item's targets (the same for every method: computed once)."""
    image = item.inputs[task.image_key][0]
    baseline = baseline_image(image, settings.baseline)
    return occlusion_maps(
        task.scorer(item), image, baseline, settings.patch, settings.stride, settings.batch_size
    )


def score_item(
    task: Task, item: Item, method: str, metrics: list[str], settings: Settings, occlusion: Tensor | None
) -> dict:
    """``{"values": {metric: [one float per target]}}`` plus, with ``sanity``, ``"sanity_steps"``: per
    randomization step, one rank correlation per target (NaN where a metric does not apply)."""
    explanation = None if method in BASELINES else task.explainer(method)(item.inputs, item.targets)
    maps = (method_maps(task, item, method) if explanation is None else explanation.maps[0]).float()
    masks, device = item.masks.to(maps.device), maps.device
    values: dict[str, Tensor] = {}
    if "localization" in metrics:
        values["localization"] = localization_errors(maps, item.boxes).float()
    if "pointing" in metrics:
        values["pointing"] = peak_hit_shares(maps, masks, settings.tolerance)
    if "energy" in metrics:
        values["energy"] = energy_inside(maps, masks)
    if "discrimination" in metrics:
        confusion = peaks_on_others(maps, item.others.to(device), settings.tolerance)
        values["discrimination"] = torch.where(item.others.to(device).flatten(1).any(1), confusion, torch.nan)
    image = item.inputs[task.image_key][0]
    for name, insertion in (("deletion", False), ("insertion", True)):
        if name in metrics:
            baseline = baseline_image(image, settings.baseline)
            curves = perturbation_curves(
                task.scorer(item),
                image,
                maps,
                baseline,
                settings.steps,
                insertion,
                settings.batch_size,
                settings.seed,
            )
            values[name] = curve_area(curves)
    if "drop" in metrics or "increase" in metrics:
        values["drop"], values["increase"] = confidence_changes(task.scorer(item), image, maps)
    if "sensitivity" in metrics:
        values["sensitivity"] = max_sensitivity(
            lambda images: _maps_of_copies(task, item, method, images),
            image,
            maps,
            radius=SENSITIVITY_RADIUS * _span(image),
            seed=settings.seed,
        )
    if "random-logit" in metrics:
        values["random-logit"] = _random_logit(task, item, method, maps, settings)
    if {"road", "road-morf", "road-lerf"} & set(metrics):
        scores = road(task.scorer(item), image, maps, seed=settings.seed)
        values["road"], values["road-morf"], values["road-lerf"] = (
            scores.combined,
            scores.most_first,
            scores.least_first,
        )
    if "infidelity" in metrics:
        values["infidelity"] = infidelity(
            task.scorer(item), image, maps, sigma=INFIDELITY_SIGMA * _span(image), seed=settings.seed
        )
    if "sparseness" in metrics:
        values["sparseness"] = sparseness(maps)
    if "complexity" in metrics:
        values["complexity"] = complexity(maps)
    if "cited-units" in metrics or "random-units" in metrics:
        values["cited-units"], values["random-units"] = _unit_drops(task, item, method, explanation, settings)
    if {"sanity-smooth", "sanity-efficient"} & set(metrics):
        values.update(_against_randomized(task, item, method, maps, metrics, settings))
    if occlusion is not None:
        values["occlusion"] = occlusion_correlation(maps, occlusion, settings.patch, settings.stride)
    record = {"values": {name: value.cpu().tolist() for name, value in values.items()}}
    if "sanity" in metrics:
        steps = _sanity_steps(task, item, method, settings)
        record["values"]["sanity"] = steps[-1] if steps else [float("nan")] * len(item.targets)
        record["sanity_steps"] = steps
    return record


RANDOM_LOGIT_TARGETS = (ClassScore, ClassLogProb, ClassAdvantage, ClassMargin)  # one class's score


def _random_logit(task: Task, item: Item, method: str, maps: Tensor, settings: Settings) -> Tensor:
    """Quantus's random-logit test (Sixt et al., arXiv 1912.09818): the SSIM (``similarity.flat_ssim``)
    between each target's map and the map of a class drawn at random among the others, as Quantus draws
    it (``numpy`` seeded with the run's seed); lower says the map depends on the class. NaN for a
    target that is not one class's score (a caption word)."""
    kinds = [type(target) for target in item.targets]
    if method in BASELINES or any(kind not in RANDOM_LOGIT_TARGETS for kind in kinds):
        return torch.full((len(item.targets),), torch.nan)
    with torch.no_grad():
        classes = logits_of(task.forward(task.model, item.inputs)).shape[1]
    drawn = random_other_classes([target.index(0) for target in item.targets], classes, settings.seed)
    others = [kind(other) for kind, other in zip(kinds, drawn)]
    other_maps = task.explainer(method)(item.inputs, others).maps[0]
    return flat_ssim(maps, other_maps)


def _span(image: Tensor) -> float:
    """The input's value range, max - min (1 for a constant input)."""
    span = float(image.max() - image.min())
    return span if span > 0 else 1.0


def _maps_of_copies(
    task: Task, item: Item, method: str, images: Tensor, model: nn.Module | None = None
) -> Tensor:
    """(M, K, H, W) maps of the item's targets on M images in place of its own, in one call (on the task's
    model, or ``model``)."""
    if method in BASELINES:
        maps = BASELINES[method](len(item.targets), tuple(images.shape[-2:]), device=images.device)
        return maps[None].expand(len(images), -1, -1, -1)
    inputs = {
        key: images if key == task.image_key else per_row(value, len(images))
        for key, value in item.inputs.items()
    }
    return task.explainer(method, model)(inputs, item.targets).maps


def _against_randomized(
    task: Task, item: Item, method: str, maps: Tensor, metrics: list[str], settings: Settings
) -> dict[str, Tensor]:
    """Smooth MPRT (``sanity-smooth``) and efficient MPRT (``sanity-efficient``) against the fully randomized
    model; NaN for a model-free baseline. The randomized model explains the noisy copies, whose last is the
    input itself, in one call, and efficient MPRT reads that last map: the randomized model runs once."""
    wanted = [name for name in ("sanity-smooth", "sanity-efficient") if name in metrics]
    if method in MODEL_FREE:
        return {name: torch.full((len(item.targets),), torch.nan) for name in wanted}
    image = item.inputs[task.image_key][0]
    smooth = "sanity-smooth" in metrics
    copies = noisy_copies(image, SMOOTH_SAMPLES, SMOOTH_NOISE, settings.seed) if smooth else image[None]
    randomized = _maps_of_copies(task, item, method, copies, task.randomized(settings.seed)).float()
    values = {}
    if smooth:
        values["sanity-smooth"] = smoothed_correlation(
            _maps_of_copies(task, item, method, copies), randomized
        )
    if "sanity-efficient" in metrics:
        values["sanity-efficient"] = complexity_rise(maps, randomized[-1])
    return values


def _unit_drops(
    task: Task, item: Item, method: str, explanation: Explanation | None, settings: Settings
) -> tuple[Tensor, Tensor]:
    """The score drops when the units each target's sentence cites (by the item's ``explanation``: its
    channel weights) are zeroed, and as many random ones (``metrics.unit_ablation``); NaN for a baseline,
    a method without channel weights or a model without named units."""
    nothing = torch.full((len(item.targets),), torch.nan)
    if explanation is None or explanation.weights is None:
        return nothing, nothing
    table = task.concept_table(explanation.layer)
    if table is None:
        return nothing, nothing
    return unit_ablation_drops(
        task.explainer(method), item.inputs, item.targets, explanation.weights[0], table, settings.seed
    )


def _sanity_steps(task: Task, item: Item, method: str, settings: Settings) -> list[list[float]]:
    if method in MODEL_FREE:
        return []
    steps = cascading_randomization(
        task.model, lambda model: method_maps(task, item, method, model), settings.seed
    )
    return [correlation.cpu().tolist() for _, correlation in steps]


def randomized_layers(task: Task) -> list[str]:
    """The layers the sanity check randomizes, in order."""
    return parametrized_layers(task.model)
