"""What the configuration library costs: import time and validation of ig-gate's Settings.

Compares msgspec (`msgspec.convert(raw, Settings)`) with pydantic (`TypeAdapter(Settings)`, the
engine under pydantic-settings; `import pydantic_settings` timed too) on the same dataclasses, the
schema of `middleware/settings.py`. Each import (on top of what settings.py imported before msgspec)
and each schema build + first validation is timed in a fresh interpreter; warm validations in this
one. What a process pays before its first Settings = import + first validation. Fastest runs; a
library that is not installed is reported as such.

    python bench/config_cost.py [--runs 15]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RAW = """{
    "bundle": {"registry": "registry.example.com", "repository": "policies/ig-gate",
               "verification_key": "/etc/ig-gate/keys/bundle.pub", "state_dir": "/var/lib/ig-gate/state",
               "require_digests": ["sha256:" + "0" * 64]},
    "identity": {"issuer": "https://idp.example.com", "jwks": "https://idp.example.com/jwks.json",
                 "stepup": {"max_age": 600}},
    "geo": {"trusted_proxies": ["127.0.0.1/32", "10.0.0.0/8"]},
    "memo": {"size": 4096, "ttl_s": 2},
    "rollout": {"stages": [0.1, 0.5, 1.0], "sticky_by": "session"},
    "risk_store": {"redis_url": "redis://127.0.0.1:6379/0"},
    "metrics": {"tenants": ["acme", "globex"]},
    "failure_mode": "closed",
}"""
SETUP = f"from ig_gate.middleware.settings import Settings\nraw = {RAW}\n"
# (import, prepare (timed with the first call: schema build), call)
VALIDATORS = {
    "msgspec": ("import msgspec", "", "msgspec.convert(raw, Settings)"),
    "pydantic": ("from pydantic import TypeAdapter", "adapter = TypeAdapter(Settings)",
                 "adapter.validate_python(raw)"),
}
# what settings.py imported before msgspec: an import is timed on top of these
PRELUDE = "import dataclasses, pathlib, yaml, packaging.version\n"
IMPORTS = {
    "msgspec": "import msgspec, msgspec.inspect",
    "pydantic": "import pydantic; from pydantic import TypeAdapter",
    "pydantic_settings": "import pydantic_settings",
}


def _fresh(code: str, runs: int) -> float | None:
    """Fastest of the seconds `code` (which sets `elapsed`) reports in fresh interpreters; None if missing.

    The fastest run, not the median: the machine is shared and other work only ever adds time."""
    script = f"import time\n{code}\nprint(elapsed)"
    times = []
    for _ in range(runs):
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
        if done.returncode:
            return None
        times.append(float(done.stdout))
    return min(times)


def _timed(statement: str) -> str:
    return f"t0 = time.perf_counter()\n{statement}\nelapsed = time.perf_counter() - t0"


def _shown(seconds: float | None) -> str:
    if seconds is None:
        return "not installed"
    return f"{seconds * 1e3:.2f} ms" if seconds > 1e-4 else f"{seconds * 1e6:.1f} µs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="fresh interpreters per measurement")
    runs = parser.parse_args().runs
    rows = []
    for name, statement in IMPORTS.items():
        rows.append((f"import {name}", _fresh(PRELUDE + _timed(statement), runs)))
    for name, (imported, prepare, call) in VALIDATORS.items():
        first = _fresh(f"{imported}\n{SETUP}" + _timed(f"{prepare}\n{call}"), runs)
        rows.append((f"{name}: schema build + first validation (library imported)", first))
        try:
            namespace: dict[str, object] = {}
            exec(f"{imported}\n{SETUP}{prepare}", namespace)
        except ImportError:
            rows.append((f"{name}: validation, warm", None))
            continue
        loops, _ = timeit.Timer(call, globals=namespace).autorange()
        best = min(timeit.repeat(call, globals=namespace, number=loops, repeat=5)) / loops
        rows.append((f"{name}: validation, warm", best))
    print(f"| what (best of {runs} fresh interpreters; warm: best of 5) | cost |\n|---|---|")
    for what, cost in rows:
        print(f"| {what} | {_shown(cost)} |")


if __name__ == "__main__":
    main()
