"""A policy source that asks a remote OPA-compatible server (OPA itself, or another ig-gate's Data API)
through opa-python-client, for operators who keep their OPA (`bundle.remote_opa_url`).

The snapshot it hands the gate evaluates `data.<path>` with `POST /v1/data/<path>`. The event loop never
waits on it: transports call `Gate.decide_async`, which awaits `evaluate_async` on a memo miss: the HTTP
call (`requests`, no retries) runs in one of at most `MAX_CALLS` worker threads and is awaited at most
`timeout_s` (a slow PDP delays only the requests that wait for it, and only that long). There is no
engine here, so nothing thread-affine goes into the pool. `evaluate` is the same call, blocking: for
callers on their own thread. Any failure or a call without an answer in time is a PolicyEvalError, which
the gate turns into a failure-mode decision (503 when failing closed). Decisions are memoized by the gate
like local ones (short TTL), under the revision `remote:<url>`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import requests
from opa_client import OpaClient

from ig_gate.bundles.errors import PolicyEvalError
from ig_gate.middleware.rego_path import PathError, path_for_query
from ig_gate.middleware.settings import ConfigError

MAX_CALLS = 16  # remote calls in flight per process; more wait for a thread (within their timeout)


class RemoteSnapshot:
    """Quacks like PolicySnapshot (revision, digest, cacheable, evaluate); there is no local bundle."""

    __slots__ = ("_source", "cacheable", "digest", "revision", "verified")

    def __init__(self, source: RemotePolicySource) -> None:
        self._source = source
        self.revision = f"remote:{source.url}"
        self.digest = ""
        self.cacheable = True
        self.verified = None

    def evaluate(self, query: str, input: Mapping[str, Any]) -> Any:
        """The remote server's result for `query` (None when undefined); PolicyEvalError on any failure."""
        return self._source.evaluate(query, input)

    async def evaluate_async(self, query: str, input: Mapping[str, Any]) -> Any:
        """evaluate(), awaited off the event loop with the source's timeout."""
        return await self._source.evaluate_async(query, input)


class RemotePolicySource:
    """A PolicySource backed by a remote OPA-compatible Data API."""

    def __init__(self, url: str, *, timeout_s: float = 1.0, token: str | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
            raise ConfigError(f"bundle.remote_opa_url: expected http(s)://host[:port], got {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        self.url = f"{parts.scheme}://{parts.netloc}"
        self._client = OpaClient(
            host=parts.hostname, port=port, ssl=parts.scheme == "https", token=token,
            timeout=timeout_s, retries=0,
        )
        self._timeout_s = timeout_s
        self._pool = ThreadPoolExecutor(MAX_CALLS, thread_name_prefix="ig-gate-remote-pdp")  # threads on use
        self._snapshot = RemoteSnapshot(self)
        self._lock = threading.Lock()
        self._counts = {"evaluations": 0, "failures": 0}
        self._last_error: str | None = None

    def current(self) -> RemoteSnapshot:
        """Always the remote snapshot: whether the remote answers is found out per evaluation."""
        return self._snapshot

    def evaluate(self, query: str, input: Mapping[str, Any]) -> Any:
        """POST /v1/data/<path of query> {"input": input} -> its `result` (None when undefined); blocks."""
        try:
            result = self._post(query, input)
        except PolicyEvalError as exc:
            self._count(str(exc))
            raise
        self._count(None)
        return result

    async def evaluate_async(self, query: str, input: Mapping[str, Any]) -> Any:
        """evaluate() in a worker thread, awaited at most timeout_s (waiting for a thread included);
        PolicyEvalError on any failure or when no answer came in time (counted once, as awaited)."""
        call = asyncio.get_running_loop().run_in_executor(self._pool, self._post, query, input)
        try:
            result = await asyncio.wait_for(call, self._timeout_s)
        except TimeoutError:
            error = f"remote PDP {self.url}: no answer within {self._timeout_s}s"
            self._count(error)
            raise PolicyEvalError(error) from None
        except PolicyEvalError as exc:
            self._count(str(exc))
            raise
        self._count(None)
        return result

    def _post(self, query: str, input: Mapping[str, Any]) -> Any:
        try:
            path = path_for_query(query).replace(".", "%2E")
        except PathError as exc:
            raise PolicyEvalError(f"remote PDP {self.url}: {exc}") from None
        try:
            body = self._client.query_rule(dict(input), path)
        except (requests.RequestException, ValueError) as exc:
            raise PolicyEvalError(f"remote PDP {self.url}: {type(exc).__name__} querying {path}") from None
        if not isinstance(body, dict):
            raise PolicyEvalError(f"remote PDP {self.url}: response for {path} is not a JSON object")
        return body.get("result")

    def ready(self) -> str | None:
        """None when the remote reports healthy with its bundles activated, else why not (does I/O)."""
        if self._client.check_health(query={"bundles": True}):
            return None
        return f"remote PDP {self.url} is not healthy (GET /health?bundles)"

    def status(self) -> dict[str, Any]:
        """URL, evaluation and failure counts, the last failure."""
        with self._lock:
            return {"url": self.url, **self._counts, "last_error": self._last_error}

    def close(self) -> None:
        """Stop the worker threads (calls in flight end with their timeout) and close the HTTP session."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close_connection()

    def _count(self, error: str | None) -> None:
        with self._lock:
            self._counts["evaluations"] += 1
            if error is not None:
                self._counts["failures"] += 1
                self._last_error = error
