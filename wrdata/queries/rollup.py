"""Minute rollups of ``trades``: precomputed 1-minute OHLCV rows that :func:`.helpers.ohlcv`
reads instead of the trades whenever they provably give the same bars.

::

    <root>/ohlcv_1m/provider=<p>/date=<YYYY-MM-DD>/_ohlcv_1m.parquet

One file per sealed (provider, date) partition of ``trades`` (the UTC date of
``ts_recv``, like the table's own folders), with one row per (clock, provider, symbol,
minute): ``clock`` (``event`` and ``recv``, both), ``minute`` (int ns), ``open``/``close``
with ``open_key``/``close_key`` (the total-order key of that trade: a struct of
``ts_recv`` ns, ``writer``, ``conn``, ``seq``, ``idx``), ``high``, ``low``, ``volume``,
``notional`` (sum of price × size) and ``trades``. The ``_`` prefix marks it as no table's
data: pyarrow datasets, Spark and wrdata's listings skip it, and its name does not parse as
a sealed file's. It is written under a temporary name and moved into place
(:class:`wrdata.storage.StorageFS`), so a reader never sees half of one, on a local disk
or an object store.

Why the rows combine exactly
----------------------------
Rows are computed from the **merged view** (:func:`.helpers.source`, the anti-join of the
duplicates it drops included), the rows ``ohlcv`` reads. An event-clock minute can hold
trades of two partitions (a trade stamped 23:59:59.9 by the venue, received after
midnight); its two rows combine by the keys: the open is the open of the row whose
``open_key`` is smallest. Comparing keys as structs orders writers by their strings, which
is how :func:`.helpers.order_key` ranks them (position in the sorted writer list), and
``conn``/``seq``/``idx`` as integers with NULL as 0, as it does: the open and close found
through rollups are the very trades the raw query finds. High, low and counts are exact;
sums of doubles (volume, notional, vwap) are added in another grouping than the raw
query's, so their last bits may differ (as they already do between two runs of it).

When a rollup is used (:func:`rollup_status`)
---------------------------------------------
Its footer records what it was built from: :data:`ROLLUP_VERSION`, the names and sizes of
the partition's sealed trades files, and a fingerprint of the merged view's dropped keys
whose rows lie in the partition. A query's snapshot must match all three, and hold no
journal rows of the partition; otherwise the rollup is **stale** (a file sealed or
compacted since, another writer's duplicates now dropped there) and that partition is
computed from its trades, into the same minute rows with the same SQL
(:func:`minute_sql`). Nothing is ever wrong for lack of a rollup, only slower.

Built by ``wrdata rollup`` (every sealed partition without a valid rollup) and by
``wrdata compact`` (the partitions it rewrote); :func:`build_rollups` underneath.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ..storage.fs import StorageFS, resolve_root
from ..storage.layout import DAY_NS
from .connection import connect, snapshot_of, state_of
from .helpers import _NS, Filter, _clock, _date, _writers, bucket_of_ns, ns_to_ts, order_key, parse_interval, source

log = logging.getLogger("wrdata.queries")

#: the folder under the root (not a table: no reader of tables looks in it)
ROLLUP_DIR = "ohlcv_1m"
ROLLUP_NAME = "_ohlcv_1m.parquet"
#: bumped whenever what a rollup holds changes: older files are then stale
ROLLUP_VERSION = 1
MINUTE_NS = 60_000_000_000
CLOCKS = ("event", "recv")

KEY_TYPE = pa.struct([
    ("ts_recv", pa.int64()), ("writer", pa.string()), ("conn", pa.int64()), ("seq", pa.int64()), ("idx", pa.int64()),
])
ROLLUP_SCHEMA = pa.schema([
    ("clock", pa.string()), ("provider", pa.string()), ("symbol", pa.string()), ("minute", pa.int64()),
    ("open", pa.float64()), ("open_key", KEY_TYPE), ("high", pa.float64()), ("low", pa.float64()),
    ("close", pa.float64()), ("close_key", KEY_TYPE), ("volume", pa.float64()), ("notional", pa.float64()),
    ("trades", pa.int64()),
])
COLUMNS = [f.name for f in ROLLUP_SCHEMA if f.name != "clock"]

_META_KIND = b"wrdata.rollup"
_META_VERSION = b"wrdata.rollup_version"
_META_FILES = b"wrdata.rollup_files"
_META_DROPS = b"wrdata.rollup_drops"
NO_DROPS = "0"

#: the total-order key's columns, NULL ids as 0 (as order_key() packs them)
_KEY_COLS = (
    "epoch_ns(ts_recv) AS _t, CAST(writer AS VARCHAR) AS _w, CAST(coalesce(conn, 0) AS BIGINT) AS _c, "
    "CAST(coalesce(seq, 0) AS BIGINT) AS _s, CAST(coalesce(idx, 0) AS BIGINT) AS _i"
)
#: the same as one struct: what order_key() falls back to, NULLs aside
_KEY_STRUCT = (
    "struct_pack(t := epoch_ns(ts_recv), w := CAST(writer AS VARCHAR), c := CAST(coalesce(conn, 0) AS BIGINT), "
    "s := CAST(coalesce(seq, 0) AS BIGINT), i := CAST(coalesce(idx, 0) AS BIGINT))"
)


def _key_of(agg: str) -> str:
    """The key of the row ``agg`` (arg_min or arg_max by ``_o``) picks, as a struct."""
    return (f"struct_pack(ts_recv := {agg}(_t, _o), writer := {agg}(_w, _o), conn := {agg}(_c, _o), seq := {agg}(_s, _o), "
            f"idx := {agg}(_i, _o))")


def order_of(con: duckdb.DuckDBPyConnection, src: str, where: str, flt: Filter) -> str:
    """The expression :func:`minute_sql` orders rows by: :func:`.helpers.order_key`'s
    packed HUGEINT where the fields fit (the same order as the key struct, and about
    twice as fast to aggregate), else the key struct itself."""
    key = order_key(con, src, where, _writers(con, "trades", flt))
    return _KEY_STRUCT if key.startswith("(ts_recv") else key


def minute_sql(src: str, where: str, clock: str, order: str = _KEY_STRUCT) -> str:
    """The 1-minute rows (:data:`ROLLUP_SCHEMA` without ``clock``) of the trades of
    ``src`` matching ``where``: what a rollup file holds and what a query computes for
    the partitions without one. ``where`` must leave out trades without a price;
    ``order``: :func:`order_of` over the same rows."""
    minute = bucket_of_ns("1m", f"epoch_ns({_clock(clock)})")
    return f"""
        SELECT provider, symbol, minute,
               arg_min(price, _o) AS open, {_key_of('arg_min')} AS open_key, max(price) AS high, min(price) AS low,
               arg_max(price, _o) AS close, {_key_of('arg_max')} AS close_key,
               sum(size) AS volume, sum(price * size) AS notional, count(*) AS trades
        FROM (SELECT provider, symbol, price, size, {minute} AS minute, {_KEY_COLS}, {order} AS _o FROM {src} WHERE {where})
        GROUP BY provider, symbol, minute
    """


# ---------------------------------------------------------------------------------------
# what a rollup says about itself, and whether a snapshot agrees


@dataclass
class RollupInfo:
    path: str
    provider: str
    date: str
    version: int | None
    files: list[tuple[str, int]]
    drops: str | None
    rows: int
    size: int


@dataclass
class RollupStatus:
    provider: str
    date: str
    #: valid, stale, missing (no rollup yet), open (journal rows: not sealed), unreadable
    state: str
    path: str | None = None
    reason: str = ""


def rollup_path(base: str, provider: str, date: str) -> str:
    return f"{base}/{ROLLUP_DIR}/provider={provider}/date={date}/{ROLLUP_NAME}"


def list_rollups(fs: pafs.FileSystem, base: str) -> dict[tuple[str, str], pafs.FileInfo]:
    """(provider, date) → the rollup file there (one listing of the folder tree)."""
    try:
        infos = fs.get_file_info(pafs.FileSelector(f"{base}/{ROLLUP_DIR}", recursive=True, allow_not_found=True))
    except (FileNotFoundError, NotADirectoryError):
        return {}
    out = {}
    for i in infos:
        if i.type != pafs.FileType.File or i.base_name != ROLLUP_NAME:
            continue
        parts = i.path.rsplit("/", 3)
        if len(parts) < 3 or not parts[-3].startswith("provider=") or not parts[-2].startswith("date="):
            continue
        out[(parts[-3].split("=", 1)[1], parts[-2].split("=", 1)[1])] = i
    return out


_info_cache: dict[tuple[str, int, int | None], RollupInfo] = {}
_cache_lock = threading.Lock()


def read_info(fs: pafs.FileSystem, fi: pafs.FileInfo) -> RollupInfo:
    """The footer of a rollup file (cached by path, size and mtime); raises if it cannot
    be read or is no rollup."""
    key = (fi.path, fi.size or 0, fi.mtime_ns)
    with _cache_lock:
        hit = _info_cache.get(key)
    if hit is not None:
        return hit
    with fs.open_input_file(fi.path) as fh:
        md = pq.read_metadata(fh)
    kv = md.metadata or {}
    if kv.get(_META_KIND) != ROLLUP_DIR.encode():
        raise ValueError("not a wrdata rollup (no wrdata.rollup in its footer)")
    parts = fi.path.rsplit("/", 3)
    try:
        version = int(kv[_META_VERSION])
        files = [(str(n), int(s)) for n, s in json.loads(kv[_META_FILES])]
    except (KeyError, ValueError, TypeError) as e:
        raise ValueError(f"bad rollup footer: {e}") from None
    drops = kv.get(_META_DROPS)
    info = RollupInfo(fi.path, parts[-3].split("=", 1)[1], parts[-2].split("=", 1)[1], version, sorted(files),
                      drops.decode() if drops is not None else None, md.num_rows, fi.size or 0)
    with _cache_lock:
        if len(_info_cache) > 4096:
            _info_cache.clear()
        _info_cache[key] = info
    return info


def _partition_files(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, str], list[tuple[str, int]]]:
    """(provider, date) → sorted (name, size) of the snapshot's sealed trades files."""
    out: dict[tuple[str, str], list[tuple[str, int]]] = {}
    for f in snapshot_of(con, "trades").files:
        out.setdefault((f.provider, f.date), []).append((f.path.rsplit("/", 1)[-1], f.size))
    return {k: sorted(v) for k, v in out.items()}


