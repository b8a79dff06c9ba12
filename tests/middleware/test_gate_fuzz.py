"""Arbitrary header and body bytes never make the gate answer 500 (or fail closed as if it had crashed)."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.middleware.conftest import PROXY, call_asgi

VALID = b"<a valid bearer token>"  # replaced by a real one in the test
NAMES = [b"cookie", b"x-forwarded-for", b"forwarded", b"content-type", b"content-length",
         b"x-device-attestation", b"x-purpose", b"x-tenant-id"]  # fmt: skip
VALUES = st.one_of(
    st.binary(max_size=300),
    st.sampled_from(
        [b"Bearer ", b"bearer x.y.z", b"application/json", b"application/graphql", b"-1", b"1e9"]
    ),
    st.builds(
        lambda a, b: a + b, st.sampled_from([b"Bearer ", b"for=", b"ig_session="]), st.binary(max_size=80)
    ),
)


@pytest.fixture(scope="module")
def middleware(world, tmp_path_factory):
    from ig_gate.middleware.asgi import ZeroTrustMiddleware
    from tests.middleware.conftest import demo_app

    settings = world.settings(identity={"cookie": "ig_session", "tenant_header": "X-Tenant-ID"})
    protected = ZeroTrustMiddleware(demo_app(), config=settings)
    yield protected
    protected.gate.close()


@pytest.fixture(scope="module")
def token(world) -> bytes:
    return b"Bearer " + world.token().encode()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    authorization=st.sampled_from([VALID, VALID, None, b"Bearer ", b"Basic x"]),
    headers=st.lists(st.tuples(st.sampled_from(NAMES), VALUES), max_size=4),
    body=st.one_of(
        st.binary(max_size=200), st.sampled_from([b'{"query": "{ a }"}', b"[]", b"null", b'{"query": 1}'])
    ),
    method=st.sampled_from(["GET", "POST", "PUT", "HEAD"]),
    peer=st.sampled_from([("203.0.113.5", 1), (PROXY, 1)]),
)
def test_arbitrary_headers_and_bodies_get_a_clear_answer(
    middleware, token, authorization, headers, body, method, peer
):
    if authorization is not None:
        headers = [(b"authorization", authorization), *headers]
    headers = [(name, token if value == VALID else value) for name, value in headers]
    status, _, _ = asyncio.run(call_asgi(middleware, method=method, headers=headers, body=body, peer=peer))

    assert status in (200, 400, 401, 403, 405, 413)  # 405: the app's own answer to PUT
