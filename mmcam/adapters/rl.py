"""Reinforcement learning: where a policy looked to choose each action, step by step over whole episodes.

A policy is run in an environment for N episodes; every step's chosen action is then explained with
its logit (a Q-value for DQN) as the target, all steps of an episode batched into one explainer call.
Optionally every action and the value estimate are explained too. Where the environment puts object
masks in ``info["masks"]`` (ShapesReach does), each step's map is scored by the share of its mass on
each object.

Policies come from stable-baselines3 (PPO, A2C, DQN and anything else with an actor-critic or a
Q-network over image observations and discrete actions) or are any torch module from observations
to action logits. Observations may be channel-first or channel-last and frame-stacked; what is
explained is always the (B, C, H, W) image the network reads, in the observation's own value range.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecFrameStack
from torch import Tensor, nn

from mmcam.engine import Explainer
from mmcam.engine.state import explanation_mode
from mmcam.explanation import Explanation
from mmcam.metrics.attention import area_shares, mass_shares
from mmcam.targets import ClassScore, StateValue, Target
from mmcam.text.probes import ProbeSet, Subject


@dataclass
class PolicyOutput:
    """What a policy's forward returns: action scores (N, A) and, if it has one, its value estimate (N,)."""

    logits: Tensor
    value: Tensor | None = None


@dataclass
class RLPolicy:
    """A policy behind one interface.

    ``model`` is the module explained; ``forward(model, {"pixel_values": x})`` runs it on a batch of
    (B, C, H, W) float images; ``to_pixels`` turns a batch of raw observations (B, *observation
    shape) into that image. ``action_names`` may be empty: the environment's are used then.
    """

    name: str
    model: nn.Module
    forward: Callable[[nn.Module, dict[str, Tensor]], PolicyOutput]
    to_pixels: Callable[[np.ndarray], Tensor]
    layer: str = "auto"
    action_names: list[str] = field(default_factory=list)

    def subject(self, layer: str | None = None) -> Subject:
        """This policy's layer as a subject for naming its units: probed with raw observations, scored by
        its action logits."""
        return Subject(
            self.name,
            self.model,
            layer or self.layer,
            lambda observations: {"pixel_values": self.to_pixels(np.stack(observations))},
            lambda model, inputs: self.forward(model, inputs).logits,
        )


def sb3_policy(agent, name: str = "sb3", layer: str = "auto") -> RLPolicy:
    """Wrap a stable-baselines3 algorithm or policy (actor-critic or DQN, image observations, discrete actions).

    Actor-critic policies (PPO, A2C): the action_net's raw logits and value_net's V(s), from one pass
    through the features extractor. DQN: the Q-network's Q(s, a) as logits and max_a Q(s, a) as the
    value. The policy's own preprocessing (images / 255) runs inside the forward, as in SB3.
    """
    from stable_baselines3.common.policies import ActorCriticPolicy
    from stable_baselines3.common.preprocessing import is_image_space, maybe_transpose
    from stable_baselines3.dqn.policies import DQNPolicy

    policy = getattr(agent, "policy", agent)
    if not isinstance(policy.action_space, gym.spaces.Discrete):
        raise TypeError(f"only discrete actions can be explained, this policy has {policy.action_space}")
    space = policy.observation_space
    if not is_image_space(space, check_channels=False):
        raise ValueError(f"the policy does not read images: its observation space is {space}")

    if isinstance(policy, ActorCriticPolicy):
        model, forward = policy, _actor_critic_forward
    elif isinstance(policy, DQNPolicy):
        model, forward = policy.q_net, _q_forward
    else:
        raise TypeError(f"{type(policy).__name__} is neither an actor-critic nor a DQN policy")

    def to_pixels(observations: np.ndarray) -> Tensor:
        image = maybe_transpose(np.asarray(observations), space)
        if image.shape[1:] != space.shape:
            raise ValueError(
                f"the policy reads observations of shape {space.shape}; the environment gives {observations.shape[1:]}"
            )
        return torch.as_tensor(image, dtype=torch.float32, device=policy.device)

    return RLPolicy(name, model, forward, to_pixels, layer)