def _tail_partitions(con: duckdb.DuckDBPyConnection) -> set[tuple[str, str]]:
    tail = snapshot_of(con, "trades").tail
    if tail is None or not tail.num_rows:
        return set()
    g = pa.table({"p": tail.column("provider").cast(pa.string()), "d": tail.column("date").cast(pa.string())}).group_by(["p", "d"]).aggregate([])
    return set(zip(g.column("p").to_pylist(), g.column("d").to_pylist(), strict=True))


_fp_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def drop_fingerprints(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, str], str]:
    """(provider, date) → fingerprint of the merged view's dropped keys whose rows lie in
    that partition (absent: none dropped there, :data:`NO_DROPS`). Once per snapshot."""
    drops = state_of(con).drops
    hit = _fp_cache.get(con)
    if hit is not None and hit[0] is drops:
        return hit[1]
    fps = fingerprints(drops.keys if drops is not None else None)
    _fp_cache[con] = (drops, fps)
    return fps


def fingerprints(keys: pa.Table | None) -> dict[tuple[str, str], str]:
    """Per (provider, UTC date of ts_recv): ``<count>:<sha256>`` of the sorted keys."""
    if keys is None or not keys.num_rows:
        return {}
    from ..storage.layout import date_str

    ints = {c: pc.fill_null(keys.column(c).cast(pa.int64()), -1) for c in ("ts_recv_ns", "conn", "seq", "idx")}
    t = pa.table({"provider": keys.column("provider").cast(pa.string()), "writer": keys.column("writer").cast(pa.string()),
                  **ints})
    t = t.sort_by([("provider", "ascending"), ("ts_recv_ns", "ascending"), ("writer", "ascending"), ("conn", "ascending"),
                   ("seq", "ascending"), ("idx", "ascending")])
    ts = t.column("ts_recv_ns").to_numpy()
    days = ts // DAY_NS
    provs = t.column("provider").to_pylist()
    out = {}
    start = 0
    n = t.num_rows
    while start < n:
        end = start + 1
        p, d = provs[start], days[start]
        # rows are sorted by provider then ts_recv: a partition is one run
        while end < n and provs[end] == p and days[end] == d:
            end += 1
        h = hashlib.sha256()
        part = t.slice(start, end - start)
        enc = pc.dictionary_encode(part.column("writer")).combine_chunks()
        h.update("\n".join(enc.dictionary.to_pylist()).encode())
        h.update(enc.indices.to_numpy(zero_copy_only=False).astype(np.int64).tobytes())
        for c in ("ts_recv_ns", "conn", "seq", "idx"):
            h.update(part.column(c).to_numpy().astype(np.int64).tobytes())
        out[(p, date_str(int(d)))] = f"{end - start}:{h.hexdigest()}"
        start = end
    return out


