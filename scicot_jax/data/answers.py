"""Answer parsing (free text -> normalised answer) and comparison, per answer type.

Two modes:
- default: robust parsing of student / teacher text. If the text contains the one-stage
  separator "-->" or ANSWER_TRIGGER, the first candidate after the (last) marker wins;
  otherwise the last candidate in the text.
- compat=<Fine-tune-CoT task key>: reproduces the evaluator of "Large Language Models Are
  Reasoning Teachers" (``Evaluator.cleanse_prediction``): with a prefix ("-->" for one-stage
  student outputs), the first candidate of the task's answer format after the first prefix,
  else the last candidate; without one (a step-2 completion), the first candidate. Its quirks
  are kept on purpose, e.g. letters are any capital A-E (A-F, A-C per task) in the text.

Without compat, multiple-choice labels are the example's own, or any A-Z when the choices are
inline in the question. ``scicot_jax.data.grading`` picks the rules per kind of output.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

ANSWER_TRIGGER = "Therefore, the answer is"
ANSWER_TYPES = ("multiple_choice", "number", "yes_no", "text")

# Fine-tune-CoT task keys and their answer formats.
COMPAT_LETTERS = {
    "aqua": "ABCDE",
    "commonsense_qa": "ABCDE",
    "date_understanding": "ABCDEF",
    "tracking_shuffled_objects": "ABC",
}
COMPAT_FLOAT = ("addsub", "svamp", "single_eq")  # compared as floats within 1e-6
COMPAT_NUMBER = ("gsm8k", "multiarith", *COMPAT_FLOAT)
COMPAT_YES_NO = ("strategy_qa", "coin_flip")
COMPAT_TEXT = ("last_letter_concatenation",)
COMPAT_TASKS = (*COMPAT_LETTERS, *COMPAT_NUMBER, *COMPAT_YES_NO, *COMPAT_TEXT)

_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?")
_MARKERS = ("-->", ANSWER_TRIGGER)
# Characters Fine-tune-CoT turns into spaces before looking for yes/no tokens.
_YES_NO_SPLIT_RE = re.compile(r"[\"'\n.\s:,]")
# Characters Fine-tune-CoT deletes from a last-letter answer.
_LAST_LETTER_STRIP_RE = re.compile(r"[\"'\n.\s]")


def after_first(text: str, marker: str) -> tuple[str, bool]:
    """Text after the first ``marker`` (and whether there was one)."""
    return _after_marker(text, last=False, markers=(marker,))


def _after_marker(
    text: str, *, last: bool, markers: tuple[str, ...] = _MARKERS
) -> tuple[str, bool]:
    """Text after the answer marker (and whether one was found)."""
    best = -1
    for marker in markers:
        pos = text.rfind(marker) if last else text.find(marker)
        if pos != -1 and (best == -1 or (pos > best if last else pos < best)):
            best, found = pos, marker
    if best == -1:
        return text, False
    return text[best + len(found) :], True


def normalize_number(value: str | float) -> str | None:
    """'1,234.50' -> '1234.5', '7.0' -> '7'; None if not a number."""
    try:
        x = float(str(value).replace(",", "").replace("$", "").strip())
    except ValueError:
        return None
    if x != x or x in (float("inf"), float("-inf")):
        return None
    if x == int(x) and abs(x) < 1e15:
        return str(int(x))
    return repr(x)


def normalize_text(text: str) -> str:
    """Lower case, outer quotes/punctuation stripped, inner whitespace collapsed."""
    text = " ".join(text.strip().split()).lower()
    return text.strip(" \"'`.,;:!?()[]")


def _number_candidates(text: str) -> list[str]:
    return _NUMBER_RE.findall(text.replace(",", ""))


def _yes_no_candidates(text: str) -> list[str]:
    return [t for t in _YES_NO_SPLIT_RE.sub(" ", text.lower()).split(" ") if t in ("yes", "no")]


def _choice_candidates(text: str, choices: Sequence[tuple[str, str]]) -> list[str]:
    labels = [lb for lb, _ in choices] or list(string.ascii_uppercase)
    alt = "|".join(re.escape(lb) for lb in sorted(labels, key=len, reverse=True))
    # Parenthesised labels are unambiguous; bare capitals may be the article "A".
    found = re.findall(rf"\(({alt})\)", text)
    if not found:
        found = re.findall(rf"(?<![A-Za-z0-9])({alt})(?![A-Za-z0-9])", text)
    if not found and choices:
        norm = normalize_text(text)
        found = [lb for lb, t in choices if normalize_text(t) and normalize_text(t) == norm]
        if not found:  # choice text mentioned inside a longer answer, earliest first
            hits = sorted(
                (norm.find(normalize_text(t)), lb)
                for lb, t in choices
                if normalize_text(t) and normalize_text(t) in norm
            )
            found = [lb for _, lb in hits]
    return found


def _compat_candidates(text: str, compat: str) -> list[str]:
    if compat in COMPAT_LETTERS:
        return re.findall(f"[{COMPAT_LETTERS[compat]}]", text)
    if compat in COMPAT_NUMBER:
        return _number_candidates(text)
    if compat in COMPAT_YES_NO:
        return _yes_no_candidates(text)
    if compat in COMPAT_TEXT:
        return [_LAST_LETTER_STRIP_RE.sub("", text)]
    raise ValueError(f"unknown compat task {compat!r}; expected one of {COMPAT_TASKS}")


def parse_compat(text: str, compat: str, prefix: str | None) -> str | None:
    """Fine-tune-CoT's answer of ``text``: without ``prefix`` the first candidate; with one, the
    first candidate after its first occurrence, or the last candidate if it does not occur."""
    body, found = (text, False) if prefix is None else after_first(text, prefix)
    cands = _compat_candidates(body, compat)
    if not cands:
        return None
    pick = cands[0] if prefix is None or found else cands[-1]
    return normalize_number(pick) if compat in COMPAT_FLOAT else pick


def parse_answer(
    text: str,
    answer_type: str,
    *,
    choices: Sequence[tuple[str, str]] = (),
    compat: str | None = None,
) -> str | None:
    """Free text -> normalised answer string (MC: the label), or None if none is found."""
    if text is None:
        return None
    if compat is not None:
        # A step-2 completion follows the trigger already; only "-->" marks an answer.
        return parse_compat(text, compat, "-->" if "-->" in text else None)
    body, found = _after_marker(text, last=True)
    return pick_candidate(body, answer_type, choices, first=found)


def pick_candidate(
    body: str, answer_type: str, choices: Sequence[tuple[str, str]] = (), *, first: bool
) -> str | None:
    """The first (an answer follows a marker) or last (free text) answer candidate in ``body``."""
    found = first
    if answer_type == "number":  # normalise only up to the candidate picked (per record)
        raw = _number_candidates(body)
        return next(filter(None, map(normalize_number, raw if found else reversed(raw))), None)
    if answer_type == "yes_no":
        cands = _yes_no_candidates(body)
    elif answer_type == "multiple_choice":
        cands = _choice_candidates(body, choices)
    elif answer_type == "text":
        first_line = body.strip().split("\n")[0] if found else body.strip().split("\n")[-1]
        cands = [normalize_text(first_line)] if normalize_text(first_line) else []
    else:
        raise ValueError(f"unknown answer_type {answer_type!r}; expected one of {ANSWER_TYPES}")
    if not cands:
        return None
    return cands[0] if found else cands[-1]


def normalize_gold(gold: str, answer_type: str, *, compat: str | None = None) -> str:
    """A gold answer in the form parse_answer produces."""
    gold = str(gold)
    if compat is not None:
        if compat in COMPAT_NUMBER:
            gold = gold.replace(",", "")
            return (normalize_number(gold) or gold) if compat in COMPAT_FLOAT else gold
        return gold.lower() if compat == "strategy_qa" else gold
    if answer_type == "number":
        return normalize_number(gold) or gold.strip()
    if answer_type == "yes_no":
        return gold.strip().lower()
    if answer_type == "multiple_choice":
        return gold.strip()
    return normalize_text(gold)


def answers_match(
    pred: str | None, gold: str, answer_type: str, *, compat: str | None = None
) -> bool:
    """Whether a parsed prediction equals the gold answer (numbers: within 1e-6)."""
    if pred is None:
        return False
    gold_n = normalize_gold(gold, answer_type, compat=compat)
    if compat is not None and compat not in COMPAT_FLOAT:
        return pred == gold_n  # Fine-tune-CoT compares these as exact strings
    if answer_type == "number" or compat in COMPAT_FLOAT:
        try:
            return abs(float(pred) - float(gold_n)) <= 1e-6
        except ValueError:
            return False
    if answer_type == "yes_no":
        return pred.strip().lower() == gold_n
    if answer_type == "text":
        return normalize_text(pred) == gold_n
    return pred.strip() == gold_n


def check_answer(
    text: str,
    gold: str,
    answer_type: str,
    *,
    choices: Sequence[tuple[str, str]] = (),
    compat: str | None = None,
) -> tuple[str | None, bool]:
    """Parse `text` and compare with `gold`: (parsed answer, correct)."""
    pred = parse_answer(text, answer_type, choices=choices, compat=compat)
    return pred, answers_match(pred, gold, answer_type, compat=compat)
