"""OCI registry client for policy bundles: push, resolve a tag, pull by digest, re-tag.

The registry protocol runs over an oras-py `Registry` (its requests session and its bearer-token
auth backend); manifests and blobs are fetched directly and every digest and size is checked here,
because oras' `pull()` untars layers and trips on OPA's `/`-rooted members.

Artifact layout (see docs/registry.md): an OCI image manifest whose config is `{}` with OPA's config
media type, one layer with the bundle archive (OPA's layer media type, so `opa run` can pull it) and
an optional second layer with the detached, cosign-style signature of that archive.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import oras.provider
import requests

from ig_gate.bundles.errors import RegistryError
from ig_gate.bundles.registry_auth import Credentials, find_credentials

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
BUNDLE_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
SIGNATURE_MEDIA_TYPE = "application/vnd.ig-gate.bundle.signature.v1+base64"
CONFIG_BYTES = b"{}"
TITLE_ANNOTATION = "org.opencontainers.image.title"
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_BLOB_BYTES = 64 * 1024 * 1024
ENV_HINT = "IG_GATE_REGISTRY_USERNAME/_PASSWORD or a docker login"

_REPOSITORY = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def check_repository(name: str) -> str:
    """Return name if it is a valid OCI repository name, else raise ValueError."""
    if not _REPOSITORY.fullmatch(name):
        raise ValueError(f"invalid repository name {name!r} (lower-case path like 'policies/gate')")
    return name


def check_tag(tag: str) -> str:
    """Return tag if it is a valid OCI tag (a channel name), else raise ValueError."""
    if not _TAG.fullmatch(tag):
        raise ValueError(f"invalid tag {tag!r} (letters, digits, '.', '_', '-'; at most 128)")
    return tag


def check_digest(digest: str) -> str:
    """Return digest if it is `sha256:<64 hex>`, else raise ValueError."""
    if not _DIGEST.fullmatch(digest):
        raise ValueError(f"invalid digest {digest!r} (expected sha256:<64 lower-case hex>)")
    return digest


def sha256_digest(data: bytes) -> str:
    """The OCI digest string of data."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class Descriptor:
    """An OCI content descriptor (media type, digest, size, annotations)."""

    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, media_type: str, data: bytes, title: str | None = None) -> Descriptor:
        return cls(media_type, sha256_digest(data), len(data), {TITLE_ANNOTATION: title} if title else {})

    @classmethod
    def from_json(cls, obj: object, where: str) -> Descriptor:
        if not isinstance(obj, dict):
            raise RegistryError(f"{where}: descriptor is not an object")
        media_type, digest, size = obj.get("mediaType"), obj.get("digest"), obj.get("size")
        if not isinstance(media_type, str) or not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
            raise RegistryError(f"{where}: descriptor needs a mediaType and a sha256 digest")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_BLOB_BYTES:
            raise RegistryError(f"{where}: descriptor size {size!r} is not an integer in 0..{MAX_BLOB_BYTES}")
        annotations = obj.get("annotations") or {}
        if not isinstance(annotations, dict):
            raise RegistryError(f"{where}: descriptor annotations are not an object")
        return cls(media_type, digest, size, annotations)

    def to_json(self) -> dict:
        out: dict = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


@dataclass(frozen=True, slots=True)
class Artifact:
    """A bundle pulled from the registry; every byte here matched its digest and size."""

    digest: str  # the OCI manifest digest (what channels point at)
    manifest: bytes
    archive: bytes
    signature: bytes | None  # the detached signature layer, if the artifact has one
    annotations: Mapping[str, str]

    @property
    def bundle_digest(self) -> str:
        """The digest of the archive bytes (what `Bundle.digest` and digest pins refer to)."""
        return sha256_digest(self.archive)


def build_manifest(
    archive: bytes, signature: bytes | None, annotations: Mapping[str, str] | None = None
) -> tuple[bytes, list[tuple[Descriptor, bytes]]]:
    """The OCI manifest bytes for a bundle and the (descriptor, bytes) of every blob it references."""
    config = Descriptor.of(CONFIG_MEDIA_TYPE, CONFIG_BYTES)
    blobs = [(Descriptor.of(BUNDLE_MEDIA_TYPE, archive, "bundle.tar.gz"), archive)]
    if signature is not None:
        blobs.append((Descriptor.of(SIGNATURE_MEDIA_TYPE, signature, "bundle.tar.gz.sig"), signature))
    document: dict = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": config.to_json(),
        "layers": [descriptor.to_json() for descriptor, _ in blobs],
    }
    if annotations:
        document["annotations"] = dict(annotations)
    manifest = json.dumps(document, separators=(",", ":"), sort_keys=True).encode()
    return manifest, [(config, CONFIG_BYTES), *blobs]


