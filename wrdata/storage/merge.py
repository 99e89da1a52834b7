"""The merged view of a recording's trades: each trade once, whoever recorded it.

A dataset may hold a trade more than once: several capture daemons recording the same
provider (redundant capture), the stream and a heal of its gap (a heal job records every
trade of its window, the edges the stream also delivered included), two heals of one
hole. :mod:`wrdata.dedupe` says when two rows are the same trade and which one survives
(the earliest receipt). This module applies that rule to recorded data, once, for every
reader: the ``trades`` view of :func:`wrdata.queries.connect` and its helpers, replay,
``wrdata heal``, ``wrdata ls``/``verify``. Files are never rewritten for it: every
writer's rows stay in its own files (one writer's data alone still shows what that
writer saw, and ``rebuild`` still re-derives each writer's tables from its ``raw``).

What it costs: nothing for a recording of one writer without healed rows (the common
case: the listing and a scan of the ``source`` column, pruned by its statistics, say
so). Otherwise the rule runs on the key columns of the rows that can have a duplicate:
whole days where two writers overlap, and, around each heal job, the rows of its symbol
from :data:`MARGIN` before its window to :data:`MARGIN` after it was received. The
result is a :class:`DropSet`, the total-order keys of the rows to leave out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from ..dedupe import duplicate_sql
from .layout import DAY_NS, day_of, list_sealed
from .reader import Snapshot, dataset, read_table, snapshot

log = logging.getLogger("wrdata.storage.merge")

#: seconds around a heal window (and around a day shared by writers) in which a duplicate
#: may have been received: receive latency, clock skew between hosts, late prints
MARGIN = 60 * 1_000_000_000

KEY_COLUMNS = [
    "ts_recv", "ts_event", "symbol", "writer", "conn", "seq", "idx", "source", "channel", "price", "size", "trade_id",
    "trade_ref", "exchange",
]
DROP_SCHEMA = pa.schema([
    ("provider", pa.string()), ("ts_recv_ns", pa.int64()), ("writer", pa.string()), ("conn", pa.int64()),
    ("seq", pa.int64()), ("idx", pa.int64()),
])
_JOIN = ["provider", "ts_recv_ns", "writer", "conn", "seq", "idx"]


@dataclass
class DropSet:
    """Rows of ``trades`` the merged view leaves out (their total-order keys)."""

    keys: pa.Table = field(default_factory=DROP_SCHEMA.empty_table)
    #: providers whose rows were looked at (others: nothing dropped, nothing known)
    providers: set[str] = field(default_factory=set)
    #: (provider, first, last ts_recv) ranges the rule ran over
    ranges: list[tuple[str, int, int]] = field(default_factory=list)

    def __len__(self) -> int:
        return self.keys.num_rows

    def keep(self, t: pa.Table, provider: str | None = None) -> pa.Array | None:
        """A boolean mask of the rows of ``t`` (trades rows, with a ``provider`` column or
        of ``provider``) that the merged view keeps; None when it keeps them all."""
        if not len(self) or not t.num_rows:
            return None
        n = t.num_rows
        prov = t.column("provider").cast(pa.string()) if "provider" in t.column_names else pa.array([provider] * n, pa.string())
        k = pa.table({
            "provider": prov,
            "ts_recv_ns": t.column("ts_recv").cast(pa.int64()),
            "writer": t.column("writer").cast(pa.string()),
            "conn": t.column("conn").cast(pa.int64()),
            "seq": t.column("seq").cast(pa.int64()),
            "idx": t.column("idx").cast(pa.int64()),
            "_row": pa.array(range(n), pa.int64()),
        })
        drops = self.keys.append_column("_drop", pa.array([True] * len(self), pa.bool_()))
        j = k.join(drops, keys=_JOIN, join_type="inner")
        if not j.num_rows:
            return None
        return pc.invert(pc.is_in(pa.array(range(n), pa.int64()), value_set=j.column("_row").combine_chunks()))

    def apply(self, t: pa.Table, provider: str | None = None) -> pa.Table:
        m = self.keep(t, provider)
        return t if m is None else t.filter(m)


def backfill_rows(
    root: str, provider: str, start: int | None = None, end: int | None = None, *, filesystem=None, journal: bool | str = True,
) -> pa.Table:
    """Every backfilled row of ``provider`` received in [start, end), all columns, in total
    order (a scan of the ``source`` column: healed rows are few)."""
    from .reader import sort_total_order

    snap = snapshot(root, "trades", provider, start, end, journal=journal, filesystem=filesystem)
    return sort_total_order(_backfill(root, provider, snap, start, end, filesystem, None), "trades")


def _backfill(root: str, provider: str, snap: Snapshot, lo: int | None, hi: int | None, filesystem,
              cols: list[str] | None = ("ts_recv", "ts_event", "symbol", "writer", "conn")) -> pa.Table:  # type: ignore[assignment]
    """Backfilled rows of ``provider`` in [lo, hi): ``cols`` (None: every column, with provider and date)."""
    cols = list(cols) if cols is not None else None
    flt = ds.field("source") == "backfill"
    if lo is not None:
        flt = flt & (ds.field("ts_recv") >= pa.scalar(lo, pa.timestamp("ns", tz="UTC")))
    if hi is not None:
        flt = flt & (ds.field("ts_recv") < pa.scalar(hi, pa.timestamp("ns", tz="UTC")))
    parts = []
    if snap.files:
        d = dataset(root, "trades", filesystem=filesystem, files=snap.files)
        parts.append(d.to_table(columns=cols, filter=flt))
    tail = snap.tail
    if tail is not None and tail.num_rows:
        t = tail.filter(pc.equal(tail.column("provider"), provider))
        t = t.filter(pc.fill_null(pc.equal(t.column("source").cast(pa.string()), "backfill"), False))
        if lo is not None:
            t = t.filter(pc.greater_equal(t.column("ts_recv").cast(pa.int64()), lo))
        if hi is not None:
            t = t.filter(pc.less(t.column("ts_recv").cast(pa.int64()), hi))
        parts.append(t.select(cols) if cols is not None else t)
    if cols is None:
        from .schema import PARTITION_SCHEMA, schema

        full = pa.schema(list(schema("trades")) + list(PARTITION_SCHEMA), metadata=schema("trades").metadata)
        parts = [p.cast(full) for p in parts if p.num_rows]
        return pa.concat_tables(parts) if parts else full.empty_table()
    parts = [p.cast(parts[0].schema) for p in parts if p.num_rows] if parts else []
    if not parts:
        return pa.table({c: pa.array([], pa.int64()) for c in ("ts_recv", "ts_event", "conn")}
                        | {c: pa.array([], pa.string()) for c in ("symbol", "writer")})
    return pa.concat_tables(parts)


def _merge_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def drop_set(
    root: str,
    providers: str | list[str] | None = None,
    start: int | None = None,
    end: int | None = None,
    *,
    filesystem: pafs.FileSystem | str | None = None,
    journal: bool | str = True,
    writers: list[str] | None = None,
) -> DropSet:
    """The rows of ``trades`` (``ts_recv`` in [start, end)) the merged view leaves out.

    ``writers``: merge only these writers' rows (one writer alone: its stream and its
    heals, as that writer's live consumers saw them)."""
    if providers is None:
        providers = _providers(root, filesystem, journal)
    elif isinstance(providers, str):
        providers = [providers]
    out = DropSet()
    wanted = set(writers) if writers is not None else None
    lo = None if start is None else start - MARGIN
    hi = None if end is None else end + MARGIN
    keys: list[pa.Table] = []
    for p in providers:
        out.providers.add(p)
        snap = snapshot(root, "trades", p, lo, hi, journal=journal, filesystem=filesystem)
        ranges: list[tuple[int, int]] = []
        # days two writers recorded (writers that only healed do not count: heal ranges cover them)
        bf = _backfill(root, p, snap, lo, hi, filesystem)
        if wanted is not None:
            bf = bf.filter(pc.is_in(bf.column("writer").cast(pa.string()), pa.array(sorted(wanted), pa.string())))
        healers = _heal_only_writers(root, snap, bf, filesystem)
        by_day: dict[int, set[str]] = {}
        for f in snap.files:
            if wanted is None or f.writer in wanted:
                for d in range(day_of(f.first_ts), day_of(f.last_ts) + 1):
                    by_day.setdefault(d, set()).add(f.writer)
        if snap.tail is not None and snap.tail.num_rows:
            t = snap.tail.filter(pc.equal(snap.tail.column("provider"), p))
            for w, ts in zip(t.column("writer").cast(pa.string()).to_pylist(), t.column("ts_recv").cast(pa.int64()).to_pylist(),
                             strict=True):
                if wanted is None or w in wanted:
                    by_day.setdefault(day_of(ts), set()).add(w)
        for d, ws in by_day.items():
            if len(ws - healers) > 1:
                ranges.append((d * DAY_NS - MARGIN, (d + 1) * DAY_NS + MARGIN))
        # around every heal job
        if bf.num_rows:
            g = pa.table({
                "w": bf.column("writer").cast(pa.string()), "c": bf.column("conn").cast(pa.int64()),
                "s": bf.column("symbol").cast(pa.string()),
                "e": pc.fill_null(bf.column("ts_event").cast(pa.int64()), bf.column("ts_recv").cast(pa.int64())),
                "r": bf.column("ts_recv").cast(pa.int64()),
            }).group_by(["w", "c", "s"]).aggregate([("e", "min"), ("r", "max")])
            for e_min, r_max in zip(g.column("e_min").to_pylist(), g.column("r_max").to_pylist(), strict=True):
                ranges.append((e_min - MARGIN, r_max + MARGIN))
        if not ranges:
            continue
        for a, b in _merge_ranges(ranges):
            if lo is not None:
                a = max(a, lo)
            if hi is not None:
                b = min(b, hi)
            if a >= b:
                continue
            out.ranges.append((p, a, b))
            t = read_table(root, "trades", p, a, b, journal=journal, filesystem=filesystem, columns=KEY_COLUMNS)
            if wanted is not None:
                t = t.filter(pc.is_in(t.column("writer").cast(pa.string()), pa.array(sorted(wanted), pa.string())))
            if t.num_rows:
                keys.append(_key_rows(t, p))
    if keys:
        import duckdb

        rows = pa.concat_tables(keys)
        con = duckdb.connect()
        try:
            con.register("_rows", rows)
            dropped = con.sql(duplicate_sql("_rows")).to_arrow_table()
        finally:
            con.close()
        out.keys = pa.Table.from_batches(dropped.to_batches(), schema=dropped.schema).cast(DROP_SCHEMA) if dropped.num_rows else out.keys
    return out


