"""deploy/ and the two listeners agree: each ig-gate container exposes the admin port, Prometheus scrapes
that port with a bearer token, an admin listener off loopback has auth, only the client port is in a
Service, and the Router's coprocessor trusts exactly the one hop (the Ingress) in front of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ig_gate.middleware.settings import ConfigError, Settings, load_settings
from ig_gate.sidecar.admin import is_loopback, load_token_file
from tests.sidecar.test_deploy import documents


def workloads() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(manifest, pod template, ig-gate container) of every workload running ig-gate."""
    found = []
    for name, doc in documents():
        template = doc.get("spec", {}).get("template", {})
        for container in template.get("spec", {}).get("containers", []):
            if container["name"] == "ig-gate":
                found.append((name, template, container))
    return found


def settings_of(container: dict[str, Any], tmp_path: Path) -> Settings:
    config = tmp_path / "ig-gate.yaml"
    config.write_text(config_map("ig-gate-config")["ig-gate.yaml"])
    return load_settings(config, env={e["name"]: e["value"] for e in container.get("env", [])})


def manifest_object(kind: str, name: str) -> dict[str, Any]:
    """A Kubernetes object of deploy/ (the folder also holds Prometheus rule files, which have no kind)."""
    return next(doc for _, doc in documents() if doc.get("kind") == kind and doc["metadata"]["name"] == name)


def config_map(name: str) -> dict[str, str]:
    return manifest_object("ConfigMap", name)["data"]


def secret(name: str) -> dict[str, Any]:
    return manifest_object("Secret", name)


def test_each_ig_gate_container_exposes_the_admin_port_that_prometheus_is_told_to_scrape(
    tmp_path: Path,
) -> None:
    assert len(workloads()) >= 2
    for manifest, template, container in workloads():
        server = settings_of(container, tmp_path).server
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        assert ports == {"ig-gate": server.port, "ig-gate-admin": server.admin_port}, manifest
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(server.admin_port), manifest
        assert annotations["prometheus.io/path"] == "/metrics"
        assert container["readinessProbe"]["httpGet"]["port"] == server.port  # probes: the client port


def test_an_admin_listener_off_loopback_has_a_token_file_mounted_from_the_secret(tmp_path: Path) -> None:
    for manifest, template, container in workloads():
        server = settings_of(container, tmp_path).server
        assert server.admin_auth != "none" or is_loopback(server.admin_host), manifest
        assert server.admin_auth == "token" and server.admin_token_file
        token_file = server.admin_token_file
        mount = next(m for m in container["volumeMounts"] if token_file.startswith(m["mountPath"]))
        volume = next(v for v in template["spec"]["volumes"] if v["name"] == mount["name"])
        tokens = secret(volume["secret"]["secretName"])["stringData"]
        assert Path(server.admin_token_file).name in tokens


def test_the_secrets_placeholder_token_keeps_ig_gate_from_starting_until_replaced(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(secret("ig-gate-admin-tokens")["stringData"]["tokens"])
    with pytest.raises(ConfigError, match="at least 16 characters"):
        load_token_file(str(tokens), ("ig-gate:read", "ig-gate:admin"))


def test_prometheus_scrapes_the_admin_port_with_a_bearer_token() -> None:
    scrape = yaml.safe_load(config_map("prometheus-ig-gate-scrape")["ig-gate-scrape.yaml"])
    (job,) = scrape["scrape_configs"]
    assert job["authorization"]["type"] == "Bearer" and job["authorization"]["credentials_file"]
    keep_port = [r for r in job["relabel_configs"]
                 if r.get("source_labels") == ["__meta_kubernetes_pod_container_port_name"]]
    assert keep_port == [{"source_labels": ["__meta_kubernetes_pod_container_port_name"],
                          "regex": "ig-gate-admin", "action": "keep"}]


def test_services_reach_only_the_client_port() -> None:
    for _, doc in documents():
        if doc.get("kind") == "Service":
            assert all(port["targetPort"] != "ig-gate-admin" for port in doc["spec"]["ports"])


def test_the_coprocessor_trusts_one_hop_and_the_router_is_reached_only_through_that_ingress(
    tmp_path: Path,
) -> None:
    router = [c for manifest, _, c in workloads() if manifest == "apollo-router.yaml"]
    assert [settings_of(c, tmp_path).server.coprocessor_trusted_hops for c in router] == [1]
    ingresses = [doc for _, doc in documents() if doc.get("kind") == "Ingress"]
    backends = [path["backend"]["service"]["name"] for ingress in ingresses
                for rule in ingress["spec"]["rules"] for path in rule["http"]["paths"]]
    assert backends == ["apollo-router"]
    service = manifest_object("Service", "apollo-router")
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"  # no other way in from outside
