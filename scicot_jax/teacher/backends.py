"""Teacher backends: Gemini (google-genai async client) and OpenAI-compatible HTTP routes.

Every backend turns a GenRequest into a GenResponse or raises one of the protocol errors, so
the runner alone decides about retries (the SDK's own retries are off: it must see every 429).
API keys come only from the environment and are scrubbed from every error message.
"""

from __future__ import annotations

import contextlib
import email.utils
import functools
import json
import math
import os
import re
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import quote, urlsplit

import httpx

from scicot_jax.teacher.protocol import (
    FatalRequestError,
    GenRequest,
    GenResponse,
    QuotaExhausted,
    RateLimited,
    TransientError,
    estimate_tokens,
)

KEY_ENV = {"gemini": ("GEMINI_API_KEY", "GOOGLE_API_KEY"), "openai": ("OPENAI_API_KEY",)}
DEFAULT_URLS = {
    "gemini": "https://generativelanguage.googleapis.com",
    "openai": "https://api.openai.com/v1",
}
T = TypeVar("T")
_TRANSIENT_STATUS = (408, 409, 425, 500, 502, 503, 504)
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
# OpenAI names daily limits "requests per day (RPD)" / "tokens per day (TPD)".
_DAILY_RE = re.compile(r"\b(RPD|TPD)\b|per day", re.IGNORECASE)


class Backend(Protocol):
    """What the runner needs from a backend."""

    provider: str

    async def generate(self, req: GenRequest) -> GenResponse: ...

    async def aclose(self) -> None: ...


def api_key_from_env(family: str) -> str | None:
    """The first key set among the family's environment variables (checked, never echoed)."""
    for name in KEY_ENV[family]:
        if os.environ.get(name):
            return check_api_key(os.environ[name], name)
    return None


def check_api_key(key: str, name: str) -> str:
    """The key as given; whitespace or control characters in it are a configuration error.

    Such a key (a CRLF .env file) makes every request fail with the key inside the error.
    """
    if any(c.isspace() or not c.isprintable() for c in key):
        raise ValueError(
            f"{name} contains whitespace or control characters (a CRLF .env file or a "
            "trailing newline?); fix the variable (the key is not shown)"
        )
    return key


REDACTED = "<redacted>"
_PIECE = 8  # a key piece this long is as good as a leak
_SCAN = 4096  # partial pieces are looked for in this many characters past the cut


@functools.lru_cache(maxsize=8)
def _key_forms(secret: str) -> tuple[tuple[str, ...], frozenset[str]]:
    """The key as it may appear in text (raw, JSON- and Python-escaped, URL-quoted), longest
    first, and every `_PIECE`-character piece of those forms."""
    forms = {secret, json.dumps(secret)[1:-1], repr(secret)[1:-1], quote(secret, safe="")}
    pieces = frozenset(f[i : i + _PIECE] for f in forms for i in range(len(f) - _PIECE + 1))
    return tuple(sorted(forms, key=len, reverse=True)), pieces


def scrub(text: str, secret: str | None, limit: int | None = None) -> str:
    """Text fit to log or store: the key removed in every form (whole, escaped, quoted, or any
    piece of 8+ characters), then cut to `limit` characters; scrubbing comes first, so a cut
    never leaves part of a key behind."""
    if not secret:
        return text[:limit]
    forms, pieces = _key_forms(secret)
    for f in forms:
        text = text.replace(f, REDACTED)
    if len(secret) >= _PIECE:
        text = _mask_pieces(text if limit is None else text[: limit + _SCAN], pieces)
    return text[:limit]


def _mask_pieces(text: str, pieces: frozenset[str]) -> str:
    """Replaces every stretch of text covered by key pieces with REDACTED."""
    spans: list[list[int]] = []
    for i in range(len(text) - _PIECE + 1):
        if text[i : i + _PIECE] in pieces:
            if spans and i <= spans[-1][1]:
                spans[-1][1] = i + _PIECE
            else:
                spans.append([i, i + _PIECE])
    out, pos = [], 0
    for a, b in spans:
        out += [text[pos:a], REDACTED]
        pos = b
    return "".join(out) + text[pos:]


