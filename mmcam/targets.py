"""What is explained: a target maps the model output to one scalar per sample.

A target is called on the output of a forward pass over N rows. N may be a multiple of the
batch size B (the engine stacks masked or noisy copies of a batch block by block), so targets
that hold one value per sample tile it over the blocks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any

import torch
from torch import Tensor


def logits_of(output: Any) -> Tensor:
    """The (N, C) score tensor of a model output: the tensor itself or its ``.logits``."""
    logits = output if isinstance(output, Tensor) else getattr(output, "logits", None)
    if not isinstance(logits, Tensor) or logits.ndim != 2:
        raise TypeError(
            f"expected the model to return (N, C) logits, got {type(output).__name__}; "
            "pass a target callable that picks one scalar per sample from it"
        )
    return logits


def per_row(values: Tensor, rows: int) -> Tensor:
    """Tile per-sample ``values`` (B, ...) over ``rows`` = m * B rows, block by block."""
    if rows % values.shape[0]:
        raise ValueError(f"{rows} output rows are not a whole number of batches of {values.shape[0]}")
    return values.repeat(rows // values.shape[0], *([1] * (values.ndim - 1)))


class Target:
    """Base of the ready targets: ``target(output) -> (N,)``, ``-target`` is its counterfactual.
    ``kind`` says what the score is (a logit, a log-probability), for the JSON and the report."""

    kind = "score"

    def __call__(self, output: Any) -> Tensor:
        raise NotImplementedError

    def label(self, sample: int, names: Sequence[str] | None = None) -> str:
        """A human name for this target on ``sample``; ``names`` are the model's output names, if known."""
        return type(self).__name__

    def index(self, sample: int) -> int | None:
        """The output index this target reads on ``sample`` (a class, an answer, a word position)."""
        return None

    def __neg__(self) -> Target:
        return Negated(self)


class ClassScore(Target):
    """The score (logit) of one output index per sample: a class, a VQA answer, an RL action.

    ``index`` is one int for all samples, or one int per sample, each in 0..C-1. Negative indices
    are refused rather than wrapped as Python would: ``Explanation.indices``, labels and every metric
    read the index as the output's number, so ``-1`` would name no class (pass ``C - 1`` for the last).
    """

    kind = "logit"

    def __init__(self, index: int | Sequence[int] | Tensor, names: Sequence[str] | None = None):
        self.indices = torch.as_tensor(index, dtype=torch.long).reshape(-1)
        self.names = names
        if self.indices.numel() and int(self.indices.min()) < 0:
            raise ValueError(
                f"class index {self.indices.tolist()} is negative: give output numbers 0..C-1 "
                "(for the last of C classes pass C - 1)"
            )

    def __call__(self, output: Any) -> Tensor:
        logits = logits_of(output)
        if int(self.indices.max()) >= logits.shape[1]:
            raise ValueError(
                f"class index {self.indices.tolist()} is out of range: the model has {logits.shape[1]} outputs"
            )
        return self.scores_of(logits).gather(1, self.row_indices(logits)[:, None])[:, 0]

    def row_indices(self, logits: Tensor) -> Tensor:
        """(N,) the class each output row reads: one for all rows, or one per sample tiled over the rows."""
        indices = self.indices.to(logits.device)
        return per_row(indices, logits.shape[0]) if indices.numel() > 1 else indices.expand(logits.shape[0])

    def scores_of(self, logits: Tensor) -> Tensor:
        """(N, C) the score of every class: here the logits themselves, y_c."""
        return logits

    def index(self, sample: int) -> int:
        return int(self.indices[sample if self.indices.numel() > 1 else 0])

    def label(self, sample: int, names: Sequence[str] | None = None) -> str:
        position = self.index(sample)
        names = self.names if self.names is not None else names
        if names is not None and 0 <= position < len(names):
            return str(names[position])
        return f"class {position}"


class ClassLogProb(ClassScore):
    """The log-probability of a class, log softmax(y)_c = y_c - log sum_j exp(y_j): what the class
    gains over all the others, weighted by their probabilities (an RL policy's chosen-action target)."""

    kind = "log-probability"

    def scores_of(self, logits: Tensor) -> Tensor:
        return logits.float().log_softmax(dim=1)


