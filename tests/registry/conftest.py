"""A real OCI registry (Debian's `docker-registry`) on 127.0.0.1, one per test module, stopped by PID."""

from __future__ import annotations

import itertools
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ig_gate.bundles.registry import RegistryClient
from ig_gate.bundles.signing import VerificationKey
from tests.registry.kit import Clock
from tests.support.keys import KeyPair, make_keypair
from tests.support.procs import free_port, running

REGISTRY_BINARY = shutil.which("docker-registry") or "/usr/bin/docker-registry"
_repos = itertools.count()


@dataclass
class LocalRegistry:
    """A loopback registry: its address and storage; stop() and start() it again on the same port."""

    host: str
    port: int
    storage: Path
    config: Path
    log: Path
    proc: subprocess.Popen | None = None
    _stack: ExitStack = field(default_factory=ExitStack)

    def blob_path(self, digest: str) -> Path:
        """Where the filesystem driver keeps a blob's bytes."""
        algo, hexdigest = digest.split(":", 1)
        return self.storage / "docker/registry/v2/blobs" / algo / hexdigest[:2] / hexdigest / "data"

    def start(self) -> None:
        argv = [REGISTRY_BINARY, "serve", str(self.config)]
        self.proc = self._stack.enter_context(running(argv, port=self.port, log=self.log))

    def stop(self) -> None:
        """Stop the registry process by its PID (procs.stop via the running() context)."""
        self._stack.close()
        self.proc = None


def write_config(directory: Path, port: int, extra: str = "") -> Path:
    """A registry config: loopback only, filesystem storage in directory, deletes enabled."""
    storage = directory / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    config = directory / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n"
        "  maintenance:\n    uploadpurging:\n      enabled: false\n"
        f"http:\n  addr: 127.0.0.1:{port}\n{extra}"
    )
    return config


def start_registry(directory: Path, extra_config: str = "") -> LocalRegistry:
    if not Path(REGISTRY_BINARY).exists():
        pytest.fail("docker-registry is not installed (apt-get install docker-registry; `make test` does)")
    port = free_port()
    local = LocalRegistry(f"127.0.0.1:{port}", port, directory / "storage",
                          write_config(directory, port, extra_config), directory / "registry.log")
    local.start()
    return local


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    """One registry per test module (ready in well under a second)."""
    local = start_registry(tmp_path_factory.mktemp("registry"))
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="module")
def client(registry: LocalRegistry) -> RegistryClient:
    return RegistryClient(registry.host, plain_http=True, env={}, timeout_s=5.0)


@pytest.fixture(scope="module")
def signer() -> KeyPair:
    return make_keypair("ES256", kid="release-2026")


@pytest.fixture(scope="module")
def stranger() -> KeyPair:
    return make_keypair("ES256", kid="release-2026")


@pytest.fixture(scope="module")
def trusted_key(signer: KeyPair) -> VerificationKey:
    return VerificationKey(signer.public_pem, "ES256")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def repo(request: pytest.FixtureRequest) -> str:
    """A repository of its own for each test (the registry is shared by the tests of a module)."""
    module = request.module.__name__.rpartition(".")[2].removeprefix("test_").replace("_", "-")
    return f"policies/{module}-{next(_repos)}"
