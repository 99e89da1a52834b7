"""Where things live in a recording, and cheap listings of it.

::

    <root>/<table>/provider=<p>/date=<YYYY-MM-DD>/<writer>-<first_ts>-<last_ts>.parquet
    <journal_dir>/<table>/provider=<p>/date=<YYYY-MM-DD>/<writer>-<n>.arrows
    <journal_dir>/_locks/<writer>.lock

``date`` is the UTC date of ``ts_recv``; ``first_ts``/``last_ts`` are the first and
last ``ts_recv`` in the file (integer ns), so listing a directory tells which files
cover a time range without opening any. Writer ids may contain ``-``; the numbers at
the end of a name are parsed from the right.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from datetime import date as _date

import pyarrow.fs as pafs

from .schema import TABLES

DAY_NS = 86_400_000_000_000
_DIRECT_DAYS = 8  # time ranges of fewer days list their date= folders by name
_WRITER_OK = re.compile(r"^[A-Za-z0-9_.@+-]+$")
_SEALED_RE = re.compile(r"^(?P<writer>.+)-(?P<first>\d+)-(?P<last>\d+)\.parquet$")
_SEGMENT_RE = re.compile(r"^(?P<writer>.+)-(?P<n>\d+)\.arrows$")


_last_ms = 0
_id_lock = threading.Lock()


def default_writer_id() -> str:
    """``<host>-<pid>-<start>``: unique per host and process (start in ms defeats pid
    reuse), and per writer within a process: two writers created in the same
    millisecond get consecutive numbers (else they would share a lock and file names).

    ``host`` is the short host name; hosts that share one (containers given the same
    ``hostname`` all running as pid 1) are told apart by the start time only, so give
    such daemons explicit ids (``--writer-id``) in a multi-host deployment.
    """
    global _last_ms
    host = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname().split(".")[0]) or "host"
    with _id_lock:
        ms = max(time.time_ns() // 1_000_000, _last_ms + 1)
        _last_ms = ms
    return f"{host}-{os.getpid()}-{ms}"


def check_writer_id(writer: str) -> str:
    if not writer or not _WRITER_OK.match(writer) or writer.startswith((".", "_")):
        raise ValueError(
            f"bad writer id {writer!r}: use letters, digits and _ . @ + - (not starting with . or _), it becomes part of file names"
        )
    return writer


def day_of(ts_ns: int) -> int:
    return ts_ns // DAY_NS


def date_str(day: int) -> str:
    return _date.fromordinal(_date(1970, 1, 1).toordinal() + day).isoformat()


def day_from_str(s: str) -> int:
    return _date.fromisoformat(s).toordinal() - _date(1970, 1, 1).toordinal()


def partition_dir(base: str, table: str, provider: str, day: int) -> str:
    return f"{base}/{table}/provider={provider}/date={date_str(day)}"


def sealed_name(writer: str, first_ts: int, last_ts: int) -> str:
    return f"{writer}-{first_ts}-{last_ts}.parquet"


def segment_name(writer: str, n: int) -> str:
    return f"{writer}-{n}.arrows"


@dataclass(frozen=True, slots=True)
class SealedFile:
    path: str
    table: str
    provider: str
    date: str
    writer: str
    first_ts: int
    last_ts: int
    size: int
    mtime_ns: int | None = None  # from the listing; with the size, tells a replaced file from the one cached


@dataclass(frozen=True, slots=True)
class SegmentFile:
    path: str
    table: str
    provider: str
    date: str
    writer: str
    n: int
    size: int


def parse_sealed_name(name: str) -> tuple[str, int, int] | None:
    m = _SEALED_RE.match(name)
    if not m:
        return None
    return m["writer"], int(m["first"]), int(m["last"])


def parse_segment_name(name: str) -> tuple[str, int] | None:
    m = _SEGMENT_RE.match(name)
    if not m:
        return None
    return m["writer"], int(m["n"])


def _ts(t: int | datetime | str | None) -> int | None:
    """ns since the epoch from an int (ns), a datetime (naive = UTC) or an ISO string."""
    if t is None or isinstance(t, int):
        return t
    if isinstance(t, str):
        t = datetime.fromisoformat(t)
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    delta = t - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def _as_list(x: str | list[str] | tuple[str, ...] | None) -> list[str] | None:
    if x is None:
        return None
    return [x] if isinstance(x, str) else list(x)


def list_sealed(
    root: str,
    table: str | list[str] | None = None,
    provider: str | list[str] | None = None,
    start: int | datetime | str | None = None,
    end: int | datetime | str | None = None,
    *,
    filesystem: pafs.FileSystem | str | None = None,
    supersede: bool = True,
    date: str | list[str] | None = None,
) -> list[SealedFile]:
    """Sealed files of a recording, pruned by table, provider and ``ts_recv`` range
    (``start`` inclusive, ``end`` exclusive) and ``date`` (``YYYY-MM-DD``, one or a
    list), from directory listings only.

    Files that a compacted file replaces (listed between a compaction's write and its
    removal of the old files) are left out unless ``supersede=False``: see
    :mod:`.compact`. Sorted by (table, provider, date, first_ts, writer).
    """
    from .fs import resolve_root

    fs, base, _ = resolve_root(root, filesystem)
    lo, hi = _ts(start), _ts(end)
    lo_day = day_of(lo) if lo is not None else None
    hi_day = day_of(hi - 1) if hi is not None else None
    tables = _as_list(table) or list(TABLES)
    provs = _as_list(provider)
    dates = set(_as_list(date) or ())
    out: list[SealedFile] = []
    # folders named by the arguments are listed directly rather than found by listing
    # their parents: on an object store every listing is a request (a replay window of
    # one provider costs one listing per table, not three)
    explicit_days = None
    if dates:
        explicit_days = sorted(dates)
    elif lo_day is not None and hi_day is not None and 0 <= hi_day - lo_day < _DIRECT_DAYS:
        explicit_days = [date_str(d) for d in range(lo_day, hi_day + 1)]
    for t in tables:
        pdirs = [f"{base}/{t}/provider={p}" for p in sorted(set(provs))] if provs is not None else _subdirs(fs, f"{base}/{t}", "provider=")
        for pdir in pdirs:
            p = pdir.rsplit("provider=", 1)[1]
            if provs is not None and p not in provs:
                continue
            ddirs = [f"{pdir}/date={d}" for d in explicit_days] if explicit_days is not None else _subdirs(fs, pdir, "date=")
            for ddir in ddirs:
                d = ddir.rsplit("date=", 1)[1]
                if dates and d not in dates:
                    continue
                try:
                    day = day_from_str(d)
                except ValueError:
                    continue
                if (lo_day is not None and day < lo_day) or (hi_day is not None and day > hi_day):
                    continue
                try:
                    infos = fs.get_file_info(pafs.FileSelector(ddir, allow_not_found=True))
                except NotADirectoryError:
                    continue
                for info in infos:
                    if info.type != pafs.FileType.File:
                        continue
                    parsed = parse_sealed_name(info.base_name)
                    if parsed is None:
                        continue
                    w, first, last = parsed
                    if (lo is not None and last < lo) or (hi is not None and first >= hi):
                        continue
                    out.append(SealedFile(info.path, t, p, d, w, first, last, info.size or 0, info.mtime_ns))
    out.sort(key=lambda f: (f.table, f.provider, f.date, f.first_ts, f.writer))
    if supersede:
        from .compact import drop_superseded

        out = drop_superseded(out, fs)
    return out


def _subdirs(fs: pafs.FileSystem, d: str, prefix: str) -> list[str]:
    try:
        infos = fs.get_file_info(pafs.FileSelector(d, allow_not_found=True))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(i.path for i in infos if i.type == pafs.FileType.Directory and i.base_name.startswith(prefix))


def list_segments(
    journal_dir: str,
    table: str | list[str] | None = None,
    provider: str | list[str] | None = None,
    writer: str | None = None,
) -> list[SegmentFile]:
    """Journal segments (the unsealed tail), sorted by (table, provider, date, writer, n)."""
    tables = _as_list(table) or list(TABLES)
    provs = _as_list(provider)
    out: list[SegmentFile] = []
    for t in tables:
        tdir = os.path.join(journal_dir, t)
        for pname in _ls(tdir):
            if not pname.startswith("provider="):
                continue
            p = pname[len("provider=") :]
            if provs is not None and p not in provs:
                continue
            for dname in _ls(os.path.join(tdir, pname)):
                if not dname.startswith("date="):
                    continue
                ddir = os.path.join(tdir, pname, dname)
                for name in _ls(ddir):
                    parsed = parse_segment_name(name)
                    if parsed is None:
                        continue
                    w, n = parsed
                    if writer is not None and w != writer:
                        continue
                    path = os.path.join(ddir, name)
                    try:
                        size = os.path.getsize(path)
                    except OSError:
                        continue  # sealed and removed meanwhile
                    out.append(SegmentFile(path, t, p, dname[len("date=") :], w, n, size))
    out.sort(key=lambda s: (s.table, s.provider, s.date, s.writer, s.n))
    return out


def _ls(d: str) -> list[str]:
    try:
        return sorted(os.listdir(d))
    except (FileNotFoundError, NotADirectoryError):
        return []
