"""A job (example, sample index): its requests (zero-shot: step 2 from step 1's response) and,
from their responses, its record."""

from __future__ import annotations

import hashlib
from typing import Any

from scicot_jax.data import grading
from scicot_jax.data.cards import TaskCard
from scicot_jax.data.examples import Example
from scicot_jax.data.store import RationaleRecord
from scicot_jax.teacher import prompts
from scicot_jax.teacher.config import RunConfig
from scicot_jax.teacher.protocol import GenRequest, GenResponse


def derive_seed(base: int, example_id: str, sample_index: int) -> int:
    """Per-sample seed: distinct per (example, sample), stable across runs."""
    h = hashlib.sha256(f"{base}\x00{example_id}\x00{sample_index}".encode()).digest()
    return int.from_bytes(h[:4], "big") & 0x7FFFFFFF


class JobRequests:
    """The requests and records of a run's jobs (its settings, card, exemplars and grader)."""

    def __init__(self, cfg: RunConfig, card: TaskCard):
        self.cfg, self.card = cfg, card
        self.exemplars = prompts.load_exemplars(cfg.exemplars) if cfg.exemplars else ()
        self._provider = cfg.provider  # asked per request: computed once
        kind = "teacher_step2" if cfg.prompt == "zero_shot_cot" else "rationale"
        self._grader = grading.grader_for(card, kind)

    def requests_for(self, ex: Example, k: int) -> GenRequest:
        """The first request of job (ex, k); zero-shot step 2 follows from its response."""
        cfg = self.cfg
        seed = derive_seed(cfg.seed, ex.id, k)
        if cfg.prompt == "zero_shot_cot":
            text, stop = prompts.zero_shot_step1(ex), ()
        elif cfg.prompt == "answer_conditioned":
            text, stop = prompts.answer_conditioned(ex), ()
        else:
            text, stop = prompts.few_shot(ex, self.exemplars), prompts.FEW_SHOT_STOP
        return GenRequest(
            self._provider, cfg.model, text, cfg.temperature, cfg.max_tokens, seed, k, stop
        )

    def step2_for(self, first: GenRequest, reasoning: GenResponse) -> GenRequest:
        """Zero-shot step 2: the answer-extraction request that follows step 1's reasoning."""
        cfg = self.cfg
        text = prompts.zero_shot_step2(first.prompt, reasoning.text, cfg.answer_trigger)
        return GenRequest(
            self._provider,
            cfg.model,
            text,
            cfg.answer_temperature,
            cfg.answer_max_tokens,
            first.seed,
            first.sample_index,
        )

    def record_for(
        self, ex: Example, k: int, first: GenRequest, r1: GenResponse, r2: GenResponse | None
    ) -> RationaleRecord:
        """The record of job (ex, k) from its responses (r2: zero-shot step 2's)."""
        cfg = self.cfg
        extra: dict[str, Any] = {"seed": first.seed, "finish_reason": r1.finish_reason}
        tokens_in, tokens_out = r1.input_tokens, r1.output_tokens
        if r2 is not None:
            tokens_in, tokens_out = tokens_in + r2.input_tokens, tokens_out + r2.output_tokens
            extra["answer_completion"] = r2.text
            rationale = r1.text.strip()
            pred, ok = self._grader.grade(r2.text, ex.answer, ex.choices)
        else:
            text = r1.text.split("\nQ:")[0] if cfg.prompt == "few_shot" else r1.text
            rationale = text.strip()
            pred, ok = self._grader.grade(text, ex.answer, ex.choices)
        if r1.truncated:
            extra["truncated"] = True
        return RationaleRecord(
            example_id=ex.id,
            sample_index=k,
            rationale=rationale,
            answer=pred,
            correct=ok,
            source=f"teacher:{cfg.model}",
            prompt_kind=cfg.prompt,
            temperature=cfg.temperature,
            input_tokens=tokens_in,
            output_tokens=tokens_out,
            split=cfg.split,
            extra=extra,
        )