def parse_manifest(manifest: bytes, where: str) -> tuple[Descriptor, Descriptor, Descriptor | None, dict]:
    """Validate a bundle manifest: (config, bundle layer, signature layer or None, annotations)."""
    try:
        document = json.loads(manifest)
    except ValueError as exc:
        raise RegistryError(f"{where}: manifest is not JSON ({exc})") from None
    if not isinstance(document, dict) or document.get("schemaVersion") != 2:
        raise RegistryError(f"{where}: not an OCI image manifest (schemaVersion 2)")
    if (media_type := document.get("mediaType", MANIFEST_MEDIA_TYPE)) != MANIFEST_MEDIA_TYPE:
        raise RegistryError(f"{where}: manifest media type {media_type!r} is not {MANIFEST_MEDIA_TYPE}")
    config = Descriptor.from_json(document.get("config"), f"{where} config")
    if config.media_type != CONFIG_MEDIA_TYPE:
        raise RegistryError(f"{where}: config media type {config.media_type!r} is not {CONFIG_MEDIA_TYPE}")
    layers = document.get("layers")
    if not isinstance(layers, list):
        raise RegistryError(f"{where}: manifest has no layers list")
    by_type: dict[str, list[Descriptor]] = {}
    for index, layer in enumerate(layers):
        descriptor = Descriptor.from_json(layer, f"{where} layer {index}")
        by_type.setdefault(descriptor.media_type, []).append(descriptor)
    unknown = sorted(set(by_type) - {BUNDLE_MEDIA_TYPE, SIGNATURE_MEDIA_TYPE})
    if unknown:
        raise RegistryError(f"{where}: unexpected layer media type(s) {', '.join(unknown)}")
    bundles, signatures = by_type.get(BUNDLE_MEDIA_TYPE, []), by_type.get(SIGNATURE_MEDIA_TYPE, [])
    if len(bundles) != 1 or len(signatures) > 1:
        raise RegistryError(f"{where}: expected one bundle layer and at most one signature layer, "
                            f"found {len(bundles)} and {len(signatures)}")
    annotations = document.get("annotations") or {}
    if not isinstance(annotations, dict):
        raise RegistryError(f"{where}: manifest annotations are not an object")
    return config, bundles[0], signatures[0] if signatures else None, annotations


class _Transport(oras.provider.Registry):
    """oras' session and token auth, without its retry-with-sleep wrapper, with timeouts and Basic auth."""

    def __init__(self, host: str, *, plain_http: bool, tls_verify: bool | str, timeout_s: float,
                 credentials: Credentials | None) -> None:
        super().__init__(hostname=host, insecure=plain_http, tls_verify=tls_verify)
        self.timeout_s = timeout_s
        self.credentials = credentials
        self._basic: str | None = None  # "Basic ..." once the registry asked for Basic auth
        if credentials is not None:
            self.auth.set_basic_auth(credentials.username, credentials.password)

    def do_request(self, url: str, method: str = "GET", data: bytes | None = None,
                   headers: dict | None = None, json: dict | None = None,
                   stream: bool = False) -> requests.Response:
        headers = {**(headers or {}), **self.auth.get_auth_header()}
        if self._basic:
            headers["Authorization"] = self._basic
        response = self._send(method, url, data, headers, stream)
        if response.status_code != 401:
            return response
        challenge = response.headers.get("Www-Authenticate", "")
        if challenge.lower().startswith("basic"):
            if self.credentials is None or self._basic:
                return response
            self._basic = headers["Authorization"] = "Basic " + self.auth._basic_auth
        else:
            headers, changed = self.auth.authenticate_request(response, headers, refresh=True)
            if not changed:
                return response
        response.close()
        return self._send(method, url, data, headers, stream)

    def _send(self, method: str, url: str, data: bytes | None, headers: dict,
              stream: bool) -> requests.Response:
        return self.session.request(method, url, data=data, headers=headers, stream=stream,
                                    verify=self._tls_verify, timeout=self.timeout_s, allow_redirects=True)


