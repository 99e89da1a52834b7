"""The Coinbase provider against the Coinbase simulator through DataStream, and the
simulator against a plain websockets client (its documented protocol)."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets

from wrdata import DataStream
from wrdata.sim.coinbase import CoinbaseSimulator
from wrdata.sim.faults import Faults
from wrdata.streaming.base import AuthenticationError, UnknownSymbolError

FAST = {"backoff_initial": 0.05, "backoff_max": 0.2, "control_interval": 0.01}


async def collect(it, until, limit: float = 10.0):
    """Read messages until ``until(msgs)`` holds (``limit`` only bounds a broken run)."""
    out = []
    async with asyncio.timeout(limit):
        async for m in it:
            out.append(m)
            if until(out):
                return out
    return out


@pytest.fixture
async def cb():
    async with CoinbaseSimulator(seed=3, rate=400, heartbeat_interval=0.2) as sim:
        yield sim


def ds_for(sim, **opts):
    return DataStream(endpoints={"coinbase": sim.url}, options={"coinbase": {**FAST, **opts}}, include_status=True)


# -- the simulator speaks the documented protocol -----------------------------------------------------

async def test_protocol_subscribe_ack_snapshot_sequence_and_errors(cb):
    async with websockets.connect(cb.url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "subscribe", "channel": "heartbeats"}))
        await ws.send(json.dumps({"type": "subscribe", "product_ids": ["BTC-USD", "NOPE-USD"], "channel": "level2"}))
        msgs = []
        async with asyncio.timeout(5):
            while not any(m["channel"] == "l2_data" and m["events"][0]["type"] == "update" for m in msgs):
                msgs.append(json.loads(await ws.recv()))
        assert [m["sequence_num"] for m in msgs] == list(range(len(msgs))), "one counter over every channel"
        acks = [m for m in msgs if m["channel"] == "subscriptions"]
        assert acks[-1]["events"][0]["subscriptions"] == {"heartbeats": ["heartbeats"], "level2": ["BTC-USD"]}
        snap = next(m for m in msgs if m["channel"] == "l2_data")["events"][0]
        assert snap["type"] == "snapshot" and {u["side"] for u in snap["updates"]} == {"bid", "offer"}
        assert all(m["client_id"] == "" and m["timestamp"].endswith("Z") for m in msgs)
        await ws.send(json.dumps({"type": "subscribe", "product_ids": ["BTC-USD"], "channel": "user"}))
        await ws.send("not json")
        errors = []
        async with asyncio.timeout(5):
            while len(errors) < 2:
                m = json.loads(await ws.recv())
                if m.get("type") == "error":
                    errors.append(m["message"])
        assert errors == ["authentication failure", "failure to subscribe"]


async def test_protocol_level2_limit_and_subscribe_deadline():
    async with CoinbaseSimulator(seed=1, max_level2=2, subscribe_timeout=0.3,
                                 symbols=["BTC-USD", "ETH-USD", "SOL-USD"]) as sim:
        async with websockets.connect(sim.url, max_size=None) as ws:
            await ws.send(json.dumps({"type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD", "SOL-USD"], "channel": "level2"}))
            m = json.loads(await ws.recv())
            assert m == {"type": "error", "message": "too many L2 streams requested in a single session"}
        async with websockets.connect(sim.url) as ws:
            with pytest.raises(websockets.ConnectionClosed):
                async with asyncio.timeout(3):
                    await ws.recv()  # nothing subscribed: closed by the server


async def test_products_rest(cb):
    import urllib.request

    body = await asyncio.to_thread(lambda: urllib.request.urlopen(cb.rest_url + "/api/v3/brokerage/market/products").read())
    doc = json.loads(body)
    assert {p["product_id"] for p in doc["products"]} == {"BTC-USD", "ETH-USD", "SOL-USD"}
    btc = next(p for p in doc["products"] if p["product_id"] == "BTC-USD")
    assert btc["quote_increment"] == "0.01" and btc["base_increment"] == "0.00000001" and btc["status"] == "online"


# -- the provider through DataStream --------------------------------------------------------------------

async def test_multiplexes_products_on_one_connection(cb):
    async with ds_for(cb) as ds:
        it = ds.stream_many(["BTC-USD", "ETH-USD", "coinbase:SOL-USD"], stream_type="trade")
        msgs = await collect(it, lambda ms: {m.symbol for m in ms if m.kind == "trade"} == {"BTC-USD", "ETH-USD", "SOL-USD"})
        await it.aclose()
    trades = [m for m in msgs if m.kind == "trade"]
    assert len(cb.history) == 1
    assert cb.history[0].props["subs"] == {"heartbeats": {"heartbeats"}, "market_trades": {"BTC-USD", "ETH-USD", "SOL-USD"}}
    by_id = {t.trade_id: t for s in ("BTC-USD", "ETH-USD", "SOL-USD") for t in cb.market.trades(s)}
    for t in trades:
        src = by_id[t.trade_id]
        spec = cb.market.spec(t.symbol)
        assert (t.price, t.size) == (spec.price(src.price), spec.qty(src.qty))
        assert t.side == src.side and t.ts_event == src.ts_ns // 1000 * 1000  # µs on the wire
    assert not [m for m in msgs if m.status in ("gap", "error")]


async def test_drop_reconnects_resubscribes_and_reports_the_gap(cb):
    async with ds_for(cb) as ds:
        it = ds.stream("BTC-USD", "trade")
        await collect(it, lambda ms: sum(m.kind == "trade" for m in ms) >= 3)
        cb.drop_all()
        msgs = await collect(it, lambda ms: any(m.status == "gap" for m in ms) and sum(m.kind == "trade" for m in ms) >= 3)
        await it.aclose()
    gap = next(m for m in msgs if m.status == "gap")
    assert gap.symbol == "BTC-USD" and gap.channel == "trade" and gap.gap_start_ns < gap.gap_end_ns
    assert [m.status for m in msgs if m.kind == "status"][:1] == ["disconnected"]
    assert len(cb.history) == 2  # (a closed connection's streams are gone; its subscription record stays)
    assert cb.history[1].props["subs"] == {"heartbeats": {"heartbeats"}, "market_trades": {"BTC-USD"}}
    ids = [m.trade_id for m in msgs if m.kind == "trade"]
    assert ids == sorted(set(ids)), "no trade twice across the reconnect"


async def test_silent_connection_is_replaced(cb):
    async with ds_for(cb, silence_timeout=0.5) as ds:
        it = ds.stream("ETH-USD", "trade")
        await collect(it, lambda ms: any(m.kind == "trade" for m in ms))
        cb.stall_all()
        msgs = await collect(it, lambda ms: any(m.status == "gap" and "silent" in m.reason for m in ms)
                             and any(m.kind == "trade" for m in ms))
        await it.aclose()
    assert any(m.status == "gap" and "silent" in m.reason for m in msgs) and len(cb.history) == 2


async def test_sequence_gap_resyncs_the_book(cb):
    async with ds_for(cb) as ds:
        it = ds.stream("BTC-USD", "book:5")
        first = await collect(it, lambda ms: sum(m.kind == "book" for m in ms) >= 3)
        assert next(m for m in first if m.kind == "book").snapshot is True
        cb.skip_sequence(2)
        msgs = await collect(it, lambda ms: any(m.status == "gap" for m in ms)
                             and any(m.kind == "book" and m.snapshot for m in ms[[x.status for x in ms].index("gap"):]))
        await it.aclose()
    gap = next(m for m in msgs if m.status == "gap")
    assert gap.channel == "book" and gap.last_missing_id - gap.first_missing_id == 1
    after = msgs[msgs.index(gap) + 1:]
    views = [m for m in after if m.kind == "book"]
    assert views[0].snapshot is True, "the first view after a gap comes from a fresh snapshot"
    assert len(views[0].bids) == 5 and views[0].bids[0][0] < views[0].asks[0][0]
    conn = cb.history[0]
    assert conn.props["requests"][-2:] == [("unsubscribe", "level2", ["BTC-USD"]), ("subscribe", "level2", ["BTC-USD"])]
    assert len(cb.history) == 1, "a resync needs no new connection"


async def test_unknown_product_is_a_clear_error(cb):
    async with ds_for(cb) as ds:
        with pytest.raises(UnknownSymbolError, match="NOPE-USD"):
            async for _ in ds.stream("NOPE-USD", "trade"):
                pass


async def test_malformed_frames_are_counted_not_fatal(cb):
    async with ds_for(cb) as ds:
        it = ds.stream("BTC-USD", "trade")
        await collect(it, lambda ms: any(m.kind == "trade" for m in ms))
        cb.inject_malformed(b'{"channel":"market_trades","events":[{"trades":[{"trade_id":')
        msgs = await collect(it, lambda ms: any(m.status == "error" for m in ms) and sum(m.kind == "trade" for m in ms[-3:]) >= 2)
        await it.aclose()
    err = next(m for m in msgs if m.status == "error")
    assert "bad frame" in err.reason
    assert len(cb.history) == 1, "a bad frame does not cost the connection"


async def test_derived_one_minute_bars_from_trades(cb):
    async with ds_for(cb) as ds:
        it = ds.stream("BTC-USD", "bar:1m")
        msgs = await collect(it, lambda ms: sum(m.kind == "bar" for m in ms) >= 5)
        await it.aclose()
    bars = [m for m in msgs if m.kind == "bar"]
    assert all(b.derived and b.interval == "1m" and b.channel == "bar:1m" and b.ts_event % 60_000_000_000 == 0 for b in bars)
    assert all(b.low <= min(b.open, b.close) and b.high >= max(b.open, b.close) for b in bars)
    assert [b.size for b in bars if b.ts_event == bars[-1].ts_event] == sorted(b.size for b in bars if b.ts_event == bars[-1].ts_event)
    assert set(cb.history[0].props["subs"]) == {"heartbeats", "market_trades"}  # no candles: 1m is derived


async def test_native_five_minute_candles(cb):
    async with ds_for(cb) as ds:
        it = ds.stream("BTC-USD", "bar:5m")
        msgs = await collect(it, lambda ms: sum(m.kind == "bar" for m in ms) >= 2)
        await it.aclose()
    bars = [m for m in msgs if m.kind == "bar"]
    assert all(not b.derived and b.interval == "5m" and b.ts_event % 300_000_000_000 == 0 for b in bars)


# -- JWT -------------------------------------------------------------------------------------------------

def _keypair():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    priv = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return priv, pub


async def test_signed_subscriptions_verify_and_a_wrong_key_is_fatal():
    name = "organizations/o/apiKeys/k"
    priv, pub = _keypair()
    other, _ = _keypair()
    async with CoinbaseSimulator(seed=2, jwt_keys={name: pub}) as sim:
        async with DataStream(endpoints={"coinbase": sim.url}, credentials={"coinbase": {"key": name, "secret": priv}},
                              options={"coinbase": FAST}) as ds:
            it = ds.stream("BTC-USD", "trade")
            await collect(it, lambda ms: any(m.kind == "trade" for m in ms))
            await it.aclose()
        async with DataStream(endpoints={"coinbase": sim.url}, credentials={"coinbase": {"key": name, "secret": other}},
                              options={"coinbase": FAST}) as ds:
            with pytest.raises(AuthenticationError):
                await collect(ds.stream("BTC-USD", "trade"), lambda ms: False, limit=10)


# -- the official SDK against the simulator ----------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:websockets.legacy is deprecated:DeprecationWarning")
async def test_coinbase_advanced_py_sdk_reads_the_simulator(cb):
    """coinbase-advanced-py's WSClient, only its base URL changed, subscribes and parses our frames.

    The SDK pins websockets<14, whose ``websockets.connect`` is the legacy client that
    websockets >= 14 keeps as ``websockets.legacy.client.connect``; the SDK module is
    given exactly that (same implementation, same API) so it runs beside websockets 17.
    """
    import types

    import websockets.exceptions
    import websockets.legacy.client
    from coinbase.websocket import WebsocketResponse, WSClient, websocket_base

    websocket_base.websockets = types.SimpleNamespace(connect=websockets.legacy.client.connect, exceptions=websockets.exceptions)
    got: list = []
    client = WSClient(base_url=cb.url, on_message=lambda m: got.append(WebsocketResponse(json.loads(m))), retry=False)

    def run() -> None:
        client.open()
        client.subscribe(["BTC-USD", "ETH-USD"], ["heartbeats", "market_trades", "level2", "ticker", "candles"])
        import time

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            chans = {r.channel for r in got}
            if {"heartbeats", "market_trades", "l2_data", "ticker", "candles", "subscriptions"} <= chans and sum(
                    r.channel == "market_trades" for r in got) >= 2:
                break
            time.sleep(0.05)
        client.unsubscribe(["BTC-USD"], ["level2"])
        time.sleep(0.2)
        client.close()

    await asyncio.to_thread(run)
    by = {}
    for r in got:
        by.setdefault(r.channel, []).append(r)
    snap = by["l2_data"][0].events[0]
    assert snap.type == "snapshot" and snap.updates[0].side in ("bid", "offer") and float(snap.updates[0].price_level) > 0
    trade = next(e.trades[0] for r in by["market_trades"] for e in r.events if e.trades)
    assert trade.product_id in ("BTC-USD", "ETH-USD") and trade.side in ("BUY", "SELL")
    assert isinstance(by["heartbeats"][0].events[0].heartbeat_counter, int)
    assert by["candles"][0].events[0].candles[0].start.isdigit()
    assert [r.sequence_num for r in got] == list(range(len(got)))
    last_ack = by["subscriptions"][-1].events[0].subscriptions
    assert last_ack["level2"] == ["ETH-USD"], "the unsubscribe was understood"


def test_cli_lists_coinbase_and_kraken():
    from click.testing import CliRunner

    from wrdata.cli import main

    out = CliRunner().invoke(main, ["sim", "--help"]).output
    assert "coinbase" in out and "kraken" in out


def test_faults_object_is_shared():
    sim = CoinbaseSimulator(faults=Faults(drop_after=5))
    assert sim.faults.drop_after == 5


async def test_books_beyond_the_per_connection_limit_open_another_connection():
    """The venue refuses more than a few level2 products per connection: the runner asks
    the venue (Venue.admit) and spreads books over connections instead of being refused."""
    async with CoinbaseSimulator(seed=5, rate=300, heartbeat_interval=0.2, max_level2=2) as sim:
        products = [s for s in sim.market.symbols][:3]
        async with DataStream(endpoints={"coinbase": sim.url}, options={"coinbase": {**FAST, "level2_per_conn": 2}}) as ds:
            views = await collect(ds.stream_many(products, stream_type="book:5"), lambda ms: {m.symbol for m in ms} == set(products))
        assert {m.symbol for m in views} == set(products)
        assert len(sim.history) == 2, "two books on the first connection, the third on another"
        assert not [m for m in views if m.kind == "status" and m.status == "error"]
