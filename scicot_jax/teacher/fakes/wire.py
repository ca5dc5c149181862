"""The fake providers' wire format: prompt and parameters from a request body, a response body
from an answer (shared by the online server and its batch service)."""

from __future__ import annotations

import time
import uuid
from typing import Any


def count_tokens(text: str) -> int:
    """Whitespace words stand in for tokens."""
    return len(text.split())


def parse_request(route: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(prompt text, {temperature, max_tokens, seed, stop}) from either protocol's body."""
    if route == "gemini":
        contents = body.get("contents") or []
        texts = [
            p.get("text", "")
            for c in contents
            for p in (c.get("parts") or [])
            if isinstance(p, dict)
        ]
        cfg = body.get("generationConfig") or {}
        return "".join(texts), {
            "temperature": cfg.get("temperature", 1.0),
            "max_tokens": cfg.get("maxOutputTokens"),
            "seed": cfg.get("seed"),
            "stop": cfg.get("stopSequences"),
        }
    if route == "chat":
        msgs = body.get("messages") or []
        users = [m.get("content", "") for m in msgs if m.get("role") == "user"]
        prompt = users[-1] if users else ""
    else:
        prompt = body.get("prompt", "")
    stop = body.get("stop")
    return prompt, {
        "temperature": body.get("temperature", 1.0),
        "max_tokens": body.get("max_tokens") or body.get("max_completion_tokens"),
        "seed": body.get("seed"),
        "stop": [stop] if isinstance(stop, str) else stop,
    }


def wire_response(route: str, model: str, prompt: str, text: str, finish: str) -> dict[str, Any]:
    """The provider's response body for one answer (OpenAI completion/chat or Gemini)."""
    n_in, n_out = count_tokens(prompt), count_tokens(text)
    if route == "gemini":
        return {
            "candidates": [
                {
                    "content": {"role": "model", "parts": [{"text": text}]},
                    "finishReason": "MAX_TOKENS" if finish == "length" else "STOP",
                    "index": 0,
                }
            ],
            "usageMetadata": {
                "promptTokenCount": n_in,
                "candidatesTokenCount": n_out,
                "totalTokenCount": n_in + n_out,
            },
            "modelVersion": model,
        }
    usage = {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
    if route == "chat":
        choice["message"] = {"role": "assistant", "content": text}
        kind = "chat.completion"
    else:
        choice.update(text=text, logprobs=None)
        kind = "text_completion"
    return {
        "id": f"cmpl-{uuid.uuid4().hex[:12]}",
        "object": kind,
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": usage,
    }
