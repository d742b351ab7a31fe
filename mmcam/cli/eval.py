"""``mmcam eval``: a metric x method table with confidence intervals, on the shapes world or a dataset."""

from __future__ import annotations

import argparse
import json
from dataclasses import astuple
from pathlib import Path

from mmcam.cli.choices import (
    ACTION_TARGETS,
    BASELINES,
    DEFAULT_SCENES,
    METRICS,
    PERTURBATIONS,
    SHAPES_SEED,
    TASKS,
)
from mmcam.cli.options import (
    PerturbationOptions,
    add_perturbation_options,
    add_trust_pickle_option,
    comma_separated,
    parsed,
)

DEFAULT_METHODS = ("gradcam", "gradcam++", "scorecam", "eigencam", "layercam", "guided-gradcam", *BASELINES)
ROLLOUT_METHODS = ("gradcam", "hirescam", "perturbation")  # --episodes: Grad-CAM, the RL default, Greydanus


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "eval",
        help="score explanation methods: localization, pointing, faithfulness, sanity",
        description="Score explanation methods against ground truth and the model itself: a metric x method "
        "table (mean and 95% bootstrap interval over samples), written as CSV, JSON and a figure. "
        "Resumable: results are kept per shard of samples under -o. Under torchrun --nproc_per_node=N, "
        "the shards are split across the processes and merged on rank 0.",
    )
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument(
        "--metric",
        type=comma_separated,
        default=list(METRICS),
        metavar="M,...",
        help=f"comma-separated, from: {', '.join(METRICS)} (default: all)",
    )
    parser.add_argument(
        "--methods",
        type=comma_separated,
        default=None,
        metavar="M,...",
        help=f"CAM methods and the baselines {', '.join(BASELINES)} (default: {','.join(DEFAULT_METHODS)}; "
        f"with --episodes: {','.join(ROLLOUT_METHODS)})",
    )
    parser.add_argument(
        "--model",
        metavar="SPEC",
        help="the model, as the task's own command takes it (default: the bundled one: shapes; rl: strong; "
        "with --episodes, comma-separated agents: strong,weak)",
    )
    parser.add_argument(
        "--episodes",
        type=int,
        metavar="N",
        help="rl: play N episodes of each agent and report, per agent, method and action target, the share "
        "of steps whose map is empty and the map mass on goal + agent and on the distractors (all steps and "
        "non-empty ones), with 95%% bootstrap intervals over episodes",
    )
    parser.add_argument(
        "--action-targets",
        type=comma_separated,
        default=["log-prob"],
        metavar="T,...",
        help=f"with --episodes: what the chosen action's map explains, from {', '.join(ACTION_TARGETS)} "
        "(default log-prob)",
    )
    parser.add_argument("--layer", default=None, metavar="L", help="layer to explain; default per model")
    parser.add_argument(
        "--dataset",
        metavar="PATH",
        help="a datasets.Dataset saved with save_to_disk, in the shapes schema (default: fresh shapes scenes)",
    )
    parser.add_argument(
        "--limit", type=int, metavar="N", help=f"first N samples (default: {DEFAULT_SCENES} scenes; all rows)"
    )
    parser.add_argument("--seed", type=int, default=SHAPES_SEED, help="shapes-world scenes' seed")
    parser.add_argument("--shard-size", type=int, default=20, metavar="N", help="samples per stored shard")
    parser.add_argument("--steps", type=int, default=16, help="deletion/insertion steps (default 16)")
    parser.add_argument(
        "--baseline",
        default="blur",
        choices=PERTURBATIONS,
        help="what the pixels deletion, insertion and the occlusion metric remove become (default blur; the "
        "occlusion and RISE methods' is --fill)",
    )
    parser.add_argument(
        "--patch",
        type=int,
        default=16,
        help="the cell side in px of deletion-grid, insertion-grid and the occlusion metric's patches (default 16)",
    )
    parser.add_argument(
        "--stride", type=int, default=8, help="the occlusion metric's stride in px (default 8)"
    )
    parser.add_argument(
        "--tolerance",
        type=int,
        default=0,
        help="the strict pointing game's tolerance in px (default 0; pointing-tolerant: 15 px at 224, scaled)",
    )
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    add_perturbation_options(parser)
    add_trust_pickle_option(parser)
    parser.add_argument("-o", "--output", default="mmcam-eval", metavar="DIR", help="results folder")
    parser.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    parser.set_defaults(run=run)


