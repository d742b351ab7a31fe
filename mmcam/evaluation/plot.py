"""The evaluation figure: one panel per metric, a bar per method with its confidence interval, and the
sanity check's rank correlation per randomization step."""

from __future__ import annotations

from matplotlib.figure import Figure

from mmcam.metrics.registry import METRICS


def results_figure(
    rows: list[dict], methods: list[str], metrics: list[str], curves: dict[str, list[float]]
) -> Figure:
    panels = len(metrics) + bool(curves)
    columns = min(3, panels)
    lines = -(-panels // columns)
    figure = Figure(figsize=(4.2 * columns, 0.35 * len(methods) * lines + 1.6 * lines))
    axes = figure.subplots(lines, columns, squeeze=False).ravel()
    by_key = {(row["metric"], row["method"]): row for row in rows}
    for axis, metric in zip(axes, metrics):
        cells = [by_key[(metric, method)] for method in methods]
        means = [c["mean"] if c["mean"] is not None else float("nan") for c in cells]
        errors = [
            [m - c["low"] if c["mean"] is not None else 0 for m, c in zip(means, cells)],
            [c["high"] - m if c["mean"] is not None else 0 for m, c in zip(means, cells)],
        ]
        axis.barh(range(len(methods)), means, xerr=errors, color="#4c72b0", ecolor="#222222", capsize=3)
        axis.set_yticks(range(len(methods)), methods, fontsize=8)
        axis.invert_yaxis()
        arrow = "lower is better" if METRICS[metric].better == "lower" else "higher is better"
        axis.set_title(f"{METRICS[metric].label}\n({arrow})", fontsize=9)
    if curves:
        axis = axes[len(metrics)]
        for method, curve in curves.items():
            axis.plot(range(1, len(curve) + 1), curve, marker=".", label=method)
        axis.set_xlabel("layers randomized from the top", fontsize=8)
        axis.set_ylabel("rank correlation", fontsize=8)
        axis.set_title("cascading randomization", fontsize=9)
        axis.legend(fontsize=7)
    for axis in axes[panels:]:
        axis.axis("off")
    figure.tight_layout()
    return figure
