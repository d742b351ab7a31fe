"""Explained RL rollouts over many episodes: how often the chosen action's map is empty, and how much of
its mass lies on the agent and the goal (what the action depends on) and on the distractors, with 95%
percentile-bootstrap intervals that resample episodes (the steps of one episode are not independent)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from mmcam.adapters.rl.rollouts import Rollout
from mmcam.evaluation.summary import mean_with_interval


def _on_goal_and_agent(episode) -> Tensor:
    return episode.attention["goal"] + episode.attention["agent"]


def _non_empty(share: Callable) -> Callable:
    """A per-step share, NaN on the steps whose map is empty (left out of its mean)."""
    return lambda episode: torch.where(episode.empty, math.nan, share(episode))


# The quantities of ``rollout_rows``: name -> the per-step values of one episode (T,).
QUANTITIES: dict[str, Callable] = {
    # share of steps whose chosen-action map is zero everywhere
    "empty": lambda episode: episode.empty.float(),
    # share of the map's mass on the goal and the agent, all steps (an empty map counts 0)
    "goal+agent": _on_goal_and_agent,
    "goal+agent, non-empty": _non_empty(_on_goal_and_agent),
    # share of the map's mass on the distractors
    "distractors": lambda episode: episode.attention["distractors"],
    "distractors, non-empty": _non_empty(lambda episode: episode.attention["distractors"]),
    # share of the image the goal and the agent cover: what a uniform map would put there
    "goal+agent area": lambda episode: episode.areas["goal"] + episode.areas["agent"],
}


def _per_episode(rollout: Rollout, name: str) -> list[list[float]]:
    """Per episode, the per-step values of the quantity ``name`` (NaN where it does not apply)."""
    return [QUANTITIES[name](episode).tolist() for episode in rollout.episodes]


def rollout_rows(rollout: Rollout) -> list[dict]:
    """One row per quantity of ``QUANTITIES`` (ShapesReach's masks; the empty share for any environment):
    ``{"quantity", "mean", "low", "high", "targets" (steps), "samples" (episodes)}``."""
    names = list(QUANTITIES) if rollout.mask_names() else ["empty"]
    return [{"quantity": name, **mean_with_interval(_per_episode(rollout, name))} for name in names]


def evaluate_rollouts(
    agents: list[str],
    methods: list[str],
    targets: list[str],
    episodes: int,
    seed: int,
    env_id: str,
    device: torch.device | str = "cpu",
    trust_pickle: bool = False,
) -> list[dict]:
    """Play ``episodes`` episodes (seeds ``seed + i``) of each agent (a ``load_policy`` spec), once, and
    explain every step with each method and action target: one row per (agent, method, target, quantity)."""
    from tqdm import tqdm

    from mmcam.adapters.rl import explain_trajectories, make_env, play
    from mmcam.adapters.rl.environments import env_action_names, env_name
    from mmcam.loading import load_policy

    venv = make_env(env_id)
    rows = []
    for agent in agents:
        policy = load_policy(agent, venv, trust_pickle)
        policy.model.to(device)
        trajectories = [play(policy, venv, seed + i) for i in range(episodes)]
        names = policy.action_names or env_action_names(venv)
        runs = [(method, target) for method in methods for target in targets]
        for method, target in tqdm(runs, desc=f"explaining {agent}", unit="run", disable=len(runs) < 2):
            rollout = explain_trajectories(policy, trajectories, names, env_name(venv), method, target=target)
            success = rollout.success_rate()
            for row in rollout_rows(rollout):
                rows.append({"agent": agent, "method": method, "target": target, "success": success, **row})
    return rows


def rollouts_text(rows: list[dict]) -> str:
    """The rows of ``evaluate_rollouts`` as a table: one line per (agent, method, target), one column per
    quantity, each "mean [low, high]"."""
    quantities = list(dict.fromkeys(row["quantity"] for row in rows))
    runs: dict[tuple, dict] = {}
    for row in rows:
        runs.setdefault((row["agent"], row["method"], row["target"]), {})[row["quantity"]] = row
    header = f"{'agent':<10} {'method':<14} {'target':<10} {'steps':>6}" + "".join(
        f" {name:>22}" for name in quantities
    )
    lines = [header]
    for (agent, method, target), cells in runs.items():
        steps = next(iter(cells.values()))["targets"]
        line = f"{agent:<10} {method:<14} {target:<10} {steps:>6}"
        for name in quantities:
            cell = cells[name]
            text = (
                "-" if cell["mean"] is None else f"{cell['mean']:.3f} [{cell['low']:.3f},{cell['high']:.3f}]"
            )
            line += f" {text:>22}"
        lines.append(line)
    return "\n".join(lines)
