"""Registry credentials: `IG_GATE_REGISTRY_USERNAME`/`_PASSWORD`, else the Docker config file.

Credentials are never printed: `Credentials.__repr__` hides the password and error messages never
carry them.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

ENV_USERNAME = "IG_GATE_REGISTRY_USERNAME"
ENV_PASSWORD = "IG_GATE_REGISTRY_PASSWORD"


@dataclass(frozen=True, slots=True)
class Credentials:
    """A registry user name and its password (or token); the password stays out of repr."""

    username: str
    password: str = field(repr=False)


def docker_config_path(env: Mapping[str, str]) -> Path:
    """The Docker client config file: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`."""
    directory = env.get("DOCKER_CONFIG") or "~/.docker"
    return Path(directory).expanduser() / "config.json"


def find_credentials(host: str, env: Mapping[str, str] = os.environ,
                     docker_config: Path | None = None) -> Credentials | None:
    """Credentials for host (`name:port`): env vars first, then the Docker config's `auths` entry.

    Credential helpers (`credsStore`, `credHelpers`) are not run; use the env vars with them.
    A Docker config file that cannot be read or parsed is treated as holding no credentials.
    """
    username, password = env.get(ENV_USERNAME), env.get(ENV_PASSWORD)
    if username and password:
        return Credentials(username, password)
    path = docker_config or docker_config_path(env)
    try:
        auths = json.loads(path.read_text()).get("auths") or {}
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(auths, dict):
        return None
    for key in (host, f"https://{host}", f"http://{host}", f"https://{host}/v1/"):
        entry = auths.get(key)
        if isinstance(entry, dict) and (found := _from_entry(entry)):
            return found
    return None


def _from_entry(entry: Mapping) -> Credentials | None:
    """Decode one `auths` entry: `{"auth": base64(user:pass)}` or `{"username", "password"}`."""
    if isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
        return Credentials(entry["username"], entry["password"])
    encoded = entry.get("auth")
    if not isinstance(encoded, str):
        return None
    try:
        username, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return Credentials(username, password) if sep and username else None
