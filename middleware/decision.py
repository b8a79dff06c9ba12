"""Decisions: the normalized policy input, the policy's verdict, the memo of verdicts, decision ids.

The policy input is small and flat in what it varies on, so it is first built as a tuple (the memo key,
cheap to hash) and only turned into the nested dict the Rego policy reads when the memo misses.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from ig_gate.errors import IgGateError
from ig_gate.middleware.bounded import FIFO

ALLOW, STEPUP, DENY = "allow", "stepup", "deny"
UNAUTHENTICATED, BAD_REQUEST, TOO_LARGE, ERROR = "unauthenticated", "bad_request", "too_large", "error"
NOT_ALLOWED = "method_not_allowed"  # a GraphQL mutation sent with GET (405, GraphQL-over-HTTP)
TOO_MANY = "too_many_requests"  # the tenant is over its cap (429, middleware/caps.py)
OUTCOMES = (ALLOW, STEPUP, DENY, UNAUTHENTICATED, BAD_REQUEST, TOO_LARGE, NOT_ALLOWED, TOO_MANY, ERROR)
MAX_REASONS = 8

# A memo key is the tuple (bundle digest, tenant, session.risk, session.acr, session.auth_age_s,
# session.subject, stepup, device.posture, geo.country, geo.anomaly, request.method, request.path,
# request.operation_type, request.purpose); policy_input() turns a key back into the nested input document.
InputKey = tuple[Any, ...]


class PolicyResultError(IgGateError, ValueError):
    """The policy query returned something that is not a decision object."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the policy said for one input; memoized per bundle revision."""

    outcome: str  # allow | stepup | deny
    reasons: tuple[str, ...]
    result: Mapping[str, Any]  # the policy's result as returned (for the decision log)


class Identity(NamedTuple):
    """The verified caller, handed to the app in scope["state"]["ig_gate"] when a request is allowed.

    Identity and Decision are NamedTuples, not frozen dataclasses: they are built on every request and
    a frozen dataclass costs ~1.3 us more to construct (measured); both are immutable all the same.
    """

    subject: str | None
    tenant: str | None
    risk: str | None
    posture: str | None
    country: str | None
    decision_id: str
    profile: str
    acr: str | None = None
    stepup: bool = False


class Decision(NamedTuple):
    """The gate's answer for one request; `passes` is True when the request goes on to the app."""

    outcome: str  # one of OUTCOMES
    reasons: tuple[str, ...]
    decision_id: str
    revision: str | None
    passes: bool
    graphql: bool = False
    identity: Identity | None = None
    token_error: str | None = None  # missing | invalid | expired | revoked | malformed (RFC 6750 challenge)
    detail: str = ""  # safe human-readable explanation (never token content)
    input: Mapping[str, Any] | None = None  # the policy input, when the policy was consulted


def policy_input(key: InputKey) -> dict[str, Any]:
    """The nested input document the policy reads, from a memo key (the order above)."""
    _, tenant, risk, acr, age, subject, stepup, posture, country, anomaly, method, path, op, purpose = key
    return {
        "tenant": tenant,
        "session": {"risk": risk, "acr": acr, "auth_age_s": age, "subject": subject},
        "stepup": stepup,
        "device": {"posture": posture},
        "geo": {"country": country, "anomaly": anomaly},
        "request": {"method": method, "path": path, "operation_type": op, "purpose": purpose},
    }


def verdict_from_result(result: Any) -> Verdict:
    """Read `{allow, stepup, deny, reasons}`; deny wins over stepup over allow; nothing set means deny."""
    if not isinstance(result, Mapping):
        raise PolicyResultError(f"policy decision must be an object, got {type(result).__name__}")
    raw_reasons = result.get("reasons") or ()
    if isinstance(raw_reasons, str) or not isinstance(raw_reasons, list | tuple | set | frozenset):
        raise PolicyResultError("policy decision 'reasons' must be a list of strings")
    reasons = tuple(sorted(str(r) for r in raw_reasons))[:MAX_REASONS]
    if result.get("deny") is True:
        outcome = DENY
    elif result.get("stepup") is True:
        outcome = STEPUP
    elif result.get("allow") is True:
        outcome = ALLOW
    else:
        outcome, reasons = DENY, reasons or ("no_rule_allowed",)
    return Verdict(outcome, reasons, dict(result))


Memoized = tuple[Verdict, Mapping[str, Any]]  # the verdict and the input document it was computed for


class DecisionMemo:
    """Bounded map input key (bundle digest first) -> (Verdict, input document); entries live `ttl_s` s.

    Every entry has the same lifetime, so insertion order is expiry order: a FIFO (middleware/bounded.py),
    which evicts the oldest entry (the one that expires soonest) when full. Lookups take no lock; inserts do.
    """

    def __init__(self, size: int, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if size < 1 or ttl_s <= 0:
            raise ValueError(f"memo size must be >= 1 and ttl_s > 0 (got {size}, {ttl_s})")
        self._ttl, self._clock = ttl_s, clock
        self._entries: FIFO[InputKey, tuple[float, Memoized]] = FIFO(size)

    def get(self, key: InputKey) -> Memoized | None:
        """The live (verdict, input document) for key, or None."""
        try:
            expires, memoized = self._entries[key]
        except KeyError:
            return None
        return memoized if expires > self._clock() else None

    def put(self, key: InputKey, memoized: Memoized) -> None:
        """Remember (verdict, input document) for ttl_s; evicts the oldest entry when full."""
        self._entries[key] = (self._clock() + self._ttl, memoized)

    def __len__(self) -> int:
        return len(self._entries)


class DecisionIds:
    """Unique decision ids: a random per-process prefix and a counter (cheaper than uuid4 per request)."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(8) + "-"
        self._counter = itertools.count(1)

    def next(self) -> str:
        """A new decision id."""
        return self._prefix + str(next(self._counter))
