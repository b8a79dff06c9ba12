"""A complete offline Sigstore world for tests.

Mints a Fulcio-like root CA, a CT log key that signs embedded SCTs, a one-entry
Rekor-like transparency log (hashedrekord 0.0.1 entry, inclusion promise, inclusion
proof, signed checkpoint) and the trusted_root.json that lists them, then signs an
artifact into a v0.3 Sigstore bundle that `sigstore`'s Verifier accepts offline.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import struct
from dataclasses import dataclass

import rfc8785
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
TRUSTED_ROOT_MEDIA_TYPE = "application/vnd.dev.sigstore.trustedroot+json;version=0.1"
KEY_DETAILS = "PKIX_ECDSA_P256_SHA_256"
OIDC_ISSUER_LEGACY_OID = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
OIDC_ISSUER_OID = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
SCT_LIST_OID = x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")
ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _spki(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _log_id(key: ec.EllipticCurvePrivateKey) -> bytes:
    """RFC 6962 key id: SHA-256 of the DER SubjectPublicKeyInfo."""
    return hashlib.sha256(_spki(key)).digest()


def _der(tag: int, content: bytes) -> bytes:
    """One DER TLV (definite length)."""
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    octets = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(octets)]) + octets + content


def new_key() -> ec.EllipticCurvePrivateKey:
    """A fresh P-256 key (CA, CT log, transparency log and leaf keys are all P-256)."""
    return ec.generate_private_key(ec.SECP256R1())


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """keyCertSign + cRLSign for a CA, digitalSignature only for a leaf."""
    return x509.KeyUsage(
        digital_signature=not ca, content_commitment=False, key_encipherment=False, data_encipherment=False,
        key_agreement=False, key_cert_sign=ca, crl_sign=ca, encipher_only=False, decipher_only=False,
    )


@dataclass(frozen=True, slots=True)
class FulcioCA:
    """A self-signed Fulcio-like root: the only certificate in its chain."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


def make_ca(name: str = "ig-gate test fulcio") -> FulcioCA:
    """Self-signed CA valid from yesterday to tomorrow."""
    key = new_key()
    subject = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ig-gate-test"),
        x509.NameAttribute(NameOID.COMMON_NAME, name),
    ])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return FulcioCA(key=key, cert=cert)


