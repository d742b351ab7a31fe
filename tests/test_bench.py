"""The benchmark runs and reports every tool side by side (its figures are read, not asserted: no timed tests)."""

import torch

from mmcam.bench import caption_cases, classification_cases, measure, ratio_table, vqa_cases
from mmcam.zoo import ANSWERS


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


def _all_targets_rows(name: str, count: int) -> set[tuple[str, str]]:
    one = {(f"1 {name}", t) for t in ("mmcam", "pytorch-grad-cam", "captum")}
    tools = (
        "mmcam",
        f"mmcam, a call per {name}",
        f"pytorch-grad-cam, a call per {name}",
        f"captum, a call per {name}",
    )
    return {("forward only", "torch")} | one | {(f"all {count} {name}s", t) for t in tools}


def test_caption_suite_times_one_word_all_words_and_a_call_per_word():
    cpu = torch.device("cpu")
    cases = caption_cases(cpu)
    _check(ratio_table(measure("caption", cases, 1, cpu, 1, progress=False)), _all_targets_rows("word", 12))


def test_vqa_suite_times_one_answer_every_answer_and_a_call_per_answer():
    cpu = torch.device("cpu")
    cases = vqa_cases(cpu)
    _check(
        ratio_table(measure("vqa", cases, 1, cpu, 1, progress=False)),
        _all_targets_rows("answer", len(ANSWERS)),
    )
