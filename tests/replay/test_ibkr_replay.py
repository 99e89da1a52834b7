"""IBKR is captured and replayed like every venue: a recording made from the TWS simulator
replays what live consumers saw (5-second bars, minute bars resampled from them, books
rebuilt from depth deltas, outages), and its ``raw`` rows (TWS message fields, received
and sent) rebuild every venue message."""

from __future__ import annotations

import asyncio

import pytest

from wrdata import DataStream
from wrdata.sim.ibkr import IbkrSimulator
from wrdata.storage import DatasetWriter
from wrdata.streaming.driver import RawDriver
from wrdata.streaming.ibkr import IbkrVenue

SYMBOLS = ["ibkr:AAPL", "ibkr:MSFT"]
KINDS = ["trade", "quote", "bar:5s", "bar:1m", "book:5"]
FAST = {"backoff_initial": 0.05, "keepalive_interval": 0.1, "silence_timeout": 0.6, "connect_timeout": 2.0, "idle_linger": 0.1}


class _Raw:
    def __init__(self) -> None:
        self.rows: list[tuple] = []
        self.msgs: list = []

    def on_raw(self, *row) -> None:
        self.rows.append(row)

    def on_messages(self, msgs) -> None:
        self.msgs.extend(msgs)


async def _record(root):
    sim = IbkrSimulator(seed=8, rate=300, speed=30.0, warmup=1.0, max_tick_by_tick=3)
    await sim.start()
    writer = DatasetWriter(str(root), flush_interval=0.2).start()
    raw = _Raw()
    seen: dict[str, list] = {k: [] for k in KINDS}
    try:
        async with DataStream(endpoints={"ibkr": sim.url}, options={"ibkr": FAST}, include_status=True) as ds:
            ds.add_tap(writer)
            ds.add_tap(raw)

            async def collect(kind):
                async for m in ds.stream_many(SYMBOLS, stream_type=kind):
                    seen[kind].append(m)

            tasks = [asyncio.create_task(collect(k)) for k in KINDS]
            await asyncio.sleep(2.5)
            sim.drop_all()  # a dropped connection, restored with gap events
            await asyncio.sleep(1.0)
            sim.connectivity_lost()  # and a TWS-side outage
            await asyncio.sleep(0.2)
            sim.connectivity_restored()
            await asyncio.sleep(0.8)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await sim.stop()
        writer.close()
    return seen, raw


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    root = tmp_path_factory.mktemp("ibkr")
    seen, raw = asyncio.run(_record(root))
    return root, seen, raw


async def test_replay_yields_what_live_consumers_saw(recording):
    root, seen, _ = recording
    for kind in KINDS:
        live = [m for m in seen[kind] if m.kind != "status"]
        assert len(live) > 3, kind
        replayed = []
        async with DataStream.replay(str(root)) as ds:
            async for m in ds.stream_many(SYMBOLS, stream_type=kind):
                replayed.append(m)
        if kind == "bar:1m":
            # resampled from recorded 5-second bars: every update and close follows them exactly
            assert all(m.derived for m in live)
        assert replayed[: len(live)] == live, kind


async def test_outages_are_replayed(recording):
    root, seen, _ = recording
    live_gaps = [m for m in seen["trade"] if m.status == "gap"]
    assert {m.reason.split(":")[0] for m in live_gaps} >= {"disconnected", "TWS lost its connection to IB (1100 to 1102)"}
    async with DataStream.replay(str(root), include_status=True) as ds:
        replayed = [m async for m in ds.stream_many(SYMBOLS, stream_type="trade") if m.status == "gap"]
    assert replayed[: len(live_gaps)] == live_gaps


def test_raw_rows_rebuild_every_message(recording):
    _, _, raw = recording
    driver = RawDriver(IbkrVenue())
    rebuilt = []
    for _provider, conn, seq, ts, direction, url, payload in raw.rows:
        rebuilt += driver.feed(conn, seq, ts, direction, url, payload)
    assert rebuilt == raw.msgs
    assert {m.kind for m in rebuilt} == {"trade", "quote", "bar", "book", "status"}
    assert {r[4] for r in raw.rows} == {"in", "out", "event"}
    assert not [r for r in raw.rows if b"DU1234567" in r[6]]


async def test_replay_serve_feeds_an_unmodified_ib_async_client(recording):
    from ib_async import IB, StartupFetchNONE, Stock

    from wrdata.replay.serve import serve

    root, seen, _ = recording
    ready: asyncio.Future = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(serve("ibkr", str(root), speed=None, settle=0.5, linger=0.3, on_ready=ready.set_result))
    sim = await asyncio.wait_for(ready, 10)
    ib = IB()
    await ib.connectAsync("127.0.0.1", sim.port, clientId=9, timeout=4, readonly=True, fetchFields=StartupFetchNONE)
    try:
        [c] = await ib.qualifyContractsAsync(Stock("AAPL", "SMART", "USD"))
        trades: list = []
        t = ib.reqTickByTickData(c, "AllLast")
        t.updateEvent += lambda tk: trades.extend(x for x in tk.tickByTicks if hasattr(x, "specialConditions"))
        bars = ib.reqRealTimeBars(c, 5, "TRADES", False)
        n = await asyncio.wait_for(server, 20)
    finally:
        ib.disconnect()
    live = [m for m in seen["trade"] if m.kind == "trade" and m.symbol == "AAPL"]
    assert n > 100 and len(trades) >= len(live) > 10
    assert [(x.price, x.size, x.exchange) for x in trades[: len(live)]] == [(m.price, m.size, m.exchange) for m in live]
    live_bars = [m for m in seen["bar:5s"] if m.kind == "bar" and m.symbol == "AAPL"]
    assert [(int(b.time.timestamp()) * 1_000_000_000, b.close, b.volume) for b in bars][: len(live_bars)] == [
        (m.ts_event, m.close, m.size) for m in live_bars]
