"""Batch-mode clients: OpenAI's Batch API over HTTP and Gemini's through google-genai.

Both turn GenRequests into one JSONL line each (the job's input file), submit, poll, cancel and
read results back as (request key, GenResponse or TeacherError). States are normalised to
pending | running | succeeded | failed | cancelled | expired.

Size limits per job, from the providers' documentation:
- OpenAI: "The file can contain up to 50,000 requests, and can be up to 200 MB in size"
  (API reference, POST /v1/batches, input_file_id; platform.openai.com/docs/api-reference/batch).
- Gemini: inline requests while the whole request stays under 20 MB, a JSONL input file (Files
  API) up to 2 GB (ai.google.dev/gemini-api/docs/batch-mode, "Creating a batch job").
Both bill batch requests at 50% of the standard price (the same pages; see pricing.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from scicot_jax.teacher.backends import (
    DEFAULT_URLS,
    GeminiBackend,
    api_key_from_env,
    normalise_base_url,
    openai_body,
    openai_response,
    scrub,
)
from scicot_jax.teacher.protocol import (
    FatalRequestError,
    GenRequest,
    GenResponse,
    TeacherError,
    TransientError,
)

TERMINAL = ("succeeded", "failed", "cancelled", "expired")
OPENAI_MAX_REQUESTS, OPENAI_MAX_BYTES = 50_000, 200 * 2**20
GEMINI_INLINE_MAX_BYTES, GEMINI_MAX_BYTES = 20 * 2**20, 2 * 2**30
_OPENAI_STATES = {
    "validating": "pending",
    "in_progress": "running",
    "finalizing": "running",
    "cancelling": "running",
    "completed": "succeeded",
    "failed": "failed",
    "expired": "expired",
    "cancelled": "cancelled",
}
_GEMINI_STATES = {
    "JOB_STATE_PENDING": "pending",
    "JOB_STATE_QUEUED": "pending",
    "JOB_STATE_RUNNING": "running",
    "JOB_STATE_CANCELLING": "running",
    "JOB_STATE_SUCCEEDED": "succeeded",
    "JOB_STATE_FAILED": "failed",
    "JOB_STATE_CANCELLED": "cancelled",
    "JOB_STATE_EXPIRED": "expired",
}


class JobLost(TeacherError):
    """The provider does not know the job (404): its requests must be sent again."""

    def __init__(self, message: str, status: int = 404):
        super().__init__(message)
        self.status = status


@dataclass
class RemoteState:
    """A job as the provider reports it."""

    state: str  # pending | running | succeeded | failed | cancelled | expired
    raw: str  # the provider's own name for it
    message: str = ""

    @property
    def done(self) -> bool:
        return self.state in TERMINAL


Result = tuple[str, GenResponse | TeacherError]


class BatchClient(Protocol):
    """What the batch driver needs from a provider."""

    provider: str
    max_requests: int
    max_bytes: int

    def line(self, req: GenRequest) -> bytes: ...

    def upload(self, path: Path, local_id: str) -> str | None: ...

    def submit(self, local_id: str, remote_file: str | None, reqs: list[GenRequest]) -> str: ...

    def find(self, local_id: str, remote_file: str | None) -> str | None: ...

    def status(self, remote_id: str) -> RemoteState: ...

    def results(self, remote_id: str, reqs: dict[str, GenRequest]) -> Iterator[Result]: ...

    def cancel(self, remote_id: str) -> None: ...

    def close(self) -> None: ...


def _error(status: int | None, message: str) -> TeacherError:
    """Per-item failures: server-side and expiry are worth retrying, the rest is final."""
    if status is None or status >= 500 or status in (408, 429, 499):
        return TransientError(message, status)
    return FatalRequestError(message, status)


class OpenAIBatchClient:
    """The OpenAI Batch API (and compatible servers) over plain HTTP."""

    provider = "openai"
    max_requests, max_bytes = OPENAI_MAX_REQUESTS, OPENAI_MAX_BYTES

    def __init__(
        self,
        route: str = "chat",
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_tokens_field: str = "max_tokens",
    ):
        self.route, self._field, self._key = route, max_tokens_field, api_key
        self.endpoint = "/v1/chat/completions" if route == "chat" else "/v1/completions"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        url = normalise_base_url(base_url or DEFAULT_URLS["openai"], "openai")
        self._http = httpx.Client(base_url=url, headers=headers, timeout=timeout)

    def _call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            r = self._http.request(method, path, **kw)
        except httpx.HTTPError as e:
            msg = scrub(f"{method} {path}: {type(e).__name__}: {e}", self._key)
            raise TransientError(msg) from None
        if r.status_code == 404:
            raise JobLost(f"{method} {path}: HTTP 404", 404)
        if r.status_code >= 500 or r.status_code in (408, 429):
            raise TransientError(f"{method} {path}: HTTP {r.status_code}", r.status_code)
        if r.status_code >= 400:
            msg = scrub(r.text, self._key, 300)
            raise FatalRequestError(f"{method} {path}: HTTP {r.status_code}: {msg}", r.status_code)
        return r

    def line(self, req: GenRequest) -> bytes:
        body = openai_body(req, self.route, self._field)
        d = {"custom_id": req.key, "method": "POST", "url": self.endpoint, "body": body}
        return (json.dumps(d, ensure_ascii=False) + "\n").encode()

    def upload(self, path: Path, local_id: str) -> str:
        with open(path, "rb") as f:
            files = {"file": (f"{local_id}.jsonl", f, "application/jsonl")}
            return self._call("POST", "/files", data={"purpose": "batch"}, files=files).json()["id"]

    def submit(self, local_id: str, remote_file: str | None, reqs: list[GenRequest]) -> str:
        body = {
            "input_file_id": remote_file,
            "endpoint": self.endpoint,
            "completion_window": "24h",
            "metadata": {"scicot_job": local_id},
        }
        return self._call("POST", "/batches", json=body).json()["id"]

    def find(self, local_id: str, remote_file: str | None) -> str | None:
        """A job created from our input file before a crash hid its id (newest first)."""
        after = None
        while True:
            params = {"limit": 100, **({"after": after} if after else {})}
            page = self._call("GET", "/batches", params=params).json()
            for b in page.get("data") or []:
                meta = b.get("metadata") or {}
                if b.get("input_file_id") == remote_file or meta.get("scicot_job") == local_id:
                    return b["id"]
            if not page.get("has_more") or not page.get("data"):
                return None
            after = page["data"][-1]["id"]

    def status(self, remote_id: str) -> RemoteState:
        b = self._call("GET", f"/batches/{remote_id}").json()
        raw = str(b.get("status"))
        errors = (b.get("errors") or {}).get("data") or []
        msg = "; ".join(str(e.get("message")) for e in errors[:3])
        return RemoteState(_OPENAI_STATES.get(raw, "running"), raw, msg)

    def results(self, remote_id: str, reqs: dict[str, GenRequest]) -> Iterator[Result]:
        b = self._call("GET", f"/batches/{remote_id}").json()
        for fid in (b.get("output_file_id"), b.get("error_file_id")):
            if not fid:
                continue
            text = self._call("GET", f"/files/{fid}/content").text
            for raw in text.splitlines():
                if raw.strip():
                    yield from self._result(json.loads(raw), reqs)

    def _result(self, d: dict[str, Any], reqs: dict[str, GenRequest]) -> Iterator[Result]:
        key = d.get("custom_id")
        if key not in reqs:
            return  # a malformed line the server could not attribute: its request stays unanswered
        resp, err = d.get("response") or {}, d.get("error") or {}
        status = resp.get("status_code")
        if status == 200:
            try:
                yield key, openai_response(reqs[key], resp.get("body") or {}, self.route)
            except TeacherError as e:
                yield key, e
            return
        body_err = (resp.get("body") or {}).get("error") or {}
        msg = body_err.get("message") or err.get("message") or err.get("code") or "failed"
        yield key, _error(status, f"batch item: HTTP {status}: {msg}")

    def cancel(self, remote_id: str) -> None:
        self._call("POST", f"/batches/{remote_id}/cancel")

    def close(self) -> None:
        self._http.close()


class GeminiBatchClient:
    """Gemini batch mode through google-genai (inline requests, or a JSONL file when large)."""

    provider = "gemini"
    max_requests, max_bytes = 10**9, GEMINI_MAX_BYTES

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        inline_max_bytes: int | None = None,
    ):
        from google import genai
        from google.genai import types

        self._types, self._key = types, api_key
        self.inline_max_bytes = (
            GEMINI_INLINE_MAX_BYTES if inline_max_bytes is None else inline_max_bytes
        )
        opts = types.HttpOptions(
            base_url=normalise_base_url(base_url or DEFAULT_URLS["gemini"], "gemini"),
            api_version="v1beta",
            timeout=int(timeout * 1000),
            retry_options=types.HttpRetryOptions(attempts=1),
        )
        self._client = genai.Client(api_key=api_key or "no-key", http_options=opts)

    def _call(self, what: str, fn: Any, *args: Any, **kw: Any) -> Any:
        from google.genai import errors as genai_errors

        try:
            return fn(*args, **kw)
        except genai_errors.APIError as e:
            code = int(getattr(e, "code", 0) or 0)
            msg = scrub(f"{what}: HTTP {code}: {getattr(e, 'message', '') or e}", self._key)
            if code == 404:
                raise JobLost(msg, 404) from None
            raise _error(code, msg) from None
        except httpx.HTTPError as e:
            raise TransientError(scrub(f"{what}: {type(e).__name__}: {e}", self._key)) from None

    def line(self, req: GenRequest) -> bytes:
        cfg = {"temperature": req.temperature, "maxOutputTokens": req.max_tokens}
        cfg["candidateCount"] = 1
        if req.seed is not None:
            cfg["seed"] = req.seed
        if req.stop:
            cfg["stopSequences"] = list(req.stop)
        request = {"contents": [{"role": "user", "parts": [{"text": req.prompt}]}]}
        d = {"key": req.key, "request": {**request, "generationConfig": cfg}}
        return (json.dumps(d, ensure_ascii=False) + "\n").encode()

    def upload(self, path: Path, local_id: str) -> str | None:
        """Small jobs go inline (None); larger ones as a JSONL file through the Files API."""
        if os.path.getsize(path) <= self.inline_max_bytes:
            return None
        config = {"display_name": local_id, "mime_type": "jsonl"}
        f = self._call("upload", self._client.files.upload, file=str(path), config=config)
        return str(f.name)

    def submit(self, local_id: str, remote_file: str | None, reqs: list[GenRequest]) -> str:
        t = self._types
        model = reqs[0].model
        if remote_file is not None:
            src: Any = remote_file
        else:
            src = [
                t.InlinedRequest(
                    contents=r.prompt, config=GeminiBackend.config(r), metadata={"key": r.key}
                )
                for r in reqs
            ]
        job = self._call(
            "create",
            self._client.batches.create,
            model=model,
            src=src,
            config={"display_name": local_id},
        )
        return str(job.name)

    def find(self, local_id: str, remote_file: str | None) -> str | None:
        for job in self._call("list", self._client.batches.list, config={"page_size": 100}):
            if job.display_name == local_id:
                return str(job.name)
        return None

    def status(self, remote_id: str) -> RemoteState:
        job = self._call("get", self._client.batches.get, name=remote_id)
        raw = str(getattr(job.state, "value", job.state))
        msg = str(getattr(job.error, "message", "") or "") if getattr(job, "error", None) else ""
        return RemoteState(_GEMINI_STATES.get(raw, "running"), raw, msg)

    def results(self, remote_id: str, reqs: dict[str, GenRequest]) -> Iterator[Result]:
        job = self._call("get", self._client.batches.get, name=remote_id)
        dest = job.dest
        if dest is None:
            return
        if dest.inlined_responses:
            for item in dest.inlined_responses:
                key = (item.metadata or {}).get("key")
                if key in reqs:
                    yield key, self._item(reqs[key], item.response, item.error)
        elif dest.file_name:
            data = self._call("download", self._client.files.download, file=dest.file_name)
            for raw in data.decode("utf-8").splitlines():
                if not raw.strip():
                    continue
                d = json.loads(raw)
                key = d.get("key")
                if key in reqs:
                    resp = d.get("response")
                    if resp is not None:
                        resp = self._types.GenerateContentResponse.model_validate(resp)
                    yield key, self._item(reqs[key], resp, d.get("error"))

    def _item(self, req: GenRequest, resp: Any, error: Any) -> GenResponse | TeacherError:
        if resp is None:
            err = error if isinstance(error, dict) else (error.model_dump() if error else {})
            code = err.get("code")
            return _error(
                int(code) if code else None, f"batch item: {err.get('message', 'failed')}"
            )
        try:
            return GeminiBackend.to_response(req, resp)
        except TeacherError as e:
            return e

    def cancel(self, remote_id: str) -> None:
        self._call("cancel", self._client.batches.cancel, name=remote_id)

    def close(self) -> None:
        self._client.close()


def make_batch_client(
    backend: str,
    *,
    base_url: str | None = None,
    api: str = "chat",
    timeout: float = 60.0,
    max_tokens_field: str = "max_tokens",
) -> BatchClient:
    """The batch client of a backend (keys from the environment, as online)."""
    if backend == "gemini":
        key = api_key_from_env("gemini")
        if key is None and base_url is None:
            raise ValueError("Gemini needs GEMINI_API_KEY or GOOGLE_API_KEY in the environment")
        return GeminiBatchClient(base_url=base_url, api_key=key, timeout=timeout)
    key = api_key_from_env("openai")
    if key is None and base_url is None:
        raise ValueError("OpenAI needs OPENAI_API_KEY in the environment")
    return OpenAIBatchClient(
        api, base_url=base_url, api_key=key, timeout=timeout, max_tokens_field=max_tokens_field
    )
