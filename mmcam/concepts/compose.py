"""Compositional labels of units (Mu and Andreas 2020, "Compositional Explanations of Neurons", arXiv 2006.14032).

A unit is labelled by the logical form over the probe's atomic concepts (colors, shapes, sizes, positions)
that best matches where it fires: F = a_1 op_2 a_2 op_3 a_3, op in {AND, OR, AND NOT}, read left to right.

Every probe pixel has a signature, the set of atoms whose masks hold it, and a formula is true or false on a
whole signature. So a unit's IoU with any formula follows from two histograms over signatures s: N_s, the
probe pixels with signature s, and H_cs, those of them where unit c is active (M_c = [A_c > T_c]):

    |M_c ∩ F| = sum_s F_s H_cs,    |M_c ∪ F| = sum_s H_cs + sum_s F_s N_s - |M_c ∩ F|.

All candidate formulas of all units are scored at once as matrix products over the (few hundred) signatures.
The search is a beam search by length (``BEAM`` formulas per unit extended by every op and atom); a unit keeps
a longer formula only where its IoU beats the shorter one's by ``MIN_GAIN``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import Tensor

BEAM = 5
MAX_LENGTH = 3
MIN_GAIN = 0.02  # absolute IoU a longer formula must add over the best shorter one
OPS = ("AND", "OR", "AND NOT")
_BITS = 62  # atoms packed per int64 word of a signature key


class SignatureCounter:
    """Accumulates N_s and H_cs batch by batch, from active units (B, C, P) and atom masks (B, K, P)."""

    def __init__(self, channels: int, atoms: int):
        self.channels, self.atoms = channels, atoms
        self.index: dict[tuple[int, ...], int] = {}
        self.rows: list[Tensor] = []  # each signature's atoms, (K,) bool
        self.pixels = torch.zeros(0, dtype=torch.float64)
        self.active = torch.zeros(channels, 0, dtype=torch.float64)

    def add(self, active: Tensor, masks: Tensor) -> None:
        """Count one batch: ``active`` (B, C, P) bool, ``masks`` (B, K, P) bool, on the same pixels."""
        flat = masks.permute(0, 2, 1).reshape(-1, self.atoms).cpu()
        keys = self._keys(flat)
        unique, inverse = torch.unique(keys, dim=0, return_inverse=True)
        known = []
        for u, key in enumerate(map(tuple, unique.tolist())):
            if key not in self.index:
                self.index[key] = len(self.rows)
                self.rows.append(flat[(inverse == u).nonzero()[0, 0]])
            known.append(self.index[key])
        signature = torch.tensor(known, dtype=torch.long)[inverse]  # (B P,)
        count = len(self.rows)
        self.pixels = torch.cat([self.pixels, self.pixels.new_zeros(count - len(self.pixels))])
        self.active = torch.cat(
            [self.active, self.active.new_zeros(self.channels, count - self.active.shape[1])], 1
        )
        self.pixels += torch.bincount(signature, minlength=count).double()
        b, c, p = active.cpu().nonzero(as_tuple=True)
        cells = c * count + signature.view(active.shape[0], -1)[b, p]
        self.active += (
            torch.bincount(cells, minlength=self.channels * count).view(self.channels, count).double()
        )

    def _keys(self, flat: Tensor) -> Tensor:
        """(P, W) int64: the atoms of each pixel packed into words."""
        words = []
        for start in range(0, self.atoms, _BITS):
            part = flat[:, start : start + _BITS].long()
            words.append((part << torch.arange(part.shape[1])).sum(1))
        return torch.stack(words, 1)

    def truth(self) -> Tensor:
        """(S, K) bool: which atoms hold on each signature."""
        return torch.stack(self.rows) if self.rows else torch.zeros(0, self.atoms, dtype=torch.bool)


@dataclass(frozen=True)
class Formula:
    """A left-to-right formula: ``atoms[0]``, then ``ops[i]`` with ``atoms[i + 1]``."""

    atoms: tuple[int, ...]
    ops: tuple[str, ...] = ()

    def text(self, names: list[str]) -> str:
        """ "red", "red AND circle", "(red OR blue) AND NOT small". A conjunction lists its asserted atoms,
        then its negated ones, in the order of ``names`` (one text per formula, whatever order the search met
        them in), and so does a disjunction; where an OR meets a conjunction, the left part is bracketed."""
        if self.ops and set(self.ops) == {"OR"}:
            return " OR ".join(names[atom] for atom in sorted(self.atoms))
        if "OR" not in self.ops:
            literals = sorted(
                zip(("",) + self.ops, self.atoms), key=lambda pair: (pair[0] == "AND NOT", pair[1])
            )
            return " AND ".join(("NOT " if op == "AND NOT" else "") + names[atom] for op, atom in literals)
        text = names[self.atoms[0]]
        for i, (op, atom) in enumerate(zip(self.ops, self.atoms[1:])):
            if i and (self.ops[i - 1] == "OR") != (op == "OR"):
                text = f"({text})"
            text = f"{text} {op} {names[atom]}"
        return text


def positive_atoms(label: str) -> set[str]:
    """The atoms a label's formula asserts (not the negated ones): "(red OR blue) AND NOT small" -> {red, blue}."""
    parts = re.split(r"\s+(AND NOT|AND|OR)\s+", label.replace("(", "").replace(")", ""))
    atoms = {parts[0]}
    for op, atom in zip(parts[1::2], parts[2::2]):
        if op != "AND NOT":
            atoms.add(atom)
    return atoms


