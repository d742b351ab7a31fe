"""Play episodes and explain every step: the chosen action, optionally every action and the value.

All steps of an episode are batched into explainer calls. Where the environment puts object masks in
``info["masks"]`` (ShapesReach does), each step's map is scored by the share of its mass on each object.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.vec_env import VecEnv
from torch import Tensor

from mmcam.adapters.rl.environments import (
    as_vec_env,
    display_frames,
    env_action_names,
    env_legend,
    env_name,
)
from mmcam.adapters.rl.policies import RLPolicy
from mmcam.engine import Explainer
from mmcam.engine.devices import on_model_device
from mmcam.engine.state import explanation_mode
from mmcam.explanation import Explanation, join_samples
from mmcam.metrics.attention import area_shares, mass_shares
from mmcam.targets import ClassAdvantage, ClassLogProb, ClassMargin, ClassScore, StateValue, Target

# What a step's chosen action is explained by (``--target``): a softmax policy's logits are defined only up
# to a shift, so its raw logit mixes in what every action shares; the others are about the choice. For a
# DQN the logits are the Q-values, Q(s, a).
ACTION_TARGETS = {
    "logit": ClassScore,  # y_a (Q(s, a) for a DQN)
    "log-prob": ClassLogProb,  # log pi(a | s)
    "advantage": ClassAdvantage,  # y_a - mean_j y_j
    "margin": ClassMargin,  # y_a - max_{j != a} y_j: this action rather than the best other one
}
# The default, by measurement on the bundled agents (100 episodes each, docs/evaluation.md): with HiResCAM all
# four targets leave under 0.5% of the strong agent's maps empty and put 0.29-0.30 of the mass on goal +
# agent; the log-probability is the one defined for a softmax policy (shift-invariant), and with Grad-CAM
# it had the fewest empty maps (15% against 18% for the logit).
ACTION_TARGET = "log-prob"
# What sentences (--concepts) explain by default: the advantage. The log-probability of a chosen action saturates
# at 0 for a confident agent (its gradient is (1 - p_a) times the advantage's), so sentences quote "-0.00" and
# small drops: on 40 held-out episodes of the strong agent (252 steps, tasks/concepts/measure.py --rl-targets),
# zeroing the units a sentence names drops the target 4.8x as much as as many random units with the
# log-probability and 5.3x with the advantage, and the first concept named is the goal at 0.45 and 0.49 of the steps.
SENTENCE_TARGET = "advantage"


@dataclass
class Trajectory:
    """One played episode: the observation before each action, and what followed."""

    seed: int
    observations: np.ndarray  # (T, *observation shape)
    actions: list[int]
    rewards: list[float]
    values: list[float] | None
    masks: dict[str, np.ndarray] | None  # name -> (T, H, W) bool, from info["masks"]
    terminated: bool
    success: bool


def play(
    policy: RLPolicy, venv: VecEnv, seed: int, deterministic: bool = True, max_steps: int = 100_000
) -> Trajectory:
    """Run one episode from ``reset`` with ``seed``: the argmax action (or a sample of softmax(logits))."""
    generator = torch.Generator().manual_seed(seed)
    venv.seed(seed)
    observation = venv.reset()
    info = venv.unwrapped.reset_infos[0]  # wrappers keep their own, empty, reset_infos
    observations, actions, rewards, values, masks = [], [], [], [], []
    with explanation_mode(policy.model), torch.no_grad():
        for _ in range(max_steps):
            observations.append(observation[0])
            masks.append(info.get("masks"))
            pixels = on_model_device(policy.to_pixels(observation), policy.model)
            output = policy.forward(policy.model, {"pixel_values": pixels})
            if deterministic:
                action = int(output.logits[0].argmax())
            else:
                action = int(
                    torch.multinomial(output.logits[0].float().softmax(0).cpu(), 1, generator=generator)
                )
            actions.append(action)
            values.append(None if output.value is None else float(output.value[0]))
            observation, reward, done, infos = venv.step(np.array([action]))
            info = infos[0]
            rewards.append(float(reward[0]))
            if done[0]:
                break
    terminated = bool(done[0]) and not info.get("TimeLimit.truncated", False)
    have_masks = all(m is not None for m in masks)
    return Trajectory(
        seed=seed,
        observations=np.stack(observations),
        actions=actions,
        rewards=rewards,
        values=None if values[0] is None else values,
        masks={name: np.stack([m[name] for m in masks]) for name in masks[0]} if have_masks else None,
        terminated=terminated,
        success=bool(info.get("is_success", terminated)),
    )


@dataclass
class Episode:
    """An explained episode. Sample t of ``explanation`` is step t; its target 0 is the chosen action,
    then every action (if asked for), then the value (if asked for). ``attention`` and ``areas``:
    per mask, the share of target 0's map mass on it and of the image it covers, (T,) each. ``empty``
    (T,) marks the steps whose chosen-action map is zero everywhere (no evidence for the action at the
    layer); ``against`` holds, for those steps, the map of the negated target: the evidence against."""

    trajectory: Trajectory
    frames: np.ndarray  # (T, H, W, 3) uint8: the image shown for each step
    explanation: Explanation
    attention: dict[str, Tensor]
    areas: dict[str, Tensor]
    empty: Tensor
    against: dict[int, Tensor]

    @property
    def steps(self) -> int:
        return len(self.trajectory.actions)

    @property
    def episode_return(self) -> float:
        return sum(self.trajectory.rewards)


def _explain_steps(
    explainer: Explainer,
    pixels: Tensor,
    actions: list[int],
    chosen: Callable[[list[int]], Target],
    extra: list[Target],
    batch_size: int,
) -> Explanation:
    """Explain every step's chosen action (``chosen(actions)``: its target for a run of steps) and the
    ``extra`` targets, ``batch_size`` steps per call (on the model's device; the explanation comes back
    on the CPU)."""
    return join_samples(
        [
            explainer(
                {"pixel_values": pixels[i : i + batch_size]}, [chosen(actions[i : i + batch_size]), *extra]
            ).cpu()
            for i in range(0, len(actions), batch_size)
        ]
    )


def empty_maps(explanation: Explanation) -> Tensor:
    """(B,) whether each sample's first map is zero everywhere: max L <= 0 at the layer's grid."""
    return explanation.raw[:, 0].flatten(1).amax(dim=1) <= 0


@dataclass
class Rollout:
    """Explained episodes of one policy in one environment."""

    policy: str
    env: str
    action_names: list[str]
    episodes: list[Episode]
    legend: str = ""  # what the frames' objects are, where the environment says (``env_legend``)
    explainer: Explainer | None = None  # the explainer of the episodes' maps
    # (episode, step) -> that step's model inputs and targets alone, to score them again with units zeroed
    replay: Callable[[int, int], tuple[dict[str, Tensor], list[Target]]] | None = None

    @property
    def method(self) -> str:
        return self.episodes[0].explanation.method

    @property
    def layer(self) -> str:
        return self.episodes[0].explanation.layer

    def attention(self) -> dict[str, float]:
        """Per mask: its share of the chosen action's map mass, averaged over all steps of all episodes."""
        return {
            name: float(torch.cat([e.attention[name] for e in self.episodes]).mean())
            for name in self.mask_names()
        }

    def areas(self) -> dict[str, float]:
        """Per mask: its share of the image, averaged over all steps: what a uniform map would score."""
        return {
            name: float(torch.cat([e.areas[name] for e in self.episodes]).mean())
            for name in self.mask_names()
        }

    def empty_share(self) -> float:
        """The share of all steps whose chosen-action map is empty (zero everywhere)."""
        return float(torch.cat([e.empty for e in self.episodes]).float().mean())

    def success_rate(self) -> float:
        return sum(e.trajectory.success for e in self.episodes) / len(self.episodes)

    def mask_names(self) -> list[str]:
        """The names of the environment's object masks (empty without masks)."""
        return list(self.episodes[0].attention)


