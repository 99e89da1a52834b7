"""``wrdata rebuild``: re-derive the normalized tables from ``raw`` with today's parsers.

``raw`` holds every frame received and sent, the REST responses sessions used and the
runner's status events, per writer, in total order. Feeding them to the venues'
sessions again (:class:`~wrdata.streaming.driver.RawDriver`: the live code path without
sockets) reproduces every message the live process produced, so a fixed parser can be
applied to an old recording and, with unchanged parsers, the rebuilt tables equal the
recorded ones row for row.

Rebuilt files replace the old ones the way compaction does (``wrdata.storage.compact``):
each new file (one per table, provider, day and writer) is written under a temporary
name, moved into place, and lists the files it replaces in its footer, so readers hide
those at once; then the old files are removed. Events that storage itself recorded
(``conn == -1``: write failures, recovered tails) are not in ``raw`` and are carried over.
Only sealed data is rebuilt: a writer whose journal still holds segments is refused.
"""

from __future__ import annotations

import json
import logging
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..message import StreamMessage
from ..storage import list_sealed, list_segments, to_raw_frames
from ..storage.compact import COMPACTED_FROM
from ..storage.convert import from_messages, table_of
from ..storage.fs import StorageFS, find_journal
from ..storage.layout import day_of, partition_dir
from ..storage.reader import sort_total_order
from ..storage.schema import conform, schema
from ..storage.seal import write_sealed
from ..streaming import registry
from ..streaming.driver import RawDriver

log = logging.getLogger("wrdata.capture.rebuild")

NORMALIZED = ("trades", "quotes", "bars", "book", "events")


class RebuildError(RuntimeError):
    pass


@dataclass
class RebuildResult:
    provider: str
    frames: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def _journal_writers(root: str, filesystem, provider: str, journal_dir: str | None) -> set[str]:
    if journal_dir is None:
        journal_dir = find_journal(root, filesystem)  # <root>/_journal, or a remote root's on this host
        if journal_dir is None:
            return set()
    out = set()
    for table in NORMALIZED + ("raw",):
        for seg in list_segments(journal_dir, table, provider):
            out.add(seg.writer)
    return out


def rebuild(
    root: str,
    providers: list[str] | None = None,
    *,
    filesystem=None,
    journal_dir: str | None = None,
    dry_run: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> list[RebuildResult]:
    from ..replay.reader import recorded_providers

    provs = providers or recorded_providers(root, filesystem)
    for p in provs:
        registry.venue_class(p)  # unknown names fail before anything is touched
    return [_rebuild_provider(root, p, filesystem, journal_dir, dry_run, progress) for p in provs]


def _rebuild_provider(root, provider, filesystem, journal_dir, dry_run, progress) -> RebuildResult:
    res = RebuildResult(provider)
    busy = _journal_writers(root, filesystem, provider, journal_dir)
    raw_files = list_sealed(root, "raw", provider, filesystem=filesystem)
    writers = sorted({f.writer for f in raw_files})
    if busy & set(writers):
        raise RebuildError(
            f"{provider}: writer(s) {', '.join(sorted(busy & set(writers)))} still have journal segments; "
            "stop the capture (it seals them) or wait for them to be sealed before rebuilding"
        )
    sfs = StorageFS(root, journal_dir=journal_dir or tempfile.gettempdir(), filesystem=filesystem, fsync=True)
    fs = sfs.fs
    for wi, writer in enumerate(writers):
        driver = RawDriver(registry.venue_class(provider)())
        out: dict[tuple[str, int], list[StreamMessage]] = {}
        for f in sorted((f for f in raw_files if f.writer == writer), key=lambda f: (f.first_ts, f.last_ts)):
            with fs.open_input_file(f.path) as fh:
                t = pq.read_table(fh)
            for fr in to_raw_frames(t, provider):
                res.frames += 1
                for m in driver.feed(fr.conn, fr.seq, fr.ts_recv, fr.direction, fr.url or "", fr.payload, fr.status):
                    table = table_of(m)
                    if table is not None:
                        out.setdefault((table, day_of(m.ts_recv)), []).append(m)
        if progress is not None:
            progress(provider, wi + 1, len(writers))
        days = sorted({d for _, d in out} | {day_of(f.first_ts) for f in raw_files if f.writer == writer})
        for table in NORMALIZED:
            for day in days:
                msgs = out.get((table, day), [])
                _replace(sfs, root, filesystem, table, provider, day, writer, msgs, res, dry_run)
    return res


def _replace(sfs: StorageFS, root, filesystem, table, provider, day, writer, msgs, res: RebuildResult, dry_run: bool) -> None:
    from ..storage.layout import DAY_NS, date_str

    old = [
        f for f in list_sealed(root, table, provider, day * DAY_NS, (day + 1) * DAY_NS, filesystem=filesystem, supersede=False)
        if f.writer == writer and f.date == date_str(day)
    ]
    batch = from_messages(table, msgs, writer) if msgs else None
    if table == "events" and old:
        # storage's own events are not in raw: keep them
        kept = []
        for f in old:
            with sfs.fs.open_input_file(f.path) as fh:
                t = conform(table, pq.read_table(fh))
            t = t.filter(pc.equal(t.column("conn"), -1))
            if t.num_rows:
                kept.append(t)
        if kept:
            parts = kept + ([pa.Table.from_batches([batch])] if batch is not None else [])
            merged = pa.concat_tables([p.cast(schema(table)) for p in parts])
            merged = _sort_one_writer(merged, table)
            batch = merged.combine_chunks().to_batches()[0] if merged.num_rows else None
    n = 0 if batch is None else batch.num_rows
    res.rows[table] = res.rows.get(table, 0) + n
    if dry_run:
        return
    path = None
    if batch is not None:
        placeholder = f"{partition_dir(sfs.root, table, provider, day)}/.rebuild-{uuid.uuid4().hex}"
        path, _rows, _size = write_sealed(
            sfs, [batch], table, provider, day, writer, placeholder=placeholder,
            metadata={COMPACTED_FROM.decode(): json.dumps(sorted(f.path.rsplit("/", 1)[-1] for f in old))},
        )
        res.written.append(path)
    for f in old:
        if f.path != path:
            sfs.seal_remove(f.path)
            res.removed.append(f.path)


def _sort_one_writer(t: pa.Table, table: str) -> pa.Table:
    # one writer and one provider: the total order is that of the remaining keys
    t = t.append_column("provider", pa.array([""] * t.num_rows, pa.string()))
    return sort_total_order(t, table).drop_columns(["provider"])
