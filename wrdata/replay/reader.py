"""Reading a recording in its one total order, window by window, filters pushed down.

The total order is ``(ts_recv, provider, writer, conn, seq, idx)`` (DESIGN.md): it does
not depend on how rows are spread over files (hourly or daily seals, compacted or not,
sealed or still in the journal), so two replays of one recording are identical on any
machine.

Rows are read a time window at a time (``window`` seconds of ``ts_recv``), every
filter pushed down to the scan: provider and date by partition pruning, time by
file-name ranges and row-group statistics (files are sorted by ``ts_recv``), symbol and
channel as dataset filter expressions evaluated in the scanner, never in Python. The
tables of one window are merged by sorting their key columns in Arrow, not by a
per-row Python merge. Empty stretches of a recording (nights, weekends) are skipped by
jumping to the next file that has data.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..storage import list_sealed, list_segments, read_table, to_messages
from ..storage.fs import find_journal, resolve_root

log = logging.getLogger("wrdata.replay")

KIND_TABLES = {"trade": "trades", "aggtrade": "trades", "quote": "quotes", "bar": "bars", "book": "book", "status": "events"}
DATA_TABLES = ("trades", "quotes", "bars", "book", "events")
NS = 1_000_000_000


def to_ns(t: int | float | str | datetime | None) -> int | None:
    """ns since the epoch from ns, a datetime (naive = UTC) or an ISO string (``2026-11-23T14:00Z``)."""
    if t is None:
        return None
    if isinstance(t, bool):
        raise TypeError("a time cannot be a bool")
    if isinstance(t, int):
        return t
    if isinstance(t, float):
        return int(t)
    if isinstance(t, str):
        s = t.strip()
        if s.isdigit():
            return int(s)
        if s.endswith("Z"):
            s = s[:-1] + "+00:00"
        try:
            t = datetime.fromisoformat(s)
        except ValueError:
            raise ValueError(f"bad time {t!r}: use ISO 8601 (2026-11-23T14:00Z), a date, or ns since the epoch") from None
    if isinstance(t, datetime):
        if t.tzinfo is None:
            t = t.replace(tzinfo=UTC)
        return int(t.timestamp()) * NS + t.microsecond * 1000
    raise TypeError(f"bad time {t!r}")


@dataclass
class Selection:
    """What to read: per table, the providers, symbols and channels (None = all)."""

    tables: dict[str, dict[str, set[str] | None]] = field(default_factory=dict)  # table -> provider -> symbols
    channels: dict[str, set[str] | None] = field(default_factory=dict)  # table -> channels
    #: which rows of a dataset a replay reads (:class:`wrdata.replay.merged.MergedView`; None: every row)
    view: Any = None

    def add(self, table: str, provider: str, symbol: str | None, channel: str | None = None) -> None:
        provs = self.tables.setdefault(table, {})
        if symbol is None:
            provs[provider] = None
        elif provider not in provs:
            provs[provider] = {symbol}
        elif provs[provider] is not None:
            provs[provider].add(symbol)
        if channel is None:
            self.channels[table] = None
        elif table not in self.channels:
            self.channels[table] = {channel}
        elif self.channels[table] is not None:
            self.channels[table].add(channel)

    def copy(self) -> Selection:
        return Selection(
            {t: {p: (None if s is None else set(s)) for p, s in ps.items()} for t, ps in self.tables.items()},
            {t: (None if c is None else set(c)) for t, c in self.channels.items()},
            self.view,
        )

    @property
    def providers(self) -> set[str]:
        return {p for ps in self.tables.values() for p in ps}


def everything(root: str, filesystem=None, providers=None, symbols=None, kinds=None) -> Selection:
    """A selection of whole tables, optionally narrowed (the CLI and the batch API use this)."""
    sel = Selection()
    tables = sorted({KIND_TABLES[k] for k in kinds}) if kinds else list(DATA_TABLES)
    provs = list(providers) if providers else recorded_providers(root, filesystem)
    for t in tables:
        for p in provs:
            if symbols:
                for s in symbols:
                    sel.add(t, p, s)
            else:
                sel.add(t, p, None)
        if kinds and t == "trades":
            chans = {"aggtrade" if k == "aggtrade" else "trade" for k in kinds if k in ("trade", "aggtrade")}
            sel.channels[t] = chans
    return sel


def recorded_providers(root: str, filesystem=None) -> list[str]:
    fs, base, _ = resolve_root(root, filesystem)
    import pyarrow.fs as pafs

    found: set[str] = set()
    for table in DATA_TABLES:
        info = fs.get_file_info(pafs.FileSelector(f"{base}/{table}", allow_not_found=True))
        for i in info:
            name = i.path.rsplit("/", 1)[-1]
            if i.type == pafs.FileType.Directory and name.startswith("provider="):
                found.add(name.split("=", 1)[1])
    jdir = _journal_dir(root, filesystem)
    if jdir:
        for table in DATA_TABLES:
            for seg in list_segments(jdir, table):
                found.add(seg.provider)
    return sorted(found)


def _journal_dir(root: str, filesystem) -> str | None:
    # <root>/_journal, or a remote root's local journal on its capture host
    return find_journal(root, filesystem)


def _bounds(
    root: str, sel: Selection, filesystem, journal: bool
) -> tuple[int | None, int | None, list[tuple[int, int]], set[str]]:
    """(first ts, last ts, [(first, last) per file], tables with data) of the data the selection touches."""
    spans: list[tuple[int, int]] = []
    present: set[str] = set()
    jdir = _journal_dir(root, filesystem) if journal else None
    for table, provs in sel.tables.items():
        plist = sorted(provs)
        for f in list_sealed(root, table, plist, filesystem=filesystem):
            spans.append((f.first_ts, f.last_ts))
            present.add(table)
        if jdir:
            from ..storage import SegmentReader

            for seg in list_segments(jdir, table, plist):
                r = SegmentReader(seg.path)
                for _ in r:  # the time range of the verified units is known once they are read
                    pass
                info = r.info
                if info.first_ts is not None:
                    spans.append((info.first_ts, info.last_ts))
                    present.add(table)
    if not spans:
        return None, None, [], present
    return min(s[0] for s in spans), max(s[1] for s in spans), sorted(spans), present


def _filter(t: pa.Table, table: str, sel: Selection) -> pa.Table:
    """Narrow a table read with the union of providers/symbols to the exact selection."""
    if t.num_rows == 0:
        return t
    chans = sel.channels.get(table)
    if chans is not None and table != "events":
        t = t.filter(pc.is_in(t.column("channel").cast(pa.string()), pa.array(sorted(chans))))
    provs = sel.tables[table]
    if table == "events":
        # status events of a provider: those about a selected symbol and those about no symbol
        masks = []
        prov_col = t.column("provider")
        sym_col = t.column("symbol").cast(pa.string())
        for p, syms in provs.items():
            m = pc.equal(prov_col, p)
            if syms is not None:
                m = pc.and_(m, pc.or_(pc.is_null(sym_col), pc.is_in(sym_col, pa.array(sorted(syms)))))
            masks.append(m)
        mask = masks[0]
        for m in masks[1:]:
            mask = pc.or_(mask, m)
        return t.filter(pc.fill_null(mask, False))
    if len(provs) > 1 and len({None if s is None else frozenset(s) for s in provs.values()}) > 1:
        # providers with different symbol sets: exact (provider, symbol) pairs
        prov_col = t.column("provider")
        sym_col = t.column("symbol").cast(pa.string())
        mask = None
        for p, syms in provs.items():
            m = pc.equal(prov_col, p)
            if syms is not None:
                m = pc.and_(m, pc.is_in(sym_col, pa.array(sorted(syms))))
            mask = m if mask is None else pc.or_(mask, m)
        t = t.filter(pc.fill_null(mask, False))
    return t


def _read(root: str, table: str, sel: Selection, lo: int, hi: int, filesystem, journal: bool) -> pa.Table:
    provs = sel.tables[table]
    symbols = None
    if table != "events" and all(s is not None for s in provs.values()):
        symbols = sorted(set().union(*provs.values()))
    t = read_table(root, table, sorted(provs), lo, hi, symbols, journal=journal, filesystem=filesystem)
    t = _filter(t, table, sel)
    if sel.view is not None:
        t = sel.view.rows(table, t, lo, hi, sel)
    return t


def _empty(table: str) -> pa.Table:
    from ..storage.schema import PARTITION_SCHEMA, schema

    return pa.schema(list(schema(table)) + list(PARTITION_SCHEMA), metadata=schema(table).metadata).empty_table()


def _merge_order(parts: list[tuple[int, pa.Table]]) -> tuple[np.ndarray, np.ndarray]:
    """(table index, row) of every row of ``parts`` in total order, as numpy arrays."""
    if len(parts) == 1:
        n = parts[0][1].num_rows
        return np.full(n, parts[0][0], np.int8), np.arange(n, dtype=np.int64)
    keys = []
    for ti, t in parts:
        n = t.num_rows
        keys.append(pa.table({
            "ts_recv": t.column("ts_recv").cast(pa.int64()),
            "provider": t.column("provider").cast(pa.string()),
            "writer": t.column("writer").cast(pa.string()),
            "conn": t.column("conn").cast(pa.int64()),
            "seq": t.column("seq").cast(pa.int64()),
            "idx": t.column("idx").cast(pa.int64()),
            "tab": pa.array(np.full(n, ti, np.int8)),
            "row": pa.array(np.arange(n, dtype=np.int64)),
        }))
    k = pa.concat_tables(keys)
    order = pc.sort_indices(k, sort_keys=[(c, "ascending") for c in ("ts_recv", "provider", "writer", "conn", "seq", "idx", "tab", "row")])
    k = k.select(["tab", "row"]).take(order).combine_chunks()
    return k.column("tab").to_numpy(), k.column("row").to_numpy()


@dataclass
class Window:
    """The rows of one time window, and their merged total order.

    ``tabs[i]``/``rows[i]`` (numpy arrays) name the i-th message in total order: a table
    (index into ``names``) and a *message* number within it. For every table but
    ``book`` a message is a row; a book message is a run of rows (one per level change)
    starting where ``pos == 0``, and ``book_starts`` gives each message's first row.
    """

    lo: int
    hi: int
    tables: dict[str, pa.Table]
    tabs: np.ndarray
    rows: np.ndarray
    names: list[str]
    book_starts: list[int] = field(default_factory=list)

    @property
    def num_rows(self) -> int:
        return len(self.rows)

    def _runs(self) -> Iterator[tuple[int, int, int]]:
        """(table index, first message, last message) of each run of one table in the
        merged order; a run is consecutive in its table (each table is in total order)."""
        tabs, rows = self.tabs, self.rows
        n = len(tabs)
        if not n:
            return
        # run boundaries found by numpy, not by a Python loop over every row
        cuts = (np.flatnonzero(tabs[1:] != tabs[:-1]) + 1).tolist()
        for a, b in zip([0, *cuts], [*cuts, n]):
            yield int(tabs[a]), int(rows[a]), int(rows[b - 1])

    def messages(self) -> list:
        out: list = []
        for chunk in self.iter_messages(None):
            if not out:
                out = chunk
            else:
                out.extend(chunk)
        return out

    def iter_messages(self, chunk: int | None = 16_384) -> Iterator[list]:
        """The window's messages in total order, as lists of ``chunk`` messages (the
        last one shorter; ``None``: one list). Converting a chunk at a time keeps a
        replay's Python objects few (a message is ~400 bytes; the window's Arrow rows
        ~50) however large the window. Chunks cut the merged order at multiples of
        ``chunk``, wherever the tables alternate."""
        size = self.num_rows if chunk is None else max(1, chunk)
        out: list = []
        for ti, first, last in self._runs():
            name = self.names[ti]
            t = self.tables[name]
            a = first
            while a <= last:
                b = min(last + 1, a + size - len(out))  # messages a..b-1 of this table
                if name == "book":  # message numbers -> row range
                    bs = self.book_starts
                    lo_row = bs[a]
                    hi_row = bs[b] if b < len(bs) else t.num_rows
                    part = t.slice(lo_row, hi_row - lo_row)
                else:
                    part = t.slice(a, b - a) if (a, b) != (0, t.num_rows) else t
                got = to_messages(name, part)
                if out:
                    out.extend(got)
                else:
                    out = got
                a = b
                if len(out) >= size:
                    yield out
                    out = []
        if out:
            yield out

    def batches(self, max_rows: int | None = None) -> Iterator[tuple[str, pa.RecordBatch]]:
        """Runs of one table in the merged order, as record batches (book: whole messages)."""
        for ti, first, last in self._runs():
            name = self.names[ti]
            t = self.tables[name]
            if name == "book":  # message numbers -> row range
                bs = self.book_starts
                lo_row = bs[first]
                hi_row = bs[last + 1] if last + 1 < len(bs) else t.num_rows
                chunk = t.slice(lo_row, hi_row - lo_row)
            else:
                chunk = t.slice(first, last - first + 1)
            for b in chunk.to_batches(max_chunksize=max_rows):
                yield name, b


def _first_step(root: str, sel: Selection, lo: int, window: float, target: int, filesystem) -> int:
    """The first window: ``window`` seconds, or less where the first sealed file of each
    table at ``lo`` is dense enough that it would hold more than ``target`` rows (its
    footer, read once and kept by the fragment cache, tells)."""
    from ..storage.reader import dataset

    wns = max(1, int(window * NS))
    density = 0.0  # rows per ns
    for table, provs in sel.tables.items():
        files = list_sealed(root, table, sorted(provs), lo, lo + wns, filesystem=filesystem)
        if not files:
            continue
        f = files[0]
        for frag in dataset(root, table, filesystem=filesystem, files=[f]).get_fragments():
            density += frag.metadata.num_rows / max(1, f.last_ts - f.first_ts + 1)
    if density <= 0:
        return wns
    return max(1, min(wns, int(target / density)))


def _snap(root: str, sel: Selection, present: set[str], lo: int, hi: int, step: int, filesystem, starts: dict) -> int:
    """``hi`` moved to the row-group start nearest to it (within half a step), so that a
    window reads whole row groups: one that straddles ``hi`` would be decoded by both
    windows (a third of read_batches' time with 2-group windows, bench/replay.py). The
    footers are the ones the scan reads (kept by the fragment cache)."""
    from ..storage.reader import dataset

    best, dist = hi, step // 2
    for table in present:
        if table not in sel.tables:
            continue
        files = list_sealed(root, table, sorted(sel.tables[table]), lo, hi + step // 2, filesystem=filesystem)
        todo = [f for f in files if f.path not in starts]
        if todo:
            for f, frag in zip(todo, dataset(root, table, filesystem=filesystem, files=todo).get_fragments()):
                md = frag.metadata
                i = md.schema.names.index("ts_recv")
                starts[f.path] = [md.row_group(r).column(i).statistics.min_raw for r in range(md.num_row_groups)
                                  if md.row_group(r).column(i).statistics is not None]
        for f in files:
            for s in starts.get(f.path, ()):
                if lo < s and abs(s - hi) < dist:
                    best, dist = s, abs(s - hi)
    return best


#: rows a window aims at: two sealed row groups (128K rows each), so decoding the row
#: groups a window overlaps costs at most ~1.5x its own rows; Arrow holds a row in ~50
#: bytes, and replay converts a window to messages a chunk at a time
WINDOW_ROWS = 262_144


def iter_windows(
    root: str,
    sel: Selection,
    start: int | None = None,
    end: int | None = None,
    *,
    window: float = 300.0,
    window_rows: int = WINDOW_ROWS,
    filesystem=None,
    journal: bool = True,
) -> Iterator[Window]:
    """Windows of the selection in total order, from ``start`` (inclusive) to ``end`` (exclusive).

    The first window spans ``window`` seconds, less where the footer of the first file
    says that would be more than ``window_rows`` rows; each next one is sized from the
    rows the last one held to hold about ``window_rows``. Fixed windows cost a lot on sparse
    recordings: a 5-minute window of a 30-trades/s stream holds 9,000 rows but decodes
    the whole 128K-row group around them (bench/replay.py measured read_batches at 2%
    of a bare Parquet read that way), and a busy one holds millions of messages.
    """
    first, last, spans, present = _bounds(root, sel, filesystem, journal)
    if first is None:
        return
    lo = max(first, start) if start is not None else first
    stop = min(last + 1, end) if end is not None else last + 1
    target = max(1, int(window_rows))
    step = _first_step(root, sel, lo, window, target, filesystem)
    names = [t for t in DATA_TABLES if t in sel.tables]
    starts: dict[str, list[int]] = {}  # file -> its row groups' first ts_recv
    while lo < stop:
        hi = min(lo + step, stop)
        if hi < stop:
            hi = _snap(root, sel, present, lo, hi, step, filesystem, starts)
        parts = []
        tables = {}
        book_starts: list[int] = []
        rows = 0
        for i, name in enumerate(names):
            if name not in present:  # nothing recorded: no listing and no scan per window
                tables[name] = _empty(name)
                continue
            t = _read(root, name, sel, lo, hi, filesystem, journal)
            tables[name] = t
            if not t.num_rows:
                continue
            rows += t.num_rows
            if name == "book":
                # a book message merges by the keys of its first row
                mask = pc.equal(t.column("pos"), 0)
                book_starts = pc.indices_nonzero(mask).to_pylist()
                parts.append((i, t.filter(mask)))
            else:
                parts.append((i, t))
        span = hi - lo
        if parts:
            tabs, rows_order = _merge_order(parts)
            yield Window(lo, hi, tables, tabs, rows_order, names, book_starts)
            lo = hi
            # the next window: about `target` rows at this window's density (grows at
            # most 16x a step, so one quiet stretch does not make the next window huge)
            step = max(1, min(span * 16, span * target // rows))
        else:
            # skip an empty stretch: jump to the next file holding data after this window
            nxt = [a for a, b in spans if b >= hi]
            lo = max(hi, min(nxt)) if nxt else stop
            if lo == hi:  # data here, none of it selected: widen, as for a sparse window
                step = span * 16