def _actor_critic_forward(policy: nn.Module, inputs: dict[str, Tensor]) -> PolicyOutput:
    """``ActorCriticPolicy.forward`` up to the raw action logits, with the features computed once."""
    features = policy.extract_features(inputs["pixel_values"])
    if policy.share_features_extractor:
        latent_pi, latent_vf = policy.mlp_extractor(features)
    else:
        latent_pi = policy.mlp_extractor.forward_actor(features[0])
        latent_vf = policy.mlp_extractor.forward_critic(features[1])
    return PolicyOutput(policy.action_net(latent_pi), policy.value_net(latent_vf)[:, 0])


def _q_forward(q_net: nn.Module, inputs: dict[str, Tensor]) -> PolicyOutput:
    q_values = q_net(inputs["pixel_values"])
    return PolicyOutput(q_values, q_values.max(dim=1).values)


def torch_policy(
    module: nn.Module,
    name: str = "torch",
    layer: str = "auto",
    channels_last: bool = False,
    action_names: Sequence[str] = (),
) -> RLPolicy:
    """Any module from a float batch of observations to action logits, or to a (logits, value) pair.

    The module gets the observations as the environment gives them (``channels_last``: (B, H, W, C)),
    as float32 in their own value range.
    """

    def to_pixels(observations: np.ndarray) -> Tensor:
        image = torch.as_tensor(np.asarray(observations), dtype=torch.float32)
        return image.permute(0, 3, 1, 2) if channels_last else image

    def forward(model: nn.Module, inputs: dict[str, Tensor]) -> PolicyOutput:
        image = inputs["pixel_values"]
        output = model(image.permute(0, 2, 3, 1) if channels_last else image)
        return PolicyOutput(*output) if isinstance(output, (tuple, list)) else PolicyOutput(output)

    return RLPolicy(name, module, forward, to_pixels, layer, list(action_names))


ALGORITHMS = ("ppo", "a2c", "dqn")


def load_policy(spec: str, venv: VecEnv | None = None) -> RLPolicy:
    """A policy by name: ``strong`` or ``weak`` (the bundled ShapesReach agents, no pickle),
    ``sb3:ALGO:PATH`` (a model saved by stable-baselines3: its loader unpickles, so trusted files only)
    or ``random:ALGO`` (a randomly initialized CnnPolicy for ``venv``'s spaces, seed 0); ALGO is one of
    ppo, a2c, dqn."""
    import stable_baselines3

    kind, _, rest = spec.partition(":")
    if kind in ("sb3", "random"):
        algorithm, _, path = rest.partition(":")
        if algorithm.lower() not in ALGORITHMS:
            raise ValueError(
                f"unknown algorithm '{algorithm}' in '{spec}': use one of {', '.join(ALGORITHMS)}"
            )
        algorithm_class = getattr(stable_baselines3, algorithm.upper())
        if kind == "sb3":
            return sb3_policy(algorithm_class.load(path, device="cpu"), name=spec)
        if venv is None:
            raise ValueError("a random policy needs the environment it will act in")
        # small buffers: a random policy is never trained
        options = {"buffer_size": 1} if algorithm.lower() == "dqn" else {"n_steps": 8}
        options |= {"batch_size": 8} if algorithm.lower() == "ppo" else {}
        return sb3_policy(algorithm_class("CnnPolicy", venv, seed=0, device="cpu", **options), name=spec)
    from mmcam.zoo.agents import AGENTS, agent_name, load_agent, load_spec

    if spec not in (*AGENTS, *AGENTS.values()):
        raise ValueError(f"unknown policy '{spec}': use strong, weak, sb3:ALGO:PATH or random:ALGO")
    name = agent_name(spec)
    return sb3_policy(load_agent(name), name=name, layer=load_spec(name)["default_layer"])


