"""mmcam eval on the bundled classifier: outputs, resuming, errors, and 1 vs 2 processes (gloo)."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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


FIXTURES = Path(__file__).parent / "fixtures" / "models"


def _command_maps(task_name: str, spec: str, record: dict) -> list:
    """Per item of ``record``, the maps its targets get from the task's own command path (the adapter's
    ``explain_*`` with its default explainer): caption words (all of them), the predicted answer of each
    single-object question, each present class."""
    from mmcam.adapters.captioning import explain_caption
    from mmcam.adapters.vqa import explain_answers
    from mmcam.evaluation.grounding import is_single_object
    from mmcam.evaluation.tasks import object_classes
    from mmcam.loading import load_captioner, load_classifier, load_vqa

    if task_name == "caption":
        return [explain_caption(load_captioner(spec), record["image"]).explanation.maps[0]]
    if task_name == "vqa":
        vqa = load_vqa(spec)
        asked = zip(record["questions"], record["question_types"], record["answers"])
        return [
            explain_answers(vqa, record["image"], question).explanation.maps[0][:1]
            for question, kind, answer in asked
            if is_single_object(kind, answer)
        ]
    classifier = load_classifier(spec)
    present = list(dict.fromkeys(classifier.class_names.index(name) for name in object_classes(record)))
    pixels = classifier.preprocess([record["image"]])
    return [classifier.explainer()(pixels, [present]).maps[0]]


@pytest.mark.parametrize(
    ("task_name", "fixture"),
    [
        ("caption", "llava-shapes"),
        ("vqa", "vilt-vqa-shapes"),
        ("vqa", "blip-vqa-shapes"),
        ("vqa", "llava-shapes"),
        ("classify", "vit-shapes"),
    ],
)
def test_eval_gives_the_maps_the_task_command_gives(task_name, fixture):
    """eval explains through the adapter's own explainer, layout included: on the chat fixture (LLaVA packs
    its image tokens into the sequence) the maps of the caption words eval scores are those ``mmcam caption``
    computes for the same words; likewise ViLT's answers, the generated answers of BLIP and LLaVA (their
    teacher-forced log-probability) and ViT's classes, at each model's default layer and method."""
    from mmcam.evaluation.data import shapes_records
    from mmcam.evaluation.tasks import build_task
    from mmcam.loading import load_captioner, load_classifier, load_vqa

    spec = str(FIXTURES / fixture)
    default = {"caption": load_captioner, "vqa": load_vqa, "classify": load_classifier}[task_name](
        spec
    ).method
    task = build_task(task_name, spec)
    compared = 0
    for record in shapes_records(3, seed=41_000):
        for item, expected in zip(task.items(record), _command_maps(task_name, spec, record)):
            evaluated = task.explainer(default)(item.inputs, item.targets).maps[0]
            if task_name == "caption":  # eval scores the color, shape and size words: pick them by position
                expected = expected[[target.word_indices[0] for target in item.targets]]
            torch.testing.assert_close(evaluated, expected, rtol=1e-4, atol=1e-5)
            compared += len(item.targets)
    assert compared >= 4


SCENE = [
    {"color": "red", "shape": "circle", "size": "small"},
    {"color": "blue", "shape": "square", "size": "large"},
    {"color": "red", "shape": "triangle", "size": "large"},
]


def test_phrases_are_matched_to_objects_by_their_attributes_not_their_position():
    from mmcam.evaluation.grounding import word_objects

    def about(caption):
        return {
            (g.position, caption.split()[g.position]): (g.about, g.described)
            for g in word_objects(caption.split(), SCENE)
        }

    # the blue square named first, the small red circle second: each word goes to the objects with its
    # attribute ("large" and "red" are shared: either object counts), whatever the phrases' order
    assert about("a large blue square to the left of a small red circle") == {
        (1, "large"): ([1, 2], True),
        (2, "blue"): ([1], True),
        (3, "square"): ([1], True),
        (9, "small"): ([0], True),
        (10, "red"): ([0, 2], True),
        (11, "circle"): ([0], True),
    }
    # a phrase no object matches is hallucinated: its words are about nothing, not about a neighbour
    found = about("a small red circle to the left of a green triangle")
    assert found[(9, "green")] == ([], False) and found[(10, "triangle")] == ([], False)
    assert about("a large red circle")[(1, "large")] == ([], False)  # the red circle is small


def test_an_answer_sharing_its_attribute_with_other_objects_is_about_all_of_them():
    from mmcam.evaluation.grounding import answer_objects

    assert answer_objects("color", "red", [0], SCENE) == [0, 2]
    assert answer_objects("shape", "square", [1], SCENE) == [1]
    assert answer_objects("exists", "yes", [2], SCENE) == [2]


def test_the_fields_pointing_and_reliance_and_grid_deletion_are_offered_by_eval(tmp_path, capsys):
    """The new measures through ``mmcam eval``: Grad-CAM's tolerant pointing is at least its strict one,
    the uniform map's peak ties over the whole image (its reliance hit is the relied-on object's share of
    the image), and the reliance and grid figures are computed."""
    metrics = (
        "pointing,pointing-tolerant,hallucinated,reliance-peak,reliance-mass,reliance-rank,deletion-grid"
    )
    out = tmp_path / "fields"
    argv = ["eval", "--task", "classify", "--methods", "gradcam,uniform", "--metric", metrics, "--limit", "3"]
    assert main([*argv, "-o", str(out), "--steps", "4"]) == 0
    rows = {(row["metric"], row["method"]): row for row in rows_of(out)}
    assert rows[("pointing-tolerant", "gradcam")]["mean"] >= rows[("pointing", "gradcam")]["mean"]
    assert rows[("hallucinated", "gradcam")]["mean"] == 0.0
    assert rows[("reliance-peak", "uniform")]["mean"] < 0.5
    assert -1 - 1e-6 <= rows[("reliance-rank", "gradcam")]["mean"] <= 1 + 1e-6
    assert 0 < rows[("deletion-grid", "gradcam")]["mean"] < 1


GENERATIVE_METRICS = (
    "pointing,pointing-tolerant,pointing-unambiguous,pointing-tolerant-unambiguous,hallucinated,"
    "reliance-peak,reliance-mass,reliance-rank,deletion-grid,insertion-grid"
)


@pytest.mark.parametrize("fixture", ["blip-vqa-shapes", "llava-shapes"])
def test_eval_scores_generated_answers_by_their_log_probability(fixture, tmp_path, capsys):
    """A model that generates its answers (BLIP's answer decoder, LLaVA's reply) is scored by eval: the
    target is the greedy answer's teacher-forced log-probability (its probability, read by the curves, is
    its exponential), and every grid, reliance and pointing metric gets a value in range for the default
    method, Grad-CAM and occlusion. On the trained fixtures the default's and occlusion's peaks lie near
    the asked object (tolerant pointing) far more often than the uniform map's, and deleting their cells
    first lowers the answer faster than the uniform map's random order (measured on 10 scenes:
    docs/evaluation.md)."""
    from mmcam.evaluation.data import shapes_records
    from mmcam.evaluation.tasks import build_task
    from mmcam.loading import load_vqa

    spec = str(FIXTURES / fixture)
    default = load_vqa(spec).method
    task = build_task("vqa", spec)
    item = task.items(shapes_records(1, seed=41_000)[0])[0]
    explanation = task.explainer("occlusion")(item.inputs, item.targets)
    with torch.no_grad():
        probability = item.probabilities(task.forward(task.model, item.inputs))
    assert float(explanation.scores[0, 0]) < 0  # a log-probability
    torch.testing.assert_close(probability, explanation.scores.exp(), rtol=1e-4, atol=1e-6)

    argv = ["eval", "--task", "vqa", "--model", spec, "--metric", GENERATIVE_METRICS, "--limit", "4"]
    methods = f"{default},gradcam,occlusion,uniform"
    assert main([*argv, "--methods", methods, "--steps", "8", "-o", str(tmp_path), "--json"]) == 0
    rows = {(row["metric"], row["method"]): row for row in json.loads(capsys.readouterr().out)["rows"]}
    assert set(rows) == {(m, method) for m in GENERATIVE_METRICS.split(",") for method in methods.split(",")}
    for (metric, _), row in rows.items():
        low = -1 if metric == "reliance-rank" else 0
        assert row["samples"] == 4 and low - 1e-6 <= row["mean"] <= 1 + 1e-6, (metric, row)
    assert rows[("hallucinated", "occlusion")]["mean"] == 0.0  # an answer is about the asked object
    for method in (default, "occlusion"):
        tolerant = rows[("pointing-tolerant", method)]["mean"]
        assert tolerant > rows[("pointing-tolerant", "uniform")]["mean"] + 0.3, (method, tolerant)
        deletion = rows[("deletion-grid", method)]["mean"]
        assert deletion < rows[("deletion-grid", "uniform")]["mean"] - 0.1, (method, deletion)
