"""The hash-chained decision log: JSON lines in OPA's decision-log shape, written off the request path.

`DecisionLog.append()` (and `append_decision()`, the gate's entry without a dict) only
puts the entry on a bounded deque (a full queue drops the entry and counts it; ~0.3 µs,
where `queue.Queue.put_nowait` costs 1-7 µs against a busy writer thread). The writer (ChainWriter)
serialises (orjson), redacts, chains and writes, either in a child process fed compact tuples by a
thread of this process (`writer="process"`, the default: decision_log_process.py; the child and its
feeder together ~7-10 µs a line, bench/decision_log_cpu.py) or in a daemon thread of this process
(`writer="thread"`). The parts of a line are encoded one by one, and a dict or list logged again (the
gate's memoized input documents and policy results) is encoded and checked for secrets once. Each line
is one JSON object:

    {"decision_id", "path", "input", "result", "bundles": {"ig": {"revision"}} (the entry's
     "bundles", else built from its "revision"), "timestamp" (RFC 3339, UTC; the entry's
     epoch "timestamp", else the time of append()), "labels": {"app": "ig-gate", "id", "version"},
     ...any other keys of the entry..., "prev_hash", "entry_hash"}

`prev_hash` is the SHA-256 (hex) of the previous line's bytes without its newline
(64 zeros on the first line of a file; a reopened log continues from its last line).
`entry_hash` is the SHA-256 of this line's own bytes up to `,"entry_hash"` closed with
`}`, so an edited line is reported where it is, including the last one. Together they
detect edited, removed, reordered and truncated lines; a chain cut off after a complete
line is only detectable against a recorded head (`ChainReport.head`).

One writer, one file, one chain. The configured path is a base: a writer takes the first *slot* nobody
else holds, slot 0 being the configured file itself and slot k the file `<stem>.<k><suffix>` beside it
(`decisions.jsonl`, `decisions.1.jsonl`, `decisions.2.jsonl`, ...), and holds an exclusive `flock` on it
until close(). So a single-process server writes the configured file, every worker of
`ig-gate serve --workers N` (or a second server pointed at the same path) writes its own, and a restart
takes the same names again and continues each chain from its last line. `ig-gate decisions verify DIR`
checks every chain in the directory. flock needs a local filesystem (not NFS).
"""

from __future__ import annotations

import errno
import fcntl
import functools
import glob
import hashlib
import json
import logging
import os
import re
import threading
import time
import uuid
from binascii import hexlify
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson

from ig_gate.errors import IgGateError

log = logging.getLogger(__name__)

GENESIS = "0" * 64
REDACTED = "[REDACTED]"
DEFAULT_PATH = "ig/zt/decision"
# a key is secret when its lower-case name without "-"/"_" contains one of these
SECRET_KEY_PARTS = (
    "authorization", "token", "cookie", "secret", "password", "passwd", "attestation",
    "apikey", "privatekey", "credential",
)
# a superset of what redact() replaces, looked for in the lower-cased JSON text without "-" and "_":
# entries without a hit (nearly all) are encoded once and never walked
_SECRET_HINTS = (*SECRET_KEY_PARTS, "bearer", "eyj")
_SECRET_HINT_RE = re.compile("|".join(_SECRET_HINTS))
_SHORT_TEXT = 128
_SCALARS = frozenset({int, float, bool, type(None)})
_BEARER_OR_JWT = re.compile(r"^(?:bearer\s|eyJ[\w-]*\.[\w-]*\.)", re.IGNORECASE)
_JWT_ANYWHERE = re.compile(r"eyJ[\w-]*\.[\w-]*\.[\w-]*")  # e.g. a magic-link token inside a request path
_ENTRY_HASH_SUFFIX = re.compile(rb',"entry_hash":"([0-9a-f]{64})"\}')
_SUFFIX_LEN = 81  # len(',"entry_hash":"') + 64 + len('"}')
MAX_WRITERS = 1024  # slots tried before giving up (a bound, not an expected number of workers)
WAKE_AT = 64  # queued entries that wake the writer at once
POLL_S = 0.05  # the writer's look at the queue when nobody woke it
WRITERS = ("process", "thread")  # where lines are encoded and written: DecisionLog `writer`
DEFAULT_WRITER = "process"
_KNOWN_KEYS = frozenset({
    "decision_id", "path", "input", "result", "bundles", "revision", "timestamp", "labels",
    "prev_hash", "entry_hash",
})


