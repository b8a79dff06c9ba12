"""The request mix the load benchmarks send, built in Python and handed to wrk as a Lua data file.

A pool is a short, deterministic cycle of requests: GraphQL queries and mutations by a small set of
low-risk users on managed devices from a US address (the allow path), plus optional step-up requests
(a medium-risk session mutating: 401) and deny requests (a high-risk session: 403). Every config gets
the same client requests; only the envelope differs:

- `direct`: `POST /graphql` (the bare app and the middleware);
- `forward-auth`: Envoy ext_authz style `POST /authz/graphql` with the body (the sidecar's /authz);
- `coprocessor`: an Apollo Router `RouterRequest` payload describing the request.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ig_gate.sidecar.devidp import DevIdP

US_IP = "8.8.8.8"  # inside tenant acme's geo-fence in the embedded database
SHAPES = ("direct", "forward-auth", "coprocessor")
QUERY = {"query": "query Me { me { subject tenant risk } }"}
MUTATION = {"query": 'mutation Update { update(name: "x") { ok } }', "variables": {"name": "x"}}
POOL_SIZE = 40
USERS = 4


@dataclass(frozen=True, slots=True)
class Mix:
    """Shares of step-up and deny requests in the pool; the rest is allowed; `mutations` of the allowed
    requests are GraphQL mutations, the others queries."""

    stepup: float = 0.0
    deny: float = 0.0
    mutations: float = 0.25

    def __post_init__(self) -> None:
        for name in ("stepup", "deny", "mutations"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"Mix.{name}: a fraction in [0, 1], got {getattr(self, name)}")
        if self.stepup + self.deny > 1.0:
            raise ValueError("Mix: stepup + deny must not exceed 1")


@dataclass(frozen=True, slots=True)
class ClientRequest:
    """One GraphQL request as a client sends it, with the status the gate should answer."""

    headers: tuple[tuple[str, str], ...]
    body: str
    expected_status: int


@dataclass(frozen=True, slots=True)
class WireRequest:
    """One HTTP request as wrk sends it to a config."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: str
    expected_status: int


def _spread(count: int, total: int) -> set[int]:
    """`count` pool positions spread evenly over `total` (so that short runs see the same mix)."""
    return {int((i + 0.5) * total / count) for i in range(count)} if count else set()


def client_pool(idp: DevIdP, mix: Mix, size: int = POOL_SIZE) -> list[ClientRequest]:
    """The deterministic request cycle for `mix`."""
    stepups = _spread(round(mix.stepup * size), size)
    rest = [i for i in range(size) if i not in stepups]
    denies = {rest[j] for j in _spread(round(mix.deny * size), len(rest))}
    managed = [  # user i's own device: an attestation counts only for its user
        idp.attestation("managed", device_id=f"bench-device-{i}", subject=f"bench-user-{i}")
        for i in range(USERS)
    ]
    low = [idp.session_token(f"bench-user-{i}", risk="low") for i in range(USERS)]
    medium = idp.session_token("bench-medium", risk="medium")
    high = idp.session_token("bench-high", risk="high")
    pool: list[ClientRequest] = []
    allowed = 0
    for i in range(size):
        if i in stepups:
            token, body, status = medium, MUTATION, 401
        elif i in denies:
            token, body, status = high, QUERY, 403
        else:
            is_mutation = int((allowed + 1) * mix.mutations) > int(allowed * mix.mutations)
            token, body, status = low[i % USERS], MUTATION if is_mutation else QUERY, 200
            allowed += 1
        headers = (
            ("Content-Type", "application/json"),
            ("Authorization", f"Bearer {token}"),
            ("X-Device-Attestation", managed[i % USERS]),
            ("X-Forwarded-For", US_IP),
        )
        pool.append(ClientRequest(headers, json.dumps(body, separators=(",", ":")), status))
    return pool


def wire_pool(pool: list[ClientRequest], shape: str) -> list[WireRequest]:
    """`pool` in the envelope of `shape` (see the module docstring)."""
    if shape == "direct":
        return [WireRequest("POST", "/graphql", r.headers, r.body, r.expected_status) for r in pool]
    if shape == "forward-auth":
        return [WireRequest("POST", "/authz/graphql", r.headers, r.body, r.expected_status) for r in pool]
    if shape == "coprocessor":
        return [_coprocessor(r, i) for i, r in enumerate(pool)]
    raise ValueError(f"unknown traffic shape {shape!r} (one of {', '.join(SHAPES)})")


def _coprocessor(request: ClientRequest, index: int) -> WireRequest:
    headers: dict[str, list[str]] = {}
    for name, value in request.headers:
        headers.setdefault(name.lower(), []).append(value)
    payload = {
        "version": 1,
        "stage": "RouterRequest",
        "control": "continue",
        "id": f"bench-{index}",
        "headers": headers,
        "body": request.body,
        "context": {"entries": {}},
        "method": "POST",
        "path": "/graphql",
    }
    body = json.dumps(payload, separators=(",", ":"))
    # the Router gets HTTP 200 with `control: {"break": ...}` for refusals
    return WireRequest("POST", "/apollo/coprocessor", (("Content-Type", "application/json"),), body, 200)


def expected_statuses(requests: list[WireRequest]) -> Counter[int]:
    """How many requests of the cycle expect each status."""
    return Counter(r.expected_status for r in requests)


def _lua_string(text: str) -> str:
    """A Lua string literal: JSON's escapes for quotes and backslashes are Lua's too (not its \\uXXXX)."""
    literal = json.dumps(text)
    if "\\u" in literal:
        raise ValueError(f"traffic: cannot write {text[:40]!r} for Lua (control or non-ASCII characters)")
    return literal


def write_lua_pool(requests: list[WireRequest], path: Path) -> Path:
    """Write `requests` as a Lua chunk returning a list of {method, path, headers, body} tables."""
    lines = ["return {"]
    for r in requests:
        headers = ", ".join(f"[{_lua_string(k)}] = {_lua_string(v)}" for k, v in r.headers)
        lines.append(
            f"  {{method = {_lua_string(r.method)}, path = {_lua_string(r.path)}, "
            f"headers = {{{headers}}}, body = {_lua_string(r.body)}}},"
        )
    lines.append("}")
    path.write_text("\n".join(lines) + "\n", encoding="ascii")
    return path
