"""One evaluation, end to end: samples -> shards (skipped when already on disk) -> per-sample results
gathered on rank 0 -> table, CSV, JSON and figure."""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from mmcam.evaluation.data import SHAPES_SEED, Records, dataset_records, reach_records, shapes_records
from mmcam.evaluation.distributed import Processes
from mmcam.evaluation.plot import results_figure
from mmcam.evaluation.scoring import check_methods, randomized_layers, score_item
from mmcam.evaluation.shards import ShardStore, shard_ranges
from mmcam.evaluation.summary import CI_METHOD, sanity_curves, summarize, table_text, write_csv, write_json
from mmcam.evaluation.tasks import DEFAULT_MODELS, TASKS, Item, Task, build_task
from mmcam.metrics.contract import Settings
from mmcam.metrics.registry import METRICS
from mmcam.viz.figures import save_figure

DEFAULT_SCENES = 500


@dataclass
class Evaluation:
    """What to evaluate: ``dataset`` None means ``limit`` (default 500) fresh shapes scenes of ``seed``
    (ShapesReach start states for ``rl``)."""

    task: str
    methods: list[str]
    metrics: list[str]
    output: Path
    model: str | None = None  # None: the task's bundled model
    layer: str | None = None
    dataset: str | None = None
    limit: int | None = None
    seed: int = SHAPES_SEED
    shard_size: int = 20
    settings: Settings = field(default_factory=Settings)
    trust_pickle: bool = False  # let the model's loader unpickle (pickles can run code)
    method_options: dict[str, dict] = field(default_factory=dict)  # by method name, e.g. occlusion's window

    def check(self) -> None:
        """Canonical names and the task's default model, or one clear error."""
        if self.task not in TASKS:
            raise ValueError(f"unknown task '{self.task}'; choose one of: {', '.join(TASKS)}")
        self.model = self.model or DEFAULT_MODELS[self.task]
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown or not self.metrics:
            raise ValueError(
                f"unknown metric(s) {', '.join(unknown) or '(none)'}; choose from: {', '.join(METRICS)}"
            )
        if not self.methods:
            raise ValueError("no method to evaluate")
        self.methods = list(dict.fromkeys(check_methods(self.methods)))
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit must be at least 1, got {self.limit}")

    def config(self) -> dict:
        """What stored shards depend on (methods and limit aside: shards are per method, per sample range);
        the methods' options only when some are given, so that folders written before they existed resume."""
        config = {
            "task": self.task,
            "model": self.model,
            "layer": self.layer,
            "dataset": self.dataset or f"{'reach' if self.task == 'rl' else 'shapes'}@{self.seed}",
            "metrics": sorted(self.metrics),
            "shard_size": self.shard_size,
            "settings": asdict(self.settings),
        }
        return {**config, "method_options": self.method_options} if self.method_options else config

    def records(self) -> Records:
        if self.task == "rl":
            if self.dataset:
                raise ValueError("--task rl evaluates ShapesReach states; it takes no --dataset")
            return reach_records(self.limit or DEFAULT_SCENES, self.seed)
        if self.dataset:
            return dataset_records(self.dataset, self.task, self.limit)
        return shapes_records(self.limit or DEFAULT_SCENES, self.seed)


def run_evaluation(evaluation: Evaluation, processes: Processes, progress: bool = True) -> dict | None:
    """Compute (or read back) every shard this process owns; on rank 0 return the report, else None."""
    evaluation.check()
    store = ShardStore(evaluation.output, evaluation.config())
    store.check()
    processes.barrier()
    if processes.leader:
        store.write_config()
    records = evaluation.records()
    task = build_task(
        evaluation.task,
        evaluation.model,
        evaluation.layer,
        processes.device,
        evaluation.trust_pickle,
        evaluation.method_options,
    )
    began = time.perf_counter()
    ranges = shard_ranges(len(records), evaluation.shard_size)
    mine = [shard for index, shard in enumerate(ranges) if processes.owns(index)]
    results = _compute(task, records, mine, evaluation, store, progress and processes.leader)
    gathered = processes.gather(results)
    if not processes.leader:
        return None
    by_method = {
        m: sorted((r for r in gathered if r["method"] == m), key=lambda r: r["sample"])
        for m in evaluation.methods
    }
    rows = summarize(by_method, evaluation.metrics)
    curves = sanity_curves(by_method) if "sanity" in evaluation.metrics else {}
    report = {
        "config": evaluation.config(),
        "model": task.model_name,
        "samples": len(records),
        "methods": evaluation.methods,
        "metrics": evaluation.metrics,
        "interval": CI_METHOD,
        "processes": processes.world,
        "seconds": round(time.perf_counter() - began, 1),
        "rows": rows,
        "sanity": {"layers": randomized_layers(task), "curves": curves} if curves else None,
    }
    _write(report, evaluation, curves)
    return report


def _compute(
    task: Task,
    records: Records,
    shards: list[tuple[int, int]],
    evaluation: Evaluation,
    store: ShardStore,
    show_progress: bool,
) -> list[dict]:
    """Per-sample results of ``shards``, every method; completed shards are read from ``store``."""
    results = []
    total = sum(stop - start for start, stop in shards) * len(evaluation.methods)
    bar = tqdm(total=total, desc="evaluating", unit="sample", file=sys.stderr, disable=not show_progress)
    for start, stop in shards:
        stored = {method: store.load(method, start, stop) for method in evaluation.methods}
        pending = [method for method, shard in stored.items() if shard is None]
        bar.update((len(evaluation.methods) - len(pending)) * (stop - start))
        items = {index: task.items(records[index]) for index in range(start, stop)} if pending else {}
        for method in pending:
            stored[method] = []
            for index, sample_items in items.items():
                stored[method].append(_sample_result(task, index, sample_items, method, evaluation))
                bar.update()
            store.save(method, start, stop, stored[method])
        results += [{**row, "method": method} for method, shard in stored.items() for row in shard]
    bar.close()
    return results


def _sample_result(task: Task, index: int, items: list[Item], method: str, evaluation: Evaluation) -> dict:
    """One sample's values, its items' targets side by side."""
    scored = [score_item(task, item, method, evaluation.metrics, evaluation.settings) for item in items]
    values = {
        metric: [v for s in scored for v in s["values"].get(metric, [])] for metric in evaluation.metrics
    }
    result = {"sample": index, "values": values}
    if "sanity" in evaluation.metrics:
        steps = [s["sanity_steps"] for s in scored if s["sanity_steps"]]
        result["sanity_steps"] = (
            [[v for s in steps for v in s[t]] for t in range(len(steps[0]))] if steps else []
        )
    return result


def _write(report: dict, evaluation: Evaluation, curves: dict) -> None:
    output = Path(evaluation.output)
    write_csv(report["rows"], output / "results.csv")
    write_json(report, output / "results.json")
    (output / "results.txt").write_text(
        table_text(report["rows"], evaluation.methods, evaluation.metrics) + "\n"
    )
    save_figure(
        results_figure(report["rows"], evaluation.methods, evaluation.metrics, curves), output / "results.png"
    )