class _Barrier:
    """A marker in the queue: the writer sets `done` once everything before it is written and flushed."""

    __slots__ = ("done", "stop")

    def __init__(self, stop: bool) -> None:
        self.stop = stop
        self.done = threading.Event()


class DecisionLogError(IgGateError):
    """The decision log cannot be opened or continued."""

    label = "decision log unusable"


@dataclass(frozen=True, slots=True)
class ChainReport:
    """The result of verify_chain(): `first_bad_line` is 1-based (None when ok)."""

    ok: bool
    entries: int
    first_bad_line: int | None
    reason: str
    head: str  # hash of the last good line (GENESIS for an empty file)

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly summary."""
        return {
            "ok": self.ok, "entries": self.entries, "first_bad_line": self.first_bad_line,
            "reason": self.reason, "head": self.head,
        }


def redact(value: Any) -> Any:
    """A copy of `value` with secret-named keys and bearer/JWT-looking strings replaced, at any depth."""
    kind = type(value)
    if kind is str:
        return _redact_text(value)
    if kind in _SCALARS:
        return value
    if kind is dict or isinstance(value, Mapping):
        return {key: REDACTED if _is_secret_key(key) else redact(item) for key, item in value.items()}
    if kind is list or kind is tuple:
        return [redact(item) for item in value]
    if isinstance(value, set | frozenset):
        return [redact(item) for item in sorted(value, key=str)]
    return value


def _fold(text: str) -> str:
    return text.lower().replace("-", "").replace("_", "")


@functools.lru_cache(maxsize=4096)
def _is_secret_key(key: Any) -> bool:
    name = _fold(str(key))
    return any(part in name for part in SECRET_KEY_PARTS)


def _json_default(value: Any) -> Any:
    """Encode what JSON has no type for: sets as sorted lists, other mappings as dicts, the rest as str."""
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    if isinstance(value, Mapping):
        return dict(value)
    return str(value)


# ensure_ascii=False keeps key names literal, so _may_hold_secret() sees them as redact() does
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=_json_default)
# orjson does the common case; dataclasses and datetimes go through _json_default (str) as with json
_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME
_PART_CACHE_SIZE = 1024


class ObjectMemo:
    """Something derived from an object (its JSON, its reference number), kept per object identity: the
    object is held while cached, so no other object can have its id meanwhile; cleared when full. For
    the gate's memoized input documents and results, which are logged again and again and never change."""

    def __init__(self, size: int = _PART_CACHE_SIZE) -> None:
        self._size = size
        self._derived: dict[int, Any] = {}
        self._held: list[Any] = []

    def get(self, value: Any) -> Any:
        """What was put for this very object, else None."""
        return self._derived.get(id(value))

    def get_all(self, values: Iterable[Any]) -> list[Any]:
        """get() of each value, as a list (one C-level pass: the writer process's feeder, per batch)."""
        return list(map(self._derived.get, map(id, values)))

    def put(self, value: Any, derived: Any) -> bool:
        """Keep `derived` for `value`; True when the memo was full and cleared first."""
        full = len(self._held) >= self._size
        if full:
            self.clear()
        self._derived[id(value)] = derived
        self._held.append(value)
        return full

    def forget(self, value_id: int) -> None:
        self._derived.pop(value_id, None)

    def clear(self) -> None:
        self._derived.clear()
        self._held.clear()


