"""What the stock-venue simulators (Alpaca, Polygon, Finnhub) share: US equities and
crypto pairs for the synthetic market, US trading hours, per-connection batching.

Venue-neutral pieces only; each venue module formats its own wire messages.

US trading hours (Eastern Time; the sessions Massive's "Stocks Overview" and Alpaca's
docs name): pre-market 04:00-09:30, regular 09:30-16:00, after-hours 16:00-20:00,
closed overnight and at weekends (exchange holidays are not modelled). Activity is
highest at the open and the close, low outside regular hours:
:func:`us_equity_activity` builds the weekly :class:`~wrdata.sim.market.ActivityProfile`
whose phase puts market time 0 at a given Eastern wall time, so the tape stays a pure
function of the seed and that time. ``hours="always"`` keeps the regular-session rate
around the clock (what tests use, so they never depend on the wall clock).
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any

from .market import ActivityProfile, SymbolSpec, SyntheticMarket
from .server import SimConnection

__all__ = [
    "CRYPTO_PAIRS",
    "US_STOCKS",
    "Batcher",
    "crypto_spec",
    "et_now",
    "session_of",
    "start_round_the_clock",
    "stock_market",
    "stock_spec",
    "us_equity_activity",
]

# ticker, price, listing exchange (tape A = NYSE, B = NYSE Arca/American, C = Nasdaq), weight
US_STOCKS: tuple[tuple[str, float, str, float], ...] = (
    ("AAPL", 227.5, "C", 6), ("MSFT", 421.3, "C", 5), ("NVDA", 131.4, "C", 8), ("AMZN", 186.2, "C", 4),
    ("GOOGL", 167.9, "C", 3), ("META", 563.1, "C", 3), ("TSLA", 251.8, "C", 6), ("AMD", 143.6, "C", 3),
    ("SPY", 573.2, "B", 7), ("QQQ", 491.7, "C", 5), ("IWM", 221.4, "B", 2), ("NFLX", 697.3, "C", 1),
    ("INTC", 22.4, "C", 2), ("BAC", 39.7, "A", 2), ("JPM", 212.5, "A", 1.5), ("F", 10.9, "A", 1.5),
    ("XOM", 117.8, "A", 1), ("KO", 69.9, "A", 1), ("DIS", 96.3, "A", 1), ("PLTR", 41.2, "C", 2),
    ("COIN", 198.5, "C", 1), ("UBER", 74.6, "A", 1), ("BA", 152.4, "A", 1), ("WMT", 80.1, "A", 1),
    ("T", 22.2, "A", 1), ("PFE", 28.9, "A", 1), ("CSCO", 52.3, "C", 1), ("ORCL", 171.2, "A", 1),
    ("BRK.B", 455.6, "A", 0.5), ("GME", 21.7, "A", 0.5), ("FAKEPACA", 132.65, "C", 1),
)
# base, quote, price, tick, lot, weight
CRYPTO_PAIRS: tuple[tuple[str, str, float, str, str, float], ...] = (
    ("BTC", "USD", 65000.0, "0.01", "0.00001", 4), ("ETH", "USD", 3200.0, "0.01", "0.0001", 3),
    ("SOL", "USD", 148.0, "0.001", "0.001", 2), ("DOGE", "USD", 0.1234, "0.000001", "1", 1),
    ("AVAX", "USD", 27.31, "0.001", "0.001", 1), ("BTC", "USDT", 65010.0, "0.01", "0.00001", 2),
    ("ETH", "USDT", 3201.0, "0.01", "0.0001", 1),
)
_LISTING = {t: z for t, _, z, _ in US_STOCKS}


def stock_spec(ticker: str, price: float | None = None, weight: float = 1.0) -> SymbolSpec:
    """A US stock: cent ticks, single-share lots, typical order sizes of a few hundred shares."""
    if price is None:
        h = zlib.crc32(ticker.encode())
        price = round(5 + (h % 40_000) / 100.0, 2)
    h = zlib.crc32(ticker.encode())
    return SymbolSpec(
        ticker, price, "0.01", "1", first_trade_id=1 + h % 50_000, mean_qty=120.0, volatility=0.004, weight=weight,
        base_asset=ticker, quote_asset="USD",
    )


def crypto_spec(symbol: str, price: float, tick: str, lot: str, weight: float, base: str, quote: str) -> SymbolSpec:
    h = zlib.crc32(symbol.encode())
    return SymbolSpec(
        symbol, price, tick, lot, first_trade_id=10**12 + h % 10**9, mean_qty=float(lot) * 400, volatility=0.008,
        weight=weight, base_asset=base, quote_asset=quote,
    )


def listing_tape(ticker: str) -> str:
    """Tape letter (A, B, C) of a ticker: its listing exchange, made up for unknown ones."""
    return _LISTING.get(ticker) or "ABC"[zlib.crc32(ticker.encode()) % 3]


# -- trading hours -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _et() -> tzinfo:
    try:
        from zoneinfo import ZoneInfo

        return ZoneInfo("America/New_York")
    except Exception:  # no tz database: Eastern Standard Time
        return timezone(timedelta(hours=-5))


def et_now() -> datetime:
    return datetime.now(tz=_et())


def _at(t: datetime | str | None) -> datetime:
    if t is None:
        return et_now()
    if isinstance(t, str):
        t = datetime.fromisoformat(t)
    if t.tzinfo is None:
        t = t.replace(tzinfo=_et())
    return t.astimezone(_et())


#: one weekday from midnight ET: (hours, activity)
_DAY = (
    (4.0, 0.0),  # 00:00-04:00 closed
    (5.5, 0.12),  # 04:00-09:30 pre-market
    (0.5, 1.8),  # 09:30-10:00 the open
    (5.5, 0.9),  # 10:00-15:30
    (0.5, 1.6),  # 15:30-16:00 the close
    (4.0, 0.08),  # 16:00-20:00 after-hours
    (4.0, 0.0),  # 20:00-24:00 closed
)


def us_equity_activity(start: datetime | str | None = None) -> ActivityProfile:
    """Weekly US equity activity, phased so market time 0 is ``start`` (Eastern; default now)."""
    week = [(h * 3600.0, m) for _ in range(5) for h, m in _DAY] + [(48 * 3600.0, 0.0)]
    t = _at(start)
    monday = (t - timedelta(days=t.weekday())).replace(hour=0, minute=0, second=0, microsecond=0)
    return ActivityProfile(week, phase_s=(t - monday).total_seconds())


def session_of(ts_ns: int) -> str:
    """``pre``, ``regular``, ``post`` or ``closed`` for a UTC time in ns (US equities)."""
    t = datetime.fromtimestamp(ts_ns // 1_000_000_000, tz=_et())
    if t.weekday() >= 5:
        return "closed"
    m = t.hour * 60 + t.minute
    if 4 * 60 <= m < 9 * 60 + 30:
        return "pre"
    if 9 * 60 + 30 <= m < 16 * 60:
        return "regular"
    if 16 * 60 <= m < 20 * 60:
        return "post"
    return "closed"


# -- batching ---------------------------------------------------------------------------------------

class Batcher:
    """Per-connection batches of encoded items, flushed as one frame per connection.

    Venues that put many events in one frame (Polygon's arrays, Alpaca's arrays,
    Finnhub's ``data`` lists) collect items during a clock tick and send them together,
    as the real servers do when busy. An item is encoded once per framing variant
    (``encode(variant) -> bytes``) however many connections get it; ``frame(variant,
    items)`` wraps a connection's items; at most ``max_items`` go in one frame.
    """

    def __init__(self, frame: Callable[[str, list[bytes]], bytes], max_items: int = 100) -> None:
        self.frame = frame
        self.max_items = max_items
        self.pending: dict[SimConnection, list[bytes]] = {}

    def add(self, conns: Iterable[SimConnection], encode: Callable[[str], bytes]) -> None:
        cache: dict[str, bytes] = {}
        pending = self.pending
        for conn in conns:
            v = conn.variant
            b = cache.get(v)
            if b is None:
                b = cache[v] = encode(v)
            items = pending.get(conn)
            if items is None:
                pending[conn] = [b]
            else:
                items.append(b)

    def flush(self) -> int:
        sent = 0
        step = self.max_items
        for conn, items in self.pending.items():
            if conn.closing:
                continue
            for i in range(0, len(items), step):
                conn.send(self.frame(conn.variant, items[i : i + step]))
                sent += 1
        self.pending.clear()
        return sent


def stock_market(seed: int, symbols: Sequence[str | SymbolSpec] | None, rate: float, *, hours: str,
                 start_et: datetime | str | None, history: int) -> SyntheticMarket:
    """A stock simulator's US-equity market: ``symbols`` (tickers, known ones at their listed
    price and weight, or specs; default every listed stock but Alpaca's test symbol), trading in
    US hours from ``start_et`` (``hours="us"``) or at the regular rate around the clock."""
    if hours not in ("us", "always"):
        raise ValueError(f"hours must be 'us' or 'always', not {hours!r}")
    known = {t: (p, w) for t, p, _, w in US_STOCKS if t != "FAKEPACA"}
    specs = [s if isinstance(s, SymbolSpec) else stock_spec(s.upper(), *known.get(s.upper(), (None, 1.0)))
             for s in (symbols or list(known))]
    activity = us_equity_activity(start_et) if hours == "us" else None
    return SyntheticMarket(seed, specs, rate, activity=activity, history=history)


def start_round_the_clock(market: SyntheticMarket, t0_ns: int, now_ns: int) -> None:
    """Start a simulator's second, round-the-clock market (crypto) on the stock market's clock:
    from its ``t0_ns``, caught up to ``now_ns``, so both tapes are functions of one time."""
    if market.t0_ns is None or market.seq == 0:
        market.start(t0_ns)
        market.advance(now_ns - t0_ns)


def subscribers(server: Any, *streams: str) -> set[SimConnection]:
    """Connections subscribed to any of ``streams`` (e.g. a symbol's and the ``*`` stream)."""
    out: set[SimConnection] = set()
    for s in streams:
        if server.has_subscribers(s):
            out |= server.subscribers(s)
    return out
