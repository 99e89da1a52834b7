"""A seeded synthetic market: the venue-neutral source of events every simulator serves.

The market is an order book per symbol driven by a latent random walk (the "fair"
price): makers add and cancel liquidity around the fair price, takers cross the spread
and sweep levels, producing trades. Everything is kept in integers (prices in ticks,
sizes in lots) so every venue can format them exactly, on the tick and lot grids.

Determinism
-----------
The **tape** -- the sequence of :class:`MarketEvent` -- is a pure function of
``seed``, the :class:`SymbolSpec` list, ``rate`` and the :class:`ActivityProfile`.
Event *i* (its symbol, book changes, trades, ids and its market-time offset) never
depends on wall time, subscribers or how fast the tape is consumed. Only the absolute
timestamps ``ts_ns = t0_ns + offset_ns`` depend on ``t0_ns``, the wall time the
simulator maps to market time 0. A test regenerates the tape with a second market::

    a = SyntheticMarket(seed=7, t0_ns=0)
    b = SyntheticMarket(seed=7, t0_ns=0)
    assert [e.key() for e in a.take(1000)] == [e.key() for e in b.take(1000)]

Only ``random.Random.random()`` is used (no ``gauss``/``choice``, whose algorithms may
change between Python versions), so tapes are stable across Python versions.

Public API (stable; other simulators build on it)
-------------------------------------------------
``SymbolSpec(symbol, base_price, tick_size, lot_size, first_trade_id=1, ...)``
    One instrument. ``fmt_price(ticks, decimals=None)``, ``fmt_qty(lots, decimals=None)``,
    ``fmt_quote(units, decimals=None)`` (units = ticks*lots, for notional) format exactly;
    ``price(ticks)``/``qty(lots)`` give floats.
``SyntheticMarket(seed=0, symbols=None, rate=1000.0, t0_ns=None, activity=None, history=100_000, bar_history_s=14_400)``
    ``start(t0_ns)`` fixes the wall time of offset 0 (the simulator calls it);
    ``advance(offset_ns) -> list[MarketEvent]`` generates every event up to that market
    time (what a clock-driven server calls); ``take(n)`` generates the next ``n``
    events regardless of time (tests, benchmarks); ``peek_offset_ns()`` is the next
    event's offset.
    State after the last generated event: ``book(symbol) -> Book`` (``bids()``/``asks()``
    best first, ``update_id``), ``trades(symbol)``/``agg_trades(symbol)`` (the retained
    history, oldest first), ``trades_from(symbol, trade_id, limit)``, ``last_trade_id``,
    ``bars(symbol, interval, start_ns, end_ns, limit)`` (OHLCV from trades, empty
    intervals filled flat at the previous close as venues do).
``MarketEvent``
    ``seq`` (index in the tape), ``offset_ns``, ``ts_ns``, ``symbol``, ``update_id``
    (per symbol, +1 per event), ``bids``/``asks`` (level changes ``(price_ticks,
    lots)``, absolute sizes, ``0`` deletes), ``trades`` (list of :class:`Trade`),
    ``aggs`` (list of :class:`AggTrade`: one per taker order and price), ``bbo``
    (``(bid, bid_lots, ask, ask_lots)`` after the event), ``bbo_changed``.
``Trade``/``AggTrade``/``Bar``
    Slotted records in ticks and lots; ``Trade.buyer_maker`` is True when the
    aggressor sold. Trade ids are consecutive per symbol from ``first_trade_id``;
    aggregate ids from ``first_agg_id``; an aggregate covers ``first_id..last_id``.
``BarBuilder(symbol, interval, last_price=None, tz_offset_ns=0)``
    Running bar of one interval fed trade by trade (what a kline stream pushes).
``bar_open_ns(ts_ns, interval, tz_offset_ns=0)`` / ``bar_close_ns`` / ``interval_ns(interval)``
    Interval arithmetic: ``1s 1m 3m 5m 15m 30m 1h 2h 4h 6h 8h 12h 1d 3d 1w 1M``; weeks
    open on Monday 00:00, months on the 1st (calendar months), in UTC or in the zone
    ``tz_offset_ns`` east of it (``bars(..., tz_offset_ns=)`` and ``BarBuilder`` too).
``ActivityProfile(segments, phase_s=0)``
    Cyclic piecewise-constant activity (rate multiplier) for stock venues' quiet hours:
    ``ActivityProfile([(6.5*3600, 1.0), (17.5*3600, 0.0)], phase_s=...)``.
"""

from __future__ import annotations

import bisect
import calendar
import datetime as _dt
import math
import random
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

__all__ = [
    "ActivityProfile",
    "AggTrade",
    "Bar",
    "BarBuilder",
    "Book",
    "MarketEvent",
    "SymbolSpec",
    "SyntheticMarket",
    "Trade",
    "bar_close_ns",
    "bar_open_ns",
    "interval_ns",
    "DEFAULT_SYMBOLS",
]

NS = 1_000_000_000


def _decimals(step: str) -> tuple[int, int]:
    """``"0.01"`` -> (2, 1); ``"0.00500000"`` -> (3, 5): (decimals, step in 10**-decimals units)."""
    d = Decimal(step).normalize()
    if d <= 0:
        raise ValueError(f"step must be positive, got {step!r}")
    exp = -d.as_tuple().exponent
    decimals = max(exp, 0)
    units = int(d.scaleb(decimals))
    return decimals, units


