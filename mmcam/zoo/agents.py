"""The bundled ShapesReach agents: stable-baselines3 PPO policies with a cell-aligned CNN, stored without pickle.

Each agent is ``weights/<name>.safetensors`` (the policy's state dict, tensors shared between the
actor's and the critic's feature extractor stored once) and ``weights/<name>.json`` (the policy's
constructor arguments, how it was trained and how well it does). ``load_agent`` rebuilds the SB3
``ActorCriticCnnPolicy`` from the json and fills in the weights: nothing is unpickled.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import torch
from gymnasium import spaces
from safetensors.torch import load_model, save_model
from stable_baselines3.common.policies import ActorCriticCnnPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

WEIGHTS_DIR = Path(__file__).parent / "weights"
AGENTS = {"strong": "shapes-reach-strong", "weak": "shapes-reach-weak"}


class CellCNN(BaseFeaturesExtractor):
    """A CNN whose last conv layer has one position per grid cell, seeing that cell only.

    conv k/k (k = cell / 2) -> conv 2/2 -> conv 1x1, each followed by a ReLU, then flatten and a
    linear layer to ``features_dim``. With 8-pixel cells a 64x64 view gives an 8x8 grid at
    ``cnn.relu3``: a Grad-CAM map there scores the cells themselves. The flatten keeps where things
    are, so the heads can compare the agent's position with the goal's.
    """

    def __init__(
        self,
        observation_space: spaces.Box,
        cell: int = 8,
        channels: tuple[int, int, int] = (16, 32, 32),
        features_dim: int = 128,
    ):
        super().__init__(observation_space, features_dim)
        in_channels, height, width = observation_space.shape
        if cell % 2 or height % cell or width % cell:
            raise ValueError(f"a {height}x{width} view does not split into cells of an even size {cell}")
        self.cnn = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(in_channels, channels[0], cell // 2, stride=cell // 2),
                relu1=nn.ReLU(),
                conv2=nn.Conv2d(channels[0], channels[1], 2, stride=2),
                relu2=nn.ReLU(),
                conv3=nn.Conv2d(channels[1], channels[2], 1),
                relu3=nn.ReLU(),
                flatten=nn.Flatten(),
            )
        )
        cells = (height // cell) * (width // cell)
        self.linear = nn.Sequential(nn.Linear(channels[2] * cells, features_dim), nn.ReLU())

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.linear(self.cnn(observations))


def policy_kwargs(config: dict) -> dict:
    """SB3 ``policy_kwargs`` from an agent's json ``config`` (``features`` and ``net_arch``)."""
    return {
        "features_extractor_class": CellCNN,
        "features_extractor_kwargs": {
            **config["features"],
            "channels": tuple(config["features"]["channels"]),
        },
        "net_arch": config["net_arch"],
    }


def agent_name(name: str) -> str:
    """The file name of a bundled agent: ``strong`` and ``weak`` are short for ``shapes-reach-*``."""
    full = AGENTS.get(name, name)
    if full not in AGENTS.values():
        raise ValueError(f"unknown agent {name!r}; bundled agents: {', '.join([*AGENTS, *AGENTS.values()])}")
    return full


def load_spec(name: str, weights_dir: Path = WEIGHTS_DIR) -> dict:
    return json.loads((Path(weights_dir) / f"{agent_name(name)}.json").read_text())


def load_agent(name: str, weights_dir: Path = WEIGHTS_DIR) -> ActorCriticCnnPolicy:
    """A bundled agent (``strong``, ``weak`` or its full name) as an SB3 policy in eval mode."""
    spec = load_spec(name, weights_dir)
    policy = ActorCriticCnnPolicy(
        spaces.Box(0, 255, tuple(spec["observation_shape"]), dtype="uint8"),
        spaces.Discrete(len(spec["actions"])),
        lr_schedule=lambda _: 0.0,
        **policy_kwargs(spec["config"]),
    )
    load_model(policy, Path(weights_dir) / f"{agent_name(name)}.safetensors")
    return policy.eval()


def save_agent(policy: ActorCriticCnnPolicy, name: str, spec: dict, weights_dir: Path = WEIGHTS_DIR) -> None:
    """Write ``<name>.safetensors`` and ``<name>.json`` for ``load_agent``."""
    weights_dir = Path(weights_dir)
    weights_dir.mkdir(parents=True, exist_ok=True)
    save_model(policy, str(weights_dir / f"{name}.safetensors"))
    (weights_dir / f"{name}.json").write_text(json.dumps(spec, indent=2) + "\n")
