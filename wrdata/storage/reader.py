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

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from ..message import StreamMessage
from .convert import RawFrame, to_messages, to_raw_frames
from .fs import resolve_root
from .journal import SegmentReader
from .layout import SealedFile, _as_list, _ts, day_from_str, list_sealed, list_segments
from .schema import PARTITION_SCHEMA, SORT_KEYS, conform, schema

Time = int | datetime | str | None


def dataset(root: str, table: str, *, filesystem: pafs.FileSystem | str | None = None, files: list[str] | None = None) -> ds.Dataset:
    """A pyarrow dataset of one table's sealed files (all of them, or ``files``).

    Columns: the table's schema plus ``provider`` (string) and ``date`` (date32).
    Files of older schema versions read with missing columns null.
    """
    fs, base, _ = resolve_root(root, filesystem)
    full = pa.schema(list(schema(table)) + list(PARTITION_SCHEMA), metadata=schema(table).metadata)
    part = ds.partitioning(PARTITION_SCHEMA, flavor="hive")
    tdir = f"{base}/{table}"
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
    if t.num_rows < 2:
        return t
    # dictionary columns sort by index, not value: sort on decoded strings
    tmp = t
    for k in ("provider", "writer"):
        c = tmp.column(k)
        if pa.types.is_dictionary(c.type):
            tmp = tmp.set_column(tmp.schema.get_field_index(k), k, c.cast(pa.string()))
    idx = pc.sort_indices(tmp, sort_keys=total_order_keys(table))
    return t.take(idx)


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
    snap = snapshot(root, table, provider, lo, hi, syms, journal=journal, filesystem=filesystem)
    files, tail = snap.files, snap.tail
    d = dataset(root, table, filesystem=filesystem, files=[f.path for f in files])
    flt = None
    if lo is not None:
        flt = ds.field("ts_recv") >= pa.scalar(lo, pa.timestamp("ns", "UTC"))
    if hi is not None:
        f2 = ds.field("ts_recv") < pa.scalar(hi, pa.timestamp("ns", "UTC"))
        flt = f2 if flt is None else flt & f2
    if syms is not None and table != "raw":
        f3 = ds.field("symbol").isin(syms)
        flt = f3 if flt is None else flt & f3
    t = d.to_table(filter=flt)
    if tail is not None and tail.num_rows:
        t = pa.concat_tables([t.cast(tail.schema), tail]) if t.num_rows else tail
    t = sort_total_order(t, table)
    if columns is not None:
        t = t.select(columns)
    return t


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
    _, base, local = resolve_root(root, filesystem)
    if not local:
        return None
    j = os.path.join(base, "_journal")
    return j if os.path.isdir(j) else None


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
