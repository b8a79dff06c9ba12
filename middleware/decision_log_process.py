"""The decision log's writer process: the serving process forwards compact tuples, a child writes the chain.

The serving process (WriterProcess, driven by DecisionLog's feeding thread) turns each batch of queued
entries into one frame on the child's stdin pipe: `<header><marshal payload>`, the gate's entries column
by column (a few C-level passes per batch, no Python work per entry beyond the queue's). A dict or list
logged again (the gate's memoized input documents and policy results) is sent once as JSON and then by
number; other values are sent as JSON (unredacted: the child redacts, as the writer thread does). The
pipe is non-blocking for the serving threads: while it is full (the child is behind) the feeding thread
waits and entries stay in DecisionLog's bounded queue, where new ones are dropped and counted once it is
full.

The child (`python -m ig_gate.middleware.decision_log_process PATH`) inherits the writer slot's file
descriptor, so the slot's flock stays held by the serving process across child restarts, and runs
ChainWriter: it redacts, encodes, chains and writes each frame (ChainWriter.write_columns: a line is
spliced from parts cached per document number, one SHA-256 pass), flushes after each frame (a killed child
loses no line it counted), fsyncs on a sync frame and at end of input, and publishes its counts (written,
failed, last flush number) in a shared memory page the parent reads when it polls.

If the child dies, the parent logs it once, counts as dropped what the child had not written, and starts
a new one at most once every RESTART_S (batches in between are dropped and counted); the new child
continues the chain after the last complete line (a line torn by the death is kept and reported by
`ig-gate decisions verify`). Requests never wait on any of this.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import json
import logging
import marshal
import mmap
import os
import select
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

from ig_gate.middleware.decision_log import (
    POLL_S,
    ChainWriter,
    ObjectMemo,
    _dumps,
    _may_hold_secret,
    redact,
)

log = logging.getLogger(__name__)

HEADER = struct.Struct("<IBQ")  # payload length, flags, flush number
FLUSH, SYNC = 1, 2  # header flags: flush and publish the flush number; fsync too
COUNTS = struct.Struct("<QQQ")  # shared page: written, failed, last flush number
RESTART_S = 1.0  # the shortest time between two child starts
FLUSH_WAIT_S = 30.0  # the longest a flush waits for the child (the caller's own timeout is shorter)
PIPE_BYTES = 1 << 20  # asked for the pipe (Linux F_SETPIPE_SZ; capped by /proc/sys/fs/pipe-max-size)
_F_SETPIPE_SZ = 1031


class WriterProcess:
    """The serving process's end: the child, its pipe and its counts (DecisionLog's feeding thread only)."""

    def __init__(self, path: Path, file: BinaryIO, labels: Mapping[str, str]) -> None:
        self.path = path
        self._file = file  # kept open: its flock is shared with the child and outlives restarts
        self._labels = json.dumps(dict(labels))
        self._counts_fd = os.memfd_create("ig-gate-decision-log-counts")
        os.ftruncate(self._counts_fd, mmap.PAGESIZE)
        self._counts = mmap.mmap(self._counts_fd, mmap.PAGESIZE)
        self._child: subprocess.Popen[bytes] | None = None
        self._pipe = -1
        self._refs = ObjectMemo()  # object -> the number the child knows it by
        self._numbers = itertools.count(1)
        self._floor = 1  # the lowest number the cache may still hold: the child may forget those below
        self._flushes = itertools.count(1)
        self._sent = 0  # entries sent to the current child
        self._seen = (0, 0)  # its counts already reported
        self._backlog = (0, 0)  # (written, dropped) of dead children not reported yet
        self._started_at = -RESTART_S

    # -- child ------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the child (again, after a death: not sooner than RESTART_S after the last start)."""
        self._started_at = time.monotonic()
        COUNTS.pack_into(self._counts, 0, 0, 0, 0)
        self._refs.clear()
        self._sent = 0
        fd = self._file.fileno()
        self._child = subprocess.Popen(
            [sys.executable, "-m", __name__, str(self.path), str(fd), str(self._counts_fd), self._labels],
            stdin=subprocess.PIPE,
            pass_fds=(fd, self._counts_fd),
        )
        assert self._child.stdin is not None
        self._pipe = self._child.stdin.fileno()
        with contextlib.suppress(OSError):  # a larger pipe absorbs bursts; the default 64 KiB works too
            fcntl.fcntl(self._pipe, _F_SETPIPE_SZ, PIPE_BYTES)
        os.set_blocking(self._pipe, False)

    def _alive(self) -> bool:
        """Whether the child runs; a dead one is logged once and replaced when RESTART_S allows."""
        child = self._child
        if child is not None and child.poll() is None:
            return True
        if child is not None:
            written, failed, _ = COUNTS.unpack_from(self._counts)
            lost = self._sent - written - failed
            (seen_written, seen_failed), (old_written, old_dropped) = self._seen, self._backlog
            self._backlog = (old_written + written - seen_written, old_dropped + failed - seen_failed + lost)
            self._seen = (0, 0)
            COUNTS.pack_into(self._counts, 0, 0, 0, 0)
            log.error(
                "decision log %s: writer process %d exited with %s; %d entries lost; restarting",
                self.path, child.pid, child.returncode, lost,
            )  # fmt: skip
            with contextlib.suppress(OSError):
                child.stdin.close()  # type: ignore[union-attr]
            self._child = None
        if time.monotonic() - self._started_at < RESTART_S:
            return False
        try:
            self.start()
        except OSError:
            log.exception("decision log %s: cannot start the writer process", self.path)
            return False
        return True

    # -- sink interface (DecisionLog._run) --------------------------------------------------------

    def write(self, entries: list[tuple[Any, ...]]) -> tuple[int, int]:
        """Send one batch as one frame: (written, dropped) now known (written ones come with poll())."""
        written, dropped = self.poll()
        if self._child is None:  # dead, not restarted yet
            return written, dropped + len(entries)
        defined: list[int] = []
        payload, sent, failed = self._frame(entries, defined)
        if sent and not self._send(payload, 0, 0):
            for key in defined:  # the child never saw them
                self._refs.forget(key)
            return written, dropped + failed + sent
        self._sent += sent
        return written, dropped + failed

    def poll(self) -> tuple[int, int]:
        """The child's new counts since the last poll: (written, dropped)."""
        self._alive()  # first: a dead child's last counts go to the backlog
        written, failed, _ = COUNTS.unpack_from(self._counts)
        (seen_written, seen_failed), (old_written, old_dropped) = self._seen, self._backlog
        self._seen, self._backlog = (written, failed), (0, 0)
        return old_written + written - seen_written, old_dropped + failed - seen_failed

    def flush(self, sync: bool, barrier: bool) -> None:
        """For a barrier (flush/close), wait until the child wrote and flushed everything sent so far."""
        if not barrier or not self._alive():
            return
        number = next(self._flushes)
        deadline = time.monotonic() + FLUSH_WAIT_S
        if not self._send(b"", FLUSH | (SYNC if sync else 0), number):
            return
        pause = 0.0002
        while COUNTS.unpack_from(self._counts)[2] < number:
            if self._child is None or self._child.poll() is not None or time.monotonic() > deadline:
                log.error("decision log %s: the writer process did not confirm a flush", self.path)
                return
            time.sleep(pause)  # polling the child's page with a deadline
            pause = min(pause * 2, 0.005)

    def close(self, timeout_s: float) -> None:
        """End the child's input (it drains, fsyncs and exits), wait for it, release the file and page."""
        child = self._child
        if child is not None:
            with contextlib.suppress(OSError):
                child.stdin.close()  # type: ignore[union-attr]
            try:
                child.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.error("decision log %s: the writer process did not exit; killed", self.path)
                child.kill()
                child.wait()
        self._file.close()
        self._counts.close()
        os.close(self._counts_fd)

    # -- frames -----------------------------------------------------------------------------------

    def _frame(
        self, entries: list[tuple[Any, ...]], defined: list[int], retry: bool = True
    ) -> tuple[bytes, int, int]:
        """The batch as one marshalled payload `(definitions, segments, floor)`; with how many entries it
        holds and how many could not be encoded (logged). Definitions are `(number, JSON)` of the dicts
        and lists logged for the first time; a segment is a run of append_decision() items as a tuple of
        columns (inputs and results by number; other values as JSON), or a run of append() items as a
        list of `(time, JSON of the entry)`; after the frame the child may forget numbers below `floor`
        (this frame may still use some: it looked them up before the cache was cleared)."""
        definitions: list[tuple[int, bytes]] = []
        segments: list[Any] = []
        sent = failed = 0
        for kind, run in itertools.groupby(entries, len):
            run = list(run)
            segment, bad = self._entries(run) if kind == 2 else self._columns(run, definitions, defined)
            segments.append(segment)
            sent, failed = sent + len(run) - bad, failed + bad
        try:
            return marshal.dumps((definitions, segments, self._floor)), sent, failed
        except ValueError:  # a value marshal refuses (another type): such entries go as append() items
            if not retry:
                raise
            for key in defined:
                self._refs.forget(key)
            defined.clear()
            entries = [
                _as_entry(entry) if len(entry) == 7 and not _marshals(entry) else entry for entry in entries
            ]
            return self._frame(entries, defined, retry=False)

    def _entries(self, run: list[tuple[Any, ...]]) -> tuple[list[tuple[float, bytes]], int]:
        """append() items as (time, JSON of the entry), and how many could not be encoded."""
        items = []
        for ts, entry in run:
            try:
                items.append((ts, _dumps(entry)))
            except Exception:
                decision_id = entry.get("decision_id") if isinstance(entry, Mapping) else None
                log.exception("decision log %s: entry %s not written", self.path, decision_id)
        return items, len(run) - len(items)

    def _columns(
        self, run: list[tuple[Any, ...]], definitions: list[tuple[int, bytes]], defined: list[int]
    ) -> tuple[tuple[Any, ...], int]:
        """append_decision() items as seven columns, and how many could not be encoded."""
        columns = list(zip(*run, strict=True))
        bad: set[int] = set()
        for column in (3, 4):
            refs = self._refs.get_all(columns[column])
            if None in refs:  # logged for the first time, or not a dict or list
                self._define(columns[column], refs, definitions, defined, bad)
            columns[column] = refs
        if bad:
            columns = [[value for i, value in enumerate(column) if i not in bad] for column in columns]
        return tuple(columns), len(bad)

    def _define(
        self, values: tuple[Any, ...], refs: list[Any], definitions: list[tuple[int, bytes]],
        defined: list[int], bad: set[int],
    ) -> None:
        """Fill in `refs` where None: a dict or list gets a number (defined once, with its JSON), anything
        else goes as JSON; the index of a value that cannot be encoded goes to `bad` (logged)."""
        for i, ref in enumerate(refs):
            if ref is not None:
                continue
            value = values[i]
            try:
                if type(value) is not dict and type(value) is not list:
                    refs[i] = _dumps(value)
                    continue
                number = self._refs.get(value)  # defined earlier in this batch
                if number is None:
                    text = _dumps(value)
                    number = next(self._numbers)
                    if self._refs.put(value, number):  # cleared first: the numbers below are gone
                        self._floor = number
                    defined.append(id(value))
                    definitions.append((number, text))
                refs[i] = number
            except Exception:
                log.exception("decision log %s: an entry not written (its input or result)", self.path)
                bad.add(i)

    def _send(self, payload: bytes, flags: int, number: int) -> bool:
        """Write one frame, waiting while the pipe is full (this is the feeding thread: requests queue
        meanwhile, and drop once the queue is full); False when the child is gone."""
        frame = memoryview(HEADER.pack(len(payload), flags, number) + payload)
        while frame:
            try:
                frame = frame[os.write(self._pipe, frame):]
            except BlockingIOError:
                select.select([], [self._pipe], [], POLL_S)
                if self._child is None or self._child.poll() is not None:
                    return False
            except OSError as exc:  # EPIPE: the child is gone; poll() notices and counts
                if exc.errno != errno.EPIPE:
                    log.exception("decision log %s: writing to the writer process failed", self.path)
                return False
        return True


