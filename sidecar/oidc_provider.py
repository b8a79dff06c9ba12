"""The demo's OpenID provider: Authlib's authorization server (code flow + PKCE + OpenID Connect), with a
login page, a TOTP second factor (pyotp), discovery and JWKS, and a demo MDM that attests devices.

For the demo and the browser tests only (users and their passwords are fixed below). What makes it a
provider rather than a token minter:
- `/authorize` is Authlib's `AuthorizationCodeGrant` with `CodeChallenge` (PKCE, S256 only, required) and
  `OpenIDCode`; a public client (no secret) whose redirect URIs are registered up front;
- the provider keeps a login session (cookie `idp_session`); `max_age` older than the session's
  `auth_time` sends the user to the login page again, `acr_values` naming `mfa` to the TOTP page;
- tokens carry `acr` (`pwd` | `mfa`), `amr` (RFC 8176), `auth_time`, `sid` and the session `risk` the
  provider assessed (a per-user setting here: alice and carol low, bob medium, mallory high), signed with
  the key whose JWKS ig-gate trusts. Access tokens are RFC 9068 JWTs (`aud` = ig-gate's audience).
- `/mdm/attestation` stands in for the device's MDM agent: it signs a posture attestation for the user of
  the bearer token it is shown (attestations count only for their subject's session).
"""

from __future__ import annotations

import argparse
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pyotp
from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import ClientMixin, InvalidRequestError, grants
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator
from authlib.oidc.core import UserInfo
from authlib.oidc.core.grants import OpenIDCode
from flask import Flask, Response, jsonify, redirect, render_template_string, request, session
from joserfc.jwk import ECKey, KeySet
from werkzeug.serving import make_server

from ig_gate.sidecar.devidp import DEFAULT_AUDIENCE, DevKey

TENANT = "acme"
SCOPES = "openid profile"
TOKEN_LIFETIME_S = 900
POSTURES = ("managed", "unmanaged", "jailbroken")


@dataclass(frozen=True, slots=True)
class DemoUser:
    """A user of the demo provider: password, TOTP secret and the session risk the provider assesses."""

    name: str
    password: str
    totp_secret: str
    risk: str

    def totp(self) -> pyotp.TOTP:
        return pyotp.TOTP(self.totp_secret)


# fixed demo secrets (base32): `python -c "import pyotp; print(pyotp.TOTP('...').now())"` gives the code
DEMO_USERS = {
    u.name: u
    for u in (
        DemoUser("alice", "alice", "JBSWY3DPEHPK3PXPALICEAAA", "low"),
        DemoUser("carol", "carol", "JBSWY3DPEHPK3PXPCAROLAAA", "low"),
        DemoUser("bob", "bob", "JBSWY3DPEHPK3PXPBOBBBBBB", "medium"),
        DemoUser("mallory", "mallory", "JBSWY3DPEHPK3PXPMALLORYA", "high"),
    )
}


@dataclass(slots=True)
class Authenticated:
    """One authentication event of a user: what the tokens issued from it say."""

    user: DemoUser
    auth_time: int
    amr: list[str]
    sid: str

    @property
    def acr(self) -> str:
        return "mfa" if "otp" in self.amr else "pwd"

    def get_user_id(self) -> str:
        return self.user.name

    def to_session(self) -> dict[str, Any]:
        return {"user": self.user.name, "auth_time": self.auth_time, "amr": self.amr, "sid": self.sid}

    @classmethod
    def from_session(cls) -> Authenticated | None:
        data = session.get("login")
        if not isinstance(data, dict) or data.get("user") not in DEMO_USERS:
            return None
        return cls(DEMO_USERS[data["user"]], int(data["auth_time"]), list(data["amr"]), str(data["sid"]))