def _dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON; what orjson refuses (integers beyond 64 bits) goes through the json module,
    which raises ValueError/TypeError for what cannot be encoded at all (circular values)."""
    try:
        return orjson.dumps(value, default=_json_default, option=_ORJSON_OPTIONS)
    except TypeError:
        return _ENCODER.encode(value).encode()


def _redact_text(value: str) -> str:
    """A bearer/JWT-looking string is redacted whole; JWTs inside other text are cut out."""
    if _BEARER_OR_JWT.match(value):
        return REDACTED
    return _JWT_ANYWHERE.sub(REDACTED, value) if "eyJ" in value else value


def _may_hold_secret(text: bytes) -> bool:
    """Whether redact() could change the value encoded as `text` (a superset test; folded as str, as
    _is_secret_key folds key names). Short texts: one regex; long ones: `in` per hint (~2x faster)."""
    folded = _fold(text.decode())
    if len(folded) <= _SHORT_TEXT:
        return _SECRET_HINT_RE.search(folded) is not None
    return any(hint in folded for hint in _SECRET_HINTS)


def _redacted_json(value: Any) -> bytes:
    """`value` as JSON with secrets redacted; most values hold none and are encoded once."""
    if type(value) is str:
        return _dumps(_redact_text(value))
    text = _dumps(value)
    if _may_hold_secret(text):  # rare: redact, encode again
        text = _dumps(redact(value))
    return text


class _Timestamps:
    """RFC 3339 UTC timestamps with microseconds; the date and time of day are formatted once a second."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = b""

    def __call__(self, ts: float) -> bytes:
        second, micros = divmod(round(ts * 1_000_000), 1_000_000)
        return b"%s%06dZ" % (self.date(second), micros)

    def date(self, second: int) -> bytes:
        """`YYYY-MM-DDTHH:MM:SS.` of an epoch second."""
        if second != self._second:
            self._prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S.").encode()
            self._second = second
        return self._prefix


def _package_version() -> str:
    try:
        return metadata.version("ig-gate")
    except metadata.PackageNotFoundError:
        return "unknown"


def _last_line(path: Path) -> tuple[bytes | None, bool]:
    """The last line of a file without its newline (None when empty), and whether it had one."""
    with path.open("rb") as f:
        pos = f.seek(0, os.SEEK_END)
        tail = b""
        while pos > 0:
            step = min(65536, pos)
            pos -= step
            f.seek(pos)
            tail = f.read(step) + tail
            if tail.rfind(b"\n", 0, len(tail) - 1) >= 0:
                break
    if not tail:
        return None, True
    complete = tail.endswith(b"\n")
    return tail[tail.rfind(b"\n", 0, len(tail) - 1) + 1:].removesuffix(b"\n"), complete


def writer_path(base: Path, slot: int) -> Path:
    """The file of writer slot `slot`: the base itself for 0, else `<stem>.<slot><suffix>` beside it."""
    return base if slot == 0 else base.with_name(f"{base.stem}.{slot}{base.suffix}")


def _claim(base: Path) -> tuple[Path, int]:
    """Open the first writer slot of `base` that no other open log holds, locked (flock) until closed."""
    for slot in range(MAX_WRITERS):
        path = writer_path(base, slot)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another writer's chain
            os.close(fd)
            continue
        except OSError:
            os.close(fd)
            raise
        return path, fd
    raise OSError(f"all {MAX_WRITERS} writer slots are held by other processes")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# an append_decision() line up to prev_hash's closing quote: decision id, the part from path to the
# timestamp's opening quote, the timestamp's date and microseconds, the part from labels to prev_hash
_DECISION_BODY = b'{"decision_id":%s%s%s%06dZ%s%s"'


def _id_json(decision_id: Any) -> bytes:
    """A decision id as JSON (_redacted_json): letters, digits and "-" (the gate's ids) are neither redacted
    (a bearer token has a space, a JWT dots) nor escaped, and are quoted as they are."""
    if type(decision_id) is str and decision_id.replace("-", "").isalnum():
        return b'"%s"' % decision_id.encode()
    return _redacted_json(decision_id)


