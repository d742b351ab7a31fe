"""Load the bundled shapes-world models by name.

Each model is two files in ``weights/``: ``<name>.safetensors`` (the state dict) and ``<name>.json``
(what is needed to rebuild it: ``config``, ``labels`` or vocabularies, plus how it was trained and
evaluated). ``MODELS`` maps each name to a builder that turns that json into an untrained
``(model, processor)``; ``load`` then fills in the weights.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn

from mmcam.zoo.captioner import build_captioner
from mmcam.zoo.classifier import build_classifier
from mmcam.zoo.processing import ShapesProcessor
from mmcam.zoo.vqa import build_vqa

WEIGHTS_DIR = Path(__file__).parent / "weights"

Builder = Callable[[dict], tuple[nn.Module, Any]]

MODELS: dict[str, Builder] = {
    "shapes-classifier": build_classifier,
    "shapes-captioner": build_captioner,
    "shapes-vqa": build_vqa,
}

__all__ = ["MODELS", "WEIGHTS_DIR", "ShapesProcessor", "load", "load_spec", "save", "save_trained"]


def load_spec(name: str, weights_dir: Path = WEIGHTS_DIR) -> dict:
    """The json that sits next to ``name``'s weights; ValueError for a name not in ``MODELS``."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(sorted(MODELS))}")
    return json.loads((Path(weights_dir) / f"{name}.json").read_text())


def load(name: str, weights_dir: Path = WEIGHTS_DIR) -> tuple[nn.Module, Any]:
    """``(model, processor)`` for a bundled model, the model in eval mode with its trained weights."""
    spec = load_spec(name, weights_dir)  # first: it checks the name
    model, processor = MODELS[name](spec)
    model.load_state_dict(load_file(Path(weights_dir) / f"{name}.safetensors"))
    return model.eval(), processor


def save(model: nn.Module, name: str, spec: dict, weights_dir: Path = WEIGHTS_DIR) -> None:
    """Write ``<name>.safetensors`` and ``<name>.json`` for ``load``."""
    weights_dir = Path(weights_dir)
    weights_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, weights_dir / f"{name}.safetensors")
    (weights_dir / f"{name}.json").write_text(json.dumps(spec, indent=2) + "\n")


def save_trained(
    model: nn.Module,
    name: str,
    spec: dict,
    arguments,
    seconds: float,
    scores: dict[str, float],
    scenes: int,
    seed: int,
) -> None:
    """What a ``tasks/`` recipe ends with: ``save`` the model, its ``spec`` completed with how it was
    trained (the recipe's arguments and seconds) and how it scored on ``scenes`` fresh scenes from ``seed``."""
    trained = {k: v for k, v in vars(arguments).items() if k != "weights_dir"}
    spec = {
        **spec,
        "train": {**trained, "seconds": round(seconds)},
        "eval": {"scenes": scenes, "seed": seed, **{k: round(float(v), 4) for k, v in scores.items()}},
    }
    save(model, name, spec, arguments.weights_dir)
    print(f"wrote {arguments.weights_dir}/{name}.safetensors and .json")
