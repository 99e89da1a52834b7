"""What a replay of a dataset reads: the merged view, one writer's view, and where healed
trades go.

- **Merged** (default): each trade once across writers and heals, by the rule of
  :mod:`wrdata.dedupe` (the earliest receipt), computed once per replay by
  :func:`wrdata.storage.merge.drop_set` for the selection's providers and time range.
  Status events of every writer come through (a gap of one writer that another covered
  is still an event; :func:`wrdata.queries.helpers.gap_outcomes` says it was covered).
- **One writer's** (``writers=["daemon-a"]``): only rows that writer recorded, its own
  duplicates merged (a heal's edge trades), so the replay shows that writer's outages as
  its live code saw them.
- **Healed trades** (``source="backfill"``): ``backfill="received"`` (default) replays them
  where they were received (after the gap's end, flagged); ``"event"`` places them at their
  event time inside the gap (``ts_recv`` set to ``ts_event``), for backtests that want the
  market rather than the feed; ``"none"`` leaves them out (the feed as streamed).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

log = logging.getLogger("wrdata.replay")

BACKFILL_MODES = ("received", "event", "none")


class MergedView:
    """Row selection of a replay (held by its :class:`~wrdata.replay.reader.Selection`)."""

    def __init__(
        self,
        root: str,
        *,
        filesystem: Any = None,
        journal: bool | str = True,
        start: int | None = None,
        end: int | None = None,
        merged: bool = True,
        writers: list[str] | None = None,
        backfill: str = "received",
    ) -> None:
        if backfill not in BACKFILL_MODES:
            raise ValueError(f"backfill must be one of {', '.join(BACKFILL_MODES)}, not {backfill!r}")
        self.root = root
        self.filesystem = filesystem
        self.journal = journal
        self.start, self.end = start, end
        self.merged = merged
        self.writers = sorted(writers) if writers else None
        self.backfill = backfill
        self._lock = threading.Lock()
        self._drops: dict[str, Any] = {}  # provider -> DropSet
        self._healed: dict[str, pa.Table] = {}  # provider -> backfilled rows (event mode)

    @property
    def trivial(self) -> bool:
        return not self.merged and self.writers is None and self.backfill == "received"

    def _drop(self, provider: str):
        with self._lock:
            d = self._drops.get(provider)
            if d is None:
                from ..storage.merge import drop_set

                d = self._drops[provider] = drop_set(self.root, [provider], self.start, self.end, filesystem=self.filesystem,
                                                     journal=self.journal, writers=self.writers)
            return d

    def _backfilled(self, provider: str) -> pa.Table:
        with self._lock:
            t = self._healed.get(provider)
        if t is not None:
            return t
        from ..storage.merge import backfill_rows
        from ..storage.reader import sort_total_order

        t = backfill_rows(self.root, provider, self.start, None, filesystem=self.filesystem, journal=self.journal)
        t = self._writers(t)
        if self.merged:
            t = self._drop(provider).apply(t)
        if t.num_rows:  # at their event time (a row without one stays where it was received)
            ts = pc.fill_null(t.column("ts_event"), t.column("ts_recv"))
            t = sort_total_order(t.set_column(t.schema.get_field_index("ts_recv"), "ts_recv", ts.cast(t.schema.field("ts_recv").type)),
                                 "trades")
        with self._lock:
            self._healed[provider] = t
        return t

    def _writers(self, t: pa.Table) -> pa.Table:
        if self.writers is None or not t.num_rows:
            return t
        return t.filter(pc.is_in(t.column("writer").cast(pa.string()), pa.array(self.writers, pa.string())))

    def rows(self, table: str, t: pa.Table, lo: int, hi: int, sel: Any) -> pa.Table:
        """The rows of one window of ``table`` (already narrowed to the selection) to replay."""
        t = self._writers(t)
        if table != "trades":
            return t
        provs = sorted(sel.tables.get("trades", {}))
        if self.merged and t.num_rows:
            for p in provs:
                d = self._drop(p)
                if len(d):
                    t = d.apply(t)
        if self.backfill == "received" or (not t.num_rows and self.backfill == "none"):
            return t
        src = t.column("source").cast(pa.string())
        t = t.filter(pc.invert(pc.fill_null(pc.equal(src, "backfill"), False)))
        if self.backfill == "none":
            return t
        from ..storage.reader import sort_total_order

        extra = []
        chans = sel.channels.get("trades")
        for p in provs:
            h = self._backfilled(p)
            if not h.num_rows:
                continue
            ts = h.column("ts_recv").cast(pa.int64())
            h = h.filter(pc.and_(pc.greater_equal(ts, lo), pc.less(ts, hi)))
            syms = sel.tables["trades"][p]
            if syms is not None and h.num_rows:
                h = h.filter(pc.is_in(h.column("symbol").cast(pa.string()), pa.array(sorted(syms), pa.string())))
            if chans is not None and h.num_rows:
                h = h.filter(pc.is_in(h.column("channel").cast(pa.string()), pa.array(sorted(chans), pa.string())))
            if h.num_rows:
                extra.append(h)
        extra = [e for e in extra if e.num_rows]
        if not extra:
            return t
        return sort_total_order(pa.concat_tables([t, *[e.cast(t.schema) for e in extra]]), "trades")


__all__ = ["BACKFILL_MODES", "MergedView"]
