"""The oracle teacher: answers prompts about the built-in synthetic tasks, offline.

It reads the question back out of the prompt, solves it with the task's rationale writer and
answers like an LLM would: phrasing varies with temperature (seeded by the request's seed),
a configurable share of rationales are wrong (a misread question or a wrong final step), long
answers are cut at max_tokens (finish_reason "length"). With a ``Behaviour`` it errs like a
real teacher, per question and seeded (see ``oracle_behaviour``).
"""

from __future__ import annotations

import hashlib
import random
import re
from typing import Any

from scicot_jax.data.answers import ANSWER_TRIGGER
from scicot_jax.data.examples import Example
from scicot_jax.data.synthetic import SYNTHETIC_TASKS, write_rationale_and_answer
from scicot_jax.teacher.fakes.batch_server import BatchFaults
from scicot_jax.teacher.fakes.httpserver import FaultConfig, TeacherServer
from scicot_jax.teacher.fakes.oracle_behaviour import (
    Behaviour,
    compass_rationale,
    flawed_rationale,
    steps_of,
)
from scicot_jax.teacher.prompts import ParsedPrompt, parse_prompt

UNKNOWN = "I am not sure how to solve this question."
_FINAL_RE = re.compile(re.escape(ANSWER_TRIGGER) + r" (.+?)\.(?:\s|$)")


def identify(question: str, has_choices: bool = False) -> str | None:
    """Which synthetic task a question belongs to (its solver accepts it), or None."""
    # Strict solvers first: the arithmetic one also accepts an mc_reasoning question's start.
    order = (
        ["mc_reasoning", "compass"] if has_choices else ["coin_flip", "last_letter", "arithmetic"]
    )
    for name in order + [t for t in SYNTHETIC_TASKS if t not in order and not has_choices]:
        spec = SYNTHETIC_TASKS[name]
        try:
            spec.solve(question)
        except ValueError:
            continue
        return name
    return None


def _wrong_answer(answer: str, task: str, choices: tuple[tuple[str, str], ...]) -> str:
    if choices:
        labels = [lb for lb, _ in choices]
        return labels[(labels.index(answer) + 1) % len(labels)] if answer in labels else labels[0]
    if SYNTHETIC_TASKS[task].answer_type == "yes_no":
        return "no" if answer == "yes" else "yes"
    if answer.lstrip("-").isdigit():
        return str(int(answer) + 1)
    return answer[:-1] if len(answer) > 1 else answer + "x"


