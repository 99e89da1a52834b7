"""Sealing: a journal segment becomes one Parquet file under its final name.

The segment is read back unit by unit (only verified units: see :mod:`.journal`) and
written as row groups of about ``row_group_rows`` rows, so memory stays bounded by a
row group whatever the segment's size. The file is written under a temporary name and
moved to ``<writer>-<first_ts>-<last_ts>.parquet`` only when complete, then the segment
is removed. Re-sealing a segment (a crash between the move and the removal) writes the
same name with the same content: sealing is idempotent.

Row order: the writer journals every (table, provider, date) segment in total order
(``ts_recv, conn, seq, idx`` [, ``pos``]; provider and writer are constant per file),
sorting each flush and starting a new segment if a late row would go behind what is
already journaled. A sealed file is therefore sorted by the total-order key, recorded
as the Parquet ``sorting_columns``, and replay merges files without sorting them. If
a segment is found out of order anyway (written by other code), it is sorted in memory.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .fs import StorageFS
from .journal import SegmentInfo, SegmentReader
from .layout import partition_dir, sealed_name
from .schema import PARQUET_DEFAULTS, SORT_KEYS, parquet_options

log = logging.getLogger("wrdata.storage")


class _OutOfOrder(Exception):
    pass


@dataclass
class SealResult:
    path: str | None  # the sealed file, None if the segment had no valid rows
    rows: int
    bytes: int
    info: SegmentInfo


def key_columns(batch: pa.RecordBatch | pa.Table, table: str) -> list[np.ndarray]:
    cols = []
    for k in SORT_KEYS[table]:
        c = batch.column(k)
        if pa.types.is_timestamp(c.type):
            c = c.cast(pa.int64())
        if c.null_count:
            c = pc.fill_null(c, 0)
        cols.append(np.asarray(c))
    return cols


def is_sorted(cols: list[np.ndarray]) -> bool:
    """Whether rows are in lexicographic order of ``cols`` (ties allowed)."""
    n = len(cols[0])
    if n < 2:
        return True
    undecided = np.ones(n - 1, dtype=bool)
    for c in cols:
        d = np.diff(c)
        if (d[undecided] < 0).any():
            return False
        undecided &= d == 0
        if not undecided.any():
            return True
    return True


def sort_batch(batch: pa.RecordBatch | pa.Table, table: str):
    idx = pc.sort_indices(batch, sort_keys=[(k, "ascending") for k in SORT_KEYS[table]])
    return batch.take(idx)


def first_last_key(cols: list[np.ndarray]) -> tuple[tuple, tuple]:
    return tuple(int(c[0]) for c in cols), tuple(int(c[-1]) for c in cols)


def seal_segment(
    fs: StorageFS,
    segment_path: str,
    table: str,
    provider: str,
    day: int,
    writer: str,
    *,
    compression_level: int | None = None,
    row_group_rows: int | None = None,
    row_group_bytes: int | None = None,
) -> SealResult:
    """Seal one segment; raises ``OSError`` if the sealed file cannot be written (the
    segment is then left as it was, and no file is visible under the final name)."""
    try:
        return _seal(fs, segment_path, table, provider, day, writer, compression_level, row_group_rows, row_group_bytes, sort=False)
    except _OutOfOrder:
        log.warning("journal segment %s is not in total order: sorting it in memory", segment_path)
        return _seal(fs, segment_path, table, provider, day, writer, compression_level, row_group_rows, row_group_bytes, sort=True)


def _seal(fs, segment_path, table, provider, day, writer, level, rg_rows, rg_bytes, sort: bool) -> SealResult:
    reader = SegmentReader(segment_path)
    # the temporary name derives from the segment's (unique) name; the final name needs
    # first_ts/last_ts, known at the end
    directory = partition_dir(fs.root, table, provider, day)
    placeholder = f"{directory}/{segment_path.rsplit('/', 1)[-1]}.parquet"
    fs.remove_stale_tmps(placeholder)  # a seal of this segment killed half-way left its file
    batches = reader
    if sort:
        batches = list(reader)
        if batches:
            rg = rg_rows or PARQUET_DEFAULTS["row_group_rows"]
            batches = sort_batch(pa.Table.from_batches(batches), table).combine_chunks().to_batches(max_chunksize=rg)
    path, rows, size = write_sealed(
        fs, batches, table, provider, day, writer, placeholder=placeholder, check_order=not sort,
        compression_level=level, row_group_rows=rg_rows, row_group_bytes=rg_bytes, replace=False,
    )
    return SealResult(path, rows, size, reader.info)


def write_sealed(
    fs: StorageFS,
    batches: Iterable[pa.RecordBatch],
    table: str,
    provider: str,
    day: int,
    writer: str,
    *,
    placeholder: str,
    check_order: bool = True,
    metadata: dict[str, str] | None = None,
    compression_level: int | None = None,
    row_group_rows: int | None = None,
    row_group_bytes: int | None = None,
    replace: bool = True,
) -> tuple[str | None, int, int]:
    """Write ``batches`` (one writer's rows of one table/provider/day, already in total
    order) as one sealed file: the Parquet settings of :func:`parquet_options`, row groups
    of about ``row_group_rows`` rows, under a temporary name derived from ``placeholder``
    (a unique path in the partition directory), then moved to
    ``<writer>-<first_ts>-<last_ts>.parquet``. Returns ``(path, rows, bytes)``, path
    ``None`` if there were no rows. The capture's sealing and ``compact`` both write
    through here, so every sealed file has the same layout.

    With ``check_order`` the rows are checked against the total order as they stream by
    (raises :class:`_OutOfOrder`, leaving nothing behind). ``metadata`` is added to the
    file's key-value metadata. ``replace=False`` keeps a file already under the final
    name on object stores (see :meth:`.fs.StorageFS.seal_commit`).
    """
    rg_rows = row_group_rows or PARQUET_DEFAULTS["row_group_rows"]
    rg_bytes = row_group_bytes or PARQUET_DEFAULTS["row_group_bytes"]
    opts = parquet_options(table, compression_level=compression_level)
    out = tmp = pw = None
    rows = 0
    first_ts = last_ts = None
    prev_key: tuple | None = None
    buf: list[pa.RecordBatch] = []
    buf_rows = buf_bytes = 0
    directory = partition_dir(fs.root, table, provider, day)
    try:
        for batch in batches:
            if batch.num_rows == 0:
                continue
            if check_order:
                cols = key_columns(batch, table)
                first, last = first_last_key(cols)
                if (prev_key is not None and first < prev_key) or not is_sorted(cols):
                    raise _OutOfOrder
                prev_key = last
            if pw is None:
                out, tmp = fs.seal_open(placeholder)
                file_schema = batch.schema.with_metadata(
                    {**(batch.schema.metadata or {}), b"wrdata.writer": writer.encode(), b"wrdata.provider": provider.encode()}
                )
                pw = pq.ParquetWriter(out, file_schema, **opts)
            ts = batch.column("ts_recv")
            if first_ts is None:
                first_ts = ts[0].value
            last_ts = ts[-1].value
            buf.append(batch)
            buf_rows += batch.num_rows
            buf_bytes += batch.nbytes
            rows += batch.num_rows
            if buf_rows >= rg_rows:
                # whole row groups of rg_rows rows; the rest waits for the next batches. A
                # journal unit holds one flush (300k rows at 300k msgs/s): written as one
                # group it made a replay window or a range query decode all of it
                t = pa.Table.from_batches(buf)
                cut = buf_rows // rg_rows * rg_rows
                pw.write_table(t.slice(0, cut), row_group_size=rg_rows)
                rest = t.slice(cut)
                buf, buf_rows, buf_bytes = rest.to_batches(), rest.num_rows, rest.nbytes
            elif buf_bytes >= rg_bytes:
                pw.write_table(pa.Table.from_batches(buf), row_group_size=buf_rows)
                buf, buf_rows, buf_bytes = [], 0, 0
        if pw is None:
            return None, 0, 0
        if buf_rows:
            pw.write_table(pa.Table.from_batches(buf), row_group_size=max(rg_rows, buf_rows))
        pw.add_key_value_metadata(
            {**(metadata or {}), "wrdata.first_ts": str(first_ts), "wrdata.last_ts": str(last_ts), "wrdata.rows": str(rows)}
        )
        pw.close()
        final = f"{directory}/{sealed_name(writer, first_ts, last_ts)}"
        size = fs.seal_commit(out, tmp, final, replace=replace)
        out = None
    except BaseException:
        if tmp is not None:
            fs.seal_abort(out, tmp, pw)
        raise
    return final, rows, size
