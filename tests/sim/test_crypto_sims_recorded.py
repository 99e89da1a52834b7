"""The Coinbase and Kraken simulators serving recorded frames (``FrameFeed``, what ``replay
serve`` builds on), checked frame by frame with plain websockets clients: what is served
as recorded, what each connection's protocol state changes, and what the simulator keeps
to itself."""

from __future__ import annotations

import asyncio
import json
import urllib.request

from wrdata.sim.coinbase import CoinbaseSimulator
from wrdata.sim.kraken import KrakenSimulator, _text_checksum
from wrdata.sim.server import FrameFeed, RecordedFrame


def _gated(sim_ref: list, frames: list[RecordedFrame], subscribed: int):
    async def gen():
        sim = sim_ref[0]
        while sum(len(c.subscriptions) for c in sim.connections) < subscribed:  # every client is in place
            await asyncio.sleep(0.01)
        for f in frames:
            yield f

    return gen()


async def _recv_until(ws, pred, limit: float = 5.0) -> list:
    out = []
    async with asyncio.timeout(limit):  # (a bound for a broken run)
        while True:
            m = await ws.recv()
            out.append(m)
            if pred(out):
                return out


# -- Coinbase ------------------------------------------------------------------------------------------------

def _cb(channel: str, seq: int, events: list) -> bytes:
    return json.dumps({"channel": channel, "client_id": "", "timestamp": "2026-01-02T03:04:05.123456789Z",
                       "sequence_num": seq, "events": events}, separators=(",", ":")).encode()


def _l2(kind: str, levels: list[tuple[str, str, str]]) -> list:
    return [{"type": kind, "product_id": "BTC-USD", "updates": [
        {"side": s, "event_time": "2026-01-02T03:04:05.123456Z", "price_level": p, "new_quantity": q} for s, p, q in levels]}]


async def test_coinbase_numbers_each_connection_carries_lost_messages_and_turns_later_snapshots_into_updates(connect):
    trades = [{"type": "update", "trades": [{"trade_id": "7", "product_id": "BTC-USD", "price": "1.00", "size": "2",
                                              "side": "BUY", "time": "2026-01-02T03:04:05.1Z"}]}]
    rec = [
        _cb("subscriptions", 0, [{"subscriptions": {"level2": ["BTC-USD"]}}]),        # the recording's ack: not served
        _cb("l2_data", 1, _l2("snapshot", [("bid", "10.00", "1.5"), ("offer", "11.00", "2.0")])),
        _cb("heartbeats", 2, [{"current_time": "x", "heartbeat_counter": 1}]),          # the recording's heartbeat: not served
        _cb("l2_data", 5, _l2("update", [("bid", "10.50", "0.7")])),                    # 3 and 4 were lost
        _cb("market_trades", 6, trades),
        _cb("l2_data", 7, _l2("snapshot", [("bid", "10.50", "0.7"), ("offer", "10.90", "1.0")])),  # the recording's resync
    ]
    ref: list = []
    sim = CoinbaseSimulator(feed=FrameFeed(_gated(ref, [RecordedFrame(i, f, conn=1) for i, f in enumerate(rec)], 2), speed=None),
                            heartbeat_interval=60)
    ref.append(sim)
    async with sim:
        async with connect(sim.url) as ws:
            for ch in ("level2", "market_trades"):
                await ws.send(json.dumps({"type": "subscribe", "product_ids": ["BTC-USD"], "channel": ch}))
            got = await _recv_until(ws, lambda ms: sum('"l2_data"' in m for m in ms) == 3)
    msgs = [json.loads(m) for m in got]
    assert [m["channel"] for m in msgs] == ["subscriptions", "subscriptions", "l2_data", "l2_data", "market_trades", "l2_data"]
    assert [m["sequence_num"] for m in msgs] == [0, 1, 2, 5, 6, 7], "the serving connection's count, the recorded jump in it"
    # byte for byte but sequence_num
    assert got[2].encode() == rec[1].replace(b'"sequence_num":1,', b'"sequence_num":2,')
    assert got[3].encode() == rec[3] and got[4].encode() == rec[4]
    # the recording's later snapshot, for a subscription that has had one: the update it amounts to
    later = msgs[5]["events"][0]
    assert later["type"] == "update" and msgs[5]["timestamp"] == "2026-01-02T03:04:05.123456789Z"
    assert sorted((u["side"], u["price_level"], u["new_quantity"]) for u in later["updates"]) == [
        ("bid", "10.00", "0.0"), ("offer", "10.90", "1.0"), ("offer", "11.00", "0.0")]


