"""Words with spaCy, offline: lemmas and content words (nouns and adjectives).

With a trained English pipeline installed (``en_core_web_sm`` or larger) content words come from
its part-of-speech tagger. Without one, ``spacy.blank("en")`` with the lookup lemmatizer of
``spacy-lookups-data`` gives lemmas, and content words are the words that are not stop words,
punctuation or numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import spacy
from spacy.tokens import Doc

CONTENT_POS = {"NOUN", "PROPN", "ADJ"}
TRAINED_PIPELINES = ("en_core_web_sm", "en_core_web_md", "en_core_web_lg", "en_core_web_trf")


@dataclass(frozen=True)
class Word:
    text: str
    lemma: str
    content: bool


@lru_cache(maxsize=1)
def english() -> spacy.Language:
    """The best English pipeline installed: a trained one with a tagger, else blank + lookup lemmas."""
    for name in TRAINED_PIPELINES:
        try:
            return spacy.load(name)
        except OSError:
            continue
    nlp = spacy.blank("en")
    nlp.add_pipe("lemmatizer", config={"mode": "lookup"})
    nlp.initialize()
    return nlp


def analyze(words: list[str]) -> list[Word]:
    """Lemma and content flag for each of ``words`` (already split: one entry per caption word)."""
    nlp = english()
    doc = Doc(nlp.vocab, words=words)
    for _, component in nlp.pipeline:
        doc = component(doc)
    tagged = doc.has_annotation("POS")
    return [
        Word(
            token.text,
            token.lemma_ or token.text.lower(),
            token.pos_ in CONTENT_POS if tagged else not (token.is_stop or token.is_punct or token.like_num),
        )
        for token in doc
    ]
