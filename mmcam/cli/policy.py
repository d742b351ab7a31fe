"""Which method a command explains with: ``--method``, else the model's default; and the smoothing and
perturbation options that only some methods accept, refused before any work."""

from __future__ import annotations

from collections.abc import Sequence

from mmcam.cli.options import PerturbationOptions, SmoothingOptions

# each perturbation option: its field of PerturbationOptions, the methods that take it, their keyword
PERTURBATION_SETTINGS = (
    ("occlusion_window", ("occlusion",), "window"),
    ("occlusion_stride", ("occlusion",), "stride"),
    ("rise_masks", ("rise",), "masks"),
    ("rise_cells", ("rise",), "cells"),
    ("fill", ("occlusion", "rise"), "fill"),
)


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


def perturbation_settings(options: PerturbationOptions, methods: Sequence[str]) -> dict[str, dict]:
    """For each of ``methods`` (CAM method names) that takes them, the keyword options the perturbation
    options given set, by its canonical name (``{"occlusion": {"window": 2, "fill": "blur"}}``); an option
    given that none of ``methods`` takes is refused, naming the methods that take it."""
    from mmcam.engine.methods import get_method

    names = {get_method(method).name for method in methods}
    settings: dict[str, dict] = {}
    for field, takers, keyword in PERTURBATION_SETTINGS:
        value = getattr(options, field)
        if value is None:
            continue
        if not names & set(takers):
            flag = "--" + field.replace("_", "-")
            raise ValueError(
                f"{flag} is a setting of {' and '.join(takers)}, not of {', '.join(sorted(names)) or 'the baselines'}: "
                f"explain with {' or '.join(takers)} (--method; eval: --methods) or drop {flag}"
            )
        for name in names & set(takers):
            settings.setdefault(name, {})[keyword] = value
    return settings


def configured(method: str, settings: dict[str, dict]):
    """``method`` (a name) built with its entry of ``settings`` (``perturbation_settings``), or the name
    itself when it has none."""
    from mmcam.engine.methods import get_method

    name = get_method(method).name
    return get_method(method, **settings[name]) if name in settings else method