async def test_coinbase_subscribing_mid_recording_gets_the_recorded_book():
    import websockets

    rec = [_cb("l2_data", 0, _l2("snapshot", [("bid", "10.00", "1.5"), ("bid", "9.00", "1"), ("offer", "11.00", "2.0")])),
           _cb("l2_data", 1, _l2("update", [("bid", "9.00", "0"), ("offer", "10.80", "3.0")]))]
    ref: list = []
    sim = CoinbaseSimulator(feed=FrameFeed(_gated(ref, [RecordedFrame(i, f, conn=1) for i, f in enumerate(rec)], 1), speed=None),
                            heartbeat_interval=60)
    ref.append(sim)
    async with sim:
        async with websockets.connect(sim.url) as first:
            await first.send(json.dumps({"type": "subscribe", "product_ids": ["BTC-USD"], "channel": "level2"}))
            await _recv_until(first, lambda ms: sum('"l2_data"' in m for m in ms) == 2)
            async with websockets.connect(sim.url) as late:
                await late.send(json.dumps({"type": "subscribe", "product_ids": ["BTC-USD"], "channel": "level2"}))
                got = [json.loads(m) for m in await _recv_until(late, lambda ms: any('"l2_data"' in m for m in ms))]
    snap = got[-1]
    assert snap["sequence_num"] == 1 and snap["events"][0]["type"] == "snapshot"
    assert [(u["side"], u["price_level"], u["new_quantity"]) for u in snap["events"][0]["updates"]] == [
        ("bid", "10.00", "1.5"), ("offer", "10.80", "3.0"), ("offer", "11.00", "2.0")]


# -- Kraken ----------------------------------------------------------------------------------------------------

PAIRS = json.dumps({"error": [], "result": {"XXBTZUSD": {"altname": "XBTUSD", "wsname": "XBT/USD", "base": "XXBT",
                                                          "quote": "ZUSD", "pair_decimals": 1, "lot_decimals": 8}}}).encode()


BOOK = '{"channel":"book"'


def _kbook(kind: str, bids, asks, crc: int | None = None) -> bytes:
    def lv(side):
        return "[" + ",".join(f'{{"price":{p},"qty":{q}}}' for p, q in side) + "]"

    crc = _text_checksum(asks, bids) if crc is None else crc
    return (f'{{"channel":"book","type":"{kind}","data":[{{"symbol":"BTC/USD","bids":{lv(bids)},"asks":{lv(asks)},'
            f'"checksum":{crc},"timestamp":"2026-01-02T03:04:05.123456Z"}}]}}').encode()


async def test_kraken_serves_books_at_the_recorded_depth_and_later_snapshots_as_updates(connect):
    ack = b'{"method":"subscribe","result":{"channel":"book","depth":10,"snapshot":true,"symbol":"BTC/USD"},"success":true}'
    snap = _kbook("snapshot", [("100.0", "1.00000000"), ("99.0", "2.00000000")], [("101.0", "1.50000000")])
    upd = _kbook("update", [("99.5", "0.50000000")], [], crc=_text_checksum([("101.0", "1.50000000")],
                                                                              [("100.0", "1.00000000"), ("99.5", "0.50000000"),
                                                                               ("99.0", "2.00000000")]))
    resync = _kbook("snapshot", [("100.0", "1.00000000"), ("99.5", "0.50000000")], [("100.5", "4.00000000")])
    rec = [ack, b'{"channel":"status","data":[{"system":"online"}],"type":"update"}', snap, b'{"channel":"heartbeat"}', upd, resync]
    ref: list = []
    sim = KrakenSimulator(feed=FrameFeed(_gated(ref, [RecordedFrame(i, f) for i, f in enumerate(rec)], 2), speed=None),
                          heartbeat_interval=0)
    ref.append(sim)
    sim.set_rest_override("/0/public/AssetPairs", PAIRS)
    async with sim:
        async with connect(sim.url + "/v2") as at10, connect(sim.url + "/v2") as at25:
            for ws, depth in ((at10, 10), (at25, 25)):
                await ws.send(json.dumps({"method": "subscribe", "params": {"channel": "book", "symbol": ["BTC/USD"], "depth": depth}}))
            got = await _recv_until(at10, lambda ms: sum(m.startswith(BOOK) for m in ms) == 3)
            await at25.send(json.dumps({"method": "ping", "req_id": 5}))
            other = await _recv_until(at25, lambda ms: '"pong"' in ms[-1])
        by_pair = await asyncio.to_thread(lambda: json.loads(urllib.request.urlopen(sim.rest_url + "/0/public/AssetPairs?pair=BTC/USD").read()))
        whole = await asyncio.to_thread(lambda: urllib.request.urlopen(sim.rest_url + "/0/public/AssetPairs").read())
    books = [m for m in got if m.startswith(BOOK)]
    assert [m.encode() for m in books[:2]] == [snap, upd], "as recorded, byte for byte"
    later = json.loads(books[2])
    assert later["type"] == "update" and later["data"][0]["checksum"] == json.loads(resync)["data"][0]["checksum"]
    assert later["data"][0]["asks"] == [{"price": 101.0, "qty": 0.0}, {"price": 100.5, "qty": 4.0}]
    assert later["data"][0]["bids"] == [{"price": 99.0, "qty": 0.0}]
    assert '"qty":0.00000000' in books[2], "a removed level is printed with the pair's decimals"
    assert not any(m.startswith(BOOK) or '"heartbeat"' in m for m in other), "a depth-25 book cannot follow a depth-10 recording"
    assert sum('"status"' in m for m in got) == 1, "the simulator's own status, not the recorded one"
    # the recorded AssetPairs answers as recorded, and keyed as asked
    assert whole == PAIRS and by_pair["result"] == {"BTC/USD": json.loads(PAIRS)["result"]["XXBTZUSD"]}
