"""Student text formats: baseline, one-stage CoT, Stage 1 and Stage 2 (Sci-CoT)."""

from __future__ import annotations

from scicot_jax.data.examples import Example

SEPARATOR = " --> "
RATIONALE_PREFIX = "Rationale:"
CHOICES_PREFIX = "Answer Choices:"


def render_choices(choices: tuple[tuple[str, str], ...]) -> str:
    """'(A) x (B) y ...'."""
    return " ".join(f"({label}) {text}" for label, text in choices)


def render_question(ex: Example) -> str:
    """The question, with its choices on a second line for multiple choice."""
    if not ex.choices:
        return ex.question
    return f"{ex.question}\n{CHOICES_PREFIX} {render_choices(ex.choices)}"


def answer_text(ex: Example) -> str:
    """The target answer string (MC: the label, e.g. "B")."""
    return ex.answer


def _clean(rationale: str) -> str:
    # One line keeps the separator unambiguous and survives SentencePiece (no newlines).
    return " ".join(rationale.split())


def baseline(ex: Example) -> tuple[str, str]:
    """question -> answer."""
    return render_question(ex), answer_text(ex)


def one_stage(ex: Example, rationale: str) -> tuple[str, str]:
    """question -> "rationale --> answer" (Fine-tune-CoT)."""
    return render_question(ex), f"{_clean(rationale)}{SEPARATOR}{answer_text(ex)}"


def stage1(ex: Example, rationale: str) -> tuple[str, str]:
    """question -> rationale (Sci-CoT Stage 1)."""
    return render_question(ex), _clean(rationale)


def stage2_inputs(question: str, rationale: str) -> str:
    """The Stage-2 input text for an already rendered question."""
    return f"{question}\n{RATIONALE_PREFIX} {_clean(rationale)}"


def stage2(ex: Example, rationale: str) -> tuple[str, str]:
    """question + rationale -> answer (Sci-CoT Stage 2)."""
    return stage2_inputs(render_question(ex), rationale), answer_text(ex)


def split_one_stage(text: str) -> tuple[str, str]:
    """A one-stage output -> (rationale, answer_text); answer_text is "" without separator."""
    rationale, sep, answer = text.rpartition(SEPARATOR.strip())
    if not sep:
        return text.strip(), ""
    return rationale.strip(), answer.strip()


FORMATS = {"baseline": baseline, "one_stage": one_stage, "stage1": stage1, "stage2": stage2}
