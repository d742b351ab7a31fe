"""Policies behind one interface: stable-baselines3 actor-critics and DQNs, or any torch module.

Observations may be channel-first or channel-last and frame-stacked; what is explained is always the
(B, C, H, W) image the network reads, in the observation's own value range.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.vec_env import VecEnv
from torch import Tensor, nn

from mmcam.engine import Explainer
from mmcam.subject import Subject

# HiResCAM by default: a policy's head reads its last conv grid through a flatten (SB3's NatureCNN, the
# bundled agents), so each position has weights of its own, which Grad-CAM's channel means average away.
# On the bundled strong agent (100 episodes, log-probability target) Grad-CAM's chosen-action map was
# empty (zero everywhere) on 15% of steps, HiResCAM's on 0.2% (docs/evaluation.md, "RL agents").
RL_METHOD = "hirescam"


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
    ``method`` is the CAM method its maps default to.
    """

    name: str
    model: nn.Module
    forward: Callable[[nn.Module, dict[str, Tensor]], PolicyOutput]
    to_pixels: Callable[[np.ndarray], Tensor]
    layer: str = "auto"
    action_names: list[str] = field(default_factory=list)
    method: str = RL_METHOD

    def explainer(self, layer: str | None = None, method: str | None = None, **options) -> Explainer:
        """An explainer of this policy's layer and method (defaults: its own) on its forward; ``options``
        go to ``Explainer`` (``class_names`` defaults to the policy's action names)."""
        options.setdefault("class_names", self.action_names or None)
        return Explainer(
            self.model,
            layer=layer or self.layer,
            method=method or self.method,
            forward=self.forward,
            **options,
        )

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


def sb3_from_spec(spec: str, venv: VecEnv | None = None, trust_pickle: bool = False) -> RLPolicy:
    """``sb3:ALGO:PATH`` (a model saved by stable-baselines3: its loader unpickles, so only with
    ``trust_pickle``)
    or ``random:ALGO`` (a randomly initialized CnnPolicy for ``venv``'s spaces, seed 0); ALGO is one of
    ppo, a2c, dqn."""
    import stable_baselines3
    from stable_baselines3.common.preprocessing import is_image_space

    kind, _, rest = spec.partition(":")
    if kind not in ("sb3", "random"):
        raise ValueError(f"unknown policy '{spec}': use strong, weak, sb3:ALGO:PATH or random:ALGO")
    algorithm, _, path = rest.partition(":")
    if algorithm.lower() not in ALGORITHMS:
        raise ValueError(f"unknown algorithm '{algorithm}' in '{spec}': use one of {', '.join(ALGORITHMS)}")
    algorithm_class = getattr(stable_baselines3, algorithm.upper())
    if kind == "sb3":
        if not (Path(path).is_file() or Path(f"{path}.zip").is_file()):
            raise ValueError(f"no saved stable-baselines3 model at {path} (nor {path}.zip)")
        if not trust_pickle:
            raise ValueError(
                f"stable-baselines3 unpickles {path} to load it, which can run code: pass --trust-pickle "
                "(trust_pickle=True) if you trust the file"
            )
        return sb3_policy(algorithm_class.load(path, device="cpu"), name=spec)
    if venv is None:
        raise ValueError("a random policy needs the environment it will act in")
    if not is_image_space(venv.observation_space, check_channels=False):
        raise ValueError(
            f"the environment's observations are not images ({venv.observation_space}): mmcam explains "
            "policies that read pixels (ShapesReach, Atari, or an image-observation wrapper)"
        )
    # small buffers: a random policy is never trained
    options = {"buffer_size": 1} if algorithm.lower() == "dqn" else {"n_steps": 8}
    options |= {"batch_size": 8} if algorithm.lower() == "ppo" else {}
    return sb3_policy(algorithm_class("CnnPolicy", venv, seed=0, device="cpu", **options), name=spec)