def _marshals(entry: tuple[Any, ...]) -> bool:
    """Whether an append_decision() item's values other than its input and result marshal."""
    try:
        marshal.dumps(entry[:3] + entry[5:])
    except ValueError:
        return False
    return True


def _as_entry(entry: tuple[Any, ...]) -> tuple[Any, ...]:
    """An append_decision() item as the append() item that is written as the same line."""
    ts, decision_id, path, document, result, revision, outcome = entry
    return (ts, {
        "decision_id": decision_id, "path": path, "input": document, "result": result,
        "revision": revision, "outcome": outcome, "timestamp": ts,
    })  # fmt: skip


# -- the child ----------------------------------------------------------------------------------------


def _redacted(text: bytes) -> bytes:
    """JSON from the serving process, redacted as _redacted_json would (decoded only when a hint is seen)."""
    if _may_hold_secret(text):
        text = _dumps(redact(json.loads(text)))
    return text


class _Documents:
    """The child's documents by number, as many as the parent's cache holds (it says which to forget)."""

    def __init__(self) -> None:
        self._texts: dict[int, bytes] = {}
        self._floor = 0

    def define(self, definitions: list[tuple[int, bytes]]) -> None:
        for number, text in definitions:
            self._texts[number] = _redacted(text)

    def forget_below(self, floor: int) -> None:
        if floor > self._floor:
            self._floor = floor
            self._texts = {k: v for k, v in self._texts.items() if k >= floor}

    def text(self, ref: Any) -> bytes:
        """A document's redacted JSON: by number, or sent as JSON."""
        return self._texts[ref] if type(ref) is int else _redacted(ref)