def _why_stale(info: RollupInfo, files: list[tuple[str, int]] | None, fp: str) -> str | None:
    if info.version != ROLLUP_VERSION:
        return f"built by rollup version {info.version}, this wrdata's is {ROLLUP_VERSION}"
    if not files:
        return "the partition has no sealed trades files any more"
    if info.files != files:
        return (f"built from {len(info.files)} trades files, the partition now has {len(files)} "
                "(sealed, compacted or removed since)" if len(info.files) != len(files)
                else "the partition's trades files changed since it was built (compacted or rewritten)")
    if info.drops != fp:
        return "the merged view drops other duplicates in this partition than when it was built"
    return None


def rollup_status(
    con: duckdb.DuckDBPyConnection, providers: list[str] | None = None, dates: list[str] | None = None,
) -> list[RollupStatus]:
    """The state of every partition's rollup against ``con``'s snapshot: partitions with
    sealed trades files, and rollup files whose partition has none. Sorted."""
    state = state_of(con)
    fs, base, _ = resolve_root(state.root, state.filesystem)
    files = _partition_files(con)
    tails = _tail_partitions(con)
    listing = list_rollups(fs, base)
    fps = drop_fingerprints(con)
    out = []
    for key in sorted(set(files) | set(listing)):
        p, d = key
        if (providers is not None and p not in providers) or (dates is not None and d not in dates):
            continue
        fi = listing.get(key)
        if fi is None:
            out.append(RollupStatus(p, d, "open" if key in tails else "missing", None,
                                    "the journal holds rows of it (not sealed)" if key in tails else "no rollup"))
            continue
        try:
            info = read_info(fs, fi)
        except Exception as e:  # noqa: BLE001 - whatever a damaged file raises
            out.append(RollupStatus(p, d, "unreadable", fi.path, f"{type(e).__name__}: {e}"))
            continue
        why = _why_stale(info, files.get(key), fps.get(key, NO_DROPS))
        if why is None and key in tails:
            out.append(RollupStatus(p, d, "open", fi.path, "not used while the journal holds rows of the partition"))
        else:
            out.append(RollupStatus(p, d, "stale" if why else "valid", fi.path, why or ""))
    return out