def _fmt_scaled(value: int, decimals: int, out: int) -> str:
    """Format integer ``value`` * 10**-decimals with exactly ``out`` decimals (truncating)."""
    if out >= decimals:
        v = value * 10 ** (out - decimals)
    else:
        v = value // 10 ** (decimals - out)
    if out == 0:
        return str(v)
    sign = "-" if v < 0 else ""
    q, r = divmod(abs(v), 10**out)
    return f"{sign}{q}.{r:0{out}d}"


@dataclass(frozen=True)
class SymbolSpec:
    """One instrument of the synthetic market.

    ``tick_size``/``lot_size`` are decimal strings (they set price and quantity
    precision). ``mean_qty`` is the average taker order size in base units;
    ``volatility`` is the fair price's relative standard deviation per square root
    of an hour at the nominal rate (0.01 = 1 %). ``weight`` is this symbol's share of
    the market's events. ``book_depth`` levels are kept on each side (at most twice
    that; the excess far levels are deleted, as venues trim far levels).
    """

    symbol: str
    base_price: float
    tick_size: str = "0.01"
    lot_size: str = "0.00001"
    first_trade_id: int = 1
    first_agg_id: int = 1
    first_update_id: int = 1
    book_depth: int = 50
    mean_qty: float = 0.05
    volatility: float = 0.01
    weight: float = 1.0
    base_asset: str = ""
    quote_asset: str = ""
    price_decimals: int = field(init=False, repr=False)
    qty_decimals: int = field(init=False, repr=False)
    _tick_units: int = field(init=False, repr=False)
    _lot_units: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.base_price <= 0:
            raise ValueError(f"{self.symbol}: base_price must be positive")
        if self.book_depth < 1:
            raise ValueError(f"{self.symbol}: book_depth must be >= 1")
        pd, pu = _decimals(self.tick_size)
        qd, qu = _decimals(self.lot_size)
        object.__setattr__(self, "price_decimals", pd)
        object.__setattr__(self, "qty_decimals", qd)
        object.__setattr__(self, "_tick_units", pu)
        object.__setattr__(self, "_lot_units", qu)

    # -- exact formatting (ticks/lots are integers; output is a decimal string) --
    def fmt_price(self, ticks: int, decimals: int | None = None) -> str:
        return _fmt_scaled(ticks * self._tick_units, self.price_decimals, self.price_decimals if decimals is None else decimals)

    def fmt_qty(self, lots: int, decimals: int | None = None) -> str:
        return _fmt_scaled(lots * self._lot_units, self.qty_decimals, self.qty_decimals if decimals is None else decimals)

    def fmt_quote(self, units: int, decimals: int | None = None) -> str:
        """Notional ``units`` = sum of ticks*lots."""
        d = self.price_decimals + self.qty_decimals
        return _fmt_scaled(units * self._tick_units * self._lot_units, d, d if decimals is None else decimals)

    def price(self, ticks: int) -> float:
        return ticks * self._tick_units / 10**self.price_decimals

    def qty(self, lots: int) -> float:
        return lots * self._lot_units / 10**self.qty_decimals

    def to_ticks(self, price: float | str) -> int:
        return int((Decimal(str(price)) / Decimal(self.tick_size)).to_integral_value())

    def to_lots(self, qty: float | str) -> int:
        return int((Decimal(str(qty)) / Decimal(self.lot_size)).to_integral_value())


#: Realistic defaults (prices and filters in the style of Binance spot).
DEFAULT_SYMBOLS: tuple[SymbolSpec, ...] = (
    SymbolSpec(
        "BTCUSDT",
        65000.0,
        "0.01",
        "0.00001",
        first_trade_id=3_735_683_259,
        first_agg_id=3_100_000_000,
        first_update_id=50_093_239_189,
        mean_qty=0.02,
        volatility=0.006,
        weight=4,
        base_asset="BTC",
        quote_asset="USDT",
    ),
    SymbolSpec(
        "ETHUSDT",
        3200.0,
        "0.01",
        "0.0001",
        first_trade_id=1_520_000_000,
        first_agg_id=1_100_000_000,
        first_update_id=31_000_000_000,
        mean_qty=0.5,
        volatility=0.008,
        weight=3,
        base_asset="ETH",
        quote_asset="USDT",
    ),
    SymbolSpec(
        "BNBUSDT",
        580.0,
        "0.01",
        "0.001",
        first_trade_id=780_000_000,
        first_agg_id=560_000_000,
        first_update_id=12_000_000_000,
        mean_qty=2.0,
        volatility=0.008,
        weight=1,
        base_asset="BNB",
        quote_asset="USDT",
    ),
    SymbolSpec(
        "SOLUSDT",
        150.0,
        "0.01",
        "0.001",
        first_trade_id=900_000_000,
        first_agg_id=640_000_000,
        first_update_id=14_000_000_000,
        mean_qty=5.0,
        volatility=0.01,
        weight=2,
        base_asset="SOL",
        quote_asset="USDT",
    ),
)


# ---------------------------------------------------------------------------------------------
# records


class Trade:
    """One trade. ``price`` in ticks, ``qty`` in lots; ``buyer_maker`` True = aggressor sold."""

    __slots__ = ("symbol", "trade_id", "price", "qty", "buyer_maker", "offset_ns", "ts_ns", "agg_id")

    def __init__(
        self, symbol: str, trade_id: int, price: int, qty: int, buyer_maker: bool, offset_ns: int, ts_ns: int, agg_id: int
    ):
        self.symbol = symbol
        self.trade_id = trade_id
        self.price = price
        self.qty = qty
        self.buyer_maker = buyer_maker
        self.offset_ns = offset_ns
        self.ts_ns = ts_ns
        self.agg_id = agg_id

    @property
    def side(self) -> str:
        """Aggressor side."""
        return "sell" if self.buyer_maker else "buy"

    def key(self) -> tuple:
        return (self.symbol, self.trade_id, self.price, self.qty, self.buyer_maker, self.offset_ns, self.agg_id)

    def __repr__(self) -> str:
        return (
            f"Trade({self.symbol} #{self.trade_id} {self.price}x{self.qty} {'S' if self.buyer_maker else 'B'} @{self.offset_ns})"
        )


