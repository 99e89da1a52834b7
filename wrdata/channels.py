"""Subscriptions: which stream of which symbol, in one spelling everywhere.

A channel is written the same way in the API, the CLI (``--kinds``) and configs:

==================  =========================================================
``trade``           every trade (the original API's ``ticker``)
``aggtrade``        Binance aggregate trades (own id space, kept in ``trade_ref``)
``quote``           best bid / ask
``bar:1m``          bars of one interval (``1s 1m 3m 5m 15m 30m 1h 2h 4h 6h 8h 12h 1d 3d 1w 1M``)
``book:10``         the top 10 levels of a locally kept order book (default depth 10)
``book:20:partial`` a venue's periodic top-N snapshots instead of a local book (Binance)
==================  =========================================================

Targets name the provider explicitly (``kraken:BTC/USD``) or let the symbol's shape
choose (:func:`wrdata.streaming.registry.resolve`).
"""

from __future__ import annotations

import re
from typing import NamedTuple

from .message import normalize_kind

_UNIT_NS = {
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
    "d": 86_400_000_000_000,
    "w": 7 * 86_400_000_000_000,
}
_INTERVAL_RE = re.compile(r"^(\d+)\s*(s|sec|secs|second|seconds|m|min|mins|minute|minutes|h|hr|hour|hours|d|day|days|w|wk|week|weeks|M|mo|mon|month|months)$")
_UNIT_CANON = {
    "s": "s", "sec": "s", "secs": "s", "second": "s", "seconds": "s",
    "m": "m", "min": "m", "mins": "m", "minute": "m", "minutes": "m",
    "h": "h", "hr": "h", "hour": "h", "hours": "h",
    "d": "d", "day": "d", "days": "d",
    "w": "w", "wk": "w", "week": "w", "weeks": "w",
    "M": "M", "mo": "M", "mon": "M", "month": "M", "months": "M",
}
DEFAULT_DEPTH = 10


def canonical_interval(interval: str | int) -> str:
    """``"1min"``/``"60s"``/``60`` (seconds) → ``"1m"``; months keep the capital ``M``."""
    if isinstance(interval, int):
        seconds = interval
    else:
        text = interval.strip()
        m = _INTERVAL_RE.match(text)
        if not m:
            raise ValueError(f"bad interval {interval!r}: use e.g. 1s, 1m, 5m, 1h, 1d, 1w, 1M")
        n, unit = int(m.group(1)), _UNIT_CANON[m.group(2)]
        if n <= 0:
            raise ValueError(f"bad interval {interval!r}: must be positive")
        if unit == "M":
            return f"{n}M"
        seconds = n * _UNIT_NS[unit] // 1_000_000_000
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def interval_ns(interval: str) -> int:
    """Length of a fixed interval in ns (months have no fixed length: raise)."""
    n, unit = int(interval[:-1]), interval[-1]
    if unit == "M":
        raise ValueError("monthly bars have no fixed length")
    return n * _UNIT_NS[unit]


class Channel(NamedTuple):
    kind: str  # trade, aggtrade, quote, bar, book
    interval: str | None = None  # bars
    depth: int | None = None  # books
    partial: bool = False  # books: venue snapshots instead of a local book

    def __str__(self) -> str:
        if self.kind == "bar":
            return f"bar:{self.interval}"
        if self.kind == "book":
            return f"book:{self.depth}:partial" if self.partial else f"book:{self.depth}"
        return self.kind

    @property
    def route(self) -> str:
        """The ``channel`` value venue messages for this subscription carry.

        Books of any depth share one venue stream and one local book; the depth is
        applied when the view is built.
        """
        if self.kind == "book":
            return "book:partial" if self.partial else "book"
        return str(self)

    @property
    def message_kind(self) -> str:
        return "trade" if self.kind == "aggtrade" else self.kind


def parse_channel(spec: str | Channel, *, interval: str | None = None, depth: int | None = None) -> Channel:
    """Parse ``trade``, ``bar:1m``, ``book:20``, ``book:5:partial`` (aliases accepted).

    ``interval``/``depth`` fill in a bare ``bar``/``book`` (the original API passed the
    interval separately).
    """
    if isinstance(spec, Channel):
        return spec
    parts = [p.strip() for p in str(spec).split(":")]
    kind = normalize_kind(parts[0])
    args = parts[1:]
    if kind == "bar":
        if len(args) > 1:
            raise ValueError(f"bad channel {spec!r}: bars take one option, the interval (bar:1m)")
        iv = args[0] if args else interval or "1m"
        return Channel("bar", interval=canonical_interval(iv))
    if kind == "book":
        if len(args) > 2 or (len(args) == 2 and args[1] != "partial"):
            raise ValueError(f"bad channel {spec!r}: books take a depth and optionally ':partial' (book:20, book:5:partial)")
        d = args[0] if args else depth or DEFAULT_DEPTH
        try:
            d = int(d)
        except ValueError:
            raise ValueError(f"bad book depth in {spec!r}: expected an integer") from None
        if d <= 0:
            raise ValueError(f"bad book depth in {spec!r}: must be positive")
        return Channel("book", depth=d, partial=len(args) == 2)
    if args:
        raise ValueError(f"bad channel {spec!r}: {kind} takes no options")
    return Channel(kind)


def parse_channels(specs: str | list[str]) -> list[Channel]:
    """``"trade,quote,bar:1m"`` or a list of specs."""
    if isinstance(specs, str):
        specs = [s for s in specs.split(",") if s.strip()]
    out: list[Channel] = []
    for s in specs:
        c = parse_channel(s)
        if c not in out:
            out.append(c)
    return out


def split_target(target: str) -> tuple[str | None, str]:
    """``"kraken:BTC/USD"`` → ``("kraken", "BTC/USD")``; ``"BTCUSDT"`` → ``(None, "BTCUSDT")``.

    Only a known provider name before the first colon counts as a prefix, so venue
    symbols that contain colons (``polygon:X:BTCUSD``) survive.
    """
    from .streaming.registry import PROVIDERS

    head, sep, rest = target.partition(":")
    if sep and head.lower() in PROVIDERS:
        if not rest:
            raise ValueError(f"bad target {target!r}: no symbol after the provider")
        return head.lower(), rest
    return None, target
