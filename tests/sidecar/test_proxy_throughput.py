"""bench/proxy_throughput.py end to end, briefly: real upstream, real `ig-gate serve --upstream`, wrk."""

from __future__ import annotations

import shutil

import pytest

from bench.proxy_throughput import main

pytestmark = pytest.mark.integration


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (Debian: apt-get install wrk)")
def test_a_short_run_measures_every_config_on_the_allow_path(capsys):
    assert main(["--rounds", "1", "--duration", "1", "--warmup", "1", "--connections", "4"]) == 0
    table = capsys.readouterr().out
    for config in ("| direct |", "| proxied |", "| proxy-only |"):
        assert config in table