class ClassAdvantage(ClassScore):
    """A class's logit above the mean logit, y_c - (1/C) sum_j y_j: softmax logits are defined only up
    to a shift, and this drops what every class shares (the advantage of dueling networks)."""

    kind = "logit minus the mean logit"

    def scores_of(self, logits: Tensor) -> Tensor:
        return logits - logits.mean(dim=1, keepdim=True)


class ClassMargin(ClassScore):
    """A class rather than the best other one, y_c - max_{j != c} y_j: a contrast with the runner-up,
    positive where the class wins."""

    kind = "logit difference"

    def scores_of(self, logits: Tensor) -> Tensor:
        top = logits.topk(min(2, logits.shape[1]), dim=1).values
        best_other = torch.where(logits == top[:, :1], top[:, -1:], top[:, :1])
        return logits - best_other


class TopClass(ClassScore):
    """The logit of each sample's ``rank``-th best class (rank 0: the predicted class).

    The classes are read from the first output the target meets, the engine's clean forward, so
    choosing them costs no forward of its own: y_{c_b} with c_b = argsort(-y_b)[rank]. Later calls
    (the masked or noisy copies of the batch some methods run) keep those classes.
    """

    def __init__(self, rank: int = 0, names: Sequence[str] | None = None):
        if rank < 0:
            raise ValueError(f"rank {rank}: ranks start at 0, the predicted class")
        self.rank = rank
        self.names = names
        self.indices: Tensor | None = None

    def __call__(self, output: Any) -> Tensor:
        if self.indices is None:
            logits = logits_of(output)
            if self.rank >= logits.shape[1]:
                raise ValueError(
                    f"the class ranked {self.rank + 1} was asked for, but the model has {logits.shape[1]} outputs: "
                    f"ask for at most {logits.shape[1]}"
                )
            self.indices = logits.detach().topk(self.rank + 1, dim=1).indices[:, self.rank].cpu()
        return super().__call__(output)


class SimilarClassContrast(ClassScore):
    """Finer-CAM's target (pytorch-grad-cam's ``FinerCAM``): a class rather than the classes the model finds
    most like it, so the map keeps what tells them apart:

    s = sum_j p_j (y_c - alpha y_j) / sum_j p_j,   p = softmax(y),

    j over the ``comparisons`` classes whose logits are nearest y_c. c is each sample's ``rank``-th best
    class (0: the predicted one) unless ``index`` is given; c and its neighbours are read from the first
    output the target meets (the explaining forward), and kept for the later calls.
    """

    kind = "logit contrast with similar classes"

    def __init__(
        self,
        index: int | Sequence[int] | None = None,
        alpha: float = 1.0,
        comparisons: int = 3,
        names: Sequence[str] | None = None,
        rank: int = 0,
    ):
        super().__init__(0 if index is None else index, names)
        self.chosen = index is not None
        self.rank = rank
        self.alpha = alpha
        self.comparisons = comparisons
        self.similar: Tensor | None = None

    def __call__(self, output: Any) -> Tensor:
        logits = logits_of(output)
        if self.similar is None:
            scores = logits.detach()
            main = (
                self.row_indices(scores)
                if self.chosen
                else scores.topk(self.rank + 1, dim=1).indices[:, self.rank]
            )
            nearest = (scores - scores.gather(1, main[:, None])).abs().argsort(dim=1)
            self.indices = main.cpu()
            self.similar = nearest[:, 1 : 1 + self.comparisons].cpu()
        rows = logits.shape[0]
        main = per_row(self.indices.to(logits.device), rows)
        similar = per_row(self.similar.to(logits.device), rows)
        weights = logits.float().softmax(dim=1).gather(1, similar)
        contrast = logits.gather(1, main[:, None]) - self.alpha * logits.gather(1, similar)
        return (weights * contrast).sum(dim=1) / (weights.sum(dim=1) + 1e-9)


class Negated(Target):
    """The negated score: its Grad-CAM is the counterfactual map, the evidence *against* the target."""

    def __init__(self, target: Target):
        self.target = target
        self.kind = f"minus the {target.kind}"

    def __call__(self, output: Any) -> Tensor:
        return -self.target(output)

    def label(self, sample: int, names: Sequence[str] | None = None) -> str:
        return f"not {self.target.label(sample, names)}"

    def index(self, sample: int) -> int | None:
        return self.target.index(sample)


