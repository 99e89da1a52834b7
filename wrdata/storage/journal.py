"""Journal segments: the crash-safe, append-only tail of a recording.

A segment is a plain Arrow IPC **stream** (any Arrow reader opens it) of zstd-compressed
record batches, written in *units*. A unit is the bytes the IPC writer produces for one
data batch (the schema message first in the first unit, any dictionary messages, the
batch) followed by a zero-row **commit** batch whose custom metadata holds::

    wrdata.commit  "1"
    crc32          CRC-32 of the unit's bytes before the commit, hex
    start, length  where those bytes are in the file
    rows, first_ts, last_ts

A unit is written with one ``write(2)`` call, so after a crash (or a failed write) the
file is a sequence of complete units and possibly a partial one. :class:`SegmentReader`
yields the batches of units whose commit is present and whose checksum matches, and
stops at the first that is not: that and everything after it is the *torn tail*, like a
kdb+ tickerplant log truncated to its last valid entry. Standard Arrow readers see the
commits as empty batches, harmless.

The checksum is over the compressed bytes on disk, so it costs a CRC of ~1/10 of the
data, not a hash of the uncompressed columns.
"""

from __future__ import annotations

import logging
import os
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.ipc as ipc

from .fs import StorageFS
from .schema import schema as table_schema

log = logging.getLogger("wrdata.storage")

_EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"
JOURNAL_CODEC_LEVEL = 1  # the journal is transient: compress fast, the seal compresses hard


class _Collect:
    """Write target of the IPC writer: keeps the bytes so a unit can be checksummed and
    written with one syscall."""

    closed = False

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, b) -> int:
        self.chunks.append(bytes(b))
        return len(b)

    def flush(self) -> None:
        pass

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True

    def take(self) -> list[bytes]:
        c, self.chunks = self.chunks, []
        return c


class SegmentWriter:
    """Appends units to one journal segment file. Not thread-safe (the writer thread owns it)."""

    def __init__(self, fs: StorageFS, path: str, table: str, provider: str, day: int, writer: str, n: int) -> None:
        self.fs = fs
        self.path = path
        self.table = table
        self.provider = provider
        self.day = day
        self.writer = writer
        self.n = n
        self.schema = table_schema(table)
        self.fd: int | None = fs.journal_open(path)
        self.offset = 0  # bytes of complete units in the file
        self.rows = 0
        self.units = 0
        self.first_ts: int | None = None
        self.last_ts: int | None = None
        self.last_key: tuple | None = None
        self.opened_wall = time.time_ns()
        self.last_append_mono = time.monotonic()
        self.dirty = False  # written since the last sync
        self.broken = False
        self._sink = _Collect()
        self._ipc = ipc.new_stream(
            pa.PythonFile(self._sink, mode="w"),
            self.schema,
            options=ipc.IpcWriteOptions(compression=pa.Codec("zstd", JOURNAL_CODEC_LEVEL)),
        )

    def append(self, batch: pa.RecordBatch, first_ts: int, last_ts: int, last_key: tuple) -> int:
        """Write one unit; returns its size. On ``OSError`` the segment is marked broken
        (its IPC state no longer matches the file) and the caller opens a new one."""
        if self.broken or self.fd is None:
            raise RuntimeError(f"journal segment {self.path} is closed")
        self._ipc.write_batch(batch)
        chunks = self._sink.take()
        length = 0
        crc = 0
        for c in chunks:
            crc = zlib.crc32(c, crc)
            length += len(c)
        meta = {
            "wrdata.commit": "1",
            "crc32": f"{crc:08x}",
            "start": str(self.offset),
            "length": str(length),
            "rows": str(batch.num_rows),
            "first_ts": str(first_ts),
            "last_ts": str(last_ts),
        }
        self._ipc.write_batch(batch.slice(0, 0), custom_metadata=meta)
        chunks.extend(self._sink.take())
        data = b"".join(chunks)
        try:
            self.fs.journal_write(self.fd, data, self.path)
        except OSError:
            self._break()
            raise
        self.offset += len(data)
        self.rows += batch.num_rows
        self.units += 1
        if self.first_ts is None:
            self.first_ts = first_ts
        self.last_ts = last_ts
        self.last_key = last_key
        self.last_append_mono = time.monotonic()
        self.dirty = True
        return len(data)

    def _break(self) -> None:
        """After a failed write: cut the file back to its last complete unit if the OS
        lets us (so nothing after it is ambiguous), and stop using it."""
        self.broken = True
        if self.fd is not None:
            try:
                self.fs.journal_truncate(self.fd, self.offset, self.path)
            except OSError as e:
                # the partial unit stays; readers stop at it (no valid commit)
                log.warning("could not truncate %s back to %d bytes: %s", self.path, self.offset, e)
            self.fs.journal_close(self.fd)
            self.fd = None

    def sync(self) -> None:
        if self.fd is not None and self.dirty:
            self.fs.journal_sync(self.fd, self.path)
            self.dirty = False

    def close(self, sync: bool = True) -> None:
        """Finish the file: end-of-stream marker, fsync, close. Errors are logged, not
        raised: every unit already written is complete and readable without the marker."""
        if self.fd is None:
            return
        try:
            if not self.broken:
                self._ipc.close()
                eos = b"".join(self._sink.take())
                if eos:
                    self.fs.journal_write(self.fd, eos, self.path)
            if sync:
                self.fs.journal_sync(self.fd, self.path)
        except OSError as e:
            log.warning("closing journal segment %s: %s (its complete units are kept)", self.path, e)
        finally:
            self.fs.journal_close(self.fd)
            self.fd = None


