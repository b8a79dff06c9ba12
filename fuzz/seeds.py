"""Write the seed corpora: `python fuzz/seeds.py` (re)writes fuzz/corpus/<target>/seed-* from real inputs.

Real inputs: the example policy bundle built and signed with the project's own code (fixed fuzz keys from
harness.py, so the signatures verify in the harnesses), real forwarding headers as proxies write them,
real tokens, real GraphQL requests (tricky ones included) and real HTTP requests. Entries that fuzzing
adds later are named by libFuzzer (a SHA-1); only `seed-*` files are rewritten here.
"""

from __future__ import annotations

import base64
import gzip
import json
import sys
from collections.abc import Callable
from pathlib import Path

import jwt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import ES256_PRIVATE_PEM, HS256_SECRET

from ig_gate.bundles.archive import Bundle, build_bundle, pack
from ig_gate.bundles.signing import sign_bundle

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
Seeds = dict[str, bytes]


def tar_of(archive: bytes) -> bytes:
    """The uncompressed tar stream inside a bundle archive."""
    return gzip.decompress(archive)


def example_bundle() -> Bundle:
    """The example policy bundle (policies/), built and signed with the fixed ES256 fuzz key."""
    bundle = build_bundle(REPO / "policies", version="1.2.3", expires="2999-01-01", channel="dev")
    return sign_bundle(bundle, ES256_PRIVATE_PEM, key_id="fuzz-es256", scope="prod")


def small_files() -> dict[str, bytes]:
    """A small bundle with YAML and nested data, numbers as written, and an HTML-ish string."""
    return {
        "ig/zt.rego": b"package ig.zt\n\ndefault allow := false\n",
        "data.json": b'{"r": 1.50, "html": "<&>\\u2028", "n": [1e3, -0, 12345678901234567890]}',
        "ig/limits/data.yaml": b"max: 3\nnames: [a, b]\nnested: {x: 1}\n",
        ".manifest": b'{"revision": "r1", "roots": ["ig", "tenants"], "metadata": {"k": "v"}}',
    }


def member_list(files: dict[str, bytes]) -> bytes:
    """fuzz_archive's member-list form of files (regular files)."""
    return b"\n@@".join(b"0" + name.encode() + b"\n" + body for name, body in files.items())


def archive_seeds() -> Seeds:
    """Mode byte (see fuzz_archive.py): 0/3 member list (GNU/PAX), 1 tar stream, 2 archive."""
    signed = example_bundle()
    small = pack(small_files())
    return {
        "signed-members": b"\0" + member_list(dict(signed.files)),
        "small-members-pax": b"\3" + member_list(small_files()),
        "dir-and-link-members": b"\0" + b"5ig/\n@@0ig/a.rego\npackage a\n@@2ig/l.rego\na.rego",
        "signed-tar": b"\1" + tar_of(signed.archive),
        "signed-tgz": b"\2" + signed.archive,
        "small-tar": b"\1" + tar_of(small),
        "small-tgz": b"\2" + small,
        "two-members-tgz": b"\2" + small + small,
    }


def signature_seeds() -> Seeds:
    """Mode byte 0: a whole `.signatures.json`; 1: a JWS payload; 2: a JWS header; 3: a `.manifest`."""
    signed = example_bundle()
    document = signed.files[".signatures.json"]
    token = json.loads(document)["signatures"][0]
    header, payload, _ = token.split(".")

    def unb64(part: str) -> bytes:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))

    return {
        "signatures-json": b"\0" + document,
        "payload": b"\1" + unb64(payload),
        "payload-md5": b"\1" + unb64(payload).replace(b"SHA-256", b"MD5", 1),
        "header": b"\2" + unb64(header).replace(b"ES256", b"HS256"),
        "header-crit": b"\2" + b'{"alg": "HS256", "crit": ["exp"], "kid": "k"}',
        "manifest": b"\3" + signed.files[".manifest"],
        "manifest-date": b"\3" + b'{"revision": "r", "expires": "2030-01-31", "cacheable": false}',
        "manifest-time": b"\3" + b'{"expires": "2030-01-31T10:00:00+02:00", "policies": []}',
    }


