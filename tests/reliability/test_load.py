"""Overload: a consumer ten times slower than its feed, and a thousand symbols at once
(tests/reliability/load.py). The soak run repeats both for longer with the default queue
size and reports peak memory."""

from __future__ import annotations

import asyncio

from tests.reliability.load import slow_consumer, thousand_symbol_run


async def test_a_consumer_ten_times_slower_than_its_feed_stays_bounded_and_is_told():
    r = await slow_consumer(seconds=3.0, queue_size=1000)
    assert r.consume_rate < r.feed_rate / 5, "the scenario really overloads the consumer"
    # exact accounting: everything published to it was read, dropped or is still queued
    assert r.consumed + r.consumer_dropped + r.queued == r.fed
    # every drop signalled in an overflow event (or about to be), counted by the hub
    assert r.dropped + r.pending == r.consumer_dropped > 0 and r.overflow_events > 0 and r.hub_overflows > 0
    assert r.queued <= 1000
    # memory stays flat once the queue is full (the drops are the oldest, not held)
    assert r.traced_end - r.traced_after_fill < 256 * 1024, r.samples
    # and a consumer that stays behind is one warning, not a log line per overflow
    assert r.warnings == 1 and r.hub_overflows > 50


async def test_a_thousand_symbols_on_six_venues_keep_up():
    r = await thousand_symbol_run(seconds=2.5, per_symbol_rate=2.0)
    assert r.symbols == 1000
    assert set(r.by_venue) == {"binance", "coinbase", "kraken", "alpaca", "polygon", "finnhub"} and all(r.by_venue.values())
    assert r.overflows == 0 and r.disconnects == 0 and not r.errors, r.errors[:5]
    # keeping up: messages arrive as the venues make them, not later and later
    assert r.lag_p50 < 0.5 and r.lag_p99 < 2.0, (r.lag_p50, r.lag_p99)


async def test_a_thousand_streams_on_one_binance_connection():
    """Binance takes up to 1,024 streams per connection, but not all of them in the URL
    (a server answers 414 URI Too Long, on every reconnect): the rest are subscribed."""
    from tests.reliability.helpers import Recorder, steady
    from wrdata import DataStream
    from wrdata.sim.binance import BinanceSimulator

    symbols = [f"C{i:03d}USDT" for i in range(500)]
    async with BinanceSimulator(seed=9, rate=1000, symbols=symbols) as sim:
        rec = Recorder()
        async with DataStream(endpoints={"binance": sim.url}) as ds:
            ds.add_tap(rec)
            tasks = []
            for kind in ("trade", "quote"):
                it = ds.stream_many([f"binance:{s}" for s in symbols], stream_type=kind)

                async def drain(it=it) -> None:
                    async for _ in it:
                        pass

                tasks.append(asyncio.create_task(drain()))
            await steady(rec, "binance")
            await rec.wait(lambda: len(sim.connections) == 1 and len(next(iter(sim.connections)).subscriptions) == 1000, 20,
                           "all 1,000 streams subscribed")
            conn = next(iter(sim.connections))
            assert len(conn.raw_path) < 2500
            await rec.wait(lambda: len({m.symbol for m in rec.data() if m.kind == "quote"}) > 400, 20, "quotes from most symbols")
            assert not rec.events("error") and not rec.events("disconnected")
            for t in tasks:
                t.cancel()