def parse_duration(text: str) -> float | None:
    """'13s', '0.5s', '1m30s', '250ms' -> seconds."""
    parts = _DURATION_RE.findall(str(text).strip())
    if not parts:
        return None
    scale = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(v) * scale[u] for v, u in parts)


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from Retry-After (delta or HTTP date) or retry-after-ms."""
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def gemini_error_details(body: Any) -> tuple[float | None, bool]:
    """(RetryInfo.retryDelay seconds, daily quota?) from a google.rpc error body."""
    if isinstance(body, list) and body:
        body = body[0]
    err = body.get("error", body) if isinstance(body, dict) else {}
    delay, daily = None, False
    for d in err.get("details", []) if isinstance(err, dict) else []:
        if not isinstance(d, dict):
            continue
        kind = str(d.get("@type", ""))
        if kind.endswith("RetryInfo") and "retryDelay" in d:
            delay = parse_duration(d["retryDelay"])
        if kind.endswith("QuotaFailure"):
            for v in d.get("violations", []):
                quota = f"{v.get('quotaId', '')} {v.get('quotaMetric', '')}".lower()
                daily |= "perday" in quota or "per_day" in quota or "daily" in quota
    return delay, daily


def normalise_base_url(url: str, family: str) -> str:
    """OpenAI routes live under /v1: a bare host gets it appended; Gemini wants the root."""
    url = url.rstrip("/")
    if family == "openai" and urlsplit(url).path in ("", "/"):
        url += "/v1"
    return url


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One verifying context for all lanes (loading the CA bundle costs ~50 ms each time)."""
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


class _Lanes(Generic[T]):
    """Many small connection pools: httpx does O(connections) work per request in one pool."""

    PER_LANE = 2

    def __init__(self, make: Callable[[int], T], max_connections: int):
        n = max(1, math.ceil(max_connections / self.PER_LANE))
        self.lanes = [make(self.PER_LANE) for _ in range(n)]
        self.load = [0] * n

    @contextlib.contextmanager
    def pick(self) -> Iterator[T]:
        """The least busy lane, for one request."""
        i = min(range(len(self.load)), key=self.load.__getitem__)
        self.load[i] += 1
        try:
            yield self.lanes[i]
        finally:
            self.load[i] -= 1


# Request header naming the sample index k of a question (0 for the greedy sample).
SAMPLE_INDEX_HEADER = "X-Sample-Index"


def openai_body(
    req: GenRequest, route: str, max_tokens_field: str = "max_tokens"
) -> dict[str, Any]:
    """The JSON body of `req` for the chat or completions route (online and batch lines)."""
    body: dict[str, Any] = {
        "model": req.model,
        "temperature": req.temperature,
        max_tokens_field: req.max_tokens,
        "n": 1,
    }
    if req.seed is not None:
        body["seed"] = req.seed
    if req.stop:
        body["stop"] = list(req.stop)
    if route == "chat":
        body["messages"] = [{"role": "user", "content": req.prompt}]
    else:
        body["prompt"] = req.prompt
    return body


def openai_response(req: GenRequest, data: Any, route: str, raw: str = "") -> GenResponse:
    """A 200 body of the chat or completions route as a GenResponse (TransientError if bad)."""
    try:
        choice = data["choices"][0]
        out = choice["message"]["content"] if route == "chat" else choice["text"]
        if not isinstance(out, str):
            raise TypeError("completion text is not a string")
    except (KeyError, IndexError, TypeError) as e:
        shown = raw or str(data)
        raise TransientError(f"malformed response ({type(e).__name__}): {shown[:200]}") from None
    usage = data.get("usage") or {}
    finish = choice.get("finish_reason") or "stop"
    return GenResponse(
        text=out,
        finish_reason="length" if finish == "length" else ("stop" if finish == "stop" else finish),
        input_tokens=int(usage.get("prompt_tokens") or estimate_tokens(req.prompt)),
        output_tokens=int(usage.get("completion_tokens") or estimate_tokens(out)),
    )


