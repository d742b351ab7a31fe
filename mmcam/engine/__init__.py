"""The shared engine: capture a layer, differentiate K targets at once, combine into maps."""

from mmcam.engine.capture import LayerCapture
from mmcam.engine.explainer import Explainer, explain
from mmcam.engine.layouts import Layout
from mmcam.engine.methods import METHODS

__all__ = ["METHODS", "Explainer", "LayerCapture", "Layout", "explain"]
