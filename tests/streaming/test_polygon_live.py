"""The Polygon (Massive) provider end to end against the Polygon simulator, through DataStream."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
import websockets

from wrdata import DataStream
from wrdata.sim.faults import Faults
from wrdata.sim.polygon import PolygonSimulator
from wrdata.streaming.polygon import PolygonAuthError

KEY = "pk-sim-key-never-logged"
FAST = {"backoff_initial": 0.05, "backoff_max": 0.2, "ready_timeout": 5.0}


@pytest.fixture
async def sim():
    async with PolygonSimulator(key=KEY, seed=6, rate=600, crypto_rate=200, hours="always", warmup=0.3) as s:
        yield s


def ds_for(sim, key=KEY, **options) -> DataStream:
    return DataStream(endpoints={"polygon": sim.url}, credentials={"polygon": {"key": key}},
                      options={"polygon": {**FAST, **options}})


async def take(it, n: int, pred=lambda m: True, timeout: float = 10.0) -> list:
    out = []

    async def run():
        async for m in it:
            out.append(m)
            if sum(1 for x in out if pred(x)) >= n:
                break

    await asyncio.wait_for(run(), timeout)
    return out


async def test_trades_quotes_and_second_aggregates(sim):
    async with ds_for(sim) as ds:
        trades = await take(ds.stream("polygon:NVDA"), 20)
        quotes = await take(ds.stream("polygon:NVDA", "quote"), 5)
        bars = await take(ds.stream("polygon:NVDA", "bar:1s"), 2)
    spec = sim.market.spec("NVDA")
    tape = {(t.ts_ns // 1_000_000 * 1_000_000, spec.price(t.price), spec.qty(t.qty)) for t in sim.market.trades("NVDA")}
    for t in trades:
        assert (t.provider, t.symbol, t.kind) == ("polygon", "NVDA", "trade")
        assert (t.ts_event, t.price, t.size) in tape, "ms times, exact prices and sizes"
        assert t.trade_ref.isdigit() and t.exchange.isdigit()
    assert all(q.bid < q.ask and q.update_id for q in quotes)
    for b in bars:
        assert (b.interval, b.closed, b.channel) == ("1s", True, "bar:1s") and b.ts_event % 1_000_000_000 == 0
        assert b.low <= min(b.open, b.close) <= max(b.open, b.close) <= b.high
    assert [c.path for c in sim.history] == ["/stocks"]


async def test_crypto_cluster_and_pair_spelling(sim):
    async with ds_for(sim) as ds:
        trades = await take(ds.stream("polygon:X:BTCUSD"), 5)
        quotes = await take(ds.stream("polygon:ETH/USD", "quote"), 3)
    assert {t.symbol for t in trades} == {"BTC-USD"} and all(t.side in ("buy", "sell") and t.trade_id for t in trades)
    assert {q.symbol for q in quotes} == {"ETH-USD"}
    assert {c.path for c in sim.history} == {"/crypto"}


async def test_many_symbols_one_connection_and_unsubscribe(sim):
    symbols = sim.market.symbols[:25]
    async with ds_for(sim) as ds:
        seen: set[str] = set()

        async def run():
            async for m in ds.stream_many([f"polygon:{s}" for s in symbols], stream_type="quote"):
                seen.add(m.symbol)
                if len(seen) >= 15:
                    break

        await asyncio.wait_for(run(), 15)
        keep = ds.stream("polygon:AAPL")
        await take(keep, 1)
        conn = sim.history[0]
        for _ in range(300):
            if set(conn.subscriptions) == {"T.AAPL"}:
                break
            await asyncio.sleep(0.01)
        assert set(conn.subscriptions) == {"T.AAPL"}, "the 25 quote topics were unsubscribed"
        await keep.aclose()
    assert len(sim.history) == 1


async def test_wrong_key_is_fatal_and_not_retried(sim):
    async with ds_for(sim, key="wrong") as ds:
        with pytest.raises(PolygonAuthError, match="authentication failed"):
            await take(ds.stream("polygon:AAPL"), 1)
    assert len(sim.history) == 1


async def test_cluster_not_in_plan_is_fatal():
    async with PolygonSimulator(key=KEY, clusters={"stocks"}, hours="always", warmup=0.1) as sim:
        async with ds_for(sim) as ds:
            with pytest.raises(PolygonAuthError, match="plan doesn't include"):
                await take(ds.stream("polygon:X:BTCUSD"), 1)


async def test_kicked_by_another_connection_reconnects(sim):
    """Another client with this key takes the cluster: we get max_connections, reconnect
    (the other may have been a dead connection of ours) and take it back."""
    async with ds_for(sim) as ds:
        it = ds.stream("polygon:NVDA", include_status=True)
        first = (await take(it, 1, pred=lambda m: m.kind == "trade"))[-1].conn
        async with websockets.connect(sim.url + "/stocks", compression=None) as other:
            await other.recv()
            await other.send(json.dumps({"action": "auth", "params": KEY}))
            msgs = await take(it, 3, pred=lambda m: m.kind == "trade" and m.conn != first)
            statuses = []
            with pytest.raises(websockets.ConnectionClosed):
                while True:  # we took the cluster back: the other client is kicked in turn
                    statuses += [e["status"] for e in json.loads(await asyncio.wait_for(other.recv(), 5))]
            assert statuses[-1] == "max_connections"
        await it.aclose()
    reasons = [m.reason for m in msgs if m.kind == "status" and m.status == "disconnected"]
    assert any("max_connections" in r for r in reasons)
    assert [m for m in msgs if m.kind == "status" and m.status == "gap"]


async def test_reconnect_reauthenticates_and_resubscribes():
    async with PolygonSimulator(key=KEY, seed=2, rate=800, hours="always", warmup=0.3, faults=Faults(drop_after=30)) as sim:
        async with ds_for(sim) as ds:
            msgs = await take(ds.stream("polygon:NVDA", include_status=True), 3, timeout=20,
                              pred=lambda m: m.kind == "status" and m.status == "gap")
    gaps = [m for m in msgs if m.kind == "status" and m.status == "gap"]
    assert all(g.symbol == "NVDA" and g.channel == "trade" for g in gaps)
    assert len(sim.history) >= 4 and all(c.props["key"] == KEY for c in sim.history[:3]), "each one authenticated"
    assert len({m.conn for m in msgs if m.kind == "trade"}) >= 2, "and subscribed again"


async def test_malformed_frames_are_counted_not_fatal():
    async with PolygonSimulator(key=KEY, seed=2, rate=800, hours="always", warmup=0.3, faults=Faults(malformed_every=5)) as sim:
        async with ds_for(sim) as ds:
            msgs = await take(ds.stream("polygon:NVDA", "quote", include_status=True), 20, pred=lambda m: m.kind == "quote")
            session = ds.manager.clients["polygon"].slots[0].link.session
    errors = [m for m in msgs if m.kind == "status" and m.status == "error"]
    assert errors and session.bad_frames >= len(errors) and len(sim.history) == 1


async def test_key_never_reaches_logs_raw_rows_or_events(sim, caplog):
    caplog.set_level(logging.DEBUG)
    rows: list[tuple] = []
    events = []

    class Tap:
        def on_raw(self, *row):
            rows.append(row)

        def on_messages(self, msgs):
            events.extend(m for m in msgs if m.kind == "status")

    for transport in ("picows", "websockets"):
        async with DataStream(endpoints={"polygon": sim.url}, credentials={"polygon": {"key": KEY}},
                              options={"polygon": FAST}, transport=transport) as ds:
            ds.add_tap(Tap())
            it = ds.stream("polygon:AAPL", "quote", include_status=True)
            await take(it, 2, pred=lambda m: m.kind == "quote")
            sim.drop_all()
            await take(it, 2, pred=lambda m: m.kind == "quote")
            await it.aclose()
    async with ds_for(sim, key="x" + KEY) as bad:
        with pytest.raises(PolygonAuthError):
            await take(bad.stream("polygon:AAPL"), 1)
    assert any(r[4] == "out" and b'"auth"' in r[6] for r in rows)
    assert KEY.encode() not in b"".join(r[6] + r[5].encode() for r in rows)
    assert not [e for e in events if KEY in (e.reason or "")]
    client_logs = [r.getMessage() for r in caplog.records if not r.name.startswith("websockets.server")]
    assert client_logs and not [line for line in client_logs if KEY in line]
