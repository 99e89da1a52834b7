"""The Finnhub provider end to end against the Finnhub simulator, through DataStream."""

from __future__ import annotations

import asyncio
import logging

import pytest

from wrdata import DataStream
from wrdata.sim.faults import Faults
from wrdata.sim.finnhub import FinnhubSimulator
from wrdata.streaming.base import UnknownSymbolError
from wrdata.streaming.finnhub import FinnhubAuthError

TOKEN = "fh-sim-token-never-logged"
FAST = {"backoff_initial": 0.05, "backoff_max": 0.2, "ready_timeout": 5.0}


@pytest.fixture
async def sim():
    async with FinnhubSimulator(key=TOKEN, seed=8, rate=600, crypto_rate=200, hours="always", warmup=0.3) as s:
        yield s


def ds_for(sim, token=TOKEN, **options) -> DataStream:
    return DataStream(endpoints={"finnhub": sim.url}, credentials={"finnhub": {"key": token}},
                      options={"finnhub": {**FAST, **options}})


async def take(it, n: int, pred=lambda m: True, timeout: float = 10.0) -> list:
    out = []

    async def run():
        async for m in it:
            out.append(m)
            if sum(1 for x in out if pred(x)) >= n:
                break

    await asyncio.wait_for(run(), timeout)
    return out