class RegistryClient:
    """Talks to one OCI registry (`host:port`). Use from one thread at a time."""

    def __init__(self, host: str, *, plain_http: bool = False, tls_verify: bool | str = True,
                 timeout_s: float = 10.0, credentials: Credentials | None = None,
                 env: Mapping[str, str] = os.environ, docker_config: Path | None = None,
                 max_blob_bytes: int = MAX_BLOB_BYTES) -> None:
        if not host or "/" in host:
            raise ValueError(f"registry must be host[:port], got {host!r}")
        self.host = host
        self.max_blob_bytes = max_blob_bytes
        creds = credentials or find_credentials(host, env, docker_config)
        self._transport = _Transport(host, plain_http=plain_http, tls_verify=tls_verify,
                                     timeout_s=timeout_s, credentials=creds)
        self._base = f"{'http' if plain_http else 'https'}://{host}/v2/"

    def __repr__(self) -> str:
        return f"RegistryClient({self.host!r})"

    # -- reading -------------------------------------------------------------------------------

    def resolve(self, repository: str, tag: str) -> str | None:
        """The manifest digest that tag points at, or None when the tag does not exist."""
        where = f"{self.host}/{repository}:{tag}"
        response = self._request("HEAD", self._url(repository, "manifests", tag), where,
                                 headers={"Accept": MANIFEST_MEDIA_TYPE})
        if response.status_code == 404:
            return None
        self._expect(response, (200,), where)
        digest = response.headers.get("Docker-Content-Digest", "")
        if _DIGEST.fullmatch(digest):
            return digest
        return sha256_digest(self._get_manifest(repository, tag, where))

    def fetch(self, repository: str, digest: str) -> Artifact:
        """Pull an artifact by manifest digest, checking digest and size of the manifest and every blob."""
        check_digest(digest)
        where = f"{self.host}/{repository}@{digest}"
        manifest = self._get_manifest(repository, digest, where)
        config, bundle, signature, annotations = parse_manifest(manifest, where)
        self._get_blob(repository, config, where)
        archive = self._get_blob(repository, bundle, where)
        detached = self._get_blob(repository, signature, where) if signature else None
        return Artifact(digest, manifest, archive, detached, annotations)

    def fetch_tag(self, repository: str, tag: str) -> Artifact:
        """Resolve tag, then pull by the resolved digest (RegistryError when the tag does not exist)."""
        digest = self.resolve(repository, tag)
        if digest is None:
            raise RegistryError(f"{self.host}/{repository}:{tag}: not found")
        return self.fetch(repository, digest)

    # -- writing -------------------------------------------------------------------------------

    def push(self, repository: str, tag: str, archive: bytes, signature: bytes | None = None,
             annotations: Mapping[str, str] | None = None) -> str:
        """Upload a bundle (and its detached signature) and point tag at it; return the manifest digest."""
        check_tag(tag)
        manifest, blobs = build_manifest(archive, signature, annotations)
        for descriptor, data in blobs:
            self._put_blob(repository, descriptor, data)
        return self._put_manifest(repository, tag, manifest)

    def tag(self, repository: str, digest: str, tag: str) -> None:
        """Point tag at an existing manifest (same bytes, same digest): this is promotion."""
        check_tag(tag)
        where = f"{self.host}/{repository}@{digest}"
        manifest = self._get_manifest(repository, check_digest(digest), where)
        self._put_manifest(repository, tag, manifest)

    # -- protocol ------------------------------------------------------------------------------

    def _url(self, repository: str, kind: str, reference: str) -> str:
        return f"{self._base}{check_repository(repository)}/{kind}/{urllib.parse.quote(reference, safe=':')}"

    def _request(self, method: str, url: str, where: str, **kwargs: object) -> requests.Response:
        try:
            return self._transport.do_request(url, method, **kwargs)  # type: ignore[arg-type]
        except requests.exceptions.SSLError:
            raise RegistryError(f"{where}: TLS handshake with registry {self.host} failed "
                                "(use --plain-http only for a loopback registry)") from None
        except requests.exceptions.Timeout:
            raise RegistryError(f"{where}: registry {self.host} timed out") from None
        except requests.exceptions.RequestException as exc:
            raise RegistryError(f"{where}: registry {self.host} unreachable ({type(exc).__name__})") from None

    def _expect(self, response: requests.Response, ok: tuple[int, ...], where: str) -> None:
        if response.status_code in ok:
            return
        status = response.status_code
        if status in (401, 403):
            detail = "authentication failed" if self._transport.credentials else "authentication required"
            raise RegistryError(f"{where}: {detail} (HTTP {status}; set {ENV_HINT})")
        if status == 404:
            raise RegistryError(f"{where}: not found")
        raise RegistryError(f"{where}: registry answered HTTP {status}{_error_code(response)}")

    def _get_manifest(self, repository: str, reference: str, where: str) -> bytes:
        """GET a manifest; when reference is a digest, the bytes must hash to it."""
        response = self._request("GET", self._url(repository, "manifests", reference), where,
                                 headers={"Accept": MANIFEST_MEDIA_TYPE}, stream=True)
        with response:
            self._expect(response, (200,), where)
            manifest = _read_limited(response, MAX_MANIFEST_BYTES, f"{where} manifest")
        if _DIGEST.fullmatch(reference) and (served := sha256_digest(manifest)) != reference:
            raise RegistryError(f"{where}: digest mismatch: the manifest served hashes to {served}")
        return manifest

    def _get_blob(self, repository: str, descriptor: Descriptor, where: str) -> bytes:
        here, size = f"{where} blob {descriptor.digest}", descriptor.size
        if size > self.max_blob_bytes:
            raise RegistryError(f"{here}: declared size {size} exceeds {self.max_blob_bytes}")
        response = self._request("GET", self._url(repository, "blobs", descriptor.digest), here, stream=True)
        with response:
            self._expect(response, (200,), here)
            data = _read_limited(response, size, here)
        if len(data) != size:
            raise RegistryError(f"{here}: size mismatch: got {len(data)} bytes, manifest says {size}")
        if (served := sha256_digest(data)) != descriptor.digest:
            raise RegistryError(f"{here}: digest mismatch: the blob served hashes to {served}")
        return data

    def _put_blob(self, repository: str, descriptor: Descriptor, data: bytes) -> None:
        where = f"{self.host}/{repository} blob {descriptor.digest}"
        head = self._request("HEAD", self._url(repository, "blobs", descriptor.digest), where)
        if head.status_code == 200:
            return
        started = self._request("POST", f"{self._base}{check_repository(repository)}/blobs/uploads/", where)
        self._expect(started, (202,), where)
        location = started.headers.get("Location")
        if not location:
            raise RegistryError(f"{where}: registry started an upload without a Location")
        upload = _with_query(urllib.parse.urljoin(self._base, location), digest=descriptor.digest)
        done = self._request("PUT", upload, where, data=data,
                             headers={"Content-Type": "application/octet-stream"})
        self._expect(done, (201,), where)

    def _put_manifest(self, repository: str, tag: str, manifest: bytes) -> str:
        where = f"{self.host}/{repository}:{tag}"
        digest = sha256_digest(manifest)
        response = self._request("PUT", self._url(repository, "manifests", tag), where, data=manifest,
                                 headers={"Content-Type": MANIFEST_MEDIA_TYPE})
        self._expect(response, (201,), where)
        served = response.headers.get("Docker-Content-Digest")
        if served and served != digest:
            raise RegistryError(f"{where}: registry stored the manifest as {served}, expected {digest}")
        return digest


def _read_limited(response: requests.Response, limit: int, where: str) -> bytes:
    """Read a streamed body, refusing more than limit bytes."""
    chunks, total = [], 0
    try:
        for chunk in response.iter_content(chunk_size=65536):
            total += len(chunk)
            if total > limit:
                raise RegistryError(f"{where}: more than {limit} bytes served")
            chunks.append(chunk)
    except requests.exceptions.RequestException as exc:
        raise RegistryError(f"{where}: transfer failed ({type(exc).__name__})") from None
    return b"".join(chunks)


def _with_query(url: str, **params: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query) + list(params.items())
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def _error_code(response: requests.Response) -> str:
    """The first OCI error code from a response body, as ' (CODE)', or ''."""
    try:
        errors = response.json().get("errors") or []
        code = errors[0].get("code")
    except (ValueError, AttributeError, IndexError, TypeError):
        return ""
    return f" ({code})" if isinstance(code, str) else ""