def _write_frame(chain: ChainWriter, documents: _Documents, payload: bytes) -> tuple[int, int]:
    """Write one frame's entries: (written, failed)."""
    definitions, segments, floor = marshal.loads(payload)
    documents.define(definitions)
    written = failed = 0
    for segment in segments:
        if type(segment) is tuple:  # append_decision() items, column by column
            done, bad = chain.write_columns(segment, documents.text)
        else:
            # the json module: orjson would read integers beyond 64 bits as floats (append() is rare)
            done, bad = chain.write([(ts, json.loads(text)) for ts, text in segment])
        written, failed = written + done, failed + bad
    documents.forget_below(floor)
    return written, failed


def _read(stream: BinaryIO, size: int) -> bytes | None:
    data = stream.read(size)
    return data if len(data) == size else None


def main(argv: list[str]) -> int:
    """The child: write the frames arriving on stdin to the inherited log file until end of input."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent closes us
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    path, log_fd, counts_fd, labels = Path(argv[0]), int(argv[1]), int(argv[2]), json.loads(argv[3])
    counts = mmap.mmap(counts_fd, mmap.PAGESIZE)
    chain = ChainWriter(path, os.fdopen(log_fd, "ab", buffering=1 << 16), labels)
    documents = _Documents()
    stream = os.fdopen(sys.stdin.fileno(), "rb", buffering=1 << 20)
    written = failed = flushed = 0
    while (header := _read(stream, HEADER.size)) is not None:
        size, flags, number = HEADER.unpack(header)
        payload = _read(stream, size) if size else b""
        if payload is None:
            break
        if payload:
            done, bad = _write_frame(chain, documents, payload)
            written, failed = written + done, failed + bad
        chain.flush(sync=bool(flags & SYNC))
        flushed = number if flags & FLUSH else flushed
        COUNTS.pack_into(counts, 0, written, failed, flushed)
    chain.flush(sync=True)
    chain.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
