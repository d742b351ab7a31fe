"""Gradients of K targets per sample from one vectorized backward."""

from __future__ import annotations

import sys
from collections.abc import Iterable

import torch
from torch import Tensor
from tqdm import tqdm

from mmcam.engine.warn import warn_user

LONG_BACKWARD = 4  # chunks of targets from which the batched backward shows a progress bar on stderr


def chunk_starts(count: int, chunk_size: int) -> Iterable[int]:
    """0, ``chunk_size``, 2 ``chunk_size``, ... below ``count``: the first target of each chunk of targets, with a
    progress bar on stderr from ``LONG_BACKWARD`` chunks on (a long caption's words)."""
    starts = range(0, count, chunk_size)
    return tqdm(
        starts,
        desc="targets",
        unit="chunk",
        file=sys.stderr,
        leave=False,
        disable=len(starts) < LONG_BACKWARD,
    )


def _seeds(scores: Tensor, per_sample: bool) -> Tensor:
    """One-hot ``grad_outputs`` shaped like ``scores`` (B, K): one per target (K), or per target and sample (B*K)."""
    count = scores.numel() if per_sample else scores.shape[1]
    one_hot = torch.eye(count, dtype=scores.dtype, device=scores.device)
    if per_sample:
        return one_hot.reshape(count, *scores.shape)
    return one_hot[:, None, :].expand(count, *scores.shape)


def _batched_or_one_by_one(scores: Tensor, tensors: list[Tensor], seeds: Tensor, options: dict) -> list:
    """The gradients of ``seeds`` (S, ...) from one batched backward; where the backward cannot be batched
    (a graph compiled by ``torch.compile``, whose backward has no batching rule for ``aten::mm.out``), from
    S backwards, seed by seed (with a warning). The batched try keeps the graph, so the seed-by-seed
    backwards can follow it."""
    try:
        return list(
            torch.autograd.grad(
                scores, tensors, seeds, is_grads_batched=True, **{**options, "retain_graph": True}
            )
        )
    except RuntimeError as error:
        if "Batching rule not implemented" not in str(error):
            raise
    warn_user(
        "the model's backward cannot be batched over targets (a torch.compile graph?): the targets' gradients "
        "come from one backward each, which is slower; explain the uncompiled module (model._orig_mod) for speed"
    )
    last = len(seeds) - 1
    singles = [
        torch.autograd.grad(
            scores, tensors, seed, **{**options, "retain_graph": options["retain_graph"] or s < last}
        )
        for s, seed in enumerate(seeds)
    ]
    return [None if parts[0] is None else torch.stack(parts) for parts in zip(*singles)]


def target_gradients(
    scores: Tensor,
    starts: Tensor | list[Tensor],
    chunk_size: int = 32,
    per_sample: bool = False,
    create_graph: bool = False,
    keep_graph: bool = False,
) -> Tensor | list[Tensor]:
    """d scores[:, k] / d start for every k: (B, K) scores, start (B, ...) -> (B, K, ...); for a start whose
    N rows are tiles of the samples, (N, ...) -> (N, K, ...) (not with ``per_sample``).

    ``starts`` may be a list of tensors: their gradients come from the same backward, as a list.
    A start a score does not reach gets zeros.

    Samples are independent in eval mode, so the gradient of column k summed over the batch is
    each sample's own gradient. The K columns are backpropagated together by
    ``torch.autograd.grad(..., is_grads_batched=True)`` with one-hot ``grad_outputs``, in chunks of
    ``chunk_size`` seeds to bound the memory of the batched backward. With ``per_sample`` (for
    models whose samples mix after the layer) every (sample, target) pair gets its own seed and
    sample b keeps only the gradient at its own activation: d y_bk / d A_b, the others held fixed.
    With ``create_graph`` the gradients keep their graph (and the forward's), to be differentiated again;
    with ``keep_graph`` the forward's graph is kept for another call.
    """
    tensors = starts if isinstance(starts, list) else [starts]
    seeds = _seeds(scores, per_sample)
    count = seeds.shape[0]
    chunks = []
    for begin in chunk_starts(count, chunk_size):
        end = min(begin + chunk_size, count)
        options = {
            "retain_graph": create_graph or keep_graph or end < count,
            "create_graph": create_graph,
            "allow_unused": True,
        }
        if end - begin == 1:
            found = torch.autograd.grad(scores, tensors, seeds[begin], **options)
            found = [None if g is None else g[None] for g in found]
        else:
            found = _batched_or_one_by_one(scores, tensors, seeds[begin:end], options)
        # zeros for a start no score reaches (materialize_grads would drop the seeds' axis when batched)
        chunks.append(
            [
                torch.zeros(end - begin, *t.shape, dtype=t.dtype, device=t.device) if g is None else g
                for g, t in zip(found, tensors)
            ]
        )
    joined = [torch.cat(parts) for parts in zip(*chunks)]
    if per_sample:
        batch = scores.shape[0]
        rows = torch.arange(batch, device=scores.device)
        joined = [g.reshape(batch, scores.shape[1], *g.shape[1:])[rows, :, rows] for g in joined]
    else:
        joined = [g.transpose(0, 1) for g in joined]
    return joined if isinstance(starts, list) else joined[0]


def mixes_samples(scores: Tensor, start: Tensor, owners: Tensor | None = None) -> bool:
    """Whether sample 0's scores depend on the other samples' activations (batch statistics after the
    layer); with ``owners`` (N,), the rows of ``start`` are tiles and the others' are those not owned by 0."""
    if scores.shape[0] < 2 or not scores.requires_grad:
        return False
    (gradient,) = torch.autograd.grad(scores[0].sum(), start, retain_graph=True, allow_unused=True)
    if gradient is None:
        return False
    others = gradient[1:] if owners is None else gradient[owners.to(gradient.device) != 0]
    return bool(others.abs().amax() > 0)
