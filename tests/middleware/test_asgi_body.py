"""read_body: the bounded ASGI body reader the middleware and the sidecar share."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ig_gate.middleware.asgi_body import BodyTooLarge, read_body


def receiver(*messages: dict[str, Any]) -> tuple[Any, list[dict[str, Any]]]:
    pending = list(messages)

    async def receive() -> dict[str, Any]:
        return pending.pop(0)

    return receive, pending


def chunk(body: bytes, more: bool) -> dict[str, Any]:
    return {"type": "http.request", "body": body, "more_body": more}


def test_a_single_message_body_is_returned_as_sent():
    receive, _ = receiver(chunk(b"abc", False))
    assert asyncio.run(read_body(receive, 3)) == b"abc"


def test_chunks_are_joined_in_order():
    receive, pending = receiver(chunk(b"ab", True), chunk(b"", True), chunk(b"cd", False))
    assert asyncio.run(read_body(receive, 10)) == b"abcd"
    assert pending == []


def test_a_declared_length_over_the_limit_is_refused_before_reading():
    receive, pending = receiver(chunk(b"x", False))
    with pytest.raises(BodyTooLarge, match="exceeds 10 bytes"):
        asyncio.run(read_body(receive, 10, b"11"))
    assert len(pending) == 1  # nothing was read


def test_received_bytes_count_whatever_the_declared_length_says():
    receive, _ = receiver(chunk(b"12345", True), chunk(b"678", False))
    with pytest.raises(BodyTooLarge):
        asyncio.run(read_body(receive, 7, b"2"))


def test_a_malformed_declared_length_is_ignored():
    receive, _ = receiver(chunk(b"ok", False))
    assert asyncio.run(read_body(receive, 5, b"-1")) == b"ok"


@pytest.mark.parametrize("first", [True, False])
def test_a_disconnect_while_sending_gives_none(first: bool):
    disconnect = {"type": "http.disconnect"}
    receive, _ = receiver(disconnect) if first else receiver(chunk(b"ab", True), disconnect)
    assert asyncio.run(read_body(receive, 10)) is None
