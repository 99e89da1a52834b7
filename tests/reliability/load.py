"""Overload scenarios shared by tests/reliability/test_load.py and the soak run: a consumer
ten times slower than its feed, and a thousand symbols across six venues in one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
import tracemalloc
from dataclasses import dataclass, field

from tests.reliability.helpers import ALPACA_KEY, ALPACA_SECRET, FINNHUB_TOKEN, POLYGON_KEY, Recorder
from wrdata import DataStream


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@dataclass
class SlowConsumerReport:
    fed: int = 0  # messages published to the consumer's stream (quotes and the connection's status events)
    consumed: int = 0  # read by the consumer (overflow events aside)
    dropped: int = 0  # what the consumer's overflow events said
    overflow_events: int = 0
    hub_overflows: int = 0
    feed_rate: float = 0.0
    consume_rate: float = 0.0
    traced_after_fill: int = 0  # bytes traced by tracemalloc once the queue was full
    traced_end: int = 0
    traced_peak: int = 0
    rss_peak: int = 0
    samples: list = field(default_factory=list)  # (seconds, traced bytes)
    consumer_dropped: int = 0  # the consumer's own count
    queued: int = 0  # left in its queue at the end
    pending: int = 0  # dropped, not yet reported in an overflow event
    warnings: int = 0  # hub log lines about it


async def slow_consumer(seconds: float, queue_size: int, rate: float = 1500.0) -> SlowConsumerReport:
    """One quote stream at ``rate`` events/s (Binance bookTicker: one frame per book change)
    read by a consumer that takes ten times longer per message than the feed allows."""
    rep = SlowConsumerReport()
    tap = _CountingTap()
    warnings = _Warnings()
    logging.getLogger("wrdata.streaming.hub").addHandler(warnings)
    # the venue in its own process: what is measured here is the client's memory
    async with simulator_processes({"binance": ["BTCUSDT"]}, rate) as urls:
        async with DataStream(endpoints=urls, queue_size=queue_size) as ds:
            ds.add_tap(tap)
            it = ds.stream("BTCUSDT", "quote", include_status=True)
            await anext(it)
            # the feed's own rate, measured, so "ten times slower" is relative to it
            t0, n0 = time.monotonic(), tap.quotes
            await asyncio.sleep(1.0)
            rep.feed_rate = (tap.quotes - n0) / (time.monotonic() - t0)
            per_message = 10.0 / rep.feed_rate
            tracemalloc.start()
            try:
                start = time.monotonic()
                fill_at = start + 1.5 * queue_size / rep.feed_rate + 0.5
                consumed = 1
                next_sample = start
                async for m in it:
                    if m.kind == "status" and m.status == "overflow":
                        rep.overflow_events += 1
                        rep.dropped += m.dropped or 0
                        continue
                    consumed += 1
                    await asyncio.sleep(per_message)  # the slow strategy
                    now = time.monotonic()
                    if now >= next_sample:
                        cur, peak = tracemalloc.get_traced_memory()
                        rep.samples.append((round(now - start, 2), cur))
                        rep.rss_peak = max(rep.rss_peak, rss_bytes())
                        next_sample = now + 0.25
                        if not rep.traced_after_fill and now >= fill_at:
                            rep.traced_after_fill = cur
                    if now - start >= seconds:
                        break
                elapsed = time.monotonic() - start
                rep.traced_end, rep.traced_peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            rep.consumed = consumed
            rep.consume_rate = consumed / elapsed
            rep.hub_overflows = ds.manager.hub.overflows
            rep.fed = tap.quotes + tap.statuses
            (consumer,) = ds._consumers
            rep.consumer_dropped = consumer.dropped
            rep.queued = len(consumer.queue)
            rep.pending = consumer.dropped_pending
    logging.getLogger("wrdata.streaming.hub").removeHandler(warnings)
    rep.warnings = warnings.count
    return rep


class _CountingTap:
    """A tap that keeps nothing (the scenario measures the library's memory, not the test's)."""

    def __init__(self) -> None:
        self.quotes = 0
        self.statuses = 0

    def on_raw(self, *args) -> None:
        pass

    def on_messages(self, msgs) -> None:
        for m in msgs:
            if m.kind == "quote":
                self.quotes += 1
            elif m.kind == "status":
                self.statuses += 1


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record) -> None:
        self.count += 1


# -- a thousand symbols ----------------------------------------------------------------------------


def thousand_symbols() -> dict[str, list[str]]:
    """1,000 symbols over the six WebSocket venues, in each venue's spelling."""
    bases = [f"C{i:03d}" for i in range(400)]
    return {
        "binance": [f"{b}USDT" for b in bases[:350]],
        "coinbase": [f"{b}-USD" for b in bases[:150]],
        "kraken": [f"{b}/USD" for b in bases[150:300]],
        "alpaca": [f"S{i:03d}" for i in range(150)],
        "polygon": [f"P{i:03d}" for i in range(150)],
        "finnhub": [f"F{i:03d}" for i in range(50)],
    }