def _check_target(target: str) -> None:
    if target not in ACTION_TARGETS:
        raise ValueError(f"unknown action target '{target}'; use one of {', '.join(ACTION_TARGETS)}")


def explain_episodes(
    policy: RLPolicy,
    env: gym.Env | VecEnv,
    episodes: int = 1,
    seed: int = 0,
    method: str | None = None,
    layer: str | None = None,
    all_actions: bool = False,
    value: bool = False,
    deterministic: bool = True,
    max_steps: int = 100_000,
    batch_size: int = 64,
    target: str = ACTION_TARGET,
) -> Rollout:
    """Play ``episodes`` episodes (episode i from ``reset`` with seed ``seed + i``) and explain every step
    (``explain_trajectories``). An episode stops after ``max_steps`` steps if the environment has not
    ended it."""
    _check_target(target)
    if episodes < 1:
        raise ValueError("explain at least one episode")
    if max_steps < 1:
        raise ValueError("an episode needs at least one step: set max_steps (--max-steps) to 1 or more")
    venv = as_vec_env(env)
    trajectories = [play(policy, venv, seed + i, deterministic, max_steps) for i in range(episodes)]
    names = policy.action_names or env_action_names(venv)
    rollout = explain_trajectories(
        policy, trajectories, names, env_name(venv), method, layer, all_actions, value, batch_size, target
    )
    rollout.legend = env_legend(venv)
    return rollout


