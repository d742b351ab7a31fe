"""Name directions of a token layer instead of its channels (issue 33, the ViT fixture): does a sentence whose
units are directions of the token space meet the goals that channel units miss?

One contract for every kind of unit. A basis is a mean mu (C,), an encoder E (n, C) and a decoder D (n, C): a
token x has coefficients s = (x - mu) E^T, and unit j's part of it is s_j D_j. With ``split`` a direction and
its opposite are two units (s_j^+ = max(s_j, 0) with D_j, s_j^- = max(-s_j, 0) with -D_j), since a component's
sign is arbitrary. The channels themselves are the basis mu = 0, E = D = I without split: the CNN path.

* label: unit u's map is its coefficient over the patch tokens; thresholded at its top 0.5% over the 200 probe
  scenes and labelled by the same compositional search as channels (``dissect``);
* evidence: the first-order part of the score along the unit, x_ku = sum_t c_tu (G_kt . D_u) over the patch
  tokens t (for channels: sum_t G_kt,u A_t,u, what the sentences use now);
* ablation: each named unit's part is taken out of every patch token, x_t <- x_t - sum_{u in U} c_tu D_u
  (for channels: zeroing them); drops of the named units, as many random units and the next concepts' units.

Bases: ``channels``; ``pca`` (all principal directions of the probe's patch tokens, split); ``ica`` (FastICA's
unmixing and mixing, split); ``nmf`` (NMF of the tokens shifted by their minimum, coefficients by
multiplicative updates with the components fixed); ``cav`` (concept activation vectors, Kim et al. 2018: per
atom, the least-squares probe direction telling its patches from the rest, split); ``grad`` (what the score
reads: the eigenvectors of the class logits' gradients' second moment M = sum_k sum_t G_kt G_kt^T over the probe's
patch tokens and all classes k, strongest first, split); ``gradica`` / ``gradcav`` (ICA / CAVs of the tokens'
coordinates in the top ``--components`` of those directions). ``--blocks 3`` fits within each head's slice of
an attention's value vectors (``--layer vit.layers.3.attention.v_proj``: the last block's CLS reads patch tokens
only through them, CLS += sum_t a_t W_o V_t, so the channels' evidence there is weighted by CLS's attention a_t);
``--objects`` fits on the patches objects cover only.

Run: ``PYTHONPATH=$PWD .venv/bin/python tasks/concepts/directions.py --bases channels,pca,ica,nmf,cav``
(probe: 200 scenes of seed 60000; 40 held-out scenes of seed 70000, as measure.py).
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass

import numpy as np
import torch
from measure import MODELS, count_sentence, sentence_figures  # tasks/concepts/measure.py, beside this script
from PIL import Image
from torch import Tensor, nn
from torch.nn import functional as F

from mmcam.concepts.ablation import ablation_sets
from mmcam.concepts.dissect import dissect
from mmcam.concepts.factorization import nmf
from mmcam.concepts.probes import shapes_probe
from mmcam.concepts.sentences import describe
from mmcam.engine.gradients import target_gradients
from mmcam.loading import load_classifier
from mmcam.zoo import make_scenes
from mmcam.zoo.concepts import ATOMS, concept_masks


@dataclass
class Basis:
    """Units of a token layer: see the module's docstring. ``nonnegative``: coefficients by NMF updates."""

    mean: Tensor
    encoder: Tensor
    decoder: Tensor
    split: bool
    nonnegative: bool = False

    def coefficients(self, x: Tensor) -> Tensor:
        """(..., T, C) tokens -> (..., T, U) unit coefficients c_tu."""
        if self.nonnegative:  # min_W ||x - mu - W H||, W >= 0, H fixed (Lee & Seung's W step)
            flat = (x - self.mean).reshape(-1, x.shape[-1]).clamp_min(0)
            h = self.decoder
            w = torch.full((len(flat), len(h)), float(flat.mean()) / len(h) + 1e-6, dtype=flat.dtype)
            for _ in range(100):
                w = w * (flat @ h.T) / (w @ (h @ h.T)).clamp_min(1e-12)
            return w.reshape(*x.shape[:-1], len(h))
        s = (x - self.mean) @ self.encoder.T
        return torch.cat([s.clamp_min(0), (-s).clamp_min(0)], -1) if self.split else s

    @property
    def directions(self) -> Tensor:
        """(U, C) D_u."""
        return torch.cat([self.decoder, -self.decoder]) if self.split else self.decoder

    def parts(self, x: Tensor, keep: Tensor) -> Tensor:
        """sum_{u: keep_u} c_tu D_u for tokens x (..., T, C) and ``keep`` (..., U) 0/1."""
        return (self.coefficients(x) * keep.unsqueeze(-2)) @ self.directions


def logits_and_output(model: nn.Module, module: nn.Module, inputs: Tensor) -> tuple[Tensor, Tensor]:
    """The model's logits and ``module``'s output (B, 1 + patches, C) on ``inputs``."""
    captured = {}
    handle = module.register_forward_hook(lambda m, a, out: captured.update(a=out))
    try:
        logits = model(inputs).logits
    finally:
        handle.remove()
    return logits, captured["a"]


