"""The event model: one message class for every provider, live and replayed.

`StreamMessage` is a `msgspec.Struct` (C-level construction, no ``__dict__``, no GC
tracking) so that parsing a frame costs one object per event and nothing more.
Absent fields are ``None``. Times are integer nanoseconds since the epoch, UTC;
``timestamp`` builds a timezone-aware ``datetime`` only when asked for.

Field meanings are fixed by DESIGN.md (Contracts). Two additions:

- ``channel`` is the subscription the message answers, in the one spelling used by
  the API, the CLI and configs (``trade``, ``aggtrade``, ``quote``, ``bar:1m``,
  ``book:10``); routing and replay use it.
- ``size`` carries a trade's size and a bar's volume; ``volume`` reads it for both,
  so code written for the original API (``msg.volume``) keeps working.

Book messages exist in two forms. What a venue parser emits (and what storage keeps)
is the venue's *delta*: ``bids``/``asks`` are the changed levels, ``size == 0``
deletes, ``snapshot=True`` resets the book first. What consumers receive is the
*view* built from those deltas by :mod:`wrdata.streaming.book`: the top ``depth``
levels, best first (``view=True``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

# Kinds of message and the names the original API used for some of them.
KINDS = ("trade", "quote", "bar", "book", "status")
KIND_ALIASES = {"ticker": "trade", "kline": "bar", "candle": "bar", "depth": "book", "bbo": "quote"}
LEGACY_STREAM_TYPE = {"trade": "ticker", "bar": "kline", "book": "depth"}

# Status codes (DESIGN.md, Contracts).
STATUSES = (
    "connected",
    "subscribed",
    "disconnected",
    "reconnecting",
    "rollover",
    "gap",
    "healed",
    "overflow",
    "error",
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class StreamMessage(msgspec.Struct, kw_only=True, gc=False, omit_defaults=True):
    # identity and order
    provider: str
    symbol: str | None = None
    kind: str
    ts_recv: int
    ts_event: int | None = None
    conn: int = 0
    seq: int = 0
    idx: int = 0
    source: str = "stream"
    channel: str | None = None
    # trade
    price: float | None = None
    size: float | None = None
    side: str | None = None
    trade_id: int | None = None
    trade_ref: str | None = None
    exchange: str | None = None
    conditions: str | None = None
    # quote
    bid: float | None = None
    ask: float | None = None
    bid_size: float | None = None
    ask_size: float | None = None
    # bar (volume is `size`)
    open: float | None = None
    high: float | None = None
    low: float | None = None
    close: float | None = None
    interval: str | None = None
    closed: bool | None = None
    derived: bool | None = None
    # book
    bids: list | None = None
    asks: list | None = None
    snapshot: bool | None = None
    update_id: int | None = None
    checksum: int | None = None
    view: bool | None = None
    # status
    status: str | None = None
    reason: str | None = None
    gap_start_ns: int | None = None
    gap_end_ns: int | None = None
    first_missing_id: int | None = None
    last_missing_id: int | None = None
    dropped: int | None = None
    # backfill (healed data): when it was fetched
    ts_fetched: int | None = None

    # -- compatibility and convenience -------------------------------------------------
    @property
    def volume(self) -> float | None:
        return self.size

    @property
    def stream_type(self) -> str:
        """The original API's name for this kind (``ticker`` for trades, ``kline``, ``depth``)."""
        return LEGACY_STREAM_TYPE.get(self.kind, self.kind)

    @property
    def timestamp(self) -> datetime:
        """Venue time if the venue sent one, else receive time; timezone-aware UTC."""
        ns = self.ts_event if self.ts_event is not None else self.ts_recv
        return datetime.fromtimestamp(ns // 1_000_000_000, tz=UTC).replace(
            microsecond=(ns % 1_000_000_000) // 1000
        )

    @property
    def recv_time(self) -> datetime:
        ns = self.ts_recv
        return datetime.fromtimestamp(ns // 1_000_000_000, tz=UTC).replace(
            microsecond=(ns % 1_000_000_000) // 1000
        )

    @property
    def mid(self) -> float | None:
        if self.bid is None or self.ask is None:
            return None
        return (self.bid + self.ask) / 2

    def to_dict(self) -> dict[str, Any]:
        """Fields that are set, as plain Python values."""
        return msgspec.to_builtins(self)

    def __str__(self) -> str:  # a readable one-liner for demos and logs
        k = self.kind
        head = f"{self.provider}:{self.symbol}" if self.symbol else self.provider
        if k == "trade":
            return f"{head} trade {self.price} x {self.size} {self.side or ''}".rstrip()
        if k == "quote":
            return f"{head} quote {self.bid} / {self.ask}"
        if k == "bar":
            state = "closed" if self.closed else "open"
            return f"{head} bar {self.interval} O={self.open} H={self.high} L={self.low} C={self.close} V={self.size} {state}"
        if k == "book":
            b = self.bids[0] if self.bids else None
            a = self.asks[0] if self.asks else None
            return f"{head} book {b} / {a}"
        return f"{head} {self.status}: {self.reason or ''}".rstrip()


def normalize_kind(kind: str) -> str:
    """Accept the original names (`ticker`, `kline`, `depth`) for the canonical kinds."""
    k = kind.strip().lower()
    k = KIND_ALIASES.get(k, k)
    if k not in KINDS and k != "aggtrade":
        raise ValueError(f"unknown kind {kind!r}: expected one of trade, aggtrade, quote, bar, book (or ticker, kline, depth)")
    return k


def status_message(
    provider: str,
    status: str,
    ts_recv: int,
    reason: str | None = None,
    *,
    symbol: str | None = None,
    conn: int = 0,
    seq: int = 0,
    channel: str | None = None,
    **fields: Any,
) -> StreamMessage:
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}")
    return StreamMessage(
        provider=provider,
        symbol=symbol,
        kind="status",
        ts_recv=ts_recv,
        conn=conn,
        seq=seq,
        channel=channel,
        status=status,
        reason=reason,
        **fields,
    )


def ns_to_datetime(ns: int) -> datetime:
    return datetime.fromtimestamp(ns // 1_000_000_000, tz=UTC).replace(microsecond=(ns % 1_000_000_000) // 1000)
