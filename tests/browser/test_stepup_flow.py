"""A person in Debian's Chromium signs in at the demo's real OpenID provider (Authlib: code flow + PKCE,
login page, TOTP second factor) and uses the demo page: allowed, stepped up (RFC 9470 challenge -> provider
with acr_values/max_age -> TOTP -> back -> retried), refused (403 page with reason codes and the decision
id), cut off by a CAEP session-revoked event while the page is open, and sent back to the login page when
the provider session is older than the challenge's max_age.

Two deployments (`stack`), every flow in each: the demo app in ZeroTrustMiddleware, and `ig-gate serve
--upstream` in front of the Node Apollo Gateway (tests/apollo/gateway_ui.js, which also serves the page at
/ui and the page's subscription over WebSocket at /graphql/ws; both GraphQL paths are decided, frames too).
The provider runs in the test process so its login-session clock can age a session without waiting.

Geo: the gate trusts 127.0.0.1 as a proxy (`geo.trusted_proxies`); the out-of-fence test puts a real nginx
in front of the deployment that reports the client at an Australian address in `X-Forwarded-For` (the
browser itself is on loopback, which the test's database places in the US). Screenshots of every step go
to the test's tmp dir (and to $IG_GATE_SCREENSHOTS when set).
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
from dataclasses import dataclass, replace
from pathlib import Path

import jwt
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from ig_gate.middleware.settings import StepUpSettings
from ig_gate.middleware.ssf import CAEP
from ig_gate.sidecar.demo import prepare
from ig_gate.sidecar.demo_page import render
from ig_gate.sidecar.oidc_provider import DEMO_USERS, Provider, serving
from tests.browser.test_chromium import CHROMIUM, CHROMIUM_ARGS
from tests.geo.mmdb import write_country_mmdb
from tests.support.keys import KeyPair, make_keypair, write_jwks
from tests.support.nginx import nginx_binary, nginx_config
from tests.support.procs import free_port, running, wait_until
from tests.support.sidecar import IG_GATE

SERVER = """
import sys, uvicorn
from ig_gate.middleware import ZeroTrustMiddleware
from ig_gate.sidecar.demo_app import create_app
uvicorn.run(ZeroTrustMiddleware(create_app(oidc_issuer=sys.argv[3]), config=sys.argv[1]), host="127.0.0.1",
            port=int(sys.argv[2]), log_level="warning", proxy_headers=False)
"""
SSF_ISSUER, SSF_AUDIENCE = "https://idp.example.test/ssf", "https://gate.example.test/ssf"
MAX_AGE = StepUpSettings().max_age  # the demo config's step-up max_age (the challenge's max_age)
FENCED_IP = "1.1.1.1"  # AU in this test's database: outside tenant acme's fence (US, DE)
APOLLO = Path(__file__).resolve().parents[1] / "apollo"
APOLLO_OPERATIONS = {
    "query": {"query": "query Me { me { id name } headers }"},
    "mutation": {"query": "mutation Rename($name: String!) { rename(name: $name) { id name } }",
                 "variables": {"name": "from the page"}},
}

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="make test installs Debian's chromium"),
]


@dataclass(frozen=True)
class Stack:
    """One deployment of the page and the API behind ig-gate, with the provider it trusts."""

    name: str  # "middleware" (the demo app in ZeroTrustMiddleware) | "proxy" (ig-gate serve -> Apollo)
    app: str  # the origin of the page and of its API calls
    endpoint: str  # the GraphQL path the page calls
    idp: str
    transmitter: KeyPair
    decisions: Path


@dataclass
class ProviderClock:
    """The provider's login-session clock: real time plus an offset a test sets (0 otherwise)."""

    offset: float = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@dataclass(frozen=True)
