"""The Binance provider end to end against the Binance simulator, through DataStream."""

from __future__ import annotations

import asyncio
from datetime import UTC

import pytest

from wrdata import DataStream
from wrdata.sim.binance import BinanceSimulator
from wrdata.sim.faults import Faults
from wrdata.streaming.base import UnknownSymbolError


@pytest.fixture
async def sim():
    s = BinanceSimulator(seed=3, rate=400, ping_interval=1.0, pong_timeout=5.0, kline_push_interval=0.2)
    await s.start()
    yield s
    await s.stop()


def ds_for(sim, **options) -> DataStream:
    return DataStream(endpoints={"binance": sim.url}, options={"binance": options} if options else None)


async def take(it, n: int, timeout: float = 10.0) -> list:
    out = []

    async def run():
        async for m in it:
            out.append(m)
            if len(out) >= n:
                break

    await asyncio.wait_for(run(), timeout)
    return out


async def test_quickstart_trades_match_the_simulated_tape(sim):
    async with ds_for(sim) as ds:
        trades = await take(ds.stream("BTCUSDT"), 30)
    tape = {t.trade_id: t for t in sim.market.trades("BTCUSDT")}
    spec = sim.market.spec("BTCUSDT")
    ids = [t.trade_id for t in trades]
    assert ids == list(range(ids[0], ids[0] + 30)), "consecutive, no loss, no duplicates"
    for t in trades:
        assert t.provider == "binance" and t.symbol == "BTCUSDT" and t.kind == "trade"
        assert t.timestamp.tzinfo is not None and t.timestamp.utcoffset() == UTC.utcoffset(None)
        assert t.volume == t.size > 0
        src = tape[t.trade_id]
        assert t.price == spec.price(src.price) and t.size == spec.qty(src.qty)
        assert t.ts_event == src.ts_ns // 1_000_000 * 1_000_000  # Binance sends milliseconds
        assert t.side == ("sell" if src.buyer_maker else "buy")
        assert t.ts_recv > 0 and t.ts_event is not None


async def test_original_names_are_aliases(sim):
    async with ds_for(sim) as ds:
        (t,) = await take(ds.stream("BTCUSDT", "ticker"), 1)
        assert t.kind == "trade" and t.stream_type == "ticker"
        (b,) = await take(ds.stream("ETHUSDT", "kline", interval="1m"), 1)
        assert b.kind == "bar" and b.interval == "1m" and b.derived is False and b.closed in (True, False)
        (d,) = await take(ds.stream("BTCUSDT", "depth", depth=5), 1)
        assert d.kind == "book" and d.snapshot is True and len(d.bids) == 5 and len(d.asks) == 5


async def test_book_view_is_the_venue_book(sim):
    async with ds_for(sim) as ds:
        views = await take(ds.stream("BTCUSDT", "book:10"), 40)
    assert views[0].snapshot and not any(v.snapshot for v in views[1:])
    for v in views:
        assert len(v.bids) == 10 and len(v.asks) == 10
        assert [p for p, _ in v.bids] == sorted((p for p, _ in v.bids), reverse=True)
        assert [p for p, _ in v.asks] == sorted(p for p, _ in v.asks)
        assert v.bids[0][0] < v.asks[0][0]
    ups = [v.update_id for v in views]
    assert ups == sorted(ups)


async def test_partial_depth_and_aggtrades(sim):
    async with ds_for(sim) as ds:
        (p,) = await take(ds.stream("ETHUSDT", "book:5:partial"), 1)
        assert p.channel == "book:5:partial" and len(p.bids) == 5
        aggs = await take(ds.stream("BTCUSDT", "aggtrade"), 5)
        assert all(a.trade_id is None and a.trade_ref.isdigit() and a.channel == "aggtrade" for a in aggs)
        with pytest.raises(ValueError, match="depth 5, 10 or 20"):
            await take(ds.stream("BTCUSDT", "book:7:partial"), 1)


