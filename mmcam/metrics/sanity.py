"""Sanity checks by model-parameter randomization (MPRT; Adebayo et al., "Sanity checks for saliency maps",
arXiv 1810.03292): randomize the layers from the top down, one more at each step; a map that explains the
model must change, so its rank correlation with the trained model's map should fall. The smooth and
efficient variants (Hedström et al., "Sanity checks revisited", arXiv 2401.06465) compare only with the
fully randomized model: smooth MPRT on maps averaged over noisy copies of the input (which removes the
gradient noise that alone can make maps differ), efficient MPRT by how much more complex (higher
histogram entropy) the map becomes."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from mmcam.metrics.contract import Case, Metric
from mmcam.metrics.ranks import spearman

Explain = Callable[[nn.Module], Tensor]
# Smooth MPRT: maps averaged over this many copies of the input (the last one clean), with Gaussian noise of
# this share of the input's value range (Quantus's default share; it averages 50 copies).
SMOOTH_SAMPLES = 10
SMOOTH_NOISE = 0.1


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


def randomization_steps(model: nn.Module, seed: int = 0) -> Iterator[tuple[str, nn.Module]]:
    """Randomize a deep copy of ``model`` one more layer at each step, top first (``parametrized_layers``),
    seeded per layer (``seed + step``): -> (layer randomized at this step, the copy). Every call (every
    shard, every process) randomizes identically; ``model`` itself is never modified."""
    randomized = copy.deepcopy(model)
    modules = dict(randomized.named_modules())
    for step, name in enumerate(parametrized_layers(randomized)):
        randomize_layer(modules[name], seed + step)
        yield name, randomized


def fully_randomized(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of ``model`` with every layer randomized: the last step of ``randomization_steps``."""
    steps = list(randomization_steps(model, seed))
    if not steps:
        raise ValueError("the model has no parameters to randomize: a sanity check needs a trained model")
    return steps[-1][1]


def cascading_randomization(model: nn.Module, explain: Explain, seed: int = 0) -> list[tuple[str, Tensor]]:
    """``explain(model) -> (N, H, W)`` maps; for each step t = 1..T of ``randomization_steps`` ->
    [(layer randomized at step t, (N,) rho_t)] with

        rho_t = Spearman(explain(model), explain(model with its top t layers randomized)).
    """
    reference = explain(model)
    return [
        (name, spearman(reference, explain(randomized)))
        for name, randomized in randomization_steps(model, seed)
    ]


def noisy_copies(image: Tensor, samples: int, magnitude: float, seed: int = 0) -> Tensor:
    """(C, H, W) image -> (samples, C, H, W): ``samples - 1`` copies with Gaussian noise of standard deviation
    ``magnitude`` (max(x) - min(x)), then the image itself (smooth MPRT's samples; Quantus's default
    magnitude is 0.1)."""
    generator = torch.Generator(device=image.device).manual_seed(seed)
    span = image.max() - image.min()
    noise = torch.randn((samples - 1, *image.shape), generator=generator, device=image.device)
    return torch.cat([image + magnitude * span * noise.to(image.dtype), image[None]])


def smoothed_correlation(trained: Tensor, randomized: Tensor) -> Tensor:
    """Smooth MPRT: the maps of K targets on the M ``noisy_copies`` of an input, (M, K, H, W), from the model
    and from its fully randomized copy -> (K,) rho = Spearman(mean_m trained_m, mean_m randomized_m)."""
    return spearman(trained.float().mean(dim=0), randomized.float().mean(dim=0))


def histogram_entropy(maps: Tensor, bins: int = 100) -> Tensor:
    """(K, H, W) maps -> (K,) discrete entropy of each map's values: H = -sum_b p_b ln p_b, with p_b the share
    of the pixels in bin b of ``bins`` equal bins from the map's min to its max (Quantus's
    ``discrete_entropy``); 0 for a constant map."""
    entropies = []
    for values in maps.flatten(1).double():
        low, high = values.min(), values.max()
        if low == high:
            entropies.append(values.new_zeros(()))
            continue
        shares = torch.histc(values, bins, float(low), float(high)) / values.numel()
        entropies.append(-torch.special.xlogy(shares, shares).sum())
    return torch.stack(entropies).float()


