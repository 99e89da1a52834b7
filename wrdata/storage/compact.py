"""Compaction: merge a partition-day's small sealed files into few large ones.

Hourly rolls, restarts and late-row rolls leave tens of files per (table, provider,
date) and writer; readers pay per file (footers, requests on object stores), so once a
day is complete it is rewritten into one file per writer (or a few, ``max_rows`` each).

What stays the same
-------------------
Files stay **per writer**: rows of one writer are merged in the writer's total order
(``ts_recv, conn, seq, idx`` [, ``pos``]) and written through :func:`.seal.write_sealed`,
exactly like a freshly sealed file (same sort order, row groups, zstd level, statistics,
``<writer>-<first_ts>-<last_ts>.parquet`` name). Queries and replay order rows by the
total order, never by file, so they return the same rows in the same order before and
after. Files of older schema versions are rewritten in the current one (missing
columns null, which is how every reader already shows them).

The rule for concurrent readers
-------------------------------
1. New files are written first, each under a temporary name and then moved to its final
   name (atomic on a local disk; upload-then-move on object stores). Each new file
   lists the files it replaces in its footer (``wrdata.compacted_from``).
2. Only then (after ``grace`` seconds) are the replaced files removed.

A reader that lists a partition between 1 and 2 sees both; :func:`drop_superseded`
(which :func:`.layout.list_sealed`, and so every wrdata reader, applies) hides the
replaced ones. It costs nothing in the steady state: only a file whose name range
contains another file's range of the same writer has its footer read. A reader that
listed the old files *before* step 1 reads them until they are removed: ``grace``
is how long such a reader may take (``wrdata.queries.connect`` snapshots are renewed
with ``refresh()``); a reader still holding the old names after that gets a
file-not-found error, never wrong rows. Tools that know nothing of wrdata (a bare
DuckDB glob, Spark) see duplicates during the ``grace`` window: compact a day once it
is complete, not while something else reads it.

A file whose journal segment still exists (sealed, then the writer died before removing
the segment: recovery would seal it again under its old name) is left alone, and so
are files in use by no one but listed as replaced (those are simply removed: their
replacement exists). A crash at any point leaves every row readable exactly once
through wrdata, and a rerun finishes the job.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .fs import StorageFS
from .journal import SegmentReader
from .layout import DAY_NS, SealedFile, day_from_str, list_sealed, list_segments
from .schema import PARQUET_DEFAULTS, conform, schema
from .seal import _OutOfOrder, sort_batch, write_sealed

log = logging.getLogger("wrdata.storage")

COMPACTED_FROM = b"wrdata.compacted_from"

#: progress callback: (what, done, total)
Progress = Callable[[str, int, int], None]


# ---------------------------------------------------------------------------------------
# readers' side: hide files that a compacted file replaces


def drop_superseded(files: list[SealedFile], fs: pafs.FileSystem) -> list[SealedFile]:
    """``files`` without those a compacted file among them replaces (see the module doc).

    Only files whose ``[first_ts, last_ts]`` contains another file's range (same table,
    provider, date and writer) have their footer read, so a listing without an
    unfinished compaction costs no I/O beyond the listing itself.
    """
    replaced = superseded(files, fs)
    if not replaced:
        return files
    return [f for f in files if f.path not in replaced]


def superseded(files: list[SealedFile], fs: pafs.FileSystem) -> set[str]:
    """Paths in ``files`` that a compacted file in ``files`` lists as replaced."""
    groups: dict[tuple[str, str, str, str], list[SealedFile]] = {}
    for f in files:
        groups.setdefault((f.table, f.provider, f.date, f.writer), []).append(f)
    out: set[str] = set()
    for group in groups.values():
        if len(group) < 2:
            continue
        group = sorted(group, key=lambda f: (f.first_ts, -f.last_ts))
        # sweep: a file is contained in an earlier one iff the running max of last_ts
        # reaches its last_ts (ties on first_ts sort the wider file first)
        containers: list[SealedFile] = []
        reach = None
        holder: SealedFile | None = None
        for f in group:
            if reach is not None and f.last_ts <= reach and holder is not None:
                containers.append(holder)
            if reach is None or f.last_ts > reach:
                reach, holder = f.last_ts, f
        names = {f.path.rsplit("/", 1)[-1]: f.path for f in group}
        for c in {c.path: c for c in containers}.values():
            for name in compacted_from(c.path, fs):
                p = names.get(name)
                if p is not None and p != c.path:
                    out.add(p)
    return out


def compacted_from(path: str, fs: pafs.FileSystem) -> list[str]:
    """Names of the files the sealed file at ``path`` replaced ([] if it is not a
    compaction's output, or its footer cannot be read)."""
    try:
        with fs.open_input_file(path) as f:
            md = pq.read_metadata(f).metadata or {}
    except (OSError, pa.ArrowException) as e:
        log.warning("storage: cannot read the footer of %s: %s", path, e)
        return []
    v = md.get(COMPACTED_FROM)
    if not v:
        return []
    try:
        names = json.loads(v)
    except ValueError:
        log.warning("storage: bad %s in %s", COMPACTED_FROM.decode(), path)
        return []
    return [n for n in names if isinstance(n, str)]


# ---------------------------------------------------------------------------------------
# compaction


@dataclass
class CompactResult:
    table: str
    provider: str
    date: str
    files_before: int = 0
    files_after: int = 0
    rows: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why)