@dataclass(frozen=True, slots=True)
class SigstoreWorld:
    """A CA, a CT log key and a transparency log key; signs artifacts into bundles."""

    ca: FulcioCA
    ctlog_key: ec.EllipticCurvePrivateKey
    rekor_key: ec.EllipticCurvePrivateKey
    log_origin: str = "rekor.ig-gate.test - 1"

    def trusted_root_json(self) -> bytes:
        """The trusted_root.json (v0.1 media type) listing this world's CA, tlog and ctlog."""
        start = self.ca.cert.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%SZ")

        def log(key: ec.EllipticCurvePrivateKey, url: str) -> dict:
            return {
                "baseUrl": url,
                "hashAlgorithm": "SHA2_256",
                "publicKey": {"rawBytes": _b64(_spki(key)), "keyDetails": KEY_DETAILS,
                              "validFor": {"start": start}},
                "logId": {"keyId": _b64(_log_id(key))},
            }

        root = {
            "mediaType": TRUSTED_ROOT_MEDIA_TYPE,
            "tlogs": [log(self.rekor_key, "https://rekor.ig-gate.test")],
            "certificateAuthorities": [{
                "subject": {"organization": "ig-gate-test", "commonName": "ig-gate test fulcio"},
                "uri": "https://fulcio.ig-gate.test",
                "certChain": {"certificates": [
                    {"rawBytes": _b64(self.ca.cert.public_bytes(serialization.Encoding.DER))}
                ]},
                "validFor": {"start": start},
            }],
            "ctlogs": [log(self.ctlog_key, "https://ctfe.ig-gate.test")],
            "timestampAuthorities": [],
        }
        return json.dumps(root, indent=2).encode()

    def issue_leaf(
        self, identity: str, issuer: str, now: dt.datetime
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """A 10-minute code-signing leaf for identity (URI if '://' in it, else email), SCT embedded."""
        key = new_key()
        san: x509.GeneralName = (
            x509.UniformResourceIdentifier(identity) if "://" in identity else x509.RFC822Name(identity)
        )
        base = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.ca.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(minutes=10))
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca.key.public_key()), critical=False
            )
            .add_extension(x509.SubjectAlternativeName([san]), critical=True)
            .add_extension(
                x509.UnrecognizedExtension(OIDC_ISSUER_LEGACY_OID, issuer.encode()), critical=False
            )
            .add_extension(
                x509.UnrecognizedExtension(OIDC_ISSUER_OID, _der(0x0C, issuer.encode())), critical=False
            )
        )
        precert_tbs = base.sign(self.ca.key, hashes.SHA256()).tbs_certificate_bytes
        sct_list = self._sct_list(precert_tbs, now)
        cert = base.add_extension(
            x509.UnrecognizedExtension(SCT_LIST_OID, _der(0x04, sct_list)), critical=False
        ).sign(self.ca.key, hashes.SHA256())
        if cert.tbs_precertificate_bytes != precert_tbs:
            raise RuntimeError("precertificate TBS changed when the SCT extension was added")
        return key, cert

    def _sct_list(self, precert_tbs: bytes, now: dt.datetime) -> bytes:
        """RFC 6962 SignedCertificateTimestampList holding one precert SCT from this world's CT log."""
        timestamp_ms = int(now.timestamp()) * 1000
        issuer_key_hash = hashlib.sha256(
            self.ca.cert.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        ).digest()
        signed = (
            struct.pack("!BBQH", 0, 0, timestamp_ms, 1)  # v1, certificate_timestamp, time, precert_entry
            + issuer_key_hash
            + len(precert_tbs).to_bytes(3, "big") + precert_tbs
            + struct.pack("!H", 0)  # no extensions
        )
        signature = self.ctlog_key.sign(signed, ECDSA_SHA256)
        sct = (
            struct.pack("!B", 0) + _log_id(self.ctlog_key) + struct.pack("!QH", timestamp_ms, 0)
            + struct.pack("!BBH", 4, 3, len(signature)) + signature  # sha256, ecdsa
        )
        return struct.pack("!HH", len(sct) + 2, len(sct)) + sct

    def _tlog_entry(self, cert: x509.Certificate, signature: bytes, digest: bytes, now: dt.datetime) -> dict:
        """A hashedrekord 0.0.1 entry at index 0 of a one-entry log, with promise, proof and checkpoint."""
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        body = rfc8785.dumps({
            "apiVersion": "0.0.1",
            "kind": "hashedrekord",
            "spec": {
                "data": {"hash": {"algorithm": "sha256", "value": digest.hex()}},
                "signature": {"content": _b64(signature), "publicKey": {"content": _b64(cert_pem)}},
            },
        })
        integrated_time = int(now.timestamp())
        log_id = _log_id(self.rekor_key)
        promise = rfc8785.dumps({
            "body": _b64(body), "integratedTime": integrated_time, "logID": log_id.hex(), "logIndex": 0,
        })
        root_hash = hashlib.sha256(b"\x00" + body).digest()  # RFC 6962 leaf hash = root of a 1-leaf tree
        note = f"{self.log_origin}\n1\n{_b64(root_hash)}\n"
        note_sig = log_id[:4] + self.rekor_key.sign(note.encode(), ECDSA_SHA256)
        checkpoint = f"{note}\n\u2014 {self.log_origin.split()[0]} {_b64(note_sig)}\n"
        return {
            "logIndex": "0",
            "logId": {"keyId": _b64(log_id)},
            "kindVersion": {"kind": "hashedrekord", "version": "0.0.1"},
            "integratedTime": str(integrated_time),
            "inclusionPromise": {"signedEntryTimestamp": _b64(self.rekor_key.sign(promise, ECDSA_SHA256))},
            "inclusionProof": {
                "logIndex": "0", "rootHash": _b64(root_hash), "treeSize": "1", "hashes": [],
                "checkpoint": {"envelope": checkpoint},
            },
            "canonicalizedBody": _b64(body),
        }

    def sign(self, artifact: bytes, *, identity: str, issuer: str) -> bytes:
        """Sign artifact as identity@issuer; return the Sigstore bundle JSON (v0.3 media type)."""
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        key, cert = self.issue_leaf(identity, issuer, now)
        signature = key.sign(artifact, ECDSA_SHA256)
        digest = hashlib.sha256(artifact).digest()
        bundle = {
            "mediaType": BUNDLE_MEDIA_TYPE,
            "verificationMaterial": {
                "certificate": {"rawBytes": _b64(cert.public_bytes(serialization.Encoding.DER))},
                "tlogEntries": [self._tlog_entry(cert, signature, digest, now)],
            },
            "messageSignature": {
                "messageDigest": {"algorithm": "SHA2_256", "digest": _b64(digest)},
                "signature": _b64(signature),
            },
        }
        return json.dumps(bundle, indent=2).encode()


def make_world() -> SigstoreWorld:
    """A fresh world: new CA, CT log key and transparency log key."""
    return SigstoreWorld(ca=make_ca(), ctlog_key=new_key(), rekor_key=new_key())