class OpenAIBackend:
    """OpenAI-compatible `/chat/completions` or `/completions` (OpenAI, vLLM, the oracle)."""

    def __init__(
        self,
        route: str = "chat",
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_connections: int = 64,
        max_tokens_field: str = "max_tokens",
    ):
        if route not in ("chat", "completions"):
            raise ValueError(f"route must be 'chat' or 'completions', got {route!r}")
        self.route = route
        self.provider = f"openai-{route}"
        self._key = api_key
        self._max_tokens_field = max_tokens_field
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        url = normalise_base_url(base_url or DEFAULT_URLS["openai"], "openai")
        self._clients = _Lanes(
            lambda n: httpx.AsyncClient(
                base_url=url,
                headers=headers,
                timeout=httpx.Timeout(timeout),
                verify=_ssl_context(),
                limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
            ),
            max_connections,
        )

    def _body(self, req: GenRequest) -> dict[str, Any]:
        return openai_body(req, self.route, self._max_tokens_field)

    async def generate(self, req: GenRequest) -> GenResponse:
        path = "/chat/completions" if self.route == "chat" else "/completions"
        try:
            with self._clients.pick() as client:
                # The sample index rides in a header (providers ignore it; the body, which real
                # APIs validate, stays theirs): a replay server gives sample k its k-th recording.
                headers = {SAMPLE_INDEX_HEADER: str(req.sample_index)}
                r = await client.post(path, json=self._body(req), headers=headers)
        except httpx.TimeoutException as e:
            raise TransientError(f"timeout: {type(e).__name__}") from None
        except httpx.TransportError as e:
            raise TransientError(scrub(f"connection: {type(e).__name__}: {e}", self._key)) from None
        text = scrub(r.text, self._key, 500)
        if r.status_code == 429:
            try:
                err = r.json().get("error", {}) or {}
            except (ValueError, AttributeError):
                err = {}
            code = f"{err.get('code', '')} {err.get('type', '')}" if isinstance(err, dict) else ""
            if "insufficient_quota" in code:
                raise QuotaExhausted(f"quota exhausted (HTTP 429 insufficient_quota): {text}")
            if _DAILY_RE.search(str(err.get("message", "")) if isinstance(err, dict) else ""):
                raise QuotaExhausted(f"daily limit reached (HTTP 429): {text}")
            raise RateLimited(f"HTTP 429: {text}", parse_retry_after(r.headers))
        if r.status_code in _TRANSIENT_STATUS or r.status_code >= 500:
            raise TransientError(f"HTTP {r.status_code}: {text}", r.status_code)
        if r.status_code != 200:
            raise FatalRequestError(f"HTTP {r.status_code}: {text}", r.status_code)
        try:
            data = r.json()
        except ValueError:
            raise TransientError(f"malformed response (not JSON): {text[:200]}") from None
        return openai_response(req, data, self.route, text)

    async def aclose(self) -> None:
        for c in self._clients.lanes:
            await c.aclose()


