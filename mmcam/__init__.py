"""mmcam: Grad-CAM explanations for vision and vision-language models.

import mmcam
exp = mmcam.explain(model, images, targets, layer="auto", method="gradcam")
exp.maps    # (B, K, H, W) in [0, 1]
"""

from mmcam.engine import METHODS, Explainer, LayerCapture, Layout, explain
from mmcam.explanation import Explanation
from mmcam.targets import ClassScore, FunctionTarget, Negated, Target

__all__ = [
    "METHODS",
    "ClassScore",
    "Explainer",
    "Explanation",
    "FunctionTarget",
    "LayerCapture",
    "Layout",
    "Negated",
    "Target",
    "explain",
]
__version__ = "0.1.0"
