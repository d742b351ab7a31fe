"""``mmcam rl``: where an RL agent looked to choose each action, over whole episodes."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass

from mmcam.cli.choices import ACTION_TARGETS
from mmcam.cli.options import (
    ConceptOptions,
    ExplainOptions,
    PerturbationOptions,
    add_explain_options,
    add_perturbation_options,
    comma_separated,
    parsed,
)


@dataclass(frozen=True)
class RlOptions:
    """``mmcam rl``'s options, parsed once."""

    env: str
    policy: str
    episodes: int
    seed: int
    max_steps: int
    frame_stack: int | None
    target: str | None
    compare: list[str]
    all_actions: bool
    value: bool
    stochastic: bool
    video: str
    concepts: bool
    explain: ExplainOptions
    perturbation: PerturbationOptions


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "rl",
        help="explain an RL agent's actions step by step over episodes",
        description="Run a policy for N episodes and explain the action it chose at every step (one heatmap "
        "per step, plus every action and the value if asked). Writes one animation per episode and, where "
        "the environment gives object masks (ShapesReach does), a plot of the share of each map on each "
        "object over time, and prints a summary table (or one JSON record per step with --json).",
    )
    parser.add_argument(
        "--env",
        default="mmcam/ShapesReach-v0",
        metavar="ID",
        help="a gymnasium environment id (default mmcam/ShapesReach-v0); Atari ids (ALE/Pong-v5, ...) get "
        "the usual preprocessing and a 4-frame stack",
    )
    parser.add_argument(
        "--policy",
        default="strong",
        metavar="SPEC",
        help="strong or weak (the bundled ShapesReach agents, default strong), sb3:ALGO:PATH (a saved "
        "stable-baselines3 model; trusted files only, its loader unpickles) or random:ALGO (randomly "
        "initialized CnnPolicy); ALGO is ppo, a2c or dqn",
    )
    parser.add_argument("--episodes", type=int, default=3, metavar="N", help="episodes to run (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="episode i starts from reset(seed=SEED + i)")
    parser.add_argument(
        "--max-steps", type=int, default=1000, metavar="T", help="cut an episode after T steps (default 1000)"
    )
    parser.add_argument("--frame-stack", type=int, default=None, metavar="K", help="stack K frames")
    parser.add_argument(
        "--target",
        choices=ACTION_TARGETS,
        default=None,
        help="what the chosen action's map explains: its log-probability (the default), its logit (a DQN's "
        "Q-value), its advantage over the mean logit (the default with --concepts: it does not saturate), or "
        "its margin over the best other action",
    )
    parser.add_argument(
        "--compare",
        type=comma_separated,
        default=[],
        metavar="M,...",
        help="also explain the chosen actions of the same episodes with these methods (e.g. perturbation, "
        "gradcam): their maps beside the main one in the report, their shares in the table and the JSON",
    )
    parser.add_argument("--all-actions", action="store_true", help="also explain every action at every step")
    parser.add_argument("--value", action="store_true", help="also explain the value estimate")
    parser.add_argument(
        "--stochastic", action="store_true", help="sample actions from the policy instead of the argmax"
    )
    parser.add_argument(
        "--video", choices=("gif", "mp4"), default="gif", help="animation format (default gif)"
    )
    parser.add_argument(
        "--concepts",
        action="store_true",
        help="name the units behind each chosen action by the objects they detect (agent, goal, ...; "
        "named on 20 episodes of the agent's own play, from the environment's object masks)",
    )
    add_explain_options(parser)
    add_perturbation_options(parser)
    parser.set_defaults(run=run)


def _why_actions(rollout, table) -> list[str]:
    """One sentence per action the agent took, from its chosen-action unit contributions averaged over the
    steps where it chose that action, with the mean drop of its score at those steps when the sentence's
    units are zeroed (``concepts.ablation.mean_drops``)."""
    import torch

    from mmcam.concepts.ablation import mean_drops
    from mmcam.concepts.sentences import ablation_text, describe

    contributions = torch.cat([episode.explanation.contributions[:, 0] for episode in rollout.episodes])
    steps = [(e, t) for e, episode in enumerate(rollout.episodes) for t in range(episode.steps)]
    actions = torch.tensor([rollout.episodes[e].trajectory.actions[t] for e, t in steps])
    kind = (rollout.episodes[0].explanation.kinds or ["score"])[0]
    sentences = []
    for a in actions.unique().tolist():
        chosen = (actions == a).nonzero()[:, 0].tolist()
        mean = contributions[chosen].mean(0)
        replays = [rollout.replay(*steps[i]) for i in chosen]
        said = ablation_text(mean_drops(rollout.explainer, replays, mean, table), kind, "steps")
        text = describe(rollout.action_names[a], mean, table, verb="chose").text
        sentences.append(f"{text} {said}" if said else text)
    return sentences


def rollout_probe(policy, venv, episodes: int = 20, seed: int = 50_000):
    """The observations of ``episodes`` of the policy's own play (from ``reset`` with seeds ``seed + i``),
    with the object masks the environment gives in ``info`` as concepts (ShapesReach: agent, goal,
    distractors): the states the agent meets, to name its units with."""
    import numpy as np
    import torch

    from mmcam.adapters.rl import play
    from mmcam.adapters.rl.environments import env_name
    from mmcam.concepts.probes import array_probe

    trajectories = [play(policy, venv, seed + i) for i in range(episodes)]
    if any(t.masks is None for t in trajectories):
        raise ValueError(
            f"{env_name(venv)} gives no object masks in info['masks'], so its units cannot be named "
            "(ShapesReach gives them)"
        )
    names = list(trajectories[0].masks)
    observations = np.concatenate([t.observations for t in trajectories])
    masks = np.concatenate([np.stack([t.masks[n] for n in names], axis=1) for t in trajectories])
    return array_probe(
        f"{env_name(venv)}-rollouts-{episodes}-{seed}", observations, torch.from_numpy(masks), names
    )


def run(arguments: argparse.Namespace) -> int:
    return rl(parsed(RlOptions, arguments))


def rl(options: RlOptions) -> int:
    """Play the episodes and explain the agent's actions, as ``options`` ask."""
    from mmcam.adapters.rl import explain_episodes, explain_trajectories, make_env
    from mmcam.adapters.rl.rollouts import ACTION_TARGET, SENTENCE_TARGET
    from mmcam.cli.concepts import add_concepts, concept_table_of, replayed_drops
    from mmcam.cli.output import output_folder
    from mmcam.cli.policy import chosen_method, configured, perturbation_settings
    from mmcam.cli.records import rollout_records, rollout_table, saved_maps
    from mmcam.engine.devices import chosen_device
    from mmcam.loading import load_policy
    from mmcam.report import rl_views, write_report
    from mmcam.viz.figures import save_figure
    from mmcam.viz.rl import attention_figure, episode_images, save_animation

    explain = options.explain
    device = chosen_device(explain.device)
    venv = make_env(options.env, options.frame_stack)
    policy = load_policy(options.policy, venv, explain.trust_pickle)
    policy.model.to(device)
    method = chosen_method(explain.method, options.concepts, policy)
    target = options.target or (SENTENCE_TARGET if options.concepts else ACTION_TARGET)
    settings = perturbation_settings(options.perturbation, [method, *options.compare])
    table = None
    if options.concepts:
        concepts = ConceptOptions(concepts=True, probe_dataset=None)
        table = concept_table_of(concepts, method, policy.subject(explain.layer), rollout_probe(policy, venv))
    rollout = explain_episodes(
        policy,
        venv,
        episodes=options.episodes,
        seed=options.seed,
        method=configured(method, settings),
        layer=explain.layer,
        all_actions=options.all_actions,
        value=options.value,
        deterministic=not options.stochastic,
        max_steps=options.max_steps,
        target=target,
    )
    trajectories = [episode.trajectory for episode in rollout.episodes]
    compared = {
        other: explain_trajectories(
            policy,
            trajectories,
            rollout.action_names,
            rollout.env,
            configured(other, settings),
            explain.layer,
            target=target,
        )
        for other in options.compare
        if other != rollout.method
    }
    output = output_folder(explain.output, explain.overwrite)
    animations = []
    for index, episode in enumerate(rollout.episodes):
        trajectory = episode.trajectory
        captions = [
            f"{t}: {rollout.action_names[a]}"
            + ("" if trajectory.values is None else f"  V {trajectory.values[t]:+.2f}")
            + f"  r {trajectory.rewards[t]:+.2f}"
            for t, a in enumerate(trajectory.actions)
        ]
        images = episode_images(episode.frames, episode.explanation.maps[:, 0], captions)
        animations.append(save_animation(images, output / f"episode-{index}.{options.video}"))
        if explain.save_maps:
            saved_maps(episode.explanation, output / f"episode-{index}-maps.safetensors")
    plot = None
    if rollout.episodes[0].attention:
        plot = output / "attention.png"
        title = f"{rollout.policy} on {rollout.env}: share of the chosen action's map on each object"
        shares = [episode.attention for episode in rollout.episodes]
        save_figure(attention_figure(shares, rollout.areas(), title), plot)
    sentences = _why_actions(rollout, table) if table is not None else []
    report = write_report(
        output / "report.html",
        rl_views(rollout, sentences, compared),
        f"mmcam rl: {rollout.policy} on {rollout.env}",
    )
    print(f"report: open {report.resolve()}", file=sys.stderr if explain.json else sys.stdout)

    if explain.json:
        for record in rollout_records(rollout, compared):
            if table is not None:
                steps = rollout.episodes[record["episode"]].explanation.contributions[record["step"]]
                decided = [True] + [None] * (len(record["targets"]) - 1)
                replayed = rollout.replay(record["episode"], record["step"])
                ablate = replayed_drops(rollout.explainer, *replayed, table)
                add_concepts(record, steps, table, "chose", decided, ablate)
            print(json.dumps({**record, "animation": str(animations[record["episode"]])}))
        return 0
    print(f"{rollout.policy} on {rollout.env} ({rollout.method} at {rollout.layer}):")
    print(rollout_table(rollout))
    for method, other in compared.items():
        print(f"\ncompared, the same episodes explained by {method}:")
        print(rollout_table(other))
    if sentences:
        print("\n".join(sentences))
    print(f"animations: {', '.join(str(path) for path in animations)}")
    if plot:
        print(f"attention over time: {plot}")
    return 0