class FunctionTarget(Target):
    """Any callable ``output -> (N,)`` with a name."""

    def __init__(self, function: Callable[[Any], Tensor], name: str | None = None):
        self.function = function
        self.name = name or getattr(function, "__name__", "target")

    def __call__(self, output: Any) -> Tensor:
        return self.function(output)

    def label(self, sample: int, names: Sequence[str] | None = None) -> str:
        return self.name


def as_targets(spec: Any, batch_size: int, names: Sequence[str] | None = None) -> list[Target]:
    """The K targets of a call, from the forms ``explain`` accepts.

    An int (one class for all samples), a list of B ints (one class per sample), a list of B
    lists of K ints (K classes per sample), a Target or callable, or a list of them.
    """
    if isinstance(spec, Target) or (callable(spec) and not isinstance(spec, (list, tuple, Tensor))):
        return [spec if isinstance(spec, Target) else FunctionTarget(spec)]
    if isinstance(spec, Tensor):
        spec = spec.tolist()
    if isinstance(spec, int):
        return [ClassScore(spec, names)]
    if isinstance(spec, (list, tuple)) and spec and all(callable(t) for t in spec):
        return [t if isinstance(t, Target) else FunctionTarget(t) for t in spec]
    if isinstance(spec, (list, tuple)) and len(spec) == batch_size:
        if all(isinstance(i, int) for i in spec):
            return [ClassScore(list(spec), names)]
        if all(isinstance(row, (list, tuple)) for row in spec):
            widths = {len(row) for row in spec}
            if len(widths) == 1 and widths != {0}:
                return [ClassScore([row[k] for row in spec], names) for k in range(widths.pop())]
    raise ValueError(
        f"cannot read targets {spec!r} for a batch of {batch_size}: give an int, a list of {batch_size} "
        f"ints, a list of {batch_size} equal-length lists of ints, or Target objects"
    )


class TailLogits:
    """Next-token logits (N, T, V) of a sequence's last T rows only: rows ``start`` .. ``start + T - 1`` of the
    full (N, L, V) (a Hugging Face model's ``logits_to_keep=T``). A reply's word targets read only these rows;
    the language model head's work, and its gradient's, at every prompt row is then never done (for a 7B chat
    model's 32064-word head over a 600-token prompt, more per explained word than a decoder layer)."""

    def __init__(self, logits: Tensor, start: int):
        self.logits, self.start = logits, start

    @cached_property
    def rows(self) -> tuple[Tensor, ...]:
        """The T rows (N, V) as views, from one ``unbind`` that every target reading this output shares. A
        target that indexed ``logits`` itself would get, in the backward, a gradient as large as all the rows
        (N, T, V), zero but at its own, added to the other targets': K targets cost K (N, T, V) tensors per
        batched backward. Through the shared rows each target's gradient is its own row's, and the rows'
        gradients are stacked once."""
        return self.logits.unbind(dim=1)

    def padded(self) -> Tensor:
        """The full (N, L, V) logits, the rows before ``start`` zero: for code that reads absolute rows."""
        return torch.nn.functional.pad(self.logits, (0, 0, self.start, 0))


def sequence_logits_of(output: Any) -> Tensor:
    """The (N, L, V) next-token logits of a teacher-forced decoder output: the tensor or its ``.logits``."""
    logits = output if isinstance(output, Tensor) else getattr(output, "logits", None)
    if not isinstance(logits, Tensor) or logits.ndim != 3:
        raise TypeError(f"expected (N, L, V) decoder logits, got {type(output).__name__}")
    return logits


