"""The Kraken provider against the Kraken simulator through DataStream, the simulator
against a plain websockets client, and python-kraken-sdk against the simulator."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import pytest
import websockets

from wrdata import DataStream
from wrdata.sim.kraken import KrakenSimulator
from wrdata.streaming.base import UnknownSymbolError

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
async def kr():
    async with KrakenSimulator(seed=5, rate=400, heartbeat_interval=0.2) as sim:
        yield sim


def ds_for(sim, **opts):
    return DataStream(endpoints={"kraken": sim.url}, options={"kraken": {**FAST, **opts}}, include_status=True)


# -- the simulator speaks the documented protocol ---------------------------------------------------------

async def test_protocol_status_acks_errors_ping_and_checksummed_book(kr):
    from wrdata.sim.kraken import checksum

    async with websockets.connect(kr.url + "/v2") as ws:
        status = json.loads(await ws.recv())
        assert status["channel"] == "status" and status["data"][0]["system"] == "online" and status["data"][0]["api_version"] == "v2"
        await ws.send(json.dumps({"method": "subscribe", "params": {"channel": "book", "symbol": ["BTC/USD", "XBT/USD"], "depth": 10}, "req_id": 7}))
        await ws.send(json.dumps({"method": "ping", "req_id": 9}))
        got = []
        async with asyncio.timeout(5):
            while sum(1 for m in got if m.get("channel") == "book") < 20:
                got.append(json.loads(await ws.recv()))
    acks = [m for m in got if m.get("method") == "subscribe"]
    assert acks[0]["success"] is True and acks[0]["result"] == {"channel": "book", "depth": 10, "snapshot": True, "symbol": "BTC/USD"}
    assert acks[1]["success"] is False and acks[1]["error"] == "Currency pair not supported XBT/USD" and acks[1]["req_id"] == 7
    assert any(m.get("method") == "pong" and m.get("req_id") == 9 for m in got)
    books = [m for m in got if m.get("channel") == "book"]
    assert books[0]["type"] == "snapshot" and len(books[0]["data"][0]["bids"]) == 10
    # replay the documented maintenance on the wire text, exactly: apply, truncate to 10, CRC
    bids: dict[str, str] = {}
    asks: dict[str, str] = {}
    spec = kr.market.spec("BTC/USD")
    for m in books:
        d = m["data"][0]
        for side, levels in ((bids, d["bids"]), (asks, d["asks"])):
            for lv in levels:
                p, q = spec.to_ticks(lv["price"]), spec.to_lots(lv["qty"])
                if q == 0:
                    side.pop(p, None)
                else:
                    side[p] = q
        for side, rev in ((bids, True), (asks, False)):
            for p in sorted(side, reverse=rev)[10:]:
                del side[p]
        top_a = sorted(asks.items())[:10]
        top_b = sorted(bids.items(), reverse=True)[:10]
        assert checksum(spec, top_a, top_b) == d["checksum"]


async def test_asset_pairs_rest_and_the_sdk_spelling(kr):
    def get(q):
        return json.loads(urllib.request.urlopen(kr.rest_url + "/0/public/AssetPairs" + q).read())

    full = await asyncio.to_thread(get, "")
    assert full["result"]["XXBTZUSD"]["wsname"] == "XBT/USD" and full["result"]["XXBTZUSD"]["pair_decimals"] == 1
    assert full["result"]["XXDGZUSD"]["wsname"] == "XDG/USD"
    one = await asyncio.to_thread(get, "?pair=BTC/USD")
    assert one["result"]["BTC/USD"]["lot_decimals"] == 8


# -- the provider through DataStream ---------------------------------------------------------------------------

async def test_multiplexing_and_xbt_spelling(kr):
    async with ds_for(kr) as ds:
        it = ds.stream_many(["XBT/USD", "ETH/USD", "kraken:SOL/USD", "DOGE/USD"], stream_type="trade")
        msgs = await collect(it, lambda ms: {m.symbol for m in ms if m.kind == "trade"} == {"BTC/USD", "ETH/USD", "SOL/USD", "DOGE/USD"})
        await it.aclose()
    assert len(kr.history) == 1
    by_id = {(s, t.trade_id): t for s in kr.market.symbols for t in kr.market.trades(s)}
    for m in msgs:
        if m.kind == "trade":
            t = by_id[(m.symbol, m.trade_id)]
            spec = kr.market.spec(m.symbol)
            assert (m.price, m.size, m.side) == (spec.price(t.price), spec.qty(t.qty), t.side)
    assert not [m for m in msgs if m.status in ("gap", "error")]


async def test_checksum_failure_resubscribes_for_a_fresh_snapshot(kr):
    async with ds_for(kr) as ds:
        it = ds.stream("BTC/USD", "book:10")
        await collect(it, lambda ms: sum(m.kind == "book" for m in ms) >= 3)
        kr.corrupt_checksum(1, "BTC/USD")
        msgs = await collect(it, lambda ms: any(m.status == "gap" for m in ms)
                             and any(m.kind == "book" and m.snapshot for m in ms[[x.status for x in ms].index("gap"):]))
        more = await collect(it, lambda ms: sum(m.kind == "book" for m in ms) >= 20)
        await it.aclose()
    gap = next(m for m in msgs if m.status == "gap")
    assert gap.channel == "book" and "checksum" in gap.reason
    views = [m for m in msgs[msgs.index(gap) + 1:] if m.kind == "book"]
    assert views[0].snapshot is True
    assert not [m for m in more if m.status == "gap"], "after the resync every checksum verifies again"
    assert len(kr.history) == 1
    last = [m for m in more if m.kind == "book"][-1]
    book = kr.market.book("BTC/USD")
    spec = kr.market.spec("BTC/USD")
    assert len(last.bids) == 10 and last.bids[0][0] <= spec.price(book.best()[0]) + 1e9  # a sane, synced view


async def test_drop_reconnects_and_heals_trades_from_the_snapshot(kr):
    async with ds_for(kr) as ds:
        it = ds.stream("BTC/USD", "trade")
        await collect(it, lambda ms: sum(m.kind == "trade" for m in ms) >= 3)
        kr.drop_all()
        msgs = await collect(it, lambda ms: any(m.status == "gap" for m in ms) and sum(m.kind == "trade" and m.source == "stream" for m in ms) >= 3)
        await it.aclose()
    gap = next(m for m in msgs if m.status == "gap")
    assert gap.symbol == "BTC/USD" and gap.channel == "trade"
    ids = [m.trade_id for m in msgs if m.kind == "trade"]
    assert ids == sorted(set(ids)), "no duplicates across the reconnect"
    assert len(kr.history) == 2


async def test_stall_with_a_short_silence_timeout(kr):
    async with DataStream(endpoints={"kraken": kr.url}, options={"kraken": {**FAST, "silence_timeout": 0.5}}, include_status=True) as ds:
        it = ds.stream("ETH/USD", "trade")
        await collect(it, lambda ms: any(m.kind == "trade" for m in ms))
        kr.stall_all()
        msgs = await collect(it, lambda ms: any(m.status == "gap" and "silent" in m.reason for m in ms)
                             and any(m.kind == "trade" for m in ms[-2:]))
        await it.aclose()
    # the outage is one gap event; trades the resubscription snapshot could not cover are another
    gaps = [m for m in msgs if m.status == "gap"]
    assert any("silent" in g.reason and g.channel == "trade" for g in gaps) and len(kr.history) == 2
    assert all("silent" in g.reason or g.reason == "trade ids skipped" for g in gaps)


async def test_unknown_pair_is_a_clear_error(kr):
    async with ds_for(kr) as ds:
        with pytest.raises(UnknownSymbolError, match="NOPE/USD"):
            async for _ in ds.stream("NOPE/USD", "trade"):
                pass


async def test_malformed_frames_counted_and_pings_answered(kr):
    async with ds_for(kr, keepalive_interval=0.1) as ds:
        it = ds.stream("BTC/USD", "quote")
        await collect(it, lambda ms: any(m.kind == "quote" for m in ms))
        kr.inject_malformed(b'{"channel":"ticker","type":"update","data":[{"symbol":')
        msgs = await collect(it, lambda ms: any(m.status == "error" for m in ms) and any(m.kind == "quote" for m in ms[-2:]))
        await asyncio.sleep(0.3)
        await it.aclose()
    assert "bad frame" in next(m for m in msgs if m.status == "error").reason
    assert len(kr.history) == 1
    assert kr.history[0].props["pings"] >= 2, "application pings every keepalive_interval"


async def test_native_and_derived_bars(kr):
    async with ds_for(kr) as ds:
        it = ds.stream("BTC/USD", "bar:5m")
        native = await collect(it, lambda ms: sum(m.kind == "bar" for m in ms) >= 2)
        await it.aclose()
        for _ in range(3):
            await asyncio.sleep(0)
        it = ds.stream("BTC/USD", "bar:2h")  # Kraken has 1h and 4h, not 2h: built from trades
        derived = await collect(it, lambda ms: sum(m.kind == "bar" for m in ms) >= 3)
        await it.aclose()
    nb = [m for m in native if m.kind == "bar"]
    assert all(not b.derived and b.interval == "5m" and b.ts_event % 300_000_000_000 == 0 for b in nb)
    db = [m for m in derived if m.kind == "bar"]
    assert all(b.derived and b.interval == "2h" and b.ts_event % 7_200_000_000_000 == 0 for b in db)
    assert db[-1].size >= db[0].size


# -- python-kraken-sdk against the simulator ------------------------------------------------------------------

async def test_python_kraken_sdk_ws_client_and_order_book_checksums(kr, monkeypatch):
    """SpotWSClient and SpotOrderBookClient (checksums, REST AssetPairs), changed only in their URLs."""
    from kraken.spot import Market, SpotOrderBookClient, SpotWSClient

    got: list[dict] = []

    async def on_message(msg):
        got.append(msg)

    monkeypatch.setattr(SpotOrderBookClient, "WS_URL", kr.url)  # its base URL (it has no constructor argument)
    monkeypatch.setattr(Market, "URL", kr.rest_url)
    updates: list[tuple[str, dict]] = []
    invalid: list[dict] = []

    async def on_book(pair, message):
        if "error" in message:
            invalid.append(message)
        updates.append((pair, message))

    async def sdk() -> dict:
        client = SpotWSClient(ws_url=kr.url, rest_url=kr.rest_url, callback=on_message)
        ob = SpotOrderBookClient(depth=10, callback=on_book)
        try:
            await client.start()
            await ob.start()
            await client.subscribe(params={"channel": "trade", "symbol": ["BTC/USD"]}, req_id=1)
            await client.subscribe(params={"channel": "ticker", "symbol": ["ETH/USD"], "event_trigger": "bbo"}, req_id=2)
            await ob.add_book(pairs=["BTC/USD"])
            async with asyncio.timeout(15):
                while len([u for u in updates if u[0] == "BTC/USD"]) < 30 or not any(m.get("channel") == "trade" for m in got):
                    await asyncio.sleep(0.05)
            assert not invalid, "every checksum the SDK checked verified"
            b = ob.get("BTC/USD")
            book = {"valid": b["valid"], "bid": dict(b["bid"]), "ask": dict(b["ask"])}
            loop.call_soon_threadsafe(kr.corrupt_checksum, 1, "BTC/USD")
            async with asyncio.timeout(10):
                while not invalid:
                    await asyncio.sleep(0.05)
            return book
        finally:
            await client.close()
            await ob.close()

    # the SDK's order book fetches AssetPairs with a blocking HTTP call inside its callback:
    # it gets its own thread and event loop, so the simulator keeps serving meanwhile
    loop = asyncio.get_running_loop()
    book = await asyncio.to_thread(asyncio.run, sdk())
    assert book["valid"] and len(book["bid"]) == 10 and len(book["ask"]) == 10
    assert any(m.get("method") == "subscribe" and m.get("success") for m in got)
    trade = next(m for m in got if m.get("channel") == "trade")["data"][0]
    assert trade["symbol"] == "BTC/USD" and trade["side"] in ("buy", "sell") and isinstance(trade["trade_id"], int)
    assert any(m.get("channel") == "ticker" for m in got)
    assert any(m.get("method") == "pong" for m in got), "the SDK's JSON ping was answered"
    assert "Checksum mismatch" in invalid[0]["error"]