class GeminiBackend:
    """Gemini `generateContent` through google-genai's async client, SDK retries off."""

    provider = "gemini"
    _BLOCKED = (
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "LANGUAGE",
        "IMAGE_SAFETY",
    )

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_connections: int = 64,
    ):
        from google import genai
        from google.genai import types

        self._types = types
        self._key = api_key
        url = normalise_base_url(base_url or DEFAULT_URLS["gemini"], "gemini")

        def make(n: int) -> tuple[Any, httpx.AsyncClient]:
            http = httpx.AsyncClient(
                timeout=httpx.Timeout(timeout),
                verify=_ssl_context(),
                limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
            )
            opts = types.HttpOptions(
                base_url=url,
                api_version="v1beta",
                timeout=int(timeout * 1000),
                retry_options=types.HttpRetryOptions(attempts=1),
                httpx_async_client=http,
            )
            # A loopback server needs no key; the SDK insists on one, so give a dummy.
            return genai.Client(api_key=api_key or "no-key", http_options=opts), http

        self._clients = _Lanes(make, max_connections)

    async def generate(self, req: GenRequest) -> GenResponse:
        from google.genai import errors as genai_errors

        config = self.config(req)
        try:
            with self._clients.pick() as (client, _):
                resp = await client.aio.models.generate_content(
                    model=req.model, contents=req.prompt, config=config
                )
        except genai_errors.APIError as e:
            self._raise_api_error(e)
        except httpx.TimeoutException as e:
            raise TransientError(f"timeout: {type(e).__name__}") from None
        except httpx.TransportError as e:
            raise TransientError(scrub(f"connection: {type(e).__name__}: {e}", self._key)) from None
        except ValueError as e:  # json.JSONDecodeError and pydantic.ValidationError are both
            raise TransientError(scrub(f"malformed response: {e}", self._key, 300)) from None
        return self.to_response(req, resp)

    def _raise_api_error(self, e: Any) -> None:
        code = int(getattr(e, "code", 0) or 0)
        msg = scrub(f"HTTP {code}: {getattr(e, 'message', '') or e}", self._key, 500)
        if code == 429:
            delay, daily = gemini_error_details(getattr(e, "details", None))
            if daily:
                raise QuotaExhausted(f"daily quota exhausted: {msg}") from None
            response = getattr(e, "response", None)
            header_delay = parse_retry_after(getattr(response, "headers", None))
            raise RateLimited(msg, delay if delay is not None else header_delay) from None
        if code in _TRANSIENT_STATUS or code >= 500:
            raise TransientError(msg, code) from None
        raise FatalRequestError(msg, code) from None

    @classmethod
    def config(cls, req: GenRequest) -> Any:
        """google-genai's GenerateContentConfig for `req` (online and batch requests)."""
        from google.genai import types

        return types.GenerateContentConfig(
            temperature=req.temperature,
            max_output_tokens=req.max_tokens,
            seed=req.seed,
            candidate_count=1,
            stop_sequences=list(req.stop) or None,
        )

    @classmethod
    def to_response(cls, req: GenRequest, resp: Any) -> GenResponse:
        """A GenerateContentResponse as a GenResponse (FatalRequestError if blocked or empty)."""
        cands = resp.candidates or []
        if not cands:
            block = getattr(resp.prompt_feedback, "block_reason", None)
            raise FatalRequestError(f"no candidates (prompt blocked: {block})")
        finish = str(getattr(cands[0].finish_reason, "value", cands[0].finish_reason) or "STOP")
        if finish in cls._BLOCKED:
            raise FatalRequestError(f"response blocked: finish_reason={finish}")
        parts = getattr(cands[0].content, "parts", None) or []
        text = "".join(p.text for p in parts if getattr(p, "text", None) and not p.thought)
        if not text and finish != "MAX_TOKENS":
            raise FatalRequestError(f"empty response (finish_reason={finish})")
        usage = resp.usage_metadata
        out_tokens = (getattr(usage, "candidates_token_count", None) or 0) + (
            getattr(usage, "thoughts_token_count", None) or 0
        )
        return GenResponse(
            text=text,
            finish_reason={"STOP": "stop", "MAX_TOKENS": "length"}.get(finish, finish.lower()),
            input_tokens=int(
                getattr(usage, "prompt_token_count", None) or estimate_tokens(req.prompt)
            ),
            output_tokens=int(out_tokens or estimate_tokens(text)),
        )

    async def aclose(self) -> None:
        for _, http in self._clients.lanes:
            await http.aclose()


def make_backend(
    backend: str,
    *,
    base_url: str | None = None,
    api: str = "chat",
    timeout: float = 60.0,
    max_connections: int = 64,
    api_key: str | None = None,
    max_tokens_field: str = "max_tokens",
) -> Backend:
    """'gemini' | 'openai' (route from `api`) | 'openai-chat' | 'openai-completions'."""
    if backend.startswith("openai-"):
        backend, api = "openai", backend.split("-", 1)[1]
    if backend == "gemini":
        key = check_api_key(api_key, "api_key") if api_key else api_key_from_env("gemini")
        if key is None and base_url is None:
            raise ValueError("Gemini needs GEMINI_API_KEY or GOOGLE_API_KEY in the environment")
        return GeminiBackend(
            base_url=base_url, api_key=key, timeout=timeout, max_connections=max_connections
        )
    if backend == "openai":
        key = check_api_key(api_key, "api_key") if api_key else api_key_from_env("openai")
        if key is None and base_url is None:
            raise ValueError("OpenAI needs OPENAI_API_KEY in the environment")
        return OpenAIBackend(
            api,
            base_url=base_url,
            api_key=key,
            timeout=timeout,
            max_connections=max_connections,
            max_tokens_field=max_tokens_field,
        )
    raise ValueError(f"unknown backend {backend!r}; expected gemini or openai")


def provider_name(backend: str, api: str = "chat") -> str:
    """The provider string that goes into cache keys."""
    if backend.startswith("openai-"):
        return backend
    return "gemini" if backend == "gemini" else f"openai-{api}"


__all__ = [
    "Backend",
    "GeminiBackend",
    "OpenAIBackend",
    "make_backend",
    "provider_name",
    "api_key_from_env",
    "check_api_key",
    "parse_retry_after",
    "parse_duration",
    "gemini_error_details",
    "scrub",
]