def _sealed(body: bytes) -> tuple[bytes, bytes]:
    """The line from its body (up to prev_hash's closing quote) with entry_hash, the SHA-256 of the body
    closed with `}`, and its newline; and the line's own hash (hex, without the newline), the next line's
    prev_hash. The body is hashed once: both hashes go on from the same state (~1 µs a line less than
    hashing the whole line again)."""
    line_hash = hashlib.sha256(body)
    entry_hash = line_hash.copy()
    entry_hash.update(b"}")
    tail = b',"entry_hash":"%s"}' % hexlify(entry_hash.digest())
    line_hash.update(tail)
    return b"%s%s\n" % (body, tail), hexlify(line_hash.digest())


class ChainWriter:
    """Encodes, redacts, chains and writes lines to one open log file (the writer thread's or the writer
    process's part; see DecisionLog)."""

    def __init__(self, path: Path, file: Any, labels: Mapping[str, str]) -> None:
        """`file` is the log opened for appending (binary, buffered); the chain continues from its last
        line, after a newline when that line is torn (verify reports a torn line; the chain goes on)."""
        self.path = path
        self._file = file
        last, complete = _last_line(path)
        if not complete:
            file.write(b"\n")
        self._prev_hash = (GENESIS if last is None else _sha256(last)).encode()
        self._labels = dict(labels)
        self._labels_json = _redacted_json(self._labels)
        self._parts = ObjectMemo()  # object -> its JSON
        self._revisions: dict[str, bytes] = {}
        self._extras_cache: dict[tuple[Any, ...], bytes] = {}
        self._texts: dict[str, bytes] = {}
        self._suffixes: dict[Any, bytes] = {}  # outcome -> the line from the labels to prev_hash's value
        self._middles: dict[tuple[Any, ...], bytes] = {}  # (path, input, result, revision) -> its part
        self._timestamp = _Timestamps()

    def write(self, entries: list[tuple[Any, ...]]) -> tuple[int, int]:
        """Write (time, entry) and (time, *append_decision arguments) items: (written, failed)."""
        written = 0
        for item in entries:
            try:
                line, line_hash = self._line(*item) if len(item) == 2 else self._decision_line(*item)
                self._file.write(line)
            except Exception:  # a bad entry or a full disk must not stop the writer
                decision_id = item[1].get("decision_id") if len(item) == 2 else item[1]
                log.exception("decision log %s: entry %s not written", self.path, decision_id)
                continue
            self._prev_hash = line_hash
            written += 1
        return written, len(entries) - written

    def _line(self, ts: float, entry: Mapping[str, Any]) -> tuple[bytes, bytes]:
        """One line with its newline, and its hash (the next line's prev_hash): the record's parts
        encoded (and redacted) one by one."""
        get = entry.get
        bundles = get("bundles")
        labels = get("labels")
        extras = {k: v for k, v in entry.items() if k not in _KNOWN_KEYS}
        return self._chained((
            b'{"decision_id":', _id_json(get("decision_id")),
            b',"path":', self._text(get("path", DEFAULT_PATH)),
            b',"input":', self._part(get("input")),
            b',"result":', self._part(get("result")),
            b',"bundles":', self._part(bundles) if bundles else self._bundles_of(get("revision", "")),
            b',"timestamp":"', self._timestamp(get("timestamp", ts)),
            b'","labels":', _redacted_json({**self._labels, **labels}) if labels else self._labels_json,
            self._extras(extras) if extras else b"",
        ))  # fmt: skip

    def _decision_line(
        self, ts: float, decision_id: str, path: str, input: Any, result: Any, revision: Any, outcome: str
    ) -> tuple[bytes, bytes]:
        """_line for an append_decision() item."""
        middle = self._middle(path, self._part(input), self._part(result), revision)
        second, micros = divmod(round(ts * 1_000_000), 1_000_000)
        return _sealed(_DECISION_BODY % (
            _id_json(decision_id), middle, self._timestamp.date(second), micros, self._suffix(outcome),
            self._prev_hash,
        ))  # fmt: skip

    def write_columns(self, columns: tuple[Any, ...], text_of: Callable[[Any], bytes]) -> tuple[int, int]:
        """Write append_decision() items given column by column (times, decision ids, paths, inputs,
        results, revisions, outcomes), the inputs and results as references that `text_of` turns into
        their encoded, redacted JSON (the writer process): (written, failed). The same lines as write():
        spliced from parts cached per (path, input, result, revision) and per outcome, written at once."""
        middles, suffixes, dates, prev = self._middles, self._suffixes, self._timestamp.date, self._prev_hash
        lines: list[bytes] = []
        for ts, decision_id, path, document, result, revision, outcome in zip(*columns, strict=True):
            try:
                id_json = _id_json(decision_id)
                try:
                    middle = middles[path, document, result, revision]
                except (KeyError, TypeError):
                    refs = (document, result)
                    middle = self._middle(path, text_of(document), text_of(result), revision, refs)
                try:
                    suffix = suffixes[outcome]
                except (KeyError, TypeError):
                    suffix = self._suffix(outcome)
                second, micros = divmod(round(ts * 1_000_000), 1_000_000)
                body = _DECISION_BODY % (id_json, middle, dates(second), micros, suffix, prev)
                line, line_hash = _sealed(body)
            except Exception:  # a bad entry must not stop the writer
                log.exception("decision log %s: entry %s not written", self.path, decision_id)
                continue
            lines.append(line)
            prev = line_hash
        written = len(lines)
        if written:
            try:
                self._file.write(b"".join(lines))
            except OSError:  # a full disk: the chain goes on from the last line written
                log.exception("decision log %s: %d entries not written", self.path, written)
                written = 0
            else:
                self._prev_hash = prev
        return written, len(columns[0]) - written

    def _middle(self, path: Any, input: bytes, result: bytes, revision: Any, refs: Any = None) -> bytes:
        """The line from `,"path":` to the timestamp's opening quote; cached by (path, *refs, revision)
        when `refs` (the writer process's references to the input and result) are given."""
        middle = b"".join((
            b',"path":', self._text(path), b',"input":', input, b',"result":', result,
            b',"bundles":', self._bundles_of(revision), b',"timestamp":"',
        ))  # fmt: skip
        # only str paths and str or null revisions: equal keys (1 == 1.0 == True) must mean equal JSON
        if refs is not None and type(path) is str and (revision is None or type(revision) is str):
            if len(self._middles) >= _PART_CACHE_SIZE:
                self._middles.clear()
            self._middles[(path, *refs, revision)] = middle
        return middle

    def _suffix(self, outcome: Any) -> bytes:
        """The line from the timestamp's closing quote to prev_hash's value: labels and outcome."""
        try:
            return self._suffixes[outcome]
        except (KeyError, TypeError):
            outcome_json = self._extras({"outcome": outcome})
            suffix = b'","labels":%s%s,"prev_hash":"' % (self._labels_json, outcome_json)
        if type(outcome) is str and len(self._suffixes) < _PART_CACHE_SIZE:
            self._suffixes[outcome] = suffix
        return suffix

    def _chained(self, parts: tuple[bytes, ...]) -> tuple[bytes, bytes]:
        """The line from its parts, prev_hash and entry_hash added; and the line's own hash (_sealed)."""
        return _sealed(b"".join((*parts, b',"prev_hash":"', self._prev_hash, b'"')))

    def _text(self, value: Any) -> bytes:
        """_redacted_json for values that repeat (paths), cached."""
        try:
            return self._texts[value]
        except (KeyError, TypeError):
            text = _redacted_json(value)
        if type(value) is str and len(self._texts) < _PART_CACHE_SIZE:
            self._texts[value] = text
        return text

    def _part(self, value: Any) -> bytes:
        """_redacted_json(value), encoded once per object: the gate logs the same memoized input
        document and policy result for many decisions (a cached object is kept alive, so its id is not
        reused while cached; logged values never change, see append())."""
        if type(value) is not dict and type(value) is not list:
            return _redacted_json(value)
        text = self._parts.get(value)
        if text is None:
            text = _redacted_json(value)
            self._parts.put(value, text)
        return text

    def _extras(self, extras: dict[str, Any]) -> bytes:
        """`,"key":value...` for the entry's other keys; the gate's (its outcome) repeat, and are cached."""
        try:
            key: Any = tuple(extras.items())
            return self._extras_cache[key]
        except TypeError:  # unhashable values
            key = None
        except KeyError:
            pass
        text = b"," + _redacted_json(extras)[1:-1]
        if key is not None and len(self._extras_cache) < _PART_CACHE_SIZE:
            self._extras_cache[key] = text
        return text

    def _bundles_of(self, revision: Any) -> bytes:
        try:
            return self._revisions[revision]
        except (KeyError, TypeError):
            text = _redacted_json({"ig": {"revision": revision}})
        if type(revision) is str and len(self._revisions) < _PART_CACHE_SIZE:
            self._revisions[revision] = text
        return text

    def flush(self, sync: bool) -> None:
        """Flush the file's buffer (and fsync when `sync`); a failure is logged, not raised."""
        try:
            self._file.flush()
            if sync:
                os.fsync(self._file.fileno())
        except OSError:
            log.exception("decision log %s: flush failed", self.path)

    def close(self) -> None:
        """Close the file (and so its lock, unless another process shares it)."""
        self._file.close()


