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


def _bounds(root: str, sel: Selection, filesystem, journal: bool) -> tuple[int | None, int | None, list[tuple[int, int]]]:
    """(first ts, last ts, [(first, last) per file]) of the data the selection touches."""
    spans: list[tuple[int, int]] = []
    jdir = _journal_dir(root, filesystem) if journal else None
    for table, provs in sel.tables.items():
        plist = sorted(provs)
        for f in list_sealed(root, table, plist, filesystem=filesystem):
            spans.append((f.first_ts, f.last_ts))
        if jdir:
            from ..storage import SegmentReader

            for seg in list_segments(jdir, table, plist):
                r = SegmentReader(seg.path)
                for _ in r:  # the time range of the verified units is known once they are read
                    pass
                info = r.info
                if info.first_ts is not None:
                    spans.append((info.first_ts, info.last_ts))
    if not spans:
        return None, None, []
    return min(s[0] for s in spans), max(s[1] for s in spans), sorted(spans)


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


def _merge_order(parts: list[tuple[int, pa.Table]]) -> tuple[list[int], list[int]]:
    """(table index, row) of every row of ``parts`` in total order."""
    if len(parts) == 1:
        n = parts[0][1].num_rows
        return [parts[0][0]] * n, list(range(n))
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
            "tab": pa.array([ti] * n, pa.int8()),
            "row": pa.array(range(n), pa.int64()),
        }))
    k = pa.concat_tables(keys)
    order = pc.sort_indices(k, sort_keys=[(c, "ascending") for c in ("ts_recv", "provider", "writer", "conn", "seq", "idx", "tab", "row")])
    k = k.take(order)
    return k.column("tab").to_pylist(), k.column("row").to_pylist()


@dataclass
class Window:
    """The rows of one time window, and their merged total order.

    ``tabs[i]``/``rows[i]`` name the i-th message in total order: a table (index into
    ``names``) and a *message* number within it. For every table but ``book`` a message
    is a row; a book message is a run of rows (one per level change) starting where
    ``pos == 0``, and ``book_starts`` gives each message's first row.
    """

    lo: int
    hi: int
    tables: dict[str, pa.Table]
    tabs: list[int]
    rows: list[int]
    names: list[str]
    book_starts: list[int] = field(default_factory=list)

    @property
    def num_rows(self) -> int:
        return len(self.rows)

    def messages(self) -> list:
        lists = [to_messages(n, self.tables[n]) if self.tables[n].num_rows else [] for n in self.names]
        return [lists[t][r] for t, r in zip(self.tabs, self.rows)]

    def batches(self, max_rows: int | None = None) -> Iterator[tuple[str, pa.RecordBatch]]:
        """Runs of one table in the merged order, as record batches (book: whole messages)."""
        n = len(self.tabs)
        start = 0
        for i in range(1, n + 1):
            if i == n or self.tabs[i] != self.tabs[start]:
                name = self.names[self.tabs[start]]
                t = self.tables[name]
                first, last = self.rows[start], self.rows[i - 1]
                if name == "book":  # message numbers -> row range
                    bs = self.book_starts
                    lo_row = bs[first]
                    hi_row = bs[last + 1] if last + 1 < len(bs) else t.num_rows
                    chunk = t.slice(lo_row, hi_row - lo_row)
                else:
                    # a run of one table is consecutive in it: each table is already in total order
                    chunk = t.slice(first, last - first + 1)
                for b in chunk.to_batches(max_chunksize=max_rows):
                    yield name, b
                start = i


def iter_windows(
    root: str,
    sel: Selection,
    start: int | None = None,
    end: int | None = None,
    *,
    window: float = 300.0,
    filesystem=None,
    journal: bool = True,
) -> Iterator[Window]:
    """Windows of the selection in total order, from ``start`` (inclusive) to ``end`` (exclusive)."""
    first, last, spans = _bounds(root, sel, filesystem, journal)
    if first is None:
        return
    lo = max(first, start) if start is not None else first
    stop = min(last + 1, end) if end is not None else last + 1
    step = max(1, int(window * NS))
    names = [t for t in DATA_TABLES if t in sel.tables]
    while lo < stop:
        hi = min(lo + step, stop)
        parts = []
        tables = {}
        book_starts: list[int] = []
        for i, name in enumerate(names):
            t = _read(root, name, sel, lo, hi, filesystem, journal)
            tables[name] = t
            if not t.num_rows:
                continue
            if name == "book":
                # a book message merges by the keys of its first row
                mask = pc.equal(t.column("pos"), 0)
                book_starts = pc.indices_nonzero(mask).to_pylist()
                parts.append((i, t.filter(mask)))
            else:
                parts.append((i, t))
        if parts:
            tabs, rows = _merge_order(parts)
            yield Window(lo, hi, tables, tabs, rows, names, book_starts)
            lo = hi
        else:
            # skip an empty stretch: jump to the next file holding data after this window
            nxt = [a for a, b in spans if b >= hi]
            lo = max(hi, min(nxt)) if nxt else stop
