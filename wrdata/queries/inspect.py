"""Inspecting a recording: what is in it (``wrdata ls``) and whether it is sound
(``wrdata verify``).

:func:`summarize` is cheap: directory listings, file names (first/last ``ts_recv``) and
Parquet footers (row counts), never the data; the journal tail's rows are counted from
its segments' commit records. :func:`verify` reads everything.

What :func:`verify` checks, per sealed file:

- it is readable to the last row (every row group decoded);
- its schema is a wrdata table's: ``wrdata.table`` names the table of its directory, its
  ``wrdata.schema_version`` is one this wrdata knows (newer versions are reported, not
  moved: they are not corrupt, this reader is old), its columns convert to the current
  schema;
- its name matches its content: first and last ``ts_recv``, the writer, and every row's
  ``ts_recv`` on the UTC date of its ``date=`` directory;
- its rows are in total order (``ts_recv, conn, seq, idx`` [, ``pos``]) with no key
  twice;

and between the files of one writer in one partition: no row in two files (a key
present twice means double-counted data: an interrupted compaction, a file copied by
hand). Files of one writer whose time ranges merely interleave are fine: the recorder
starts a new file when rows arrive late, rather than write out of order.

Minute rollups (:mod:`.rollup`, under ``<root>/ohlcv_1m/``) are read to the last page
too: an unreadable one is a problem (``ohlcv`` ignores it with a warning; ``wrdata
rollup`` replaces it), a stale one a note (``ohlcv`` reads that day's trades meanwhile).

Unreadable files and files with a foreign or unknown schema are **moved** to
``<root>/_quarantine/<table>/provider=.../date=.../`` with a ``.reason`` note beside
them (``_``-prefixed folders are skipped by every reader), so queries stop failing on
them and nothing is deleted. Other problems are reported and left in place.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ..storage import SCHEMA_VERSION, TABLES, conform, schema_version
from ..storage.compact import superseded
from ..storage.fs import find_journal, resolve_root
from ..storage.journal import SegmentReader
from ..storage.layout import SealedFile, date_str, list_segments, parse_sealed_name
from ..storage.schema import SORT_KEYS
from ..storage.seal import is_sorted, key_columns

log = logging.getLogger("wrdata.queries")

QUARANTINE = "_quarantine"
Progress = Callable[[str, int, int], None]


# ---------------------------------------------------------------------------------------
# listing


@dataclass
class PartitionSummary:
    table: str
    provider: str
    date: str
    files: int = 0
    rows: int = 0
    bytes: int = 0
    first_ts: int | None = None
    last_ts: int | None = None
    writers: int = 0
    journal_segments: int = 0
    journal_rows: int = 0
    journal_bytes: int = 0
    unreadable: int = 0  # files whose footer could not be read (see wrdata verify)

    def as_dict(self) -> dict:
        d = asdict(self)
        for k in ("first_ts", "last_ts"):
            d[k] = fmt_ns(d[k]) if d[k] is not None else None
        return d


def fmt_ns(ns: int | None) -> str:
    if ns is None:
        return ""
    sec, frac = divmod(ns, 1_000_000_000)
    return f"{datetime.fromtimestamp(sec, UTC):%Y-%m-%dT%H:%M:%S}.{frac:09d}Z"


def list_all_sealed(root: str, filesystem=None, tables=None, providers=None, dates=None) -> list[SealedFile]:
    """Every file named like a sealed file, superseded ones included."""
    from ..storage import list_sealed

    files = list_sealed(root, tables, providers, filesystem=filesystem, supersede=False)
    if dates:
        files = [f for f in files if f.date in set(dates)]
    return files


def _footer(fs: pafs.FileSystem, path: str) -> pq.FileMetaData | Exception:
    try:
        with fs.open_input_file(path) as f:
            return pq.read_metadata(f)
    except Exception as e:  # noqa: BLE001 - reported per file
        return e


def summarize(
    root: str,
    *,
    filesystem: pafs.FileSystem | str | None = None,
    tables: list[str] | None = None,
    providers: list[str] | None = None,
    dates: list[str] | None = None,
    journal: bool | str = True,
    progress: Progress | None = None,
) -> list[PartitionSummary]:
    """One summary per (table, provider, date) with sealed files or journal segments."""
    fs, base, local = resolve_root(root, filesystem)
    files = list_all_sealed(root, filesystem, tables, providers, dates)
    hidden = superseded(files, fs)
    files = [f for f in files if f.path not in hidden]
    out: dict[tuple[str, str, str], PartitionSummary] = {}
    writers: dict[tuple[str, str, str], set[str]] = {}

    def get(t: str, p: str, d: str) -> PartitionSummary:
        s = out.get((t, p, d))
        if s is None:
            s = out[(t, p, d)] = PartitionSummary(t, p, d)
            writers[(t, p, d)] = set()
        return s

    # footers: one small read each; in parallel, which matters on object stores
    with ThreadPoolExecutor(8) as ex:
        footers = ex.map(lambda f: _footer(fs, f.path), files)
        for i, (f, md) in enumerate(zip(files, footers, strict=True)):
            s = get(f.table, f.provider, f.date)
            s.files += 1
            s.bytes += f.size
            if isinstance(md, Exception):
                s.unreadable += 1
            else:
                s.rows += md.num_rows
            s.first_ts = f.first_ts if s.first_ts is None else min(s.first_ts, f.first_ts)
            s.last_ts = f.last_ts if s.last_ts is None else max(s.last_ts, f.last_ts)
            writers[(f.table, f.provider, f.date)].add(f.writer)
            if progress is not None:
                progress("footers", i + 1, len(files))
    jdir = _journal_dir(journal, root, filesystem)
    if jdir:
        for seg in list_segments(jdir, tables, providers):
            if dates and seg.date not in dates:
                continue
            r = SegmentReader(seg.path)
            for _ in r:
                pass
            if r.info.error and r.info.error.startswith("cannot open"):
                continue  # sealed meanwhile
            s = get(seg.table, seg.provider, seg.date)
            s.journal_segments += 1
            s.journal_rows += r.info.rows
            s.journal_bytes += seg.size
            writers[(seg.table, seg.provider, seg.date)].add(seg.writer)
            for ts in (r.info.first_ts, r.info.last_ts):
                if ts is not None:
                    s.first_ts = ts if s.first_ts is None else min(s.first_ts, ts)
                    s.last_ts = ts if s.last_ts is None else max(s.last_ts, ts)
    for k, s in out.items():
        s.writers = len(writers[k])
    order = {t: i for i, t in enumerate(TABLES)}
    return sorted(out.values(), key=lambda s: (order.get(s.table, 99), s.provider, s.date))


def _journal_dir(journal: bool | str, root: str, filesystem) -> str | None:
    if isinstance(journal, str):
        return journal
    # <root>/_journal, or a remote root's journal on this (capture) host
    return find_journal(root, filesystem) if journal else None


# ---------------------------------------------------------------------------------------
# verification


@dataclass
class Finding:
    path: str
    kind: str  # unreadable, foreign-schema, newer-schema, name, order, duplicate, misplaced, superseded, stray, interleaved, tmp, journal, gap, rollup
    message: str
    problem: bool = True  # False: a note (expected after crashes or late rows; nothing to fix)
    quarantined_to: str | None = None


@dataclass
class VerifyReport:
    root: str
    files: int = 0
    rows: int = 0
    bytes: int = 0
    segments: int = 0
    findings: list[Finding] = field(default_factory=list)
    #: per provider/symbol/day: trades (each once), trade gaps found, healed, covered by another writer, unhealed
    gaps: list[dict] = field(default_factory=list)

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.problem]

    @property
    def notes(self) -> list[Finding]:
        return [f for f in self.findings if not f.problem]

    @property
    def quarantined(self) -> list[Finding]:
        return [f for f in self.findings if f.quarantined_to]

    @property
    def ok(self) -> bool:
        return not self.problems


_QUARANTINE_KINDS = ("unreadable", "foreign-schema")


def verify(
    root: str,
    *,
    filesystem: pafs.FileSystem | str | None = None,
    tables: list[str] | None = None,
    providers: list[str] | None = None,
    dates: list[str] | None = None,
    quarantine: bool = True,
    journal: bool | str = True,
    progress: Progress | None = None,
) -> VerifyReport:
    """Check every sealed file (and the journal's segments) of the recording; see the
    module doc. Unreadable and foreign files are moved to ``_quarantine`` unless
    ``quarantine=False``."""
    fs, base, local = resolve_root(root, filesystem)
    rep = VerifyReport(root)
    tables = list(tables) if tables else list(TABLES)
    for t in tables:
        if t not in TABLES:
            raise ValueError(f"unknown table {t!r}: expected some of {', '.join(TABLES)}")
    # every file in the partition directories, wrdata-named or not
    entries = _partition_files(fs, base, tables, providers, dates)
    named: list[SealedFile] = []
    for table, provider, date, info in entries:
        name = info.base_name
        if name.startswith("."):
            if ".tmp-" in name:
                rep.findings.append(Finding(info.path, "tmp", "temporary file of a seal or compaction that did not finish "
                                            "(its data is still in the journal or the old files); safe to delete once no writer runs", problem=False))
            continue
        parsed = parse_sealed_name(name)
        if parsed is None:
            if name.endswith(".parquet"):
                rep.findings.append(Finding(info.path, "stray", "not a wrdata file name (<writer>-<first_ts>-<last_ts>.parquet): "
                                            "wrdata ignores it, but plain Parquet readers of the folder read it"))
                named.append(SealedFile(info.path, table, provider, date, "", -1, -1, info.size or 0))
            continue
        w, first, last = parsed
        named.append(SealedFile(info.path, table, provider, date, w, first, last, info.size or 0))
    hidden = superseded([f for f in named if f.writer], fs)
    for p in sorted(hidden):
        rep.findings.append(Finding(p, "superseded", "replaced by a compacted file beside it and still present "
                                    "(an interrupted compaction): readers through wrdata ignore it; `wrdata compact` removes it"))
    keys: dict[tuple[str, str, str, str], list[tuple[SealedFile, tuple, tuple]]] = {}
    for i, f in enumerate(named):
        rep.files += 1
        rep.bytes += f.size
        res = _check_file(fs, f, rep)
        if res is not None and f.writer and f.path not in hidden:
            keys.setdefault((f.table, f.provider, f.date, f.writer), []).append((f, *res))
        if progress is not None:
            progress("files", i + 1, len(named))
    for (table, _p, _d, _w), items in keys.items():
        _check_between(fs, table, items, rep)
    if quarantine:
        for fnd in rep.findings:
            if fnd.kind in _QUARANTINE_KINDS and fnd.problem:
                fnd.quarantined_to = _quarantine(fs, base, fnd)
    if "trades" in tables and "events" in tables:
        try:
            rep.gaps = gap_summary(root, filesystem=filesystem, providers=providers, dates=dates, journal=journal)
        except Exception as e:  # noqa: BLE001 - files quarantined above may be what a query needs
            log.warning("verify: cannot summarize gaps: %s", e)
        for g in rep.gaps:
            if g["unhealed"]:
                rep.findings.append(Finding(f"{g['provider']}:{g['symbol']}", "gap", f"{g['date']}: {g['unhealed']} of "
                                            f"{g['gaps']} trade gaps unhealed (`wrdata heal` fetches what the history still has)",
                                            problem=False))
    if "trades" in tables:
        _check_rollups(root, filesystem, providers, dates, journal, fs, rep)
    jdir = _journal_dir(journal, root, filesystem)
    if jdir:
        for seg in list_segments(jdir, tables, providers):
            if dates and seg.date not in dates:
                continue
            rep.segments += 1
            r = SegmentReader(seg.path)
            for _ in r:
                pass
            info = r.info
            if info.error and not info.error.startswith("cannot open"):
                rep.findings.append(Finding(seg.path, "journal", f"journal segment: {info.error}; {info.rows} rows in {info.units} "
                                            f"complete units are kept, the {info.torn_bytes} bytes after them are cut off when "
                                            "the segment is sealed (recovery records the gap)", problem=False))
    return rep


def _check_rollups(root: str, filesystem, providers, dates, journal, fs: pafs.FileSystem, rep: VerifyReport) -> None:
    """Minute rollups (:mod:`.rollup`): an unreadable one is a problem (``ohlcv`` ignores
    it with a warning, ``wrdata rollup`` replaces it); a stale one is a note (``ohlcv``
    reads that day's trades instead until it is rebuilt)."""
    from .connection import connect
    from .rollup import rollup_status

    try:
        con = connect(root, filesystem=filesystem, journal=journal, tables=("trades",))
    except Exception as e:  # noqa: BLE001 - files quarantined above may be what the snapshot needs
        log.warning("verify: cannot check the minute rollups: %s", e)
        return
    try:
        statuses = rollup_status(con, providers, dates)
    finally:
        con.close()
    for st in statuses:
        if st.path is None:
            continue
        if st.state != "unreadable":
            try:
                with fs.open_input_file(st.path) as fh:
                    pq.read_table(fh)  # every page: the footer alone does not show damage
            except Exception as e:  # noqa: BLE001 - whatever pyarrow raises for a damaged file
                st.state, st.reason = "unreadable", f"{type(e).__name__}: {e}"
        if st.state == "unreadable":
            rep.findings.append(Finding(st.path, "rollup", f"unreadable minute rollup ({st.reason}): ohlcv ignores it and "
                                        "reads the day's trades; `wrdata rollup` rebuilds it"))
        elif st.state in ("stale", "open"):
            rep.findings.append(Finding(st.path, "rollup", f"stale minute rollup ({st.reason}): ohlcv reads the day's trades "
                                        "instead; `wrdata rollup` rebuilds it once the day is sealed", problem=False))


def gap_summary(root: str, *, filesystem=None, providers=None, dates=None, journal: bool | str = True) -> list[dict]:
    """Per provider/symbol/day with trades or trade gaps: ``trades`` (the merged view: each
    trade once), ``gaps`` found, ``healed``, ``covered`` (by another writer), ``unhealed``."""
    from .connection import connect
    from .helpers import coverage

    con = connect(root, filesystem=filesystem, journal=journal, tables=("trades", "events"))
    try:
        rows = coverage(con, tables=("trades",), providers=providers).to_pylist()
    finally:
        con.close()
    out = []
    for r in rows:
        d = r["date"].isoformat()
        if dates and d not in dates:
            continue
        out.append(dict(provider=r["provider"], symbol=r["symbol"], date=d, trades=r["rows"], gaps=r["gaps"],
                        healed=r["healed"], covered=r["covered"], unhealed=r["unhealed"]))
    return out


def _partition_files(fs: pafs.FileSystem, base: str, tables, providers, dates) -> list[tuple[str, str, str, pafs.FileInfo]]:
    out = []
    for t in tables:
        for pinfo in _ls(fs, f"{base}/{t}"):
            if pinfo.type != pafs.FileType.Directory or not pinfo.base_name.startswith("provider="):
                continue
            p = pinfo.base_name.split("=", 1)[1]
            if providers and p not in providers:
                continue
            for dinfo in _ls(fs, pinfo.path):
                if dinfo.type != pafs.FileType.Directory or not dinfo.base_name.startswith("date="):
                    continue
                d = dinfo.base_name.split("=", 1)[1]
                if dates and d not in dates:
                    continue
                for finfo in _ls(fs, dinfo.path):
                    if finfo.type == pafs.FileType.File:
                        out.append((t, p, d, finfo))
    return out


def _ls(fs: pafs.FileSystem, d: str) -> list[pafs.FileInfo]:
    try:
        return sorted(fs.get_file_info(pafs.FileSelector(d, allow_not_found=True)), key=lambda i: i.path)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _check_file(fs: pafs.FileSystem, f: SealedFile, rep: VerifyReport) -> tuple[tuple, tuple] | None:
    """Check one file, a row group at a time (memory stays bounded by a row group, even
    for a compacted day); returns (first key, last key) if its rows could be read."""
    try:
        with fs.open_input_file(f.path) as fh:
            pf = pq.ParquetFile(fh)
            md = pf.metadata
            arrow_schema = pf.schema_arrow
            meta = arrow_schema.metadata or {}
            ftable = meta.get(b"wrdata.table", b"").decode(errors="replace")
            version = schema_version(arrow_schema)
            if version is None or ftable != f.table:
                what = "no wrdata schema metadata" if version is None else f"it holds table {ftable!r}, not {f.table!r}"
                rep.findings.append(Finding(f.path, "foreign-schema", f"foreign file: {what}"))
                return None
            if version > SCHEMA_VERSION:
                rep.findings.append(Finding(f.path, "newer-schema", f"schema version {version} is newer than this wrdata's "
                                            f"({SCHEMA_VERSION}): upgrade wrdata to read it fully"))
            state = _FileState()
            for i in range(md.num_row_groups):
                # every column: decoding is what finds a damaged page
                rg = pf.read_row_group(i)
                try:
                    rg = conform(f.table, rg)
                except (ValueError, pa.ArrowException) as e:
                    rep.findings.append(Finding(f.path, "foreign-schema", f"columns do not fit table {f.table}: {e}"))
                    return None
                state.add(rg, f)
    except Exception as e:  # noqa: BLE001 - whatever pyarrow raises for a damaged file
        rep.findings.append(Finding(f.path, "unreadable", f"unreadable: {type(e).__name__}: {e}"))
        return None
    n = state.rows
    rep.rows += n
    if n == 0:
        rep.findings.append(Finding(f.path, "name", "empty file (a sealed file always has rows)"))
        return None
    stated = (md.metadata or {}).get(b"wrdata.rows")
    if stated is not None and int(stated) != n:
        rep.findings.append(Finding(f.path, "name", f"footer says {int(stated)} rows, the file has {n}"))
    first, last = state.first, state.last
    if f.writer:
        if first[0] != f.first_ts or last[0] != f.last_ts:
            rep.findings.append(Finding(f.path, "name", f"name says ts_recv {f.first_ts}..{f.last_ts}, rows have "
                                        f"{first[0]}..{last[0]}: time-range pruning would skip rows"))
        ws = sorted(state.writers)
        if state.null_writers or ws != [f.writer]:
            rep.findings.append(Finding(f.path, "name", f"writer column holds {ws[:3]}, the name says {f.writer!r}"))
    days = sorted(state.days)
    if len(days) != 1 or date_str(days[0]) != f.date:
        rep.findings.append(Finding(f.path, "misplaced", f"rows of {', '.join(date_str(d) for d in days[:3])} "
                                    f"in the folder of {f.date}: readers pruning by date miss them"))
    if state.unsorted:
        rep.findings.append(Finding(f.path, "order", f"rows are not in total order ({', '.join(SORT_KEYS[f.table])}): "
                                    "replay would emit them out of order; `wrdata compact` rewrites the partition sorted"))
    elif state.repeats:
        rep.findings.append(Finding(f.path, "duplicate", f"{state.repeats} rows repeat the key of the row before them"))
    return first, last


class _FileState:
    """What _check_file accumulates over a file's row groups."""

    def __init__(self) -> None:
        self.rows = 0
        self.first: tuple = ()
        self.last: tuple = ()
        self.writers: set[str] = set()
        self.null_writers = 0
        self.days: set[int] = set()
        self.unsorted = False
        self.repeats = 0

    def add(self, data: pa.Table, f: SealedFile) -> None:
        n = data.num_rows
        if n == 0:
            return
        cols = key_columns(data, f.table)
        head, tail = tuple(int(c[0]) for c in cols), tuple(int(c[-1]) for c in cols)
        if self.rows:
            if head < self.last:
                self.unsorted = True
            elif head == self.last:
                self.repeats += 1
        else:
            self.first = head
        self.last = tail
        self.rows += n
        wcol = data.column("writer")
        self.null_writers += wcol.null_count
        self.writers.update(str(w) for w in pc.unique(wcol.cast(pa.string())).to_pylist() if w is not None)
        self.days.update(int(d) for d in np.unique(cols[0] // 86_400_000_000_000))
        if not is_sorted(cols):
            self.unsorted = True
        elif n > 1:
            same = np.ones(n - 1, dtype=bool)
            for c in cols:
                same &= np.diff(c) == 0
            self.repeats += int(same.sum())


def _check_between(fs: pafs.FileSystem, table: str, items: list[tuple[SealedFile, tuple, tuple]], rep: VerifyReport) -> None:
    """Files of one writer in one partition: report rows present in two files."""
    items = sorted(items, key=lambda x: (x[1], x[2]))
    for i in range(1, len(items)):
        for j in range(i):
            a, a_first, a_last = items[j]
            b, b_first, b_last = items[i]
            if b_first > a_last:
                continue
            dup = _common_keys(fs, table, a, b, max(a_first, b_first), min(a_last, b_last))
            if dup:
                rep.findings.append(Finding(b.path, "duplicate", f"{dup} rows are also in {a.path.rsplit('/', 1)[-1]} "
                                            "(same writer and key): readers count them twice"))
            else:
                rep.findings.append(Finding(b.path, "interleaved", f"its time range interleaves with "
                                            f"{a.path.rsplit('/', 1)[-1]}'s (rows that arrived late), no row in both",
                                            problem=False))


def _common_keys(fs: pafs.FileSystem, table: str, a: SealedFile, b: SealedFile, lo: tuple, hi: tuple) -> int:
    keys = list(SORT_KEYS[table])
    tabs = []
    for f in (a, b):
        with fs.open_input_file(f.path) as fh:
            t = pq.read_table(fh, columns=keys)
        t = t.set_column(0, "ts_recv", t.column("ts_recv").cast(pa.int64()))
        ts = t.column("ts_recv")
        t = t.filter(pc.and_(pc.greater_equal(ts, lo[0]), pc.less_equal(ts, hi[0])))
        tabs.append(t)
    if not tabs[0].num_rows or not tabs[1].num_rows:
        return 0
    j = tabs[0].join(tabs[1], keys=keys, join_type="inner")
    return j.num_rows


def _quarantine(fs: pafs.FileSystem, base: str, fnd: Finding) -> str | None:
    """Move the file under ``<root>/_quarantine/`` (same relative path), with a note."""
    rel = fnd.path[len(base):].lstrip("/") if fnd.path.startswith(base) else os.path.basename(fnd.path)
    dest = f"{base}/{QUARANTINE}/{rel}"
    n = 1
    while fs.get_file_info(dest).type != pafs.FileType.NotFound:
        n += 1
        dest = f"{base}/{QUARANTINE}/{rel}.{n}"
    try:
        fs.create_dir(dest.rsplit("/", 1)[0], recursive=True)
        fs.move(fnd.path, dest)
    except (OSError, pa.ArrowException) as e:
        log.error("verify: could not move %s to quarantine: %s", fnd.path, e)
        fnd.message += f" (could not move it to quarantine: {e})"
        return None
    try:
        with fs.open_output_stream(dest + ".reason") as out:
            out.write(json.dumps({"file": fnd.path, "kind": fnd.kind, "reason": fnd.message,
                                  "moved_at": fmt_ns(int(datetime.now(UTC).timestamp() * 1e9))}, indent=1).encode())
    except (OSError, pa.ArrowException) as e:
        log.warning("verify: could not write the note beside %s: %s", dest, e)
    log.warning("verify: moved %s to %s: %s", fnd.path, dest, fnd.message)
    return dest


__all__ = ["PartitionSummary", "summarize", "verify", "VerifyReport", "Finding", "QUARANTINE", "fmt_ns", "gap_summary"]