@dataclass
class SegmentInfo:
    """What reading a segment found."""

    path: str
    size: int = 0
    valid_bytes: int = 0
    rows: int = 0
    units: int = 0
    first_ts: int | None = None
    last_ts: int | None = None
    complete: bool = False  # the writer closed it (end-of-stream marker)
    error: str | None = None  # why reading stopped before the end, if it did
    schema: pa.Schema | None = None
    mtime_ns: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def torn_bytes(self) -> int:
        return self.size - self.valid_bytes


class SegmentReader:
    """Iterate the verified batches of a journal segment; afterwards :attr:`info` says how
    much was valid and why reading stopped.

    Works on segments still being written by another process: it reads what is in the
    file when opened and stops at the last complete unit.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.info = SegmentInfo(path)

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        info = self.info
        try:
            st = os.stat(self.path)
            info.mtime_ns = st.st_mtime_ns
            src = pa.memory_map(self.path)
        except OSError as e:
            info.error = f"cannot open: {e}"
            return
        info.size = size = src.size()
        if size == 0:
            return
        try:
            reader = ipc.open_stream(src)
            info.schema = reader.schema
        except (pa.ArrowException, OSError, ValueError) as e:
            info.error = f"unreadable schema: {e}"
            return
        pending: list[pa.RecordBatch] = []
        valid_end = 0
        while True:
            pos = src.tell()
            try:
                batch, md = reader.read_next_batch_with_custom_metadata()
            except StopIteration:
                if not pending and size - valid_end == 8 and bytes(src.read_at(8, valid_end)) == _EOS:
                    info.complete = True
                    valid_end = size
                break
            except (pa.ArrowException, OSError, ValueError) as e:
                info.error = f"unreadable message at byte {pos}: {e}"
                break
            if md is None or md.get("wrdata.commit") is None:
                pending.append(batch)
                continue
            try:
                start, length = int(md["start"]), int(md["length"])
                want = int(md["crc32"], 16)
            except (KeyError, ValueError) as e:
                info.error = f"bad commit record at byte {pos}: {e}"
                break
            if start != valid_end or start + length != pos:
                info.error = f"commit at byte {pos} covers {start}+{length}, expected {valid_end}+{pos - valid_end}"
                break
            got = zlib.crc32(src.read_at(length, start))
            if got != want:
                info.error = f"checksum mismatch in unit at byte {start} ({length} bytes)"
                break
            valid_end = src.tell()
            info.units += 1
            rows = int(md["rows"])
            info.rows += rows
            if rows:
                ft, lt = int(md["first_ts"]), int(md["last_ts"])
                if info.first_ts is None:
                    info.first_ts = ft
                info.last_ts = lt
            yield from pending
            pending = []
        info.valid_bytes = valid_end


def read_segment(path: str) -> tuple[list[pa.RecordBatch], SegmentInfo]:
    """All verified batches of a segment, and what reading found."""
    r = SegmentReader(path)
    batches = list(r)
    return batches, r.info