def _key_rows(t: pa.Table, provider: str) -> pa.Table:
    n = t.num_rows
    cols = {
        "provider": pa.array([provider] * n, pa.string()),
        "ts_recv_ns": t.column("ts_recv").cast(pa.int64()),
        "ts_event_ns": t.column("ts_event").cast(pa.int64()),
    }
    for c in ("symbol", "writer", "source", "channel", "exchange", "trade_ref"):
        cols[c] = t.column(c).cast(pa.string())
    for c in ("conn", "seq", "idx", "trade_id"):
        cols[c] = t.column(c).cast(pa.int64())
    for c in ("price", "size"):
        cols[c] = t.column(c).cast(pa.float64())
    return pa.table(cols)


def _heal_only_writers(root: str, snap: Snapshot, bf: pa.Table, filesystem) -> set[str]:
    """Writers all of whose rows (in the snapshot) are backfill: ``wrdata heal`` runs."""
    if not bf.num_rows:
        return set()
    import pyarrow.parquet as pq

    from .fs import resolve_root

    backfilled = {c["values"]: c["counts"] for c in pc.value_counts(bf.column("writer").cast(pa.string())).to_pylist()}
    fs = resolve_root(root, filesystem)[0]
    totals: dict[str, int] = {}
    for f in snap.files:
        if f.writer not in backfilled:
            continue
        try:
            with fs.open_input_file(f.path) as fh:
                totals[f.writer] = totals.get(f.writer, 0) + pq.read_metadata(fh).num_rows
        except (OSError, pa.ArrowException):
            totals[f.writer] = -1
    if snap.tail is not None and snap.tail.num_rows:
        for c in pc.value_counts(snap.tail.column("writer").cast(pa.string())).to_pylist():
            if c["values"] in backfilled:
                totals[c["values"]] = totals.get(c["values"], 0) + c["counts"]
    return {w for w, n in backfilled.items() if totals.get(w) == n}


def _providers(root: str, filesystem, journal: bool | str) -> list[str]:
    from .fs import find_journal
    from .layout import list_segments

    found = {f.provider for f in list_sealed(root, "trades", filesystem=filesystem)}
    jdir = journal if isinstance(journal, str) else (find_journal(root, filesystem) if journal else None)
    if jdir:
        found |= {s.provider for s in list_segments(jdir, "trades")}
    return sorted(found)


__all__ = ["DropSet", "KEY_COLUMNS", "MARGIN", "backfill_rows", "drop_set"]