async def test_many_symbols_share_one_connection_and_refcount(sim):
    async with ds_for(sim) as ds:
        symbols = ["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT"]
        msgs = await take(ds.stream_many(symbols), 200)
        assert {m.symbol for m in msgs} == set(symbols)
        assert len(sim.connections) == 1, "one connection carries every stream"
        # two consumers of one stream: one venue subscription; the last to leave unsubscribes
        a = ds.stream("BTCUSDT", "quote")
        b = ds.stream("BTCUSDT", "quote")
        await take(a, 1)
        await take(b, 1)
        conn = next(iter(sim.connections))
        assert "btcusdt@bookTicker" in conn.subscriptions
        assert ds.manager.refs[("binance", "btcusdt@bookTicker")] == 2
        await a.aclose()
        assert ds.manager.refs[("binance", "btcusdt@bookTicker")] == 1
        await b.aclose()
        assert ("binance", "btcusdt@bookTicker") not in ds.manager.refs
        for _ in range(100):
            if "btcusdt@bookTicker" not in conn.subscriptions:
                break
            await asyncio.sleep(0.05)
        assert "btcusdt@bookTicker" not in conn.subscriptions, "UNSUBSCRIBE reached the venue"


async def test_callbacks_sync_and_async(sim):
    got_sync, got_async = [], []
    done = asyncio.Event()

    async def acb(m):
        got_async.append(m)
        if len(got_async) >= 5 and len(got_sync) >= 5:
            done.set()

    async with ds_for(sim) as ds:
        t1 = ds.subscribe("BTCUSDT", got_sync.append)
        t2 = ds.subscribe("ETHUSDT", acb)
        await asyncio.wait_for(done.wait(), 10)
        assert isinstance(t1, asyncio.Task) and isinstance(t2, asyncio.Task)
        many = []
        task = asyncio.ensure_future(ds.stream_many(["BTCUSDT", "ETHUSDT"], many.append))
        while len(many) < 10:
            await asyncio.sleep(0.02)
        task.cancel()
    assert all(m.symbol == "BTCUSDT" for m in got_sync)
    assert all(m.symbol == "ETHUSDT" for m in got_async)


async def test_unknown_symbol_is_a_clear_error(sim):
    async with ds_for(sim) as ds:
        with pytest.raises(UnknownSymbolError, match="FOOUSDT"):
            await take(ds.stream("FOOUSDT"), 1)
        with pytest.raises(UnknownSymbolError, match="BTCUSDX"):
            await take(ds.stream("binance:BTCUSDX"), 1)
        with pytest.raises(UnknownSymbolError, match="did you mean"):
            await take(ds.stream("binance:ETHUSDC"), 1)


async def test_drop_reconnect_resubscribe_and_gap_events(sim):
    async with ds_for(sim, backoff_initial=0.05) as ds:
        it = ds.stream("BTCUSDT", include_status=True)
        first = await take(it, 20)
        assert any(m.kind == "trade" for m in first)
        for c in list(sim.connections):
            c.drop()
        msgs = await take(it, 60)
    statuses = [m.status for m in first + msgs if m.kind == "status"]
    assert "disconnected" in statuses and "connected" in statuses
    gaps = [m for m in first + msgs if m.kind == "status" and m.status == "gap"]
    assert gaps, "an outage is a recorded gap"
    window = [g for g in gaps if g.gap_start_ns is not None]
    assert window and window[0].gap_start_ns < window[0].gap_end_ns and window[0].symbol == "BTCUSDT"
    trades = [m for m in first + msgs if m.kind == "trade"]
    ids = [t.trade_id for t in trades]
    assert ids == sorted(set(ids)), "no duplicates across the reconnect"
    missing = [g for g in gaps if g.first_missing_id is not None]
    holes = [(a, b) for a, b in zip(ids, ids[1:]) if b != a + 1]
    # every hole in the ids is announced by a gap event naming exactly the missing ids
    assert sorted((g.first_missing_id, g.last_missing_id) for g in missing) == [(a + 1, b - 1) for a, b in holes]


