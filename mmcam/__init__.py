"""mmcam: Grad-CAM explanations for vision and vision-language models.

import mmcam
exp = mmcam.explain(model, images, targets, layer="auto", method="gradcam")
exp.maps    # (B, K, H, W) in [0, 1]
concepts = mmcam.factorize(model, images, layer="layer4", concepts=5)   # Deep Feature Factorization

The names below load on first use (``import mmcam`` alone does not import torch), so the command line
can start, print its help or say "interrupted" before the heavy imports.
"""

from importlib import import_module

__version__ = "0.1.0"

_HOMES = {
    "METHODS": "mmcam.engine",
    "Explainer": "mmcam.engine",
    "LayerCapture": "mmcam.engine",
    "Layout": "mmcam.engine",
    "explain": "mmcam.engine",
    "factorize": "mmcam.concepts.factorization",
    "Factorization": "mmcam.concepts.factorization",
    "fuse_layers": "mmcam.engine.fusion",
    "Explanation": "mmcam.explanation",
    "ClassScore": "mmcam.targets",
    "FunctionTarget": "mmcam.targets",
    "Negated": "mmcam.targets",
    "Target": "mmcam.targets",
}
__all__ = [
    "METHODS",
    "ClassScore",
    "Explainer",
    "Explanation",
    "Factorization",
    "FunctionTarget",
    "LayerCapture",
    "Layout",
    "Negated",
    "Target",
    "explain",
    "factorize",
    "fuse_layers",
]


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'mmcam' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