def make_env(env_id: str, frame_stack: int | None = None) -> VecEnv:
    """One environment as an SB3 VecEnv. Atari ids get the usual preprocessing: SB3's ``AtariWrapper``
    (no-op starts, frame skip 4 with max-pooling, 84x84 gray, episode per life) and a stack of 4 frames.

    ``mmcam/`` ids (ShapesReach) are registered on the way; ``frame_stack`` overrides the stack depth.
    """
    if env_id.startswith("mmcam/"):
        import mmcam.zoo.reach  # noqa: F401  (registers the environment)
    spec = _env_spec(env_id)
    atari = "ale_py" in str(spec.entry_point)
    if atari:
        from stable_baselines3.common.atari_wrappers import AtariWrapper

        skip_inside = spec.kwargs.get("frameskip", 1) != 1  # v5 ids skip frames themselves
        env = AtariWrapper(gym.make(env_id, **({"frameskip": 1} if skip_inside else {})))
    else:
        env = gym.make(env_id)
    venv = as_vec_env(env)
    depth = frame_stack if frame_stack is not None else (4 if atari else 1)
    return VecFrameStack(venv, depth) if depth > 1 else venv


def _env_spec(env_id: str) -> gym.envs.registration.EnvSpec:
    try:
        import ale_py

        gym.register_envs(ale_py)
    except ImportError:
        pass
    try:
        return gym.spec(env_id)
    except gym.error.Error as error:
        raise ValueError(f"unknown environment '{env_id}': {error}") from error


def as_vec_env(env: gym.Env | VecEnv) -> VecEnv:
    """A VecEnv of one: a gymnasium environment is wrapped, a VecEnv must hold exactly one environment."""
    if isinstance(env, VecEnv):
        if env.num_envs != 1:
            raise ValueError(f"explain one environment at a time; this VecEnv holds {env.num_envs}")
        return env
    return DummyVecEnv([lambda: env])


def env_name(venv: VecEnv) -> str:
    spec = venv.get_attr("spec")[0]
    return spec.id if spec is not None else type(venv.get_attr("unwrapped")[0]).__name__


def env_action_names(venv: VecEnv) -> list[str]:
    """The environment's action names (``get_action_meanings``, as Atari and ShapesReach have) or numbers."""
    unwrapped = venv.get_attr("unwrapped")[0]
    if hasattr(unwrapped, "get_action_meanings"):
        return [str(name).lower() for name in unwrapped.get_action_meanings()]
    return [f"action {i}" for i in range(venv.action_space.n)]


def display_frames(pixels: Tensor) -> np.ndarray:
    """(T, C, H, W) images -> (T, H, W, 3) uint8 to show: the last RGB frame of a stack of RGB frames
    (C a multiple of 3), otherwise the last channel in gray. Values are taken in 0..255."""
    channels = pixels.shape[1]
    shown = pixels[:, -3:] if channels % 3 == 0 else pixels[:, -1:].expand(-1, 3, -1, -1)
    return shown.permute(0, 2, 3, 1).clamp(0, 255).round().to(torch.uint8).cpu().numpy()


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


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one thread inside: a forward of one small sample gains nothing from more, and on a
    busy machine the threads' synchronisation can cost a hundred times the work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def play(
    policy: RLPolicy, venv: VecEnv, seed: int, deterministic: bool = True, max_steps: int = 100_000
) -> Trajectory:
    """Run one episode from ``reset`` with ``seed``: the argmax action (or a sample of softmax(logits))."""
    generator = torch.Generator().manual_seed(seed)
    venv.seed(seed)
    observation = venv.reset()
    info = venv.unwrapped.reset_infos[0]  # wrappers keep their own, empty, reset_infos
    observations, actions, rewards, values, masks = [], [], [], [], []
    with explanation_mode(policy.model), torch.no_grad(), _one_thread():
        for _ in range(max_steps):
            observations.append(observation[0])
            masks.append(info.get("masks"))
            output = policy.forward(policy.model, {"pixel_values": policy.to_pixels(observation)})
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
    per mask, the share of target 0's map mass on it and of the image it covers, (T,) each."""

    trajectory: Trajectory
    frames: np.ndarray  # (T, H, W, 3) uint8: the image shown for each step
    explanation: Explanation
    attention: dict[str, Tensor]
    areas: dict[str, Tensor]

    @property
    def steps(self) -> int:
        return len(self.trajectory.actions)

    @property
    def episode_return(self) -> float:
        return sum(self.trajectory.rewards)


