"""Both providers' batch protocols on the loopback teachers, with the real state machines.

OpenAI: `POST /v1/files` (multipart, purpose=batch), `GET /v1/files/{id}/content`,
`POST /v1/batches`, `GET /v1/batches[/{id}]`, `POST /v1/batches/{id}/cancel`; states
validating -> in_progress -> finalizing -> completed | failed | expired | cancelling -> cancelled.
Gemini (what google-genai's `client.batches` and `client.files` call): `POST
/v1beta/models/{m}:batchGenerateContent` (inline requests or a `files/...` JSONL),
`GET /v1beta/batches[/{id}]`, `POST /v1beta/batches/{id}:cancel`, resumable uploads under
`/upload/v1beta/files` and downloads of `files/{id}:download`; states BATCH_STATE_PENDING ->
RUNNING -> SUCCEEDED | FAILED | CANCELLED | EXPIRED.

Each line is answered by the server's own `complete()` (the oracle or the replay), so a batch
gives the same text as the online route. Faults: a queueing delay, a per-item error rate,
expiry after N items, and malformed input lines reported per line in the error output.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import random
import re
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Any

from scicot_jax.teacher.fakes.wire import parse_request, wire_response

OPENAI_ENDPOINTS = ("/v1/chat/completions", "/v1/completions")
_OPENAI_TERMINAL = ("completed", "failed", "expired", "cancelled")
_GEMINI_STATE = {
    "validating": "BATCH_STATE_PENDING",
    "in_progress": "BATCH_STATE_RUNNING",
    "finalizing": "BATCH_STATE_RUNNING",
    "cancelling": "BATCH_STATE_RUNNING",
    "completed": "BATCH_STATE_SUCCEEDED",
    "failed": "BATCH_STATE_FAILED",
    "expired": "BATCH_STATE_EXPIRED",
    "cancelled": "BATCH_STATE_CANCELLED",
}


@dataclass
class BatchFaults:
    """How the loopback batch service misbehaves (all off by default)."""

    queue_s: float = 0.0  # validating/pending before a job starts
    item_s: float = 0.0  # per item while running (completion after ~queue_s + n * item_s)
    item_error_rate: float = 0.0  # items answered with a 500 in the error output
    expire_after: int | None = None  # items processed before the job expires
    seed: int = 0


@dataclass
class _Job:
    id: str
    protocol: str  # openai | gemini
    model: str
    lines: list[Any]  # parsed items, or an error string per malformed line
    endpoint: str = "/v1/chat/completions"
    display_name: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    input_file: str | None = None
    inline: bool = False
    status: str = "validating"
    created: float = field(default_factory=time.time)
    started: float | None = None
    ended: float | None = None
    done: int = 0
    ok: list[Any] = field(default_factory=list)
    errors: list[Any] = field(default_factory=list)
    output_file: str | None = None
    error_file: str | None = None
    cancel: bool = False


class BatchService:
    """Files and batch jobs of one loopback server; a thread moves jobs through their states."""

    def __init__(self, server: Any, faults: BatchFaults | None = None):
        self.server = server
        self.faults = faults or BatchFaults()
        self.files: dict[str, tuple[str, bytes]] = {}  # id -> (purpose, data)
        self.jobs: dict[str, _Job] = {}
        self.uploads: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._rng = random.Random(self.faults.seed)
        self._wake = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="batch-service", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join(timeout=5)

    # -- the state machine -----------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop:
            self._wake.wait(0.01)
            self._wake.clear()
            with self._lock:
                jobs = [j for j in self.jobs.values() if j.status not in _OPENAI_TERMINAL]
            for job in jobs:
                self._step(job)

    def _step(self, job: _Job) -> None:
        f, now = self.faults, time.time()
        if job.status == "validating":
            if job.cancel:
                return self._finish(job, "cancelled")
            if now - job.created >= f.queue_s:
                job.status, job.started = "in_progress", now
            return
        if job.status in ("in_progress", "cancelling"):
            if job.cancel:
                return self._finish(job, "cancelled")
            if f.expire_after is not None and job.done >= f.expire_after:
                return self._finish(job, "expired")
            if job.done >= len(job.lines):
                job.status = "finalizing"
                return
            if f.item_s and now - (job.started or now) < (job.done + 1) * f.item_s:
                return
            self._answer(job, job.done, job.lines[job.done])
            job.done += 1
            return
        if job.status == "finalizing":
            self._finish(job, "completed")

    def _answer(self, job: _Job, i: int, item: Any) -> None:
        """Run one line through the server's brain; a result or an error entry."""
        if isinstance(item, str):  # a malformed line
            job.errors.append((None, 400, item))
            return
        key, route, body = item
        prompt, params = parse_request(route, body)
        if self._rng.random() < self.faults.item_error_rate:
            job.errors.append((key, 500, "injected item failure"))
            return
        try:
            text, finish = self.server.answer(prompt, params)
        except LookupError as e:
            job.errors.append((key, 404, str(e)))
            return
        job.ok.append((key, wire_response(route, job.model, prompt, text, finish)))

    def _add(self, job: _Job) -> None:
        """Queue a new job; every item counts as received now (submitted, whatever follows)."""
        for item in job.lines:
            if not isinstance(item, str):
                prompt, params = parse_request(item[1], item[2])
                self.server.log_request(f"batch-{item[1]}", job.model, prompt, params)
        with self._lock:
            self.jobs[job.id] = job
        self._wake.set()

    def _finish(self, job: _Job, status: str) -> None:
        """End a job: unprocessed items count as failed; output and error files written."""
        reason = {"expired": "batch_expired", "cancelled": "batch_cancelled"}.get(status)
        if reason:
            for item in job.lines[job.done :]:
                key = None if isinstance(item, str) else item[0]
                job.errors.append((key, None, reason))
        job.status, job.ended = status, time.time()
        if job.protocol == "openai":
            self._openai_files(job)
        elif not job.inline:
            self._gemini_file(job)

    # -- OpenAI ------------------------------------------------------------------------------
    def _new_file(self, purpose: str, data: bytes) -> str:
        fid = f"file-{uuid.uuid4().hex[:24]}"
        with self._lock:
            self.files[fid] = (purpose, data)
        return fid

    def _openai_files(self, job: _Job) -> None:
        out = [
            {
                "id": f"batch_req_{uuid.uuid4().hex[:16]}",
                "custom_id": key,
                "response": {"status_code": 200, "request_id": uuid.uuid4().hex, "body": body},
                "error": None,
            }
            for key, body in job.ok
        ]
        err = []
        for key, status, msg in job.errors:
            if status is None:  # expired / cancelled before it ran
                err.append({"custom_id": key, "response": None, "error": {"code": msg}})
            elif key is None:  # malformed line
                err.append(
                    {
                        "custom_id": None,
                        "response": None,
                        "error": {"code": "invalid_request", "message": msg},
                    }
                )
            else:
                body = {"error": {"message": msg, "type": "server_error", "code": status}}
                err.append(
                    {
                        "custom_id": key,
                        "response": {"status_code": status, "body": body},
                        "error": None,
                    }
                )
        if out:
            job.output_file = self._new_file("batch_output", _jsonl(out))
        if err:
            job.error_file = self._new_file("batch_output", _jsonl(err))

    def openai_upload(self, content_type: str, raw: bytes) -> tuple[int, dict[str, Any]]:
        form = _multipart(content_type, raw)
        if form.get("purpose", b"").decode() != "batch" or "file" not in form:
            return 400, _oa_error("a 'file' and purpose 'batch' are required")
        data = form["file"]
        fid = self._new_file("batch", data)
        return 200, {
            "id": fid,
            "object": "file",
            "bytes": len(data),
            "created_at": int(time.time()),
            "filename": "batch.jsonl",
            "purpose": "batch",
        }

    def openai_content(self, fid: str) -> bytes | None:
        with self._lock:
            entry = self.files.get(fid)
        return None if entry is None else entry[1]

    def openai_create(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        endpoint, window = body.get("endpoint"), body.get("completion_window")
        if endpoint not in OPENAI_ENDPOINTS:
            return 400, _oa_error(f"endpoint must be one of {OPENAI_ENDPOINTS}")
        if window != "24h":
            return 400, _oa_error("completion_window must be '24h'")
        fid = body.get("input_file_id")
        with self._lock:
            entry = self.files.get(fid)
        if entry is None or entry[0] != "batch":
            return 404, _oa_error(f"no batch input file {fid!r}")
        lines, model = _openai_lines(entry[1], endpoint)
        job = _Job(
            id=f"batch_{uuid.uuid4().hex[:24]}",
            protocol="openai",
            model=model,
            lines=lines,
            endpoint=endpoint,
            metadata=dict(body.get("metadata") or {}),
            input_file=fid,
        )
        self._add(job)
        return 200, self.openai_view(job)

    def openai_view(self, job: _Job) -> dict[str, Any]:
        failed = len(job.errors)
        return {
            "id": job.id,
            "object": "batch",
            "endpoint": job.endpoint,
            "input_file_id": job.input_file,
            "completion_window": "24h",
            "status": job.status,
            "output_file_id": job.output_file,
            "error_file_id": job.error_file,
            "created_at": int(job.created),
            "metadata": job.metadata,
            "request_counts": {
                "total": len(job.lines),
                "completed": len(job.ok),
                "failed": failed,
            },
        }

    def get(self, jid: str) -> _Job | None:
        with self._lock:
            return self.jobs.get(jid)

    def listing(self, protocol: str) -> list[_Job]:
        with self._lock:
            return sorted(
                (j for j in self.jobs.values() if j.protocol == protocol),
                key=lambda j: j.created,
                reverse=True,
            )

    def cancel(self, job: _Job) -> None:
        if job.status not in _OPENAI_TERMINAL:
            job.cancel = True
            if job.status == "in_progress":
                job.status = "cancelling"
            self._wake.set()

    # -- Gemini ------------------------------------------------------------------------------
    def gemini_create(self, model: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        batch = body.get("batch") or {}
        src = batch.get("inputConfig") or {}
        if "fileName" in src:
            data = self.openai_content(str(src["fileName"]).removeprefix("files/"))
            if data is None:
                return 404, _g_error(404, f"no file {src['fileName']!r}")
            lines, inline = _gemini_file_lines(data), False
        elif "requests" in src:
            reqs = (src.get("requests") or {}).get("requests") or []
            lines, inline = [_gemini_item(r, i + 1) for i, r in enumerate(reqs)], True
        else:
            return 400, _g_error(400, "inputConfig needs requests or fileName")
        job = _Job(
            id=uuid.uuid4().hex[:20],
            protocol="gemini",
            model=model,
            lines=lines,
            display_name=str(batch.get("displayName") or ""),
            inline=inline,
        )
        self._add(job)
        return 200, self.gemini_view(job)

    def gemini_view(self, job: _Job) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch",
            "name": f"batches/{job.id}",
            "displayName": job.display_name,
            "model": f"models/{job.model}",
            "state": _GEMINI_STATE[job.status],
            "createTime": _rfc3339(job.created),
            "updateTime": _rfc3339(time.time()),
            "batchStats": {
                "requestCount": str(len(job.lines)),
                "successfulRequestCount": str(len(job.ok)),
                "failedRequestCount": str(len(job.errors)),
                "pendingRequestCount": str(len(job.lines) - len(job.ok) - len(job.errors)),
            },
        }
        if job.status in _OPENAI_TERMINAL:
            meta["endTime"] = _rfc3339(job.ended or time.time())
            if job.inline:
                meta["output"] = {"inlinedResponses": {"inlinedResponses": _gemini_inline(job)}}
            elif job.output_file:
                meta["output"] = {"responsesFile": f"files/{job.output_file}"}
        view: dict[str, Any] = {"name": f"batches/{job.id}", "metadata": meta}
        if job.status in _OPENAI_TERMINAL:
            view["done"] = True
        return view

    def _gemini_file(self, job: _Job) -> None:
        rows = [{"key": key, "response": body} for key, body in job.ok]
        rows += [
            {"key": key, "error": {"code": status or 499, "message": msg}}
            for key, status, msg in job.errors
        ]
        job.output_file = self._new_file("batch_output", _jsonl(rows))

    def gemini_upload_start(self, meta: dict[str, Any]) -> str:
        uid = uuid.uuid4().hex
        with self._lock:
            self.uploads[uid] = {"meta": meta.get("file") or {}, "data": b""}
        return uid

    def gemini_upload_chunk(self, uid: str, data: bytes, final: bool) -> dict[str, Any] | None:
        with self._lock:
            up = self.uploads.get(uid)
            if up is None:
                return None
            up["data"] += data
        if not final:
            return {}
        fid = self._new_file("batch", up["data"])
        return {
            "file": {
                "name": f"files/{fid}",
                "displayName": up["meta"].get("displayName", ""),
                "mimeType": up["meta"].get("mimeType", "application/jsonl"),
                "sizeBytes": str(len(up["data"])),
                "state": "ACTIVE",
                "uri": f"{self.server.url}/v1beta/files/{fid}",
            }
        }


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


def _oa_error(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "code": None}}