async def test_trades_match_the_tape_and_bars_are_derived(sim):
    async with ds_for(sim) as ds:
        trades = await take(ds.stream("finnhub:NVDA"), 20)
        bars = await take(ds.stream("finnhub:NVDA", "bar:1s"), 3)
    spec = sim.market.spec("NVDA")
    tape = {(t.ts_ns // 1_000_000 * 1_000_000, spec.price(t.price), spec.qty(t.qty)) for t in sim.market.trades("NVDA")}
    for t in trades:
        assert (t.provider, t.symbol, t.kind) == ("finnhub", "NVDA", "trade")
        assert (t.ts_event, t.price, t.size) in tape and t.conditions.startswith("1")
        assert t.trade_id is None and t.trade_ref is None
    assert all(b.derived and b.interval == "1s" for b in bars)
    assert [c.raw_path.split("?")[0] for c in sim.history] == ["/"]


async def test_crypto_symbols(sim):
    async with ds_for(sim) as ds:
        trades = await take(ds.stream("finnhub:BINANCE:BTCUSDT"), 5)
    assert {t.symbol for t in trades} == {"BINANCE:BTCUSDT"} and all(t.conditions is None for t in trades)


async def test_many_symbols_one_connection_and_unsubscribe(sim):
    symbols = sim.market.symbols[:25]
    async with ds_for(sim) as ds:
        seen: set[str] = set()

        async def run():
            async for m in ds.stream_many([f"finnhub:{s}" for s in symbols]):
                seen.add(m.symbol)
                if len(seen) >= 12:
                    break

        await asyncio.wait_for(run(), 15)
        keep = ds.stream("finnhub:AAPL")
        await take(keep, 1)
        conn = sim.history[0]
        for _ in range(300):
            if conn.props["symbols"] == {"AAPL"}:
                break
            await asyncio.sleep(0.01)
        assert conn.props["symbols"] == {"AAPL"}
        await keep.aclose()
    assert len(sim.history) == 1


async def test_wrong_token_refused_at_upgrade_is_fatal(sim):
    async with ds_for(sim, token="wrong", validate_symbols=False) as ds:
        with pytest.raises(FinnhubAuthError, match="401"):
            await take(ds.stream("finnhub:AAPL"), 1)
    assert sim.refused_tokens == 1 and sim.history == [], "refused once, not retried"
    async with ds_for(sim, token="wrong") as ds:  # with validation, the symbol list says it first
        with pytest.raises(FinnhubAuthError, match="401"):
            await take(ds.stream("finnhub:AAPL"), 1)


async def test_unknown_symbol_is_refused_before_connecting(sim):
    async with ds_for(sim) as ds:
        with pytest.raises(UnknownSymbolError, match="ZZZZ"):
            await take(ds.stream("finnhub:ZZZZ"), 1)
        with pytest.raises(UnknownSymbolError, match="BINANCE:NOPEUSDT"):
            await take(ds.stream("finnhub:BINANCE:NOPEUSDT"), 1)
    assert sim.history == []


async def test_too_many_symbols_names_the_refused_one():
    async with FinnhubSimulator(key=TOKEN, rate=600, hours="always", warmup=0.2, symbol_limit=2) as sim:
        async with ds_for(sim, control_interval=0.05) as ds:
            it = ds.stream_many(["finnhub:AAPL", "finnhub:MSFT", "finnhub:NVDA"], include_status=True)
            msgs = await take(it, 1, pred=lambda m: m.kind == "status" and m.status == "error")
    err = [m for m in msgs if m.kind == "status" and m.status == "error"][0]
    assert "too many symbols" in err.reason and err.symbol == "NVDA"


async def test_reconnect_resubscribes_with_a_gap_event():
    async with FinnhubSimulator(key=TOKEN, seed=2, rate=800, hours="always", warmup=0.3, faults=Faults(drop_after=20)) as sim:
        async with ds_for(sim) as ds:
            msgs = await take(ds.stream("finnhub:NVDA", include_status=True), 3, timeout=20,
                              pred=lambda m: m.kind == "status" and m.status == "gap")
    assert len(sim.history) >= 4
    assert len({m.conn for m in msgs if m.kind == "trade"}) >= 2


async def test_pings_keep_a_quiet_connection_alive_and_silence_replaces_it():
    quiet = {"hours": "us", "start_et": "2026-11-21T12:00:00", "warmup": 0.1}  # a Saturday: no stock trades
    async with FinnhubSimulator(key=TOKEN, ping_every=0.1, **quiet) as sim:
        async with ds_for(sim, silence_timeout=0.5, ws_ping_interval=None) as ds:
            it = ds.stream("finnhub:AAPL", include_status=True)
            await take(it, 1, pred=lambda m: m.kind == "status" and m.status == "subscribed")
            async with asyncio.timeout(10):
                while sim.pings_sent < 12:  # well past the silence timeout, in pings
                    await asyncio.sleep(0.05)
            await it.aclose()
        assert len(sim.history) == 1, "pings count as life: no reconnect"
    async with FinnhubSimulator(key=TOKEN, ping_every=0, **quiet) as sim:
        async with ds_for(sim, silence_timeout=0.5, ws_ping_interval=None) as ds:
            msgs = await take(ds.stream("finnhub:AAPL", include_status=True), 1,
                              pred=lambda m: m.kind == "status" and m.status == "disconnected")
        assert "silent" in [m for m in msgs if m.status == "disconnected"][0].reason


async def test_token_never_reaches_logs_raw_rows_or_events(sim, caplog):
    caplog.set_level(logging.DEBUG)
    rows: list[tuple] = []
    events = []

    class Tap:
        def on_raw(self, *row):
            rows.append(row)

        def on_messages(self, msgs):
            events.extend(m for m in msgs if m.kind == "status")

    for transport in ("picows", "websockets"):
        async with DataStream(endpoints={"finnhub": sim.url}, credentials={"finnhub": {"key": TOKEN}},
                              options={"finnhub": FAST}, transport=transport) as ds:
            ds.add_tap(Tap())
            it = ds.stream("finnhub:AAPL", include_status=True)
            await take(it, 2, pred=lambda m: m.kind == "trade")
            sim.drop_all()
            await take(it, 2, pred=lambda m: m.kind == "trade")
            await it.aclose()
    async with ds_for(sim, token="bad-" + TOKEN, validate_symbols=False) as bad:
        with pytest.raises(FinnhubAuthError):
            await take(bad.stream("finnhub:AAPL"), 1)
    assert {r[5] for r in rows if r[4] == "in"} == {sim.url + "/?token=***"}
    assert TOKEN.encode() not in b"".join(r[6] + r[5].encode() for r in rows)
    assert not [e for e in events if TOKEN in (e.reason or "")]
    client_logs = [r.getMessage() for r in caplog.records if not r.name.startswith("websockets.server")]
    assert any("GET /?token=***" in line for line in client_logs), "the websockets debug log did run"
    assert not [line for line in client_logs if TOKEN in line]