def _explain_steps(
    explainer: Explainer, pixels: Tensor, actions: list[int], extra: list[Target], batch_size: int
) -> Explanation:
    """Explain every step's chosen action and the ``extra`` targets, ``batch_size`` steps per call."""
    parts = [
        explainer(
            {"pixel_values": pixels[i : i + batch_size]}, [ClassScore(actions[i : i + batch_size]), *extra]
        )
        for i in range(0, len(actions), batch_size)
    ]

    def cat(name: str) -> Tensor | None:
        values = [getattr(part, name) for part in parts]
        return None if values[0] is None else torch.cat(values)

    return Explanation(
        maps=cat("maps"),
        raw=cat("raw"),
        scores=cat("scores"),
        labels=[labels for part in parts for labels in part.labels],
        indices=[indices for part in parts for indices in part.indices],
        layer=parts[0].layer,
        method=parts[0].method,
        weights=cat("weights"),
    )


@dataclass
class Rollout:
    """Explained episodes of one policy in one environment."""

    policy: str
    env: str
    action_names: list[str]
    episodes: list[Episode]

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
            for name in self._masks()
        }

    def areas(self) -> dict[str, float]:
        """Per mask: its share of the image, averaged over all steps: what a uniform map would score."""
        return {
            name: float(torch.cat([e.areas[name] for e in self.episodes]).mean()) for name in self._masks()
        }

    def success_rate(self) -> float:
        return sum(e.trajectory.success for e in self.episodes) / len(self.episodes)

    def _masks(self) -> list[str]:
        return list(self.episodes[0].attention)

    def table(self) -> str:
        """One row per episode and one for all of them: steps, return, success and, per mask, the share
        of map mass on it with its ratio to the mask's share of the image (1.0x: no more than uniform)."""
        names = self._masks()
        header = f"{'episode':>8} {'seed':>6} {'steps':>6} {'return':>7} {'success':>8}" + "".join(
            f" {name:>17}" for name in names
        )

        def row(label, seed, steps, total, success, attention, areas) -> str:
            cells = "".join(
                f" {attention[n]:>9.3f} ({attention[n] / areas[n] if areas[n] else 0:4.1f}x)" for n in names
            )
            return f"{label:>8} {seed:>6} {steps:>6} {total:>7.2f} {success:>8}{cells}"

        lines = [header]
        for i, e in enumerate(self.episodes):
            attention = {n: float(e.attention[n].mean()) for n in names}
            areas = {n: float(e.areas[n].mean()) for n in names}
            lines.append(
                row(
                    i,
                    e.trajectory.seed,
                    e.steps,
                    e.episode_return,
                    "yes" if e.trajectory.success else "no",
                    attention,
                    areas,
                )
            )
        steps = sum(e.steps for e in self.episodes)
        mean_return = sum(e.episode_return for e in self.episodes) / len(self.episodes)
        lines.append(
            row("all", "", steps, mean_return, f"{self.success_rate():.0%}", self.attention(), self.areas())
        )
        return "\n".join(lines)

    def records(self) -> Iterator[dict]:
        """One JSON record per step, in the shared schema: the explained targets with their score and
        peak (x, y) in observation pixels, plus the action, value, reward and attention shares."""
        for index, episode in enumerate(self.episodes):
            explanation, trajectory = episode.explanation, episode.trajectory
            peaks = explanation.peaks().tolist()
            size = list(explanation.maps.shape[-2:])
            for t in range(episode.steps):
                yield {
                    "task": "rl",
                    "model": self.policy,
                    "env": self.env,
                    "layer": explanation.layer,
                    "method": explanation.method,
                    "episode": index,
                    "seed": trajectory.seed,
                    "step": t,
                    "size": size,
                    "action": self.action_names[trajectory.actions[t]],
                    "action_index": trajectory.actions[t],
                    "value": None if trajectory.values is None else round(trajectory.values[t], 6),
                    "reward": round(trajectory.rewards[t], 6),
                    "targets": [
                        {
                            "label": label,
                            "index": target_index,
                            "score": round(float(explanation.scores[t, k]), 6),
                            "peak": peaks[t][k],
                        }
                        for k, (label, target_index) in enumerate(
                            zip(explanation.labels[t], explanation.indices[t])
                        )
                    ],
                    "attention": {
                        name: round(float(share[t]), 6) for name, share in episode.attention.items()
                    },
                    "area": {name: round(float(share[t]), 6) for name, share in episode.areas.items()},
                }


