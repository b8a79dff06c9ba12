"""Small signed test bundles and a controllable clock for the registry and bundle-manager tests."""

from __future__ import annotations

import datetime as dt
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

from ig_gate.bundles.archive import build_bundle
from ig_gate.bundles.detached import sign_blob
from ig_gate.bundles.registry import RegistryClient
from ig_gate.bundles.signing import sign_bundle
from tests.support.keys import KeyPair

QUERY = "data.test.swap.decision"
START = dt.datetime(2026, 11, 5, 12, 0, tzinfo=dt.UTC)
_sources = itertools.count()


def policy_source(root: Path, label: str, *, broken: bool = False, allow: bool | None = None) -> Path:
    """A bundle source whose decision names its label twice: once in Rego, once from data.json.

    A reader that ever saw Rego from one bundle and data from another would get two different labels.
    With allow set, the decision is the gate's `{allow, reasons}` instead of echoing `input.user`
    (for tests through a Gate, whose input has no user).
    """
    src = root / f"src-{next(_sources)}-{label}"
    src.mkdir(parents=True)
    echo = '"user": input.user' if allow is None else f'"allow": {str(allow).lower()}, "reasons": ["{label}"]'
    rule = f'decision := {{"rego": "{label}", "data": data.labels.current, {echo}}}'
    (src / "swap.rego").write_text(f"package test.swap\n\n{'decision := {' if broken else rule}\n")
    (src / "data.json").write_text(json.dumps({"labels": {"current": label}}))
    return src


@dataclass(frozen=True, slots=True)
class Built:
    """A built (and maybe signed) bundle: archive bytes and its detached signature."""

    archive: bytes
    signature: bytes | None
    label: str
    version: str | None


def build(root: Path, label: str, version: str | None, signer: KeyPair | None, *,
          expires: str | None = None, detached: KeyPair | bool | None = True, broken: bool = False,
          allow: bool | None = None) -> Built:
    """Build a bundle for label; sign it with signer (OPA signature) unless None.

    detached: True signs the archive detached with signer too, a KeyPair with that key, False not at all.
    """
    source = policy_source(root, label, broken=broken, allow=allow)
    bundle = build_bundle(source, version=version, expires=expires)
    signature = None
    if signer is not None:
        bundle = sign_bundle(bundle, signer.private_pem, alg=signer.alg, key_id=signer.kid)
    detached_key = signer if detached is True else detached or None
    if detached_key is not None:
        signature = sign_blob(bundle.archive, detached_key.private_pem)
    return Built(bundle.archive, signature, label, version)


class CountingClient(RegistryClient):
    """The real client, counting downloads (to prove that an unchanged or refused digest is not fetched)."""

    fetches = 0

    def fetch(self, repository, digest):
        self.fetches += 1
        return super().fetch(repository, digest)


def publish(client: RegistryClient, repository: str, channel: str, built: Built) -> str:
    """Push a built bundle under channel; return the OCI digest."""
    return client.push(repository, channel, built.archive, built.signature)


class Clock:
    """A settable UTC clock for the manager (expiry, status timestamps)."""

    def __init__(self, now: dt.datetime = START) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)
