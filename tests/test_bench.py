"""The benchmark runs and reports every tool side by side (its figures are read, not asserted: no timed tests)."""

from mmcam.bench import ratio_table, run_classification_bench


def test_bench_reports_mmcam_and_peers_with_ratios():
    rows = ratio_table(run_classification_bench(batch=1, targets=2, repeats=1, size=32, progress=False))
    cases = {(row["case"], row["tool"]) for row in rows}
    for case in ("1 target/image", "2 targets/image"):
        assert {(case, "mmcam"), (case, "pytorch-grad-cam"), (case, "captum")} <= cases
    for row in rows:
        assert row["seconds"] > 0 and row["share_of_forward_throughput"] > 0
        if row["tool"] == "mmcam":
            assert row["mmcam_speedup"] == 1.0
