"""Teacher prompts: Zero-shot-CoT (Fine-tune-CoT), answer-conditioned (Sci-CoT), few-shot.

Every prompt ends with a `Q: <question>\\nA: ...` block, which is also how the offline oracle
finds the question again (`parse_prompt`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from scicot_jax.data.answers import ANSWER_TRIGGER
from scicot_jax.data.examples import Example
from scicot_jax.data.formats import CHOICES_PREFIX, render_question
from scicot_jax.data.sources import parse_choices
from scicot_jax.teacher.inputs import json_objects

PROMPT_KINDS = ("zero_shot_cot", "answer_conditioned", "few_shot")
STEP_BY_STEP = "Let's think step by step."
DEFAULT_TRIGGER = f"\n{ANSWER_TRIGGER}"  # Fine-tune-CoT's step-2 suffix
FEW_SHOT_STOP = ("\nQ:",)
CORRECT_PREFIX = "Correct answer:"
ANSWER_CONDITIONED_HEADER = (
    "Explain step by step how to reach the correct answer of the question below. "
    f'Finish with "{ANSWER_TRIGGER} X." where X is the correct answer.'
)
_CHOICE_RE = re.compile(r"\(([A-Z])\) (.*?)(?= \([A-Z]\) |$)")


@dataclass(frozen=True)
class Exemplar:
    """A worked example for few-shot prompts."""

    question: str
    rationale: str
    answer: str
    choices: tuple[tuple[str, str], ...] = ()


def gold_text(ex: Example) -> str:
    """The gold answer as the teacher should state it (MC: "(B) text")."""
    if ex.choices:
        text = ex.choice_text(ex.answer)
        return f"({ex.answer}) {text}" if text is not None else ex.answer
    return ex.answer


def zero_shot_step1(ex: Example) -> str:
    """Fine-tune-CoT step 1: `Q: {question}\\nA: Let's think step by step.`"""
    return f"Q: {render_question(ex)}\nA: {STEP_BY_STEP}"


def zero_shot_step2(step1_prompt: str, reasoning: str, trigger: str = DEFAULT_TRIGGER) -> str:
    """Fine-tune-CoT step 2: step 1 + the reasoning as generated + the answer trigger."""
    return f"{step1_prompt}{reasoning}{trigger}"


def answer_conditioned(ex: Example) -> str:
    """Sci-CoT: question, choices and the correct answer, then "Let's think step by step."."""
    return (
        f"{ANSWER_CONDITIONED_HEADER}\n\nQ: {render_question(ex)}\n"
        f"{CORRECT_PREFIX} {gold_text(ex)}\nA: {STEP_BY_STEP}"
    )


def few_shot(ex: Example, exemplars: tuple[Exemplar, ...]) -> str:
    """Worked exemplars, then the question; the teacher continues after `A:`."""
    if not exemplars:
        raise ValueError("few_shot prompts need exemplars (--exemplars FILE)")
    blocks = []
    for e in exemplars:
        q = render_question(Example("", e.question, e.answer, e.choices))
        rationale = e.rationale.strip()
        if ANSWER_TRIGGER not in rationale:
            rationale = f"{rationale} {ANSWER_TRIGGER} {e.answer}."
        blocks.append(f"Q: {q}\nA: {rationale}")
    blocks.append(f"Q: {render_question(ex)}\nA:")
    return "\n\n".join(blocks)


def load_exemplars(path: str | Path) -> tuple[Exemplar, ...]:
    """JSONL of {"question", "rationale", "answer", "choices"?}; errors name file:line."""
    out = []
    for where, d in json_objects(path):
        for key in ("question", "rationale", "answer"):
            if not isinstance(d.get(key), str | int | float) or str(d[key]).strip() == "":
                raise ValueError(f"{where}: field '{key}' missing or empty")
        choices: tuple[tuple[str, str], ...] = ()
        if d.get("choices"):
            raw = d["choices"]
            if isinstance(raw, dict) and "label" not in raw:  # {label: text}
                raw = [{"label": k, "text": v} for k, v in raw.items()]
            try:
                choices = parse_choices(raw)
            except (ValueError, TypeError) as e:
                raise ValueError(f"{where}: field 'choices': {e}") from None
        out.append(Exemplar(d["question"], d["rationale"], str(d["answer"]), choices))
    if not out:
        raise ValueError(f"{path}: no exemplars")
    return tuple(out)


# -- the other direction, for the offline oracle -------------------------------------------
@dataclass(frozen=True)
class ParsedPrompt:
    """What the oracle reads back out of a prompt."""

    kind: str  # "reasoning" | "answer" (zero-shot step 2) | "conditioned" | "few_shot"
    question: str
    choices: tuple[tuple[str, str], ...]
    reasoning: str = ""  # step 2: the reasoning the prompt carries


def split_rendered(rendered: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """Inverse of render_question: (question, choices)."""
    q, sep, rest = rendered.partition(f"\n{CHOICES_PREFIX} ")
    if not sep:
        return rendered, ()
    return q, tuple((m.group(1), m.group(2)) for m in _CHOICE_RE.finditer(rest.strip()))


def parse_prompt(prompt: str) -> ParsedPrompt | None:
    """Find the last `Q:` block of any of our prompts; None if there is none."""
    start = prompt.rfind("\nQ: ")
    start = start + 1 if start >= 0 else (0 if prompt.startswith("Q: ") else -1)
    if start < 0:
        return None
    block = prompt[start + 3 :]
    body, sep, after = block.partition("\nA:")
    if not sep:
        return None
    conditioned = f"\n{CORRECT_PREFIX} " in body
    if conditioned:
        body = body.partition(f"\n{CORRECT_PREFIX} ")[0]
    question, choices = split_rendered(body)
    after = after.removeprefix(" ")
    if not after.startswith(STEP_BY_STEP):
        return ParsedPrompt("few_shot", question, choices)
    rest = after[len(STEP_BY_STEP) :]
    if conditioned:
        return ParsedPrompt("conditioned", question, choices)
    if rest.strip():
        return ParsedPrompt("answer", question, choices, reasoning=rest)
    return ParsedPrompt("reasoning", question, choices)