class OracleServer(TeacherServer):
    """Synthetic-task oracle over the Gemini and OpenAI routes."""

    name = "oracle"

    def __init__(
        self,
        port: int = 0,
        *,
        error_rate: float = 0.0,
        faults: FaultConfig | None = None,
        log_requests: bool = True,
        batch_faults: BatchFaults | None = None,
        seed: int = 0,
        behaviour: Behaviour | None = None,
    ):
        super().__init__(port, faults=faults, log_requests=log_requests, batch_faults=batch_faults)
        self.error_rate = error_rate
        self.seed = seed
        self.behaviour = behaviour or Behaviour(seed=seed)

    def _request_rng(self, prompt: str, params: dict[str, Any]) -> random.Random:
        seed = params.get("seed")
        if seed is None and float(params.get("temperature") or 0) > 0:
            return random.Random()  # unseeded sampling: like an LLM, differs every time
        temperature = float(params.get("temperature") or 0)
        h = hashlib.sha256(f"{self.seed}|{seed}|{temperature}|{prompt}".encode()).digest()
        return random.Random(int.from_bytes(h[:8], "big"))

    def complete(self, prompt: str, params: dict[str, Any]) -> tuple[str, str]:
        parsed = parse_prompt(prompt)
        task = identify(parsed.question, bool(parsed.choices)) if parsed else None
        if parsed is None or task is None:
            return UNKNOWN, "stop"
        rng = self._request_rng(prompt, params)
        try:
            if parsed.kind == "answer":
                text = " " + self._final_answer(parsed, task)
            else:
                text = self._rationale(parsed, task, rng, float(params.get("temperature") or 0))
                text = text if parsed.kind == "few_shot" else " " + text
        except ValueError:  # e.g. choices that do not contain the result: a confused teacher
            text = " " + UNKNOWN
        limit = params.get("max_tokens")
        words = text.split(" ")
        if limit and len(text.split()) > int(limit):
            kept, n = [], 0
            for w in words:  # keep the leading space; count only real words
                n += bool(w)
                if n > int(limit):
                    break
                kept.append(w)
            return " ".join(kept), "length"
        return text, "stop"

    def _rationale(self, p: ParsedPrompt, task: str, rng: random.Random, temperature: float) -> str:
        b = self.behaviour
        flaw = None
        if b.active:
            steps, greedy = steps_of(task, p.question), temperature <= 0
            if p.kind == "conditioned":
                bad = b.conditioned_rationalises(p.question, steps, rng, greedy)
                flaw = "rationalised" if bad else None
            else:
                flaw = "wrong" if b.zero_shot_wrong(p.question, steps, rng, greedy) else None
            if flaw is None and rng.random() < b.flawed_right:
                flaw = "flawed_right"
            if task == "compass":
                return compass_rationale(p.question, rng, flaw)[0]
        spec = SYNTHETIC_TASKS[task]
        # More phrasings become likely as temperature rises (all of them from T ~ 0.7).
        n_var = 1 if temperature <= 0 else min(spec.num_variants, 1 + int(temperature * 3 + 0.5))
        variant = rng.randrange(n_var)
        if flaw is not None:  # a misread step (None: no misreading changes the answer)
            text = flawed_rationale(task, p.question, p.choices, rng, flaw, variant)
            if text is not None:
                return text
        wrong = rng.random() < self.error_rate
        ex = Example("", p.question, "", p.choices)
        rationale, answer = write_rationale_and_answer(task, ex, variant)
        if not wrong:
            return rationale
        return self._wrong_rationale(p, task, rng, variant)

    def _wrong_rationale(self, p: ParsedPrompt, task: str, rng: random.Random, variant: int) -> str:
        """A wrong rationale: a misread question reasoned consistently, else a wrong last step."""
        text = flawed_rationale(task, p.question, p.choices, rng, "wrong", variant)
        if text is not None:
            return text
        rationale, answer = write_rationale_and_answer(
            task, Example("", p.question, "", p.choices), variant
        )
        final = f"{ANSWER_TRIGGER} {answer}."
        return rationale.replace(
            final, f"{ANSWER_TRIGGER} {_wrong_answer(answer, task, p.choices)}."
        )

    def _final_answer(self, p: ParsedPrompt, task: str) -> str:
        """Zero-shot step 2: the answer the given reasoning reached (else the true answer)."""
        found = _FINAL_RE.findall(p.reasoning)
        if found:
            return f"{found[-1]}."
        _, answer = write_rationale_and_answer(task, Example("", p.question, "", p.choices), 0)
        return f"{answer}."


def start_oracle_server(
    port: int = 0,
    *,
    latency_ms: tuple[float, float] | float = 0.0,
    error_rate: float = 0.0,
    log_requests: bool = True,
    seed: int = 0,
    behaviour: Behaviour | None = None,
    batch_faults: BatchFaults | None = None,
    **fault_opts: Any,
) -> OracleServer:
    """Start an oracle on loopback in a background thread; `.url`, `.close()`.

    fault_opts are FaultConfig fields: rate_429, rate_5xx, rate_malformed, rate_drop,
    rate_slow, slow_s, retry_after_s, daily_quota_after, server_rpm, script.
    """
    lat = (latency_ms, latency_ms) if isinstance(latency_ms, int | float) else latency_ms
    faults = FaultConfig(latency_s=(lat[0] / 1000, lat[1] / 1000), seed=seed, **fault_opts)
    return OracleServer(
        port,
        error_rate=error_rate,
        faults=faults,
        log_requests=log_requests,
        seed=seed,
        behaviour=behaviour,
        batch_faults=batch_faults,
    ).start()