class TokenLogProb(Target):
    """log p(word) under teacher forcing: the sum of log p(x_p | x_<p) over the word's token positions.

    ``token_ids`` (B, L) are the decoder inputs (position 0 is the start token); logits row p - 1
    predicts the token at position p. Sub-word tokens of one word sum into one word target; all
    caption positions together give the whole-caption target of the original Grad-CAM captioning code.

    ``positions`` are one list for every sample, or B lists, one per sample (a batch of captions,
    each target the k-th word of each): s_b = sum_{p in P_b} log p(x_{b,p} | x_{b,<p}). A sample whose
    list is empty scores 0 (its caption has fewer words); ``word`` and ``index`` are then per sample too.
    """

    kind = "log-probability"

    def __init__(
        self,
        token_ids: Tensor,
        positions: Sequence[int] | Sequence[Sequence[int]],
        word: str | Sequence[str],
        index: int | None | Sequence[int | None] = None,
    ):
        batch = token_ids.shape[0]
        per_sample = bool(positions) and all(isinstance(p, (list, tuple)) for p in positions)
        self.sample_positions = [list(p) for p in positions] if per_sample else [list(positions)] * batch
        if len(self.sample_positions) != batch:
            raise ValueError(f"{len(self.sample_positions)} lists of token positions for {batch} samples")
        every = [p for sample in self.sample_positions for p in sample]
        if not every or min(every) < 1:
            raise ValueError("token positions start at 1 (position 0 is the start token)")
        self.token_ids = token_ids
        self.words = [word] * batch if isinstance(word, str) else list(word)
        self.word_indices = list(index) if isinstance(index, (list, tuple)) else [index] * batch
        self.read = sorted(set(every))  # the positions any sample reads, and which sample reads which:
        self.reads = torch.tensor([[p in sample for p in self.read] for sample in self.sample_positions])

    def __call__(self, output: Any) -> Tensor:
        logits, start = (
            (output.logits, output.start)
            if isinstance(output, TailLogits)
            else (sequence_logits_of(output), 0)
        )
        if self.read[0] - 1 < start:
            raise ValueError(
                f"token position {self.read[0]} is predicted by logits row {self.read[0] - 1}, before the kept "
                f"rows, which start at {start}"
            )
        ids = per_row(self.token_ids.to(logits.device), logits.shape[0])[:, self.read]
        if isinstance(output, TailLogits):  # the shared rows (``TailLogits.rows``)
            predicting = torch.stack([output.rows[p - 1 - start] for p in self.read], dim=1)
        else:
            predicting = logits[:, [p - 1 - start for p in self.read]]
        predicting = predicting.float().log_softmax(dim=-1)
        token_log_probs = predicting.gather(-1, ids[..., None])[..., 0]
        return (token_log_probs * per_row(self.reads.to(logits.device), logits.shape[0])).sum(dim=1)

    def reads_sample(self, sample: int) -> bool:
        """Whether this target reads any token of ``sample`` (a shorter caption has no k-th word)."""
        return bool(self.sample_positions[sample])

    def label(self, sample: int, names: Sequence[str] | None = None) -> str:
        return self.words[sample if len(self.words) > 1 else 0]  # one word for every copy of one sample

    def index(self, sample: int) -> int | None:
        return self.word_indices[sample if len(self.word_indices) > 1 else 0]


def right_padded(rows: Sequence[Sequence[int]], device: torch.device | str | None = None) -> Tensor:
    """(B, L) token ids of rows of different lengths, padded on the right with 0: a causal decoder never
    reads a padding token before the positions it predicts, so ``TokenLogProb`` ignores it."""
    length = max(len(row) for row in rows)
    return torch.tensor([[*row, *[0] * (length - len(row))] for row in rows], device=device)


class Difference(Target):
    """``first`` minus ``second``: the evidence for answer A *rather than* answer X (a contrastive map)."""

    def __init__(self, first: Target, second: Target):
        self.first = first
        self.second = second
        same = first.kind == second.kind
        self.kind = f"{first.kind} difference" if same else f"{first.kind} minus {second.kind}"

    def __call__(self, output: Any) -> Tensor:
        return self.first(output) - self.second(output)

    def label(self, sample: int, names: Sequence[str] | None = None) -> str:
        return f"{self.first.label(sample, names)} rather than {self.second.label(sample, names)}"

    def index(self, sample: int) -> int | None:
        return self.first.index(sample)


class StateValue(Target):
    """The state-value estimate V(s) of an RL policy: ``output.value``, one scalar (N,) or (N, 1) per sample.

    Its map shows what makes the agent expect more return; a DQN adapter gives max_a Q(s, a) here.
    """

    kind = "value estimate"

    def __call__(self, output: Any) -> Tensor:
        value = getattr(output, "value", None)
        if not isinstance(value, Tensor) or value.ndim == 0 or value.numel() != value.shape[0]:
            raise TypeError(f"expected an output with a (N,) or (N, 1) .value, got {type(output).__name__}")
        return value.reshape(-1)

    def label(self, sample: int, names: Sequence[str] | None = None) -> str:
        return "value"
