"""Overload for a minute: a consumer ten times slower than its feed with the default queue
(10,000), and a thousand symbols on six venues with trades and quotes."""

from __future__ import annotations

import pytest

from tests.reliability.load import slow_consumer, thousand_symbol_run

pytestmark = [pytest.mark.soak, pytest.mark.timeout(1800)]

MiB = 1024 * 1024


async def test_slow_consumer_for_a_minute(figures):
    r = await slow_consumer(seconds=60.0, queue_size=10_000, rate=2000.0)
    assert r.consume_rate < r.feed_rate / 5
    assert r.consumed + r.consumer_dropped + r.queued == r.fed
    assert r.dropped + r.pending == r.consumer_dropped > 0 and r.queued <= 10_000
    assert r.traced_end - r.traced_after_fill < 1 * MiB, r.samples  # flat once the queue is full
    assert r.warnings <= 1 + 60 // 10 + 1
    figures["overload (consumer 10x slower, queue 10,000, 60 s)"] = {
        "feed msgs/s": round(r.feed_rate), "consumer msgs/s": round(r.consume_rate, 1), "dropped": r.consumer_dropped,
        "overflow events": r.overflow_events, "peak traced MiB": round(r.traced_peak / MiB, 2),
        "traced growth after the queue filled, KiB": round((r.traced_end - r.traced_after_fill) / 1024, 1),
        "peak RSS MiB": round(r.rss_peak / MiB, 1), "warnings logged": r.warnings,
    }


async def test_thousand_symbols_for_a_minute(figures):
    r = await thousand_symbol_run(seconds=60.0, per_symbol_rate=2.0, kinds=("trade", "quote"))
    assert r.overflows == 0 and r.disconnects == 0 and not r.errors, r.errors[:5]
    assert r.with_data >= 0.95 * r.symbols
    assert r.lag_p50 < 0.5 and r.lag_p99 < 2.0, (r.lag_p50, r.lag_p99)
    figures["1,000 symbols, six venues, trades+quotes, 60 s"] = {
        "symbols with data": r.with_data, "msgs/s": round(r.rate), "lag p50/p99 s": [round(r.lag_p50, 4), round(r.lag_p99, 4)],
        "peak RSS MiB": round(r.rss_peak / MiB, 1), "by venue": r.by_venue,
    }