# ---------------------------------------------------------------------------------------
# building


@dataclass
class RollupResult:
    provider: str
    date: str
    #: built, valid (already: left alone), skipped (journal rows, or no trades files)
    status: str
    path: str | None = None
    reason: str = ""
    rows: int = 0
    bytes: int = 0
    files: int = 0
    seconds: float = 0.0


def build_rollups(
    root: str,
    dates: list[str] | str | None = None,
    providers: list[str] | str | None = None,
    *,
    filesystem: pafs.FileSystem | str | None = None,
    journal: bool | str = True,
    force: bool = False,
    con: duckdb.DuckDBPyConnection | None = None,
) -> list[RollupResult]:
    """Write the minute rollup of every sealed (provider, date) partition of ``trades``
    (only these ``dates``/``providers``) that has no valid one (``force``: every one).

    A partition with journal rows (still being recorded, or a crashed writer's segment
    not yet sealed) is skipped: its rollup would be stale at once. ``con``: a connection
    of :func:`.connect` over ``root`` to take the snapshot from (default: a new one)."""
    dates = [dates] if isinstance(dates, str) else (list(dates) if dates is not None else None)
    providers = [providers] if isinstance(providers, str) else (list(providers) if providers is not None else None)
    own = con is None
    if con is None:
        con = connect(root, filesystem=filesystem, journal=journal, tables=("trades",))
    try:
        state = state_of(con)
        sfs = StorageFS(state.root, journal_dir=tempfile.gettempdir(), filesystem=state.filesystem, fsync=True)
        files = _partition_files(con)
        fps = drop_fingerprints(con)
        out = []
        for st in rollup_status(con, providers, dates):
            key = (st.provider, st.date)
            if st.state == "open":
                out.append(RollupResult(st.provider, st.date, "skipped", st.path, "the journal holds rows of it (not sealed)"))
            elif key not in files:
                out.append(RollupResult(st.provider, st.date, "skipped", st.path, "no sealed trades files"))
            elif st.state == "valid" and not force:
                out.append(RollupResult(st.provider, st.date, "valid", st.path, "up to date"))
            else:
                out.append(_build_one(con, sfs, st.provider, st.date, files[key], fps.get(key, NO_DROPS), st.reason))
        return out
    finally:
        if own:
            con.close()


