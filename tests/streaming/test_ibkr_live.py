"""The IBKR provider end to end: DataStream → ib_async (unmodified) → TCP → the TWS simulator.

The simulator's market clock runs ``SPEED`` times faster than the wall clock so that
5-second bars arrive every quarter second; every timing of the provider is shortened
through ``options``. Data is checked against the simulator's own tape.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Callable

import pytest

from wrdata.datastream import DataStream
from wrdata.message import StreamMessage
from wrdata.sim.faults import Faults
from wrdata.sim.ibkr import IbkrSimulator, SimContract, _stock
from wrdata.streaming import registry
from wrdata.streaming.base import UnknownSymbolError
from wrdata.streaming.driver import RawDriver
from wrdata.streaming.ibkr import IbkrSubscriptionError, IbkrVenue

S = 1_000_000_000
SPEED = 20.0
FAST = {
    "backoff_initial": 0.05,
    "backoff_max": 0.2,
    "keepalive_interval": 0.1,
    "silence_timeout": 0.6,
    "connect_timeout": 2.0,
    "request_timeout": 2.0,
    "idle_linger": 0.1,
    "pacing_delay": 0.1,
}


def sim_factory(**kw) -> IbkrSimulator:
    kw.setdefault("seed", 3)
    kw.setdefault("rate", 300)
    kw.setdefault("speed", SPEED)
    kw.setdefault("warmup", 1.0)
    return IbkrSimulator(**kw)


def stream_for(sim: IbkrSimulator, **kw) -> DataStream:
    kw.setdefault("include_status", True)
    return DataStream(endpoints={"ibkr": sim.url}, options={"ibkr": dict(FAST, **kw.pop("opts", {}))}, **kw)


async def until(it: AsyncIterator[StreamMessage], done: Callable[[StreamMessage, list[StreamMessage]], bool],
                timeout: float = 6.0) -> list[StreamMessage]:
    """Read ``it`` until ``done(msg, so_far)``; the iterator stays open for later phases."""
    out: list[StreamMessage] = []
    async with asyncio.timeout(timeout):
        while True:
            m = await anext(it)
            out.append(m)
            if done(m, out):
                return out


def data(msgs: list[StreamMessage], kind: str | None = None) -> list[StreamMessage]:
    return [m for m in msgs if m.kind != "status" and (kind is None or m.kind == kind)]


def count(kind: str, n: int, symbol: str | None = None):
    return lambda m, out: len([x for x in data(out, kind) if symbol is None or x.symbol == symbol]) >= n


def status(name: str, symbol: str | None = None, n: int = 1):
    return lambda m, out: len([x for x in out if x.status == name and (symbol is None or x.symbol == symbol)]) >= n


def assert_consecutive_tape(sim: IbkrSimulator, key: str, trades: list[StreamMessage]) -> None:
    """The trades are a contiguous run of the simulator's tape: none lost, none invented."""
    assert trades
    spec = sim.market.spec(key)
    tape = [(spec.price(t.price), spec.qty(t.qty), t.ts_ns // S) for t in sim.market.trades(key)]
    got = [(t.price, t.size, t.ts_event // S) for t in trades]
    assert_run(tape, got)


def assert_run(tape: list, got: list) -> None:
    """``got`` occurs in ``tape`` as one contiguous run (equal neighbours make the start ambiguous: try each)."""
    starts = [i for i, x in enumerate(tape) if x == got[0]]
    assert any(tape[i: i + len(got)] == got for i in starts), (got[:5], len(got))


def expected_bar(sim: IbkrSimulator, key: str, start_ns: int, end_ns: int) -> tuple:
    spec = sim.market.spec(key)
    tape = sim.market.trades(key)
    ts = [t for t in tape if start_ns <= t.ts_ns < end_ns]
    if not ts:
        last = [t for t in tape if t.ts_ns < start_ns][-1]
        p = spec.price(last.price)
        return (p, p, p, p, 0.0)
    return (spec.price(ts[0].price), spec.price(max(t.price for t in ts)), spec.price(min(t.price for t in ts)),
            spec.price(ts[-1].price), spec.qty(sum(t.qty for t in ts)))


async def test_every_kind_for_several_symbols_at_once():
    async with sim_factory() as sim, stream_for(sim) as ds:
        trades = ds.stream_many(["ibkr:AAPL", "ibkr:MSFT", "ibkr:FUT:ES:CME:USD:202612"], stream_type="trade")
        quotes = ds.stream_many(["ibkr:AAPL", "ibkr:EUR.USD"], stream_type="quote")
        bars = ds.stream_many(["ibkr:AAPL", "ibkr:EUR.USD"], stream_type="bar:5s")
        book = ds.stream("ibkr:AAPL", "book:5")
        t, q, b, k = await asyncio.gather(
            until(trades, lambda m, out: all(len([x for x in data(out) if x.symbol == s]) >= 5
                                             for s in ("AAPL", "MSFT", "FUT:ES:CME:USD:202612"))),
            until(quotes, lambda m, out: {x.symbol for x in data(out)} == {"AAPL", "EUR.USD"} and len(data(out)) >= 10),
            until(bars, lambda m, out: all(len([x for x in data(out) if x.symbol == s]) >= 3 for s in ("AAPL", "EUR.USD"))),
            until(book, count("book", 30)),
        )
        # trades: every kind of contract, a contiguous run of the tape with its exchange time
        assert_consecutive_tape(sim, "AAPL", [x for x in data(t) if x.symbol == "AAPL"])
        assert_consecutive_tape(sim, "MSFT", [x for x in data(t) if x.symbol == "MSFT"])
        assert_consecutive_tape(sim, "ES 202612", [x for x in data(t) if x.symbol == "FUT:ES:CME:USD:202612"])
        assert all(x.provider == "ibkr" and x.channel == "trade" and x.exchange for x in data(t))
        # quotes: tick-by-tick BidAsk, with venue time
        for x in data(q):
            assert x.channel == "quote" and x.bid < x.ask and x.bid_size > 0 and x.ask_size > 0 and x.ts_event
        # 5-second bars: aligned, consecutive, and exactly the tape's trades of their interval
        for sym in ("AAPL", "EUR.USD"):
            bs = [x for x in data(b) if x.symbol == sym]
            assert all(x.ts_event % (5 * S) == 0 and x.closed and x.interval == "5s" and not x.derived for x in bs)
            assert [y.ts_event - x.ts_event for x, y in zip(bs, bs[1:], strict=False)] == [5 * S] * (len(bs) - 1)
            for x in bs:
                assert x.low <= min(x.open, x.close) <= max(x.open, x.close) <= x.high
        for x in [x for x in data(b) if x.symbol == "AAPL"]:
            assert (x.open, x.high, x.low, x.close, x.size) == expected_bar(sim, "AAPL", x.ts_event, x.ts_event + 5 * S)
        assert all(x.size is None for x in data(b) if x.symbol == "EUR.USD"), "forex bars are MIDPOINT: no volume"
        # book: views of the local book (top 5 of the 10 rows requested), best first. TWS sends one
        # row per message, so between the bid rows and the ask rows of one change a view can
        # be crossed for a moment; at rest it is the venue's book.
        views = data(k)
        assert views[0].snapshot and not any(v.snapshot for v in views[1:])
        for v in views:
            assert len(v.bids) <= 5 and len(v.asks) <= 5
            assert [p for p, _ in v.bids] == sorted((p for p, _ in v.bids), reverse=True)
            assert [p for p, _ in v.asks] == sorted(p for p, _ in v.asks)
        sim.freeze()
        spec = sim.market.spec("AAPL")
        book_now = sim.market.book("AAPL")
        want = ([(spec.price(p), spec.qty(q)) for p, q in book_now.bids(5)], [(spec.price(p), spec.qty(q)) for p, q in book_now.asks(5)])
        if (views[-1].bids, views[-1].asks) != want:
            rest = await until(book, lambda m, out: m.kind == "book" and (m.bids, m.asks) == want)
            assert not rest[-1].snapshot
        assert want[0][0][0] < want[1][0][0]
        # what the simulator serves: one connection, one request per stream
        kinds = sorted((k, s) for _, _, k, s in sim.subscriptions())
        assert kinds == sorted([("tbt", "AAPL"), ("tbt", "MSFT"), ("tbt", "ES 202612"), ("tbt", "AAPL"), ("tbt", "EUR.USD"),
                                ("bars", "AAPL"), ("bars", "EUR.USD"), ("depth", "AAPL")])
        assert len(sim.history) == 1


async def test_minute_bars_are_resampled_from_five_second_bars():
    async with sim_factory(speed=40.0) as sim, stream_for(sim) as ds:
        it = ds.stream("ibkr:AAPL", "bar:1m")
        got = await until(it, lambda m, out: len([x for x in data(out) if x.closed]) >= 2, timeout=10)
        closed = [x for x in data(got) if x.closed]
        full = closed[1]  # the first minute began before the subscription
        assert full.derived is True and full.interval == "1m" and full.ts_event % (60 * S) == 0
        assert (full.open, full.high, full.low, full.close, full.size) == expected_bar(sim, "AAPL", full.ts_event, full.ts_event + 60 * S)
        assert [k for _, _, k, _ in sim.subscriptions()] == ["bars"], "one real-time-bar line, no tick-by-tick"


async def test_a_dropped_connection_is_restored_with_a_gap_event():
    async with sim_factory() as sim, stream_for(sim) as ds:
        it = ds.stream_many(["ibkr:AAPL", "ibkr:MSFT"], stream_type="trade")
        before = await until(it, count("trade", 10))
        sim.drop_all()
        after = await until(it, lambda m, out: len([x for x in out if x.status == "gap"]) >= 2
                            and len(data(out[[i for i, x in enumerate(out) if x.status == "gap"][-1]:], "trade")) >= 10)
        statuses = [x.status for x in after if x.kind == "status"]
        assert statuses[:5] == ["disconnected", "reconnecting", "connected", "subscribed", "gap"]
        gaps = [x for x in after if x.status == "gap"]
        assert {(g.symbol, g.channel) for g in gaps} == {("AAPL", "trade"), ("MSFT", "trade")}
        last_before = max(x.ts_recv for x in data(before))
        for g in gaps:
            assert last_before <= g.gap_start_ns < g.gap_end_ns and "disconnected" in g.reason
        # every subscription is restored on the new connection, and the tape runs on after the gap
        assert len(sim.history) == 2 and all(cid == sim.history[1].id for cid, _, _, _ in sim.subscriptions())
        assert sorted(s for _, _, _, s in sim.subscriptions()) == ["AAPL", "MSFT"]
        resumed = data(after[after.index(gaps[-1]):], "trade")
        assert_consecutive_tape(sim, "AAPL", [x for x in resumed if x.symbol == "AAPL"])
        assert data(before) and not [x for x in after if x.status == "error"]


async def test_a_silent_connection_is_replaced():
    async with sim_factory() as sim, stream_for(sim) as ds:
        it = ds.stream("ibkr:AAPL", "trade")
        await until(it, count("trade", 3))
        sim.stall_all()  # the socket stays open; nothing comes, not even answers to the probe
        out = await until(it, lambda m, o: any(x.status == "gap" for x in o) and m.kind == "trade")
        assert any(x.status == "disconnected" and "silent" in x.reason for x in out)
        assert len(sim.history) == 2 and sim.history[0].closed
        assert [s for _, _, _, s in sim.subscriptions()] == ["AAPL"]


async def test_tws_connectivity_lost_and_restored():
    async with sim_factory() as sim, stream_for(sim) as ds:
        it = ds.stream_many(["ibkr:AAPL", "ibkr:MSFT"], stream_type="trade")
        await until(it, count("trade", 5))
        sim.connectivity_lost()
        lost = await until(it, status("disconnected"))
        assert "1100" in lost[-1].reason
        sim.connectivity_restored()  # 1102: data maintained, same requests
        back = await until(it, lambda m, out: status("gap", n=2)(m, out) and len(data(out[-5:])) >= 1 or len(data(out)) > 20
                           and status("gap", n=2)(m, out))
        assert [x.status for x in back if x.kind == "status"][:3] == ["connected", "gap", "gap"]
        gaps = [x for x in back if x.status == "gap"]
        assert all(g.gap_start_ns == lost[-1].ts_recv and g.gap_end_ns > g.gap_start_ns for g in gaps)
        reqs = sim.subscriptions()
        sim.connectivity_lost()
        await until(it, status("disconnected"))
        sim.connectivity_restored(data_lost=True)  # 1101: TWS forgot every request; the provider asks again
        again = await until(it, lambda m, out: len([x for x in data(out) if x.symbol == "MSFT"]) >= 3
                            and len([x for x in data(out) if x.symbol == "AAPL"]) >= 3)
        assert [x.status for x in again if x.kind == "status"][:3] == ["connected", "gap", "gap"]
        assert len(sim.history) == 1, "the socket never closed"
        assert sorted(s for _, _, _, s in sim.subscriptions()) == ["AAPL", "MSFT"]
        assert {r for _, r, _, _ in sim.subscriptions()}.isdisjoint({r for _, r, _, _ in reqs}), "new request ids"


async def test_a_broken_market_data_farm_is_a_gap():
    async with sim_factory() as sim, stream_for(sim) as ds:
        it = ds.stream("ibkr:AAPL", "trade")
        await until(it, count("trade", 3))
        sim.farm_broken()
        await until(it, lambda m, out: m.status == "error" and "2103" in m.reason)
        sim.farm_restored()
        out = await until(it, lambda m, o: len(data(o)) >= 3)
        [gap] = [x for x in out if x.status == "gap"]
        assert gap.symbol == "AAPL" and gap.gap_end_ns > gap.gap_start_ns and "2103" in gap.reason


async def test_unknown_and_ambiguous_symbols_raise_clearly():
    xyz = [_stock("XYZ", 1001, 10.0, "NYSE", "XYZ ONE"), _stock("XYZ", 1002, 11.0, "ARCA", "XYZ TWO")]
    xyz[1].key = "XYZ ARCA"
    xyz[1].spec = type(xyz[1].spec)("XYZ ARCA", 11.0, "0.01", "1")
    async with sim_factory(symbols=["AAPL", *xyz]) as sim, stream_for(sim) as ds:
        with pytest.raises(UnknownSymbolError, match=r"NOSUCH.*no security definition.*200"):
            async for _ in ds.stream("ibkr:NOSUCH"):
                pass
        with pytest.raises(UnknownSymbolError, match=r"ambiguous.*conId 1001.*conId 1002"):
            async for _ in ds.stream("ibkr:XYZ"):
                pass
        got = await until(ds.stream("ibkr:STK:XYZ:SMART:USD:primaryExchange=ARCA", "bar:5s"), count("bar", 1))
        assert data(got)[0].symbol == "STK:XYZ:SMART:USD:primaryExchange=ARCA"
        assert isinstance(sim, IbkrSimulator)


async def test_a_refused_permission_ends_that_symbol_only():
    async with sim_factory(no_permission=["MSFT"]) as sim, stream_for(sim) as ds:
        aapl = ds.stream("ibkr:AAPL", "trade")
        await until(aapl, count("trade", 2))
        for kind, code in (("trade", "10089"), ("quote", "10089"), ("bar:5s", "420"), ("book", "354")):
            with pytest.raises(IbkrSubscriptionError, match=f"MSFT .*TWS error {code}") as e:
                async for _ in ds.stream("ibkr:MSFT", kind):
                    pass
            assert e.value.symbol == "MSFT"
        more = await until(aapl, count("trade", 5))
        assert len(data(more)) >= 5, "AAPL streams on"
        assert [s for _, _, _, s in sim.subscriptions()] == ["AAPL"]
        # asking again after a refusal asks TWS again (and is refused again)
        with pytest.raises(IbkrSubscriptionError):
            async for _ in ds.stream("ibkr:MSFT"):
                pass


async def test_tick_by_tick_refusal_falls_back_to_market_data_ticks():
    async with sim_factory(max_tick_by_tick=1) as sim, stream_for(sim) as ds:
        it = ds.stream_many(["ibkr:AAPL", "ibkr:MSFT"], stream_type="trade")
        qt = ds.stream("ibkr:SPY", "quote")
        out, quotes = await asyncio.gather(until(it, lambda m, o: all(len([x for x in data(o) if x.symbol == s]) >= 8
                                                                        for s in ("AAPL", "MSFT"))),
                                           until(qt, count("quote", 5)))
        [refused] = [x for x in out if x.status == "error"]
        assert "10190" in refused.reason and "market data ticks" in refused.reason
        fallback = refused.symbol
        kinds = {s: k for _, _, k, s in sim.subscriptions()}
        assert kinds[fallback] == "mkt" and kinds[({"AAPL", "MSFT"} - {fallback}).pop()] == "tbt" and kinds["SPY"] == "mkt"
        # RTVolume trades carry millisecond exchange times and are the same tape
        fb = [x for x in data(out) if x.symbol == fallback]
        spec = sim.market.spec(fallback)
        tape = [(spec.price(t.price), spec.qty(t.qty), t.ts_ns // 1_000_000 * 1_000_000) for t in sim.market.trades(fallback)]
        assert_run(tape, [(x.price, x.size, x.ts_event) for x in fb])
        for x in data(quotes):
            assert x.ts_event is None and (x.bid is None or x.ask is None or x.bid < x.ask)


async def test_pacing_refusal_is_retried():
    async with sim_factory() as sim, stream_for(sim) as ds:
        sim.refuse_next("bars", 420, "Invalid Real-time Query:Historical data request pacing violation")
        out = await until(ds.stream("ibkr:AAPL", "bar:5s"), count("bar", 2))
        [e] = [x for x in out if x.status == "error"]
        assert "420" in e.reason and "requesting again" in e.reason
        assert [k for _, _, k, _ in sim.subscriptions()] == ["bars"]


async def test_unsubscribing_cancels_at_tws_and_closing_disconnects():
    async with sim_factory() as sim:
        ds = stream_for(sim)
        a = ds.stream("ibkr:AAPL", "trade")
        b = ds.stream("ibkr:MSFT", "bar:5s")
        await asyncio.gather(until(a, count("trade", 2)), until(b, count("bar", 1)))
        assert sorted(k for _, _, k, _ in sim.subscriptions()) == ["bars", "tbt"]
        await b.aclose()
        async with asyncio.timeout(3):
            while len(sim.subscriptions()) != 1:
                await asyncio.sleep(0.01)
        assert [s for _, _, _, s in sim.subscriptions()] == ["AAPL"]
        cancels = [f[0] for f in sim.history[0].received if f[0] in ("51", "98", "2", "11")]
        assert cancels == ["51"]
        await ds.close()
        async with asyncio.timeout(3):
            while sim.connections:
                await asyncio.sleep(0.01)
        assert sim.subscriptions() == []


async def test_a_plain_ticker_routes_to_a_configured_gateway(monkeypatch):
    for name in registry.STOCK_ORDER:
        if name in registry.PROVIDERS:
            for envs in registry.venue_class(name).credential_env.values():
                for e in envs:
                    monkeypatch.delenv(e, raising=False)
    async with sim_factory() as sim:
        async with DataStream(ibkr_host="127.0.0.1", ibkr_port=str(sim.port), ibkr_client_id="77",
                              options={"ibkr": FAST}) as ds:
            got = await until(ds.stream("AAPL"), count("trade", 2))
            assert data(got)[0].provider == "ibkr"
        assert sim.history[0].client_id == 77


async def test_tws_not_running_yet_is_retried_with_a_gap_when_it_comes():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sim = sim_factory(port=port)
    async with DataStream(endpoints={"ibkr": f"127.0.0.1:{port}"}, include_status=True,
                          options={"ibkr": dict(FAST, connect_timeout=0.3)}) as ds:
        it = ds.stream("ibkr:AAPL", "trade")  # cannot be checked yet: subscribes and keeps trying
        first = await until(it, status("reconnecting", n=2))
        assert any(x.status == "error" and "connect failed" in x.reason for x in first)
        async with sim:
            out = await until(it, count("trade", 3))
        [gap] = [x for x in out if x.status == "gap"]
        assert gap.symbol == "AAPL" and "connect failed" in gap.reason and gap.gap_start_ns <= first[0].ts_recv


class _Recorder:
    def __init__(self) -> None:
        self.raw: list[tuple] = []
        self.msgs: list[StreamMessage] = []

    def on_raw(self, *row) -> None:
        self.raw.append(row)

    def on_messages(self, msgs) -> None:
        self.msgs.extend(msgs)


async def test_recorded_raw_rebuilds_every_message_and_holds_no_account(caplog):
    caplog.set_level(logging.DEBUG)  # ib_async logs every message it receives at DEBUG
    async with sim_factory(accounts=["DU7654321"]) as sim, stream_for(sim) as ds:
        rec = _Recorder()
        ds.add_tap(rec)
        t = ds.stream_many(["ibkr:AAPL", "ibkr:MSFT"], stream_type="trade")
        k = ds.stream("ibkr:AAPL", "book")
        b = ds.stream("ibkr:EUR.USD", "bar:5s")
        await asyncio.gather(until(t, count("trade", 10)), until(k, count("book", 10)), until(b, count("bar", 2)))
        sim.drop_all()
        await until(t, lambda m, out: len(data(out)) > 10 and status("gap")(m, out))
        sim.connectivity_lost()
        sim.connectivity_restored()
        await until(t, status("gap", n=2))
    rows = list(rec.raw)
    venue_msgs = [m for m in rec.msgs]
    assert {r[4] for r in rows} == {"in", "out", "event"}
    assert len({r[1] for r in rows if r[1]}) == 2, "two connections"
    # rebuild: the recorded fields (in and out) and events give back every message, in order
    d = RawDriver(IbkrVenue())
    rebuilt: list[StreamMessage] = []
    for provider, conn, seq, ts, direction, url, payload in rows:
        assert provider == "ibkr" and url.startswith("tws://127.0.0.1:")
        rebuilt += d.feed(conn, seq, ts, direction, url, payload)
    assert rebuilt == venue_msgs
    assert {m.kind for m in rebuilt} >= {"trade", "book", "bar", "status"}
    # the account id is in no recorded row and no log line (ib_async's debug log included)
    assert not [r for r in rows if b"DU7654321" in r[6]]
    assert [r[6] for r in rows if r[6].startswith(b"15\x00")] == [b"15\x00<redacted>\x00"] * 2
    assert any("<<< 15" in r.getMessage() for r in caplog.records), "the debug log did run"
    assert not [r for r in caplog.records if "DU7654321" in r.getMessage()]


async def test_simulator_contract_is_a_sim_contract():
    """The test helpers above build contracts the way the simulator documents."""
    c = _stock("QQQ", 320227571, 500.0, "NASDAQ", "INVESCO QQQ")
    assert isinstance(c, SimContract) and c.con_id == 320227571 and c.sec_type == "STK"


async def test_delayed_market_data_for_a_symbol_without_permission():
    async with sim_factory(no_permission=["SPY"]) as sim, stream_for(sim, opts={"market_data_type": 3}) as ds:
        q, t = await asyncio.gather(until(ds.stream("ibkr:SPY", "quote"), count("quote", 5)),
                                    until(ds.stream("ibkr:SPY", "trade"), count("trade", 5)))
        assert any(x.status == "subscribed" and "10167" in x.reason for x in q)
        assert any(x.status == "subscribed" and "delayed" in x.reason for x in q)
        for x in data(q):
            assert x.bid is None or x.ask is None or x.bid < x.ask
        spec = sim.market.spec("SPY")
        assert_run([(spec.price(tr.price), spec.qty(tr.qty)) for tr in sim.market.trades("SPY")],
                   [(x.price, x.size) for x in data(t)])
        assert sorted(k for _, _, k, _ in sim.subscriptions()) == ["mkt", "mkt"]
        assert [f for f in sim.history[0].received if f[0] == "59"] == [["59", "1", "3"]]


async def test_malformed_messages_are_error_events_and_lose_nothing():
    async with sim_factory(faults=Faults(malformed_every=25)) as sim, stream_for(sim) as ds:
        out = await until(ds.stream("ibkr:AAPL", "trade"), count("trade", 60))
        errors = [x for x in out if x.status == "error"]
        assert errors and all("bad frame" in e.reason for e in errors)
        assert_consecutive_tape(sim, "AAPL", data(out))
        assert sim.history[0].malformed_sent >= len(errors) and len(sim.history) == 1
