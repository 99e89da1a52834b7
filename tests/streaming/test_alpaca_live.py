"""The Alpaca provider end to end against the Alpaca simulator, through DataStream:
auth and its failures, subscribe/unsubscribe, many symbols on one connection, stocks and
crypto on their own endpoints, reconnect with re-auth and resubscribe, malformed frames,
and credentials kept out of logs, raw rows and status events."""

from __future__ import annotations

import asyncio
import logging

import pytest

from wrdata import DataStream
from wrdata.sim.alpaca import AlpacaSimulator
from wrdata.sim.faults import Faults
from wrdata.streaming.alpaca import AlpacaAuthError, AlpacaConnectionLimitError
from wrdata.streaming.base import AuthenticationError, UnknownSymbolError

KEY, SECRET = "PKSIMKEY0001", "sim-secret-do-not-log"
FAST = {"backoff_initial": 0.05, "backoff_max": 0.2, "ready_timeout": 5.0}


@pytest.fixture
async def sim():
    s = AlpacaSimulator(key=KEY, secret=SECRET, seed=5, rate=600, crypto_rate=200, hours="always", warmup=0.5,
                        late_fraction=0.0)
    async with s:
        yield s


def ds_for(sim, creds=(KEY, SECRET), **options) -> DataStream:
    return DataStream(
        endpoints={"alpaca": sim.url},
        credentials={"alpaca": {"key": creds[0], "secret": creds[1]}},
        options={"alpaca": {"feed": "sip", **FAST, **options}},
    )


async def take(it, n: int, pred=lambda m: True, timeout: float = 10.0) -> list:
    out = []

    async def run():
        async for m in it:
            out.append(m)
            if sum(1 for x in out if pred(x)) >= n:
                break

    await asyncio.wait_for(run(), timeout)
    return out


@pytest.mark.parametrize("framing", ["msgpack", "json"])
async def test_trades_and_quotes_match_the_simulated_tape(sim, framing):
    async with ds_for(sim, framing=framing) as ds:
        trades = await take(ds.stream("alpaca:NVDA"), 20)
        quotes = await take(ds.stream("alpaca:NVDA", "quote"), 5)
    spec = sim.market.spec("NVDA")
    tape = {(t.ts_ns, spec.price(t.price), spec.qty(t.qty)) for t in sim.market.trades("NVDA")}
    for t in trades:
        assert (t.provider, t.symbol, t.kind, t.channel) == ("alpaca", "NVDA", "trade", "trade")
        assert (t.ts_event, t.price, t.size) in tape  # nanosecond times survive both framings
        assert isinstance(t.trade_id, int) and t.exchange and t.conditions.startswith("@")
    for q in quotes:
        assert q.kind == "quote" and q.bid < q.ask and q.bid_size >= 1
    conn = sim.history[0]
    assert conn.variant == framing and conn.path == "/v2/sip"


async def test_stocks_and_crypto_use_their_own_endpoints(sim):
    async with ds_for(sim) as ds:
        msgs = await take(ds.stream_many(["alpaca:AAPL", "alpaca:BTC/USD"]), 2, timeout=10,
                          pred=lambda m: m.symbol == "BTC/USD")
        while not {m.symbol for m in msgs} >= {"AAPL", "BTC/USD"}:
            msgs += await take(ds.stream("alpaca:AAPL"), 1)
    crypto = [m for m in msgs if m.symbol == "BTC/USD"]
    assert crypto and all(m.side in ("buy", "sell") and m.trade_id > 10**12 for m in crypto)
    assert {c.path for c in sim.history} == {"/v2/sip", "/v1beta3/crypto/us"}


async def test_crypto_order_book(sim):
    async with ds_for(sim) as ds:
        views = await take(ds.stream("alpaca:ETH/USD", "book:5"), 10)
    assert views[0].snapshot and len(views[0].bids) == 5
    for v in views:
        assert v.bids[0][0] < v.asks[0][0]


async def test_many_symbols_share_one_connection(sim):
    symbols = sim.market.symbols[:25]
    async with ds_for(sim) as ds:
        seen: set[str] = set()

        async def run():
            async for m in ds.stream_many([f"alpaca:{s}" for s in symbols], stream_type="quote"):
                seen.add(m.symbol)
                if len(seen) >= 15:
                    break

        await asyncio.wait_for(run(), 15)
    assert len(sim.history) == 1, "one session per endpoint (a second would get 406)"
    assert set(sim.history[0].props["subs"]["quotes"]) == set(symbols)


async def test_unsubscribe_reaches_the_venue(sim):
    async with ds_for(sim) as ds:
        await take(ds.stream("alpaca:AAPL"), 1)  # the iterator closes: the venue subscription goes
        keep = ds.stream("alpaca:MSFT", "quote")
        await take(keep, 1)
        conn = sim.history[0]
        for _ in range(200):
            if "AAPL" not in conn.props["subs"].get("trades", ()):
                break
            await asyncio.sleep(0.01)
        assert "AAPL" not in conn.props["subs"]["trades"] and "MSFT" in conn.props["subs"]["quotes"]
        assert "AAPL" not in conn.props["subs"]["corrections"]
        await keep.aclose()


async def test_wrong_key_is_fatal_and_not_retried(sim):
    async with ds_for(sim, creds=(KEY, "wrong")) as ds:
        with pytest.raises(AlpacaAuthError) as e:
            await take(ds.stream("alpaca:AAPL"), 1)
        assert "402" in str(e.value) and isinstance(e.value, AuthenticationError)
    assert len(sim.history) == 1


