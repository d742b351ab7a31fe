"""Sanity check by cascading model-parameter randomization (Adebayo et al., "Sanity checks for saliency
maps", arXiv 1810.03292): randomize the layers from the top down, one more at each step; a map that
explains the model must change, so its rank correlation with the trained model's map should fall."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import Tensor, nn

from mmcam.metrics.ranks import spearman

Explain = Callable[[nn.Module], Tensor]


def parametrized_layers(model: nn.Module) -> list[str]:
    """The layers randomized one at a time, top (output side) first: the parents of the modules that hold
    parameters of their own (a conv-BN-ReLU block, a transformer sublayer, a linear head is its own), in
    the reverse of registration order, which is the forward order in most models."""
    holders = [
        name
        for name, module in model.named_modules()
        if next(module.parameters(recurse=False), None) is not None
    ]
    parents = [name.rpartition(".")[0] if "." in name else name for name in holders]
    return list(dict.fromkeys(parents[::-1]))


def randomize_layer(layer: nn.Module, seed: int) -> None:
    """Re-initialize the parameters of ``layer`` and its submodules in place, deterministically in ``seed``:
    each module's ``reset_parameters()`` (the architecture's initializer) where it has one, else each of its
    parameters drawn from N(0, sd^2) with the sd of its trained values (1 for a single value)."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for module in layer.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
                continue
            for parameter in module.parameters(recurse=False):
                spread = parameter.std() if parameter.numel() > 1 else torch.ones(())
                parameter.normal_(0, float(spread))


def cascading_randomization(model: nn.Module, explain: Explain, seed: int = 0) -> list[tuple[str, Tensor]]:
    """``explain(model) -> (N, H, W)`` maps; for each step t = 1..T, randomizing one more layer of a deep
    copy of ``model`` from the top, -> [(layer randomized at step t, (N,) rho_t)] with

        rho_t = Spearman(explain(model), explain(model with its top t layers randomized)).

    ``model`` itself is never modified (only its copy is). Randomization is seeded per layer, so every
    call (every shard, every process) randomizes identically.
    """
    reference = explain(model)
    randomized = copy.deepcopy(model)
    modules = dict(randomized.named_modules())
    steps = []
    for step, name in enumerate(parametrized_layers(randomized)):
        randomize_layer(modules[name], seed + step)
        steps.append((name, spearman(reference, explain(randomized))))
    return steps
