"""The BTC spread between Binance, Coinbase and Kraken, from their best bids and offers.

    python examples/cross_venue_spread.py --offline        # three local simulators, no network
    python examples/cross_venue_spread.py --seconds 30     # the live venues

For each pair of venues it prints what buying on one and selling on the other would
earn at the top of book (``bid elsewhere - ask here``), in basis points of the mid.
Quotes come from each venue's locally kept order book (``book:1``): Coinbase's
``ticker`` only moves on trades, so the book is the honest top of book everywhere.
BTCUSDT (Binance) is compared with BTC-USD and BTC/USD as if USDT were USD.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
from collections.abc import Callable

from wrdata import DataStream

TARGETS = {"binance": "binance:BTCUSDT", "coinbase": "coinbase:BTC-USD", "kraken": "kraken:BTC/USD"}


async def run(endpoints: dict[str, str] | None, seconds: float, report: Callable[[str, str, float, float], None],
              options: dict | None = None) -> dict[str, tuple[float, float]]:
    """Stream the three tops of book for ``seconds``; call ``report(buy_at, sell_at, edge, bps)`` on changes."""
    best: dict[str, tuple[float, float]] = {}
    async with DataStream(endpoints=endpoints, options=options) as ds:
        it = ds.stream_many(list(TARGETS.values()), stream_type="book:1")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                async for m in it:
                    if not m.bids or not m.asks:
                        continue
                    best[m.provider] = (m.bids[0][0], m.asks[0][0])
                    for here, there in itertools.permutations(best, 2):
                        if m.provider not in (here, there):
                            continue
                        ask = best[here][1]
                        bid = best[there][0]
                        mid = (ask + bid) / 2
                        report(here, there, bid - ask, (bid - ask) / mid * 1e4)
        await it.aclose()
    return best


async def offline(seconds: float, report: Callable[[str, str, float, float], None]) -> dict[str, tuple[float, float]]:
    """The same, against the three simulators on loopback (seeded synthetic markets)."""
    from wrdata.sim.binance import BinanceSimulator
    from wrdata.sim.coinbase import CoinbaseSimulator
    from wrdata.sim.kraken import KrakenSimulator

    async with BinanceSimulator(seed=1, symbols=["BTCUSDT"]) as b, CoinbaseSimulator(seed=2, symbols=["BTC-USD"]) as c, \
            KrakenSimulator(seed=3, symbols=["BTC/USD"]) as k:
        endpoints = {"binance": b.url, "coinbase": c.url, "kraken": k.url}
        return await run(endpoints, seconds, report)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--offline", action="store_true", help="use local simulators instead of the venues")
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()

    def report(buy_at: str, sell_at: str, edge: float, bps: float) -> None:
        print(f"buy {buy_at:<8} sell {sell_at:<8} edge {edge:+10.2f} ({bps:+7.2f} bp)")

    best = asyncio.run(offline(args.seconds, report) if args.offline else run(None, args.seconds, report))
    for venue, (bid, ask) in sorted(best.items()):
        print(f"{venue:<8} bid {bid:.2f} ask {ask:.2f}")


if __name__ == "__main__":
    main()
