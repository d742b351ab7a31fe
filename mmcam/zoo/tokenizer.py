"""A word-level tokenizer for the shapes world's captions and questions.

The world's language is tiny and closed (a few dozen words), so a word is a token: text is lower-cased and
split into words and punctuation marks ("what color is the circle?" -> what, color, is, the, circle, ?).
Captions have no punctuation, so their tokens are exactly ``Caption.words`` and token ``i`` of an encoded
caption (after ``<bos>``) is word ``i``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import torch

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
_WORD = re.compile(r"[\w']+|[^\w\s]")


def split_words(text: str) -> list[str]:
    """Lower-case ``text`` and split it into words and punctuation marks."""
    return _WORD.findall(text.lower())


class WordTokenizer:
    """Maps words to ids and back; ids 0-3 are ``<pad>``, ``<bos>``, ``<eos>``, ``<unk>``."""

    def __init__(self, vocab: list[str]):
        if tuple(vocab[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(f"vocab must start with {SPECIAL_TOKENS}, got {vocab[:4]}")
        self.vocab = list(vocab)
        self._ids = {word: i for i, word in enumerate(self.vocab)}
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = (self._ids[t] for t in SPECIAL_TOKENS)

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> WordTokenizer:
        """Build the vocabulary (sorted, after the special tokens) from every word in ``texts``."""
        words = sorted({word for text in texts for word in split_words(text)} - set(SPECIAL_TOKENS))
        return cls([*SPECIAL_TOKENS, *words])

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of ``text``, wrapped in ``<bos>`` ... ``<eos>`` unless ``add_special_tokens`` is False."""
        ids = [self._ids.get(word, self.unk_id) for word in split_words(text)]
        return [self.bos_id, *ids, self.eos_id] if add_special_tokens else ids

    def unknown_words(self, text: str) -> list[str]:
        """The words of ``text`` outside the vocabulary: each is read as ``<unk>``."""
        return [word for word in split_words(text) if word not in self._ids]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``: stops at the first ``<eos>`` and drops ``<pad>`` and ``<bos>``."""
        words = []
        for i in (int(i) for i in ids):
            if i == self.eos_id:
                break
            if i not in (self.pad_id, self.bos_id):
                words.append(self.vocab[i])
        return " ".join(words)

    def pad(self, sequences: list[list[int]]) -> torch.Tensor:
        """Right-pad id lists with ``<pad>`` into a LongTensor (B, longest)."""
        longest = max((len(s) for s in sequences), default=0)
        batch = torch.full((len(sequences), longest), self.pad_id, dtype=torch.long)
        for row, seq in zip(batch, sequences):
            row[: len(seq)] = torch.tensor(seq, dtype=torch.long)
        return batch