def compact_partition(
    root: str,
    table: str,
    provider: str,
    date: str,
    *,
    filesystem: pafs.FileSystem | str | None = None,
    journal_dir: str | None = None,
    max_rows: int | None = None,
    grace: float = 0.0,
    dry_run: bool = False,
    compression_level: int | None = None,
    row_group_rows: int | None = None,
    progress: Progress | None = None,
) -> CompactResult:
    """Compact one (table, provider, date) partition; see the module doc for the rules.

    ``max_rows`` caps rows per output file (files are only split between input files,
    so each output replaces whole inputs). ``journal_dir``: where to look for pending
    segments (default ``<root>/_journal`` for a local root). ``dry_run`` plans and
    reports without writing.
    """
    schema(table)  # raises on an unknown table
    day = day_from_str(date)
    # StorageFS wants a local journal directory for remote roots; compaction never writes
    # one, so any local path will do
    sfs = StorageFS(root, journal_dir=journal_dir or tempfile.gettempdir(), filesystem=filesystem, fsync=True)
    fs = sfs.fs
    listed = list_sealed(root, table, provider, day * DAY_NS, (day + 1) * DAY_NS, filesystem=filesystem, supersede=False)
    all_files = [f for f in listed if f.date == date]
    res = CompactResult(table, provider, date)
    # leftovers of an interrupted compaction: their replacement exists, remove them
    stale = superseded(all_files, fs)
    files = [f for f in all_files if f.path not in stale]
    for p in sorted(stale):
        res.skipped.append((p, "replaced by an earlier compaction: removed"))
        if not dry_run:
            _remove(sfs, p, res)
    pending = _pending_segments(journal_dir, root, filesystem, table, provider, date)
    by_writer: dict[str, list[SealedFile]] = {}
    for f in files:
        if (f.writer, f.first_ts) in pending:
            res.skipped.append((f.path, "its journal segment still exists (recovery would seal it again): left alone"))
            continue
        by_writer.setdefault(f.writer, []).append(f)
    res.files_before = sum(len(v) for v in by_writer.values())
    res.bytes_before = sum(f.size for v in by_writer.values() for f in v)
    merges: list[tuple[str, list[SealedFile], int]] = []  # (writer, inputs, rows)
    for writer, wfiles in sorted(by_writer.items()):
        rows = _rows_of(wfiles, fs)
        for group in _plan(wfiles, rows, max_rows):
            if len(group) == 1:  # nothing to merge it with
                res.files_after += 1
                res.bytes_after += group[0].size
                res.rows += rows[group[0].path]
            else:
                merges.append((writer, group, sum(rows[f.path] for f in group)))
    total = sum(len(g) for _, g, _ in merges)
    done = 0
    written: list[tuple[str, list[SealedFile]]] = []
    try:
        for writer, group, nrows in merges:
            if dry_run:
                res.files_after += 1
                res.rows += nrows
                continue
            path, size = _write_group(sfs, table, provider, day, writer, group, nrows, compression_level, row_group_rows)
            written.append((path, group))
            res.written.append(path)
            res.files_after += 1
            res.bytes_after += size
            res.rows += nrows
            done += len(group)
            if progress is not None:
                progress(f"{table}/{provider}/{date}", done, total)
    except BaseException:
        # back to the state before this run: remove the new files (their inputs are all
        # still there), except one that took an input's name (it holds every row of its
        # inputs and hides them: the state is consistent with it)
        for path, group in written:
            if path in {f.path for f in group}:
                continue
            try:
                sfs.seal_remove(path)
            except OSError as e:
                log.error("compaction: could not remove %s after a failure (%s); it replaces its inputs", path, e)
        raise
    if written and grace > 0:
        log.info("compaction: waiting %.1f s before removing %d replaced files", grace, sum(len(g) for _, g in written))
        time.sleep(grace)
    for path, group in written:
        for f in group:
            if f.path != path:
                _remove(sfs, f.path, res)
    return res


def _pending_segments(journal_dir, root, filesystem, table, provider, date) -> set[tuple[str, int]]:
    """(writer, first_ts) of the journal segments of this partition."""
    from .fs import find_journal

    if journal_dir is None:
        # a remote root's journal is on each capture host: this host's is checked, the
        # others' are covered by sealing never replacing a file on an object store
        # (see StorageFS.seal_commit)
        journal_dir = find_journal(root, filesystem)
        if journal_dir is None:
            return set()
    out: set[tuple[str, int]] = set()
    for seg in list_segments(journal_dir, table, provider):
        if seg.date != date:
            continue
        r = SegmentReader(seg.path)
        for _ in r:  # the first verified unit gives first_ts
            break
        if r.info.first_ts is not None:
            out.add((seg.writer, r.info.first_ts))
    return out


