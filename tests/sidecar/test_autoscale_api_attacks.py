"""What an attacker can send to the KEDA endpoint (`GET /autoscale/{component}`, sidecar/autoscale_api.py):
it sits behind the admin listener's bearer check, is not on the client port, answers an unknown or injected
component 404 in JSON, and a caller-chosen component never becomes a metric label."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.sidecar.conftest import ADMIN

READ_TOKEN = "read-token-0123456789abcdef"
PROFILES = {"gateway": {"read_qps_per_pod": 2, "min_replicas": 1, "max_replicas": 4}}
INJECTED = ["nope", "gateway%2F..%2Fv1%2Fdata", "gateway%00", "..%2Fmetrics", "x" * 2000,
            "gateway'%22%3Cscript%3E", "GATEWAY"]


def guarded(make_sidecar: Any, tmp_path: Path) -> Any:
    tokens = tmp_path / "admin-tokens"
    tokens.write_text(f"{READ_TOKEN} ig-gate:read\n")
    return make_sidecar(
        server={"admin_auth": "token", "admin_token_file": str(tokens)},
        autoscale={"profiles": PROFILES},
    )


BAD_AUTHORIZATION = [None, "Bearer wrong-token-0123456789abcdef", f"Basic {READ_TOKEN}"]


@pytest.mark.parametrize("authorization", BAD_AUTHORIZATION)
def test_autoscale_refuses_401_without_a_valid_admin_token(
    make_sidecar: Any, tmp_path: Path, authorization: str | None
) -> None:
    client = guarded(make_sidecar, tmp_path)
    headers = {} if authorization is None else {"authorization": authorization}
    for path in ("/autoscale", "/autoscale/gateway", "/autoscale/nope"):
        response = client.get(f"{ADMIN}{path}", headers=headers)
        assert response.status_code == 401, path
        assert "replicas" not in response.text and "gateway" not in response.text


def test_autoscale_answers_a_read_token(make_sidecar: Any, tmp_path: Path) -> None:
    client = guarded(make_sidecar, tmp_path)
    headers = {"authorization": f"Bearer {READ_TOKEN}"}
    assert client.get(f"{ADMIN}/autoscale", headers=headers).status_code == 200
    assert client.get(f"{ADMIN}/autoscale/gateway", headers=headers).status_code in (200, 503)


def test_autoscale_is_not_served_on_the_client_port(make_sidecar: Any) -> None:
    client = make_sidecar(autoscale={"profiles": PROFILES})
    for path in ("/autoscale", "/autoscale/gateway"):
        assert client.get(path).status_code != 200, path


def test_unknown_or_injected_components_are_json_404s_and_never_metric_labels(make_sidecar: Any) -> None:
    client = make_sidecar(autoscale={"profiles": PROFILES})
    before = client.get(f"{ADMIN}/metrics").text.count("\n")
    for component in INJECTED:
        response = client.get(f"{ADMIN}/autoscale/{component}")
        assert response.status_code == 404, component
        assert response.headers["content-type"].startswith("application/json"), component
        assert "Traceback" not in response.text
    metrics = client.get(f"{ADMIN}/metrics").text
    assert "nope" not in metrics and "xxxxxxxx" not in metrics and "GATEWAY" not in metrics
    assert metrics.count("\n") - before < 40  # request counters may move; no series per component
