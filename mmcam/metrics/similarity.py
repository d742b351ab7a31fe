"""How alike two maps are, as Quantus measures it for its randomisation tests: SSIM of the flattened maps."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mmcam.metrics.contract import Case, Metric
from mmcam.targets import ClassAdvantage, ClassLogProb, ClassMargin, ClassScore, logits_of

SSIM_WINDOW = 7
SSIM_K1, SSIM_K2 = 0.01, 0.03


def flat_ssim(a: Tensor, b: Tensor) -> Tensor:
    """SSIM (Wang et al. 2004) of each pair of maps read as 1-D signals, as Quantus's ``ssim`` computes it
    with scikit-image: (N, ...) and (N, ...) -> (N,).

    Over windows of 7 values (sample statistics): S = (2 mu_a mu_b + C1)(2 s_ab + C2) /
    ((mu_a^2 + mu_b^2 + C1)(s_a^2 + s_b^2 + C2)), C_i = (K_i R)^2 with R the pair's value range,
    averaged over the windows that lie wholly inside the signal.
    """
    x, y = a.flatten(1).double(), b.flatten(1).double()
    both = torch.cat([x, y], dim=1)
    value_range = (both.amax(dim=1) - both.amin(dim=1)).abs()[:, None]

    def windowed(signal: Tensor) -> Tensor:
        return F.avg_pool1d(signal[:, None], SSIM_WINDOW, stride=1)[:, 0]

    unbiased = SSIM_WINDOW / (SSIM_WINDOW - 1)
    mean_x, mean_y = windowed(x), windowed(y)
    var_x = unbiased * (windowed(x * x) - mean_x**2)
    var_y = unbiased * (windowed(y * y) - mean_y**2)
    cov = unbiased * (windowed(x * y) - mean_x * mean_y)
    c1, c2 = (SSIM_K1 * value_range) ** 2, (SSIM_K2 * value_range) ** 2
    ssim = ((2 * mean_x * mean_y + c1) * (2 * cov + c2)) / (
        (mean_x**2 + mean_y**2 + c1) * (var_x + var_y + c2)
    )
    return ssim.mean(dim=1).float()


def random_other_classes(classes: list[int], count: int, seed: int = 0) -> list[int]:
    """For each class, one of the other ``count - 1`` classes drawn at random, as Quantus's random-logit
    test draws them (numpy seeded with ``seed``, one draw per class of the batch)."""
    draws = np.random.RandomState(seed).randint(0, count - 1, len(classes))
    return [[c for c in range(count) if c != cls][draw] for cls, draw in zip(classes, draws)]


RANDOM_LOGIT_TARGETS = (ClassScore, ClassLogProb, ClassAdvantage, ClassMargin)  # one class's score


class RandomLogit(Metric):
    """Quantus's random-logit test (Sixt et al., arXiv 1912.09818): the SSIM (``flat_ssim``) between each
    target's map and the map of a class drawn at random among the others (``random_other_classes``, as
    Quantus draws it, seeded with the run's seed); lower says the map depends on the class. NaN for a
    target that is not one class's score (a caption word) and for a model-free baseline."""

    name, label, better = "random-logit", "SSIM with a random other class's map", "lower"
    needs = frozenset({"settings", "model", "forward", "explainer", "inputs", "targets"})

    def __call__(self, case: Case) -> Tensor:
        kinds = [type(target) for target in case.targets]
        if case.model_free or any(kind not in RANDOM_LOGIT_TARGETS for kind in kinds):
            return case.nothing()
        with torch.no_grad():
            classes = logits_of(case.forward(case.model, case.inputs)).shape[1]
        drawn = random_other_classes(
            [target.index(0) for target in case.targets], classes, case.settings.seed
        )
        others = [kind(other) for kind, other in zip(kinds, drawn)]
        return flat_ssim(case.maps, case.explainer(None)(case.inputs, others).maps[0])
