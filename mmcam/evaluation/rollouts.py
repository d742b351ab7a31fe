"""Explained RL rollouts over many episodes: how often the chosen action's map is empty, and how much of
its mass lies on the agent and the goal (what the action depends on) and on the distractors, with 95%
percentile-bootstrap intervals that resample episodes (the steps of one episode are not independent)."""

from __future__ import annotations

import math

import torch

from mmcam.adapters.rl.rollouts import Rollout
from mmcam.evaluation.summary import mean_with_interval

# The quantities of ``rollout_rows``, per step of every episode: (name, what it is).
QUANTITIES = {
    "empty": "share of steps whose chosen-action map is zero everywhere",
    "goal+agent": "share of the map's mass on the goal and the agent, all steps (an empty map: 0)",
    "goal+agent, non-empty": "the same, over the steps whose map is not empty",
    "distractors": "share of the map's mass on the distractors, all steps",
    "distractors, non-empty": "the same, over the steps whose map is not empty",
    "goal+agent area": "share of the image the goal and the agent cover (a uniform map's share)",
}


def _per_episode(rollout: Rollout, name: str) -> list[list[float]]:
    """Per episode, the per-step values of the quantity ``name`` (NaN where it does not apply)."""
    values = []
    for episode in rollout.episodes:
        empty = episode.empty.float()
        attention, areas = episode.attention, episode.areas
        if name == "empty":
            steps = empty
        elif name == "goal+agent area":
            steps = areas["goal"] + areas["agent"]
        else:
            object_name = name.split(",")[0]
            steps = (
                attention["goal"] + attention["agent"]
                if object_name == "goal+agent"
                else attention[object_name]
            )
            if name.endswith("non-empty"):
                steps = torch.where(episode.empty, math.nan, steps)
        values.append(steps.tolist())
    return values


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
    """Play ``episodes`` episodes (seeds ``seed + i``) of each agent (a ``load_policy`` spec) and explain
    every step with each method and action target: one row per (agent, method, target, quantity)."""
    from tqdm import tqdm

    from mmcam.adapters.rl import explain_episodes, make_env
    from mmcam.loading import load_policy

    venv = make_env(env_id)
    runs = [(agent, method, target) for agent in agents for method in methods for target in targets]
    rows = []
    policies = {}
    for agent, method, target in tqdm(runs, desc="rollouts", unit="run", disable=len(runs) < 2):
        if agent not in policies:
            policies[agent] = load_policy(agent, venv, trust_pickle)
            policies[agent].model.to(device)
        rollout = explain_episodes(
            policies[agent], venv, episodes=episodes, seed=seed, method=method, target=target
        )
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