class Demo:
    """`make demo`'s files with the test's geo database and SET transmitter, and the provider serving."""

    dir: Path
    config: str  # ig-gate.yaml's text for the middleware deployment
    idp: str
    app_port: int
    proxy_port: int
    transmitter: KeyPair
    fence_ports: dict[str, int]  # per deployment: an nginx in front that places the client in Australia
    clock: ProviderClock


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Iterator[Demo]:
    work = tmp_path_factory.mktemp("stepup")
    directory = work / "demo"
    devidp = prepare(directory, Path(__file__).parents[2] / "policies")
    app_port, proxy_port, idp_port = free_port(), free_port(), free_port()
    fence_ports = {"middleware": free_port(), "proxy": free_port()}
    idp = f"http://127.0.0.1:{idp_port}"
    transmitter = make_keypair("ES256", "ssf-1")
    ssf_jwks = write_jwks(work / "ssf-jwks.json", transmitter)
    mmdb = write_country_mmdb(work / "geo.mmdb", {"127.0.0.0/8": "US", f"{FENCED_IP}/32": "AU"})
    text = (directory / "ig-gate.yaml").read_text().replace("database: null", f"database: {mmdb}")
    text = text.replace(f"issuer: {devidp.issuer}", f"issuer: {idp}")  # trust the provider: its key, its iss
    text += f"ssf:\n  transmitter_jwks: {ssf_jwks}\n  issuer: {SSF_ISSUER}\n  audience: {SSF_AUDIENCE}\n"
    ports = (app_port, proxy_port, *fence_ports.values())
    redirect_uris = tuple(f"http://127.0.0.1:{port}/ui" for port in ports)
    clock = ProviderClock()
    provider = Provider(idp, devidp.session_key, devidp.device_key, redirect_uris, clock=clock)
    with serving(provider, "127.0.0.1", idp_port):
        yield Demo(directory, text, idp, app_port, proxy_port, transmitter, fence_ports, clock)


@pytest.fixture(scope="module")
def middleware_stack(demo: Demo) -> Iterator[Stack]:
    """The demo app in ZeroTrustMiddleware, serving the page at /ui and GraphQL at /graphql."""
    config = demo.dir / "ig-gate.yaml"
    config.write_text(demo.config)
    script = demo.dir / "serve.py"
    script.write_text(SERVER)
    app = f"http://127.0.0.1:{demo.app_port}"
    argv = [sys.executable, str(script), str(config), str(demo.app_port), demo.idp]
    with running(argv, port=demo.app_port, log=demo.dir / "app.log"):
        yield Stack("middleware", app, "/graphql", demo.idp, demo.transmitter, demo.dir / "decisions.jsonl")


@pytest.fixture(scope="module")
def proxy_stack(demo: Demo) -> Iterator[Stack]:
    """subgraph -> Apollo Gateway (Node, also serving the page at /ui and subscriptions at /graphql/ws) ->
    `ig-gate serve --upstream` (with the same ssf.* as the middleware), GraphQL at /."""
    if shutil.which("node") is None or not (APOLLO / "node_modules").is_dir():
        pytest.skip("needs node and tests/apollo/node_modules (`make test` runs npm install there)")
    config = demo.dir / "proxy.yaml"
    config.write_text(demo.config.replace("paths: [/graphql, /graphql/ws]", "paths: [/, /graphql/ws]")
                      .replace("path: decisions.jsonl", "path: proxy-decisions.jsonl"))
    page = demo.dir / "ui.html"  # the gateway serves the page at /ui (excluded from the gate, as in the demo)
    page.write_text(render(demo.idp, "ig-gate-demo", endpoint="/", operations=APOLLO_OPERATIONS))
    subgraph_port, gateway_port, admin_port = free_port(), free_port(), free_port()
    sidecar = [
        str(IG_GATE), "serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(demo.proxy_port),
        "--admin-port", str(admin_port), "--upstream", f"http://127.0.0.1:{gateway_port}/",
    ]
    with (
        running(["node", "subgraph.js"], port=subgraph_port, log=demo.dir / "subgraph.log", cwd=APOLLO,
                env={"SUBGRAPH_PORT": str(subgraph_port)}),
        running(["node", "gateway_ui.js"], port=gateway_port, log=demo.dir / "gateway.log", cwd=APOLLO,
                env={"SUBGRAPH_URL": f"http://127.0.0.1:{subgraph_port}/",
                     "GATEWAY_PORT": str(gateway_port), "UI_PAGE": str(page)}),
        running(sidecar, port=demo.proxy_port, log=demo.dir / "sidecar.log"),
    ):
        yield Stack("proxy", f"http://127.0.0.1:{demo.proxy_port}", "/", demo.idp, demo.transmitter,
                    demo.dir / "proxy-decisions.jsonl")


