"""Bars built from trades, for intervals a venue does not stream (Coinbase: 5m only),
and bars resampled from a venue's own shorter bars (:class:`BarResampler`, IBKR).

One builder per (provider, symbol, interval) sits behind the trade route. Every trade
updates the open bar and emits it (``closed=False``), like a venue's kline updates; the
bar is emitted once more with ``closed=True`` when a trade of a later interval arrives,
when a trade is *received* (``ts_recv``) after the interval's end plus ``grace``, or when
the clock passes that time (so a quiet market still closes its bars). A trade of a
closed bar is left out. ``ts_event`` of a bar is its start time, for venue and derived
bars alike; ``derived=True`` marks these.

Replay drives the same builder with the recording's trades and its virtual clock. Which
trades make a bar depends only on the trades' own times (``ts_event`` and ``ts_recv``),
never on when a clock tick happened to run (live ticks run on the wall clock, replay ticks
on recorded times): so every update replays exactly as it was built live, even for venues
that batch their trades (Coinbase sends the trades of the last 250 ms together, so trades
of an interval arrive after its end). Only the moment a quiet bar's close is emitted
follows the clock.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from ..channels import interval_ns
from ..message import StreamMessage


def bucket_start(ts: int, interval: str) -> tuple[int, int]:
    """(start, end) in ns of the interval containing ``ts``; months are calendar months (UTC)."""
    if interval.endswith("M"):
        n = int(interval[:-1])
        d = datetime.fromtimestamp(ts / 1e9, tz=UTC)
        m0 = (d.year * 12 + d.month - 1) // n * n
        y, m = divmod(m0, 12)
        start = datetime(y, m + 1, 1, tzinfo=UTC)
        y2, m2 = divmod(m0 + n, 12)
        end = datetime(y2, m2 + 1, 1, tzinfo=UTC)
        return int(start.timestamp()) * 1_000_000_000, int(end.timestamp()) * 1_000_000_000
    size = interval_ns(interval)
    if interval.endswith("w"):  # weeks start on Monday, as venues count them (the epoch was a Thursday)
        off = 4 * 86_400_000_000_000
        start = (ts - off) // size * size + off
    else:
        start = ts // size * size
    return start, start + size


class _OpenBar:
    """The open bar of one interval, and how it is emitted to the consumers."""

    __slots__ = ("interval", "channel", "grace_ns", "consumers", "start", "end", "o", "h", "l", "c", "v", "last", "closed")

    def __init__(self, interval: str, grace_ns: int) -> None:
        self.interval = interval
        self.channel = f"bar:{interval}"
        self.grace_ns = grace_ns
        self.consumers: list[Callable[[StreamMessage], None]] = []
        self.start = self.end = 0
        self.o = self.h = self.l = self.c = self.v = 0.0
        self.last: StreamMessage | None = None
        self.closed = True

    def on_time(self, now_ns: int) -> None:
        """Close the open bar once the clock is past its end (plus grace)."""
        if not self.closed and self.last is not None and now_ns >= self.end + self.grace_ns:
            self._emit(self.last, closed=True, ts_recv=now_ns)

    def _emit(self, m: StreamMessage, closed: bool, ts_recv: int | None = None) -> None:
        msg = StreamMessage(
            provider=m.provider,
            symbol=m.symbol,
            kind="bar",
            ts_recv=m.ts_recv if ts_recv is None else ts_recv,
            ts_event=self.start,
            conn=m.conn,
            seq=m.seq,
            idx=m.idx,
            source=m.source,
            channel=self.channel,
            open=self.o,
            high=self.h,
            low=self.l,
            close=self.c,
            size=self.v,
            interval=self.interval,
            closed=closed,
            derived=True,
        )
        self.last = m
        if closed:
            self.closed = True
        for put in self.consumers:
            put(msg)


class BarBuilder(_OpenBar):
    """Trades in, bars of one interval out."""

    __slots__ = ()

    def __init__(self, interval: str, grace: float = 0.0) -> None:
        super().__init__(interval, int(grace * 1e9))

    def on_message(self, t: StreamMessage) -> None:
        if t.kind != "trade" or t.price is None:
            return
        ts = t.ts_event if t.ts_event is not None else t.ts_recv
        p = t.price
        if not self.closed and t.ts_recv >= self.end + self.grace_ns:
            # received once the bar is over: the bar closes now, as a clock tick at any
            # moment before this trade would have closed it (live and replay agree)
            self._emit(t, closed=True)
        if not self.closed:
            if ts < self.start:
                return  # a late trade from before the open bar
            if ts < self.end:
                if p > self.h:
                    self.h = p
                if p < self.l:
                    self.l = p
                self.c = p
                self.v += t.size or 0.0
                self._emit(t, closed=False)
                return
            self._emit(t, closed=True)  # the trade that proves the bar is over
        start, end = bucket_start(ts, self.interval)
        if start < self.end:
            return  # belongs to a bar already closed: it cannot reopen it
        self.start, self.end = start, end
        self.o = self.h = self.l = self.c = p
        self.v = t.size or 0.0
        self.closed = False
        self._emit(t, closed=False)


class BarResampler(_OpenBar):
    """Closed venue bars of a short interval in, bars of a longer interval out.

    For venues that stream short bars natively (IBKR's 5-second real-time bars): a
    ``1m`` bar is the merge of its twelve 5-second bars, exact OHLCV, with no need for
    every trade. Every source bar updates the open bar and emits it (``closed=False``);
    the source bar that ends exactly at the interval's end closes it (``closed=True``, the
    usual case), as does a source bar of a later interval or the clock passing the end
    plus ``grace`` (the last source bar of an interval is only sent once it is over, so
    ``grace`` defaults to one source interval). ``ts_event`` is the bar's start;
    ``derived=True``.
    """

    __slots__ = ("source", "source_ns")

    def __init__(self, interval: str, source: str, grace: float | None = None) -> None:
        self.source = source
        self.source_ns = interval_ns(source)
        super().__init__(interval, self.source_ns if grace is None else int(grace * 1e9))

    def on_message(self, b: StreamMessage) -> None:
        if b.kind != "bar" or b.interval != self.source or b.closed is False or b.open is None:
            return
        ts = b.ts_event if b.ts_event is not None else b.ts_recv
        done = ts + self.source_ns
        if not self.closed:
            if ts < self.start:
                return  # a late bar from before the open one
            if ts < self.end:
                self.h = max(self.h, b.high if b.high is not None else b.open)
                self.l = min(self.l, b.low if b.low is not None else b.open)
                self.c = b.close if b.close is not None else self.c
                self.v += b.size or 0.0
                self._emit(b, closed=done >= self.end)
                return
            self._emit(self.last or b, closed=True, ts_recv=b.ts_recv)  # a later bar proves the open one is over
        start, end = bucket_start(ts, self.interval)
        if start < self.end:
            return  # belongs to a bar already closed: it cannot reopen it
        self.start, self.end = start, end
        self.o = b.open
        self.h = b.high if b.high is not None else b.open
        self.l = b.low if b.low is not None else b.open
        self.c = b.close if b.close is not None else b.open
        self.v = b.size or 0.0
        self.closed = False
        self._emit(b, closed=done >= end)
