"""Refusals that real clients understand: RFC 6750 / RFC 9470 challenges, JSON or GraphQL-shaped bodies.

| outcome         | HTTP | WebSocket close | GraphQL code         |
|-----------------|------|-----------------|----------------------|
| unauthenticated | 401  | 4401            | UNAUTHENTICATED      |
| stepup          | 401  | 4401            | STEP_UP_REQUIRED     |
| deny            | 403  | 4403            | FORBIDDEN            |
| bad_request     | 400  | 4400            | BAD_REQUEST          |
| too_large       | 413  | 4413            | PAYLOAD_TOO_LARGE    |
| method_not_allowed | 405 (`Allow: POST`) | 4405 | METHOD_NOT_ALLOWED |
| too_many_requests | 429 (`Retry-After: 1`) | 4429 | TOO_MANY_REQUESTS |
| error           | 503  | 4503            | POLICY_UNAVAILABLE   |

No token at all gets a bare `Bearer realm=...` challenge (RFC 6750 §3.1: no error code); a token that
fails verification gets `error="invalid_token"`; malformed credentials get 400 `error="invalid_request"`.
Everything that does not depend on the request is encoded once at construction.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from typing import Any

from ig_gate.middleware.caps import RETRY_AFTER_S
from ig_gate.middleware.decision import (
    BAD_REQUEST,
    DENY,
    ERROR,
    NOT_ALLOWED,
    STEPUP,
    TOO_LARGE,
    TOO_MANY,
    UNAUTHENTICATED,
    Decision,
)
from ig_gate.middleware.settings import StepUpSettings

Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class _Kind:
    status: int
    close_code: int
    error: str  # JSON body `error`
    code: str  # GraphQL extensions.code
    message: str


_KINDS = {
    UNAUTHENTICATED: _Kind(401, 4401, "unauthenticated", "UNAUTHENTICATED", "Authentication required"),
    STEPUP: _Kind(401, 4401, "step_up_required", "STEP_UP_REQUIRED", "Step-up authentication required"),
    DENY: _Kind(403, 4403, "forbidden", "FORBIDDEN", "Access denied by policy"),
    BAD_REQUEST: _Kind(400, 4400, "bad_request", "BAD_REQUEST", "Malformed request"),
    TOO_LARGE: _Kind(413, 4413, "payload_too_large", "PAYLOAD_TOO_LARGE", "Request body too large"),
    NOT_ALLOWED: _Kind(405, 4405, "method_not_allowed", "METHOD_NOT_ALLOWED", "Method not allowed"),
    TOO_MANY: _Kind(429, 4429, "too_many_requests", "TOO_MANY_REQUESTS", "Too many requests"),
    ERROR: _Kind(503, 4503, "policy_unavailable", "POLICY_UNAVAILABLE", "Policy decision unavailable"),
}
_UNSAFE_QUOTED = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")  # RFC 6750 error_description charset
_MAX_REASON_CHARS = 120
_MAX_ENCODED = 256  # kinds of refusal whose encoded body is kept
_ID_MARK = "\x00decision-id\x00"  # stands for the decision id while a body is encoded (its last field)
_ID_MARK_JSON = encode_basestring_ascii(_ID_MARK).encode()


def _quoted(text: str) -> str:
    return _UNSAFE_QUOTED.sub("?", text)[:_MAX_REASON_CHARS]


class Responses:
    """Builds refusal responses for decisions that do not pass."""

    def __init__(self, stepup: StepUpSettings, realm: str = "ig-gate") -> None:
        realm_q = _quoted(realm)
        acr = _quoted(" ".join(stepup.acr_values))
        self._base_headers: Headers = [
            (b"content-type", b"application/json"),
            (b"cache-control", b"no-store"),
        ]
        self._missing = f'Bearer realm="{realm_q}"'.encode()
        self._realm_q = realm_q
        self._encoded: dict[tuple[Any, ...], tuple[int, bytes, bytes, Headers]] = {}
        self._stepup = (
            f'Bearer realm="{realm_q}", error="insufficient_user_authentication", '
            f'error_description="A stronger or more recent authentication is required", '
            f'acr_values="{acr}", max_age={int(stepup.max_age)}'
        ).encode()

    def status(self, decision: Decision) -> int:
        """HTTP status for a refused decision."""
        return _KINDS[decision.outcome].status

    def close_code(self, decision: Decision) -> int:
        """WebSocket close code for a refused decision (sent right after accept)."""
        return _KINDS[decision.outcome].close_code

    def http(self, decision: Decision) -> tuple[int, Headers, bytes]:
        """(status, headers, body) for a decision that does not pass. The body and headers of each kind of
        refusal are encoded once (`_encoded`); per request only the decision id is spliced in (~1 µs instead
        of ~5 µs: a tenant far over its cap is answered this way hundreds of times a second)."""
        key = (decision.outcome, decision.graphql, decision.detail, decision.reasons, decision.token_error)
        encoded = self._encoded.get(key)
        if encoded is None:
            encoded = self._encode(decision)
            if len(self._encoded) >= _MAX_ENCODED:  # details may vary (token errors): stay bounded
                self._encoded.clear()
            self._encoded[key] = encoded
        status, head, tail, extra = encoded
        payload = head + encode_basestring_ascii(decision.decision_id).encode() + tail
        return status, [*self._base_headers, (b"content-length", str(len(payload)).encode()), *extra], payload

    def _encode(self, decision: Decision) -> tuple[int, bytes, bytes, Headers]:
        """(status, body before the quoted decision id, body after it, headers after content-length)."""
        kind = _KINDS[decision.outcome]
        marked = decision._replace(decision_id=_ID_MARK)
        if decision.graphql:
            body: dict[str, Any] = {"errors": [self.graphql_error(marked, reasons=False)]}
        else:
            reason = decision.detail or ", ".join(decision.reasons) or kind.error
            body = {"error": kind.error, "reason": reason, "decision_id": _ID_MARK}
        head, tail = json.dumps(body, separators=(",", ":")).encode().rsplit(_ID_MARK_JSON, 1)  # id: last
        extra: Headers = []
        challenge = self._challenge(decision)
        if challenge is not None:
            extra.append((b"www-authenticate", challenge))
        if decision.outcome == NOT_ALLOWED:
            extra.append((b"allow", b"POST"))
        elif decision.outcome == TOO_MANY:
            extra.append((b"retry-after", str(RETRY_AFTER_S).encode()))
        return kind.status, head, tail, extra

    def graphql_error(self, decision: Decision, *, reasons: bool = True) -> dict[str, Any]:
        """The GraphQL error object for a refused decision (`extensions`: code, decision id, and with
        `reasons` the policy's reason codes, as a WebSocket `error` message carries them)."""
        kind = _KINDS[decision.outcome]
        reason = decision.detail or ", ".join(decision.reasons) or kind.error
        extensions: dict[str, Any] = {"code": kind.code, "decision_id": decision.decision_id}
        if reasons:
            extensions["reasons"] = list(decision.reasons)
        return {"message": f"{kind.message}: {reason}", "extensions": extensions}

    def _challenge(self, decision: Decision) -> bytes | None:
        if decision.outcome == STEPUP:
            return self._stepup
        error = decision.token_error
        if error is None:
            return None
        if error == "missing":
            return self._missing
        code = "invalid_request" if error == "malformed" else "invalid_token"
        description = _quoted(decision.detail or code)
        return f'Bearer realm="{self._realm_q}", error="{code}", error_description="{description}"'.encode()
