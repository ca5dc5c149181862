"""The wire layer of the offline teachers: Gemini and OpenAI routes, latency, fault injection.

A `TeacherServer` is a threaded `http.server` on loopback. Subclasses supply `complete(prompt,
params) -> (text, finish_reason)`; this module speaks the protocols around it and injects the
faults real providers produce, so the real clients are tested against them.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from scicot_jax.teacher.fakes.batch_server import BatchFaults, BatchService
from scicot_jax.teacher.fakes.batch_server import handle as handle_batch
from scicot_jax.teacher.fakes.wire import parse_request, wire_response

FAULTS = ("ok", "429", "500", "503", "malformed", "drop", "slow", "quota", "401", "echo_key")
_GEMINI_RE = re.compile(r"^/(v1beta|v1)/models/([^/:]+):generateContent$")


@dataclass
class FaultConfig:
    """Fault injection; rates are per request, `script` lists faults for the next requests."""

    latency_s: tuple[float, float] = (0.0, 0.0)  # uniform (min, max) added to every response
    rate_429: float = 0.0
    rate_5xx: float = 0.0
    rate_malformed: float = 0.0
    rate_drop: float = 0.0
    rate_slow: float = 0.0
    slow_s: float = 5.0
    retry_after_s: float | None = 1.0  # sent as Retry-After and Gemini RetryInfo.retryDelay
    retry_after_header: bool = True  # False: Gemini routes carry only RetryInfo (as Google does)
    daily_quota_after: int | None = None  # after this many answered requests: daily-quota 429s
    server_rpm: float | None = None  # enforce a requests/min limit with 429s, like a provider
    script: list[str] = field(default_factory=list)
    seed: int = 0

    def __post_init__(self) -> None:
        bad = [f for f in self.script if f not in FAULTS]
        if bad:
            raise ValueError(f"unknown fault(s) {bad}; expected {FAULTS}")


def request_id(model: str, prompt: str, seed: Any) -> str:
    """What the server logs per request; tests recompute it from cache entries."""
    return hashlib.sha256(json.dumps([model, prompt, seed]).encode()).hexdigest()[:32]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections as with real APIs
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall
    server: TeacherServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        if handle_batch(self.server.batch, self, "GET", self.path, b""):
            return
        if self.path == "/stats":
            self._json(200, self.server.stats())
        elif self.path == "/health":
            self._json(200, {"ok": True})
        else:
            self._json(404, {"error": {"code": 404, "message": f"no route {self.path}"}})

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if len(raw) < length:  # the client died mid-request: there is no request to answer
            self.close_connection = True
            return
        if handle_batch(self.server.batch, self, "POST", self.path, raw):
            return
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            self._json(400, {"error": {"code": 400, "message": "request body is not JSON"}})
            return
        m = _GEMINI_RE.match(self.path.split("?")[0])
        if m:
            self.server.serve_post(self, "gemini", m.group(2), body)
        elif self.path in ("/v1/chat/completions", "/v1/completions"):
            route = "chat" if "chat" in self.path else "completions"
            self.server.serve_post(self, route, str(body.get("model", "")), body)
        else:
            self._json(404, {"error": {"code": 404, "message": f"no route {self.path}"}})

    def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _send(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (timeout): nothing to do

    def _drop(self) -> None:
        """Close the connection without a response (a reset, as from a dying proxy)."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class TeacherServer(ThreadingHTTPServer):
    """Loopback server speaking Gemini generateContent and OpenAI chat/completions."""

    daemon_threads = True
    request_queue_size = 256
    name = "teacher"

    def __init__(
        self,
        port: int = 0,
        host: str = "127.0.0.1",
        faults: FaultConfig | None = None,
        log_requests: bool = True,
        batch_faults: BatchFaults | None = None,
    ):
        super().__init__((host, port), _Handler)
        self.batch = BatchService(self, batch_faults)
        self.faults = faults or FaultConfig()
        self.log_requests = log_requests
        self._lock = threading.Lock()
        self._rng = random.Random(self.faults.seed)
        self._script = list(self.faults.script)
        self._counts: Counter[str] = Counter()
        self._received: Counter[str] = Counter()
        self._answered = 0
        self._echoed = 0
        self._rpm_tokens = 1.0
        self._rpm_stamp = time.monotonic()
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> TeacherServer:
        self._thread = threading.Thread(
            target=self.serve_forever, args=(0.05,), name=f"{self.name}-server", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        self.batch.close()
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> TeacherServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that vanish (killed, timed out) are normal here; anything else is printed."""
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)

    # -- stats --------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "counts": dict(self._counts),
                "answered": self._answered,
                "received": dict(self._received) if self.log_requests else {},
            }

    def received(self) -> Counter[str]:
        """request_id -> times received (any outcome)."""
        with self._lock:
            return Counter(self._received)

    # -- the brain (subclasses) -----------------------------------------------------------
    def complete(self, prompt: str, params: dict[str, Any]) -> tuple[str, str]:
        """(text, finish_reason 'stop'|'length') for a prompt; raise LookupError for 404."""
        raise NotImplementedError

    def log_request(self, route: str, model: str, prompt: str, params: dict[str, Any]) -> None:
        """Count a request (online or a batch item) by route and by request id."""
        with self._lock:
            self._counts[f"route:{route}"] += 1
            if self.log_requests:
                self._received[request_id(model, prompt, params.get("seed"))] += 1

    def answer(self, prompt: str, params: dict[str, Any]) -> tuple[str, str]:
        """complete(), cut at the first stop sequence; counted as answered."""
        text, finish = self.complete(prompt, params)
        for s in params.get("stop") or ():
            if s and s in text:
                text, finish = text[: text.index(s)], "stop"
        with self._lock:
            self._answered += 1
        return text, finish

    # -- one request ----------------------------------------------------------------------
    def _pick_fault(self) -> str:
        f = self.faults
        with self._lock:
            if self._script:
                return self._script.pop(0)
            if f.daily_quota_after is not None and self._answered >= f.daily_quota_after:
                return "quota"
            if f.server_rpm:
                now = time.monotonic()
                burst = max(1.0, f.server_rpm / 60)  # one second of requests
                self._rpm_tokens = min(
                    burst, self._rpm_tokens + (now - self._rpm_stamp) * f.server_rpm / 60
                )
                self._rpm_stamp = now
                if self._rpm_tokens < 1:
                    return "429"
                self._rpm_tokens -= 1
            r = self._rng.random()
        for name, rate in (
            ("429", f.rate_429),
            ("500", f.rate_5xx),
            ("malformed", f.rate_malformed),
            ("drop", f.rate_drop),
            ("slow", f.rate_slow),
        ):
            if r < rate:
                return name
            r -= rate
        return "ok"

    def serve_post(self, h: _Handler, route: str, model: str, body: dict[str, Any]) -> None:
        prompt, params = parse_request(route, body)
        sample = h.headers.get("X-Sample-Index")  # backends.SAMPLE_INDEX_HEADER
        if sample is not None and sample.isdigit():
            params["sample_index"] = int(sample)
        keyed = bool(h.headers.get("Authorization") or h.headers.get("x-goog-api-key"))
        with self._lock:
            self._counts["with_api_key"] += keyed  # counted, never stored
        self.log_request(route, model, prompt, params)
        fault = self._pick_fault()
        with self._lock:
            self._counts[f"fault:{fault}"] += 1
        lo, hi = self.faults.latency_s
        if hi > 0:
            time.sleep(lo + (hi - lo) * random.random())
        if fault == "drop":
            h._drop()
            return
        if fault == "echo_key":
            self._echo_key(h)
            return
        if fault in ("429", "quota"):
            self._send_429(h, route, daily=fault == "quota")
            return
        if fault in ("500", "503"):
            status = int(fault)
            h._json(
                status,
                {
                    "error": {
                        "code": status,
                        "message": "injected server error",
                        "status": "UNAVAILABLE" if status == 503 else "INTERNAL",
                        "type": "server_error",
                    }
                },
            )
            return
        if fault == "401":
            h._json(
                401,
                {
                    "error": {
                        "code": 401,
                        "message": "API key not valid (injected)",
                        "status": "UNAUTHENTICATED",
                        "type": "invalid_request_error",
                    }
                },
            )
            return
        if fault == "slow":
            time.sleep(self.faults.slow_s)
        try:
            text, finish = self.answer(prompt, params)
        except LookupError as e:
            h._json(
                404,
                {
                    "error": {
                        "code": 404,
                        "message": str(e),
                        "status": "NOT_FOUND",
                        "type": "invalid_request_error",
                    }
                },
            )
            return
        except Exception as e:  # a bug in the brain: answer like a provider's internal error
            h._json(
                500,
                {
                    "error": {
                        "code": 500,
                        "message": f"{type(e).__name__}: {e}",
                        "status": "INTERNAL",
                        "type": "server_error",
                    }
                },
            )
            return
        if fault == "malformed":
            h._send(200, b'{"choices": [{"text": "unterminated')
            return
        h._json(200, wire_response(route, model, prompt, text, finish))

    def _echo_key(self, h: _Handler) -> None:
        """A 400 whose body echoes the request's API key, at offset 0, 1, 2, ... in turn (also
        JSON-quoted and a 12-character piece), as careless proxies and providers do."""
        key = h.headers.get("x-goog-api-key") or ""
        auth = h.headers.get("Authorization") or ""
        key = key or (auth[len("Bearer ") :] if auth.startswith("Bearer ") else auth)
        with self._lock:
            offset, self._echoed = self._echoed, self._echoed + 1
        body = f"{'.' * offset}{key} invalid; {json.dumps(key)} {key[:12]}".ljust(offset + 700, ".")
        h._send(400, body.encode())

    def _send_429(self, h: _Handler, route: str, daily: bool) -> None:
        delay = self.faults.retry_after_s
        headers = {}
        if (
            delay is not None
            and not daily
            and (self.faults.retry_after_header or route != "gemini")
        ):
            headers = {"Retry-After": f"{delay:g}", "retry-after-ms": str(int(delay * 1000))}
        if route == "gemini":
            quota_id = (
                "GenerateRequestsPerDayPerProjectPerModel-FreeTier"
                if daily
                else "GenerateRequestsPerMinutePerProjectPerModel"
            )
            details: list[dict[str, Any]] = [
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [
                        {
                            "quotaMetric": "generativelanguage.googleapis.com/"
                            "generate_content_requests",
                            "quotaId": quota_id,
                        }
                    ],
                }
            ]
            if delay is not None and not daily:
                details.append(
                    {
                        "@type": "type.googleapis.com/google.rpc.RetryInfo",
                        "retryDelay": f"{delay:g}s",
                    }
                )
            err = {
                "code": 429,
                "status": "RESOURCE_EXHAUSTED",
                "details": details,
                "message": "You exceeded your current quota (injected).",
            }
        elif daily:
            err = {
                "message": "Rate limit reached for requests per day (RPD) (injected)",
                "type": "requests",
                "code": "rate_limit_exceeded",
            }
        else:
            err = {
                "message": "Rate limit reached for requests per min (RPM) (injected)",
                "type": "requests",
                "code": "rate_limit_exceeded",
            }
        h._json(429, {"error": err}, headers)