def _build_one(con, sfs: StorageFS, provider: str, date: str, files: list[tuple[str, int]], fp: str, why: str) -> RollupResult:
    from ..storage.layout import day_from_str

    t0 = time.perf_counter()
    day = day_from_str(date)
    flt = Filter([provider], None, day * DAY_NS, (day + 1) * DAY_NS)
    src = source(con, "trades", flt)
    where = flt.where("trades") + " AND price IS NOT NULL"
    order = order_of(con, src, where, flt)
    tables = []
    for clock in CLOCKS:
        t = con.sql(f"SELECT '{clock}' AS clock, * FROM ({minute_sql(src, where, clock, order)}) "
                    "ORDER BY provider, symbol, minute").to_arrow_table()
        tables.append(t.cast(ROLLUP_SCHEMA))
    final = rollup_path(sfs.root, provider, date)
    meta = {
        _META_KIND: ROLLUP_DIR.encode(), _META_VERSION: str(ROLLUP_VERSION).encode(), _META_FILES: json.dumps(files).encode(),
        _META_DROPS: fp.encode(), b"wrdata.provider": provider.encode(), b"wrdata.date": date.encode(),
    }
    out, tmp = sfs.seal_open(final)
    pw = None
    try:
        pw = pq.ParquetWriter(out, ROLLUP_SCHEMA, compression="zstd", compression_level=9)
        for t in tables:
            if t.num_rows:
                # one clock per row group: a query reads only its clock's
                pw.write_table(t, row_group_size=max(t.num_rows, 1))
        pw.add_key_value_metadata(meta)
        pw.close()
        pw = None
        size = sfs.seal_commit(out, tmp, final, replace=True)
    except BaseException:
        sfs.seal_abort(out, tmp, pw)
        raise
    rows = sum(t.num_rows for t in tables)
    took = time.perf_counter() - t0
    log.info("rollup: %s/%s: %d minute rows from %d trades files in %.2f s (%s)", provider, date, rows, len(files), took,
             why or "new")
    return RollupResult(provider, date, "built", final, why, rows, size, len(files), took)


# ---------------------------------------------------------------------------------------
# reading: ohlcv() through rollups

_counter = [0]


def usable(interval: str, start: int | None, end: int | None, clock: str) -> bool:
    """Whether bars of ``interval`` over ``[start, end)`` can come from minute rows: the
    interval is whole minutes (or months), and each bound selects whole partitions
    (midnight UTC) or, on the receive clock, whole minutes."""
    n, unit = parse_interval(interval)
    if unit != "M" and (n * _NS[unit]) % MINUTE_NS:
        return False
    for t in (start, end):
        if t is None or t % DAY_NS == 0 or (clock == "recv" and t % MINUTE_NS == 0):
            continue
        return False
    return True


