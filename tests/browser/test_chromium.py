"""A real browser (Debian's Chromium, driven by Playwright) against the protected demo app.

Browsers cannot set headers on a WebSocket, so GraphQL subscriptions carry the session in a cookie:
these tests prove the gate decides those connects (close codes 4401/4403 reach the page) and that a
page's fetch sees the RFC 9470 step-up challenge.
"""

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, sync_playwright

from ig_gate.sidecar.demo import prepare
from ig_gate.sidecar.devidp import DevIdP
from tests.geo.mmdb import write_country_mmdb
from tests.support.procs import free_port, running

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SERVER = """
import sys, uvicorn
from ig_gate.middleware import ZeroTrustMiddleware
from ig_gate.sidecar.demo_app import create_app
uvicorn.run(ZeroTrustMiddleware(create_app(), config=sys.argv[1]), host="127.0.0.1", port=int(sys.argv[2]),
            log_level="warning", proxy_headers=False)
"""

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="make test installs Debian's chromium"),
]


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[str, DevIdP]]:
    workdir = tmp_path_factory.mktemp("browser")
    idp = prepare(workdir / "demo", Path(__file__).parents[2] / "policies")
    config = workdir / "demo" / "ig-gate.yaml"
    # loopback is where the browser is: place it in the US for the geo-fence
    mmdb = write_country_mmdb(workdir / "loopback.mmdb", {"127.0.0.0/8": "US"})
    config.write_text(config.read_text().replace("database: null", f"database: {mmdb}"))
    script = workdir / "serve.py"
    script.write_text(SERVER)
    port = free_port()
    argv = [sys.executable, str(script), str(config), str(port)]
    with running(argv, port=port, log=workdir / "server.log"):
        yield f"http://127.0.0.1:{port}", idp


@pytest.fixture(scope="module")
def page() -> Iterator[Page]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser.new_page()
        browser.close()


def run_ui(page: Page, base: str, token: str, button: str) -> str:
    page.context.clear_cookies()
    page.goto(f"{base}/ui")
    page.fill("#token", token)
    page.click(f"#{button}")
    page.wait_for_function("document.getElementById('out').textContent.length > 0", timeout=10_000)
    return page.inner_text("#out")


def test_browser_subscription_with_a_low_risk_session_cookie_receives_its_identity(page, served):
    base, idp = served
    out = run_ui(page, base, idp.session_token("alice", risk="low"), "subscribe")
    assert out.startswith("closed 1000"), out
    assert '"subject":"alice"' in out and '"country":"US"' in out


def test_browser_subscription_of_a_high_risk_session_is_refused_with_4403(page, served):
    base, idp = served
    out = run_ui(page, base, idp.session_token("mallory", risk="high"), "subscribe")
    assert out.startswith("closed 4403"), out
    assert "next" not in out


def test_browser_subscription_without_a_session_is_refused_with_4401(page, served):
    base, _ = served
    out = run_ui(page, base, "", "subscribe")
    assert out.startswith("closed 4401"), out


def test_browser_fetch_sees_the_rfc9470_step_up_challenge(page, served):
    base, idp = served
    # a medium-risk session from an unmanaged browser: reads are fine...
    assert run_ui(page, base, idp.session_token("bob", risk="medium", acr="mfa", amr=["mfa"]), "query") \
        .startswith("200")
    # ...but without recent MFA the policy asks for step-up, and the page can read why
    out = run_ui(page, base, idp.session_token("bob", risk="medium"), "query")
    assert out.startswith('401 Bearer realm="ig-gate", error="insufficient_user_authentication"'), out
    assert "STEP_UP_REQUIRED" in out


def test_chromium_binary_is_the_debian_one():
    assert shutil.which("chromium") == CHROMIUM
