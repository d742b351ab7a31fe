"""The benchmark runs and reports every tool side by side (its figures are read, not asserted: no timed tests)."""

import torch

from mmcam.bench import classification_cases, measure, ratio_table


def _check(rows, cases):
    assert {(row["case"], row["tool"]) for row in rows} == cases
    for row in rows:
        assert row["seconds"] > 0 and row["share_of_forward_throughput"] > 0
        if row["tool"] == "mmcam":
            assert row["mmcam_speedup"] == 1.0


def test_classification_suite_reports_mmcam_and_peers():
    cpu = torch.device("cpu")
    rows = ratio_table(measure("classify", classification_cases(cpu, 1, 2, 32), 1, cpu, 1, progress=False))
    tools = ("mmcam", "pytorch-grad-cam", "captum")
    _check(
        rows,
        {("forward only", "torch")} | {(c, t) for c in ("1 target/image", "2 targets/image") for t in tools},
    )
