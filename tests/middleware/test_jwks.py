"""JWKSet from files and from a real local HTTPS server (self-signed cert): rotation, rate limit, failures."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ig_gate.middleware.jwks import JWKSError, JWKSet
from ig_gate.middleware.risk import InMemoryRiskStore
from ig_gate.middleware.session import SessionVerifier, TokenError, TokenInvalid
from ig_gate.middleware.settings import IdentitySettings
from tests.support.keys import KeyPair, make_keypair, write_jwks
from tests.support.procs import wait_until
from tests.support.tokens import mint


@dataclass
class JWKSServer:
    """What the local IdP serves, and what it saw."""

    url: str
    cafile: Path | None
    keys: list[dict] = field(default_factory=list)
    status: int = 200
    hits: int = 0
    in_flight: int = 0
    release: threading.Event = field(default_factory=threading.Event)

    def serve(self, *pairs: KeyPair) -> None:
        self.keys = [p.jwk() for p in pairs]


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "idp.crt", directory / "idp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


@contextlib.contextmanager
def _serving(tls: tuple[Path, Path] | None) -> Iterator[JWKSServer]:
    """A JWKS server thread on a free loopback port (https with the given cert/key, else http)."""
    holder: list[JWKSServer] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state = holder[0]
            state.in_flight += 1
            try:
                state.release.wait(10)
                state.hits += 1
                if state.status != 200:
                    self.send_error(state.status)
                    return
                body = json.dumps({"keys": state.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            finally:
                state.in_flight -= 1

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    scheme = "https" if tls else "http"
    holder.append(
        JWKSServer(f"{scheme}://127.0.0.1:{server.server_address[1]}/jwks.json", tls[0] if tls else None)
    )
    holder[0].release.set()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield holder[0]
    finally:
        holder[0].release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def idp_server(tmp_path: Path) -> Iterator[JWKSServer]:
    with _serving(_self_signed(tmp_path)) as server:
        yield server


@pytest.fixture
def url_sets() -> Iterator[list[JWKSet]]:
    sets: list[JWKSet] = []
    yield sets
    for key_set in sets:
        key_set.close()


def _started(url_sets: list[JWKSet], server: JWKSServer, **options) -> JWKSet:
    key_set = JWKSet.from_url(server.url, cafile=server.cafile, **options)
    url_sets.append(key_set)
    key_set.start()
    return key_set


# -- fixed sets --------------------------------------------------------------------------------------


def test_file_set_finds_keys_by_kid(tmp_path: Path) -> None:
    one, two = make_keypair(kid="a"), make_keypair("RS256", kid="b")
    key_set = JWKSet.from_file(write_jwks(tmp_path / "jwks.json", one, two))
    assert key_set.key("a").algorithm_name == "ES256"
    assert key_set.key("b").algorithm_name == "RS256"
    assert key_set.key(None) is None  # two keys: a token must name one
    assert key_set.key("c") is None
    status = key_set.status()
    assert status["kids"] == ["a", "b"] and status["keys"] == 2 and not status["refresh_pending"]
    assert key_set.wait_ready(0)


def test_single_key_set_answers_a_token_without_kid() -> None:
    jwk = make_keypair().jwk()
    del jwk["kid"]
    key_set = JWKSet.from_keys([jwk])
    assert key_set.key(None) is not None and key_set.key("x") is None


def test_encryption_and_unsupported_keys_are_skipped() -> None:
    good = make_keypair(kid="sig").jwk()
    enc = {**make_keypair(kid="enc").jwk(), "use": "enc"}
    odd = {"kty": "XYZ", "kid": "odd"}
    key_set = JWKSet.from_keys([good, enc, odd, "not a key"])
    assert key_set.status()["kids"] == ["sig"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"keys": {}}', "no 'keys' list"),
        (b"[1, 2]", "no 'keys' list"),
        (b'{"keys": [{"kty": "EC"}]}', "no usable signing key"),
    ],
)
def test_bad_jwks_files_are_named_errors(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "jwks.json"
    path.write_bytes(content)
    with pytest.raises(JWKSError, match=message) as info:
        JWKSet.from_file(path)
    assert str(path) in str(info.value)


def test_duplicate_kids_and_missing_files_are_named_errors(tmp_path: Path) -> None:
    with pytest.raises(JWKSError, match="duplicate key ids"):
        JWKSet.from_keys([make_keypair(kid="k").jwk(), make_keypair(kid="k").jwk()])
    with pytest.raises(JWKSError, match="cannot read JWKS"):
        JWKSet.from_file(tmp_path / "absent.json")


def test_from_source_picks_file_or_url(tmp_path: Path) -> None:
    path = write_jwks(tmp_path / "jwks.json", make_keypair(kid="f"))
    assert JWKSet.from_source(str(path)).key("f") is not None
    assert JWKSet.from_source("https://idp.example.test/jwks", refresh_s=60).status()["keys"] == 0


# -- URL sets ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "allow"),
    [
        ("http://127.0.0.1:1/jwks", False),
        ("http://idp.example.test/jwks", True),
        ("ftp://idp.example.test/jwks", False),
        ("https:///jwks", False),
    ],
)
def test_only_https_urls_unless_http_on_loopback_is_enabled(url: str, allow: bool) -> None:
    with pytest.raises(JWKSError, match="must be https"):
        JWKSet.from_url(url, allow_http_loopback=allow)


def test_plain_http_on_loopback_works_when_enabled(url_sets: list[JWKSet]) -> None:
    pair = make_keypair(kid="dev")
    with _serving(None) as server:
        server.serve(pair)
        key_set = JWKSet.from_url(server.url, allow_http_loopback=True)
        url_sets.append(key_set)
        key_set.start()
        assert key_set.wait_ready(10)
        assert key_set.key("dev") is not None


def test_url_set_loads_in_the_background(idp_server: JWKSServer, url_sets: list[JWKSet]) -> None:
    idp_server.serve(make_keypair(kid="k1"))
    seen: list[bool] = []
    key_set = JWKSet.from_url(idp_server.url, cafile=idp_server.cafile, on_refresh=seen.append)
    url_sets.append(key_set)
    assert key_set.key("k1") is None and idp_server.hits == 0  # nothing fetched before start()
    key_set.start()
    assert key_set.wait_ready(10)
    assert key_set.key("k1") is not None
    assert seen == [True] and key_set.status()["refresh_ok"] == 1
    assert key_set.status()["source"] == idp_server.url


def test_rotated_key_is_picked_up_after_an_unknown_kid(
    idp_server: JWKSServer, url_sets: list[JWKSet]
) -> None:
    old, new = make_keypair(kid="old"), make_keypair(kid="new")
    idp_server.serve(old)
    key_set = _started(url_sets, idp_server, refresh_s=3600, min_refresh_interval_s=0)
    assert key_set.wait_ready(10)
    verifier = SessionVerifier(key_set, IdentitySettings(), InMemoryRiskStore())
    assert verifier.verify(mint(old)).subject == "alice"

    idp_server.serve(old, new)
    token = mint(new)
    with pytest.raises(TokenError) as info:
        verifier.verify(token)  # fails now, and schedules the refresh
    assert isinstance(info.value, TokenInvalid) and info.value.description == "signing key unknown"
    wait_until(lambda: key_set.status()["refresh_ok"] == 2, 10, "the kid-triggered refresh")
    assert verifier.verify(token).subject == "alice"
    assert idp_server.hits == 2


def test_unknown_kids_coalesce_into_one_rate_limited_refresh(
    idp_server: JWKSServer, url_sets: list[JWKSet]
) -> None:
    idp_server.serve(make_keypair(kid="k1"))
    key_set = _started(url_sets, idp_server, refresh_s=3600, min_refresh_interval_s=1.0)
    assert key_set.wait_ready(10)
    idp_server.serve(make_keypair(kid="k1"), make_keypair(kid="k2"))
    for n in range(200):
        assert key_set.key(f"unknown-{n}") is None
    assert key_set.status()["refresh_pending"]
    assert idp_server.hits == 1  # within the minimum interval: nothing fetched yet
    wait_until(lambda: key_set.status()["refresh_ok"] == 2, 10, "the rate-limited refresh")
    assert key_set.key("k2") is not None
    assert idp_server.hits == 2 and not key_set.status()["refresh_pending"]


def test_lookups_never_wait_for_the_network(idp_server: JWKSServer, url_sets: list[JWKSet]) -> None:
    idp_server.serve(make_keypair(kid="k1"))
    key_set = _started(url_sets, idp_server, refresh_s=3600, min_refresh_interval_s=0)
    assert key_set.wait_ready(10)
    idp_server.release.clear()  # the IdP now hangs until released
    idp_server.serve(make_keypair(kid="k2"))
    assert key_set.key("k2") is None
    wait_until(lambda: idp_server.in_flight == 1, 10, "the background fetch to reach the IdP")
    assert key_set.key("k2") is None and key_set.key("k1") is not None  # answered while the fetch hangs
    idp_server.release.set()
    # the lookup made while the fetch hung may add one more refresh (min interval 0 here)
    wait_until(lambda: key_set.status()["refresh_ok"] >= 2, 10, "the refresh to finish")
    assert key_set.key("k2") is not None and key_set.key("k1") is None


def test_failed_refresh_keeps_the_keys_and_is_counted(idp_server: JWKSServer, url_sets: list[JWKSet]) -> None:
    idp_server.serve(make_keypair(kid="k1"))
    seen: list[bool] = []
    key_set = _started(url_sets, idp_server, refresh_s=3600, min_refresh_interval_s=0, on_refresh=seen.append)
    assert key_set.wait_ready(10)
    idp_server.status = 503
    assert key_set.key("k9") is None
    wait_until(lambda: key_set.status()["refresh_failed"] == 1, 10, "the failing refresh")
    assert key_set.key("k1") is not None
    assert seen[:2] == [True, False] and key_set.status()["last_error"] == "HTTP 503"


def test_untrusted_certificate_is_refused(idp_server: JWKSServer, url_sets: list[JWKSet]) -> None:
    idp_server.serve(make_keypair(kid="k1"))
    key_set = JWKSet.from_url(idp_server.url, min_refresh_interval_s=60)  # system CAs only
    url_sets.append(key_set)
    key_set.start()
    wait_until(lambda: key_set.status()["refresh_failed"] == 1, 10, "the TLS failure")
    assert "CERTIFICATE_VERIFY_FAILED" in key_set.status()["last_error"]
    assert not key_set.wait_ready(0) and key_set.key("k1") is None


def test_close_stops_the_refresher(idp_server: JWKSServer) -> None:
    idp_server.serve(make_keypair(kid="k1"))
    key_set = JWKSet.from_url(idp_server.url, cafile=idp_server.cafile)
    key_set.start()
    assert key_set.wait_ready(10)
    name = f"jwks-refresh {idp_server.url}"
    assert name in {t.name for t in threading.enumerate()}
    key_set.close()
    assert name not in {t.name for t in threading.enumerate()}
