"""`ig-gate serve --workers 2` behaves like one process: one verifiable decision-log chain per worker, and
risk events reach every worker (through Redis; without it, SSF with several workers is refused)."""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.middleware.conftest import US_IP, World
from tests.sidecar.test_ssf import REVOKE, make_set, opaque, ssf_settings
from tests.support.keys import KeyPair, make_keypair
from tests.support.procs import free_port, wait_until
from tests.support.redis_server import redis_server
from tests.support.sidecar import IG_GATE, serve_sidecar, write_config

pytestmark = pytest.mark.integration
LOOPBACK_IS_A_PROXY = {"trusted_proxies": ["127.0.0.1/32"]}  # the test client stands in for a proxy
SECEVENT = {"content-type": "application/secevent+jwt"}


@pytest.fixture(scope="module")
def transmitter() -> KeyPair:
    return make_keypair("ES256", "ssf-workers")


def authz(url: str, token: str) -> int:
    """Forward-auth for a GraphQL read on a new connection (so the kernel may hand it to either worker)."""
    headers = {
        "authorization": f"Bearer {token}",
        "x-forwarded-for": US_IP,
        "x-original-uri": "/graphql?query=%7Bme%7Bid%7D%7D",
        "x-original-method": "GET",
    }
    return httpx.get(f"{url}/authz", headers=headers, timeout=20).status_code


def entries_per_file(logs: Path) -> dict[str, list[dict]]:
    """The decision-log records of every *.jsonl file in logs (complete lines only)."""
    found = {}
    for path in sorted(logs.glob("*.jsonl")):
        lines = path.read_bytes().split(b"\n")[:-1]
        found[path.name] = [json.loads(line) for line in lines]
    return found


def load(url: str, tokens: list[str], threads: int = 8) -> list[int]:
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda token: authz(url, token), tokens))


def until_both_workers_logged(url: str, logs: Path, token: str) -> None:
    """Send rounds of requests until two files (two workers) hold decisions; every answer must be 200."""
    def two_writers() -> bool:
        assert set(load(url, [token] * 16)) == {200}
        return sum(1 for records in entries_per_file(logs).values() if records) >= 2

    wait_until(two_writers, 30, "decisions from both workers")


def verify(*targets: Path | str) -> subprocess.CompletedProcess[str]:
    argv = [str(IG_GATE), "decisions", "verify", *map(str, targets)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def test_two_workers_write_one_verifiable_chain_each_and_a_tampered_line_is_named(
    world: World, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    settings = world.settings(decision_log={"path": str(logs / "decisions.jsonl")}, geo=LOOPBACK_IS_A_PROXY)
    token = world.token(sub="many")
    with serve_sidecar(settings, tmp_path, "--workers", "2") as served:
        until_both_workers_logged(served.url, logs, token)
        assert set(load(served.url, [token] * 200)) == {200}
        served.process.terminate()  # SIGTERM: every worker drains and closes its log
        served.process.wait(30)

    written = entries_per_file(logs)
    assert sorted(written) == ["decisions.1.jsonl", "decisions.jsonl"]
    assert all(len({r["labels"]["id"] for r in records}) == 1 for records in written.values())  # one writer
    done = verify(logs)
    assert done.returncode == 0, done.stderr
    reports = [json.loads(line) for line in done.stdout.splitlines()]
    assert [Path(r["file"]).name for r in reports] == ["decisions.1.jsonl", "decisions.jsonl"]
    assert sum(r["entries"] for r in reports) == sum(map(len, written.values())) >= 200 + 16
    assert verify(logs / "decisions*.jsonl").stdout == done.stdout  # a glob names the same chains

    tampered = logs / "decisions.1.jsonl"
    lines = tampered.read_bytes().split(b"\n")
    lines[4] = lines[4].replace(b'"outcome":"allow"', b'"outcome":"deny"')
    tampered.write_bytes(b"\n".join(lines))
    failed = verify(logs)
    assert failed.returncode == 1
    assert failed.stderr == f"{tampered}:5: edited line (entry_hash does not match its content)\n"
    assert json.loads(failed.stdout)["file"] == str(logs / "decisions.jsonl")  # the other chain still ok


def test_several_workers_with_ssf_and_no_redis_are_refused_naming_both_keys(
    world: World, transmitter: KeyPair, tmp_path: Path
) -> None:
    config = write_config(ssf_settings(world, transmitter, tmp_path), tmp_path / "ig-gate.yaml")
    argv = [str(IG_GATE), "serve", "--config", str(config), "--workers", "2", "--port", str(free_port())]

    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)

    err = done.stderr
    assert done.returncode == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "ssf.transmitter_jwks" in err and "risk_store.redis_url" in err and "server.workers" in err


def test_with_redis_a_revocation_posted_to_one_worker_refuses_all_20_next_requests_on_both(
    world: World, transmitter: KeyPair, tmp_path: Path
) -> None:
    logs = tmp_path  # ssf_settings logs decisions to tmp_path/decisions.jsonl
    with redis_server(tmp_path / "redis") as redis_url:
        settings = ssf_settings(
            world, transmitter, tmp_path, risk_store={"redis_url": redis_url}, geo=LOOPBACK_IS_A_PROXY
        )
        with serve_sidecar(settings, tmp_path, "--workers", "2") as served:
            until_both_workers_logged(served.url, logs, world.token(sub="bystander", sid="sess-other"))
            revoked = world.token(sub="carol", sid="sess-revoked")  # never asked before: nothing cached
            event = make_set(transmitter, REVOKE, sub_id=opaque("sess-revoked"))
            pushed = httpx.post(f"{served.url}/ssf/events", content=event, headers=SECEVENT, timeout=20)
            assert pushed.status_code == 202

            answers = load(served.url, [revoked] * 20, threads=4)

            assert answers == [401] * 20
            assert authz(served.url, world.token(sub="carol", sid="sess-new")) == 200  # only that session

            def refused_by_both() -> bool:
                per_file = [
                    sum(r["result"].get("reasons") == ["token_revoked"] for r in records)
                    for records in entries_per_file(logs).values()
                ]
                if sum(count > 0 for count in per_file) >= 2:
                    return True
                assert authz(served.url, revoked) == 401  # the kernel favoured one worker: ask again
                return False

            wait_until(refused_by_both, 30, "a refusal of the revoked session logged by each worker")
