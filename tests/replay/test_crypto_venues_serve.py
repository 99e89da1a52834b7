"""``wrdata replay serve coinbase|kraken``: a recording made by the capture daemon from the
simulators (with an outage, a lost Coinbase message and a wrong Kraken book checksum in
it) served over each venue's own protocol, to wrdata's client and to each venue's own
Python client, unmodified but for its URL.

What is served is the recording, byte for byte, but where the protocol's rules for one
connection say otherwise (see the simulators' docstrings): Coinbase's ``sequence_num``
counts the serving connection's messages (with the recording's lost messages in it), and
a snapshot that answered one of the recording connection's later subscriptions (after its
reconnect or a book resync) reaches a serving subscription that has had its snapshot as
the update it amounts to."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time

import pytest

from wrdata import DataStream
from wrdata.capture.config import CaptureConfig, Target
from wrdata.capture.daemon import CaptureDaemon
from wrdata.channels import parse_channels
from wrdata.replay.serve import serve
from wrdata.sim.coinbase import CoinbaseSimulator
from wrdata.sim.kraken import KrakenSimulator
from wrdata.storage import read_raw

FAST = {"backoff_initial": 0.05, "backoff_max": 0.2, "control_interval": 0.01}
SYMBOLS = {"coinbase": ["BTC-USD", "ETH-USD"], "kraken": ["BTC/USD", "ETH/USD"]}
KINDS = {"coinbase": "trade,quote,bar:5m,book:10", "kraken": "trade,quote,bar:1m,book:10"}


async def _capture(root, provider: str) -> None:
    sim_cls = CoinbaseSimulator if provider == "coinbase" else KrakenSimulator
    async with sim_cls(seed=7, rate=300, heartbeat_interval=0.2) as sim:
        config = CaptureConfig(targets=[Target(provider, SYMBOLS[provider], parse_channels(KINDS[provider]))], root=str(root),
                               endpoints={provider: sim.url})
        config.options[provider] = dict(FAST)
        config.storage.flush_interval = 0.2
        task = asyncio.create_task(CaptureDaemon(config, duration=2.5, status="none").run())
        await asyncio.sleep(0.9)
        if provider == "coinbase":
            sim.skip_sequence(2)  # two messages lost
        else:
            sim.corrupt_checksum(1, "BTC/USD")  # a book message with a wrong checksum
        await asyncio.sleep(0.5)
        sim.drop_all()  # an outage
        assert await task == 0


_ROOTS: dict = {}


def _recording_of(provider: str, tmp_path_factory):
    """One recording per venue for this module (every test only reads it)."""
    if provider not in _ROOTS:
        root = tmp_path_factory.mktemp(f"served-{provider}")
        asyncio.run(_capture(root, provider))
        _ROOTS[provider] = root
    return _ROOTS[provider]


@pytest.fixture(scope="module", params=["coinbase", "kraken"])
def recording(request, tmp_path_factory):
    return request.param, _recording_of(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def coinbase_recording(tmp_path_factory):
    return _recording_of("coinbase", tmp_path_factory)


@pytest.fixture(scope="module")
def kraken_recording(tmp_path_factory):
    return _recording_of("kraken", tmp_path_factory)


async def _replayed(root, provider: str, kind: str) -> list:
    async with DataStream.replay(str(root), include_status=True) as ds:
        return [m async for m in ds.stream_many(SYMBOLS[provider], stream_type=kind)]


def _last_views(msgs) -> dict:
    return {m.symbol: (m.bids, m.asks) for m in msgs if m.kind == "book"}


async def _start_serving(provider: str, root, **kw):
    ready = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(serve(provider, str(root), speed=None, on_ready=ready.set_result, **kw))
    return server, await asyncio.wait_for(ready, 10)


# -- wrdata's own client -----------------------------------------------------------------------------------

async def test_wrdata_client_gets_the_recorded_trades_and_a_consistent_book(recording):
    provider, root = recording
    recorded_trades = [m for m in await _replayed(root, provider, "trade") if m.kind == "trade"]
    recorded_books = await _replayed(root, provider, "book:10")
    assert len(recorded_trades) > 20
    server, sim = await _start_serving(provider, root, settle=0.5)
    got: dict[str, list] = {"trade": [], "book:10": []}
    async with DataStream(endpoints={provider: sim.url}, options={provider: FAST}, include_status=True) as ds:

        async def collect(kind):
            async for m in ds.stream_many(SYMBOLS[provider], stream_type=kind):
                got[kind].append(m)

        tasks = [asyncio.create_task(collect(k)) for k in got]
        n = await asyncio.wait_for(server, 30)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert n > 100

    def key(t):  # (trades the recording client got back as backfill after its outage come as updates here)
        return t.symbol, t.trade_id, t.price, t.size, t.side, t.ts_event

    assert [key(t) for t in got["trade"] if t.kind == "trade"] == [key(t) for t in recorded_trades]
    served = got["book:10"]
    # the book ends as recorded, after the recorded outage and the recorded venue fault
    assert _last_views(served) == _last_views(recorded_books) and len(_last_views(served)) == 2
    if provider == "kraken":
        # every served book message verifies against its checksum, but the one recorded wrong;
        # the resubscription it causes gets a snapshot of the recorded book (checksum verified too)
        bad = [m for m in served if m.status == "gap" and "checksum" in m.reason]
        recorded_bad = [m for m in recorded_books if m.status == "gap" and "checksum" in m.reason]
        assert len(recorded_bad) == 1 and [m.symbol for m in bad] == ["BTC/USD"]
        after = [m for m in served[served.index(bad[0]):] if m.kind == "book" and m.symbol == "BTC/USD"]
        assert after and after[0].snapshot and len(after[0].bids) == 10
    else:
        # the messages the venue lost for the recording connection are a jump in the served
        # connection's sequence_num too: the client reports the gap and resynchronises its books
        gaps = [m for m in served if m.status == "gap" and "sequence_num skipped" in m.reason]
        assert {m.symbol for m in gaps} == {"BTC-USD", "ETH-USD"}
        assert {m.reason.split("; ")[0] for m in gaps} == {gaps[0].reason.split("; ")[0]}
        for sym in SYMBOLS[provider]:
            i = next(i for i, m in enumerate(served) if m.status == "gap" and m.symbol == sym and "resynchronising" in m.reason)
            after = [m for m in served[i:] if m.kind == "book" and m.symbol == sym]
            assert after and after[0].snapshot, f"{sym}: a fresh snapshot after the gap"


# -- coinbase-advanced-py --------------------------------------------------------------------------------------

_SEQ = re.compile(rb'"sequence_num":\d+')


def _product(m: dict) -> str | None:
    ev = m["events"][0]
    rows = ev.get("trades") or ev.get("tickers") or ev.get("candles") or [ev]
    return rows[0].get("product_id")


def _channel(frame: bytes) -> bytes:
    return frame[11:30].split(b",")[0]  # '{"channel":"l2_data",...' -> '"l2_data"'


@pytest.mark.filterwarnings("ignore:websockets.legacy is deprecated:DeprecationWarning")
async def test_coinbase_advanced_py_gets_the_recorded_messages(coinbase_recording):
    """WSClient, only its base URL changed (and given websockets' legacy client, as in
    tests/sim/test_coinbase_sim.py), gets every recorded update byte for byte but for
    ``sequence_num`` (its own connection's count, with the recording's lost messages in
    it), one snapshot per subscription, and the recording's later snapshots as updates: a
    book kept from them ends as recorded, and no trade comes twice."""
    import types

    import websockets.exceptions
    import websockets.legacy.client
    from coinbase.websocket import WSClient, websocket_base

    websocket_base.websockets = types.SimpleNamespace(connect=websockets.legacy.client.connect, exceptions=websockets.exceptions)
    root = coinbase_recording
    data_channels = (b'"market_trades"', b'"l2_data"', b'"ticker"', b'"candles"')
    recorded = [f.payload for f in read_raw(str(root), "coinbase") if f.direction == "in" and _channel(f.payload) in data_channels]
    snapshots = [f for f in recorded if b'"type":"snapshot"' in f]
    assert len(recorded) > 100 and len(snapshots) > 8, "snapshots of the recording's first and later subscriptions"
    final = _last_views(await _replayed(root, "coinbase", "book:10"))
    delivered = [m for m in await _replayed(root, "coinbase", "trade") if m.kind == "trade"]
    server, sim = await _start_serving("coinbase", root, settle=0.5, linger=60, heartbeat_interval=0.2)
    got: list[bytes] = []
    after = [10**9]  # a heartbeat counter queued after the last recorded frame
    everything = threading.Event()

    def on_message(m: str) -> None:
        f = m.encode()
        got.append(f)
        if f.startswith(b'{"channel":"heartbeats"') and json.loads(f)["events"][0]["heartbeat_counter"] > after[0]:
            everything.set()  # everything queued before it came

    client = WSClient(base_url=sim.url, on_message=on_message, retry=False)

    def run() -> None:
        client.open()
        client.subscribe(SYMBOLS["coinbase"], ["heartbeats", "market_trades", "level2", "ticker", "candles"])
        everything.wait(30)  # (a bound for a broken run)
        client.close()

    async def served() -> None:
        while sim.feed.done is None:
            await asyncio.sleep(0.01)
        await asyncio.shield(sim.feed.done)
        after[0] = max(c.props.get("hb", 0) for c in sim.history)

    try:
        await asyncio.gather(asyncio.to_thread(run), served())
    finally:
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)
    frames = got
    data = [f for f in frames if _channel(f) in data_channels]
    norm = [_SEQ.sub(b"", f) for f in data]
    # every recorded update, byte for byte but sequence_num, in the recorded order
    updates = [_SEQ.sub(b"", f) for f in recorded if f not in snapshots]
    served_updates = set(updates)
    assert [f for f in norm if f in served_updates] == updates
    # one snapshot per subscription (the recording's first); the recording's later ones came as updates
    served_snaps = [(_channel(f), _product(json.loads(f))) for f in data if b'"type":"snapshot"' in f]
    assert len(served_snaps) == len(set(served_snaps)) and {(b'"l2_data"', p) for p in SYMBOLS["coinbase"]} <= set(served_snaps)
    as_recorded = served_updates | {_SEQ.sub(b"", f) for f in snapshots}
    made = [json.loads(f) for f, n in zip(data, norm, strict=True) if n not in as_recorded]
    assert {m["channel"] for m in made} >= {"l2_data"} and all(m["events"][0]["type"] == "update" for m in made)
    # a book kept from what was served (snapshot, then every update) ends as recorded
    books: dict[str, tuple[dict, dict]] = {}
    for f in data:
        m = json.loads(f)
        if m["channel"] != "l2_data":
            continue
        for ev in m["events"]:
            if ev["type"] == "snapshot":
                books[ev["product_id"]] = ({}, {})
            bids, asks = books[ev["product_id"]]
            for u in ev["updates"]:
                side = bids if u["side"] == "bid" else asks
                if float(u["new_quantity"]) == 0:
                    side.pop(float(u["price_level"]), None)
                else:
                    side[float(u["price_level"])] = float(u["new_quantity"])
    for product, (bids, asks) in books.items():
        assert (sorted(bids.items(), reverse=True)[:10], sorted(asks.items())[:10]) == final[product], product
    # trades: the recorded updates' trades, and where the recording client got a later snapshot
    # (after its reconnect), the trades in it newer than any before; every one it delivered
    for product in SYMBOLS["coinbase"]:
        expected: list[int] = []
        newest = None
        for f in recorded:
            m = json.loads(f)
            if m["channel"] != "market_trades":
                continue
            ev = m["events"][0]
            ids = sorted(int(t["trade_id"]) for t in ev["trades"] if t["product_id"] == product)
            if ev["type"] == "update":
                expected += ids
            elif newest is not None:
                expected += [i for i in ids if i > newest]
            if ids:
                newest = max(ids) if newest is None else max(newest, *ids)
        served_ids = [int(t["trade_id"]) for f in data for m in [json.loads(f)] if m["channel"] == "market_trades"
                      and m["events"][0]["type"] == "update" for t in m["events"][0]["trades"] if t["product_id"] == product]
        assert served_ids == expected and set(served_ids) >= {t.trade_id for t in delivered if t.symbol == product}, product
    seqs = [json.loads(f)["sequence_num"] for f in frames]
    steps = [b - a for a, b in zip(seqs, seqs[1:], strict=False)]
    # one counter over every message of the connection; the two recorded lost messages are a jump
    assert seqs[0] == 0 and steps.count(3) == 1 and set(steps) == {1, 3}
    # acknowledgements and heartbeats are the simulator's own, for this connection
    acks = [json.loads(f) for f in frames if f.startswith(b'{"channel":"subscriptions"')]
    assert acks[-1]["events"][0]["subscriptions"] == {
        "heartbeats": ["heartbeats"], **{ch: SYMBOLS["coinbase"] for ch in ("market_trades", "level2", "ticker", "candles")}}
    beats = [json.loads(f)["events"][0]["heartbeat_counter"] for f in frames if f.startswith(b'{"channel":"heartbeats"')]
    assert beats == list(range(1, len(beats) + 1))


# -- python-kraken-sdk -------------------------------------------------------------------------------------------

def _sdk_checksum(book: dict) -> int:
    """python-kraken-sdk's own CRC of its book (its __validate_checksum, on its strings)."""
    import zlib

    text = ""
    for side in ("ask", "bid"):
        for price, (volume, _) in list(book[side].items())[:10]:
            text += price.replace(".", "").lstrip("0") + volume.replace(".", "").lstrip("0")
    return zlib.crc32(text.encode())


