"""A real OCI registry (Debian's `docker-registry`) on 127.0.0.1, one per test module, stopped by PID."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.procs import free_port, running

REGISTRY_BINARY = shutil.which("docker-registry") or "/usr/bin/docker-registry"


@dataclass
class LocalRegistry:
    """A running loopback registry: its address, storage directory and a way to restart it."""

    host: str
    port: int
    storage: Path
    config: Path
    log: Path
    proc: subprocess.Popen | None = None

    def blob_path(self, digest: str) -> Path:
        """Where the filesystem driver keeps a blob's bytes."""
        algo, hexdigest = digest.split(":", 1)
        return self.storage / "docker/registry/v2/blobs" / algo / hexdigest[:2] / hexdigest / "data"

    @contextmanager
    def serving(self) -> Iterator[LocalRegistry]:
        """Run the registry (again) on the same port and storage for the duration of the block."""
        with running([REGISTRY_BINARY, "serve", str(self.config)], port=self.port, log=self.log) as proc:
            self.proc = proc
            try:
                yield self
            finally:
                self.proc = None


def write_config(directory: Path, port: int) -> Path:
    """A registry config: loopback only, no auth, filesystem storage in directory, deletes enabled."""
    storage = directory / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    config = directory / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n"
        "  maintenance:\n    uploadpurging:\n      enabled: false\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    return config


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    """One registry per test module (fast: it is ready in well under a second)."""
    if not Path(REGISTRY_BINARY).exists():
        pytest.fail("docker-registry is not installed (apt-get install docker-registry; `make test` does)")
    directory = tmp_path_factory.mktemp("registry")
    port = free_port()
    local = LocalRegistry(f"127.0.0.1:{port}", port, directory / "storage", write_config(directory, port),
                          directory / "registry.log")
    with local.serving():
        yield local
