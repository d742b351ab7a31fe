"""mmcam eval on the bundled classifier: outputs, resuming, errors, and 1 vs 2 processes (gloo)."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmcam.cli import main

CHEAP = [
    "--task",
    "classify",
    "--methods",
    "gradcam,uniform",
    "--metric",
    "localization,pointing,energy,deletion",
]
SMALL = [*CHEAP, "--limit", "4", "--shard-size", "2", "--steps", "4"]


def rows_of(folder: Path) -> list[dict]:
    return json.loads((folder / "results.json").read_text())["rows"]


def assert_same(first, second):
    """Equal up to float32 rounding: CPU convolutions may sum in another order across threads or runs."""
    assert (
        json.loads(json.dumps(first), parse_float=lambda text: pytest.approx(float(text), rel=1e-5)) == second
    )


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval")
    assert main(["eval", *SMALL, "-o", str(folder)]) == 0
    return folder


def test_writes_table_csv_json_and_figure(evaluated, capsys):
    with open(evaluated / "results.csv") as handle:
        table = list(csv.DictReader(handle))
    assert {(row["metric"], row["method"]) for row in table} == {
        (metric, method)
        for metric in ("localization", "pointing", "energy", "deletion")
        for method in ("gradcam", "uniform")
    }
    report = json.loads((evaluated / "results.json").read_text())
    assert report["samples"] == 4 and "bootstrap" in report["interval"]
    for row in report["rows"]:
        assert row["low"] <= row["mean"] <= row["high"] and row["samples"] == 4
    by_key = {(row["metric"], row["method"]): row["mean"] for row in report["rows"]}
    assert by_key["pointing", "gradcam"] > by_key["pointing", "uniform"]
    assert by_key["deletion", "gradcam"] < by_key["deletion", "uniform"]
    assert (evaluated / "results.png").stat().st_size > 0
    assert sorted(p.name for p in (evaluated / "shards" / "gradcam").iterdir()) == [
        "000000-000002.json",
        "000002-000004.json",
    ]


def test_resume_reads_completed_shards_and_computes_the_rest(evaluated, capsys):
    kept = evaluated / "shards" / "gradcam" / "000000-000002.json"
    removed = evaluated / "shards" / "uniform" / "000002-000004.json"
    stamp, before = kept.stat().st_mtime_ns, rows_of(evaluated)
    removed.unlink()
    assert main(["eval", *SMALL, "-o", str(evaluated), "--json"]) == 0
    assert kept.stat().st_mtime_ns == stamp and removed.exists()
    assert_same(rows_of(evaluated), before)
    assert json.loads(capsys.readouterr().out)["rows"] == rows_of(evaluated)


def test_other_settings_in_the_same_folder_are_refused(evaluated, capsys):
    assert main(["eval", *SMALL, "--steps", "8", "-o", str(evaluated)]) == 2
    assert "mmcam: error:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--metric", "speed"], "unknown metric"),
        (["--methods", "gradcam,nope"], "unknown method"),
        (["--limit", "0"], "--limit"),
        (["--dataset", "/nonexistent"], "save_to_disk"),
    ],
)
def test_bad_input_is_one_clear_error(tmp_path, capsys, option, message):
    assert main(["eval", *SMALL, *option, "-o", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("mmcam: error:") and message in error


def test_dataset_in_the_shapes_schema(evaluated, tmp_path, capsys):
    from mmcam.zoo import shapes_dataset

    shapes_dataset(2, seed=30_000).save_to_disk(tmp_path / "scenes")
    assert main(["eval", *SMALL, "--dataset", str(tmp_path / "scenes"), "-o", str(tmp_path / "out")]) == 0
    assert json.loads((tmp_path / "out" / "results.json").read_text())["samples"] == 2
    shard = Path("shards", "gradcam", "000000-000002.json")
    assert_same(
        json.loads((tmp_path / "out" / shard).read_text()), json.loads((evaluated / shard).read_text())
    )


def test_two_processes_give_the_same_table(evaluated, tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += ["-m", "mmcam", "eval", *SMALL, "--device", "cpu", "-o", str(tmp_path)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300, env=environment)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((tmp_path / "results.json").read_text())["processes"] == 2
    assert_same(rows_of(tmp_path), rows_of(evaluated))


def test_rl_scores_the_bundled_agents_chosen_action(tmp_path, capsys):
    options = ["--task", "rl", "--limit", "2", "--methods", "gradcam,center", "--metric", "pointing,energy"]
    assert main(["eval", *options, "--json", "-o", str(tmp_path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == "shapes-reach-strong" and report["config"]["dataset"] == "reach@30000"
    assert all(row["targets"] == 2 for row in report["rows"])  # one chosen action per state


def test_rl_sanity_flags_perturbation_saliency_and_passes_hirescam(tmp_path, capsys):
    """Cascading randomization of the strong agent (docs/evaluation.md's sanity table): HiResCAM's maps lose
    their rank correlation with the trained agent's, perturbation saliency's barely change."""
    options = ["--task", "rl", "--limit", "20", "--methods", "hirescam,perturbation", "--metric", "sanity"]
    assert main(["eval", *options, "--json", "-o", str(tmp_path)]) == 0
    report = json.loads(capsys.readouterr().out)
    after_all = {row["method"]: row["mean"] for row in report["rows"] if row["metric"] == "sanity"}
    print(after_all)
    assert after_all["hirescam"] < 0.2 and after_all["perturbation"] > 0.6


def test_units_a_sentence_cites_carry_the_score_and_random_ones_do_not(tmp_path, monkeypatch, capsys):
    """The bundled classifier's sentences (Grad-CAM's top named units): zeroing the cited units drops the
    class logit far more than zeroing as many random units; a method without channel weights has no
    sentence to test (n/a)."""
    monkeypatch.setenv("MMCAM_CACHE", str(tmp_path / "cache"))
    options = ["--task", "classify", "--limit", "8", "--methods", "gradcam,hirescam"]
    assert (
        main(["eval", *options, "--metric", "cited-units,random-units", "--json", "-o", str(tmp_path)]) == 0
    )
    rows = {(row["metric"], row["method"]): row for row in json.loads(capsys.readouterr().out)["rows"]}
    cited, drawn = rows[("cited-units", "gradcam")], rows[("random-units", "gradcam")]
    print(cited["mean"], drawn["mean"])
    assert cited["low"] > drawn["high"] and cited["mean"] > 5 * abs(drawn["mean"])
    assert rows[("cited-units", "hirescam")]["mean"] is None


def test_smooth_and_efficient_mprt_see_the_classifier_randomized(tmp_path, capsys):
    """Smooth MPRT (noise-averaged maps) and efficient MPRT (histogram entropy) against the fully randomized
    bundled classifier: Grad-CAM's maps decorrelate and grow more complex; a model-free baseline has no
    value."""
    options = ["--task", "classify", "--limit", "3", "--methods", "gradcam,center"]
    assert (
        main(["eval", *options, "--metric", "sanity-smooth,sanity-efficient", "--json", "-o", str(tmp_path)])
        == 0
    )
    rows = {
        (row["metric"], row["method"]): row["mean"] for row in json.loads(capsys.readouterr().out)["rows"]
    }
    print(rows)
    assert rows[("sanity-smooth", "gradcam")] < 0.3 and rows[("sanity-efficient", "gradcam")] > 0.3
    assert rows[("sanity-smooth", "center")] is None and rows[("sanity-efficient", "center")] is None
