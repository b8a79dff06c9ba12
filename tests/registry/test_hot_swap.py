"""Hot swap under load: readers evaluate continuously while the manager swaps bundles several times."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import pytest

from ig_gate.bundles.manager import BundleManager
from ig_gate.bundles.verify import VerifyOptions
from tests.registry.kit import QUERY, build, publish
from tests.support.procs import wait_until

pytestmark = pytest.mark.integration

READERS = 4
VERSIONS = [f"1.{minor}.0" for minor in range(6)]


def test_swaps_under_concurrent_readers_never_fail_or_mix_bundles(
    client, trusted_key, signer, tmp_path, clock
):
    manager = BundleManager(
        client,
        "policies/hot-swap",
        "prod",
        VerifyOptions(key=trusted_key),
        tmp_path / "state",
        clock=clock,
        rng=random.Random(5),
    )
    built = [build(tmp_path, f"b{i}", version, signer) for i, version in enumerate(VERSIONS)]
    labels = {b.label for b in built}
    publish(client, "policies/hot-swap", "prod", built[0])
    assert manager.poll_once() == "activated"

    stop = threading.Event()
    errors: list[str] = []
    seen = [Counter() for _ in range(READERS)]

    def reader(index: int) -> None:
        user = f"user-{index}"
        while not stop.is_set():
            try:
                result = manager.current().evaluate(QUERY, {"user": user})
            except Exception as exc:  # any failure at all is what this test looks for
                errors.append(f"reader {index}: {type(exc).__name__}: {exc}")
                return
            if result["rego"] != result["data"] or result["rego"] not in labels or result["user"] != user:
                errors.append(f"reader {index}: mixed or foreign result {result}")
                return
            seen[index][result["rego"]] += 1
            time.sleep(0)  # yield the GIL, as a server thread does between requests

    threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(READERS)]
    for thread in threads:
        thread.start()
    try:
        for bundle in built[1:]:
            publish(client, "policies/hot-swap", "prod", bundle)
            assert manager.poll_once() == "activated"
            wait_until(
                lambda label=bundle.label: errors or all(s[label] for s in seen),
                10,
                f"every reader to see {bundle.label}",
            )
    finally:
        stop.set()
        for thread in threads:
            thread.join(5)

    assert errors == []
    assert manager.status().activations == len(VERSIONS)
    assert all(set(s) == labels for s in seen)  # every reader evaluated under every bundle