async def test_feed_not_in_plan_is_fatal():
    async with AlpacaSimulator(key=KEY, secret=SECRET, hours="always", feeds={"iex"}, warmup=0.2) as sim:
        async with ds_for(sim) as ds:
            with pytest.raises(AlpacaAuthError, match="sip feed is not in"):
                await take(ds.stream("alpaca:AAPL"), 1)


async def test_unknown_symbol_is_refused_before_connecting(sim):
    async with ds_for(sim) as ds:
        with pytest.raises(UnknownSymbolError, match="ZZZZZ"):
            await take(ds.stream("alpaca:ZZZZZ"), 1)
    assert sim.history == [] and ("/v2/assets", "status=active&asset_class=us_equity", 200) in sim.rest_log


async def test_missing_credentials_are_refused_before_connecting(sim, monkeypatch):
    for n in ("APCA_API_KEY_ID", "APCA_API_SECRET_KEY", "ALPACA_API_KEY", "ALPACA_SECRET_KEY"):
        monkeypatch.delenv(n, raising=False)
    async with DataStream(endpoints={"alpaca": sim.url}) as ds:
        with pytest.raises(AuthenticationError, match="APCA_API_KEY_ID"):
            await take(ds.stream("alpaca:AAPL"), 1)
    assert sim.history == []


async def test_second_session_gets_406_then_gives_up(sim):
    async with ds_for(sim) as first:
        keep = first.stream("alpaca:AAPL", "quote")
        await take(keep, 1)
        async with ds_for(sim, max_conn_limit_retries=2) as second:
            with pytest.raises(AlpacaConnectionLimitError, match="connection limit exceeded"):
                await take(second.stream("alpaca:MSFT", include_status=True), 1, pred=lambda m: m.kind == "trade")
        assert len(sim.history) == 1 + 3, "two retries after the first refusal"
        assert await take(keep, 3), "the first session is untouched"
        await keep.aclose()


async def test_reconnect_reauthenticates_resubscribes_and_reports_the_gap():
    async with AlpacaSimulator(key=KEY, secret=SECRET, seed=2, rate=800, hours="always", warmup=0.3, late_fraction=0.0,
                               faults=Faults(drop_after=40)) as sim:
        async with ds_for(sim) as ds:
            msgs = await take(ds.stream("alpaca:NVDA", include_status=True), 3, timeout=20,
                              pred=lambda m: m.kind == "status" and m.status == "gap")
    gaps = [m for m in msgs if m.kind == "status" and m.status == "gap"]
    assert all(g.symbol == "NVDA" and g.channel == "trade" and g.gap_start_ns <= g.gap_end_ns for g in gaps)
    assert len(sim.history) >= 4
    for conn in sim.history[:3]:  # every connection authenticated and subscribed again
        assert conn.props["key"] == KEY and "NVDA" in conn.props["subs"]["trades"]
    conns_with_trades = {m.conn for m in msgs if m.kind == "trade"}
    assert len(conns_with_trades) >= 2


async def test_malformed_frames_are_counted_not_fatal():
    async with AlpacaSimulator(key=KEY, secret=SECRET, seed=2, rate=800, hours="always", warmup=0.3,
                               faults=Faults(malformed_every=7)) as sim:
        async with ds_for(sim, framing="json") as ds:
            msgs = await take(ds.stream("alpaca:NVDA", "quote", include_status=True), 30, pred=lambda m: m.kind == "quote")
            session = ds.manager.clients["alpaca"].slots[0].link.session
    errors = [m for m in msgs if m.kind == "status" and m.status == "error"]
    assert errors and all("bad frame" in e.reason for e in errors)
    assert session.bad_frames >= len(errors) and len(sim.history) == 1, "no reconnect for a bad frame"


async def test_credentials_never_reach_logs_raw_rows_or_events(sim, caplog):
    caplog.set_level(logging.DEBUG)
    rows: list[tuple] = []
    events = []

    class Tap:
        def on_raw(self, *row):
            rows.append(row)

        def on_messages(self, msgs):
            events.extend(m for m in msgs if m.kind == "status")

    for transport in ("picows", "websockets"):
        async with DataStream(endpoints={"alpaca": sim.url}, credentials={"alpaca": {"key": KEY, "secret": SECRET}},
                              options={"alpaca": {"feed": "sip", "framing": "json", **FAST}}, transport=transport) as ds:
            ds.add_tap(Tap())
            await take(ds.stream("alpaca:AAPL", "quote", include_status=True), 3, pred=lambda m: m.kind == "quote")
            sim.drop_all()  # a reconnect re-authenticates: that frame must be redacted too
            await take(ds.stream("alpaca:AAPL", "quote", include_status=True), 1, pred=lambda m: m.kind == "quote")
        async with ds_for(sim, creds=(KEY, "not-" + SECRET)) as bad:  # and the error path
            with pytest.raises(AlpacaAuthError):
                await take(bad.stream("alpaca:AAPL"), 1)
    sent = [r for r in rows if r[4] == "out"]
    assert any(b'"action":"auth"' in r[6] for r in sent), "the auth frames were recorded, redacted"
    blob = b"".join(r[6] + r[5].encode() for r in rows)
    assert SECRET.encode() not in blob and KEY.encode() not in blob
    assert not [e for e in events if SECRET in (e.reason or "") or KEY in (e.reason or "")]
    client_logs = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("websockets.server"))
    assert "authenticated" in client_logs or rows  # the debug log did run
    assert SECRET not in client_logs and KEY not in client_logs
