"""DatasetWriter: the recorder the live stream manager taps, and its background writer.

Threads and hand-offs::

    event loop ── on_raw / on_messages ──► deques (append only: ~0.1 µs, never blocks)
                                              │
    writer thread (every flush_interval) ◄────┘  group by (table, provider), convert to
        Arrow, split at UTC midnight, sort if needed, append one checksummed unit per
        (table, provider, date) to its journal segment, fsync; roll segments on time,
        size, midnight, disorder, shutdown ──► seal queue
    sealer thread ◄── seal queue: segment → Parquet (temp name, move into place), then
        remove the segment; first of all, seal segments left by dead writers.

Back-pressure and failures: the event loop only appends and counts estimated bytes.
If journal writes fail (ENOSPC, EACCES, EIO...) the converted batches stay in memory
(the *backlog*) and writing is retried every ``retry_interval``; a status event and a
stat record the failure, and another the recovery. When the backlog and queues exceed
``memory_budget``, the oldest batches are dropped, counted, and a ``gap`` status event
with the dropped ``ts_recv`` range is recorded (in the ``events`` table, which is never
dropped). If the writer thread stops draining altogether (a hung disk), the event loop
drops the oldest queued items itself once the queues alone exceed the budget.

Status events produced by storage have ``conn = -1`` and a ``reason`` starting with
``storage:``. They are recorded in the ``events`` table of the provider concerned and
passed to ``on_status`` (on the storage thread, or via ``loop.call_soon_threadsafe``
if ``loop`` is given).
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import itertools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from ..clock import recv_ns
from ..message import StreamMessage
from .convert import from_messages, raw_batch
from .fs import StorageFS
from .journal import SegmentWriter
from .layout import DAY_NS, check_writer_id, day_of, default_writer_id, list_segments, partition_dir, segment_name
from .schema import KIND_TABLE, PARQUET_DEFAULTS
from .seal import is_sorted, key_columns, seal_segment, sort_batch

log = logging.getLogger("wrdata.storage")

MiB = 1024 * 1024
# Rough in-memory cost of queued items, for the budget (the writer replaces these by
# exact Arrow sizes once converted). A StreamMessage is ~400 bytes with its list slot.
_MSG_EST = 400
_RAW_EST = 160
_NEVER_DROP = ("events",)
_RAW_BATCH_BYTES = 256 * MiB  # raw payloads per Arrow batch (binary arrays hold < 2 GiB)

# what converting a message to Arrow raises for a value its column cannot hold; OverflowError
# is an int beyond int64 (an id or time from a hostile frame): uncaught, it cost the whole
# writer cycle, every table's rows of it, silently
_UNCONVERTIBLE = (pa.ArrowException, TypeError, ValueError, AttributeError, IndexError, OverflowError)

FsyncPolicy = Literal["flush", "seal", "never"]
_FSYNC_ALIASES = {"batch": "flush", "always": "flush", "none": "never", "off": "never", "close": "seal"}


@dataclass(slots=True)
class TableStats:
    """Counters for one (provider, table). Updated by the storage threads, read by anyone."""

    rows: int = 0  # rows journaled
    bytes_journal: int = 0  # bytes appended to journal segments
    rows_sealed: int = 0
    bytes_sealed: int = 0  # bytes of sealed Parquet files
    files_sealed: int = 0
    write_errors: int = 0  # failed journal writes and seals
    dropped: int = 0  # rows dropped (memory budget, rejected input)
    rejected: int = 0  # rows that could not be converted (bad field types): logged, dropped
    received: int = 0  # raw only: frames received (direction "in"), counted as the writer takes them or the budget drops them
    last_error: str | None = None


@dataclass
class StorageStats:
    tables: dict[tuple[str, str], TableStats] = field(default_factory=dict)
    queued_bytes: int = 0  # estimated bytes queued by the event loop, not yet taken by the writer
    backlog_bytes: int = 0  # converted data waiting for a journal write
    segments_open: int = 0
    seal_pending: int = 0  # segments closed and waiting to be sealed
    recovered_segments: int = 0
    torn_bytes: int = 0  # bytes cut off torn/corrupt journal tails at recovery
    late_rolls: int = 0  # segments rolled early because rows arrived out of order
    failing: bool = False  # journal writes or seals are currently failing
    last_flush_ns: int = 0
    last_error: str | None = None
    # CPU seconds of the writer (convert, journal) and sealer (Parquet) threads; work that
    # Arrow hands to its own thread pool (IPC compression) is not in them
    writer_cpu_s: float = 0.0
    sealer_cpu_s: float = 0.0

    def table(self, provider: str, table: str) -> TableStats:
        key = (provider, table)
        s = self.tables.get(key)
        if s is None:  # setdefault: the writer and sealer threads may race to create it
            s = self.tables.setdefault(key, TableStats())
        return s

    def totals(self) -> TableStats:
        t = TableStats()
        for s in list(self.tables.values()):
            for f in ("rows", "bytes_journal", "rows_sealed", "bytes_sealed", "files_sealed", "write_errors", "dropped", "rejected", "received"):
                setattr(t, f, getattr(t, f) + getattr(s, f))
        return t

    def snapshot(self) -> dict:
        """Plain values for a status view or a metrics exporter."""
        out = {
            k: getattr(self, k)
            for k in (
                "queued_bytes",
                "backlog_bytes",
                "segments_open",
                "seal_pending",
                "recovered_segments",
                "torn_bytes",
                "late_rolls",
                "failing",
                "last_flush_ns",
                "last_error",
                "writer_cpu_s",
                "sealer_cpu_s",
            )
        }
        out["tables"] = {
            f"{p}/{t}": {f: getattr(s, f) for f in TableStats.__dataclass_fields__} for (p, t), s in sorted(list(self.tables.items()))
        }
        return out


@dataclass(slots=True)
class _Piece:
    batch: pa.RecordBatch
    first_ts: int
    last_ts: int
    first_key: tuple
    last_key: tuple
    nbytes: int


@dataclass(slots=True)
class _SealJob:
    path: str
    table: str
    provider: str
    day: int
    writer: str
    reason: str
    attempts: int = 0
    not_before: float = 0.0
    result: object = None


@dataclass(slots=True)
class _Drop:
    count: int = 0
    first_ts: int | None = None
    last_ts: int | None = None
    since: float = 0.0
    last_seen: float = 0.0


class DatasetWriter:
    """Records raw frames and messages into a dataset under ``root``.

    Parameters
    ----------
    root: local path or URI (``s3://bucket/prefix``) of the dataset.
    journal_dir: local directory for journal segments; default ``<root>/_journal``, or
        for a remote root a directory derived from it (:func:`.fs.default_journal_dir`).
    writer_id: unique per process writing the dataset; default ``<host>-<pid>-<start ms>``.
        A fixed id is allowed (e.g. one per daemon): a restarted process recovers the
        segments its predecessor left.
    flush_interval: seconds between journal writes (the most a crash can lose).
    fsync: ``"flush"`` fdatasync the journal after every flush (survives power loss up to
        the last flush); ``"seal"`` only when a segment is closed (survives a process
        crash, which is what the page cache gives); ``"never"`` not even sealed files.
    roll_interval: seconds; segments roll at multiples of it in UTC (3600: on the hour).
    roll_bytes: roll a segment once its journal file reaches this size.
    memory_budget: bytes of queued and unwritten data kept while writes fail.
    filesystem: pyarrow filesystem or URI for sealed files (the journal stays local).
    on_status: called with each storage status event (``StreamMessage(kind="status")``).
    loop: if given, ``on_status`` is called on it via ``call_soon_threadsafe``.
    compression_level: zstd level for sealed files, an int or ``{table: level}``.
    row_group_rows: rows per Parquet row group.
    retry_interval: seconds between retries of failed writes and seals.
    recover: seal segments left by dead writers at start (and every ``recover_interval``).
    midnight_grace: seconds after UTC midnight before the previous day's segments are
        sealed (rows received just before midnight may still be queued); default
        ``2 * flush_interval``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        journal_dir: str | os.PathLike | None = None,
        writer_id: str | None = None,
        flush_interval: float = 1.0,
        fsync: FsyncPolicy = "flush",
        roll_interval: float = 3600.0,
        roll_bytes: int = 256 * MiB,
        memory_budget: int = 512 * MiB,
        filesystem: pafs.FileSystem | str | None = None,
        on_status: Callable[[StreamMessage], None] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        compression_level: int | dict[str, int] | None = None,
        row_group_rows: int | None = None,
        retry_interval: float = 1.0,
        recover: bool = True,
        recover_interval: float = 60.0,
        midnight_grace: float | None = None,
    ) -> None:
        fsync = _FSYNC_ALIASES.get(fsync, fsync)  # type: ignore[assignment]
        if fsync not in ("flush", "seal", "never"):
            raise ValueError(f"bad fsync policy {fsync!r}: expected 'flush' (alias 'batch', 'always'), 'seal' or 'never' (alias 'none', 'off')")
        for name, v in (("flush_interval", flush_interval), ("roll_interval", roll_interval), ("retry_interval", retry_interval)):
            if not v > 0:
                raise ValueError(f"{name} must be positive, got {v!r}")
        if roll_bytes <= 0 or memory_budget <= 0:
            raise ValueError("roll_bytes and memory_budget must be positive")
        self.fs = StorageFS(root, journal_dir, filesystem, fsync=fsync != "never")
        self.root = self.fs.root
        self.journal_dir = self.fs.journal_dir
        self.writer_id = check_writer_id(writer_id or default_writer_id())
        self.flush_interval = float(flush_interval)
        self.fsync = fsync
        self.roll_ns = int(roll_interval * 1e9)
        self.roll_bytes = int(roll_bytes)
        self.memory_budget = int(memory_budget)
        self.on_status = on_status
        self.loop = loop
        if isinstance(compression_level, int) or compression_level is None:
            self._levels = {t: compression_level for t in PARQUET_DEFAULTS["compression_level"]}
        elif not isinstance(compression_level, dict):
            raise ValueError(f"compression_level must be a zstd level or {{table: level}}, got {compression_level!r}")
        else:
            unknown = set(compression_level) - set(PARQUET_DEFAULTS["compression_level"])
            if unknown:
                raise ValueError(f"compression_level: unknown table(s) {sorted(unknown)}")
            self._levels = {t: compression_level.get(t) for t in PARQUET_DEFAULTS["compression_level"]}
        for t, lv in self._levels.items():
            # checked here, not when the first seal fails an hour from now
            if lv is not None and (isinstance(lv, bool) or not isinstance(lv, int) or not 1 <= lv <= 22):
                raise ValueError(f"compression_level of {t} must be a zstd level from 1 to 22, got {lv!r}")
        self.row_group_rows = row_group_rows
        self.retry_interval = float(retry_interval)
        self.recover = recover
        self.recover_interval = float(recover_interval)
        self.midnight_grace_ns = int((midnight_grace if midnight_grace is not None else 2 * flush_interval) * 1e9)
        self.stats = StorageStats()

        # event loop → writer
        self._rawq: deque = deque()
        self._msgq: deque = deque()
        self._ctl: deque = deque()  # flush markers (threading.Event)
        self._in_bytes = 0  # written by the event loop only
        self._out_bytes = 0  # written by the writer thread only
        self._wake_at = min(self.memory_budget, max(256 * 1024, min(self.memory_budget // 4, 64 * MiB)))
        self._woken = False
        self._loop_drops: deque = deque()  # (provider, table, count, first_ts, last_ts, frames in) dropped by the event loop
        self._evq: deque = deque()  # status events raised on the sealer thread
        self._accepting = True
        self._after_close = 0

        # writer thread state
        self._segments: dict[tuple[str, str, int], SegmentWriter] = {}
        self._backlog: dict[tuple[str, str, int], deque[_Piece]] = {}
        self._backlog_bytes = 0
        self._retry_at = 0.0
        self._failing_since: float | None = None
        self._fail_reported: set[tuple[str, str]] = set()
        self._drops: dict[tuple[str, str], _Drop] = {}
        self._event_seq = itertools.count()
        self._seg_counter = itertools.count()
        self._warned: set[str] = set()
        self._pending_markers: list = []  # flush/roll markers not yet satisfied
        self._hwm: dict[tuple[str, str], int] = {}  # highest ts_recv seen per (table, provider)

        # sealer thread state
        self._seal_q: deque[_SealJob] = deque()
        self._seal_wake = threading.Event()
        self._seal_failing: set[str] = set()
        self._first_scan_done = threading.Event()  # the start-up recovery has run

        self._wake = threading.Event()
        self._stop = threading.Event()
        self._seal_stop = threading.Event()
        self._writer_thread: threading.Thread | None = None
        self._sealer_thread: threading.Thread | None = None
        self._lock_fd: int | None = None
        self._leftovers: list = []
        self._started = False
        self._closed = False
        self._close_deadline = float("inf")
        self._state_lock = threading.Lock()

    # ------------------------------------------------------------------------------------
    # the tap (event loop thread): append and count, nothing else

    def on_raw(
        self, provider: str, conn: int, seq: int, ts_recv: int, direction: str, url: str, payload: bytes, status: int | None = None
    ) -> None:
        """Record one frame (``direction``: ``in``, ``out``, ``rest`` (with its HTTP ``status``), ``event``)."""
        if not self._accepting:
            self._after_close += 1
            return
        if status is None:
            self._rawq.append((provider, conn, seq, ts_recv, direction, url, payload))
        else:
            self._rawq.append((provider, conn, seq, ts_recv, direction, url, payload, status))
        self._in_bytes += len(payload) + _RAW_EST
        if self._in_bytes - self._out_bytes > self._wake_at:
            self._pressure()

    def on_messages(self, msgs: list[StreamMessage]) -> None:
        """Record the messages parsed from one frame (kinds trade, quote, bar, book, status)."""
        if not msgs:
            return
        if not self._accepting:
            self._after_close += len(msgs)
            return
        # the messages, not the list: the caller may reuse its list, and queued lists
        # would be GC-tracked containers that make every full collection slower (2x the
        # tap cost in bench/storage_recorder.py); StreamMessages are not GC-tracked
        self._msgq.extend(msgs)
        self._in_bytes += len(msgs) * _MSG_EST
        if self._in_bytes - self._out_bytes > self._wake_at:
            self._pressure()

    def record(self, msg: StreamMessage) -> None:
        """Record one message (convenience for code outside the hot path)."""
        self.on_messages([msg])

    def _pressure(self) -> None:
        if not self._woken:
            self._woken = True
            self._wake.set()
        queued = self._in_bytes - self._out_bytes
        if queued > self.memory_budget:
            # the writer is not draining (hung disk, or far behind): drop the oldest
            # queued items here so memory stays bounded; the writer records the gap
            self._drop_queued(queued - self.memory_budget * 9 // 10)

    def _drop_queued(self, need: int) -> None:
        freed = 0
        acc: dict[tuple[str, str], list] = {}
        while freed < need:
            item = None
            for q in (self._msgq, self._rawq):
                try:
                    item = q.popleft()
                    break
                except IndexError:
                    continue
            if item is None:
                break
            if isinstance(item, tuple):
                freed += len(item[6]) + _RAW_EST
                a = acc.setdefault((item[0], "raw"), [0, item[3], item[3], 0])
                a[0] += 1
                a[1] = min(a[1], item[3])
                a[2] = max(a[2], item[3])
                a[3] += item[4] == "in"
            else:
                m = item
                freed += _MSG_EST
                a = acc.setdefault((m.provider, KIND_TABLE.get(m.kind, "events")), [0, m.ts_recv, m.ts_recv, 0])
                a[0] += 1
                a[1] = min(a[1], m.ts_recv)
                a[2] = max(a[2], m.ts_recv)
        self._in_bytes -= freed
        for (p, t), (n, lo, hi, n_in) in acc.items():
            self._loop_drops.append((p, t, n, lo, hi, n_in))

    # ------------------------------------------------------------------------------------
    # lifecycle

    def start(self) -> DatasetWriter:
        """Take this writer's lock, start the writer and sealer threads (which first seal
        segments left by dead writers). Returns self."""
        with self._state_lock:
            if self._started:
                return self
            if self._closed:
                raise RuntimeError("DatasetWriter was closed; create a new one")
            # a remote store that cannot be written is a configuration error: say so now
            # (one line), not as seal retries an hour later; the journal is not touched
            self.fs.check_writable()
            os.makedirs(self.journal_dir, exist_ok=True)
            fd = self._try_lock(self.writer_id)
            if fd is None:
                raise RuntimeError(
                    f"writer id {self.writer_id!r} is in use by another live process on journal {self.journal_dir}: "
                    "give each process its own writer_id"
                )
            self._lock_fd = fd
            # a fixed writer id may find its predecessor's segments: recover them, and
            # number new segments after them
            own = list_segments(self.journal_dir, writer=self.writer_id)
            self._leftovers = own
            if own:
                self._seg_counter = itertools.count(max(s.n for s in own) + 1)
            self._writer_thread = threading.Thread(target=self._writer_main, name=f"wrdata-writer-{self.writer_id}", daemon=True)
            self._sealer_thread = threading.Thread(target=self._sealer_main, name=f"wrdata-sealer-{self.writer_id}", daemon=True)
            self._started = True
            self._writer_thread.start()
            self._sealer_thread.start()
            log.info("storage writer %s started: root %s, journal %s", self.writer_id, self.root, self.journal_dir)
        return self

    def __enter__(self) -> DatasetWriter:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until everything recorded before this call is in the journal (or was
        dropped and recorded as a gap). False if that did not happen within ``timeout``
        (e.g. the disk is failing). Blocks the calling thread: from async code use
        :meth:`aflush`."""
        if not self._started:
            raise RuntimeError("DatasetWriter.flush() before start()")
        if self._closed:
            return True
        ev = threading.Event()
        self._ctl.append(ev)
        self._wake.set()
        return ev.wait(timeout)

    def roll(self, timeout: float | None = 30.0) -> bool:
        """Flush, then close every open segment and wait until all are sealed."""
        if not self.flush(timeout):
            return False
        ev = threading.Event()
        self._ctl.append(("roll", ev))
        self._wake.set()
        if not ev.wait(timeout):
            return False
        return self.wait_sealed(timeout)

    def wait_sealed(self, timeout: float | None = 30.0) -> bool:
        """Wait until no segment is waiting to be sealed (recovered ones included)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._started and not self._first_scan_done.wait(timeout):
            return False
        while True:
            with self._state_lock:
                idle = not self._seal_q and self.stats.seal_pending == 0
            if idle:
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            self._seal_wake.set()
            time.sleep(0.01)

    def close(self, timeout: float | None = 60.0) -> None:
        """Stop accepting, journal what is buffered, seal every segment, stop threads.

        Idempotent. If the disk keeps failing until ``timeout``, data still in memory is
        lost (logged, counted as dropped) and unsealed segments stay in the journal for
        the next writer to recover.
        """
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
            self._accepting = False
        if not self._started:
            self._release_lock()
            return
        self._close_deadline = time.monotonic() + (timeout if timeout is not None else 1e9)
        self._stop.set()
        self._wake.set()
        assert self._writer_thread is not None and self._sealer_thread is not None
        self._writer_thread.join(None if timeout is None else max(0.0, self._close_deadline - time.monotonic()) + 1)
        self._seal_stop.set()
        self._seal_wake.set()
        self._sealer_thread.join(None if timeout is None else max(0.0, self._close_deadline - time.monotonic()) + 1)
        if self._evq and not self._writer_thread.is_alive() and not self._sealer_thread.is_alive():
            self._final_events()
        if self._after_close:
            log.warning("storage writer %s: %d items recorded after close() were ignored", self.writer_id, self._after_close)
        self._release_lock()
        log.info("storage writer %s closed: %s", self.writer_id, self.stats.totals())

    def _final_events(self) -> None:
        """Status events raised while sealing at close (after the writer thread ended):
        journal and seal them here, both threads being done."""
        try:
            self._retry_at = 0.0
            self._cycle()
            for key in list(self._segments):
                self._roll(key, "shutdown")
            while self._seal_q:
                job = self._seal_q.popleft()
                self._seal_job(job)
        except Exception:  # noqa: BLE001 - closing must finish
            log.exception("storage: recording the last status events failed")

    async def aflush(self, timeout: float | None = 30.0) -> bool:
        return await asyncio.to_thread(self.flush, timeout)

    async def aclose(self, timeout: float | None = 60.0) -> None:
        await asyncio.to_thread(self.close, timeout)

    # ------------------------------------------------------------------------------------
    # locks: one flock'd file per writer id; a live process holds its own

    def _lock_path(self, writer: str) -> str:
        return os.path.join(self.journal_dir, "_locks", f"{writer}.lock")

    def _try_lock(self, writer: str) -> int | None:
        path = self._lock_path(writer)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return None
            raise
        if writer == self.writer_id:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        return fd

    def _release_lock(self) -> None:
        if self._lock_fd is None:
            return
        if not list_segments(self.journal_dir, writer=self.writer_id):
            try:
                os.remove(self._lock_path(self.writer_id))
            except OSError:
                pass
        os.close(self._lock_fd)  # releases the flock
        self._lock_fd = None

    # ------------------------------------------------------------------------------------
    # writer thread

    def _writer_main(self) -> None:
        next_flush = time.monotonic() + self.flush_interval
        while True:
            self._wake.wait(max(0.0, next_flush - time.monotonic()))
            self._wake.clear()
            stopping = self._stop.is_set()
            try:
                self._cycle()
            except Exception as e:  # noqa: BLE001 - the writer must survive its own bugs
                log.exception("storage writer cycle failed")
                self.stats.last_error = f"writer cycle: {e!r}"
            self.stats.writer_cpu_s = time.thread_time()
            now = time.monotonic()
            if now >= next_flush:
                next_flush = now + self.flush_interval
            if stopping:
                self._shutdown_writer()
                self.stats.writer_cpu_s = time.thread_time()
                return

    def _shutdown_writer(self) -> None:
        self._report_drops(force=True)
        self._retry_at = 0.0
        self._write_backlog()
        # keep retrying the backlog until it is written or the close deadline passes
        while self._backlog and time.monotonic() < self._close_deadline:
            time.sleep(min(self.retry_interval, max(0.0, self._close_deadline - time.monotonic())))
            self._retry_at = 0.0
            try:
                self._cycle()
            except Exception:  # noqa: BLE001
                log.exception("storage writer cycle failed during close")
        if self._backlog:
            lost = sum(p.batch.num_rows for q in self._backlog.values() for p in q)
            log.error(
                "storage writer %s closing with %d rows not journaled (journal writes kept failing): they are lost", self.writer_id, lost
            )
            for (table, provider, _), q in self._backlog.items():
                self.stats.table(provider, table).dropped += sum(p.batch.num_rows for p in q)
            self._backlog.clear()
        for key in list(self._segments):
            self._roll(key, "shutdown")
        self.stats.segments_open = 0
        self.stats.backlog_bytes = 0
        self._release_markers(force=True)

    def _drain(self) -> tuple[list, list, list]:
        ctl = []
        while True:
            try:
                ctl.append(self._ctl.popleft())
            except IndexError:
                break
        # markers first (above): everything a flush() caller recorded before its marker
        # is in the queues by now
        # only this thread pops (left) and the event loop only appends (right), so the
        # first len(q) items are there to take; the event loop's budget drop may race
        # for the head, hence the IndexError guard
        raws = _take(self._rawq)
        msgs = _take(self._msgq)
        self._out_bytes += sum([len(r[6]) for r in raws]) + _RAW_EST * len(raws) + _MSG_EST * len(msgs)
        self._woken = False
        return ctl, raws, msgs

    def _cycle(self) -> None:
        ctl, raws, msgs = self._drain()
        self._pending_markers.extend(ctl)
        if self._evq:
            ev = _take(self._evq)
            for e in ev:
                self._add("events", e.provider, from_messages("events", [e], self.writer_id))
        # group by (table, provider), keeping order
        groups: dict[tuple[str, str], list] = {}
        kt = KIND_TABLE
        for m in msgs:
            key = (kt.get(m.kind), m.provider)
            g = groups.get(key)
            if g is None:
                groups[key] = [m]
            else:
                g.append(m)
        raw_groups: dict[str, list] = {}
        for r in raws:
            g = raw_groups.get(r[0])
            if g is None:
                raw_groups[r[0]] = [r]
            else:
                g.append(r)
        for (table, provider), msgs in groups.items():
            if table is None:
                kinds = sorted({str(m.kind) for m in msgs})
                self._warn_once(f"kind:{kinds}", "storage: messages of kind %s are not recorded (no table for them)", kinds)
                continue
            if table == "book" and any(m.view for m in msgs):
                # views (top-N of the local book) are rebuilt from deltas in replay; stored
                # as deltas they would mean something else
                self._warn_once(
                    f"view:{provider}", "storage: %s book messages with view=True recorded as deltas: record the parser's deltas instead", provider
                )
            self._add(table, provider, self._convert(table, provider, msgs))
        for provider, rows in raw_groups.items():
            self.stats.table(provider, "raw").received += [r[4] for r in rows].count("in")
            for chunk in _chunks_by_bytes(rows, _RAW_BATCH_BYTES):
                self._add("raw", provider, self._convert("raw", provider, chunk))
        # drops made by the event loop
        while self._loop_drops:
            p, t, n, lo, hi, n_in = self._loop_drops.popleft()
            self._note_drop(p, t, n, lo, hi)
            if n_in:
                self.stats.table(p, t).received += n_in
        self._enforce_budget()
        self._write_backlog()
        self._check_rolls()
        self._report_drops()
        self._handle_roll_requests()
        self._release_markers()
        self.stats.queued_bytes = max(0, self._in_bytes - self._out_bytes)
        self.stats.backlog_bytes = self._backlog_bytes
        self.stats.segments_open = len(self._segments)

    def _convert(self, table: str, provider: str, items: list) -> pa.RecordBatch | None:
        try:
            if table == "raw":
                return raw_batch(items, self.writer_id)
            return from_messages(table, items, self.writer_id)
        except _UNCONVERTIBLE as e:
            # one bad message must not cost the others: convert one by one, drop the bad
            good = []
            st = self.stats.table(provider, table)
            for it in items:
                try:
                    raw_batch([it], self.writer_id) if table == "raw" else from_messages(table, [it], self.writer_id)
                    good.append(it)
                except _UNCONVERTIBLE as e1:
                    st.rejected += 1
                    st.dropped += 1
                    self._warn_once(f"reject:{provider}:{table}:{type(e1).__name__}", "storage: rejected a %s row of %s: %s (%r)", table, provider, e1, it)
            log.debug("conversion of %d %s rows failed as a batch (%s); kept %d", len(items), table, e, len(good))
            if not good:
                return None
            return raw_batch(good, self.writer_id) if table == "raw" else from_messages(table, good, self.writer_id)

    def _add(self, table: str, provider: str, batch: pa.RecordBatch | None) -> None:
        """Sort if needed, split at UTC midnight (zero-copy slices), queue for the journal."""
        if batch is None or batch.num_rows == 0:
            return
        cols = key_columns(batch, table)
        if not is_sorted(cols):
            batch = sort_batch(batch, table)
            cols = key_columns(batch, table)
        ts = cols[0]
        lo, hi = int(ts[0]), int(ts[-1])
        hk = (table, provider)
        if hi > self._hwm.get(hk, 0):
            self._hwm[hk] = hi
        d0, d1 = day_of(lo), day_of(hi)
        if d0 == d1:
            bounds = [(d0, 0, batch.num_rows)]
        else:
            cuts = np.searchsorted(ts, [d * DAY_NS for d in range(d0 + 1, d1 + 1)], side="left").tolist()
            edges = [0, *cuts, batch.num_rows]
            bounds = [(d0 + i, edges[i], edges[i + 1]) for i in range(len(edges) - 1)]
        for day, a, b in bounds:
            if b <= a:
                continue
            part = batch.slice(a, b - a) if (a, b) != (0, batch.num_rows) else batch
            first = tuple(int(c[a]) for c in cols)
            last = tuple(int(c[b - 1]) for c in cols)
            piece = _Piece(part, first[0], last[0], first, last, part.nbytes)
            q = self._backlog.get((table, provider, day))
            if q is None:
                q = self._backlog[(table, provider, day)] = deque()
            q.append(piece)
            self._backlog_bytes += piece.nbytes

    # -- journal writes -------------------------------------------------------------------
    def _write_backlog(self) -> None:
        if not self._backlog or time.monotonic() < self._retry_at:
            return
        synced: list[SegmentWriter] = []
        for key in list(self._backlog):
            q = self._backlog[key]
            table, provider, day = key
            st = self.stats.table(provider, table)
            while q:
                p = q[0]
                try:
                    seg = self._segment_for(key, p)
                    n = seg.append(p.batch, p.first_ts, p.last_ts, p.last_key)
                except OSError as e:
                    self._write_failed(key, e)
                    return
                q.popleft()
                self._backlog_bytes -= p.nbytes
                st.rows += p.batch.num_rows
                st.bytes_journal += n
                if seg not in synced:
                    synced.append(seg)
            del self._backlog[key]
        if self.fsync == "flush":
            for seg in synced:
                try:
                    seg.sync()
                except OSError as e:
                    # the units are in the page cache (readable, and they survive a process
                    # crash) but maybe not a power loss; don't rewrite them (duplicates):
                    # start a new segment and say so
                    self._warn_once(f"sync:{seg.path}", "storage: fsync of %s failed: %s", seg.path, e)
                    self._status(seg.provider, "error", f"storage: fsync of journal {seg.table} failed ({e}); rows since the last sync may not survive a power loss")
                    self._roll((seg.table, seg.provider, seg.day), "fsync error")
        self.stats.last_flush_ns = time.time_ns()
        if self._failing_since is not None:
            took = time.monotonic() - self._failing_since
            self._failing_since = None
            self.stats.failing = bool(self._seal_failing)
            for provider, table in sorted(self._fail_reported):
                self._status(provider, "healed", f"storage: journal writes for {table} resumed after {took:.1f} s")
            log.warning("storage: journal writes resumed after %.1f s", took)
            self._fail_reported.clear()

    def _segment_for(self, key: tuple[str, str, int], p: _Piece) -> SegmentWriter:
        seg = self._segments.get(key)
        if seg is not None and seg.broken:
            self._roll(key, "write error")
            seg = None
        if seg is not None and seg.last_key is not None and p.first_key < seg.last_key:
            # a late row would go behind journaled ones: keep each file in total order
            self.stats.late_rolls += 1
            log.debug("storage: late rows for %s (%s < %s): rolling %s", key, p.first_key, seg.last_key, seg.path)
            self._roll(key, "late rows")
            seg = None
        if seg is None:
            table, provider, day = key
            n = next(self._seg_counter)
            path = os.path.join(partition_dir(self.journal_dir, table, provider, day), segment_name(self.writer_id, n))
            seg = SegmentWriter(self.fs, path, table, provider, day, self.writer_id, n)
            self._segments[key] = seg
        return seg

    def _write_failed(self, key: tuple[str, str, int], e: OSError) -> None:
        table, provider, _ = key
        st = self.stats.table(provider, table)
        st.write_errors += 1
        st.last_error = self.stats.last_error = f"journal write: {e}"
        self._retry_at = time.monotonic() + self.retry_interval
        self.stats.failing = True
        if self._failing_since is None:
            self._failing_since = time.monotonic()
        if (provider, table) not in self._fail_reported:
            self._fail_reported.add((provider, table))
            log.error("storage: journal write for %s/%s failed: %s; keeping data in memory and retrying", provider, table, e)
            self._status(
                provider,
                "error",
                f"storage: journal write for {table} failed ({e}); keeping up to {_fmt_bytes(self.memory_budget)} in memory and retrying",
            )

    def _enforce_budget(self) -> None:
        queued = max(0, self._in_bytes - self._out_bytes)
        over = queued + self._backlog_bytes - self.memory_budget
        if over <= 0:
            return
        # drop the oldest pieces first (by first ts_recv), never status events
        while over > 0:
            oldest_key = None
            oldest_ts = None
            for key, q in self._backlog.items():
                if key[0] in _NEVER_DROP or not q:
                    continue
                if oldest_ts is None or q[0].first_ts < oldest_ts:
                    oldest_key, oldest_ts = key, q[0].first_ts
            if oldest_key is None:
                break
            q = self._backlog[oldest_key]
            p = q.popleft()
            if not q:
                del self._backlog[oldest_key]
            self._backlog_bytes -= p.nbytes
            over -= p.nbytes
            table, provider, _ = oldest_key
            self._note_drop(provider, table, p.batch.num_rows, p.first_ts, p.last_ts)

    def _note_drop(self, provider: str, table: str, n: int, lo: int, hi: int) -> None:
        self.stats.table(provider, table).dropped += n
        d = self._drops.get((provider, table))
        now = time.monotonic()
        if d is None:
            d = self._drops[(provider, table)] = _Drop(since=now)
            log.error("storage: memory budget (%s) exceeded: dropping the oldest %s rows of %s", _fmt_bytes(self.memory_budget), table, provider)
        d.count += n
        d.first_ts = lo if d.first_ts is None else min(d.first_ts, lo)
        d.last_ts = hi if d.last_ts is None else max(d.last_ts, hi)
        d.last_seen = now

    def _report_drops(self, force: bool = False) -> None:
        """One gap event per (provider, table) drop incident: when dropping stops, every
        60 s while it goes on, and at close."""
        now = time.monotonic()
        for key, d in list(self._drops.items()):
            if force or now - d.last_seen >= self.flush_interval or now - d.since >= 60.0:
                provider, table = key
                self._status(
                    provider,
                    "gap",
                    f"storage: dropped {d.count} {table} rows (memory budget {_fmt_bytes(self.memory_budget)} exceeded while writes failed or lagged)",
                    gap_start_ns=d.first_ts,
                    gap_end_ns=d.last_ts,
                    dropped=d.count,
                )
                del self._drops[key]

    # -- rolling --------------------------------------------------------------------------
    def _check_rolls(self) -> None:
        now = time.time_ns()
        mono = time.monotonic()
        grace = self.midnight_grace_ns
        today_with_grace = day_of(now - grace)
        for key, seg in list(self._segments.items()):
            if seg.broken:
                self._roll(key, "write error")
            elif seg.offset >= self.roll_bytes:
                self._roll(key, "size")
            elif now >= (seg.opened_wall // self.roll_ns + 1) * self.roll_ns:
                self._roll(key, "time")
            elif seg.day < day_of(self._hwm.get(key[:2], 0) - grace):
                # rows of a later day arrived for this table and provider (live data
                # past midnight, or a rebuild of past days moving on)
                self._roll(key, "midnight")
            elif seg.day == today_with_grace - 1 and (mono - seg.last_append_mono) * 1e9 >= grace:
                # a quiet live provider: the wall clock is past midnight and nothing came
                # since (only yesterday's segments: a rebuild of older days that pauses
                # must not roll; the hourly roll bounds everything else)
                self._roll(key, "midnight")

    def _roll(self, key: tuple[str, str, int], reason: str) -> None:
        seg = self._segments.pop(key, None)
        if seg is None:
            return
        seg.close(sync=self.fsync != "never")
        log.debug("storage: rolled %s (%s, %d rows)", seg.path, reason, seg.rows)
        job = _SealJob(seg.path, seg.table, seg.provider, seg.day, seg.writer, reason)
        with self._state_lock:
            self._seal_q.append(job)
            self.stats.seal_pending += 1
        self._seal_wake.set()

    def _handle_roll_requests(self) -> None:
        rest = []
        for m in self._pending_markers:
            if isinstance(m, tuple) and m[0] == "roll":
                if not self._backlog:
                    for key in list(self._segments):
                        self._roll(key, "requested")
                    m[1].set()
                    continue
            rest.append(m)
        self._pending_markers[:] = rest

    def _release_markers(self, force: bool = False) -> None:
        if self._backlog and not force:
            return  # not everything drained so far is journaled yet
        rest = []
        for m in self._pending_markers:
            if isinstance(m, threading.Event):
                m.set()
            elif force:
                m[1].set()
            else:
                rest.append(m)
        self._pending_markers[:] = rest

    # -- status events --------------------------------------------------------------------
    def _status(self, provider: str, status: str, reason: str, **fields) -> None:
        msg = StreamMessage(
            provider=provider,
            kind="status",
            ts_recv=recv_ns(),
            conn=-1,
            seq=next(self._event_seq),
            status=status,
            reason=reason,
            **fields,
        )
        if threading.current_thread() is self._writer_thread:
            self._add("events", provider, from_messages("events", [msg], self.writer_id))
        else:
            # from the sealer thread: the writer thread picks it up (the event loop's
            # queues and byte counters stay the event loop's)
            self._evq.append(msg)
            self._wake.set()
        cb = self.on_status
        if cb is not None:
            try:
                if self.loop is not None:
                    self.loop.call_soon_threadsafe(cb, msg)
                else:
                    cb(msg)
            except Exception:  # noqa: BLE001 - a broken hook must not stop recording
                log.exception("storage on_status hook failed")

    def _warn_once(self, key: str, fmt: str, *args) -> None:
        if key in self._warned:
            return
        if len(self._warned) < 10_000:
            self._warned.add(key)
        log.warning(fmt, *args)

    # ------------------------------------------------------------------------------------
    # sealer thread

    def _sealer_main(self) -> None:
        next_recover = time.monotonic()
        retry: list[_SealJob] = []
        while True:
            now = time.monotonic()
            if self.recover and now >= next_recover and not self._seal_stop.is_set():
                try:
                    self._recover_dead()
                except Exception:  # noqa: BLE001
                    log.exception("storage: recovery scan failed")
                next_recover = time.monotonic() + self.recover_interval
            self._first_scan_done.set()
            while True:
                with self._state_lock:
                    job = self._seal_q.popleft() if self._seal_q else None
                if job is None:
                    break
                if not self._seal_job(job):
                    retry.append(job)
            now = time.monotonic()
            due = [j for j in retry if j.not_before <= now]
            retry = [j for j in retry if j.not_before > now]
            for job in due:
                if not self._seal_job(job):
                    retry.append(job)
            self.stats.sealer_cpu_s = time.thread_time()
            if self._seal_stop.is_set():
                with self._state_lock:
                    empty = not self._seal_q
                if empty and (not retry or time.monotonic() >= self._close_deadline):
                    for job in retry:
                        log.error("storage: could not seal %s before close; it stays in the journal for recovery", job.path)
                    return
            wait = self.retry_interval if retry else (self.recover_interval if self.recover else 3600.0)
            self._seal_wake.wait(min(wait, max(0.01, next_recover - time.monotonic())) if self.recover else wait)
            self._seal_wake.clear()

    def _seal_job(self, job: _SealJob) -> bool:
        try:
            res = seal_segment(
                self.fs,
                job.path,
                job.table,
                job.provider,
                job.day,
                job.writer,
                compression_level=self._levels.get(job.table),
                row_group_rows=self.row_group_rows,
            )
            self.fs.journal_remove(job.path)
        except FileNotFoundError as e:
            if not os.path.exists(job.path):
                log.info("storage: segment %s is gone (sealed by another process?)", job.path)
                self._seal_done(job)
                return True
            return self._seal_failed(job, e)
        except OSError as e:
            return self._seal_failed(job, e)
        except Exception as e:  # noqa: BLE001 - a bug or an unreadable file: keep it for later
            log.exception("storage: sealing %s failed", job.path)
            return self._seal_failed(job, e)
        st = self.stats.table(job.provider, job.table)
        if res.path is not None:
            st.rows_sealed += res.rows
            st.bytes_sealed += res.bytes
            st.files_sealed += 1
        if res.info.torn_bytes:
            self.stats.torn_bytes += res.info.torn_bytes
        if job.path in self._seal_failing:
            self._seal_failing.discard(job.path)
            self._status(job.provider, "healed", f"storage: sealing {job.table} resumed ({os.path.basename(job.path)})")
            self.stats.failing = bool(self._seal_failing) or self._failing_since is not None
        log.debug("storage: sealed %s → %s (%d rows)", job.path, res.path, res.rows)
        job.result = res
        self._seal_done(job)
        return True

    def _seal_done(self, job: _SealJob) -> None:
        with self._state_lock:
            self.stats.seal_pending -= 1

    def _seal_failed(self, job: _SealJob, e: BaseException) -> bool:
        job.attempts += 1
        job.not_before = time.monotonic() + min(60.0, self.retry_interval * (2 ** min(job.attempts - 1, 6)))
        st = self.stats.table(job.provider, job.table)
        st.write_errors += 1
        st.last_error = self.stats.last_error = f"seal: {e}"
        self.stats.failing = True
        if job.path not in self._seal_failing:
            self._seal_failing.add(job.path)
            log.error("storage: sealing %s failed: %s; the segment is kept and sealing retried", job.path, e)
            self._status(job.provider, "error", f"storage: sealing {job.table} failed ({e}); the journal keeps the data, retrying")
        return False

    def _recover_dead(self) -> None:
        """Seal segments whose writer is not alive (its lock is free), this writer's
        predecessor's (same fixed id) included."""
        leftovers, self._leftovers = self._leftovers, []
        by_writer: dict[str, list] = {}
        for s in list_segments(self.journal_dir):
            if s.writer != self.writer_id:
                by_writer.setdefault(s.writer, []).append(s)
        if leftovers:
            self._recover_writer(self.writer_id, leftovers)
        for w, segs in sorted(by_writer.items()):
            fd = self._try_lock(w)
            if fd is None:
                continue  # alive
            try:
                # re-list under the lock: another process may have recovered them already
                segs = list_segments(self.journal_dir, writer=w)
                if segs:
                    self._recover_writer(w, segs)
                if not list_segments(self.journal_dir, writer=w):
                    try:
                        os.remove(self._lock_path(w))
                    except OSError:
                        pass
            finally:
                os.close(fd)

    def _recover_writer(self, writer: str, segs: list) -> None:
        per_provider: dict[str, list] = {}
        for s in segs:
            with self._state_lock:
                self.stats.seal_pending += 1
            job = _SealJob(s.path, s.table, s.provider, _day_from(s.date), writer, "recovery")
            ok = self._seal_job(job)
            if not ok:
                self._seal_done(job)  # stays in the journal; the next scan retries it
                continue
            res = job.result
            self.stats.recovered_segments += 1
            if res is None:
                continue
            info = res.info
            log.warning(
                "storage: recovered %s of dead writer %s: %d rows in %d units sealed to %s; torn tail %d bytes%s",
                s.path,
                writer,
                info.rows,
                info.units,
                res.path,
                info.torn_bytes,
                f" ({info.error})" if info.error else "",
            )
            per_provider.setdefault(s.provider, []).append((s, info))
        for provider, items in per_provider.items():
            rows = sum(i.rows for _, i in items)
            torn = sum(i.torn_bytes for _, i in items)
            last = max((i.last_ts for _, i in items if i.last_ts is not None), default=None)
            mtime = max(i.mtime_ns for _, i in items)
            tables = ", ".join(sorted({s.table for s, _ in items}))
            detail = "; ".join(f"{s.table}: {i.error}" for s, i in items if i.error)
            self._status(
                provider,
                "gap",
                f"storage: writer {writer} stopped without sealing; recovered {rows} rows ({tables}) from {len(items)} journal segments"
                + (f", cut off a torn/corrupt tail of {torn} bytes ({detail})" if torn else ", no torn tail"),
                gap_start_ns=last,
                gap_end_ns=max(mtime, last or 0),
            )


def _chunks_by_bytes(rows: list[tuple], limit: int) -> list[list[tuple]]:
    total = sum([len(r[6]) for r in rows])
    if total <= limit:
        return [rows]
    out, cur, size = [], [], 0
    for r in rows:
        if cur and size + len(r[6]) > limit:
            out.append(cur)
            cur, size = [], 0
        cur.append(r)
        size += len(r[6])
    out.append(cur)
    return out


def _take(q: deque) -> list:
    n = len(q)
    pop = q.popleft
    out = []
    try:
        for _ in range(n):
            out.append(pop())
    except IndexError:
        pass
    return out


def _fmt_bytes(n: int) -> str:
    return f"{n / MiB:.0f} MiB" if n >= MiB else f"{n} bytes"


def _day_from(date: str) -> int:
    from .layout import day_from_str

    return day_from_str(date)