def client_ip_seeds() -> Seeds:
    """Config byte (see fuzz_client_ip.py), then peer, X-Forwarded-For and Forwarded as proxies write them."""
    cases = {
        "nginx-xff": (0, "10.0.0.5", "203.0.113.7, 10.1.2.3", ""),
        "envoy-xff-ipv6": (1, "10.0.0.5", "2001:db8:1::7, [2001:db8::1]:443, 10.0.0.9", ""),
        "rfc7239": (2, "10.0.0.5", "", 'for=192.0.2.60;proto=http;by=10.0.0.1, for="[2001:db8::17]:4711"'),
        "rfc7239-obfuscated": (2, "192.0.2.1", "", "for=_hidden, for=unknown;host=a.test, For=198.51.100.17"),
        "coprocessor-hops": (3 * 2, "", "203.0.113.9, 198.51.100.2, 10.0.0.1", ""),
        "coprocessor-forwarded": (3 * 3 + 2, "", "", 'for="203.0.113.9:8080";proto=https, for=10.1.1.1'),
        "mapped-v4": (0, "::ffff:10.0.0.5", "::ffff:203.0.113.200, 10.0.0.8:80", ""),
        "untrusted-peer": (0, "203.0.113.77", "1.2.3.4", "for=5.6.7.8"),
        "unix-peer": (3, "unix:/run/gate.sock", "203.0.113.5", ""),
        "junk": (1, "10.9.9.9", " , ,300.1.1.1,", 'for="unterminated;for=1.1.1.1, ;;'),
    }
    return {
        name: bytes([config]) + "\n".join((peer, xff, fwd)).encode("latin-1")
        for name, (config, peer, xff, fwd) in cases.items()
    }


def token_seeds() -> Seeds:
    """Mode byte (see fuzz_token.py): 0 request headers, 1 JOSE header + claims to sign, 2 a raw token."""
    claims = {"iss": "https://idp.example.test", "aud": "ig-gateway", "sub": "alice", "exp": 4_000_000_000}
    headers = {"alg": "ES256", "kid": "es", "typ": "JWT"}
    hs256 = jwt.encode(claims, HS256_SECRET, algorithm="HS256", headers={"kid": "hs"})
    es256 = jwt.encode(claims, ES256_PRIVATE_PEM, algorithm="ES256", headers={"kid": "es"})
    signed = {
        "valid": (headers, claims),
        "aud-list-jti": (headers, {**claims, "aud": ["x", "ig-gateway"], "jti": "j1", "nbf": 0}),
        "crit-b64": ({**headers, "crit": ["b64"], "b64": True}, claims),
        "b64-false": ({**headers, "b64": False}, claims),
        "missing-exp-sub-int": ({"alg": "HS256"}, {"iss": "https://idp.example.test", "sub": 7}),
    }
    seeds = {f"sign-{name}": b"\1" + json.dumps(h).encode() + b"\n" + json.dumps(c).encode()
             for name, (h, c) in signed.items()}
    seeds |= {
        "headers-bearer": b"\0host: api.test\nauthorization: Bearer " + es256.encode() + b"\nx-tenant: acme",
        "headers-cookie": b"\0cookie: theme=dark; session=\"" + hs256.encode() + b"\"; x=1\nx-purpose: ops",
        "headers-repeated": b"\0authorization: Bearer a.b.c\nauthorization: Bearer a.b.c",
        "headers-basic": b"\0authorization: Basic YWxpY2U6cHc=\nx-device-attestation: " + es256.encode(),
        "raw-es256": b"\2" + es256.encode(),
        "raw-hs256": b"\2" + hs256.encode(),
        "raw-padded": b"\2" + es256.encode().replace(b".", b"==.", 1),
    }
    return seeds


