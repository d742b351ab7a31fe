"""Train the bundled ShapesReach agents and write mmcam/zoo/weights/shapes-reach-{strong,weak}.*.

PPO (stable-baselines3) with the cell-aligned CellCNN policy on 8 copies of mmcam/ShapesReach-v0.
The greedy (argmax) policy is evaluated on 100 episodes (reset seeds 1_000_000, ...) every 5k steps
for the first 50k steps, then every 25k. The weak agent is the last checkpoint evaluated at or below
``--weak-max`` success; the strong agent is the final one (training stops early once two evaluations
in a row reach ``--stop-at``: one can be lucky). Both are then scored on 500 fresh episodes (reset
seeds 2_000_000, ...).

    python tasks/rl/train.py            # about 5 minutes on 2 busy CPU cores
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.policies import ActorCriticCnnPolicy

from mmcam.adapters.rl import make_env, play, sb3_policy
from mmcam.zoo import agents
from mmcam.zoo.reach import ACTIONS, ENV_ID

CONFIG = {
    "features": {"cell": 8, "channels": [16, 32, 32], "features_dim": 128},
    "net_arch": {"pi": [64, 64], "vf": [64, 64]},
}
DEFAULT_LAYER = "features_extractor.cnn.relu3"
EVAL_SEED = 1_000_000
FINAL_EVAL_SEED = 2_000_000


def evaluate(policy, episodes: int, seed: int) -> dict:
    """Greedy success rate and mean episode length over ``episodes`` episodes from reset seeds seed, seed + 1, ..."""
    venv = make_env(ENV_ID)
    runs = [play(sb3_policy(policy), venv, seed + i) for i in range(episodes)]
    return {
        "episodes": episodes,
        "seed": seed,
        "success_rate": sum(r.success for r in runs) / episodes,
        "mean_steps": sum(len(r.actions) for r in runs) / episodes,
    }


class Checkpoints(BaseCallback):
    """Evaluate on schedule, keep the last checkpoint at or below ``weak_max`` success, stop once two
    evaluations in a row reach ``stop_at``."""

    def __init__(self, weak_max: float, stop_at: float, keep: str | None = None, episodes: int = 100):
        super().__init__()
        self.weak_max, self.stop_at, self.keep, self.episodes = weak_max, stop_at, keep, episodes
        self.next_eval = 5_000
        self.weak: tuple[dict, int, dict] | None = None
        self.passed = 0  # evaluations in a row at or above stop_at
        self.start = time.perf_counter()

    def _on_step(self) -> bool:
        if self.num_timesteps < self.next_eval:
            return True
        self.next_eval += 5_000 if self.num_timesteps < 50_000 else 25_000
        result = evaluate(self.model.policy, self.episodes, EVAL_SEED)
        seconds = time.perf_counter() - self.start
        print(
            f"{self.num_timesteps:>7} steps ({seconds:4.0f} s, {self.num_timesteps / seconds:3.0f}/s): "
            f"success {result['success_rate']:.2f}, {result['mean_steps']:.1f} steps per episode",
            flush=True,
        )
        if self.keep:
            name = f"step-{self.num_timesteps:07d}-success-{result['success_rate']:.2f}"
            agents.save_agent(
                self.model.policy, name, {"timesteps": self.num_timesteps, "eval": result}, self.keep
            )
        if result["success_rate"] <= self.weak_max:
            self.weak = (copy.deepcopy(self.model.policy.state_dict()), self.num_timesteps, result)
        self.passed = self.passed + 1 if result["success_rate"] >= self.stop_at else 0
        return self.passed < 2


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=800_000, help="most environment steps to train for")
    parser.add_argument("--envs", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--weak-max", type=float, default=0.5, help="most success of the weak checkpoint")
    parser.add_argument(
        "--stop-at", type=float, default=0.99, help="stop once two evaluations in a row reach this"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights-dir", default=str(agents.WEIGHTS_DIR))
    parser.add_argument("--checkpoints", metavar="DIR", help="also write every evaluated checkpoint here")
    args = parser.parse_args()

    torch.set_num_threads(1)  # small batches: a second thread costs more than it brings
    venv = make_vec_env(ENV_ID, n_envs=args.envs, seed=args.seed)
    hyperparameters = {
        "n_steps": 128,
        "batch_size": 256,
        "n_epochs": 4,
        "learning_rate": args.lr,
        "gamma": 0.99,
        "gae_lambda": 0.95,
        "clip_range": 0.2,
        "ent_coef": 0.01,
    }
    model = PPO(
        "CnnPolicy",
        venv,
        policy_kwargs=agents.policy_kwargs(CONFIG),
        seed=args.seed,
        device="cpu",
        **hyperparameters,
    )
    callback = Checkpoints(args.weak_max, args.stop_at, args.checkpoints)
    start = time.perf_counter()
    model.learn(args.steps, callback=callback)
    seconds = time.perf_counter() - start
    if callback.weak is None:
        raise SystemExit(
            f"no checkpoint was at or below {args.weak_max} success: lower the first evaluation step"
        )

    train = {
        "algorithm": "PPO",
        "envs": args.envs,
        **hyperparameters,
        "seed": args.seed,
        "total_timesteps": model.num_timesteps,
        "seconds": round(seconds),
    }
    strong = model.policy
    weak = ActorCriticCnnPolicy(
        strong.observation_space, strong.action_space, lambda _: 0.0, **agents.policy_kwargs(CONFIG)
    )
    weak_state, weak_steps, _ = callback.weak
    weak.load_state_dict(weak_state)
    for name, policy, timesteps in [
        ("shapes-reach-strong", strong, model.num_timesteps),
        ("shapes-reach-weak", weak, weak_steps),
    ]:
        result = evaluate(policy, 500, FINAL_EVAL_SEED)
        print(
            f"{name}: {timesteps} steps, success {result['success_rate']:.3f}, {result['mean_steps']:.1f} steps per episode"
        )
        spec = {
            "architecture": "stable_baselines3 ActorCriticCnnPolicy with mmcam.zoo.agents.CellCNN",
            "env": ENV_ID,
            "observation_shape": list(strong.observation_space.shape),
            "actions": list(ACTIONS),
            "config": CONFIG,
            "default_layer": DEFAULT_LAYER,
            "train": {**train, "checkpoint_timesteps": timesteps},
            "eval": result,
        }
        agents.save_agent(policy, name, spec, args.weights_dir)


if __name__ == "__main__":
    main()
