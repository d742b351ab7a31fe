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


class _HeldSetting:
    """A process-wide setting that overlapping blocks hold (loads in several threads): the first to enter
    saves its value and sets ``value``, the last to leave puts back the saved one."""

    def __init__(self, read: Any, write: Any, value: Any) -> None:
        self.read, self.write, self.value = read, write, value
        self.holders, self.saved, self.lock = 0, None, threading.Lock()

    @contextmanager
    def held(self) -> Iterator[None]:
        with self.lock:
            if self.holders == 0:
                self.saved = self.read()
                self.write(self.value)
            self.holders += 1
        try:
            yield
        finally:
            with self.lock:
                self.holders -= 1
                if self.holders == 0:
                    self.write(self.saved)


def _set_offline(value: bool) -> None:
    from huggingface_hub import constants

    constants.HF_HUB_OFFLINE = value


def _read_offline() -> bool:
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE


def _read_progress_bars() -> tuple[bool, bool]:
    from huggingface_hub.utils import are_progress_bars_disabled
    from transformers.utils import logging as transformers_logging

    return transformers_logging.is_progress_bar_enabled(), not are_progress_bars_disabled()


def _set_progress_bars(shown: tuple[bool, bool]) -> None:
    """Show or hide transformers' bars (its "Loading weights") and the hub's, each as ``shown`` says."""
    from huggingface_hub import utils as hub_utils
    from transformers.utils import logging as transformers_logging

    transformers, hub = shown
    if transformers:
        transformers_logging.enable_progress_bar()
    else:
        transformers_logging.disable_progress_bar()
    if hub:  # after transformers' switch, which sets the hub's too
        hub_utils.enable_progress_bars()
    else:
        hub_utils.disable_progress_bars()


_OFFLINE = _HeldSetting(_read_offline, _set_offline, True)
_NO_BARS = _HeldSetting(_read_progress_bars, _set_progress_bars, (False, False))


def hub_offline() -> Any:
    """Inside: the Hugging Face hub library makes no network request (``HF_HUB_OFFLINE``). Loading with
    ``local_files_only`` alone still let it fetch a registry of agents from huggingface.co (a DNS query
    on every load). The switch is process-wide, so other threads' hub requests are refused meanwhile;
    overlapping loads are counted, and the last to leave puts back the value the first found."""
    return _OFFLINE.held()


def no_progress_bars() -> Any:
    """Inside: a load prints no progress bar (transformers 5's "Loading weights", the hub's); process-wide
    like ``hub_offline``, and put back as the first load found it when the last leaves."""
    return _NO_BARS.held()


def model_name(path: str) -> str:
    """How records and reports name a Hugging Face checkpoint: a local folder by its path as given, a hub
    id as ``hf:ID``."""
    return path if Path(path).is_dir() else f"hf:{path}"


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


class WrongCheckpoint(ValueError):
    """A checkpoint whose weights do not fill the model it was loaded as; ``architectures`` are the classes
    it was saved from (its config's), so a caller can name the task it is for."""

    def __init__(self, message: str, architectures: list[str]):
        super().__init__(message)
        self.architectures = architectures


def load_local(loader: Any, path: str, trust_pickle: bool = False, weights: bool = True) -> Any:
    """``loader.from_pretrained(path)`` from local files only, with no network request (``hub_offline``); with ``weights`` (a model, not a
    processor), from safetensors only unless ``trust_pickle``: a checkpoint with only pickled weights
    gets one sentence that says how to load it, and a model the checkpoint does not fill is refused
    (``require_filled``), as is an unreadable safetensors file."""
    from safetensors import SafetensorError

    options: dict[str, Any] = {"local_files_only": True}
    if weights:
        options["output_loading_info"] = True
        if not trust_pickle:
            options["use_safetensors"] = True
    try:
        with hub_offline(), no_progress_bars():
            loaded = loader.from_pretrained(path, **options)
    except SafetensorError as error:
        raise ValueError(
            f"the weights of '{path}' cannot be read ({str(error).splitlines()[0]}): the safetensors file is "
            "damaged or incomplete; save or copy it again"
        ) from error
    except (OSError, ValueError) as error:
        if weights and not trust_pickle and any((Path(path) / name).is_file() for name in PICKLED_WEIGHTS):
            raise ValueError(
                f"{path} holds pickled weights, which can run code when loaded: pass --trust-pickle "
                "(trust_pickle=True) if you trust them, or save them as safetensors"
            ) from error
        raise
    if not weights:
        return loaded
    model, info = loaded
    require_filled(model, info, path)
    return model


def require_filled(model: Any, info: dict[str, list], path: str) -> None:
    """Refuse a model that loading left partly random or a checkpoint partly unused (transformers' loading
    info: missing, mismatched and unexpected keys): its maps would explain random weights."""
    random = [*info.get("missing_keys", ()), *(entry[0] for entry in info.get("mismatched_keys", ()))]
    unused = list(info.get("unexpected_keys", ()))
    if not random and not unused:
        return
    architectures = list(getattr(model.config, "architectures", None) or [])
    saved = " / ".join(architectures) or "an architecture its config does not name"
    parts = [f"{len(random)} of its weights would be random ({min(random)}, ...)"] if random else []
    parts += [f"{len(unused)} weights of the checkpoint unused ({min(unused)}, ...)"] if unused else []
    raise WrongCheckpoint(
        f"'{path}' was saved from {saved}; loaded as {type(model).__name__}, {' and '.join(parts)}",
        architectures,
    )


def text_limit(config: Any) -> int | None:
    """The most text tokens a model reads: its text config's (or its own) ``max_position_embeddings``."""
    text = getattr(config, "text_config", None) or config
    return getattr(text, "max_position_embeddings", None)


def check_text_length(length: int, limit: int | None, what: str) -> None:
    """Refuse, in one line, a text of ``length`` tokens longer than the model's ``limit``."""
    if limit is not None and length > limit:
        raise ValueError(
            f"the {what} is {length} tokens long; this model reads at most {limit} "
            f"(max_position_embeddings in its config): shorten the {what}"
        )
