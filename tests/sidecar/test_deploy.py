"""deploy/ and the Dockerfile agree with the code: every ig-gate config and env override loads, the
gateways call the sidecar's real paths and port, the image installs what pyproject packages, the
Prometheus rules and KEDA queries name metrics the sidecar exports (promtool checks the rules)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ig_gate.middleware.metrics import GateMetrics
from ig_gate.middleware.settings import ServerSettings, Settings, load_settings
from ig_gate.middleware.ssf import SSFMetrics
from ig_gate.middleware.workload import Workload
from ig_gate.sidecar import coprocessor, forward_auth
from ig_gate.sidecar.cli import build_parser
from tests.middleware.conftest import REPO

DEPLOY = REPO / "deploy"
MANIFESTS = sorted(p for p in DEPLOY.glob("*.yaml") if not p.name.endswith(".test.yaml"))


def documents() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path.name, doc


def ig_gate_containers() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for name, doc in documents():
        for container in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            if container["name"] == "ig-gate":
                found.append((name, container))
    return found


def config_map(name: str) -> dict[str, str]:
    return next(doc["data"] for _, doc in documents() if doc["kind"] == "ConfigMap" and
                doc["metadata"]["name"] == name)


def test_every_ig_gate_config_with_each_pods_env_overrides_loads(tmp_path: Path) -> None:
    config = tmp_path / "ig-gate.yaml"
    config.write_text(config_map("ig-gate-config")["ig-gate.yaml"])
    containers = ig_gate_containers()
    assert len(containers) >= 2  # beside the Apollo Router and beside nginx
    for manifest, container in containers:
        env = {item["name"]: item["value"] for item in container.get("env", [])}
        assert all(name.startswith("IG_GATE_") for name in env), manifest
        settings = load_settings(config, env=env)  # unknown keys or bad values raise ConfigError
        assert settings.bundle.registry and settings.ssf.transmitter_jwks
        args = build_parser().parse_args(["serve", *container["args"]])
        assert args.config == "/etc/ig-gate/ig-gate.yaml"
        mounted = {m["mountPath"] for m in container["volumeMounts"]}
        assert {args.config, settings.bundle.verification_key} <= mounted, manifest
        assert Path(settings.bundle.state_dir).is_relative_to("/var/lib/ig-gate")  # the writable volume
        port = container["ports"][0]["containerPort"]
        assert port == ServerSettings().port
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port}


def test_the_router_calls_the_coprocessor_path_at_both_stages() -> None:
    router = yaml.safe_load(config_map("apollo-router-config")["router.yaml"])["coprocessor"]
    assert router["url"] == f"http://127.0.0.1:{ServerSettings().port}{coprocessor.PATH}"
    for stage in (router["router"]["request"], router["supergraph"]["request"]):
        assert stage["headers"] and stage["body"] and stage["context"]


def test_nginx_asks_the_forward_auth_path_and_overwrites_identity_headers() -> None:
    conf = config_map("nginx-ig-gate")["default.conf"]
    assert f"proxy_pass http://127.0.0.1:{ServerSettings().port}{forward_auth.PREFIX};" in conf
    for header in ("X-Original-URI", "X-Original-Method", "X-Forwarded-For"):
        assert f"proxy_set_header {header} " in conf
    for name in forward_auth.IDENTITY_HEADER_NAMES:  # set from the auth answer, replacing the client's
        title = "-".join(part.capitalize() for part in name.decode().split("-"))
        assert f"proxy_set_header {title} $" in conf


SERIES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def exported_series() -> set[str]:
    """The series names of every metric family the sidecar registers (gate, bundles, SSF receiver)."""
    metrics = GateMetrics()
    SSFMetrics(metrics.registry)
    Workload(Settings(), metrics.registry)  # caps, demand and recommendations (every gate has them)
    return {family.name + suffix for family in metrics.registry.collect() for suffix in SERIES[family.type]}


@pytest.mark.parametrize("path", ["prometheus-rules.yaml", "keda-scaledobject.yaml"])
def test_rules_and_scalers_name_metrics_the_sidecar_exports(path: str) -> None:
    used = set(re.findall(r"\big_gate_[a-z_]+", (DEPLOY / path).read_text()))
    assert used and used <= exported_series()


def test_prometheus_rules_pass_promtool_check_and_unit_tests() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus)")
    checks = (["check", "rules", "prometheus-rules.yaml"], ["test", "rules", "prometheus-rules.test.yaml"])
    for argv in checks:
        done = subprocess.run([promtool, *argv], cwd=DEPLOY, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr


def test_the_image_installs_every_package_of_pyproject_with_its_data() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    copied = set(re.findall(r"^COPY (\S+)/ \1/$", dockerfile, re.MULTILINE))
    assert copied == set(project["package-dir"].values())  # every package folder, nothing else
    assert "COPY pyproject.toml README.md ./" in dockerfile and "RUN pip install . " in dockerfile
    ignored = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    for folder in copied:  # the embedded geo database is package data under geo/data
        assert not any(Path(folder).match(pattern) or pattern.startswith(folder) for pattern in ignored)
    assert re.search(r"^USER 10001:10001$", dockerfile, re.MULTILINE)
    assert re.search(r"^HEALTHCHECK .*/healthz", dockerfile, re.MULTILINE | re.DOTALL)
    assert 'ENTRYPOINT ["ig-gate", "serve"]' in dockerfile
    assert f"IG_GATE_SERVER__PORT={ServerSettings().port}" in dockerfile
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile, re.MULTILINE)
    assert cmd is not None
    build_parser().parse_args(["serve", *yaml.safe_load(cmd.group(1))])


STATE_MOUNT = "/var/lib/ig-gate"


def ig_gate_workloads() -> list[tuple[str, dict[str, Any]]]:
    """Every workload whose pods run an ig-gate container."""
    return [
        (name, doc) for name, doc in documents()
        if any(c["name"] == "ig-gate" for c in doc.get("spec", {}).get("template", {}).get("spec", {})
               .get("containers", []))
    ]


def test_ig_gate_state_lives_on_a_volume_claimed_per_pod_never_an_empty_dir(tmp_path: Path) -> None:
    workloads = ig_gate_workloads()
    assert len(workloads) >= 2
    for manifest, doc in workloads:
        spec, pod = doc["spec"], doc["spec"]["template"]["spec"]
        container = next(c for c in pod["containers"] if c["name"] == "ig-gate")
        (state,) = [m["name"] for m in container["volumeMounts"] if m["mountPath"] == STATE_MOUNT]
        assert doc["kind"] == "StatefulSet" and spec["serviceName"], manifest
        assert state not in {v["name"] for v in pod.get("volumes", [])}, manifest  # no emptyDir over it
        (claim,) = [t for t in spec["volumeClaimTemplates"] if t["metadata"]["name"] == state]
        assert claim["spec"]["accessModes"] == ["ReadWriteOnce"] and claim["spec"]["resources"]["requests"]
        assert pod["securityContext"]["fsGroup"] == 10001, manifest  # the image's ig-gate user can write it
    config = tmp_path / "ig-gate.yaml"
    config.write_text(config_map("ig-gate-config")["ig-gate.yaml"])
    settings = load_settings(config)
    for path in (settings.bundle.state_dir, settings.decision_log.path):
        assert Path(path).is_relative_to(STATE_MOUNT)
    assert settings.bundle.min_version  # a floor even when a volume starts empty


def test_the_scaler_targets_the_kind_of_workload_it_scales() -> None:
    kinds = {doc["metadata"]["name"]: doc["kind"] for _, doc in ig_gate_workloads()}
    scaler = next(yaml.safe_load_all((DEPLOY / "keda-scaledobject.yaml").read_text()))
    scaler = scaler["spec"]["scaleTargetRef"]
    assert scaler.get("kind", "Deployment") == kinds[scaler["name"]] == "StatefulSet"