class AggTrade:
    """Trades of one taker order at one price: ``first_id..last_id``."""

    __slots__ = ("symbol", "agg_id", "price", "qty", "first_id", "last_id", "buyer_maker", "offset_ns", "ts_ns")

    def __init__(
        self,
        symbol: str,
        agg_id: int,
        price: int,
        qty: int,
        first_id: int,
        last_id: int,
        buyer_maker: bool,
        offset_ns: int,
        ts_ns: int,
    ):
        self.symbol = symbol
        self.agg_id = agg_id
        self.price = price
        self.qty = qty
        self.first_id = first_id
        self.last_id = last_id
        self.buyer_maker = buyer_maker
        self.offset_ns = offset_ns
        self.ts_ns = ts_ns

    def key(self) -> tuple:
        return (self.symbol, self.agg_id, self.price, self.qty, self.first_id, self.last_id, self.buyer_maker, self.offset_ns)

    def __repr__(self) -> str:
        return f"AggTrade({self.symbol} a{self.agg_id} {self.price}x{self.qty} [{self.first_id}..{self.last_id}])"


class MarketEvent:
    """One step of the tape: a maker add/cancel or a taker order, for one symbol."""

    __slots__ = ("seq", "offset_ns", "ts_ns", "symbol", "update_id", "bids", "asks", "trades", "aggs", "bbo", "bbo_changed")

    def __init__(
        self,
        seq: int,
        offset_ns: int,
        ts_ns: int,
        symbol: str,
        update_id: int,
        bids: list,
        asks: list,
        trades: list,
        aggs: list,
        bbo: tuple[int, int, int, int],
        bbo_changed: bool,
    ):
        self.seq = seq
        self.offset_ns = offset_ns
        self.ts_ns = ts_ns
        self.symbol = symbol
        self.update_id = update_id
        self.bids = bids
        self.asks = asks
        self.trades = trades
        self.aggs = aggs
        self.bbo = bbo
        self.bbo_changed = bbo_changed

    def key(self) -> tuple:
        """Everything but the wall-time-dependent ``ts_ns`` (for determinism checks)."""
        return (
            self.seq,
            self.offset_ns,
            self.symbol,
            self.update_id,
            tuple(self.bids),
            tuple(self.asks),
            tuple(t.key() for t in self.trades),
            tuple(a.key() for a in self.aggs),
            self.bbo,
            self.bbo_changed,
        )

    def __repr__(self) -> str:
        return (
            f"MarketEvent(#{self.seq} {self.symbol} u={self.update_id} @{self.offset_ns} "
            f"bids={self.bids} asks={self.asks} trades={len(self.trades)})"
        )


class Bar:
    """OHLCV of one interval, from trades. Prices in ticks, volumes in lots, notional in ticks*lots."""

    __slots__ = (
        "symbol",
        "interval",
        "open_ns",
        "close_ns",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "quote_volume",
        "count",
        "first_id",
        "last_id",
        "taker_buy_volume",
        "taker_buy_quote",
    )

    def __init__(self, symbol: str, interval: str, open_ns: int, close_ns: int, price: int | None = None):
        self.symbol = symbol
        self.interval = interval
        self.open_ns = open_ns
        self.close_ns = close_ns  # exclusive end
        self.open = self.high = self.low = self.close = price  # None until the first trade
        self.volume = 0
        self.quote_volume = 0
        self.count = 0
        self.first_id = -1
        self.last_id = -1
        self.taker_buy_volume = 0
        self.taker_buy_quote = 0

    def add(self, t: Trade) -> None:
        p = t.price
        if self.count == 0:
            self.open = self.high = self.low = p
            self.first_id = t.trade_id
        else:
            if p > self.high:
                self.high = p
            elif p < self.low:
                self.low = p
        self.close = p
        self.last_id = t.trade_id
        self.count += 1
        self.volume += t.qty
        self.quote_volume += p * t.qty
        if not t.buyer_maker:
            self.taker_buy_volume += t.qty
            self.taker_buy_quote += p * t.qty

    def merge(self, b: Bar) -> None:
        """Fold a later sub-bar (e.g. a one-second bar) into this one."""
        if b.count == 0:
            if self.close is None:
                self.open = self.high = self.low = self.close = b.close
            return
        if self.count == 0:
            self.open, self.high, self.low = b.open, b.high, b.low
            self.first_id = b.first_id
        else:
            self.high = max(self.high, b.high)
            self.low = min(self.low, b.low)
        self.close = b.close
        self.last_id = b.last_id
        self.count += b.count
        self.volume += b.volume
        self.quote_volume += b.quote_volume
        self.taker_buy_volume += b.taker_buy_volume
        self.taker_buy_quote += b.taker_buy_quote

    def copy(self) -> Bar:
        b = Bar.__new__(Bar)
        for s in Bar.__slots__:
            setattr(b, s, getattr(self, s))
        return b

    def key(self) -> tuple:
        return tuple(getattr(self, s) for s in Bar.__slots__)

    def __repr__(self) -> str:
        return f"Bar({self.symbol} {self.interval} {self.open_ns} o={self.open} h={self.high} l={self.low} c={self.close} v={self.volume} n={self.count})"


