"""Reading a recording: sealed files, the unsealed journal tail, datasets for DuckDB.

- :func:`dataset` is a plain :mod:`pyarrow.dataset` over the Hive layout (``provider``
  and ``date`` as partition columns); DuckDB (``duckdb.sql("... FROM ds")``), Polars
  (``pl.scan_pyarrow_dataset``) and pyarrow read it, and so do tools that know nothing
  of wrdata, straight from the files.
- :func:`read_journal` returns the verified rows of journal segments not yet sealed,
  so queries and replay see data up to the last flush.
- :func:`read_table` combines both, pruned by provider, time and symbol, in total order.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from ..message import StreamMessage
from .convert import RawFrame, to_messages, to_raw_frames
from .fs import find_journal, resolve_root
from .journal import SegmentReader
from .layout import SealedFile, _as_list, _ts, day_from_str, list_sealed, list_segments
from .remote import endpoint_of
from .schema import PARTITION_SCHEMA, SORT_KEYS, conform, schema
from .seal import is_sorted, key_columns

log = logging.getLogger("wrdata.storage")

Time = int | datetime | str | None


def dataset(
    root: str, table: str, *, filesystem: pafs.FileSystem | str | None = None, files: list[str] | list[SealedFile] | None = None
) -> ds.Dataset:
    """A pyarrow dataset of one table's sealed files (all of them, or ``files``).

    Columns: the table's schema plus ``provider`` (string) and ``date`` (date32).
    Files of older schema versions read with missing columns null.

    ``files`` as :class:`SealedFile` (from :func:`list_sealed`) is the fast way, and the
    one that matters on object stores: each file's size comes from the listing (no
    ``HEAD`` per file), each fragment carries the ``ts_recv`` range its name states as a
    guarantee (a scan filtered on ``ts_recv`` skips files outside it without a request,
    the pruning by file name that plain SQL gets on local roots), and fragments are
    cached per process with the footers they have read, so reading a file again (the
    next replay window, the next query) costs only the column chunks it needs.
    """
    fs, base, _ = resolve_root(root, filesystem)
    full = pa.schema(list(schema(table)) + list(PARTITION_SCHEMA), metadata=schema(table).metadata)
    part = ds.partitioning(PARTITION_SCHEMA, flavor="hive")
    tdir = f"{base}/{table}"
    if files is not None and files and isinstance(files[0], SealedFile):
        fmt = _PARQUET
        frags = [_fragment(fs, f) for f in files]  # type: ignore[arg-type]
        return ds.FileSystemDataset(frags, schema=full, format=fmt, filesystem=fs)
    if files is not None:
        return ds.dataset(files, schema=full, format="parquet", filesystem=fs, partitioning=part, partition_base_dir=tdir)
    info = fs.get_file_info(tdir)
    if info.type == pafs.FileType.NotFound:
        return ds.dataset([], schema=full, format="parquet", filesystem=fs)
    return ds.dataset(
        tdir,
        schema=full,
        format="parquet",
        filesystem=fs,
        partitioning=part,
        exclude_invalid_files=False,
        ignore_prefixes=[".", "_"],
    )


_PARQUET = ds.ParquetFileFormat()
_FRAGMENTS: OrderedDict[tuple, ds.Fragment] = OrderedDict()
_FRAGMENTS_LOCK = threading.Lock()
#: fragments (with the footers they read) kept per process; a footer is a few KB
FRAGMENT_CACHE_SIZE = 4096


def _fragment(fs: pafs.FileSystem, f: SealedFile) -> ds.Fragment:
    # a sealed file never changes under its name, except that compaction may replace it
    # by a superset under the same name: the size and time from the listing tell them apart
    key = (fs.type_name, endpoint_of(fs) if fs.type_name == "s3" else None, f.path, f.size, f.mtime_ns)
    with _FRAGMENTS_LOCK:
        frag = _FRAGMENTS.get(key)
        if frag is not None:
            _FRAGMENTS.move_to_end(key)
            return frag
    expr = (ds.field("provider") == f.provider) & (ds.field("date") == pa.scalar(day_from_str(f.date), pa.date32()))
    if f.first_ts >= 0 and f.last_ts >= f.first_ts:
        expr = expr & (ds.field("ts_recv") >= pa.scalar(f.first_ts, _TS)) & (ds.field("ts_recv") <= pa.scalar(f.last_ts, _TS))
    frag = _PARQUET.make_fragment(f.path, filesystem=fs, partition_expression=expr, file_size=f.size or None)
    with _FRAGMENTS_LOCK:
        _FRAGMENTS[key] = frag
        while len(_FRAGMENTS) > FRAGMENT_CACHE_SIZE:
            _FRAGMENTS.popitem(last=False)
    return frag


_TS = pa.timestamp("ns", "UTC")


def read_journal(
    journal_dir: str,
    table: str,
    provider: str | list[str] | None = None,
    start: Time = None,
    end: Time = None,
) -> pa.Table:
    """Verified rows of the journal segments of ``table`` (live writers' and dead
    writers' alike), with ``provider`` and ``date`` columns, in segment order."""
    segs = list_segments(journal_dir, table, provider)
    t, _ = _read_tail(segs, [], table, _ts(start), _ts(end), None)
    if t is None:
        return pa.schema(list(schema(table)) + list(PARTITION_SCHEMA), metadata=schema(table).metadata).empty_table()
    return t


def _filter_time(t: pa.Table, lo: int | None, hi: int | None) -> pa.Table:
    if lo is None and hi is None:
        return t
    ts = t.column("ts_recv").cast(pa.int64())
    mask = None
    if lo is not None:
        mask = pc.greater_equal(ts, lo)
    if hi is not None:
        m2 = pc.less(ts, hi)
        mask = m2 if mask is None else pc.and_(mask, m2)
    return t.filter(mask)


def total_order_keys(table: str) -> list[tuple[str, str]]:
    """Sort keys for the total order ``(ts_recv, provider, writer, conn, seq, idx)``."""
    keys = ["ts_recv", "provider", "writer"] + [k for k in SORT_KEYS[table] if k != "ts_recv"]
    return [(k, "ascending") for k in keys]


def sort_total_order(t: pa.Table, table: str) -> pa.Table:
    if t.num_rows < 2 or _in_total_order(t, table):
        return t
    # dictionary columns sort by index, not value: sort on decoded strings
    tmp = t
    for k in ("provider", "writer"):
        c = tmp.column(k)
        if pa.types.is_dictionary(c.type):
            tmp = tmp.set_column(tmp.schema.get_field_index(k), k, c.cast(pa.string()))
    idx = pc.sort_indices(tmp, sort_keys=total_order_keys(table))
    return t.take(idx)


def _in_total_order(t: pa.Table, table: str) -> bool:
    """Already in total order? (The usual case: one sealed file, or files of one writer
    one after the other.) Checking is vectorised and far cheaper than the sort and the
    copy of every column that ``take`` makes."""
    ts = t.column("ts_recv").cast(pa.int64()).to_numpy()
    d = np.diff(ts)
    if (d < 0).any():
        return False
    if (d > 0).all():
        return True  # no ties: the rest of the key does not matter
    # ties on ts_recv: the order of (provider, writer) strings decides unless each has one value
    for k in ("provider", "writer"):
        if k in t.column_names and len(pc.unique(t.column(k))) > 1:
            return False
    return is_sorted(key_columns(t, table))


@dataclass
class Snapshot:
    """What a reader reads at one moment: sealed files, and the journal rows not yet in
    any of them (``tail``: the table's schema plus ``provider`` and ``date``, already
    pruned by time and symbol; ``None`` if there are none)."""

    files: list[SealedFile]
    tail: pa.Table | None


def snapshot(
    root: str,
    table: str,
    provider: str | list[str] | None = None,
    start: Time = None,
    end: Time = None,
    symbols: str | list[str] | None = None,
    *,
    journal: bool | str = True,
    filesystem: pafs.FileSystem | str | None = None,
) -> Snapshot:
    """A consistent view of ``table``: every row exactly once, either in a listed sealed
    file or in the tail, even while writers seal concurrently (a segment whose sealed
    file is listed is skipped; if a segment vanishes while being read, everything is
    listed again). :func:`read_table` and ``wrdata.queries.connect`` read through this."""
    lo, hi = _ts(start), _ts(end)
    syms = _as_list(symbols)
    jdir = None
    if journal:
        jdir = journal if isinstance(journal, str) else _default_journal(root, filesystem)
    for _attempt in range(10):
        segs = list_segments(jdir, table, provider) if jdir else []
        files = list_sealed(root, table, provider, lo, hi, filesystem=filesystem)
        tail, vanished = _read_tail(segs, files, table, lo, hi, syms)
        if not vanished:
            break
    return Snapshot(files, tail)


def read_table(
    root: str,
    table: str,
    provider: str | list[str] | None = None,
    start: Time = None,
    end: Time = None,
    symbols: str | list[str] | None = None,
    *,
    journal: bool | str = True,
    filesystem: pafs.FileSystem | str | None = None,
    columns: list[str] | None = None,
) -> pa.Table:
    """Rows of ``table`` in total order, from sealed files (pruned by partition, file
    name and row-group statistics) and, with ``journal=True`` (or a journal path), the
    unsealed tail up to the last flush. ``start`` inclusive, ``end`` exclusive, on
    ``ts_recv``.

    Consistent while writers seal concurrently: a segment whose sealed file already
    exists (same writer and first/last ``ts_recv``) is skipped, and if a segment
    disappears while being read (sealed meanwhile) the listing is taken again.
    """
    lo, hi = _ts(start), _ts(end)
    syms = _as_list(symbols)
    flt = None
    if lo is not None:
        flt = ds.field("ts_recv") >= pa.scalar(lo, _TS)
    if hi is not None:
        f2 = ds.field("ts_recv") < pa.scalar(hi, _TS)
        flt = f2 if flt is None else flt & f2
    if syms is not None and table != "raw":
        f3 = ds.field("symbol").isin(syms)
        flt = f3 if flt is None else flt & f3
    for attempt in range(_VANISHED_RETRIES + 1):
        snap = snapshot(root, table, provider, lo, hi, syms, journal=journal, filesystem=filesystem)
        files, tail = snap.files, snap.tail
        d = dataset(root, table, filesystem=filesystem, files=files)
        try:
            t = _scan(d, flt, lo, hi, syms is None or table == "raw")
            break
        except (OSError, pa.ArrowException) as e:
            # a file listed a moment ago may be gone: compaction removed it after writing
            # its replacement (which a new listing shows, hiding it). Object stores do not
            # always say "not found" for it (a ranged GET of a missing key with a known
            # size fails as a stream error), so the listing tells, not the error
            if attempt == _VANISHED_RETRIES:
                raise
            now = {f.path for f in list_sealed(root, table, provider, lo, hi, filesystem=filesystem, supersede=False)}
            gone = [f.path for f in files if f.path not in now]
            if not gone:
                raise
            log.info("storage: %d listed files vanished while reading (compacted?), e.g. %s (%s): listing again", len(gone), gone[0], e)
    if tail is not None and tail.num_rows:
        t = pa.concat_tables([t.cast(tail.schema), tail]) if t.num_rows else tail
    t = sort_total_order(t, table)
    if columns is not None:
        t = t.select(columns)
    return t


_VANISHED_RETRIES = 5


def _scan(d: ds.Dataset, flt, lo: int | None, hi: int | None, time_only: bool) -> pa.Table:
    """``d.to_table(filter=flt)``; for a filter on ``ts_recv`` alone, without filtering
    row by row: sealed files are sorted by ``ts_recv``, so the rows of a time range are
    one slice of the row groups its statistics admit (a filter copies every column of
    every row, half the cost of a replay window read: bench/replay.py). Files whose rows
    turn out not to be sorted are read with the filter."""
    if flt is None or not time_only or not isinstance(d, ds.FileSystemDataset):
        return d.to_table(filter=flt)
    subs = []
    for frag in d.get_fragments(filter=flt):  # files pruned by their partition (name) ranges
        sub = frag.subset(flt)  # row groups pruned by their statistics
        if sub.num_row_groups:
            subs.append(sub)
    if not subs:
        return d.schema.empty_table()
    t = ds.FileSystemDataset(subs, schema=d.schema, format=d.format, filesystem=d.filesystem).to_table()
    ts = t.column("ts_recv").cast(pa.int64()).to_numpy()
    parts = []
    off = 0
    for sub in subs:  # to_table keeps the fragments' order and their row groups' order
        k = sum(rg.num_rows for rg in sub.row_groups)
        part = ts[off : off + k]
        if (np.diff(part) < 0).any():
            return d.to_table(filter=flt)
        a = int(np.searchsorted(part, lo, "left")) if lo is not None else 0
        b = int(np.searchsorted(part, hi, "left")) if hi is not None else k
        if b > a:
            parts.append(t.slice(off + a, b - a))
        off += k
    if off != t.num_rows:
        return d.to_table(filter=flt)
    return pa.concat_tables(parts) if parts else d.schema.empty_table()


def _read_tail(segs, files, table: str, lo, hi, syms) -> tuple[pa.Table | None, bool]:
    sealed = {(f.provider, f.date, f.writer, f.first_ts, f.last_ts) for f in files}
    full = pa.schema(list(schema(table)) + list(PARTITION_SCHEMA), metadata=schema(table).metadata)
    parts = []
    for seg in segs:
        r = SegmentReader(seg.path)
        batches = [b for b in r if b.num_rows]
        if r.info.error and r.info.error.startswith("cannot open"):
            return None, True  # sealed and removed while we looked: list again
        if not batches or (seg.provider, seg.date, seg.writer, r.info.first_ts, r.info.last_ts) in sealed:
            continue
        t = conform(table, pa.Table.from_batches(batches))
        n = t.num_rows
        t = t.append_column("provider", pa.array([seg.provider] * n, pa.string()))
        t = t.append_column("date", pa.array([day_from_str(seg.date)] * n, pa.int32()).cast(pa.date32()))
        parts.append(t.cast(full))
    if not parts:
        return None, False
    out = _filter_time(pa.concat_tables(parts), lo, hi)
    if syms is not None and table != "raw" and out.num_rows:
        out = out.filter(pc.is_in(out.column("symbol").cast(pa.string()), pa.array(syms)))
    return out, False


def _default_journal(root: str, filesystem) -> str | None:
    return find_journal(root, filesystem)


def read_messages(
    root: str,
    table: str,
    provider: str | list[str] | None = None,
    start: Time = None,
    end: Time = None,
    symbols: str | list[str] | None = None,
    **kw,
) -> list[StreamMessage]:
    """Messages of ``table`` (not ``raw``) in total order."""
    return to_messages(table, read_table(root, table, provider, start, end, symbols, **kw))


def read_raw(root: str, provider: str | list[str] | None = None, start: Time = None, end: Time = None, **kw) -> list[RawFrame]:
    """Raw frames in total order."""
    return to_raw_frames(read_table(root, "raw", provider, start, end, **kw))


def iter_batches(data: pa.Table, max_chunksize: int = 65536) -> Iterator[pa.RecordBatch]:
    yield from data.combine_chunks().to_batches(max_chunksize=max_chunksize)
