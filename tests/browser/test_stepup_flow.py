"""A person in Debian's Chromium signs in at the demo's real OpenID provider (Authlib: code flow + PKCE,
login page, TOTP second factor) and uses the demo page behind ZeroTrustMiddleware: allowed, stepped up
(RFC 9470 challenge -> provider with acr_values/max_age -> TOTP -> back -> retried), refused (403 page with
reason codes and the decision id), and cut off by a CAEP session-revoked event while the page is open.

Geo: the app trusts 127.0.0.1 as a proxy (`geo.trusted_proxies`); the out-of-fence test adds the proxy's
`X-Forwarded-For` to the page's API requests with Playwright route interception (no separate proxy
process). Screenshots of every step go to the test's tmp dir (and to $IG_GATE_SCREENSHOTS when set).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from ig_gate.middleware.ssf import CAEP
from ig_gate.sidecar.demo import prepare
from ig_gate.sidecar.oidc_provider import DEMO_USERS
from tests.browser.test_chromium import CHROMIUM, CHROMIUM_ARGS
from tests.geo.mmdb import write_country_mmdb
from tests.support.keys import KeyPair, make_keypair, write_jwks
from tests.support.procs import free_port, running, wait_until

SERVER = """
import sys, uvicorn
from ig_gate.middleware import ZeroTrustMiddleware
from ig_gate.sidecar.demo_app import create_app
uvicorn.run(ZeroTrustMiddleware(create_app(oidc_issuer=sys.argv[3]), config=sys.argv[1]), host="127.0.0.1",
            port=int(sys.argv[2]), log_level="warning", proxy_headers=False)
