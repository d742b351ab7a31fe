"""Environments as stable-baselines3 VecEnvs of one: Atari preprocessing, frame stacks, ShapesReach."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecFrameStack
from torch import Tensor

SHAPES_REACH = "mmcam/ShapesReach-v0"  # the shapes world's environment (mmcam.zoo.reach)


def make_env(env_id: str, frame_stack: int | None = None) -> VecEnv:
    """One environment as an SB3 VecEnv. Atari ids get the usual preprocessing: SB3's ``AtariWrapper``
    (no-op starts, frame skip 4 with max-pooling, 84x84 gray, episode per life) and a stack of 4 frames.

    ShapesReach is registered on the way; ``frame_stack`` overrides the stack depth (at least 1).
    """
    if frame_stack is not None and frame_stack < 1:
        raise ValueError(f"the frame stack must be at least 1 frame (--frame-stack), not {frame_stack}")
    if env_id == SHAPES_REACH and env_id not in gym.registry:
        gym.register(env_id, entry_point="mmcam.zoo.reach:ShapesReach")
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


def env_legend(venv: VecEnv) -> str:
    """What the objects in the environment's frames are, where it says (``metadata["legend"]``, as
    ShapesReach does), else empty."""
    return str(venv.get_attr("unwrapped")[0].metadata.get("legend", ""))


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
