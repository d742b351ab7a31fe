"""Gradients of K targets per sample from one vectorized backward."""

from __future__ import annotations

import torch
from torch import Tensor


def target_gradients(
    scores: Tensor, starts: Tensor | list[Tensor], chunk_size: int = 32
) -> Tensor | list[Tensor]:
    """d scores[:, k] / d start for every k: (B, K) scores, start (B, ...) -> (B, K, ...).

    ``starts`` may be a list of tensors: their gradients come from the same backward, as a list.

    Samples are independent in eval mode, so the gradient of column k summed over the batch is
    each sample's own gradient. The K columns are backpropagated together by
    ``torch.autograd.grad(..., is_grads_batched=True)`` with one-hot ``grad_outputs``, in chunks of
    ``chunk_size`` targets to bound the memory of the batched backward.
    """
    tensors = starts if isinstance(starts, list) else [starts]
    count = scores.shape[1]
    one_hot = torch.eye(count, dtype=scores.dtype, device=scores.device)
    chunks = []
    for begin in range(0, count, chunk_size):
        end = min(begin + chunk_size, count)
        seeds = one_hot[begin:end, None, :].expand(end - begin, *scores.shape)
        last = end == count
        if end - begin == 1:
            gradients = [
                g[None] for g in torch.autograd.grad(scores, tensors, seeds[0], retain_graph=not last)
            ]
        else:
            gradients = torch.autograd.grad(
                scores, tensors, seeds, retain_graph=not last, is_grads_batched=True
            )
        chunks.append(gradients)
    joined = [torch.cat(parts).transpose(0, 1) for parts in zip(*chunks)]
    return joined if isinstance(starts, list) else joined[0]
