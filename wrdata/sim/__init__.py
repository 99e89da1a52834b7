"""Local protocol servers that speak each venue's real wire protocol on loopback.

Each simulator serves its venue's WebSocket paths and the REST endpoints its provider
needs on one port, fed by a seeded synthetic market (:mod:`wrdata.sim.market`) or by a
recording, with fault injection for tests.
"""

from __future__ import annotations

import importlib

#: venue name -> "module:class"
SIMULATORS: dict[str, str] = {
    "binance": "wrdata.sim.binance:BinanceSimulator",
    "coinbase": "wrdata.sim.coinbase:CoinbaseSimulator",
    "kraken": "wrdata.sim.kraken:KrakenSimulator",
    "alpaca": "wrdata.sim.alpaca:AlpacaSimulator",
    "polygon": "wrdata.sim.polygon:PolygonSimulator",
    "finnhub": "wrdata.sim.finnhub:FinnhubSimulator",
    "ibkr": "wrdata.sim.ibkr:IbkrSimulator",
}


def simulator_class(name: str):
    try:
        target = SIMULATORS[name]
    except KeyError:
        raise ValueError(f"no simulator for {name!r}: expected one of {', '.join(sorted(SIMULATORS))}") from None
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)
