"""How the oracle teacher errs, like a real LLM teacher, seeded per question.

- **Zero-shot CoT** is wrong on a share of questions that grows with difficulty (the number of
  reasoning steps): a question is *hard for the teacher* with probability
  ``1 - (1 - step_error) ** steps``, drawn once per question from the server seed. Greedy answers
  to a hard question are wrong; sampled answers are wrong with probability ``HARD_WRONG`` on a
  hard question and ``EASY_WRONG`` on an easy one, so more samples recover more questions.
- A wrong rationale has a **flawed step** (one turn executed wrongly, later steps consistent
  with it), not a swapped final letter.
- Some right answers still carry a flawed step (``flawed_right``): a later step jumps back.
- **Answer-conditioned** prompting always ends in the given answer; on a hard question it
  sometimes **rationalises** (``rationalise``): the steps go wrong and the conclusion asserts
  the given answer anyway.
- **Phrasing varies**: openers, step sentences, connectives and conclusions are drawn per
  sentence from the request's random stream (dozens of combinations per step, not templates).

Compass questions get step-level rationales with a turn executed wrongly; the other synthetic
tasks keep their writers and their flawed step is a misread one (a number, a flip, a word of the
question read as another), with the same three flaws (``flawed_rationale``).
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

from scicot_jax.data.answers import ANSWER_TRIGGER
from scicot_jax.data.examples import Example
from scicot_jax.data.synthetic import SYNTHETIC_TASKS, write_rationale_and_answer

HARD_WRONG = 0.7  # chance a sampled zero-shot answer to a hard question is wrong
EASY_WRONG = 0.08  # ... to an easy question
_HEADINGS = ("north", "east", "south", "west")
_TURNS = {"does not turn": 0, "turns right": 1, "turns around": 2, "turns left": 3}
# A careless step: the turn read as another one (left/right swapped, "around" skipped ...).
_CONFUSED = {0: (1, 3), 1: (3, 2), 2: (0, 1), 3: (1, 2)}


@dataclass(frozen=True)
class Behaviour:
    """Failure rates of the oracle (all 0: a perfect teacher)."""

    step_error: float = 0.0  # per reasoning step, for the share of hard questions
    flawed_right: float = 0.0  # right answers whose rationale has a flawed step
    rationalise: float = 0.0  # answer-conditioned, hard question: rationalised wrong step
    seed: int = 0

    @property
    def active(self) -> bool:
        return self.step_error > 0 or self.flawed_right > 0 or self.rationalise > 0

    def _u(self, question: str, what: str) -> float:
        """A uniform draw fixed per (seed, question, what)."""
        h = hashlib.sha256(f"{self.seed}|{what}|{question}".encode()).digest()
        return int.from_bytes(h[:8], "big") / 2**64

    def hard(self, question: str, steps: int) -> bool:
        """Whether zero-shot CoT gets this question wrong when greedy."""
        return self._u(question, "hard") < 1 - (1 - self.step_error) ** steps

    def zero_shot_wrong(self, question: str, steps: int, rng: random.Random, greedy: bool):
        """Whether this zero-shot sample is wrong."""
        hard = self.hard(question, steps)
        if greedy:
            return hard
        return rng.random() < (HARD_WRONG if hard else EASY_WRONG)

    def conditioned_rationalises(self, question: str, steps: int, rng, greedy: bool) -> bool:
        """Whether this answer-conditioned sample reasons through a wrong step."""
        if not self.hard(question, steps):
            return False
        return (self._u(question, "rationalise") if greedy else rng.random()) < self.rationalise


def steps_of(task: str, question: str) -> int:
    """Reasoning steps of a synthetic question (its difficulty)."""
    prog = SYNTHETIC_TASKS[task].solve(question)
    if task == "compass":
        return len(prog[2])
    if task in ("mc_reasoning", "arithmetic"):
        return len(prog[-1])
    return len(prog)


# -- compass rationales with varied phrasing and optional flaws ------------------------------
_OPEN = (
    "The {a} starts facing {h}.",
    "At first the {a} faces {h}.",
    "Start: {h}.",
    "Initially, the {a} is pointing {h}.",
    "The {a} begins facing {h}.",
    "We begin with the {a} facing {h}.",
    "Facing {h} to start.",
)
_LEAD = ("", "", "", "Let's track the heading turn by turn. ", "Follow each turn. ",
         "Keep track of the direction. ")  # fmt: skip
_STEP = (
    "It {t}: {h}.",
    "{T}, so {h}.",
    "After it {t} it faces {h}.",
    "Then it {t}, now facing {h}.",
    "It {t}, which leaves it facing {h}.",
    "Next it {t}: now {h}.",
    "{T} -> {h}.",
    "Once it {t}, the {a} faces {h}.",
)
_NO_TURN = ("It does not turn, still {h}.", "No turn: still {h}.", "It does not turn: {h}.")
_CLOSE = (
    "{H} is choice ({L}).",
    "So the {a} faces {h}, which is choice ({L}).",
    "The final heading is {h}, choice ({L}).",
    "It ends up facing {h}: ({L}).",
    "{H} matches ({L}).",
)


def compass_rationale(
    question: str, rng: random.Random, flaw: str | None = None
) -> tuple[str, str]:
    """(rationale, answer label) for a compass question, phrased from ``rng``.

    flaw: None (correct), "wrong" (one step executed wrongly, the rest consistent: a wrong
    answer), "flawed_right" (a wrong step, then a later step jumps back to the true heading),
    "rationalised" (a wrong step carried to the end, then the true answer asserted anyway).
    """
    agent, heading, turns = SYNTHETIC_TASKS["compass"].solve(question)
    truth = [heading]
    for t in turns:
        truth.append((truth[-1] + _TURNS[t]) % 4)
    stated = list(truth)
    if flaw is not None:
        k = rng.randrange(len(turns) - 1) if flaw == "flawed_right" and len(turns) > 1 else (
            rng.randrange(len(turns)))  # fmt: skip
        stated[k + 1] = (stated[k] + rng.choice(_CONFUSED[_TURNS[turns[k]]])) % 4
        for j in range(k + 1, len(turns)):
            stated[j + 1] = (stated[j] + _TURNS[turns[j]]) % 4
        if flaw == "flawed_right":
            stated[-1] = truth[-1]  # a later step jumps back to the right heading
    out = [rng.choice(_LEAD) + rng.choice(_OPEN).format(a=agent, h=_HEADINGS[heading])]
    for k, (t, h) in enumerate(zip(turns, stated[1:]), 1):
        pool = _NO_TURN if t == "does not turn" and rng.random() < 0.5 else _STEP
        step = rng.choice(pool).format(t=t, T=t.capitalize(), h=_HEADINGS[h], a=agent)
        out.append(f"{k}. {step}")  # numbered like the question's turns
    final = truth[-1] if flaw in (None, "flawed_right", "rationalised") else stated[-1]
    label = "ABCD"[final]
    close = rng.choice(_CLOSE).format(
        a=agent, h=_HEADINGS[final], H=_HEADINGS[final].capitalize(), L=label
    )
    out.append(close)
    out.append(f"{ANSWER_TRIGGER} {label}.")
    return " ".join(out), label


# -- the other synthetic tasks: a misread step ----------------------------------------------
def misreads(question: str, rng: random.Random) -> list[str]:
    """Every way a careless reader misreads the question once, in random order: a number off
    by 1 or 2, a step read in the wrong direction, one flip read as its opposite, or one
    quoted word read as another name."""
    out = []
    for m in re.finditer(
        r"(?:gets|finds|buys) (\d+) more|(?:gives away|loses|uses) (\d+)", question
    ):
        wrong_way = f"gives away {m.group(1)}" if m.group(1) else f"gets {m.group(2)} more"
        out.append(question[: m.start()] + wrong_way + question[m.end() :])
    for m in re.finditer(r"\d+", question):
        for d in (-2, -1, 1, 2):
            if int(m.group()) + d >= 1:
                out.append(question[: m.start()] + str(int(m.group()) + d) + question[m.end() :])
    for m in re.finditer(r"does not flip|flips", question):
        new = "flips" if m.group() == "does not flip" else "does not flip"
        out.append(question[: m.start()] + new + question[m.end() :])
    quoted = re.search(r'"([^"]+)"', question)
    if quoted and not out:
        words = quoted.group(1).split()
        for i, w in enumerate(words):
            other = rng.choice([n for n in ("Nina", "Otto", "Lars", "Rosa") if n != w])
            read = " ".join(words[:i] + [other] + words[i + 1 :])
            out.append(question[: quoted.start(1)] + read + question[quoted.end(1) :])
    rng.shuffle(out)
    return out


def _sentences(text: str) -> list[str]:
    return re.split(r"(?<=\.) ", text)


def flawed_rationale(
    task: str, question: str, choices: tuple, rng: random.Random, flaw: str, variant: int
) -> str | None:
    """A rationale of a synthetic question with one misread step (None: no single misreading
    changes the answer, e.g. none of a multiple-choice question's choices fits one).

    flaw: "wrong" (the misread step carried on consistently: a wrong answer), "flawed_right"
    (the misread step, then the following steps jump back to the true values),
    "rationalised" (the misread step carried to the end, then the true conclusion asserted).
    """
    right, answer = write_rationale_and_answer(task, Example("", question, "", choices), variant)
    for seen in misreads(question, rng):
        try:
            wrong, wrong_answer = write_rationale_and_answer(
                task, Example("", seen, "", choices), variant
            )
        except (ValueError, KeyError):  # e.g. a result that is none of the choices
            continue
        if wrong_answer == answer:
            continue
        if flaw == "wrong":
            return wrong
        ws, rs = _sentences(wrong), _sentences(right)
        if len(ws) != len(rs):
            continue
        k = next(i for i, (w, r) in enumerate(zip(ws, rs)) if w != r)  # the misread step
        if flaw == "flawed_right":
            return " ".join(ws[: k + 1] + rs[k + 1 :])
        keep = -2 if k < len(ws) - 2 else -1  # the true conclusion (else only the answer line)
        return " ".join(ws[:keep] + rs[keep:])
    return None


# -- which flaw a rationale carries (what the oracle knows about its own rationales) ----------
FLAWS = ("sound", "flawed_right", "rationalised", "flawed", "wrong")
_STEP_RE = re.compile(r"(?:^|\s)(\d+)\. ([^.]*)\.")
_HEADING_RE = re.compile(r"\b(north|east|south|west)\b")
_FINAL_RE = re.compile(re.escape(ANSWER_TRIGGER) + r" \(?([A-Za-z0-9-]+)")


def flaw_of(task: str, question: str, rationale: str, choices: tuple = ()) -> str | None:
    """The flaw of an oracle rationale: "sound", "flawed_right" (a wrong step, a later step
    back on track), "rationalised" (a wrong step carried on, the right answer asserted) or
    "wrong" (a wrong answer); None where it cannot be told (an unknown task, unparsed text).

    Compass: each numbered step's stated heading against the true one. The other synthetic
    tasks: "wrong" by the answer, "sound" when the rationale is one of the task's correct
    rationales, else "flawed" (a misread step; which of the two kinds is not told apart)."""
    if task not in SYNTHETIC_TASKS:
        return None
    try:
        prog = SYNTHETIC_TASKS[task].solve(question)
        _, truth = write_rationale_and_answer(task, Example("", question, "", choices), 0)
    except (ValueError, KeyError):
        return None
    found = _FINAL_RE.findall(rationale)
    if not found:
        return None
    if found[-1].rstrip(".").lower() != truth.lower():
        return "wrong"
    if task == "compass":
        _, heading, turns = prog
        true = [heading]
        for t in turns:
            true.append((true[-1] + _TURNS[t]) % 4)
        stated = {}
        for k, text in _STEP_RE.findall(rationale):
            hs = _HEADING_RE.findall(text)
            if hs:
                stated[int(k)] = _HEADINGS.index(hs[-1])
        bad = [k for k in range(1, len(turns) + 1) if stated.get(k, true[k]) != true[k]]
        if not bad:
            return "sound"
        return "flawed_right" if stated.get(len(turns), true[-1]) == true[-1] else "rationalised"
    ex = Example("", question, "", choices)
    norm = " ".join(rationale.split())
    for v in range(SYNTHETIC_TASKS[task].num_variants):
        if " ".join(write_rationale_and_answer(task, ex, v)[0].split()) == norm:
            return "sound"
    return "flawed"