def probe_tokens(
    model: nn.Module, module: nn.Module, classifier, scenes, gradients: bool = False
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Patch tokens (N 64, C) of ``scenes`` at ``module``, their atoms' presence (N 64, K), a patch a third
    covered or more, and with ``gradients`` the gradients' second moment M = sum_k sum_t G_kt G_kt^T (C, C) of
    every class logit k over the patch tokens t (else None)."""
    tokens, labels, moment = [], [], None
    for start in range(0, len(scenes), 16):
        chunk = scenes[start : start + 16]
        with torch.set_grad_enabled(gradients):
            logits, output = logits_and_output(
                model, module, classifier.preprocess([Image.fromarray(s.image) for s in chunk])
            )
        if gradients:  # every class's gradient (B, K, 1 + patches, C) from one batched backward
            g = target_gradients(logits, output)[:, :, 1:].reshape(-1, output.shape[-1]).double()
            moment = g.T @ g if moment is None else moment + g.T @ g
        patches = output[:, 1:].detach()
        side = math.isqrt(patches.shape[1])
        masks = torch.from_numpy(np.stack([concept_masks(s, ATOMS) for s in chunk])).float()
        present = F.adaptive_avg_pool2d(masks, (side, side)) > 0.3
        tokens.append(patches.reshape(-1, patches.shape[-1]))
        labels.append(present.permute(0, 2, 3, 1).reshape(-1, len(ATOMS)))
    return torch.cat(tokens).double(), torch.cat(labels), moment


def fit_basis(
    kind: str, x: Tensor, labels: Tensor, components: int, seed: int = 0, moment: Tensor | None = None
) -> Basis:
    """The basis ``kind`` fitted on probe tokens ``x`` (N, C) (``labels`` (N, K) for ``cav``, the gradients'
    second moment ``moment`` (C, C) for ``grad``, ``gradica`` and ``gradcav``)."""
    channels = x.shape[1]
    mean = x.mean(0)
    if kind == "channels":
        eye = torch.eye(channels, dtype=x.dtype)
        return Basis(torch.zeros(channels, dtype=x.dtype), eye, eye, split=False)
    if kind == "pca":
        _, _, v = torch.linalg.svd(x - mean, full_matrices=False)
        return Basis(mean, v[:components], v[:components], split=True)
    if kind == "ica":
        from sklearn.decomposition import FastICA

        ica = FastICA(components, whiten="unit-variance", random_state=seed, max_iter=1000).fit(x.numpy())
        return Basis(
            torch.from_numpy(ica.mean_),
            torch.from_numpy(ica.components_),
            torch.from_numpy(ica.mixing_.T),
            True,
        )
    if kind.startswith("grad"):  # the directions the class logits' gradients take, strongest first
        _, vectors = torch.linalg.eigh(moment)
        p = vectors.flip(1)[:, :components].T  # (k, C), orthonormal rows
        if kind == "grad":
            return Basis(mean, p, p, split=True)
        # gradica / gradcav: ICA or CAVs of the tokens' coordinates z = (x - mu) P^T in that top-k subspace,
        # mapped back: s = (z - m) W^T = (x - mu - m P) (W P)^T, decoder A P
        inner = fit_basis(kind.removeprefix("grad"), (x - mean) @ p.T, labels, len(p), seed)
        return Basis(mean + inner.mean @ p, inner.encoder @ p, inner.decoder @ p, split=True)
    if kind == "nmf":
        minima = x.amin(0)
        _, h = nmf((x - minima).float(), components, iterations=400, seed=seed)
        return Basis(minima, h.double(), h.double(), split=False, nonnegative=True)
    if kind == "cav":
        centered = x - mean
        w = torch.linalg.lstsq(centered, labels.double() * 2 - 1).solution.T  # (K, C)
        v = w / w.norm(dim=1, keepdim=True)
        return Basis(mean, v, v, split=True)
    raise ValueError(kind)


def fit_blocks(
    kind: str, x: Tensor, labels: Tensor, components: int, seed: int, moment: Tensor | None, blocks: int
) -> Basis:
    """``fit_basis`` within each of ``blocks`` equal slices of the channels (an attention's value vectors: one
    per head), ``components / blocks`` units each, stacked block-diagonally: a unit reads and writes one slice."""
    if blocks == 1:
        return fit_basis(kind, x, labels, components, seed, moment)
    size = x.shape[1] // blocks
    parts = [
        fit_basis(
            kind,
            x[:, b * size : (b + 1) * size],
            labels,
            components // blocks,
            seed,
            None if moment is None else moment[b * size : (b + 1) * size, b * size : (b + 1) * size],
        )
        for b in range(blocks)
    ]
    return Basis(
        torch.cat([p.mean for p in parts]),
        torch.block_diag(*[p.encoder for p in parts]),
        torch.block_diag(*[p.decoder for p in parts]),
        parts[0].split,
        parts[0].nonnegative,
    )


class UnitMaps(nn.Module):
    """The model read as its units' coefficient maps (B, U, h, w) at ``layer``, for ``dissect``."""

    def __init__(self, model: nn.Module, module: nn.Module, basis: Basis):
        super().__init__()
        self.model, self.module, self.basis = model, module, basis
        self.units = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        _, output = logits_and_output(self.model, self.module, x)
        coefficients = self.basis.coefficients(output[:, 1:].double()).float()  # (B, T, U)
        side = math.isqrt(coefficients.shape[1])
        return self.units(coefficients.transpose(1, 2).reshape(len(x), -1, side, side))


def measure(
    name: str,
    kind: str,
    components: int,
    scenes: int,
    seed: int,
    layer: str = "",
    fit_seed: int = 0,
    blocks: int = 1,
    objects: bool = False,
) -> dict:
    spec, default = MODELS[name]
    layer = layer or default
    classifier = load_classifier(spec)
    model = classifier.model.eval()
    module = model.get_submodule(layer)
    x, labels, moment = probe_tokens(
        model, module, classifier, make_scenes(200, seed=60_000), gradients=kind.startswith("grad")
    )
    if objects:  # fit on the patches an object covers (a third or more); the gradients stay over all
        x, labels = x[labels.any(1)], labels[labels.any(1)]
    basis = fit_blocks(kind, x, labels, components or x.shape[1], fit_seed, moment, blocks)
    probe = shapes_probe()

    def batches():
        for images, masks in probe.batches():
            yield classifier.preprocess(images), masks

    table = dissect(
        UnitMaps(model, module, basis), "units", batches, probe.concepts, probe.size, progress=False
    )
    directions = basis.directions.float()

    def scores_with(inputs: Tensor, classes: list[int], keep: Tensor) -> Tensor:
        """Class scores (S, K) with each row of ``keep`` (S, U)'s units taken out of the patch tokens."""

        def hook(m, a, out):
            out = out.clone()
            out[:, 1:] = out[:, 1:] - basis.parts(out[:, 1:].double(), keep.double()).float()
            return out

        handle = module.register_forward_hook(hook)
        with torch.no_grad():
            logits = model(inputs.expand(len(keep), -1, -1, -1)).logits
        handle.remove()
        return logits[:, classes]

    tally = {"n": 0, "first": 0, "both": 0, "conflicts": 0, "repeats": 0}
    drops = {"named": [], "random": [], "next": []}
    ious = []
    example = ""
    units = directions.shape[0]
    for scene in make_scenes(scenes, seed=seed):
        inputs = classifier.preprocess([Image.fromarray(scene.image)])
        present = sorted({obj.class_index for obj in scene.objects})
        logits, tokens = logits_and_output(model, module, inputs)
        logits = logits[0]
        coefficients = basis.coefficients(tokens[0, 1:].detach().double()).float()  # (T, U)
        kept = [c for c in present if logits[c] > 0]
        for k, c in enumerate(kept):
            (gradient,) = torch.autograd.grad(logits[c], tokens, retain_graph=True)
            contributions = (coefficients * (gradient[0, 1:] @ directions.T)).sum(0)  # (U,)
            label = classifier.class_names[c]
            color, shape = label.split()
            described = describe(label, contributions, table)
            count_sentence(tally, described, color, shape)
            ious += [table.units[u].score for e in described.supporting for u in e.units]
            example = example or described.text
            sets = ablation_sets(contributions, table, seed=k)
            if not sets["named"]:
                continue
            keep = torch.zeros(4, units)
            for row, key in enumerate(("named", "random", "next"), start=1):
                keep[row, sets[key]] = 1
            s = scores_with(inputs, [c], keep)[:, 0]
            for row, key in enumerate(("named", "random", "next"), start=1):
                if key != "next" or sets["next"]:
                    drops[key].append(float(s[0] - s[row]))
    named_labels = [u for u in table.units if u.concept]
    return {
        "model": name,
        "layer": layer,
        "basis": kind,
        "fit_seed": fit_seed,
        "blocks": blocks,
        "objects": objects,
        "units": units,
        "labelled": len(named_labels),
        **sentence_figures(tally, drops, ious),
        "table_iou": round(sum(u.score for u in named_labels) / max(len(named_labels), 1), 3),
        "example": example,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="vit")
    parser.add_argument("--bases", default="channels,pca,ica,nmf,cav")
    parser.add_argument(
        "--components", type=int, default=0, help="components of pca/ica/nmf (0: all channels)"
    )
    parser.add_argument("--layer", default="", help="a token layer whose output is (B, 1 + patches, C)")
    parser.add_argument("--fit-seed", type=int, default=0, help="seed of ICA and NMF")
    parser.add_argument(
        "--blocks", type=int, default=1, help="fit within this many equal channel slices (heads of a v_proj)"
    )
    parser.add_argument("--objects", action="store_true", help="fit on the patches objects cover only")
    parser.add_argument("--scenes", type=int, default=40)
    parser.add_argument("--seed", type=int, default=70_000)
    arguments = parser.parse_args()
    for kind in arguments.bases.split(","):
        print(
            json.dumps(
                measure(
                    arguments.model,
                    kind,
                    arguments.components,
                    arguments.scenes,
                    arguments.seed,
                    arguments.layer,
                    arguments.fit_seed,
                    arguments.blocks,
                    arguments.objects,
                )
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