class S256Challenge(CodeChallenge):
    """PKCE as OAuth 2.1 has it: every authorization request carries an S256 challenge (no `plain`)."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge") or data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("PKCE required: code_challenge with code_challenge_method=S256")
        super().validate_code_challenge(grant, redirect_uri)


@dataclass(frozen=True, slots=True)
class PublicClient(ClientMixin):
    """A browser application: no secret, PKCE required, registered redirect URIs."""

    client_id: str
    redirect_uris: tuple[str, ...]

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uris[0]

    def get_allowed_scope(self, scope: str) -> str:
        allowed = set(SCOPES.split())
        return " ".join(s for s in (scope or "").split() if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return False

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == "none"

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"


@dataclass(slots=True)
class Code:
    """An issued authorization code with the request and authentication it came from."""

    code: str
    client_id: str
    redirect_uri: str
    scope: str
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    login: Authenticated
    expires_at: float = field(default_factory=lambda: time.time() + 60)

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.login.auth_time

    def get_acr(self) -> str:
        return self.login.acr

    def get_amr(self) -> list[str]:
        return self.login.amr


class Provider:
    """The provider's state: signing keys, clients, issued codes (in memory), and the Flask app.

    `clock` is the login sessions' clock: the `auth_time` of a sign-in or second factor, and the session
    age that `max_age` is compared with (a test moves it to age a session without waiting)."""

    def __init__(
        self,
        issuer: str,
        session_key: DevKey,
        device_key: DevKey,
        redirect_uris: tuple[str, ...],
        audience: str = DEFAULT_AUDIENCE,
        client_id: str = "ig-gate-demo",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.session_key = session_key
        self.device_key = device_key
        self.audience = audience
        self.client = PublicClient(client_id, redirect_uris)
        self.codes: dict[str, Code] = {}
        self.clock = clock
        self.private_jwks = KeySet([
            ECKey.import_key(session_key.private_pem, {"kid": session_key.kid, "alg": "ES256", "use": "sig"})
        ])
        self.app = self._create_app()

    # -- Authlib wiring ----------------------------------------------------------------------------

    def _server(self, app: Flask) -> AuthorizationServer:
        provider = self

        class CodeGrant(grants.AuthorizationCodeGrant):
            TOKEN_ENDPOINT_AUTH_METHODS = ["none"]

            def save_authorization_code(self, code: str, req: Any) -> None:
                payload = req.payload
                provider.codes[code] = Code(
                    code, req.client.get_client_id(), payload.redirect_uri, payload.scope,
                    payload.data.get("nonce"), payload.data.get("code_challenge"),
                    payload.data.get("code_challenge_method"), req.user,
                )

            def query_authorization_code(self, code: str, client: ClientMixin) -> Code | None:
                item = provider.codes.get(code)
                if item and item.client_id == client.get_client_id() and item.expires_at > time.time():
                    return item
                return None

            def delete_authorization_code(self, authorization_code: Code) -> None:
                provider.codes.pop(authorization_code.code, None)

            def authenticate_user(self, authorization_code: Code) -> Authenticated:
                return authorization_code.login

        class IDToken(OpenIDCode):
            def exists_nonce(self, nonce: str, req: Any) -> bool:
                return any(c.nonce == nonce for c in provider.codes.values())

            def resolve_client_private_key(self, client: Any) -> KeySet:
                return provider.private_jwks

            def get_client_algorithm(self, client: Any) -> str:
                return "ES256"

            def get_client_claims(self, client: Any) -> dict[str, Any]:
                return {"iss": provider.issuer, "aud": [client.get_client_id()],
                        "exp": int(time.time()) + TOKEN_LIFETIME_S}

            def get_encode_header(self, client: Any) -> dict[str, str]:
                return {"alg": "ES256", "kid": provider.session_key.kid}

            def generate_user_info(self, user: Authenticated, scope: str) -> UserInfo:
                return UserInfo(sub=user.user.name, name=user.user.name.title())

        class AccessTokens(JWTBearerTokenGenerator):
            def get_jwks(self) -> KeySet:
                return provider.private_jwks

            def get_audiences(self, client: Any, user: Any, scope: str) -> str:
                return provider.audience

            def get_auth_time(self, user: Authenticated) -> int:
                return user.auth_time

            def get_acr(self, user: Authenticated) -> str:
                return user.acr

            def get_amr(self, user: Authenticated) -> list[str]:
                return user.amr

            def get_extra_claims(self, client: Any, grant_type: str, user: Authenticated, scope: str) -> dict:
                return {"tenant": TENANT, "risk": user.user.risk, "sid": user.sid}

        server = AuthorizationServer(
            app, query_client=lambda cid: self.client if cid == self.client.client_id else None,
            save_token=lambda token, req: None,
        )
        server.register_token_generator(
            "default", AccessTokens(self.issuer, alg="ES256", expires_generator=lambda *_: TOKEN_LIFETIME_S)
        )
        server.register_grant(CodeGrant, [S256Challenge(required=True), IDToken(require_nonce=False)])
        return server

    # -- the web app -------------------------------------------------------------------------------

    def _create_app(self) -> Flask:
        app = Flask(__name__)
        app.config.update(SECRET_KEY=secrets.token_hex(32), SESSION_COOKIE_NAME="idp_session",
                          SESSION_COOKIE_SAMESITE="Lax")
        server = self._server(app)
        origins = {_origin(uri) for uri in self.client.redirect_uris}

        @app.after_request
        def cors(response: Response) -> Response:
            # the browser application calls discovery, token and MDM endpoints with fetch (no cookies)
            origin = request.headers.get("Origin")
            if origin in origins and request.path != "/authorize":
                response.headers["Access-Control-Allow-Origin"] = origin
                response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
                response.headers["Vary"] = "Origin"
            return response

        @app.get("/.well-known/openid-configuration")
        def discovery() -> Response:
            return jsonify(self.metadata())

        @app.get("/jwks")
        def jwks() -> Response:
            return jsonify(self.session_key.jwks())

        @app.get("/authorize")
        def authorize() -> Any:
            try:
                grant = server.get_consent_grant(end_user=None)
            except OAuth2Error as exc:
                if exc.redirect_uri:  # a registered client: it learns why (RFC 6749 4.1.2.1)
                    return server.handle_error_response(request, exc)
                return _page("Sign-in refused", f"{exc.error}: {exc.description}"), 400
            login = Authenticated.from_session()
            payload = grant.request.payload
            max_age = payload.data.get("max_age")
            stale = login is not None and max_age is not None and max_age.isdigit() and \
                self.clock() - login.auth_time > int(max_age)
            if login is None or stale or payload.data.get("prompt") == "login":
                return redirect("/login?" + urllib.parse.urlencode({"next": _without_prompt(request.url)}))
            if "mfa" in str(payload.data.get("acr_values") or "").split() and login.acr != "mfa":
                return redirect("/mfa?" + urllib.parse.urlencode({"next": request.url}))
            return server.create_authorization_response(grant=grant, grant_user=login)

        @app.route("/login", methods=["GET", "POST"])
        def login_page() -> Any:
            target = _local(request.values.get("next", ""))
            if request.method == "POST":
                user = DEMO_USERS.get(request.form.get("username", ""))
                password = request.form.get("password", "")
                if user is None or not secrets.compare_digest(user.password, password):
                    error = "Unknown user or wrong password"
                    return render_template_string(LOGIN, next=target, error=error), 401
                login = Authenticated(user, int(self.clock()), ["pwd"], secrets.token_urlsafe(12))
                session["login"] = login.to_session()
                return redirect(target)
            return render_template_string(LOGIN, next=target, error=None)

        @app.route("/mfa", methods=["GET", "POST"])
        def mfa_page() -> Any:
            target = _local(request.values.get("next", ""))
            login = Authenticated.from_session()
            if login is None:
                return redirect("/login?" + urllib.parse.urlencode({"next": target}))
            if request.method == "POST":
                if not login.user.totp().verify(request.form.get("code", ""), valid_window=1):
                    return render_template_string(MFA, next=target, user=login.user.name,
                                                  error="Wrong code"), 401
                # a new authentication event: stronger and now
                session["login"] = {**login.to_session(), "auth_time": int(self.clock()),
                                    "amr": ["pwd", "otp", "mfa"]}
                return redirect(target)
            return render_template_string(MFA, next=target, user=login.user.name, error=None)

        @app.route("/token", methods=["POST", "OPTIONS"])
        def token() -> Any:
            if request.method == "OPTIONS":
                return Response(status=204)
            return server.create_token_response()

        @app.route("/mdm/attestation", methods=["POST", "OPTIONS"])
        def attestation() -> Any:
            if request.method == "OPTIONS":
                return Response(status=204)
            return self.attest(request.headers.get("Authorization", ""), request.get_json(silent=True) or {})

        return app

    def metadata(self) -> dict[str, Any]:
        """The discovery document (OpenID Connect Discovery 1.0)."""
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none"],
            "scopes_supported": SCOPES.split(),
            "acr_values_supported": ["pwd", "mfa"],
            "claims_supported": ["sub", "acr", "amr", "auth_time", "sid", "risk", "tenant"],
        }

    def attest(self, authorization: str, body: dict[str, Any]) -> Any:
        """The demo MDM: a posture attestation for the user of a valid access token of this provider."""
        scheme, _, token = authorization.partition(" ")
        posture = body.get("posture")
        if scheme.lower() != "bearer" or posture not in POSTURES:
            reason = f"a bearer token and a posture in {POSTURES}"
            return jsonify({"error": "invalid_request", "reason": reason}), 400
        public = jwt.PyJWK(self.session_key.jwks()["keys"][0])
        try:
            claims = jwt.decode(token, public.key, algorithms=["ES256"], audience=self.audience,
                                issuer=self.issuer)
        except jwt.PyJWTError as exc:
            return jsonify({"error": "invalid_token", "reason": type(exc).__name__}), 401
        now = int(time.time())
        device = f"{claims['sub']}-{posture}-device"
        attestation = self.device_key.sign(
            {"posture": posture, "device_id": device, "sub": claims["sub"], "iat": now, "exp": now + 3600}
        )
        return jsonify({"attestation": attestation, "device_id": device})


def _origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _local(target: str) -> str:
    """After login or the second factor, only back to this provider's /authorize (no open redirect)."""
    return "/authorize?" + urllib.parse.urlsplit(target).query


