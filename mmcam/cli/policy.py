"""Which method a command explains with: ``--method``, else the model's default; and the smoothing options
that only some methods accept, refused before any work."""

from __future__ import annotations

from mmcam.cli.options import SmoothingOptions


def smoothing(options: SmoothingOptions, method: str) -> dict:
    """The ``Explainer`` options of ``--eigen-smooth`` and ``--aug-smooth`` for ``method`` (after
    ``chosen_method``); ``--eigen-smooth`` with a method that has no channel weights is refused."""
    from mmcam.engine.methods import capable, get_method

    if options.eigen_smooth and not get_method(method).channel_weights:
        raise ValueError(
            f"--eigen-smooth needs a method with channel weights, not {method}: pass --method with "
            f"one of {', '.join(capable('channel_weights'))}"
        )
    return {"eigen_smooth": options.eigen_smooth, "aug_smooth": options.aug_smooth}


def chosen_method(method: str | None, concepts: bool, model) -> str:
    """``method`` (``--method``), else the model's default method; with ``concepts`` (``--concepts``), a
    default without channel weights gives way to Grad-CAM (the sentences are built from channel weights)."""
    from mmcam.engine.methods import get_method

    if method:
        return method
    if concepts and not get_method(model.method).channel_weights:
        return "gradcam"
    return model.method