def _g_error(code: int, message: str) -> dict[str, Any]:
    status = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND"}.get(code, "UNKNOWN")
    return {"error": {"code": code, "message": message, "status": status}}


def _rfc3339(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


def _multipart(content_type: str, raw: bytes) -> dict[str, bytes]:
    """name -> value of a multipart/form-data body."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + raw)
    out = {}
    for part in msg.iter_parts() if msg.is_multipart() else []:
        name = part.get_param("name", header="content-disposition")
        if name:
            out[str(name)] = part.get_payload(decode=True) or b""
    return out


def _openai_lines(data: bytes, endpoint: str) -> tuple[list[Any], str]:
    """Parsed (custom_id, route, body) per line, or 'line N: problem' for a malformed one."""
    route = "chat" if endpoint.endswith("chat/completions") else "completions"
    lines: list[Any] = []
    model, seen = "", set()
    for n, raw in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        if not raw.strip():
            continue
        try:
            d = json.loads(raw)
        except json.JSONDecodeError as e:
            lines.append(f"line {n}: invalid JSON ({e.msg})")
            continue
        cid = d.get("custom_id") if isinstance(d, dict) else None
        if not isinstance(cid, str) or not cid:
            lines.append(f"line {n}: missing custom_id")
        elif cid in seen:
            lines.append(f"line {n}: duplicate custom_id {cid!r}")
        elif d.get("url") != endpoint or d.get("method") != "POST":
            lines.append(f"line {n}: url must be {endpoint} with method POST")
        elif not isinstance(d.get("body"), dict):
            lines.append(f"line {n}: body must be an object")
        else:
            seen.add(cid)
            model = model or str(d["body"].get("model", ""))
            lines.append((cid, route, d["body"]))
    return lines, model


def _gemini_item(r: Any, n: int) -> Any:
    """(key, 'gemini', request) from an inline request or a file line; else an error string."""
    if not isinstance(r, dict) or not isinstance(r.get("request"), dict):
        return f"line {n}: missing request"
    key = r.get("key") or (r.get("metadata") or {}).get("key")
    if not isinstance(key, str) or not key:
        return f"line {n}: missing key"
    return (key, "gemini", r["request"])


def _gemini_file_lines(data: bytes) -> list[Any]:
    out: list[Any] = []
    for n, raw in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        if not raw.strip():
            continue
        try:
            out.append(_gemini_item(json.loads(raw), n))
        except json.JSONDecodeError as e:
            out.append(f"line {n}: invalid JSON ({e.msg})")
    return out


def _gemini_inline(job: _Job) -> list[dict[str, Any]]:
    """Inline results in input order (the SDK pairs them by metadata.key)."""
    rows = [{"response": body, "metadata": {"key": key}} for key, body in job.ok]
    rows += [
        {"error": {"code": status or 499, "message": msg}, "metadata": {"key": key}}
        for key, status, msg in job.errors
    ]
    return rows


_OA_FILE = re.compile(r"^/v1/files/([^/]+)/content$")
_OA_BATCH = re.compile(r"^/v1/batches/([^/]+?)(/cancel)?$")
_G_CREATE = re.compile(r"^/v1beta/models/([^/:]+):batchGenerateContent$")
_G_BATCH = re.compile(r"^/v1beta/batches/([^/:]+)(:cancel)?$")
_G_DOWNLOAD = re.compile(r"^(?:/download)?/v1beta/files/([^/:]+):download$")


def handle(service: BatchService, h: Any, method: str, path: str, raw: bytes) -> bool:
    """Serve a batch or file route; False if `path` is not one."""
    p, _, query = path.partition("?")
    params = urllib.parse.parse_qs(query)

    def body() -> dict[str, Any]:
        try:
            d = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            d = None
        return d if isinstance(d, dict) else {}

    if method == "POST" and p == "/v1/files":
        h._json(*service.openai_upload(h.headers.get("Content-Type", ""), raw))
    elif method == "GET" and (m := _OA_FILE.match(p) or _G_DOWNLOAD.match(p)):
        data = service.openai_content(m.group(1))
        if data is None:
            h._json(404, _oa_error(f"no file {m.group(1)!r}"))
        else:
            h._send(200, data)
    elif p == "/v1/batches":
        if method == "POST":
            h._json(*service.openai_create(body()))
        else:
            jobs = service.listing("openai")
            after = (params.get("after") or [None])[0]
            if after:
                ids = [j.id for j in jobs]
                jobs = jobs[ids.index(after) + 1 :] if after in ids else []
            limit = int((params.get("limit") or ["20"])[0])
            page = [service.openai_view(j) for j in jobs[:limit]]
            h._json(200, {"object": "list", "data": page, "has_more": len(jobs) > limit})
    elif m := _OA_BATCH.match(p):
        job = service.get(m.group(1))
        if job is None or job.protocol != "openai":
            h._json(404, _oa_error(f"no batch {m.group(1)!r}"))
        else:
            if m.group(2) and method == "POST":
                service.cancel(job)
            h._json(200, service.openai_view(job))
    elif method == "POST" and (m := _G_CREATE.match(p)):
        h._json(*service.gemini_create(m.group(1), body()))
    elif p == "/v1beta/batches":
        h._json(200, {"operations": [service.gemini_view(j) for j in service.listing("gemini")]})
    elif m := _G_BATCH.match(p):
        job = service.get(m.group(1))
        if job is None or job.protocol != "gemini":
            h._json(404, _g_error(404, f"no batch {m.group(1)!r}"))
        elif m.group(2):
            service.cancel(job)
            h._json(200, {})
        else:
            h._json(200, service.gemini_view(job))
    elif method == "POST" and p == "/upload/v1beta/files":
        _gemini_upload(service, h, params, raw)
    else:
        return False
    return True


def _gemini_upload(service: BatchService, h: Any, params: dict[str, list[str]], raw: bytes) -> None:
    """Google's resumable upload: 'start' returns the upload URL, then 'upload, finalize'."""
    command = h.headers.get("X-Goog-Upload-Command", "")
    if "start" in command:
        try:
            meta = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            meta = {}
        uid = service.gemini_upload_start(meta if isinstance(meta, dict) else {})
        url = f"{service.server.url}/upload/v1beta/files?upload_id={uid}"
        h._json(200, {}, {"X-Goog-Upload-URL": url, "X-Goog-Upload-Status": "active"})
        return
    uid = (params.get("upload_id") or [""])[0]
    result = service.gemini_upload_chunk(uid, raw, "finalize" in command)
    if result is None:
        h._json(404, _g_error(404, f"no upload session {uid!r}"))
    else:
        status = "final" if "finalize" in command else "active"
        h._json(200, result, {"X-Goog-Upload-Status": status})