def _without_prompt(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k not in ("prompt", "max_age")]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def _page(title: str, text: str) -> str:
    return render_template_string(PAGE, title=title, text=text)


@contextmanager
def serving(provider: Provider, host: str, port: int) -> Iterator[str]:
    """Serve the provider on a thread (werkzeug, threaded) until the block ends; yields its base URL."""
    httpd = make_server(host, port, provider.app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, name="oidc-provider", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{httpd.server_port}"
    finally:
        httpd.shutdown()
        thread.join(timeout=5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ig-gate-oidc-provider", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key", type=Path, required=True, help="the session signing key (PEM)")
    parser.add_argument("--kid", default="demo-idp-1")
    parser.add_argument("--mdm-key", type=Path, required=True, help="the MDM attestation key (PEM)")
    parser.add_argument("--mdm-kid", default="demo-mdm-1")
    parser.add_argument("--redirect-uri", action="append", required=True)
    args = parser.parse_args(argv)
    provider = Provider(
        f"http://{args.host}:{args.port}", DevKey.load(args.key, args.kid),
        DevKey.load(args.mdm_key, args.mdm_kid), tuple(args.redirect_uri),
    )
    make_server(args.host, args.port, provider.app, threaded=True).serve_forever()
    return 0


PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{{ title }}</title>
<style>body{font-family:sans-serif;max-width:30em;margin:3em auto}</style></head>
<body><h1>{{ title }}</h1><p>{{ text }}</p></body></html>"""

LOGIN = """<!doctype html><html><head><meta charset="utf-8"><title>Demo IdP: sign in</title>
<style>body{font-family:sans-serif;max-width:30em;margin:3em auto} label{display:block;margin:.5em 0}
.error{color:#b00}</style></head><body>
<h1>Demo IdP: sign in</h1>
<p>Users: alice and carol (low risk), bob (medium risk), mallory (high risk);
the password is the user name.</p>
{% if error %}<p class="error" id="error">{{ error }}</p>{% endif %}
<form method="post" action="/login">
<input type="hidden" name="next" value="{{ next }}">
<label>User <input name="username" id="username" autocomplete="username"></label>
<label>Password <input name="password" id="password" type="password" autocomplete="current-password"></label>
<button type="submit" id="login">Sign in</button>
</form></body></html>"""

MFA = """<!doctype html><html><head><meta charset="utf-8"><title>Demo IdP: second factor</title>
<style>body{font-family:sans-serif;max-width:30em;margin:3em auto} .error{color:#b00}</style></head><body>
<h1>Second factor</h1>
<p>The application asked for a stronger sign-in. {{ user }}, enter the 6-digit code from your
authenticator app.</p>
{% if error %}<p class="error" id="error">{{ error }}</p>{% endif %}
<form method="post" action="/mfa">
<input type="hidden" name="next" value="{{ next }}">
<label>Code <input name="code" id="code" inputmode="numeric" autocomplete="one-time-code"></label>
<button type="submit" id="verify">Verify</button>
</form></body></html>"""


if __name__ == "__main__":
    raise SystemExit(main())
