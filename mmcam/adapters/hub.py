"""Hugging Face checkpoints from local files only: a directory or the local cache, never the network,
and safetensors weights unless pickled ones are trusted (unpickling can run code)."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5")


class _ThreadFilter(logging.Filter):
    """Drops the records below ERROR that the threads inside ``quiet_generation`` log; other threads' pass."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: Counter[int] = Counter()  # thread id -> how many quiet_generation blocks it is in
        self.lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or record.thread not in self.threads


_GENERATION_LOGGER = "transformers.generation.utils"
_quiet = _ThreadFilter()


@contextmanager
def quiet_generation() -> Iterator[None]:
    """Inside: ``generate`` does not log that ``max_new_tokens`` overrides a checkpoint's ``max_length``
    (it does, as asked; the notice came once per image).

    A filter on the generation logger drops this thread's records below ERROR; the logger's level is not
    touched, so other threads' records pass, and the filter is removed when the last thread leaves."""
    logger, thread = logging.getLogger(_GENERATION_LOGGER), threading.get_ident()
    with _quiet.lock:
        if not _quiet.threads:
            logger.addFilter(_quiet)
        _quiet.threads[thread] += 1
    try:
        yield
    finally:
        with _quiet.lock:
            _quiet.threads[thread] -= 1
            if not _quiet.threads[thread]:
                del _quiet.threads[thread]
            if not _quiet.threads:
                logger.removeFilter(_quiet)


def family_titles(registry: Mapping[str, Any]) -> str:
    """The titles of a family registry's entries (each has a ``title``), in order, each once: "BLIP, GIT"."""
    return ", ".join(dict.fromkeys(entry.title for entry in registry.values()))


def unknown_words(tokenizer: Any, text: str) -> list[str]:
    """The pieces of ``text`` a Hugging Face tokenizer reads as its unknown token (``[UNK]``, ``<unk>``):
    the model sees no difference between them."""
    unknown = getattr(tokenizer, "unk_token_id", None)
    if unknown is None or not text:
        return []
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    spans = encoding["offset_mapping"]
    return [text[start:end] for i, (start, end) in zip(encoding["input_ids"], spans) if i == unknown]


def load_local(loader: Any, path: str, trust_pickle: bool = False, weights: bool = True) -> Any:
    """``loader.from_pretrained(path)`` from local files only; with ``weights`` (a model, not a
    processor), from safetensors only unless ``trust_pickle``: a checkpoint with only pickled weights
    gets one sentence that says how to load it."""
    options: dict[str, Any] = {"local_files_only": True}
    if weights and not trust_pickle:
        options["use_safetensors"] = True
    try:
        return loader.from_pretrained(path, **options)
    except (OSError, ValueError) as error:
        if weights and not trust_pickle and any((Path(path) / name).is_file() for name in PICKLED_WEIGHTS):
            raise ValueError(
                f"{path} holds pickled weights, which can run code when loaded: pass --trust-pickle "
                "(trust_pickle=True) if you trust them, or save them as safetensors"
            ) from error
        raise
