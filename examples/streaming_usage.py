"""The six classic examples of the streaming API.

    python examples/streaming_usage.py --offline        # against the Binance simulator, no network
    python examples/streaming_usage.py                  # against Binance itself

1. a price stream             4. many symbols through one iterator
2. 1-minute candles           5. aggregation: rolling VWAP and volume per symbol
3. a callback                 6. a momentum signal from a short and a long moving average

Each example is a coroutine taking a ``DataStream``; written against live data, the same
code runs on a recording with ``DataStream.replay(root)``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections import defaultdict, deque

from wrdata import DataStream


async def price_stream(stream: DataStream, n: int = 10) -> list[float]:
    """1. Trades of one symbol, as they happen."""
    prices = []
    async for tick in stream.stream("BTCUSDT"):
        print(f"  {tick.timestamp:%H:%M:%S.%f} {tick.symbol} {tick.price:.2f} x {tick.size:g} ({tick.side})")
        prices.append(tick.price)
        if len(prices) >= n:
            break
    return prices


async def candles(stream: DataStream, n: int = 3) -> list:
    """2. 1-minute candles: updates while the minute runs, ``closed`` on its final update."""
    bars = []
    async for bar in stream.stream("BTCUSDT", stream_type="kline", interval="1m"):
        state = "closed" if bar.closed else "open"
        print(f"  {bar.timestamp:%H:%M} O={bar.open:.2f} H={bar.high:.2f} L={bar.low:.2f} C={bar.close:.2f} V={bar.volume:.4f} {state}")
        bars.append(bar)
        if len(bars) >= n:
            break
    return bars


async def callback(stream: DataStream, seconds: float = 2.0) -> int:
    """3. A callback (sync or async) for every message, run in a task."""
    count = 0

    def on_trade(tick) -> None:
        nonlocal count
        count += 1

    task = stream.subscribe("ETHUSDT", on_trade)
    await asyncio.sleep(seconds)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    print(f"  callback saw {count} ETHUSDT trades in {seconds:g}s")
    return count


async def many_symbols(stream: DataStream, n: int = 20) -> dict[str, int]:
    """4. Several symbols through one iterator, in arrival order."""
    seen: dict[str, int] = defaultdict(int)
    async for tick in stream.stream_many(["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT"]):
        seen[tick.symbol] += 1
        if sum(seen.values()) >= n:
            break
    print("  " + ", ".join(f"{s}: {k}" for s, k in sorted(seen.items())))
    return dict(seen)


async def aggregation(stream: DataStream, n: int = 100) -> dict[str, float]:
    """5. Rolling VWAP of the last 50 trades, per symbol."""
    window: dict[str, deque] = defaultdict(lambda: deque(maxlen=50))
    vwap: dict[str, float] = {}
    k = 0
    async for tick in stream.stream_many(["BTCUSDT", "ETHUSDT"]):
        w = window[tick.symbol]
        w.append((tick.price, tick.size))
        volume = sum(q for _, q in w)
        vwap[tick.symbol] = sum(p * q for p, q in w) / volume
        k += 1
        if k >= n:
            break
    print("  " + ", ".join(f"{s} VWAP {v:.2f}" for s, v in sorted(vwap.items())))
    return vwap


async def momentum(stream: DataStream, n: int = 120, fast: int = 10, slow: int = 40) -> list[tuple[str, float]]:
    """6. Momentum: signal when the fast moving average crosses the slow one."""
    prices: deque = deque(maxlen=slow)
    signals: list[tuple[str, float]] = []
    last = None
    k = 0
    async for tick in stream.stream("BTCUSDT"):
        prices.append(tick.price)
        k += 1
        if len(prices) == slow:
            fast_ma = sum(list(prices)[-fast:]) / fast
            slow_ma = sum(prices) / slow
            state = "long" if fast_ma > slow_ma else "short"
            if state != last:
                signals.append((state, tick.price))
                print(f"  {tick.timestamp:%H:%M:%S} {state} at {tick.price:.2f} (fast {fast_ma:.2f} / slow {slow_ma:.2f})")
                last = state
        if k >= n:
            break
    return signals


EXAMPLES = [price_stream, candles, callback, many_symbols, aggregation, momentum]


async def main(offline: bool, seconds_per_example: float) -> None:
    sim = None
    endpoints = None
    if offline:
        from wrdata.sim.binance import BinanceSimulator

        # klines pushed every 0.2 s so the candle example finishes quickly offline
        sim = BinanceSimulator(seed=1, rate=300, kline_push_interval=0.2)
        await sim.start()
        endpoints = {"binance": sim.url}
    try:
        async with DataStream(endpoints=endpoints) as stream:
            for example in EXAMPLES:
                print(f"{example.__doc__.splitlines()[0]}")
                kwargs = {"seconds": seconds_per_example} if example is callback else {}
                await asyncio.wait_for(example(stream, **kwargs), 60)
    finally:
        if sim is not None:
            await sim.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--offline", action="store_true", help="use the built-in Binance simulator")
    ap.add_argument("--seconds", type=float, default=2.0, help="how long the callback example runs")
    args = ap.parse_args()
    asyncio.run(main(args.offline, args.seconds))