def explain_trajectories(
    policy: RLPolicy,
    trajectories: list[Trajectory],
    action_names: list[str],
    env: str,
    method: str | None = None,
    layer: str | None = None,
    all_actions: bool = False,
    value: bool = False,
    batch_size: int = 64,
    target: str = ACTION_TARGET,
) -> Rollout:
    """Explain every step of played episodes (the same episodes can be explained by several methods).

    Each step's chosen action is explained by ``target`` (one of ``ACTION_TARGETS``) with ``method``
    (default: the policy's, ``RL_METHOD``); ``all_actions`` adds one map per action (their logits) and
    ``value`` one for the value estimate. Steps whose chosen-action map is empty get the map of the
    negated target too (``Episode.against``). Steps are explained ``batch_size`` at a time.
    """
    _check_target(target)
    explainer = policy.explainer(layer, method, class_names=action_names)
    extra: list[Target] = [ClassScore(k) for k in range(len(action_names))] if all_actions else []
    extra += [StateValue()] if value else []
    chosen = ACTION_TARGETS[target]
    explained = []
    for trajectory in trajectories:
        if value and trajectory.values is None:
            raise ValueError(f"{policy.name} has no value estimate to explain")
        pixels = policy.to_pixels(trajectory.observations)
        explanation = _explain_steps(
            explainer,
            pixels,
            trajectory.actions,
            chosen,
            extra,
            batch_size,
        )
        empty = empty_maps(explanation)
        steps = empty.nonzero()[:, 0].tolist()
        against = {}
        if steps:
            actions = [trajectory.actions[t] for t in steps]
            negated = _explain_steps(
                explainer, pixels[steps], actions, lambda run: -chosen(run), [], batch_size
            )
            against = dict(zip(steps, negated.maps[:, 0]))
        masks = {name: torch.from_numpy(m) for name, m in (trajectory.masks or {}).items()}
        explained.append(
            Episode(
                trajectory,
                display_frames(pixels),
                explanation,
                mass_shares(explanation.maps[:, 0], masks),
                area_shares(masks),
                empty,
                against,
            )
        )

    def replay(episode: int, step: int) -> tuple[dict[str, Tensor], list[Target]]:
        trajectory = trajectories[episode]
        pixels = policy.to_pixels(trajectory.observations[step : step + 1])
        return {"pixel_values": pixels}, [chosen([trajectory.actions[step]]), *extra]

    return Rollout(policy.name, env, action_names, explained, explainer=explainer, replay=replay)