async def test_python_kraken_sdk_and_its_order_book_against_the_served_recording(kraken_recording, monkeypatch):
    """SpotWSClient gets the recorded trades and tickers; SpotOrderBookClient's own checksum
    check passes on every served book update but the one recorded wrong, and the book it then
    resubscribes for (a snapshot of the recorded book) has the checksum its own CRC gives."""
    from kraken.spot import Market, SpotOrderBookClient, SpotWSClient

    root = kraken_recording
    raw = [json.loads(f.payload) for f in read_raw(str(root), "kraken") if f.direction == "in"]
    recorded_tickers = [m for m in raw if m.get("channel") == "ticker" and m["data"][0]["symbol"] == "ETH/USD"]
    assert len(recorded_tickers) > 10 and sum(m["type"] == "snapshot" for m in recorded_tickers) == 2, "a resubscription's too"
    assert any(m.get("channel") == "trade" and m["type"] == "snapshot" for m in raw), "the recording client's trades healed"
    final = _last_views(await _replayed(root, "kraken", "book:10"))
    delivered = [m.trade_id for m in await _replayed(root, "kraken", "trade") if m.kind == "trade" and m.symbol == "BTC/USD"]
    assert len(delivered) > 10
    server, sim = await _start_serving("kraken", root, settle=1.0, linger=60)
    monkeypatch.setattr(SpotOrderBookClient, "WS_URL", sim.url)  # its base URL (it has no constructor argument)
    monkeypatch.setattr(Market, "URL", sim.rest_url)
    got: list[dict] = []
    updates: list[tuple[str, dict, dict | None]] = []

    async def on_message(msg):
        got.append(msg)

    async def sdk() -> None:
        client = SpotWSClient(ws_url=sim.url, rest_url=sim.rest_url, callback=on_message)
        ob: SpotOrderBookClient

        async def on_book(pair, message):
            b = ob.get(pair)
            updates.append((pair, message, {"bid": dict(b["bid"]), "ask": dict(b["ask"]), "valid": b["valid"]} if b else None))

        ob = SpotOrderBookClient(depth=10, callback=on_book)
        try:
            await asyncio.gather(client.start(), ob.start())
            await client.subscribe(params={"channel": "trade", "symbol": ["BTC/USD"]}, req_id=1)
            await client.subscribe(params={"channel": "ticker", "symbol": ["ETH/USD"], "event_trigger": "bbo"}, req_id=2)
            await ob.add_book(pairs=["BTC/USD", "ETH/USD"])
            # until the SDK, after the recorded bad checksum, waited its 3 s and got a fresh book
            deadline = time.monotonic() + 30  # (a bound for a broken run)
            while time.monotonic() < deadline and _resynced(updates) is None:
                await asyncio.sleep(0.05)
        finally:
            await client.close()
            await ob.close()

    # the order book fetches AssetPairs with a blocking HTTP call inside its callback: its own thread and loop
    try:
        await asyncio.to_thread(asyncio.run, sdk())
    finally:
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)
    # the plain client: every trade the recording client delivered, once, as updates (it asked
    # for no snapshot); the recorded tickers, the later snapshot as an update
    trades = [m for m in got if m.get("channel") == "trade"]
    assert {m["type"] for m in trades} == {"update"}
    assert [t["trade_id"] for m in trades for t in m["data"]] == delivered
    tickers = [m for m in got if m.get("channel") == "ticker"]
    assert [m["data"] for m in tickers] == [m["data"] for m in recorded_tickers]
    assert [m["type"] for m in tickers].count("snapshot") == 1 and tickers[0]["type"] == "snapshot"
    # the order book client: every update it checked verified, but the one recorded with a bad checksum
    checked = [i for i, (_, m, _) in enumerate(updates) if m.get("type") == "update"]
    failed = [i for i in checked if not updates[i][2]["valid"]]
    assert len(checked) > 50 and len(failed) == 1 and updates[failed[0]][0] == "BTC/USD"
    errors = [(pair, m["error"]) for pair, m, _ in updates if "error" in m]
    assert "error" in updates[failed[0] + 1][1] and len(errors) == 1 and errors[0][0] == "BTC/USD"
    assert "Checksum mismatch" in errors[0][1]
    snaps = [(pair, i) for i, (pair, m, _) in enumerate(updates) if m.get("type") == "snapshot"]
    assert sorted(p for p, i in snaps if i < failed[0]) == ["BTC/USD", "ETH/USD"], "one snapshot per subscription"
    eth = [state for pair, _, state in updates if pair == "ETH/USD"][-1]
    assert [(float(p), float(v)) for p, (v, _) in eth["bid"].items()] == final["ETH/USD"][0]
    assert [(float(p), float(v)) for p, (v, _) in eth["ask"].items()] == final["ETH/USD"][1]
    # the book it resubscribed for: the recorded book, with a checksum its own check agrees with
    resync = _resynced(updates)
    assert resync is not None, "the resubscription got a snapshot whose checksum the SDK's own CRC matches"
    assert [(float(p), float(v)) for p, (v, _) in resync["bid"].items()] == final["BTC/USD"][0]
    assert [(float(p), float(v)) for p, (v, _) in resync["ask"].items()] == final["BTC/USD"][1]


def _resynced(updates: list) -> dict | None:
    """The SDK's BTC/USD book from the first valid snapshot after its last checksum error, if any."""
    errors = [i for i, (pair, m, _) in enumerate(updates) if "error" in m]
    for pair, m, state in updates[errors[-1]:] if errors else []:
        if pair == "BTC/USD" and m.get("type") == "snapshot" and state["valid"] and _sdk_checksum(state) == m["data"][0]["checksum"]:
            return state
    return None