@pytest.fixture(params=["middleware", "proxy"])
def stack(request) -> Stack:
    return request.getfixturevalue(f"{request.param}_stack")


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
    test = request.node.originalname.removeprefix("test_")[:40]
    if hasattr(request.node, "callspec"):
        test += "-" + request.node.callspec.id

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


def logged(stack: Stack) -> list[dict]:
    """The deployment's decision log so far."""
    lines = stack.decisions.read_text().splitlines() if stack.decisions.exists() else []
    return [json.loads(line) for line in lines]


def logged_decision(stack: Stack, decision_id: str) -> dict:
    """The decision-log record of decision_id (the log writer is asynchronous: poll)."""
    found: dict = {}

    def present() -> bool:
        for record in logged(stack):
            if decision_id in (record.get("decision_id"), record.get("id")):
                found.update(record)
                return True
        return False

    wait_until(present, 10, f"decision {decision_id} in the log")
    return found


def wait_for_subscription_decisions(stack: Stack, subject: str, count: int) -> None:
    """Poll until the log holds `count` allowed subscription decisions of subject on the page's socket path
    (the connect, then each operation frame: the gate decides them on a GraphQL path only)."""

    def decided() -> bool:
        requests = [(r["input"]["request"], r["input"].get("session") or {}) for r in logged(stack)
                    if r.get("outcome") == "allow"]
        return sum(
            request.get("path") == "/graphql/ws" and request.get("operation_type") == "subscription"
            and session.get("subject") == subject
            for request, session in requests
        ) >= count

    wait_until(decided, 10, f"{count} subscription decisions of {subject} in the log")


def mutated(stack: Stack, page: Page) -> bool:
    """The page shows the upstream's answer to its mutation."""
    data = json.loads(page.inner_text("#result"))["data"]
    if stack.name == "middleware":
        return data["update"]["ok"] is True
    return data["rename"]["name"] == "from the page"


def expect_refusal(page: Page, stack: Stack, reason: str) -> None:
    expect(page.locator("#refusal")).to_be_visible()
    expect(page.locator("#refused-what")).to_have_text(f"the query (query Me) on {stack.endpoint}")
    expect(page.locator("#refused-reasons")).to_contain_text(reason)
    decision_id = page.inner_text("#refused-decision").strip()
    assert decision_id, "the refusal page names no decision id"
    assert reason in json.dumps(logged_decision(stack, decision_id))  # support can find it in the log


def test_low_risk_user_signs_in_and_runs_a_query_and_a_mutation(page, stack, shot):
    sign_in(page, stack, "alice", shot)
    page.click("#run-query")
    expect(page.locator("#status")).to_have_text("The query succeeded")
    data = json.loads(page.inner_text("#result"))["data"]
    if stack.name == "middleware":
        me = data["me"]
        assert (me["subject"], me["tenant"], me["risk"], me["country"], me["posture"]) == (
            "alice", "acme", "low", "US", "managed"
        )
    else:  # the subgraph behind the Apollo Gateway sees the identity ig-gate verified
        assert {"x-auth-subject=alice", "x-auth-tenant=acme", "x-auth-risk=low"} <= set(data["headers"])
    page.click("#run-mutation")
    expect(page.locator("#status")).to_have_text("The mutation succeeded")
    assert mutated(stack, page)
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
    assert "acr_values=mfa" in authorize_urls[-1] and f"max_age={MAX_AGE}" in authorize_urls[-1]
    expect(page.locator("h1")).to_have_text("Second factor")
    shot("2-second-factor")
    page.fill("#code", DEMO_USERS["bob"].totp().now())
    page.click("#verify")

    expect(page.locator("#status")).to_have_text("The mutation succeeded")
    expect(page.locator("#who")).to_have_attribute("data-acr", "mfa")
    assert mutated(stack, page)
    shot("3-mutation-after-step-up")