def _rows_of(files: list[SealedFile], fs: pafs.FileSystem) -> dict[str, int]:
    out = {}
    for f in files:
        with fs.open_input_file(f.path) as fh:
            out[f.path] = pq.read_metadata(fh).num_rows
    return out


def _clusters(files: list[SealedFile]) -> Iterator[list[SealedFile]]:
    """Runs of files (in order of first_ts) whose ``ts_recv`` ranges touch or overlap:
    their rows may interleave (late-row rolls), so they are merged by key, never split."""
    cur: list[SealedFile] = []
    reach = None
    for f in sorted(files, key=lambda f: (f.first_ts, f.last_ts, f.path)):
        if reach is not None and f.first_ts <= reach:
            cur.append(f)
            reach = max(reach, f.last_ts)
        else:
            if cur:
                yield cur
            cur, reach = [f], f.last_ts
    if cur:
        yield cur


def _plan(files: list[SealedFile], rows: dict[str, int], max_rows: int | None) -> list[list[SealedFile]]:
    """Output groups: clusters packed into outputs of at most ``max_rows`` rows (a bigger
    cluster is one output of its own)."""
    outputs: list[list[SealedFile]] = []
    cur: list[SealedFile] = []
    n = 0
    for c in _clusters(files):
        cr = sum(rows[f.path] for f in c)
        if cur and max_rows is not None and n + cr > max_rows:
            outputs.append(cur)
            cur, n = [], 0
        cur.extend(c)
        n += cr
    if cur:
        outputs.append(cur)
    return outputs


def _read_file(fs: pafs.FileSystem, path: str, table: str, batch_rows: int) -> Iterator[pa.RecordBatch]:
    target = schema(table)
    with fs.open_input_file(path) as fh:
        pf = pq.ParquetFile(fh)
        for b in pf.iter_batches(batch_size=batch_rows):
            b = conform(table, b)
            # the inputs' footers carry their own first/last/rows: start from the table's
            yield pa.RecordBatch.from_arrays(b.columns, schema=target)


def _write_group(sfs: StorageFS, table, provider, day, writer, group: list[SealedFile], nrows: int, level, rg_rows) -> tuple[str, int]:
    """Merge ``group`` (one writer's files) into one new sealed file; returns (path, bytes).

    The output normally gets a new name. If one input's range covers all the others'
    (same first and last ``ts_recv``), the output takes that input's name, replacing it
    atomically with a superset of its rows: still never a moment without its rows.
    """
    fs = sfs.fs
    rg = rg_rows or PARQUET_DEFAULTS["row_group_rows"]
    directory = group[0].path.rsplit("/", 1)[0]
    placeholder = f"{directory}/{writer}-compact-{uuid.uuid4().hex}.parquet"
    meta = {COMPACTED_FROM.decode(): json.dumps([f.path.rsplit("/", 1)[-1] for f in group])}

    def read_all(files: list[SealedFile]) -> pa.Table:
        return pa.Table.from_batches([b for f in files for b in _read_file(fs, f.path, table, rg)], schema=schema(table))

    def batches(sort_all: bool) -> Iterator[pa.RecordBatch]:
        if sort_all:
            yield from sort_batch(read_all(group), table).combine_chunks().to_batches(max_chunksize=rg)
            return
        for c in _clusters(group):
            if len(c) == 1:
                yield from _read_file(fs, c[0].path, table, rg)
            else:
                # overlapping files (late-row rolls): merge in memory; such clusters are
                # small (a late roll overlaps its predecessor by the lateness)
                yield from sort_batch(read_all(c), table).combine_chunks().to_batches(max_chunksize=rg)

    def counted(it: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        n = 0
        for b in it:
            n += b.num_rows
            yield b
        if n != nrows:
            # raised inside write_sealed, before the file gets its final name
            raise RuntimeError(f"compaction read {n} rows from {len(group)} files whose footers say {nrows}: nothing changed")

    kw = dict(placeholder=placeholder, metadata=meta, compression_level=level, row_group_rows=rg_rows)
    try:
        path, _, size = write_sealed(sfs, counted(batches(False)), table, provider, day, writer, check_order=True, **kw)
    except _OutOfOrder:
        log.warning("compaction: files of writer %s in %s are not in total order: sorting them in memory", writer, directory)
        path, _, size = write_sealed(sfs, counted(batches(True)), table, provider, day, writer, check_order=False, **kw)
    if path is None:
        raise RuntimeError(f"compaction of {len(group)} files in {directory} produced no file")
    return path, size


def _remove(sfs: StorageFS, path: str, res: CompactResult) -> None:
    try:
        sfs.seal_remove(path)
        res.removed.append(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        # the replacement exists and hides it; a later run removes it
        log.warning("compaction: could not remove %s: %s (readers ignore it; the next run removes it)", path, e)
