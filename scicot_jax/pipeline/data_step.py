"""The data step: read a card's splits, carve a validation split if needed, subsample train."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scicot_jax.data.examples import Example
from scicot_jax.files import read_jsonl, write_jsonl

SPLITS = ("train", "validation", "test")


def card_splits(card: Any) -> tuple[str, ...]:
    """Split names a card provides (its ``splits`` is a list of names or a name -> source map)."""
    splits = getattr(card, "splits", None) or SPLITS
    return tuple(splits)


def read_split(card: Any, split: str, data_dir: str | None, limit: int | None) -> list[Example]:
    """Examples of ``split`` from the card's source; ids must be unique."""
    from scicot_jax.data import sources

    try:
        exs = list(sources.read_examples(card, split, data_dir=data_dir, limit=limit))
    except (sources.SourceError, FileNotFoundError) as e:
        raise sources.SourceError(f"task {card.name}, split {split}: {e}") from None
    seen: set[str] = set()
    for ex in exs:
        if ex.id in seen:
            raise ValueError(f"task {card.name}: duplicate example id {ex.id!r} in split {split}")
        seen.add(ex.id)
    return exs


def subsample(examples: Sequence[Example], fraction: float, seed: int) -> list[Example]:
    """A deterministic ``fraction`` of ``examples`` (at least one), in their original order."""
    if fraction >= 1.0:
        return list(examples)
    n = max(1, round(fraction * len(examples)))
    keep = set(random.Random(seed).sample(range(len(examples)), n))
    return [ex for i, ex in enumerate(examples) if i in keep]


def prepare(
    card: Any,
    out_dir: Path,
    *,
    data_dir: str | None,
    limits: dict,
    train_fraction: float,
    validation_fraction: float,
    seed: int,
) -> dict:
    """Write ``<out_dir>/<split>.jsonl`` for train, validation and test; returns counts and notes."""
    have = card_splits(card)
    notes = []
    data = {s: read_split(card, s, data_dir, limits.get(s)) for s in SPLITS if s in have}
    if "train" not in data or "test" not in data:
        raise ValueError(
            f"task {card.name}: the pipeline needs train and test splits, card has {have}"
        )
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation fraction must be in [0, 1), got {validation_fraction}")
    if "validation" not in data and validation_fraction == 0:
        data["validation"] = []
        notes.append("no validation split (the card has none and the validation fraction is 0)")
    if "validation" not in data:
        # Carve from the end of a seeded shuffle of train so test stays untouched (ARC has no dev).
        train = list(data["train"])
        random.Random(seed).shuffle(train)
        n_val = max(1, round(validation_fraction * len(train)))
        if limits.get("validation") is not None:
            n_val = min(n_val, limits["validation"])
        val_ids = {ex.id for ex in train[-n_val:]}
        data["validation"] = [ex for ex in data["train"] if ex.id in val_ids]
        data["train"] = [ex for ex in data["train"] if ex.id not in val_ids]
        notes.append(f"validation = {n_val} examples carved from train (seed {seed})")
    full_train = len(data["train"])
    data["train"] = subsample(data["train"], train_fraction, seed)
    if train_fraction < 1.0:
        notes.append(f"train = {len(data['train'])} of {full_train} examples ({train_fraction:g})")
    for split, exs in data.items():
        write_jsonl(out_dir / f"{split}.jsonl", (ex.to_json() for ex in exs))
    return {"splits": {s: len(v) for s, v in data.items()}, "notes": notes}


def load(data_dir: Path, split: str) -> list[Example]:
    """Examples written by ``prepare``."""
    return [Example.from_json(d) for _, d in read_jsonl(Path(data_dir) / f"{split}.jsonl")]