def ious(active: Tensor, pixels: Tensor, truths: Tensor) -> Tensor:
    """IoU of each unit with each formula: ``active`` (C, S) H_cs, ``pixels`` (S,) N_s, ``truths`` (C, F, S)
    or (F, S) bool -> (C, F)."""
    truths = truths.double()
    if truths.ndim == 2:
        intersection = active @ truths.T
        area = (truths @ pixels)[None]
    else:
        intersection = torch.einsum("cs,cfs->cf", active, truths)
        area = truths @ pixels
    union = active.sum(1, keepdim=True) + area - intersection
    return intersection / union.clamp_min(1)


def _extend(truths: Tensor, atoms: Tensor) -> Tensor:
    """(C, B, S) beam truths -> (C, B, len(OPS) K, S): each formula extended by each op and atom (K, S)."""
    a = atoms[None, None]
    t = truths[:, :, None]
    return torch.cat([t & a, t | a, t & ~a], dim=2)


def search(
    active: Tensor,
    pixels: Tensor,
    atoms: Tensor,
    max_length: int = MAX_LENGTH,
    beam: int = BEAM,
    min_gain: float = MIN_GAIN,
) -> tuple[list[Formula], Tensor, Tensor, Tensor]:
    """The best formula per unit: (formulas, their IoU (C,), the best single atom (C,), its IoU (C,)).

    ``active`` (C, S) and ``pixels`` (S,) the histograms, ``atoms`` (S, K) the signature's atoms. Length 1
    scores the K atoms; each longer length extends every unit's ``beam`` best formulas of the previous one
    by every op and atom, all units at once, and the unit's label moves to the longer length's best only
    where it gains ``min_gain`` IoU over the label so far."""
    channels, count = active.shape[0], atoms.shape[1]
    atom_truth = atoms.T.contiguous()  # (K, S)
    first = ious(active, pixels, atom_truth)  # (C, K)
    atom_iou, atom_best = first.max(1)
    width = min(beam, count)
    scores, top = first.topk(width, dim=1)
    formulas = [[Formula((k,)) for k in row] for row in top.tolist()]
    truths = atom_truth[top]  # (C, B, S)
    best = [f[0] for f in formulas]
    best_iou = scores[:, 0].clone()
    for _ in range(1, max_length):
        candidates = _extend(truths, atom_truth)  # (C, B, 3K, S)
        flat = candidates.flatten(1, 2)
        scored = ious(active, pixels, flat)  # (C, B 3K)
        order = scored.argsort(dim=1, descending=True)
        kept, kept_truths, kept_scores = [], [], []
        for c in range(channels):
            chosen, seen = [], set()
            for index in order[c].tolist():
                value = round(float(scored[c, index]), 9)
                if value in seen:  # the same IoU: almost always the same pixels (a AND b, b AND a)
                    continue
                seen.add(value)
                chosen.append(index)
                if len(chosen) == width:
                    break
            chosen += chosen[-1:] * (width - len(chosen))  # a full beam: every unit's rows stack
            picked = torch.tensor(chosen)
            parents, op, atom = picked // (len(OPS) * count), picked // count % len(OPS), picked % count
            kept.append(
                [
                    Formula(formulas[c][p].atoms + (a,), formulas[c][p].ops + (OPS[o],))
                    for p, o, a in zip(parents.tolist(), op.tolist(), atom.tolist())
                ]
            )
            kept_truths.append(flat[c, chosen])
            kept_scores.append(scored[c, chosen])
        formulas, truths = kept, torch.stack(kept_truths)
        top_scores = torch.stack(kept_scores)
        for c in range(channels):
            if float(top_scores[c, 0]) >= float(best_iou[c]) + min_gain:
                best[c], best_iou[c] = formulas[c][0], top_scores[c, 0]
    return best, best_iou, atom_best, atom_iou
