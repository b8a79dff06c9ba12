"""Sample a server process with py-spy while wrk drives it; summarize where the samples went."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

_LOCATION = re.compile(r" \(([^()]*?):\d+\)$")  # "func (path/file.py:123)" -> drop the line number
OWN_CODE = ("bundles/", "geo/", "middleware/", "sidecar/")  # py-spy shows paths relative to sys.path
# the app is what these call that is not ig-gate's code (uvicorn's proxy-headers wrapper: the bare app)
APP_CALLERS = ("ZeroTrustMiddleware.__call__ ", "ProxyHeadersMiddleware.__call__ ")
APP = "the app"
SERVER = "server, outside the middleware (uvicorn, event loop)"
# the step of the request path a sample is charged to: the innermost frame of its stack that one of these
# names (a function-name prefix); the first matching step wins for a frame
STEPS = (
    ("decision-log writer thread", ("DecisionLog._run ",)),  # the feeder thread with the writer process
    ("decision-log append", ("DecisionLog.append",)),
    ("metrics record", ("GateMetrics.",)),
    ("path normalisation", ("normalise_scope ",)),
    ("header extract", ("header_map ",)),
    ("token lookup (session)", ("Gate._session ", "SessionVerifier.", "TokenReader.")),
    ("classifier", ("Classifier.",)),
    ("signals (IP, geo, device, travel)",
     ("ClientIPResolver.", "GeoReader.", "DevicePosture.", "TravelAnomalyDetector.")),
    ("memo / policy", ("Gate._verdict ", "DecisionMemo.")),
    ("tenant caps (admit)", ("Workload.admit ",)),
    ("gate bookkeeping (trace, ids, record)", ("Gate.", "DecisionIds.", "_identity ")),
    ("body read and replay", ("read_body ", "_replay")),
    ("middleware ASGI wrapping", ("ZeroTrustMiddleware.", "_set_identity ")),
)  # fmt: skip


class ProfileError(RuntimeError):
    """py-spy is missing or failed."""


def py_spy() -> str:
    """The py-spy executable next to this Python, or on PATH (ProfileError when absent)."""
    beside = Path(sys.executable).with_name("py-spy")
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if not found:
        raise ProfileError("py-spy is not installed (pip install py-spy; it is in the dev extras)")
    return found


def start(pid: int, seconds: float, out: Path, rate: int = 250) -> subprocess.Popen:
    """Start sampling `pid` (all threads) for `seconds` into `out` (collapsed stacks)."""
    argv = [py_spy(), "record", "-p", str(pid), "-d", str(max(1, round(seconds))), "-r", str(rate),
            "-f", "raw", "-o", str(out), "--threads", "--nonblocking"]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen, timeout_s: float = 60) -> None:
    """Wait for a sampler started by `start`; ProfileError when it failed."""
    _, err = process.communicate(timeout=timeout_s)
    if process.returncode != 0:
        raise ProfileError(f"py-spy exited with {process.returncode}: {err.strip()[-500:]}")


@dataclass(frozen=True, slots=True)
class Profile:
    """Shares of samples: per thread, and per function (inclusive: the function is on the stack)."""

    samples: int
    threads: dict[str, float]
    functions: dict[str, float]
    steps: dict[str, float] = field(default_factory=dict)  # exclusive: each sample charged to one step

    def top(self, count: int, only: tuple[str, ...] = OWN_CODE) -> list[tuple[str, float]]:
        """The `count` functions with the largest inclusive share whose location contains one of `only`."""
        mine = [(name, share) for name, share in self.functions.items() if any(f"({p}" in name for p in only)]
        return sorted(mine, key=lambda item: -item[1])[:count]


def read_profile(path: Path) -> Profile:
    """Summarize py-spy's raw (collapsed) output: `thread;frame;frame count` lines."""
    threads: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    steps: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        thread, *frames = stack.split(";")
        threads[re.sub(r"^thread \(\d+\): ", "", thread).strip()] += samples
        for name in {_LOCATION.sub(r" (\1)", frame) for frame in frames}:
            functions[name] += samples
        steps[step_of(frames)] += samples
        total += samples
    if not total:
        raise ProfileError(f"{path}: no samples")
    return Profile(
        total,
        {name: n / total for name, n in threads.most_common()},
        {name: n / total for name, n in functions.items()},
        {name: n / total for name, n in steps.most_common()},
    )


def step_of(frames: list[str]) -> str:
    """The request-path step (STEPS) a sampled stack (root first) is charged to: its innermost frame that
    names a step; the app when the frame below the middleware (or uvicorn's wrapper, for the bare app)
    is not ig-gate's code."""
    step = SERVER
    for depth, frame in enumerate(frames):
        if depth and frames[depth - 1].startswith(APP_CALLERS) and not _own(frame):
            return APP
        for name, prefixes in STEPS:
            if frame.startswith(prefixes):
                step = name
                break
    return step


def _own(frame: str) -> bool:
    return any(f"({prefix}" in frame for prefix in OWN_CODE)
