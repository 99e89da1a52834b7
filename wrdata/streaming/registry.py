"""Which providers exist, and which one a bare symbol belongs to.

Each provider lives in its own module; this table is the only place that lists them.
Modules are imported lazily so that ``import wrdata`` stays cheap and a provider's
optional dependency (``ib_async``) is only needed when it is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .base import ConfigurationError

if TYPE_CHECKING:
    from .base import Venue

#: provider name -> "module:class"
PROVIDERS: dict[str, str] = {
    "binance": "wrdata.streaming.binance:BinanceVenue",
    "coinbase": "wrdata.streaming.coinbase:CoinbaseVenue",
    "kraken": "wrdata.streaming.kraken:KrakenVenue",
    "alpaca": "wrdata.streaming.alpaca:AlpacaVenue",
    "polygon": "wrdata.streaming.polygon:PolygonVenue",
    "finnhub": "wrdata.streaming.finnhub:FinnhubVenue",
    "ibkr": "wrdata.streaming.ibkr:IbkrVenue",
}

#: order in which stock providers are tried for a plain ticker (first with credentials wins)
STOCK_ORDER = ("alpaca", "polygon", "finnhub", "ibkr")


def venue_class(name: str) -> type[Venue]:
    try:
        target = PROVIDERS[name]
    except KeyError:
        raise ConfigurationError(f"unknown provider {name!r}: expected one of {', '.join(sorted(PROVIDERS))}") from None
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)


def resolve(symbol: str, credentials: dict[str, dict[str, str]] | None = None, stock_order: tuple[str, ...] = STOCK_ORDER) -> str:
    """Pick the provider for a bare symbol by its shape.

    ``BTCUSDT`` → binance, ``BTC-USD`` → coinbase, ``BTC/USD`` → kraken; a plain ticker
    like ``AAPL`` → the first stock provider (in ``stock_order``) whose credentials are
    configured.
    """
    credentials = credentials or {}
    for name in PROVIDERS:
        cls = venue_class(name)
        if not cls.stock and cls.claims(symbol):
            return name
    stock = [n for n in stock_order if n in PROVIDERS]
    for name in stock:
        cls = venue_class(name)
        if cls.claims(symbol) and cls.has_credentials(credentials.get(name)):
            return name
    if stock and any(venue_class(n).claims(symbol) for n in stock):
        needs = "; ".join(
            f"{n}: " + ", ".join(envs[0] for envs in venue_class(n).credential_env.values())
            for n in stock
            if venue_class(n).credential_env
        )
        raise ConfigurationError(
            f"no stock provider is configured for {symbol!r}: set credentials for one of them ({needs}), "
            f"or name the provider explicitly ({stock[0]}:{symbol})"
        )
    raise ConfigurationError(
        f"cannot tell which provider {symbol!r} belongs to: write it as provider:symbol "
        f"(providers: {', '.join(sorted(PROVIDERS))})"
    )
