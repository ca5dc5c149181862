"""The one record type every data source produces."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from json.encoder import encode_basestring
from typing import Any


@dataclass(frozen=True)
class Example:
    """One question with its gold answer; for multiple choice `answer` is the label."""

    id: str
    question: str
    answer: str
    choices: tuple[tuple[str, str], ...] = ()  # (label, text)
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Normalise lists (e.g. from JSON) so examples compare equal after a round trip.
        if self.choices or type(self.choices) is not tuple:  # () needs nothing (most examples)
            object.__setattr__(self, "choices", tuple((str(lb), str(t)) for lb, t in self.choices))

    @property
    def labels(self) -> tuple[str, ...]:
        """The choice labels, e.g. ("A", "B", "C", "D")."""
        return tuple(label for label, _ in self.choices)

    def choice_text(self, label: str) -> str | None:
        """The text of the choice with `label`, or None."""
        return dict(self.choices).get(label)

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict (use `json.dumps(ex.to_json())` for a line of JSONL)."""
        return {
            "id": self.id,
            "question": self.question,
            "answer": self.answer,
            "choices": [list(c) for c in self.choices],
            "meta": dict(self.meta),
        }

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:
        # Pickled by the field values (the cached pass sends examples to its worker
        # processes): half the cost of the dataclass default's state dict.
        return Example, (self.id, self.question, self.answer, self.choices, self.meta)

    def json_line(self) -> str:
        """`to_json()` as sorted JSON with non-ASCII kept (no newline): what
        `_LINE.encode(self.to_json())` writes, spelled out (3x faster: runs hash every line)."""
        strings = type(self.id) is str and type(self.question) is str and type(self.answer) is str
        if not strings or type(self.meta) is not dict:
            return _LINE.encode(self.to_json())  # unusual types: the encoder decides
        choices = ", ".join(f"[{_str(label)}, {_str(text)}]" for label, text in self.choices)
        meta = _LINE.encode(self.meta) if self.meta else "{}"
        return (
            f'{{"answer": {_str(self.answer)}, "choices": [{choices}], "id": {_str(self.id)}, '
            f'"meta": {meta}, "question": {_str(self.question)}}}'
        )

    @classmethod
    def from_json(cls, obj: dict[str, Any] | str) -> Example:
        """Inverse of `to_json`; also accepts the JSON text itself."""
        if isinstance(obj, str):
            obj = json.loads(obj)
        missing = [k for k in ("id", "question", "answer") if k not in obj]
        if missing:
            raise ValueError(f"Example JSON lacks field(s) {missing}: {str(obj)[:200]}")
        return cls(
            id=str(obj["id"]),
            question=obj["question"],
            answer=str(obj["answer"]),
            choices=tuple(tuple(c) for c in obj.get("choices", ())),
            meta=dict(obj.get("meta", {})),
        )


# One encoder (json.dumps builds a new one per call when given options); json_line's strings.
_LINE = json.JSONEncoder(ensure_ascii=False, sort_keys=True)
_str = encode_basestring