_SIM_ARGS = {
    "alpaca": ["--key", ALPACA_KEY, "--secret", ALPACA_SECRET, "--hours", "always"],
    "polygon": ["--key", POLYGON_KEY, "--hours", "always"],
    "finnhub": ["--key", FINNHUB_TOKEN, "--hours", "always"],
}
_CREDS = {"alpaca": {"key": ALPACA_KEY, "secret": ALPACA_SECRET}, "polygon": {"key": POLYGON_KEY}, "finnhub": {"key": FINNHUB_TOKEN}}


@contextlib.asynccontextmanager
async def simulator_processes(symbols: dict[str, list[str]], per_symbol_rate: float):
    """Each venue's simulator in its own process (as a venue is elsewhere), its URL read
    from its first line."""
    procs, urls = [], {}
    try:
        for venue, syms in symbols.items():
            args = [sys.executable, "-m", "wrdata.cli", "sim", venue, "--symbols", ",".join(syms),
                    "--rate", str(per_symbol_rate * len(syms)), *_SIM_ARGS.get(venue, [])]
            p = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
            procs.append(p)
        for venue, p in zip(symbols, procs):
            line = await asyncio.wait_for(p.stdout.readline(), 60)
            urls[venue] = line.decode().strip()
            assert urls[venue].startswith("ws://"), (venue, line)
        yield urls
    finally:
        for p in procs:
            if p.returncode is None:
                p.terminate()
        for p in procs:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(p.wait(), 10)


@dataclass
class ThousandReport:
    symbols: int = 0
    with_data: int = 0
    messages: int = 0
    rate: float = 0.0  # messages per second received
    lag_p50: float = 0.0  # ts_recv - ts_event, seconds
    lag_p99: float = 0.0
    overflows: int = 0
    disconnects: int = 0
    errors: list = field(default_factory=list)
    rss_peak: int = 0
    by_venue: dict = field(default_factory=dict)


async def thousand_symbol_run(seconds: float, per_symbol_rate: float = 2.0, kinds: tuple[str, ...] = ("trade",)) -> ThousandReport:
    symbols = thousand_symbols()
    rep = ThousandReport(symbols=sum(len(v) for v in symbols.values()))
    async with simulator_processes(symbols, per_symbol_rate) as urls:
        rec = Recorder()
        opts = {v: {"silence_timeout": 30.0} for v in symbols}
        async with DataStream(endpoints=urls, credentials=_CREDS, options=opts) as ds:
            ds.add_tap(rec)
            tasks = []
            from wrdata.streaming.registry import venue_class

            for venue, syms in symbols.items():
                for kind in kinds:
                    if kind not in venue_class(venue).kinds:  # Finnhub streams trades only
                        continue
                    it = ds.stream_many([f"{venue}:{s}" for s in syms], stream_type=kind)

                    async def drain(it=it) -> None:
                        async for _ in it:
                            pass

                    tasks.append(asyncio.create_task(drain()))
            # every venue subscribed and delivering, then measure
            await rec.wait(lambda: {m.provider for m in rec.data()} >= set(symbols), 60, "every venue delivering")
            t0_ns = time.time_ns()
            t0 = time.monotonic()
            while time.monotonic() - t0 < seconds:
                await asyncio.sleep(0.5)
                rep.rss_peak = max(rep.rss_peak, rss_bytes())
            data = [m for m in rec.data(t0_ns)]
            rep.messages = len(data)
            rep.rate = len(data) / (time.monotonic() - t0)
            lags = sorted((m.ts_recv - m.ts_event) / 1e9 for m in data if m.ts_event)
            if lags:
                rep.lag_p50 = lags[len(lags) // 2]
                rep.lag_p99 = lags[int(len(lags) * 0.99)]
            got = {(m.provider, m.symbol) for m in rec.data()}
            rep.with_data = len(got)
            for venue in symbols:
                rep.by_venue[venue] = sum(1 for m in data if m.provider == venue)
            rep.overflows = ds.manager.hub.overflows
            rep.disconnects = len(rec.events("disconnected"))
            rep.errors = [m.reason for _, m in rec.events("error")]
            for t in tasks:
                t.cancel()
    return rep