def run(arguments: argparse.Namespace) -> int:
    from mmcam.cli.policy import perturbation_settings
    from mmcam.evaluation.distributed import distributed
    from mmcam.evaluation.runner import Evaluation, run_evaluation
    from mmcam.evaluation.summary import table_text
    from mmcam.metrics.contract import Settings

    for option in ("steps", "patch", "stride"):
        if getattr(arguments, option) < 1:
            raise ValueError(f"--{option} must be at least 1")
    perturbation = parsed(PerturbationOptions, arguments)
    if arguments.episodes is not None:
        if any(value is not None for value in astuple(perturbation)):
            raise ValueError(
                "--episodes explains with each method's defaults: drop the occlusion and RISE options"
            )
        return run_rollouts(arguments)
    methods = arguments.methods or list(DEFAULT_METHODS)
    evaluation = Evaluation(
        task=arguments.task,
        methods=methods,
        metrics=arguments.metric,
        output=Path(arguments.output),
        model=arguments.model,
        layer=arguments.layer,
        dataset=arguments.dataset,
        limit=arguments.limit,
        seed=arguments.seed,
        shard_size=arguments.shard_size,
        trust_pickle=arguments.trust_pickle,
        method_options=perturbation_settings(perturbation, [m for m in methods if m not in BASELINES]),
        settings=Settings(
            steps=arguments.steps,
            baseline=arguments.baseline,
            patch=arguments.patch,
            stride=arguments.stride,
            tolerance=arguments.tolerance,
        ),
    )
    with distributed(arguments.device) as processes:
        report = run_evaluation(evaluation, processes)
    if report is None:
        return 0
    if arguments.json:
        print(json.dumps(json.loads((evaluation.output / "results.json").read_text())))
    else:
        print(table_text(report["rows"], evaluation.methods, evaluation.metrics))
        print(
            f"{report['samples']} samples, {report['interval']}; {report['seconds']} s; written to {evaluation.output}/"
        )
    return 0


def run_rollouts(arguments: argparse.Namespace) -> int:
    """``--episodes``: the RL agents' rollout table, printed and written as JSON and text under -o."""
    from mmcam.adapters.rl import SHAPES_REACH
    from mmcam.engine.devices import chosen_device
    from mmcam.evaluation.rollouts import evaluate_rollouts, rollouts_text

    if arguments.task != "rl":
        raise ValueError("--episodes plays RL episodes: use it with --task rl")
    if arguments.episodes < 1:
        raise ValueError("--episodes must be at least 1")
    unknown = [target for target in arguments.action_targets if target not in ACTION_TARGETS]
    if unknown:
        raise ValueError(f"unknown action target {unknown[0]!r}; use one of {', '.join(ACTION_TARGETS)}")
    methods = arguments.methods or list(ROLLOUT_METHODS)
    if set(methods) & set(BASELINES):
        raise ValueError(f"--episodes explains with CAM methods; drop the baselines {', '.join(BASELINES)}")
    rows = evaluate_rollouts(
        comma_separated(arguments.model or "strong,weak"),
        methods,
        arguments.action_targets,
        arguments.episodes,
        arguments.seed,
        SHAPES_REACH,
        chosen_device(arguments.device),
        arguments.trust_pickle,
    )
    output = Path(arguments.output)
    output.mkdir(parents=True, exist_ok=True)
    table = rollouts_text(rows)
    (output / "rollouts.json").write_text(
        json.dumps({"episodes": arguments.episodes, "rows": rows}, indent=1)
    )
    (output / "rollouts.txt").write_text(table + "\n")
    print(json.dumps(rows) if arguments.json else table)
    if not arguments.json:
        print(
            f"{arguments.episodes} episodes per agent from seed {arguments.seed}, 95% bootstrap over episodes; "
            f"written to {output}/"
        )
    return 0
