"""Run Debian nginx for tests: one `server { ... }` block in a config that keeps every file in a temp dir,
on a free loopback port, stopped by PID."""

from __future__ import annotations

import contextlib
import shutil
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.procs import free_port, running


def nginx_binary() -> str:
    """The nginx executable (the test fails, naming the package, when it is missing)."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        pytest.fail("nginx is not installed (Debian package nginx; `make test` installs it)")
    return binary


def nginx_config(tmp: Path, server: str) -> str:
    """A foreground, single-process nginx config with its pid, logs and temp files under tmp."""
    return textwrap.dedent(f"""
        daemon off;
        master_process off;
        pid {tmp}/nginx.pid;
        error_log {tmp}/error.log info;
        events {{ worker_connections 64; }}
        http {{
            access_log off;
            client_body_temp_path {tmp}/client_body;
            proxy_temp_path {tmp}/proxy;
            fastcgi_temp_path {tmp}/fastcgi;
            uwsgi_temp_path {tmp}/uwsgi;
            scgi_temp_path {tmp}/scgi;
        """) + textwrap.indent(textwrap.dedent(server).strip(), "    ") + "\n}\n"


@contextlib.contextmanager
def running_nginx(tmp: Path, server: Callable[[int], str]) -> Iterator[int]:
    """nginx with the server block `server(port)` on a free port; yields the port."""
    binary = nginx_binary()
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(nginx_config(tmp, server(port)))
    with running([binary, "-c", str(conf), "-p", str(tmp)], port=port, log=tmp / "nginx.out"):
        yield port