def proxy_seeds() -> Seeds:
    """Client requests as they reach the sidecar's port."""
    body = b'{"query":"mutation { transfer(amount: 1000) { id } }"}'
    return {
        "get-query": b"GET /graphql?query=%7Bme%7Bid%7D%7D&x=1 HTTP/1.1\r\nHost: gate.test\r\n"
        b"Accept: */*\r\nX-Forwarded-For: 198.51.100.1\r\n\r\n",
        "post-json": b"POST /graphql HTTP/1.1\r\nHost: gate.test\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nAuthorization: Bearer a.b.c\r\n\r\n%s" % (len(body), body),
        "post-chunked": b"POST /api/upload HTTP/1.1\r\nHost: gate.test\r\nTransfer-Encoding: chunked\r\n"
        b"Expect: 100-continue\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "forged-identity": b"GET /me HTTP/1.1\r\nHost: gate.test\r\nX-Auth-Subject: admin\r\n"
        b"X_Auth_Tenant: acme\r\nProxy-Authorization: Basic eA==\r\n\r\n",
        "connection-named": b"PUT /a HTTP/1.1\r\nHost: gate.test\r\nConnection: keep-alive, X-Secret, Te\r\n"
        b"X-Secret: 1\r\nTE: trailers\r\nContent-Length: 2\r\n\r\nok",
        "dot-segments": b"GET /public/%2e%2e/graphql/./x//y?%71uery=1 HTTP/1.1\r\nHost: gate.test\r\n\r\n",
        "normalisable": b"GET /api/%7euser//a;v=1/%41%c3%a9/.x/x.. HTTP/1.1\r\nHost: gate.test\r\n\r\n",
        "pipelined": b"GET /a HTTP/1.1\r\nHost: g\r\n\r\nGET /b HTTP/1.1\r\nHost: g\r\n\r\n",
        "http10": b"POST /form HTTP/1.0\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: 3\r\n\r\na=b",
    }


def graphql_seeds() -> Seeds:
    """Mode byte (see fuzz_graphql.py): 0 HTTP (method, content type in the byte), 1 frame, 2 document, 3
    amplified document."""
    post_json, get, post_graphql = 0, 4, 16
    documents = {
        "named-pick": "query A { a } mutation B { b(x: 1) { id } }\nB",
        "fragment": "fragment F on T { x } query Q($v: In = {a: [1, 2]}) @dir(a: 1) { ...F }",
        "block-string": 'mutation { a(s: """ a \\""" } { """) }',
        "comment-brace": "# mutation { x }\n{ a(s: \"}\") { b } }",
        "subscription": "subscription OnEvent { event { id } }",
        "shorthand-many": "{ a } { b }",
        "unicode": "query \u00e9t\u00e9 { caf\u00e9 }",
    }
    seeds = {f"doc-{name}": b"\2" + doc.encode() for name, doc in documents.items()}
    seeds |= {
        "amplified-braces": b"\3{a}",
        "amplified-names": b"\3query a ",
        "post-mutation": bytes([post_json]) + b'\n{"query":"mutation { transfer(amount: 1) { id } }"}',
        "post-batch": bytes([post_json]) + b'\n[{"query":"{ me }"},{"query":"mutation { x }"}]',
        "post-dup-key": bytes([post_json]) + b'\n{"query":"{ a }","query":"mutation { b }"}',
        "get-encoded-name": bytes([get]) + b"%71uery=mutation%7Bx%7D&operationName=",
        "get-repeated": bytes([get]) + b"query=%7Ba%7D&query=mutation%7Bb%7D",
        "post-graphql": bytes([post_graphql]) + b"\nquery { a } # tail",
        "frame-transport-ws": b'\1{"id":"1","type":"subscribe","payload":{"query":"mutation { m }"}}',
        "frame-legacy": b'\1{"id":"2","type":"start","payload":{"query":"subscription S { s }",'
        b'"operationName":"S","variables":{}}}',
        "frame-not-object": b'\1{"id":"3","type":"subscribe","payload":["{ a }"]}',
    }
    return seeds


TARGETS: dict[str, Callable[[], Seeds]] = {
    "archive": archive_seeds,
    "signatures": signature_seeds,
    "client_ip": client_ip_seeds,
    "token": token_seeds,
    "graphql": graphql_seeds,
    "proxy": proxy_seeds,
}


def write(target: str, seeds: Seeds) -> None:
    directory = ROOT / "corpus" / target
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("seed-*"):
        old.unlink()
    for name, body in seeds.items():
        (directory / f"seed-{name}").write_bytes(body)


def main() -> None:
    for target, seeds in TARGETS.items():
        write(target, seeds())


if __name__ == "__main__":
    main()
