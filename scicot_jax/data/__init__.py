"""Data: task cards, sources, synthetic tasks, answer parsing and student text formats."""

from scicot_jax.data.answers import ANSWER_TRIGGER, answers_match, check_answer, parse_answer
from scicot_jax.data.cards import CardError, TaskCard, list_cards, load_card
from scicot_jax.data.examples import Example
from scicot_jax.data.sources import SourceError, read_examples
from scicot_jax.data.synthetic import SYNTHETIC_TASKS, generate, write_rationale

__all__ = [
    "ANSWER_TRIGGER",
    "SYNTHETIC_TASKS",
    "SourceError",
    "CardError",
    "Example",
    "TaskCard",
    "answers_match",
    "check_answer",
    "generate",
    "list_cards",
    "load_card",
    "parse_answer",
    "read_examples",
    "write_rationale",
]