class DecisionLog:
    """Append decisions without blocking; a background writer encodes and writes the chained JSON lines.

    `base` is the configured path; `path` is the file this log writes, its first free writer slot (the
    module docstring: one file, one chain per writer).

    `writer` chooses where lines are encoded, hashed and written: "thread", a daemon thread of this
    process; or "process", a child process (decision_log_process.py) fed batches of compact tuples, so
    the serving process only queues and forwards (a document logged again is sent by reference). Both
    write the same lines; the request path is the same bounded deque. None: DEFAULT_WRITER.

    `on_drop()` is called once per dropped entry and `on_write(n)` after each written batch
    (both on any thread; GateMetrics.decision_log_dropped / decision_log_written fit). With the writer
    process they follow the child's shared counters, read each time the feeding thread looks (at the
    latest every `POLL_S`) and on flush/close.
    The writer is woken once `WAKE_AT` entries are queued (the writer process's feeder: a full batch,
    `max_batch`, as each of its wake-ups costs a futex, a pipe write and the child's wake-up; at most half
    of `queue_size`) and otherwise
    looks every `POLL_S` (so an entry reaches the file within about POLL_S, and a busy server wakes it
    once per WAKE_AT entries instead of once per entry); it takes at most `max_batch` entries at a time
    and lets the serving threads have the GIL in between. It flushes whenever the queue runs
    empty, at the latest every `flush_interval_s` while busy, and on close() (which also fsyncs).
    """

    def __init__(
        self,
        path: str | Path,
        queue_size: int = 10_000,
        on_drop: Callable[[], None] | None = None,
        on_write: Callable[[int], None] | None = None,
        *,
        labels: Mapping[str, str] | None = None,
        flush_interval_s: float = 1.0,
        max_batch: int | None = None,  # None: 32 for the thread (~0.2 ms of GIL), 256 for the process
        autostart: bool = True,  # False: the writer starts with start() (or flush/close)
        writer: str | None = None,
    ) -> None:
        self.writer = writer or DEFAULT_WRITER
        if self.writer not in WRITERS:
            expected = " or ".join(WRITERS)
            raise DecisionLogError(f"decision log writer {self.writer!r}: expected {expected}")
        self.path = Path(path)
        # (time, entry), (time, *append_decision arguments) and _Barrier markers
        self._pending: deque[Any] = deque()
        self._queue_size = queue_size
        self._wake = threading.Event()
        self._on_drop = on_drop
        self._on_write = on_write
        all_labels = {"app": "ig-gate", "id": str(uuid.uuid4()), "version": _package_version()}
        all_labels.update(labels or {})
        self._flush_interval_s = flush_interval_s
        self._max_batch = max_batch or (32 if self.writer == "thread" else 256)
        # at the latest when half the queue is taken, so that a small queue does not fill between looks
        self._wake_at = max(1, min(WAKE_AT if self.writer == "thread" else self._max_batch, queue_size // 2))
        self.dropped = 0
        self.written = 0
        self._closed = False
        self.base = self.path
        try:
            self.path, fd = _claim(self.base)
            file = os.fdopen(fd, "ab", buffering=1 << 16)
            self._sink: Any = (
                _ThreadSink(ChainWriter(self.path, file, all_labels)) if self.writer == "thread"
                else _process_sink(self.path, file, all_labels)
            )  # fmt: skip
        except OSError as exc:
            raise DecisionLogError(f"decision log {self.path}: cannot open: {exc.strerror or exc}") from exc
        self._thread = threading.Thread(target=self._run, name=f"decision-log:{self.path.name}", daemon=True)
        self._start_lock = threading.Lock()
        if autostart:
            self.start()

    # -- request path -----------------------------------------------------------------------------

    def append(self, entry: Mapping[str, Any]) -> bool:
        """Queue one decision (never blocks); False when it was dropped. The dict and the values in it must
        not change later (they are encoded on the writer thread, a dict or list logged again from its
        cache)."""
        return self._queue((time.time(), entry))

    def append_decision(
        self, decision_id: str, path: str, input: Any, result: Any, revision: str | None, outcome: str
    ) -> bool:
        """append({"decision_id", "path", "input", "result", "revision", "outcome"}), the gate's entry on
        every request, without building the dict; the same line is written."""
        return self._queue((time.time(), decision_id, path, input, result, revision, outcome))

    def _queue(self, item: tuple[Any, ...]) -> bool:
        pending = self._pending
        if not self._closed and len(pending) < self._queue_size:
            pending.append(item)
            if len(pending) == self._wake_at:
                self._wake.set()
            return True
        self._count_drop()
        return False

    # -- writer thread (the feeding thread of the writer process) ---------------------------------

    def _run(self) -> None:
        pending, last_flush, sink = self._pending, time.monotonic(), self._sink
        while True:
            self._wake.clear()
            if not pending:
                self._report(*sink.poll())
                self._wake.wait(min(POLL_S, self._flush_interval_s))
                continue
            popleft = pending.popleft
            entries: list[Any] = [popleft() for _ in range(min(len(pending), self._max_batch))]
            barriers: list[_Barrier] = []
            if _Barrier in set(map(type, entries)):
                barriers = [item for item in entries if type(item) is _Barrier]
                entries = [item for item in entries if type(item) is not _Barrier]
            stop = any(barrier.stop for barrier in barriers)
            try:
                self._report(*sink.write(entries))
            except Exception:  # a failing hook must not stop the writer
                log.exception("decision log %s: writing a batch failed", self.path)
            if barriers or not pending or time.monotonic() - last_flush >= self._flush_interval_s:
                sink.flush(sync=stop, barrier=bool(barriers))
                last_flush = time.monotonic()
                if barriers:
                    self._report(*sink.poll())
            for barrier in barriers:
                barrier.done.set()
            if stop:
                for _ in range(len(pending)):  # appended while close() ran
                    self._count_drop()
                return
            if pending:
                time.sleep(0)  # the GIL goes to a serving thread between batches

    def _report(self, written: int, dropped: int) -> None:
        if written:
            self.written += written
            if self._on_write is not None:
                self._on_write(written)
        for _ in range(dropped):
            self._count_drop()

    def _count_drop(self) -> None:
        self.dropped += 1
        if self._on_drop is not None:
            self._on_drop()

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer (idempotent; entries queued before it are written then): the thread, and with
        the writer process the child."""
        with self._start_lock:
            if self._thread.ident is None:
                try:
                    self._sink.start()
                except OSError as exc:
                    raise DecisionLogError(
                        f"decision log {self.path}: cannot start the writer process ({exc}); "
                        "decision_log.writer: thread writes from the serving process instead"
                    ) from exc
                self._thread.start()

    def _barrier(self, stop: bool, timeout_s: float) -> None:
        """Queue a marker behind every entry queued so far and wait until the writer passed it."""
        self.start()
        barrier = _Barrier(stop)
        self._pending.append(barrier)
        self._wake.set()
        if not barrier.done.wait(timeout_s):
            raise DecisionLogError(f"decision log {self.path}: writer busy for {timeout_s}s")

    def flush(self, timeout_s: float = 10.0) -> None:
        """Block until every entry queued so far is written and flushed."""
        if not self._closed:
            self._barrier(stop=False, timeout_s=timeout_s)

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop accepting entries, drain the queue, fsync, and join the writer (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._barrier(stop=True, timeout_s=timeout_s)
        self._thread.join(timeout_s)
        self._sink.close(timeout_s)

    def __enter__(self) -> DecisionLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _ThreadSink:
    """The writer thread's sink: the ChainWriter itself, in this process."""

    def __init__(self, chain: ChainWriter) -> None:
        self._chain = chain
        self.write = chain.write

    def start(self) -> None:
        """Nothing to start: the writer thread is the DecisionLog's."""

    def poll(self) -> tuple[int, int]:
        """Counts arrive with write(): none here."""
        return 0, 0

    def flush(self, sync: bool, barrier: bool) -> None:
        """Flush the file (fsync when `sync`)."""
        self._chain.flush(sync)

    def close(self, timeout_s: float) -> None:
        """Close the file, which releases its lock."""
        self._chain.close()


def _process_sink(path: Path, file: Any, labels: Mapping[str, str]) -> Any:
    from ig_gate.middleware.decision_log_process import WriterProcess  # it imports this module

    return WriterProcess(path, file, labels)


def log_files(target: str | Path) -> list[Path]:
    """The decision logs `target` names: a file; a directory (its `*.jsonl` files, not recursive); or a
    glob pattern (`logs/decisions*.jsonl`). Sorted. Raises FileNotFoundError when it names nothing."""
    path = Path(target)
    if path.is_dir():
        found = sorted(p for p in path.glob("*.jsonl") if p.is_file())
        if not found:
            raise FileNotFoundError(errno.ENOENT, "no *.jsonl decision logs in this directory", str(path))
        return found
    if path.exists() or not glob.has_magic(str(target)):
        return [path]
    found = sorted(Path(p) for p in glob.glob(str(target)) if Path(p).is_file())
    if not found:
        raise FileNotFoundError(errno.ENOENT, "no file matches this pattern", str(target))
    return found


def verify_chain(path: str | Path) -> ChainReport:
    """Check every line's entry_hash and prev_hash; report the first bad line (1-based).

    Raises OSError when the file cannot be read.
    """
    expected, entries = GENESIS, 0
    with Path(path).open("rb") as f:
        for number, raw in enumerate(f, start=1):
            line = raw[:-1] if raw.endswith(b"\n") else raw
            problem = _line_problem(line, complete=raw.endswith(b"\n"), expected_prev=expected)
            if problem:
                return ChainReport(False, entries, number, problem, expected)
            expected, entries = _sha256(line), entries + 1
    return ChainReport(True, entries, None, "chain verifies", expected)


def _line_problem(line: bytes, *, complete: bool, expected_prev: str) -> str:
    """Why a line breaks the chain ("" when it is fine)."""
    if not complete:
        return "truncated line (no newline at end of file)"
    match = _ENTRY_HASH_SUFFIX.fullmatch(line[-_SUFFIX_LEN:])
    if match is None:
        return "garbled line (no entry_hash at its end)"
    body = line[:-_SUFFIX_LEN] + b"}"
    if _sha256(body) != match.group(1).decode():
        return "edited line (entry_hash does not match its content)"
    try:
        record = json.loads(body)
    except ValueError:
        return "garbled line (not JSON)"
    if not isinstance(record, dict) or not isinstance(record.get("prev_hash"), str):
        return "garbled line (no prev_hash)"
    if record["prev_hash"] != expected_prev:
        return (
            "prev_hash does not match the line before "
            "(a line was removed, reordered or inserted, or the line before was rewritten)"
        )
    return ""