def test_a_wrong_totp_code_is_refused_by_the_provider(page, stack, shot):
    sign_in(page, stack, "bob", shot)
    page.click("#run-mutation")
    page.wait_for_url(f"{stack.idp}/mfa**")
    page.fill("#code", "000000" if DEMO_USERS["bob"].totp().now() != "000000" else "111111")
    page.click("#verify")
    expect(page.locator("#error")).to_have_text("Wrong code")
    assert page.url.startswith(f"{stack.idp}/mfa")
    shot("2-wrong-code")


def test_a_provider_session_older_than_the_challenges_max_age_asks_for_the_password_again(
    page, stack, demo, shot
):
    authorize_urls: list[str] = []
    page.on("request", lambda r: authorize_urls.append(r.url) if "/authorize?" in r.url else None)
    sign_in(page, stack, "bob", shot)
    first_sid = page.get_attribute("#who", "data-sid")

    demo.clock.offset = MAX_AGE + 1  # bob's provider session is now older than the challenge's max_age
    try:
        page.click("#run-mutation")
        page.wait_for_url(f"{stack.idp}/login**")  # the password again, not straight to the second factor
    finally:
        demo.clock.offset = 0
    assert "acr_values=mfa" in authorize_urls[-1] and f"max_age={MAX_AGE}" in authorize_urls[-1]
    shot("2-login-again")
    page.fill("#username", "bob")
    page.fill("#password", DEMO_USERS["bob"].password)
    page.click("#login")
    page.wait_for_url(f"{stack.idp}/mfa**")
    page.fill("#code", DEMO_USERS["bob"].totp().now())
    page.click("#verify")

    expect(page.locator("#status")).to_have_text("The mutation succeeded")
    expect(page.locator("#who")).to_have_attribute("data-acr", "mfa")
    assert page.get_attribute("#who", "data-sid") != first_sid  # a new sign-in, not the old session's
    assert mutated(stack, page)
    shot("3-mutation-after-login-again")


def test_jailbroken_device_gets_the_refusal_page_with_reasons_and_decision_id(page, stack, shot):
    sign_in(page, stack, "alice", shot)
    page.select_option("#device", "jailbroken")  # the demo MDM attests alice's jailbroken phone
    expect(page.locator("#status")).to_have_text("Device: jailbroken")
    page.click("#run-query")
    expect_refusal(page, stack, "device_jailbroken")
    shot("2-refused-jailbroken")


@pytest.fixture
def fenced(stack: Stack, demo: Demo, tmp_path: Path) -> Iterator[Stack]:
    """The deployment behind nginx (a trusted proxy) that saw the client at an Australian address."""
    port = demo.fence_ports[stack.name]
    server = f"""
        server {{
            listen 127.0.0.1:{port};
            location / {{
                proxy_pass {stack.app};
                proxy_set_header Host $http_host;
                proxy_set_header X-Forwarded-For {FENCED_IP};
            }}
        }}"""
    conf = tmp_path / "nginx.conf"
    conf.write_text(nginx_config(tmp_path, server))
    argv = [nginx_binary(), "-c", str(conf), "-p", str(tmp_path)]
    with running(argv, port=port, log=tmp_path / "nginx.out"):
        yield replace(stack, app=f"http://127.0.0.1:{port}")


def test_a_country_outside_the_tenants_fence_gets_the_refusal_page(page, fenced, shot):
    # carol: a request from Australia also flags her later US requests as impossible travel
    sign_in(page, fenced, "carol", shot)
    page.click("#run-query")
    expect_refusal(page, fenced, "geo_fenced")
    shot("2-refused-geo")


def test_caep_session_revoked_closes_the_open_subscription_and_refuses_the_next_action(page, stack, shot):
    sign_in(page, stack, "alice", shot)
    page.click("#watch")
    expect(page.locator("#subscription")).to_have_attribute("data-open", "1")
    expect(page.locator("#subscription")).to_contain_text('"subject":"alice"')
    wait_for_subscription_decisions(stack, "alice", 2)  # the connect and the subscribe frame
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