# ---------------------------------------------------------------------------------------------
# intervals

_FIXED = {"s": NS, "m": 60 * NS, "h": 3600 * NS, "d": 86400 * NS, "w": 7 * 86400 * NS}
_MONDAY_OFFSET_NS = 4 * 86400 * NS  # 1970-01-05 was a Monday; the epoch was a Thursday


def interval_ns(interval: str) -> int:
    """Fixed length of ``1s``..``1w`` in ns; months raise ``ValueError`` (no fixed length)."""
    try:
        n, unit = int(interval[:-1]), interval[-1]
    except (ValueError, IndexError):
        raise ValueError(f"bad interval {interval!r}") from None
    if unit == "M":
        raise ValueError("monthly intervals have no fixed length")
    if unit not in _FIXED or n <= 0:
        raise ValueError(f"bad interval {interval!r}")
    return n * _FIXED[unit]


def _month_index(ts_ns: int) -> int:
    d = _dt.datetime.fromtimestamp(ts_ns // NS, tz=_dt.UTC)
    return d.year * 12 + d.month - 1


def _month_start_ns(index: int) -> int:
    y, m = divmod(index, 12)
    return calendar.timegm((y, m + 1, 1, 0, 0, 0)) * NS


def bar_open_ns(ts_ns: int, interval: str, tz_offset_ns: int = 0) -> int:
    """Open time of the bar containing ``ts_ns`` (weeks open Monday, months on the 1st).

    Boundaries are those of the time zone ``tz_offset_ns`` east of UTC (Binance's
    ``@+08:00`` klines, ``timeZone=8``); the result is still epoch (UTC) ns.
    """
    local = ts_ns + tz_offset_ns
    if interval.endswith("M"):
        n = int(interval[:-1])
        idx = _month_index(local)
        return _month_start_ns(idx - idx % n) - tz_offset_ns
    size = interval_ns(interval)
    if interval.endswith("w"):
        return (local - _MONDAY_OFFSET_NS) // size * size + _MONDAY_OFFSET_NS - tz_offset_ns
    return local // size * size - tz_offset_ns


def bar_close_ns(open_ns: int, interval: str, tz_offset_ns: int = 0) -> int:
    """Exclusive end of the bar that opens at ``open_ns``."""
    if interval.endswith("M"):
        return _month_start_ns(_month_index(open_ns + tz_offset_ns) + int(interval[:-1])) - tz_offset_ns
    return open_ns + interval_ns(interval)


class BarBuilder:
    """The running bar of one symbol and interval, fed trade by trade.

    ``add(trade)`` returns the bars it closed (an interval boundary crossed; empty
    intervals in between come back flat at the previous close, with no trades);
    ``current(now_ns)`` rolls to ``now_ns`` the same way and returns the open bar.
    """

    def __init__(self, symbol: str, interval: str, last_price: int | None = None, tz_offset_ns: int = 0):
        self.symbol = symbol
        self.interval = interval
        self.bar: Bar | None = None
        self.last_price = last_price
        self.tz = tz_offset_ns

    def _roll(self, ts_ns: int) -> list[Bar]:
        closed: list[Bar] = []
        bar = self.bar
        if bar is not None and ts_ns < bar.close_ns:
            return closed
        iv, tz = self.interval, self.tz
        open_ns = bar_open_ns(ts_ns, iv, tz)
        if bar is not None:
            closed.append(bar)
            # flat bars for empty intervals between the last bar and this one (venues emit them)
            t = bar.close_ns
            while t < open_ns and len(closed) < 10_000:
                closed.append(Bar(self.symbol, iv, t, bar_close_ns(t, iv, tz), self.last_price))
                t = bar_close_ns(t, iv, tz)
        self.bar = Bar(self.symbol, iv, open_ns, bar_close_ns(open_ns, iv, tz), self.last_price)
        return closed

    def add(self, t: Trade) -> list[Bar]:
        closed = self._roll(t.ts_ns)
        self.bar.add(t)  # type: ignore[union-attr]
        self.last_price = t.price
        return closed

    def current(self, now_ns: int) -> tuple[Bar, list[Bar]]:
        """(open bar at ``now_ns``, bars closed by rolling to it)."""
        closed = self._roll(now_ns)
        return self.bar, closed  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# activity


class ActivityProfile:
    """Cyclic, piecewise-constant activity multiplier of the event rate.

    ``segments`` is ``[(duration_s, multiplier), ...]`` repeated forever; ``phase_s``
    is where in the cycle market time 0 falls (a stock simulator can set it from the
    wall clock at start, then the tape stays a pure function of its parameters).
    Multiplier 0 is a closed market: no events at all in that segment.
    """

    def __init__(self, segments: Sequence[tuple[float, float]], phase_s: float = 0.0):
        if not segments or any(d <= 0 or m < 0 for d, m in segments):
            raise ValueError("segments need positive durations and non-negative multipliers")
        if all(m == 0 for _, m in segments):
            raise ValueError("an activity profile needs at least one active segment")
        self.segments = [(int(d * NS), float(m)) for d, m in segments]
        self.cycle_ns = sum(d for d, _ in self.segments)
        self.phase_ns = int(phase_s * NS) % self.cycle_ns

    def multiplier(self, offset_ns: int) -> float:
        pos = (offset_ns + self.phase_ns) % self.cycle_ns
        for d, m in self.segments:
            if pos < d:
                return m
            pos -= d
        return self.segments[-1][1]

    def advance(self, offset_ns: int, work_ns: float) -> int:
        """Market offset after spending ``work_ns`` of full-rate time starting at ``offset_ns``."""
        pos = (offset_ns + self.phase_ns) % self.cycle_ns
        t = offset_ns
        i = 0
        for i, (d, _m) in enumerate(self.segments):  # noqa: B007 - find the segment holding pos
            if pos < d:
                break
            pos -= d
        while True:
            d, m = self.segments[i]
            left = d - pos
            if m > 0:
                need = work_ns / m
                if need <= left:
                    return t + max(1, int(need))
                work_ns -= left * m
            t += left
            pos = 0
            i = (i + 1) % len(self.segments)


# ---------------------------------------------------------------------------------------------
# book


class Book:
    """One symbol's book: ``{price_ticks: lots}`` per side plus sorted price keys.

    Keys are kept so index 0 is the best level on both sides (bids are stored negated).
    """

    __slots__ = ("bid", "ask", "_bk", "_ak", "update_id")

    def __init__(self, update_id: int):
        self.bid: dict[int, int] = {}
        self.ask: dict[int, int] = {}
        self._bk: list[int] = []  # -price ascending = best bid first
        self._ak: list[int] = []  # price ascending = best ask first
        self.update_id = update_id

    def bids(self, depth: int | None = None) -> list[tuple[int, int]]:
        keys = self._bk if depth is None else self._bk[:depth]
        return [(-k, self.bid[-k]) for k in keys]

    def asks(self, depth: int | None = None) -> list[tuple[int, int]]:
        keys = self._ak if depth is None else self._ak[:depth]
        return [(k, self.ask[k]) for k in keys]

    def best(self) -> tuple[int, int, int, int]:
        bb = -self._bk[0] if self._bk else 0
        ba = self._ak[0] if self._ak else 0
        return (bb, self.bid.get(bb, 0), ba, self.ask.get(ba, 0))

    def snapshot(self) -> tuple[int, list[tuple[int, int]], list[tuple[int, int]]]:
        return self.update_id, self.bids(), self.asks()


# ---------------------------------------------------------------------------------------------
# the market


class _SymState:
    __slots__ = (
        "spec",
        "book",
        "fair",
        "sigma",
        "scale",
        "mean_lots",
        "next_trade_id",
        "next_agg_id",
        "trades",
        "aggs",
        "secs",
        "sec_bars",
        "last_price",
        "depth",
        "band",
        "floor",
    )

    def __init__(self, spec: SymbolSpec, sigma: float, history: int):
        self.spec = spec
        self.book = Book(spec.first_update_id - 1)
        self.fair = spec.base_price / float(Decimal(spec.tick_size))  # in ticks
        self.sigma = sigma  # fair-price step per event, in ticks
        self.scale = max(1.0, sigma)  # typical distance of maker quotes, in ticks
        self.mean_lots = max(1.0, spec.mean_qty / float(Decimal(spec.lot_size)))
        self.next_trade_id = spec.first_trade_id
        self.next_agg_id = spec.first_agg_id
        self.trades: deque[Trade] = deque(maxlen=history)
        self.aggs: deque[AggTrade] = deque(maxlen=history)
        self.secs: list[int] = []  # epoch seconds with trades, ascending
        self.sec_bars: dict[int, Bar] = {}
        self.last_price: int | None = None
        self.depth = spec.book_depth
        # price range (ticks) over which a side's `depth` levels spread
        self.band = max(spec.book_depth, int(spec.book_depth * self.scale * 0.5))
        # lowest fair price (ticks), so the book keeps room above 0 (a coarse floor: the
        # random walk has no drift, so it is rarely reached)
        self.floor = max(1.0, min(4.0 * self.band, 0.5 * self.fair))


class SyntheticMarket:
    """The seeded market. See the module docstring for the API and guarantees.

    ``rate`` is the nominal number of events per second over all symbols (before the
    activity profile). ``history`` trades and aggregate trades are kept per symbol for
    REST history endpoints; ``bar_history_s`` seconds of one-second bars for klines.
    """

    def __init__(
        self,
        seed: int = 0,
        symbols: Iterable[SymbolSpec] | None = None,
        rate: float = 1000.0,
        *,
        t0_ns: int | None = None,
        activity: ActivityProfile | None = None,
        history: int = 100_000,
        bar_history_s: int = 14_400,
    ):
        specs = list(DEFAULT_SYMBOLS if symbols is None else symbols)
        if not specs:
            raise ValueError("a market needs at least one symbol")
        names = [s.symbol for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate symbols in {names}")
        if rate <= 0:
            raise ValueError("rate must be positive (events per second)")
        self.seed = seed
        self.rate = float(rate)
        self._ns_per_event = NS / self.rate
        self.activity = activity
        self.specs: dict[str, SymbolSpec] = {s.symbol: s for s in specs}
        self.symbols: list[str] = names
        self.t0_ns: int | None = t0_ns
        self._rng = random.Random(seed)
        self._bar_history_ns = bar_history_s * NS
        total_w = sum(s.weight for s in specs)
        if total_w <= 0:
            raise ValueError("symbol weights must sum to a positive number")
        acc = 0.0
        self._cum: list[float] = []
        self._states: list[_SymState] = []
        for s in specs:
            acc += s.weight / total_w
            self._cum.append(acc)
            sym_rate = self.rate * s.weight / total_w
            sigma_rel = s.volatility / math.sqrt(max(sym_rate, 1e-9) * 3600.0)
            ticks = s.base_price / float(Decimal(s.tick_size))
            self._states.append(_SymState(s, sigma_rel * ticks, history))
        self._cum[-1] = 1.0
        self._by_symbol = {st.spec.symbol: st for st in self._states}
        self._seq = 0
        self._offset_ns = 0  # offset of the last generated event
        self._next_offset_ns = 0
        self._init_books()
        self._next_offset_ns = self._draw_next_offset(0)

    # -- setup --
    def _init_books(self) -> None:
        """Seeded initial books (part of the tape's state, not events)."""
        r = self._rng.random
        for st in self._states:
            book = st.book
            mid = int(st.fair)
            gap = st.scale
            bid = mid
            ask = mid + 1
            for _ in range(st.depth):
                lots = self._draw_lots(st, 1.5)
                book.bid[bid] = lots
                book._bk.append(-bid)
                bid -= 1 + int(-math.log(1.0 - r()) * gap * 0.5)
                lots = self._draw_lots(st, 1.5)
                book.ask[ask] = lots
                book._ak.append(ask)
                ask += 1 + int(-math.log(1.0 - r()) * gap * 0.5)
            st.fair = (mid + mid + 1) / 2

    def _draw_lots(self, st: _SymState, mult: float = 1.0) -> int:
        # exponential sizes, rounded to whole lots: most orders small, some large
        return 1 + int(-math.log(1.0 - self._rng.random()) * st.mean_lots * mult)

    def _draw_next_offset(self, offset_ns: int) -> int:
        work = -math.log(1.0 - self._rng.random()) * self._ns_per_event
        if self.activity is None:
            return offset_ns + max(1, int(work))
        return self.activity.advance(offset_ns, work)

    # -- clock --
    def start(self, t0_ns: int) -> None:
        """Fix the wall time (epoch ns) of market offset 0. Must precede generation."""
        if self._seq and self.t0_ns is not None and t0_ns != self.t0_ns:
            raise RuntimeError("the market clock is already running")
        self.t0_ns = t0_ns

    @property
    def offset_ns(self) -> int:
        """Market time of the last generated event."""
        return self._offset_ns

    @property
    def seq(self) -> int:
        """Number of events generated so far (the next event's ``seq``)."""
        return self._seq

    def peek_offset_ns(self) -> int:
        return self._next_offset_ns

    def advance(self, offset_ns: int) -> list[MarketEvent]:
        """Generate every event whose offset is ``<= offset_ns``."""
        out: list[MarketEvent] = []
        step = self._step
        while self._next_offset_ns <= offset_ns:
            out.append(step())
        return out

    def take(self, n: int) -> list[MarketEvent]:
        """Generate the next ``n`` events, whatever their offsets."""
        step = self._step
        return [step() for _ in range(n)]

    # -- state queries --
    def spec(self, symbol: str) -> SymbolSpec:
        return self.specs[symbol]

    def book(self, symbol: str) -> Book:
        return self._by_symbol[symbol].book

    def trades(self, symbol: str) -> list[Trade]:
        return list(self._by_symbol[symbol].trades)

    def agg_trades(self, symbol: str) -> list[AggTrade]:
        return list(self._by_symbol[symbol].aggs)

    def last_trade_id(self, symbol: str) -> int:
        """Id of the last trade generated (``first_trade_id - 1`` before any)."""
        return self._by_symbol[symbol].next_trade_id - 1

    def last_price(self, symbol: str) -> int | None:
        return self._by_symbol[symbol].last_price

    def trades_from(self, symbol: str, from_id: int | None = None, limit: int = 500) -> list[Trade]:
        """Retained trades with id >= ``from_id`` (the most recent ``limit`` when None)."""
        dq = self._by_symbol[symbol].trades
        if not dq:
            return []
        if from_id is None:
            start = max(0, len(dq) - limit)
        else:
            start = max(0, from_id - dq[0].trade_id)
        return [dq[i] for i in range(start, min(len(dq), start + limit))]

    def trades_in(self, symbol: str, start_ns: int | None = None, end_ns: int | None = None) -> list[Trade]:
        """Retained trades with ``start_ns <= ts < end_ns`` (open bounds when None), oldest first:
        what time-windowed history endpoints (Coinbase, Kraken, the stock venues) serve."""
        dq = self._by_symbol[symbol].trades
        lo = 0 if start_ns is None else _bisect_deque(dq, start_ns)
        hi = len(dq) if end_ns is None else _bisect_deque(dq, end_ns)
        return [dq[i] for i in range(lo, hi)]

    def aggs_from(
        self, symbol: str, from_id: int | None = None, limit: int = 500, *, start_ns: int | None = None, end_ns: int | None = None
    ) -> list[AggTrade]:
        """Retained aggregate trades by id (inclusive) or time range (inclusive); most recent when neither."""
        dq = self._by_symbol[symbol].aggs
        if not dq:
            return []
        n = len(dq)
        if from_id is not None:
            start = max(0, from_id - dq[0].agg_id)
        elif start_ns is not None:
            start = _bisect_deque(dq, start_ns)
        elif end_ns is not None:
            stop = _bisect_deque(dq, end_ns + 1)
            start = max(0, stop - limit)
        else:
            start = max(0, n - limit)
        out = []
        for i in range(start, min(n, start + limit)):
            a = dq[i]
            if end_ns is not None and a.ts_ns > end_ns:
                break
            out.append(a)
        return out

    def bars(
        self,
        symbol: str,
        interval: str,
        start_ns: int | None = None,
        end_ns: int | None = None,
        limit: int = 500,
        tz_offset_ns: int = 0,
    ) -> list[Bar]:
        """Bars of ``interval`` from the retained one-second bars, oldest first.

        With ``start_ns`` the first ``limit`` bars opening at or after the bar containing
        it; otherwise the last ``limit`` bars ending at ``end_ns`` (default: now).
        Intervals with no trade between bars with trades come back flat at the previous
        close; the current (open) bar is included.
        """
        st = self._by_symbol[symbol]
        secs = st.secs
        if not secs:
            return []
        lo_ns = secs[0] * NS if start_ns is None else max(start_ns, secs[0] * NS)
        hi_ns = self._now_ns() if end_ns is None else end_ns
        if hi_ns < lo_ns:
            return []
        first_open = bar_open_ns(lo_ns, interval, tz_offset_ns)
        last_open = bar_open_ns(hi_ns, interval, tz_offset_ns)
        # walk the one-second bars between first_open and the end
        i = bisect.bisect_left(secs, first_open // NS)
        prev_close: int | None = st.sec_bars[secs[i - 1]].close if i > 0 else None
        out: list[Bar] = []
        open_ns = first_open
        while open_ns <= last_open:
            close_ns = bar_close_ns(open_ns, interval, tz_offset_ns)
            bar = Bar(symbol, interval, open_ns, close_ns, prev_close)
            while i < len(secs) and secs[i] * NS < close_ns:
                bar.merge(st.sec_bars[secs[i]])
                i += 1
            if bar.close is not None:
                out.append(bar)
                prev_close = bar.close
            open_ns = close_ns
            if start_ns is not None and len(out) >= limit:
                break
        return out[-limit:] if start_ns is None else out[:limit]

    def _now_ns(self) -> int:
        return (self.t0_ns or 0) + self._offset_ns

    # -- the generator --
    def _step(self) -> MarketEvent:
        """Generate one event (the heart of the tape; written for speed, hence the locals)."""
        r = self._rng.random
        log = math.log
        offset = self._next_offset_ns
        ts = (self.t0_ns or 0) + offset
        # which symbol
        u = r()
        cum = self._cum
        k = 0
        while u > cum[k]:
            k += 1
        st = self._states[k]
        book = st.book
        bidd = book.bid
        askd = book.ask
        bk = book._bk
        ak = book._ak
        sym = st.spec.symbol
        best_bid = -bk[0]
        best_ask = ak[0]
        before = (best_bid, bidd[best_bid], best_ask, askd[best_ask])
        # the latent fair price: a Gaussian step (Box-Muller from two uniforms)
        fair = st.fair + math.sqrt(-2.0 * log(1.0 - r())) * math.cos(6.283185307179586 * r()) * st.sigma
        if fair < st.floor:  # keep prices positive, with room for the book
            fair = st.floor
        st.fair = fair
        scale = st.scale
        mean_lots = st.mean_lots
        lag = (fair - (best_bid + best_ask) * 0.5) / scale  # how far the book lags the fair price
        alag = lag if lag > 0 else -lag
        bids: list[tuple[int, int]] = []
        asks: list[tuple[int, int]] = []
        trades: list[Trade] = []
        aggs: list[AggTrade] = []
        a = r()
        if a < 0.16 + (0.12 if alag > 2.0 else alag * 0.06):
            # taker order: crosses the spread, mostly toward the fair price, with a limit
            # price a little past it (so it sweeps levels only up to there: IOC-like)
            p = 0.5 + lag * 0.25
            buy = r() < (0.95 if p > 0.95 else 0.05 if p < 0.05 else p)
            want = 1 + int(-log(1.0 - r()) * mean_lots)
            if buy:
                keys, levels, changes, sign = ak, askd, asks, 1
                limit = int(fair + scale)
                if limit < best_ask:
                    limit = best_ask
            else:
                keys, levels, changes, sign = bk, bidd, bids, -1
                limit = -int(fair - scale)
                if limit < -best_bid:
                    limit = -best_bid
            swept = 0
            tid = st.next_trade_id
            aid = st.next_agg_id
            while want > 0 and keys and swept < 4 and keys[0] <= limit:
                price = keys[0] * sign
                avail = levels[price]
                fill = want if want < avail else avail
                # several resting orders at one price: the fill is 1-3 trades (one aggregate)
                n = 1 + int(r() * 3)
                if n > fill:
                    n = fill
                first = tid
                left = fill
                while n > 1:
                    q = int(left * r() * 0.8)
                    if q < 1:
                        q = 1
                    elif q > left - n + 1:
                        q = left - n + 1
                    trades.append(Trade(sym, tid, price, q, not buy, offset, ts, aid))
                    tid += 1
                    left -= q
                    n -= 1
                trades.append(Trade(sym, tid, price, left, not buy, offset, ts, aid))
                tid += 1
                aggs.append(AggTrade(sym, aid, price, fill, first, tid - 1, not buy, offset, ts))
                aid += 1
                want -= fill
                rest = avail - fill
                if rest:
                    levels[price] = rest
                else:
                    del levels[price]
                    del keys[0]
                changes.append((price, rest))
                swept += 1
            st.next_trade_id = tid
            st.next_agg_id = aid
            if trades:
                st.last_price = trades[-1].price
        elif a < 0.64:
            # maker add: close a wide spread, join the touch, or rest near the fair price
            lots = 1 + int(-log(1.0 - r()) * mean_lots * 1.2)
            spread = best_ask - best_bid
            b = r()
            if r() < 0.5 + (0.4 if lag > 1.0 else -0.4 if lag < -1.0 else lag * 0.4):
                if spread > 1 and b < 0.5:
                    price = best_ask - 1 - int(r() * (spread - 1) * 0.5)
                elif b < 0.7:
                    price = best_bid
                else:
                    price = int(fair) - int(-log(1.0 - r()) * scale * 1.5)
                    if price >= best_ask:
                        price = best_ask - 1
                if price < 1:
                    price = 1
                old = bidd.get(price)
                if old is None:
                    bisect.insort(bk, -price)
                    new = lots
                else:
                    new = old + lots
                bidd[price] = new
                bids.append((price, new))
            else:
                if spread > 1 and b < 0.5:
                    price = best_bid + 1 + int(r() * (spread - 1) * 0.5)
                elif b < 0.7:
                    price = best_ask
                else:
                    price = int(fair) + 1 + int(-log(1.0 - r()) * scale * 1.5)
                    if price <= best_bid:
                        price = best_bid + 1
                old = askd.get(price)
                if old is None:
                    bisect.insort(ak, price)
                    new = lots
                else:
                    new = old + lots
                askd[price] = new
                asks.append((price, new))
        else:
            # cancel near the top, mostly on the side the fair price moved away from
            bid_side = r() < 0.5 - (0.4 if lag > 1.0 else -0.4 if lag < -1.0 else lag * 0.4)
            keys = bk if bid_side else ak
            n = len(keys)
            if n > 1:
                idx = int(-log(1.0 - r()) * 4.0)
                if idx >= n:
                    idx = n - 1
                key = keys[idx]
                levels = bidd if bid_side else askd
                price = -key if bid_side else key
                cur = levels[price]
                if cur == 1 or r() < 0.4:
                    rest = 0
                    del levels[price]
                    del keys[idx]
                else:
                    rest = 1 + int((cur - 1) * r())
                    levels[price] = rest
                (bids if bid_side else asks).append((price, rest))
        # keep each side between depth and 2*depth levels: refill inside the band behind
        # the touch (liquidity replenishes near the market, not only at the far end) and
        # trim levels that drifted far away (venues stop publishing far levels too)
        depth = st.depth
        band = st.band
        n = len(bk)
        if n < depth:
            ref = -bk[0] if bk else (ak[0] - 1 if ak else int(fair))
            price = ref - 1 - int(r() * band)
            if price >= 1 and price not in bidd:
                lots = 1 + int(-log(1.0 - r()) * mean_lots * 1.5)
                bidd[price] = lots
                bisect.insort(bk, -price)
                bids.append((price, lots))
        elif n > depth and (n > 2 * depth or bk[-1] - bk[0] > 3 * band):
            price = -bk.pop()
            del bidd[price]
            bids.append((price, 0))
        n = len(ak)
        if n < depth:
            ref = ak[0] if ak else (-bk[0] + 1 if bk else int(fair) + 1)
            price = ref + 1 + int(r() * band)
            if price not in askd:
                lots = 1 + int(-log(1.0 - r()) * mean_lots * 1.5)
                askd[price] = lots
                bisect.insort(ak, price)
                asks.append((price, lots))
        elif n > depth and (n > 2 * depth or ak[-1] - ak[0] > 3 * band):
            price = ak.pop()
            del askd[price]
            asks.append((price, 0))
        if not bk or not ak:
            self._refill_empty_side(st, bids, asks)
        book.update_id += 1
        best_bid = -bk[0]
        best_ask = ak[0]
        after = (best_bid, bidd[best_bid], best_ask, askd[best_ask])
        ev = MarketEvent(self._seq, offset, ts, sym, book.update_id, bids, asks, trades, aggs, after, after != before)
        if trades:
            self._record_trades(st, trades, aggs)
        self._seq += 1
        self._offset_ns = offset
        # next arrival (exponential inter-arrival times, stretched by the activity profile)
        work = -log(1.0 - r()) * self._ns_per_event
        activity = self.activity
        self._next_offset_ns = offset + (int(work) or 1) if activity is None else activity.advance(offset, work)
        return ev

    def _refill_empty_side(self, st: _SymState, bids: list, asks: list) -> None:
        """A taker emptied a side: put one level back next to the other side (rare)."""
        book = st.book
        if not book._bk:
            price = max(1, (book._ak[0] - 1) if book._ak else int(st.fair))
            book.bid[price] = 1 + int(st.mean_lots)
            book._bk.append(-price)
            bids.append((price, book.bid[price]))
        if not book._ak:
            price = -book._bk[0] + 1
            book.ask[price] = 1 + int(st.mean_lots)
            book._ak.append(price)
            asks.append((price, book.ask[price]))

    def _record_trades(self, st: _SymState, trades: list[Trade], aggs: list[AggTrade]) -> None:
        st.trades.extend(trades)
        st.aggs.extend(aggs)
        sec = trades[0].ts_ns // NS
        bar = st.sec_bars.get(sec)
        if bar is None:
            bar = Bar(st.spec.symbol, "1s", sec * NS, (sec + 1) * NS)
            st.sec_bars[sec] = bar
            st.secs.append(sec)
            # bounded: drop one-second bars older than bar_history_s
            horizon = sec - self._bar_history_ns // NS
            if st.secs[0] < horizon:
                cut = bisect.bisect_left(st.secs, horizon)
                for s in st.secs[:cut]:
                    del st.sec_bars[s]
                del st.secs[:cut]
        for t in trades:
            bar.add(t)


def _bisect_deque(dq: deque, ts_ns: int) -> int:
    """First index in a time-ordered deque of records with ``ts_ns`` >= the given time."""
    lo, hi = 0, len(dq)
    while lo < hi:
        mid = (lo + hi) // 2
        if dq[mid].ts_ns < ts_ns:
            lo = mid + 1
        else:
            hi = mid
    return lo
