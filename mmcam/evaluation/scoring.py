"""Per-target values of the requested metrics for one method on one item: the rows the summary aggregates.
The metrics are ``mmcam.metrics.registry.METRICS``; each is called on one ``Case`` per item and method."""

from __future__ import annotations

from torch import Tensor

from mmcam.engine.methods import get_method
from mmcam.evaluation.tasks import Item, Task
from mmcam.metrics.baselines import BASELINES
from mmcam.metrics.contract import Case, Settings
from mmcam.metrics.registry import METRICS
from mmcam.metrics.sanity import parametrized_layers


def check_methods(methods: list[str]) -> list[str]:
    """Canonical method names (CAM methods and the baselines ``uniform``, ``center``), or one clear error."""
    return [name if name in BASELINES else get_method(name).name for name in methods]


def case_of(task: Task, item: Item, method: str, settings: Settings) -> Case:
    """The item explained by ``method`` (its maps: a baseline's, or the task's explainer's), as a case."""
    image = item.inputs[task.image_key]
    if method in BASELINES:
        explanation = None
        maps = BASELINES[method](len(item.targets), tuple(image.shape[-2:]), device=image.device)
    else:
        explanation = task.explainer(method)(item.inputs, item.targets)
        maps = explanation.maps[0]
    return Case(
        method=method,
        inputs=item.inputs,
        image_key=task.image_key,
        targets=item.targets,
        maps=maps.float(),
        explanation=explanation,
        truth=item.truth,
        settings=settings,
        model=task.model,
        forward=task.forward,
        probabilities=item.probabilities,
        explainer=lambda model: task.explainer(method, model),
        randomized=task.randomized,
        concept_table=task.concept_table,
        shared=item.shared,
    )


def score_item(task: Task, item: Item, method: str, metrics: list[str], settings: Settings) -> dict:
    """``{"values": {metric: [one float per target]}}`` (NaN where a metric does not apply) plus what the
    metrics record besides (``sanity``: ``"sanity_steps"``, per randomization step one rank correlation
    per target). Metrics run in the registry's order."""
    case = case_of(task, item, method, settings)
    values: dict[str, Tensor] = {}
    record: dict = {}
    for name, metric in METRICS.items():
        if name in metrics:
            values[name] = metric(case)
            record.update(metric.details(case))
    return {"values": {name: value.cpu().tolist() for name, value in values.items()}, **record}


def randomized_layers(task: Task) -> list[str]:
    """The layers the sanity check randomizes, in order."""
    return parametrized_layers(task.model)