"""
SSF_ISSUER, SSF_AUDIENCE = "https://idp.example.test/ssf", "https://gate.example.test/ssf"
FENCED_IP = "1.1.1.1"  # AU in this test's database: outside tenant acme's fence (US, DE)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="make test installs Debian's chromium"),
]


@dataclass(frozen=True)
class Stack:
    app: str
    idp: str
    transmitter: KeyPair
    decisions: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("stepup")
    demo = work / "demo"
    devidp = prepare(demo, Path(__file__).parents[2] / "policies")
    (demo / "keys" / "mdm.key").write_bytes(devidp.device_key.private_pem)
    app_port, idp_port = free_port(), free_port()
    app, idp = f"http://127.0.0.1:{app_port}", f"http://127.0.0.1:{idp_port}"
    transmitter = make_keypair("ES256", "ssf-1")
    ssf_jwks = write_jwks(work / "ssf-jwks.json", transmitter)
    mmdb = write_country_mmdb(work / "geo.mmdb", {"127.0.0.0/8": "US", f"{FENCED_IP}/32": "AU"})
    config = demo / "ig-gate.yaml"
    text = config.read_text().replace("database: null", f"database: {mmdb}")
    text = text.replace(f"issuer: {devidp.issuer}", f"issuer: {idp}")  # trust the provider: its key, its iss
    text += f"ssf:\n  transmitter_jwks: {ssf_jwks}\n  issuer: {SSF_ISSUER}\n  audience: {SSF_AUDIENCE}\n"
    config.write_text(text)
    script = work / "serve.py"
    script.write_text(SERVER)
    provider_argv = [
        sys.executable, "-m", "ig_gate.sidecar.oidc_provider", "--port", str(idp_port),
        "--key", str(demo / "keys" / "idp.key"), "--kid", devidp.session_key.kid,
        "--mdm-key", str(demo / "keys" / "mdm.key"), "--mdm-kid", devidp.device_key.kid,
        "--redirect-uri", f"{app}/ui",
    ]
    with (
        running(provider_argv, port=idp_port, log=work / "idp.log"),
        running([sys.executable, str(script), str(config), str(app_port), idp], port=app_port,
                log=work / "app.log"),
    ):
        yield Stack(app, idp, transmitter, demo / "decisions.jsonl")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1000, "height": 720})
    context.set_default_timeout(15_000)
    yield context.new_page()
    context.close()


@pytest.fixture
def shot(page: Page, tmp_path: Path, request):
    """shot(name): save a screenshot of this step (tmp dir; also $IG_GATE_SCREENSHOTS when set)."""
    extra = os.environ.get("IG_GATE_SCREENSHOTS")
    test = request.node.name.removeprefix("test_")[:40]

    def save(name: str) -> Path:
        path = tmp_path / f"{test}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        if extra:
            shutil.copy(path, Path(extra) / path.name)
        return path

    return save


def sign_in(page: Page, stack: Stack, user: str, shot) -> None:
    page.goto(f"{stack.app}/ui")
    page.click("#signin")
    page.wait_for_url(f"{stack.idp}/login**")
    page.fill("#username", user)
    page.fill("#password", DEMO_USERS[user].password)
    shot("1-login")
    page.click("#login")
    expect(page.locator("#who")).to_have_attribute("data-sub", user)
    expect(page.locator("#status")).to_have_text("Signed in")
    assert page.url == f"{stack.app}/ui"  # the code and state are gone from the address bar


def logged_decision(stack: Stack, decision_id: str) -> dict:
    """The decision-log record of decision_id (the log writer is asynchronous: poll)."""
    found: dict = {}

    def present() -> bool:
        for line in stack.decisions.read_text().splitlines() if stack.decisions.exists() else []:
            record = json.loads(line)
            if decision_id in (record.get("decision_id"), record.get("id")):
                found.update(record)
                return True
        return False

    wait_until(present, 10, f"decision {decision_id} in the log")
    return found


def expect_refusal(page: Page, stack: Stack, reason: str) -> None:
    expect(page.locator("#refusal")).to_be_visible()
    expect(page.locator("#refused-what")).to_contain_text("the query (query Me)")
    expect(page.locator("#refused-reasons")).to_contain_text(reason)
    decision_id = page.inner_text("#refused-decision").strip()
    assert decision_id, "the refusal page names no decision id"
    assert reason in json.dumps(logged_decision(stack, decision_id))  # support can find it in the log


def test_low_risk_user_signs_in_and_runs_a_query_and_a_mutation(page, stack, shot):
    sign_in(page, stack, "alice", shot)
    page.click("#run-query")
    expect(page.locator("#status")).to_have_text("The query succeeded")
    me = json.loads(page.inner_text("#result"))["data"]["me"]
    assert (me["subject"], me["tenant"], me["risk"], me["country"], me["posture"]) == (
        "alice", "acme", "low", "US", "managed"
    )
    page.click("#run-mutation")
    expect(page.locator("#status")).to_have_text("The mutation succeeded")
    assert json.loads(page.inner_text("#result"))["data"]["update"]["ok"] is True
    shot("2-mutation-ok")


def test_medium_risk_user_steps_up_with_totp_and_the_mutation_is_retried_with_the_new_token(
    page, stack, shot
):
    authorize_urls: list[str] = []
    page.on("request", lambda r: authorize_urls.append(r.url) if "/authorize?" in r.url else None)
    sign_in(page, stack, "bob", shot)
    expect(page.locator("#who")).to_have_attribute("data-acr", "pwd")

    page.click("#run-mutation")
    page.wait_for_url(f"{stack.idp}/mfa**")  # the provider asks for the second factor, not the password
    assert "acr_values=mfa" in authorize_urls[-1] and "max_age=300" in authorize_urls[-1]
    expect(page.locator("h1")).to_have_text("Second factor")
    shot("2-second-factor")
    page.fill("#code", DEMO_USERS["bob"].totp().now())
    page.click("#verify")

    expect(page.locator("#status")).to_have_text("The mutation succeeded")
    expect(page.locator("#who")).to_have_attribute("data-acr", "mfa")
    assert json.loads(page.inner_text("#result"))["data"]["update"]["ok"] is True
    shot("3-mutation-after-step-up")


def test_a_wrong_totp_code_is_refused_by_the_provider(page, stack, shot):
    sign_in(page, stack, "bob", shot)
    page.click("#run-mutation")
    page.wait_for_url(f"{stack.idp}/mfa**")
    page.fill("#code", "000000" if DEMO_USERS["bob"].totp().now() != "000000" else "111111")
    page.click("#verify")
    expect(page.locator("#error")).to_have_text("Wrong code")
    assert page.url.startswith(f"{stack.idp}/mfa")


def test_jailbroken_device_gets_the_refusal_page_with_reasons_and_decision_id(page, stack, shot):
    sign_in(page, stack, "alice", shot)
    page.select_option("#device", "jailbroken")  # the demo MDM attests alice's jailbroken phone
    expect(page.locator("#status")).to_have_text("Device: jailbroken")
    page.click("#run-query")
    expect_refusal(page, stack, "device_jailbroken")
    shot("2-refused-jailbroken")


def test_a_country_outside_the_tenants_fence_gets_the_refusal_page(page, stack, shot):
    # carol: a request from Australia also flags her later US requests as impossible travel
    sign_in(page, stack, "carol", shot)
    # as a trusted proxy in front of the app would: the client's address in X-Forwarded-For
    page.route(f"{stack.app}/graphql", lambda route: route.continue_(
        headers={**route.request.headers, "x-forwarded-for": FENCED_IP}
    ))
    page.click("#run-query")
    expect_refusal(page, stack, "geo_fenced")
    shot("2-refused-geo")


def test_caep_session_revoked_closes_the_open_subscription_and_refuses_the_next_action(page, stack, shot):
    sign_in(page, stack, "alice", shot)
    page.click("#watch")
    expect(page.locator("#subscription")).to_have_attribute("data-open", "1")
    expect(page.locator("#subscription")).to_contain_text('"subject":"alice"')
    page.click("#run-query")
    expect(page.locator("#status")).to_have_text("The query succeeded")

    session_id = page.get_attribute("#who", "data-sid")
    assert push_session_revoked(stack, session_id) == 202

    expect(page.locator("#subscription")).to_have_attribute("data-closed", "4401")
    page.click("#run-query")
    expect(page.locator("#status")).to_contain_text("session ended (401 invalid_token)")
    shot("2-revoked")


def push_session_revoked(stack: Stack, session_id: str | None) -> int:
    """The IdP's transmitter pushes a signed CAEP session-revoked SET (RFC 8935) to the gate."""
    assert session_id
    claims = {
        "iss": SSF_ISSUER, "aud": SSF_AUDIENCE, "iat": int(time.time()), "jti": uuid.uuid4().hex,
        "sub_id": {"format": "opaque", "id": session_id}, "events": {CAEP + "session-revoked": {}},
    }
    token = jwt.encode(claims, stack.transmitter.private_pem, algorithm="ES256",
                       headers={"kid": stack.transmitter.kid, "typ": "secevent+jwt"})
    request = urllib.request.Request(f"{stack.app}/ssf/events", data=token.encode(), method="POST",
                                     headers={"Content-Type": "application/secevent+jwt"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status