def ohlcv_sql(con: duckdb.DuckDBPyConnection, interval: str, flt: Filter, clock: str) -> str | None:
    """The SQL of :func:`.helpers.ohlcv` through the valid rollups of the partitions it
    reads, the other partitions from their trades; ``None`` when no rollup can serve (the
    caller then runs the query on the trades alone)."""
    if not usable(interval, flt.start, flt.end, clock):
        return None
    state = state_of(con)
    if "trades" not in state.snapshots:
        return None
    files = _partition_files(con)
    tails = _tail_partitions(con)
    provs = set(flt.file_providers) if flt.file_providers is not None else None
    lo = _date(flt.start) if flt.start is not None else None
    hi = _date(flt.end - 1) if flt.end is not None else None
    wanted = [k for k in sorted(files) if (provs is None or k[0] in provs) and (lo is None or k[1] >= lo)
              and (hi is None or k[1] <= hi) and k not in tails]
    if not wanted:
        return None
    fs, base, _ = resolve_root(state.root, state.filesystem)
    listing = list_rollups(fs, base)
    if not listing:
        return None
    fps = drop_fingerprints(con)
    used: set[tuple[str, str]] = set()
    tables = []
    for key in wanted:
        fi = listing.get(key)
        if fi is None:
            continue
        try:
            info = read_info(fs, fi)
            why = _why_stale(info, files[key], fps.get(key, NO_DROPS))
            if why is not None:
                log.debug("ohlcv: rollup of %s/%s is stale (%s): its trades are read instead", *key, why)
                continue
            tables.append(_read_rows(fs, fi.path, clock))
        except Exception as e:  # noqa: BLE001 - a damaged rollup costs speed, never an answer
            log.warning("ohlcv: ignoring the unreadable rollup %s (%s: %s): %s/%s is computed from its trades "
                        "(`wrdata verify` reports it, `wrdata rollup` rebuilds it)", fi.path, type(e).__name__, e, *key)
            continue
        used.add(key)
    if not used:
        return None
    log.debug("ohlcv: %d partitions from minute rollups, the rest from trades", len(used))
    _counter[0] += 1
    name = f"_wrdata_rollup_{_counter[0] % 8}"
    con.register(name, pa.concat_tables(tables))
    rollup_flt = copy.copy(flt)
    rollup_flt.start = rollup_flt.end = None  # providers and symbols only: the bounds are handled below
    conds = [rollup_flt.where("trades")]
    if clock == "recv":
        # whole receive minutes: the minute is in [start, end) iff its trades' ts_recv are
        if flt.start is not None:
            conds.append(f"minute >= {flt.start}")
        if flt.end is not None:
            conds.append(f"minute < {flt.end}")
    cols = ", ".join(COLUMNS)
    parts = [f"SELECT {cols} FROM {name} WHERE {' AND '.join(conds)}"]
    raw = _raw_rest(con, flt, used)
    if raw is not None:
        src, where = raw
        parts.append(f"SELECT {cols} FROM ({minute_sql(src, where, clock, order_of(con, src, where, flt))})")
    b = bucket_of_ns(interval, "minute")
    return f"""
        SELECT {ns_to_ts('b')} AS bar, provider, symbol, open, high, low, close, volume, trades, vwap
        FROM (
            SELECT {b} AS b, provider, symbol,
                   arg_min(open, open_key) AS open, max(high) AS high, min(low) AS low, arg_max(close, close_key) AS close,
                   sum(volume) AS volume, CAST(sum(trades) AS BIGINT) AS trades, sum(notional) / nullif(sum(volume), 0) AS vwap
            FROM ({' UNION ALL '.join(parts)})
            GROUP BY ALL
        )
        ORDER BY provider, symbol, b
    """


def _raw_rest(con, flt: Filter, used: set[tuple[str, str]]) -> tuple[str, str] | None:
    """(source, where) of the trades ``flt`` selects outside the partitions served by
    rollups, or None if there are none."""
    snap = snapshot_of(con, "trades")
    provs = set(flt.file_providers) if flt.file_providers is not None else None
    left = [f for f in snap.files if (f.provider, f.date) not in used and (provs is None or f.provider in provs)
            and (flt.start is None or f.last_ts >= flt.start) and (flt.end is None or f.first_ts < flt.end)]
    if not left and (snap.tail is None or not snap.tail.num_rows):
        return None
    src = source(con, "trades", flt, exclude=used)
    where = flt.where("trades") + " AND price IS NOT NULL"
    return src, where


def _read_rows(fs: pafs.FileSystem, path: str, clock: str) -> pa.Table:
    with fs.open_input_file(path) as fh:
        pf = pq.ParquetFile(fh)
        md = pf.metadata
        ci = pf.schema_arrow.get_field_index("clock")
        groups = []
        for i in range(md.num_row_groups):
            st = md.row_group(i).column(ci).statistics
            if st is not None and st.has_min_max and not (st.min <= clock <= st.max):
                continue
            groups.append(i)
        t = pf.read_row_groups(groups) if groups else ROLLUP_SCHEMA.empty_table()
    t = t.cast(ROLLUP_SCHEMA)
    mask = pc.equal(t.column("clock"), clock)
    if pc.all(mask).as_py() is not False:  # the row groups read hold this clock only (filtering structs costs)
        return t.select(COLUMNS)
    return t.filter(mask).select(COLUMNS)


__all__ = [
    "ROLLUP_DIR", "ROLLUP_NAME", "ROLLUP_SCHEMA", "ROLLUP_VERSION", "RollupInfo", "RollupResult", "RollupStatus",
    "build_rollups", "drop_fingerprints", "list_rollups", "minute_sql", "ohlcv_sql", "read_info", "rollup_path",
    "rollup_status", "usable",
]