def explain_episodes(
    policy: RLPolicy,
    env: gym.Env | VecEnv,
    episodes: int = 1,
    seed: int = 0,
    method: str = "gradcam",
    layer: str | None = None,
    all_actions: bool = False,
    value: bool = False,
    deterministic: bool = True,
    max_steps: int = 100_000,
    batch_size: int = 64,
) -> Rollout:
    """Play ``episodes`` episodes (episode i from ``reset`` with seed ``seed + i``) and explain every step.

    Each step's chosen action is explained; ``all_actions`` adds one map per action and ``value`` one
    for the value estimate. An episode stops after ``max_steps`` steps if the environment has not
    ended it. Steps are explained ``batch_size`` at a time.
    """
    if episodes < 1:
        raise ValueError("explain at least one episode")
    venv = as_vec_env(env)
    names = policy.action_names or env_action_names(venv)
    explainer = Explainer(
        policy.model, layer=layer or policy.layer, method=method, forward=policy.forward, class_names=names
    )
    extra: list[Target] = [ClassScore(k) for k in range(len(names))] if all_actions else []
    explained = []
    for i in range(episodes):
        trajectory = play(policy, venv, seed + i, deterministic, max_steps)
        if value and trajectory.values is None:
            raise ValueError(f"{policy.name} has no value estimate to explain")
        pixels = policy.to_pixels(trajectory.observations)
        explanation = _explain_steps(
            explainer, pixels, trajectory.actions, extra + ([StateValue()] if value else []), batch_size
        )
        masks = {name: torch.from_numpy(m) for name, m in (trajectory.masks or {}).items()}
        chosen = explanation.maps[:, 0]
        explained.append(
            Episode(
                trajectory,
                display_frames(pixels),
                explanation,
                mass_shares(chosen, masks),
                area_shares(masks),
            )
        )
    return Rollout(policy.name, env_name(venv), names, explained)


def rollout_probe(
    policy: RLPolicy, env: gym.Env | VecEnv, episodes: int = 20, seed: int = 50_000, batch_size: int = 64
) -> ProbeSet:
    """The observations of ``episodes`` of the policy's own play (from ``reset`` with seeds ``seed + i``),
    with the object masks the environment gives in ``info`` as concepts (ShapesReach: agent, goal,
    distractors): the states the agent meets, to name its units with."""
    venv = as_vec_env(env)
    trajectories = [play(policy, venv, seed + i) for i in range(episodes)]
    if any(t.masks is None for t in trajectories):
        raise ValueError(
            f"{env_name(venv)} gives no object masks in info['masks'], so its units cannot be named "
            "(ShapesReach gives them)"
        )
    names = list(trajectories[0].masks)
    observations = np.concatenate([t.observations for t in trajectories])
    masks = torch.from_numpy(
        np.concatenate([np.stack([t.masks[n] for n in names], axis=1) for t in trajectories])
    )

    def batches() -> Iterator[tuple[list[np.ndarray], Tensor]]:
        for start in range(0, len(observations), batch_size):
            yield list(observations[start : start + batch_size]), masks[start : start + batch_size]

    return ProbeSet(
        f"{env_name(venv)}-rollouts-{episodes}-{seed}", batches, names, "masks", len(observations)
    )
