"""Similarity between two rationales, used to drop near-duplicates among a question's samples.

Two measures, both in [0, 1] and symmetric:

- ``jaccard`` (default): token-set Jaccard, |A & B| / |A | B| over the sets of lower-cased
  alphanumeric tokens (numbers kept whole). Insensitive to word order and repetition, so two
  samples that say the same thing with the same words but reordered count as duplicates.
- ``char_cosine``: cosine similarity of character 3-gram count vectors over the lower-cased
  text with runs of whitespace collapsed. Sensitive to small wording changes and order.

``DEFAULT_THRESHOLD`` (0.9): a pair at or above the threshold is a near-duplicate. With token-set
Jaccard, 0.9 means at most one distinct token in ten differs: a copy with a changed connective or
a trailing sentence, not a different line of reasoning.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable

DEFAULT_MEASURE = "jaccard"
DEFAULT_THRESHOLD = 0.9

_TOKEN_RE = re.compile(r"[a-z0-9]+(?:\.[0-9]+)?")


def tokens(text: str) -> frozenset[str]:
    """Lower-cased alphanumeric tokens of ``text`` as a set."""
    return frozenset(_TOKEN_RE.findall(text.lower()))


def jaccard(a: str, b: str) -> float:
    """Token-set Jaccard similarity; two empty texts are identical."""
    ta, tb = tokens(a), tokens(b)
    if not ta and not tb:
        return 1.0
    return len(ta & tb) / len(ta | tb)


def char_ngrams(text: str, n: int = 3) -> Counter[str]:
    """Counts of character n-grams of the whitespace-normalised, lower-cased text."""
    norm = " ".join(text.lower().split())
    if len(norm) < n:
        return Counter([norm]) if norm else Counter()
    return Counter(norm[i : i + n] for i in range(len(norm) - n + 1))


def char_cosine(a: str, b: str, n: int = 3) -> float:
    """Cosine similarity of character n-gram count vectors; two empty texts are identical."""
    ca, cb = char_ngrams(a, n), char_ngrams(b, n)
    if not ca and not cb:
        return 1.0
    dot = sum(v * cb.get(k, 0) for k, v in ca.items())
    na = math.sqrt(sum(v * v for v in ca.values()))
    nb = math.sqrt(sum(v * v for v in cb.values()))
    return dot / (na * nb) if na and nb else 0.0


MEASURES: dict[str, Callable[[str, str], float]] = {"jaccard": jaccard, "char_cosine": char_cosine}


def get_measure(name: str) -> Callable[[str, str], float]:
    """The similarity function called ``name``; raises ValueError naming the choices."""
    try:
        return MEASURES[name]
    except KeyError:
        raise ValueError(
            f"unknown similarity measure {name!r}; choose from {sorted(MEASURES)}"
        ) from None
