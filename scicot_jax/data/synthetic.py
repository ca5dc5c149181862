"""Built-in synthetic reasoning tasks with exact, step-by-step rationale writers.

Every generator is seeded and deterministic. Splits never share a question: each question is
assigned to a split by a hash of its text, and each split draws from its own random stream.
`write_rationale` re-derives the solution from the question text alone (so an offline oracle
teacher needs nothing else), ends with "Therefore, the answer is X." and raises if the
question does not produce the example's gold answer.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from scicot_jax.data.answers import ANSWER_TRIGGER
from scicot_jax.data.examples import Example

SPLITS = ("train", "validation", "test")
DEFAULT_SIZES = {"train": 1000, "validation": 200, "test": 200}
_SPLIT_BUCKETS = {"train": range(0, 16), "validation": range(16, 18), "test": range(18, 20)}

_NAMES = (
    "Alice Bruno Clara David Elena Felix Grace Henry Irene James Karen Leon Maria Oscar Peter "
    "Quinn Rahul Sofia Tariq Ursula Victor Wendy Xavier Yusuf Zoe Amir Beth Carlos Dmitri Emily "
    "Fatima Gabriel Hannah Igor Julia Kwame Lucas Mei Nadia Omar Priya Ruth Stan Chuck Silvia "
    "Carolina Jorge Ingrid Pablo Keiko"
).split()
# mc_reasoning keeps a tiny vocabulary so a small model from scratch can read it.
_MC_PEOPLE = {"Ann": "She", "Ben": "He", "Eva": "She", "Sam": "He", "Mia": "She", "Tom": "He"}
_MC_OBJECTS = ("marbles", "apples", "coins", "stickers", "books", "pens", "cards", "shells")
_MC_ADD = ("gets", "finds", "buys")  # "She gets 4 more"
_MC_SUB = ("gives away", "loses", "uses")  # "She gives away 2"
_GERUND = {
    "gets": "getting", "finds": "finding", "buys": "buying",
    "gives away": "giving away", "loses": "losing", "uses": "using",
}  # fmt: skip
_OBJECTS = _MC_OBJECTS + ("cookies", "pencils", "stamps", "balloons", "toys", "flowers")


@dataclass(frozen=True)
class SyntheticTask:
    """Registry entry for one synthetic task."""

    name: str
    answer_type: str
    default_difficulty: int
    num_variants: int
    make: Callable[[random.Random, int], Example]
    solve: Callable[[str], object]  # question text -> parsed program
    rationale: Callable[[object, Example, int], str]
    description: str


def _answer_line(answer: str) -> str:
    return f"{ANSWER_TRIGGER} {answer}."


def _pronoun_of(name: str) -> str:
    return _MC_PEOPLE.get(name, "They")


# ---------------------------------------------------------------- coin flip
_COIN_Q_END = 'Is the coin still heads up? Note that "flip" here means "reverse".'


def _make_coin_flip(rng: random.Random, difficulty: int) -> Example:
    names = rng.sample(_NAMES, difficulty)
    flips = [rng.random() < 0.5 for _ in names]
    acts = [
        f"{n} flips the coin." if f else f"{n} does not flip the coin."
        for n, f in zip(names, flips)
    ]
    question = " ".join(["A coin is heads up.", *acts, _COIN_Q_END])
    return Example("", question, "no" if sum(flips) % 2 else "yes")


def _solve_coin_flip(question: str) -> list[tuple[str, bool]]:
    if not question.startswith("A coin is heads up.") or _COIN_Q_END not in question:
        raise ValueError(f"not a coin_flip question: {question!r}")
    return [(n, not neg) for n, neg in re.findall(r"(\w+) (does not )?flips? the coin\.", question)]


def _rationale_coin_flip(steps: list[tuple[str, bool]], ex: Example, variant: int) -> str:
    side, out = "heads", []
    if variant == 0:
        out.append("The coin starts heads up.")
        for name, flipped in steps:
            if flipped:
                side = "tails" if side == "heads" else "heads"
                out.append(f"{name} flips the coin, so it is now {side} up.")
            else:
                out.append(f"{name} does not flip the coin, so it stays {side} up.")
    elif variant == 1:
        count, parts = 0, []
        for name, flipped in steps:
            count += flipped
            parts.append(f"{name} flips ({count})" if flipped else f"{name} does not")
        side = "tails" if count % 2 else "heads"
        parity = "an odd" if count % 2 else "an even"
        out.append("Count the flips: " + ", ".join(parts) + ".")
        out.append(f"The coin was flipped {count} times, {parity} number, so it is {side} up.")
    else:
        out.append("Heads up at first.")
        for name, flipped in steps:
            if flipped:
                side = "tails" if side == "heads" else "heads"
            out.append(f"After {name}: {side}.")
    answer = "yes" if side == "heads" else "no"
    still = "still heads up" if answer == "yes" else "not heads up"
    out.append(f"The coin ends {side} up, so it is {still}.")
    out.append(_answer_line(answer))
    return " ".join(out), answer


# ---------------------------------------------------------------- last letter
def _make_last_letter(rng: random.Random, difficulty: int) -> Example:
    words = rng.sample(_NAMES, difficulty)
    question = f'Take the last letters of the words in "{" ".join(words)}" and concatenate them.'
    return Example("", question, "".join(w[-1] for w in words).lower())


def _solve_last_letter(question: str) -> list[str]:
    m = re.fullmatch(
        r'Take the last letters of the words in "([^"]+)" and concatenate them\.', question
    )
    if not m:
        raise ValueError(f"not a last_letter question: {question!r}")
    return m.group(1).split()


def _rationale_last_letter(words: list[str], ex: Example, variant: int) -> str:
    letters = [w[-1].lower() for w in words]
    answer = "".join(letters)
    if variant == 0:
        out = [f'The last letter of "{w}" is "{c}".' for w, c in zip(words, letters)]
        out.append(f'Concatenating them gives "{answer}".')
    elif variant == 1:
        out = [", ".join(f'{w} ends with "{c}"' for w, c in zip(words, letters)) + "."]
        quoted = ", ".join(f'"{c}"' for c in letters)
        out.append(f'Putting {quoted} together gives "{answer}".')
    else:
        out = [f'Start with "{words[0]}": "{letters[0]}".']
        for i in range(1, len(words)):
            out.append(f'Add the last letter of "{words[i]}": "{"".join(letters[: i + 1])}".')
    out.append(_answer_line(answer))
    return " ".join(out), answer


# ---------------------------------------------------------------- arithmetic word problems
def _make_arithmetic(rng: random.Random, difficulty: int) -> Example:
    name, obj = rng.choice(_NAMES), rng.choice(_OBJECTS)
    value = rng.randint(5, 30)
    sents = [f"{name} has {value} {obj}."]
    for _ in range(difficulty):
        kinds = [
            k for k, ok in (("add", value <= 90), ("sub", value >= 2), ("group", value <= 75)) if ok
        ]
        kind = rng.choice(kinds)
        if kind == "add":
            k = rng.randint(1, min(20, 99 - value))
            verb = rng.choice(("buys", "finds"))
            sents.append(f"Then {name} {verb} {k} more {obj}.")
            value += k
        elif kind == "sub":
            k = rng.randint(1, min(20, value))
            tail = rng.choice(("to a friend", ""))
            sents.append(
                f"Then {name} gives {k} {obj} to a friend."
                if tail
                else f"Then {name} loses {k} {obj}."
            )
            value -= k
        else:
            a = rng.randint(2, 5)
            b = rng.randint(2, max(2, min(9, (99 - value) // a)))
            sents.append(f"Then {name} buys {a} bags with {b} {obj} in each bag.")
            value += a * b
    sents.append(f"How many {obj} does {name} have now?")
    return Example("", " ".join(sents), str(value))


_ARITH_START = re.compile(r"^(\w+) has (\d+) (\w+)\.")
_ARITH_STEPS = (
    (re.compile(r"Then (\w+) buys (\d+) more (\w+)\."), "add", "buys {k} more"),
    (re.compile(r"Then (\w+) finds (\d+) more (\w+)\."), "add", "finds {k} more"),
    (re.compile(r"Then (\w+) gives (\d+) (\w+) to a friend\."), "sub", "gives away {k}"),
    (re.compile(r"Then (\w+) loses (\d+) (\w+)\."), "sub", "loses {k}"),
    (
        re.compile(r"Then (\w+) buys (\d+) bags with (\d+) (\w+) in each bag\."),
        "group",
        "buys {a} bags of {b}",
    ),
)


def _solve_arithmetic(question: str) -> tuple[str, int, str, list[tuple]]:
    m = _ARITH_START.match(question)
    if not m:
        raise ValueError(f"not an arithmetic question: {question!r}")
    steps = []
    for sent in re.findall(r"Then [^.]*\.", question):
        for pat, kind, phrase in _ARITH_STEPS:
            s = pat.fullmatch(sent)
            if s and kind == "group":
                a, b = int(s.group(2)), int(s.group(3))
                steps.append(("group", a * b, phrase.format(a=a, b=b), (a, b)))
                break
            if s:
                k = int(s.group(2))
                steps.append((kind, k, phrase.format(k=k), ()))
                break
        else:
            raise ValueError(f"unrecognised step {sent!r} in arithmetic question {question!r}")
    return m.group(1), int(m.group(2)), m.group(3), steps


def _rationale_arithmetic(prog: tuple, ex: Example, variant: int) -> str:
    name, value, obj, steps = prog
    out = [
        (
            f"{name} starts with {value} {obj}.",
            f"At first {name} has {value} {obj}.",
            f"Start: {value}.",
        )[variant]
    ]
    for kind, k, phrase, ab in steps:
        op = "-" if kind == "sub" else "+"
        new = value - k if kind == "sub" else value + k
        if kind == "group":
            a, b = ab
            calc = f"{a} * {b} = {k}, and {value} + {k} = {new}."
        else:
            calc = f"{value} {op} {k} = {new}."
        out.append((f"{name} {phrase}: {calc}", f"After that, {calc}", f"Then {calc}")[variant])
        value = new
    out.append(
        (
            f"{name} has {value} {obj} now.",
            f"So {name} ends with {value} {obj}.",
            f"Result: {value}.",
        )[variant]
    )
    out.append(_answer_line(str(value)))
    return " ".join(out), str(value)


# ---------------------------------------------------------------- mc_reasoning (ARC form)
def _mc_choices(rng: random.Random, value: int, values: list[int], ks: list[int]) -> list[int]:
    """Four shuffled choices: the answer and three plausible distractors.

    Distractors are what a one-shot guesser gets wrong: intermediate results, a step done in
    the wrong direction, a step forgotten, or a near miss. All share the answer's parity and
    the answer's rank among the choices is uniform, so neither parity nor "pick the middle"
    reveals it.
    """
    plausible = {*values[:-1], *(value - 2 * k for k in ks), *(value - k for k in ks)}
    pool = {x for x in plausible | {value + d for d in (-6, -4, -2, 2, 4, 6)}
            if 0 <= x <= 99 and x != value and (x - value) % 2 == 0}  # fmt: skip
    below = sorted(x for x in pool if x < value)
    above = sorted(x for x in pool if x > value)
    feasible = [r for r in range(4) if r <= len(below) and 3 - r <= len(above)]
    r = rng.choice(feasible)
    nums = rng.sample(below, r) + rng.sample(above, 3 - r) + [value]
    rng.shuffle(nums)
    return nums


def _make_mc(rng: random.Random, difficulty: int) -> Example:
    name = rng.choice(tuple(_MC_PEOPLE))
    obj = rng.choice(_MC_OBJECTS)
    value = start = rng.randint(10, 40)
    values, ops = [start], []
    for _ in range(difficulty):
        can_add, can_sub = value <= 90, value >= 1
        if can_add and (not can_sub or rng.random() < 0.5):
            k = rng.randint(1, 9)
            ops.append((rng.choice(_MC_ADD), k))
            value += k
        else:
            k = rng.randint(1, min(9, value))
            ops.append((rng.choice(_MC_SUB), -k))
            value -= k
        values.append(value)
    actions = [f"{verb} {abs(k)} more" if k > 0 else f"{verb} {abs(k)}" for verb, k in ops]
    question = (
        f"{name} has {start} {obj}. {_pronoun_of(name)} {', then '.join(actions)}. "
        f"How many {obj} does {name} have now?"
    )
    nums = _mc_choices(rng, value, values, [k for _, k in ops])
    labels = "ABCD"
    choices = tuple((lb, str(x)) for lb, x in zip(labels, nums))
    return Example("", question, labels[nums.index(value)], choices)


_MC_RE = re.compile(
    r"(\w+) has (\d+) (\w+)\. (?:He|She|They) (.+)\. How many (\w+) does (\w+) have now\?"
)


def _solve_mc(question: str) -> tuple[str, int, str, list[tuple[str, int]]]:
    m = _MC_RE.fullmatch(question)
    if not m:
        raise ValueError(f"not an mc_reasoning question: {question!r}")
    ops = []
    for act in m.group(4).split(", then "):
        a = re.fullmatch(r"(gets|finds|buys) (\d+) more|(gives away|loses|uses) (\d+)", act)
        if not a:
            raise ValueError(f"unrecognised action {act!r} in mc_reasoning question {question!r}")
        ops.append((a.group(1), int(a.group(2))) if a.group(1) else (a.group(3), -int(a.group(4))))
    return m.group(1), int(m.group(2)), m.group(3), ops


def _rationale_mc(prog: tuple, ex: Example, variant: int) -> str:
    name, value, obj, ops = prog
    out = [
        (f"{name} starts with {value}.", f"At first {name} has {value} {obj}.", f"Start: {value}.")[
            variant
        ]
    ]
    for verb, k in ops:
        new = value + k
        calc = f"{value} {'+' if k > 0 else '-'} {abs(k)} = {new}."
        out.append((calc, f"After {_GERUND[verb]} {abs(k)}: {calc}", f"Then {calc}")[variant])
        value = new
    label = next((lb for lb, t in ex.choices if t.strip() == str(value)), None)
    if label is None:
        raise ValueError(f"example {ex.id}: result {value} is none of the choices {ex.choices}")
    out.append(
        (f"{value} is choice ({label}).", f"The answer {value} matches choice ({label}).",
         f"So {name} has {value} {obj}, which is ({label}).")[variant]
    )  # fmt: skip
    out.append(_answer_line(label))
    return " ".join(out), label


# ---------------------------------------------------------------- compass (ARC form)
# Tracking a heading through n turns: one step of state at a time is easy for a small student
# (a 4-state lookup), the final heading in one shot is modular counting, which small
# transformers learn poorly. So rationales visibly help: the demo's task.
_HEADINGS = ("north", "east", "south", "west")  # fixed choice order (A)-(D)
_TURNS = {"does not turn": 0, "turns right": 1, "turns around": 2, "turns left": 3}
_COMPASS_AGENTS = ("robot", "ship", "car", "bird")
_COMPASS_RE = re.compile(r"A (\w+) faces (\w+)\. (.+) Which way does the \1 face now\?")


def _make_compass(rng: random.Random, difficulty: int) -> Example:
    agent, start = rng.choice(_COMPASS_AGENTS), rng.randrange(4)
    turns = [rng.choice(tuple(_TURNS)) for _ in range(difficulty)]
    heading = (start + sum(_TURNS[t] for t in turns)) % 4
    # Numbered turns: a step-by-step reader finds turn k by its number, a one-shot reader
    # still has to sum all turns modulo 4.
    question = (f"A {agent} faces {_HEADINGS[start]}. "
                + " ".join(f"{k}. It {t}." for k, t in enumerate(turns, 1))
                + f" Which way does the {agent} face now?")  # fmt: skip
    choices = tuple(zip("ABCD", _HEADINGS))
    return Example("", question, "ABCD"[heading], choices)


def _solve_compass(question: str) -> tuple[str, int, list[str]]:
    m = _COMPASS_RE.fullmatch(question)
    if not m or m.group(2) not in _HEADINGS:
        raise ValueError(f"not a compass question: {question!r}")
    turns = [t.strip() for t in re.findall(r"(?:^|\s)(?:\d+\. )?It ([^.]+)\.", m.group(3))]
    unknown = [t for t in turns if t not in _TURNS]
    if unknown:
        raise ValueError(f"unrecognised turn {unknown[0]!r} in compass question {question!r}")
    return m.group(1), _HEADINGS.index(m.group(2)), turns


def _rationale_compass(prog: tuple, ex: Example, variant: int) -> str:
    agent, heading, turns = prog
    out = [(f"The {agent} starts facing {_HEADINGS[heading]}.", f"Start: {_HEADINGS[heading]}.",
            f"At first the {agent} faces {_HEADINGS[heading]}.")[variant]]  # fmt: skip
    for k, t in enumerate(turns, 1):
        heading = (heading + _TURNS[t]) % 4
        out.append(f"{k}. " + (f"It {t}: {_HEADINGS[heading]}.",
                               f"{t.capitalize()}, so {_HEADINGS[heading]}.",
                               f"After it {t} it faces {_HEADINGS[heading]}.")[variant])  # fmt: skip
    label = "ABCD"[heading]
    out.append(f"{_HEADINGS[heading].capitalize()} is choice ({label}).")
    out.append(_answer_line(label))
    return " ".join(out), label


SYNTHETIC_TASKS: dict[str, SyntheticTask] = {
    t.name: t
    for t in (
        SyntheticTask("coin_flip", "yes_no", 4, 3, _make_coin_flip, _solve_coin_flip,
                      _rationale_coin_flip, "Is a coin still heads up after n people flip or not?"),
        SyntheticTask("last_letter", "text", 4, 3, _make_last_letter, _solve_last_letter,
                      _rationale_last_letter, "Concatenate the last letters of n names."),
        SyntheticTask("arithmetic", "number", 3, 3, _make_arithmetic, _solve_arithmetic,
                      _rationale_arithmetic, "Multi-step arithmetic word problems, n operations."),
        SyntheticTask("mc_reasoning", "multiple_choice", 3, 3, _make_mc, _solve_mc, _rationale_mc,
                      "ARC-form 4-choice question: a chain of n additions/subtractions."),
        SyntheticTask("compass", "multiple_choice", 5, 3, _make_compass, _solve_compass,
                      _rationale_compass, "ARC-form 4-choice question: a heading after n turns."),
    )
}  # fmt: skip


def _task(task: str) -> SyntheticTask:
    if task not in SYNTHETIC_TASKS:
        raise ValueError(
            f"unknown synthetic task {task!r}; expected one of {sorted(SYNTHETIC_TASKS)}"
        )
    return SYNTHETIC_TASKS[task]


def _bucket(question: str) -> int:
    return int.from_bytes(hashlib.sha256(question.encode()).digest()[:4], "big") % 20


def difficulty_range(difficulty: int | str) -> tuple[int, int]:
    """(lowest, highest) steps: an int n is (n, n), "lo-hi" a range drawn per question."""
    lo, sep, hi = str(difficulty).partition("-")
    try:
        low, high = int(lo), int(hi) if sep else int(lo)
    except ValueError:
        raise ValueError(f"difficulty must be an integer or 'lo-hi', got {difficulty!r}") from None
    if low < 1 or high < low:
        raise ValueError(f"difficulty must be >= 1 (and lo <= hi), got {difficulty!r}")
    return low, high


def generate(
    task: str,
    split: str,
    n: int | None = None,
    seed: int = 0,
    difficulty: int | str | None = None,
) -> list[Example]:
    """`n` distinct examples of `task` for `split` (deterministic in all arguments); a
    difficulty "lo-hi" draws each question's number of steps uniformly from lo..hi."""
    spec = _task(task)
    if split not in _SPLIT_BUCKETS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    n = DEFAULT_SIZES[split] if n is None else n
    low, high = difficulty_range(spec.default_difficulty if difficulty is None else difficulty)
    difficulty = low if low == high else f"{low}-{high}"
    rng = random.Random(f"{task}/{split}/{seed}/{difficulty}")
    out, seen, tries = [], set(), 0
    while len(out) < n:
        tries += 1
        if tries > 200 * n + 1000:
            raise ValueError(
                f"{task}: cannot draw {n} distinct {split} questions at difficulty {difficulty}"
            )
        ex = spec.make(rng, low if low == high else rng.randint(low, high))
        if ex.question in seen or _bucket(ex.question) not in _SPLIT_BUCKETS[split]:
            continue
        seen.add(ex.question)
        meta = {"task": task, "split": split, "difficulty": difficulty, "seed": seed}
        out.append(Example(f"{task}-{split}-s{seed}-d{difficulty}-{len(out):05d}", ex.question,
                           ex.answer, ex.choices, meta))  # fmt: skip
    return out


def solve(task: str, example: Example) -> str:
    """The answer derived from the question text alone."""
    return write_rationale_and_answer(task, example)[1]


def write_rationale_and_answer(task: str, example: Example, variant: int = 0) -> tuple[str, str]:
    """(rationale, answer) derived from the question text; see `write_rationale`."""
    spec = _task(task)
    return spec.rationale(spec.solve(example.question), example, variant % spec.num_variants)


def write_rationale(task: str, example: Example, variant: int = 0) -> str:
    """Exact step-by-step rationale ending with "Therefore, the answer is X."."""
    rationale, answer = write_rationale_and_answer(task, example, variant)
    if answer != example.answer:
        raise ValueError(
            f"example {example.id}: question gives answer {answer!r} but gold is {example.answer!r}"
        )
    return rationale