async def test_silent_connection_is_detected_and_replaced(sim):
    async with ds_for(sim, silence_timeout=0.6, backoff_initial=0.05) as ds:
        it = ds.stream("ETHUSDT", include_status=True)
        await take(it, 5)
        stalled = list(sim.connections)
        for c in stalled:
            c.stall()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        msgs = []
        async for m in it:
            msgs.append(m)
            if m.kind == "status" and m.status == "disconnected":
                detected = loop.time() - t0
            if m.kind == "trade" and any(x.kind == "status" and x.status == "connected" for x in msgs):
                break
        assert 0.4 < detected < 3.0
        assert "silent" in next(m.reason for m in msgs if m.kind == "status" and m.status == "disconnected")
        for c in stalled:
            c.resume()


async def test_malformed_frames_are_counted_and_the_stream_goes_on():
    sim = BinanceSimulator(seed=4, rate=300, faults=Faults(malformed_every=7))
    await sim.start()
    try:
        async with ds_for(sim) as ds:
            msgs = await take(ds.stream("BTCUSDT", include_status=True), 80)
            errors = [m for m in msgs if m.kind == "status" and m.status == "error"]
            trades = [m for m in msgs if m.kind == "trade"]
            assert errors and trades
            assert all("bad frame" in e.reason for e in errors)
            session = next(iter(ds.manager.clients["binance"].slots)).link.session
            assert session.bad_frames >= len(errors)
    finally:
        await sim.stop()


async def test_rollovers_lose_and_duplicate_nothing(sim):
    """Force several rollovers: the new connection delivers before the old one closes,
    and the trade ids seen by the consumer have no hole and no repeat."""
    raw_events = []

    class Tap:
        def on_raw(self, provider, conn, seq, ts, direction, url, payload, status=None):
            if direction == "event":
                raw_events.append((ts, conn, payload))
            elif direction == "in" and b"@trade" in payload[:40]:
                first_trade_ts.setdefault(conn, ts)

        def on_messages(self, msgs):
            pass

    first_trade_ts: dict[int, int] = {}
    async with ds_for(sim, lifetime=0.8, rollover_overlap=0.3) as ds:
        ds.add_tap(Tap())
        it = ds.stream("BTCUSDT", include_status=True)
        msgs = []
        async for m in it:
            msgs.append(m)
            if sum(1 for x in msgs if x.kind == "status" and x.status == "rollover") >= 3:
                break
    rollovers = [m for m in msgs if m.kind == "status" and m.status == "rollover"]
    assert len(rollovers) >= 3
    assert not [m for m in msgs if m.kind == "status" and m.status == "gap"]
    ids = [m.trade_id for m in msgs if m.kind == "trade"]
    assert len(ids) > 50 and ids == list(range(ids[0], ids[0] + len(ids)))
    for r in rollovers:
        new_conn = int(r.reason.rsplit(" ", 1)[1])
        assert new_conn in first_trade_ts, "the new connection delivered"
        closed = [ts for ts, conn, p in raw_events if conn == r.conn and b'"disconnected"' in p]
        assert closed and first_trade_ts[new_conn] < closed[0], "before the old one closed"


async def test_slow_consumer_overflows_with_a_count(sim):
    async with DataStream(endpoints={"binance": sim.url}, queue_size=20) as ds:
        it = ds.stream("BTCUSDT", "quote", include_status=True)
        await take(it, 1)
        await asyncio.sleep(1.0)  # fall behind
        msgs = await take(it, 25)
    ov = [m for m in msgs if m.kind == "status" and m.status == "overflow"]
    assert ov and ov[0].dropped > 0
    assert ds.manager.hub.overflows >= 1


async def test_derived_bars_for_an_interval_binance_lacks(sim):
    bars = []
    async with ds_for(sim) as ds:

        async def until_two_closed():
            async for b in ds.stream("BTCUSDT", "bar:2s"):
                bars.append(b)
                if sum(1 for x in bars if x.closed) >= 2:
                    return

        await asyncio.wait_for(until_two_closed(), 20)
    assert all(b.derived and b.interval == "2s" for b in bars)
    closed = [b for b in bars if b.closed]
    assert len(closed) == 2, "bars close when a later interval starts"
    assert closed[1].ts_event - closed[0].ts_event >= 2_000_000_000
    for b in closed:
        assert b.low <= b.open <= b.high and b.low <= b.close <= b.high and b.ts_event % 2_000_000_000 == 0
