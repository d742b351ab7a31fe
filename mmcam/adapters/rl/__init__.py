"""Reinforcement learning: where a policy looked to choose each action, step by step over whole episodes.

``policies``: stable-baselines3 (PPO, A2C, DQN) or any torch module behind one interface;
``environments``: environments as VecEnvs of one (Atari preprocessing, frame stacks, ShapesReach);
``rollouts``: play episodes and explain every step, batched per episode.
"""

from mmcam.adapters.rl.environments import SHAPES_REACH, as_vec_env, make_env
from mmcam.adapters.rl.policies import PolicyOutput, RLPolicy, sb3_from_spec, sb3_policy, torch_policy
from mmcam.adapters.rl.rollouts import (
    Episode,
    Rollout,
    Trajectory,
    explain_episodes,
    explain_trajectories,
    play,
)

__all__ = [
    "SHAPES_REACH",
    "Episode",
    "PolicyOutput",
    "RLPolicy",
    "Rollout",
    "Trajectory",
    "as_vec_env",
    "explain_episodes",
    "explain_trajectories",
    "make_env",
    "play",
    "sb3_from_spec",
    "sb3_policy",
    "torch_policy",
]
