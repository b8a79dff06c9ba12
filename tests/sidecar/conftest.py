"""Sidecar fixtures on top of the gate's fixture world (tests/middleware/conftest.py: keys, signed example
bundle, test .mmdb, Settings): the sidecar app in-process, and `ig-gate serve` as a real process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from ig_gate.middleware.settings import ServerSettings, Settings
from ig_gate.sidecar.app import create_app
from tests.middleware.conftest import PROXY, World, build_world
from tests.support.sidecar import Served, serve_sidecar

PROXY_PEER = (PROXY, 40000)  # 10.0.0.2: inside the world's trusted proxies (10.0.0.0/8)
# a TestClient request to this base reaches the admin listener's app (scope["server"] carries its port)
ADMIN = f"http://testserver:{ServerSettings().admin_port}"


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("sidecar-world"))


@pytest.fixture
def make_sidecar(world: World, tmp_path: Path) -> Iterator[Callable[..., TestClient]]:
    """make_sidecar(settings=None, peer=PROXY_PEER, **overrides) -> a started TestClient over the app."""
    clients: list[TestClient] = []

    def make(
        settings: Settings | None = None, peer: tuple[str, int] = PROXY_PEER, **overrides: Any
    ) -> TestClient:
        if settings is None:
            overrides.setdefault("decision_log", {"path": str(tmp_path / "decisions.jsonl")})
            settings = world.settings(**overrides)
        client = TestClient(create_app(settings), client=peer)
        client.__enter__()  # runs the lifespan
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def sidecar_app(world: World, tmp_path: Path) -> Starlette:
    """The sidecar app for the world's settings (lifespan not run: for direct ASGI calls)."""
    app = create_app(world.settings())
    yield app
    app.state.sidecar.gate.close()


@pytest.fixture(scope="module")
def served(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A real `ig-gate serve` process with the world's settings."""
    with serve_sidecar(world.settings(), tmp_path_factory.mktemp("served")) as running:
        yield running