def complexity_rise(trained: Tensor, randomized: Tensor, bins: int = 100) -> Tensor:
    """Efficient MPRT: the relative rise of the maps' histogram entropy when the model is fully randomized,
    (H(randomized) - H(trained)) / H(trained), (K, H, W) maps -> (K,); higher says the map depended on
    the trained parameters. NaN where the trained map is constant (H = 0)."""
    before, after = histogram_entropy(trained, bins), histogram_entropy(randomized, bins)
    return torch.where(before > 0, (after - before) / torch.where(before > 0, before, 1), torch.nan)


class Cascading(Metric):
    """``cascading_randomization`` of the case's model: the value is the rank correlation after the last
    step (every layer randomized); ``details`` records every step's. NaN for a model-free baseline."""

    name, label, better = "sanity", "rank corr. after randomization", "lower"
    needs = frozenset({"settings", "model", "explainer", "inputs", "targets"})

    def steps(self, case: Case) -> list[list[float]]:
        """Per randomization step, one rank correlation per target (none for a model-free baseline)."""
        if case.model_free:
            return []

        def explain(model: nn.Module) -> Tensor:
            return case.explainer(model)(case.inputs, case.targets).maps[0]

        def run() -> list[list[float]]:
            steps = cascading_randomization(case.model, explain, case.settings.seed)
            return [correlation.cpu().tolist() for _, correlation in steps]

        return case.once("cascading", run)

    def __call__(self, case: Case) -> Tensor:
        steps = self.steps(case)
        return torch.tensor(steps[-1]) if steps else case.nothing()

    def details(self, case: Case) -> dict:
        return {"sanity_steps": self.steps(case)}


def against_randomized(case: Case, smooth: bool) -> tuple[Tensor, Tensor]:
    """The maps of the case's targets from the model and from its fully randomized copy, (M, K, H, W)
    each, on M = ``SMOOTH_SAMPLES`` noisy copies of the input (the last one clean) when ``smooth``, else
    on the input alone (M = 1): the randomized model explains all copies in one call, once per case."""
    if smooth or ("randomized", True) in case.memo:

        def run() -> tuple[Tensor, Tensor]:
            copies = noisy_copies(case.image, SMOOTH_SAMPLES, SMOOTH_NOISE, case.settings.seed)
            randomized = case.maps_of(copies, case.randomized(case.settings.seed)).float()
            return case.maps_of(copies), randomized

        return case.once(("randomized", True), run)
    return case.once(
        ("randomized", False),
        lambda: (
            case.maps[None],
            case.maps_of(case.image[None], case.randomized(case.settings.seed)).float(),
        ),
    )


class SmoothMPRT(Metric):
    """Smooth MPRT (``smoothed_correlation``) against the fully randomized model; NaN for a model-free
    baseline."""

    name, label, better = "sanity-smooth", "rank corr. after randomization, noise-averaged maps", "lower"
    needs = frozenset({"settings", "randomized", "maps_of"})

    def __call__(self, case: Case) -> Tensor:
        if case.model_free:
            return case.nothing()
        return smoothed_correlation(*against_randomized(case, smooth=True))


class EfficientMPRT(Metric):
    """Efficient MPRT (``complexity_rise``) against the fully randomized model's map of the clean input
    (the last of smooth MPRT's copies when that runs too); NaN for a model-free baseline."""

    name, label, better = "sanity-efficient", "rise in histogram entropy after randomization", "higher"
    needs = frozenset({"settings", "randomized", "maps_of"})

    def __call__(self, case: Case) -> Tensor:
        if case.model_free:
            return case.nothing()
        return complexity_rise(case.maps, against_randomized(case, smooth=False)[1][-1])
