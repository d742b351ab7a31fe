"""From per-sample results to the table: the mean over all targets of each metric and method, with a
95% percentile-bootstrap confidence interval that resamples samples (images), not targets, since the
targets of one image are not independent."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from mmcam.metrics.registry import METRICS

RESAMPLES = 1000
CONFIDENCE = 0.95
CI_METHOD = f"{CONFIDENCE:.0%} percentile bootstrap over samples ({RESAMPLES} resamples, seed 0)"


def mean_with_interval(per_sample: list[list[float]]) -> dict:
    """Per-sample lists of per-target values (NaN: not applicable) -> ``{"mean", "low", "high",
    "targets", "samples"}``: the pooled mean over targets and its bootstrap interval (None when empty).

    mean = sum_i sum_k v_ik / sum_i n_i; a resample draws samples i with replacement and recomputes it.
    """
    sums = np.array([np.nansum(values) if values else 0.0 for values in per_sample], dtype=np.float64)
    counts = np.array([np.count_nonzero(~np.isnan(values)) for values in per_sample], dtype=np.float64)
    used = counts > 0
    sums, counts = sums[used], counts[used]
    if not len(counts):
        return {"mean": None, "low": None, "high": None, "targets": 0, "samples": 0}
    draws = np.random.default_rng(0).integers(0, len(counts), size=(RESAMPLES, len(counts)))
    resampled = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(resampled, [tail, 100 - tail])
    return {
        "mean": float(sums.sum() / counts.sum()),
        "low": float(low),
        "high": float(high),
        "targets": int(counts.sum()),
        "samples": len(counts),
    }


def summarize(results: dict[str, list[dict]], metrics: list[str]) -> list[dict]:
    """``results[method]``: per-sample records sorted by sample -> one row per (metric, method)."""
    rows = []
    for metric in metrics:
        for method, records in results.items():
            per_sample = [record["values"].get(metric, []) for record in records]
            rows.append({"metric": metric, "method": method, **mean_with_interval(per_sample)})
    return rows


def sanity_curves(results: dict[str, list[dict]]) -> dict[str, list[float]]:
    """Mean rank correlation per randomization step, per method that has the check."""
    curves = {}
    for method, records in results.items():
        steps = [record["sanity_steps"] for record in records if record.get("sanity_steps")]
        if steps:
            stacked = [np.concatenate([sample[t] for sample in steps]) for t in range(len(steps[0]))]
            curves[method] = [float(np.nanmean(step)) for step in stacked]
    return curves


def cell(row: dict) -> str:
    if row["mean"] is None:
        return "n/a"
    return f"{row['mean']:.3f} [{row['low']:.3f}, {row['high']:.3f}]"


def table_text(rows: list[dict], methods: list[str], metrics: list[str]) -> str:
    """The metric x method table as aligned text, each cell 'mean [low, high]'."""
    by_key = {(row["metric"], row["method"]): row for row in rows}
    header = ["metric", *methods]
    lines = [[f"{METRICS[m].label} ({'↓' if METRICS[m].better == 'lower' else '↑'})"] for m in metrics]
    for line, metric in zip(lines, metrics):
        line += [cell(by_key[(metric, method)]) for method in methods]
    widths = [max(len(str(r[c])) for r in [header, *lines]) for c in range(len(header))]
    return "\n".join("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip() for r in [header, *lines])


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["metric", "method", "mean", "low", "high", "targets", "samples"])
        writer.writeheader()
        writer.writerows(rows)


def write_json(report: dict, path: Path) -> None:
    path.write_text(json.dumps(_finite(report), indent=2) + "\n")


def _finite(value):
    """NaN and infinities become null, so the file is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value
