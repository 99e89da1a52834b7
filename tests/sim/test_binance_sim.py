"""The Binance simulator driven by a plain websockets client: paths, control messages,
limits, keepalive, lifetime, faults, REST, and consistency with the market's tape."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest
import websockets
from sim_helpers import http_get, recv_json, recv_until, reply
from websockets.exceptions import ConnectionClosed, InvalidStatus

from wrdata.sim.binance import BinanceSimulator, parse_stream
from wrdata.sim.faults import Faults
from wrdata.sim.market import SyntheticMarket

# ---------------------------------------------------------------------------------------------
# paths and payloads


async def test_raw_stream_path_sends_bare_trades_matching_the_market(sim, connect):
    async with connect(sim.url + "/ws/btcusdt@trade") as ws:
        got = [await recv_json(ws) for _ in range(30)]
    assert all(m["e"] == "trade" and m["s"] == "BTCUSDT" and "stream" not in m for m in got)
    ids = [m["t"] for m in got]
    assert ids == list(range(ids[0], ids[0] + len(ids)))  # consecutive: no gap without a fault
    spec = sim.market.spec("BTCUSDT")
    by_id = {t.trade_id: t for t in sim.market.trades("BTCUSDT")}
    for m in got:
        t = by_id[m["t"]]
        assert m["p"] == spec.fmt_price(t.price, 8) and m["q"] == spec.fmt_qty(t.qty, 8)
        assert m["T"] == t.ts_ns // 1_000_000 and m["m"] is t.buyer_maker and m["M"] is True
        assert len(m["p"].split(".")[1]) == 8
    # realistic wall-clock timestamps
    assert abs(got[-1]["T"] / 1000 - time.time()) < 2


async def test_combined_path_wraps_every_stream(sim, connect):
    url = sim.url + "/stream?streams=btcusdt@trade/ethusdt@bookTicker/solusdt@aggTrade"
    seen: dict[str, dict] = {}
    async with connect(url) as ws:
        async with asyncio.timeout(3):
            while len(seen) < 3:
                m = await recv_json(ws)
                assert set(m) == {"stream", "data"}
                seen.setdefault(m["stream"], m["data"])
    assert seen["btcusdt@trade"]["e"] == "trade"
    bt = seen["ethusdt@bookTicker"]
    assert list(bt) == ["u", "s", "b", "B", "a", "A"] and bt["s"] == "ETHUSDT" and float(bt["b"]) < float(bt["a"])
    agg = seen["solusdt@aggTrade"]
    assert agg["e"] == "aggTrade" and agg["f"] <= agg["l"]


@pytest.mark.parametrize("path,combined", [("/ws", False), ("/stream", True)])
async def test_empty_connection_then_subscribe(sim, connect, path, combined):
    async with connect(sim.url + path) as ws:
        assert await reply(ws, {"method": "GET_PROPERTY", "params": ["combined"], "id": 1}) == {"result": combined, "id": 1}
        assert await reply(ws, {"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 2}) == {"result": None, "id": 2}
        m = await recv_json(ws)
        if combined:
            assert m["stream"] == "btcusdt@trade" and m["data"]["e"] == "trade"
        else:
            assert m["e"] == "trade"


async def test_microsecond_time_unit(sim, connect):
    async with connect(sim.url + "/stream?streams=btcusdt@trade&timeUnit=MICROSECOND") as ws:
        m = (await recv_json(ws))["data"]
    assert len(str(m["E"])) == 16 and len(str(m["T"])) == 16
    async with connect(sim.url + "/ws/btcusdt@trade?timeUnit=millisecond") as ws:
        assert len(str((await recv_json(ws))["T"])) == 13


async def test_url_encoded_stream_names(sim, connect):
    async with connect(sim.url + "/ws/btcusdt%40trade") as ws:
        assert (await recv_json(ws))["e"] == "trade"


async def test_unknown_and_upper_case_streams_are_silent(sim, connect):
    async with connect(sim.url + "/stream?streams=BTCUSDT@trade/nopeusdt@trade") as ws:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.4)
        # accepted, listed, still silent; no error either
        assert await reply(ws, {"method": "SUBSCRIBE", "params": ["ETHUSDT@aggTrade"], "id": 7}) == {"result": None, "id": 7}
        lst = await reply(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 8})
        assert lst == {"result": ["BTCUSDT@trade", "nopeusdt@trade", "ETHUSDT@aggTrade"], "id": 8}
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.3)


async def test_unknown_path_is_404(sim, connect):
    with pytest.raises(InvalidStatus) as e:
        async with connect(sim.url + "/nothing"):
            pass
    assert e.value.response.status_code == 404


def test_stream_grammar():
    assert parse_stream("btcusdt@kline_1M") == ("btcusdt", "kline", ("1M", 0))
    assert parse_stream("btcusdt@kline_1d@+08:00")[2][1] == 8 * 3600 * 10**9
    assert parse_stream("btcusdt@depth20@100ms") == ("btcusdt", "partial", (20, 100))
    assert parse_stream("btcusdt@depth") == ("btcusdt", "diff", 1000)
    assert parse_stream("btcusdt@depth@100ms") == ("btcusdt", "diff", 100)
    assert parse_stream("btcusdt@kline_2m") is None
    assert parse_stream("not a stream") is None
    assert parse_stream("btcusdt@depth15") is None


# ---------------------------------------------------------------------------------------------
# control messages


async def test_control_replies_echo_id_types(sim, connect):
    async with connect(sim.url + "/ws") as ws:
        sid = str(uuid.uuid4())  # the official SDK's 36-character ids
        assert await reply(ws, {"method": "SUBSCRIBE", "params": ["btcusdt@aggTrade", "btcusdt@depth"], "id": sid}) == {
            "result": None,
            "id": sid,
        }
        assert await reply(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 3}) == {
            "result": ["btcusdt@aggTrade", "btcusdt@depth"],
            "id": 3,
        }
        assert await reply(ws, {"method": "UNSUBSCRIBE", "params": ["btcusdt@depth"], "id": 312}) == {"result": None, "id": 312}
        assert await reply(ws, {"method": "LIST_SUBSCRIPTIONS", "id": None}) == {"result": ["btcusdt@aggTrade"], "id": None}
        assert await reply(ws, {"method": "SET_PROPERTY", "params": ["combined", True], "id": 5}) == {"result": None, "id": 5}
        assert await reply(ws, {"method": "GET_PROPERTY", "params": ["combined"], "id": 2}) == {"result": True, "id": 2}
        m = await recv_until(ws, lambda m: "stream" in m)
        assert m["stream"] == "btcusdt@aggTrade"
        big = -(2**63)
        assert (await reply(ws, {"method": "LIST_SUBSCRIPTIONS", "id": big}))["id"] == big


async def test_control_errors(sim, connect):
    async with connect(sim.url + "/ws") as ws:
        await ws.send("{not json")
        m = await recv_until(ws, lambda m: "error" in m)
        assert m["id"] is None and m["error"]["code"] == 3 and m["error"]["msg"].startswith("Invalid JSON: ")

        m = await reply(ws, {"method": "SUBSCRIB", "params": ["btcusdt@trade"], "id": 1})
        assert m["id"] == 1 and m["error"]["code"] == 2
        assert m["error"]["msg"].startswith(
            "Invalid request: unknown variant `SUBSCRIB`, expected one of `SUBSCRIBE`, `UNSUBSCRIBE`, "
            "`LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY` at line 1 column "
        )
        m = await reply(ws, {"params": [], "id": 4})
        assert m["error"]["code"] == 2 and m["error"]["msg"].startswith("Invalid request: missing field `method`")
        m = await reply(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 1.5})
        assert m == {"error": {"code": 2, "msg": "Invalid request: request ID must be an unsigned integer"}, "id": None}
        m = await reply(ws, {"method": "LIST_SUBSCRIPTIONS", "id": "x" * 37})
        assert m["id"] is None and m["error"]["code"] == 2
        m = await reply(ws, {"method": "SUBSCRIBE", "params": ["not a stream"], "id": 6})
        assert m == {"error": {"code": 2, "msg": "Invalid request: invalid stream"}, "id": 6}
        assert await reply(ws, {"method": "SET_PROPERTY", "params": ["combined", "yes"], "id": 7}) == {
            "error": {"code": 1, "msg": "Invalid value type: expected Boolean"},
            "id": 7,
        }
        assert await reply(ws, {"method": "GET_PROPERTY", "params": ["colour"], "id": 8}) == {
            "error": {"code": 0, "msg": "Unknown property"},
            "id": 8,
        }
        assert await reply(ws, {"method": "GET_PROPERTY", "params": [5], "id": 9}) == {
            "error": {"code": 2, "msg": "Invalid request: property name must be a string"},
            "id": 9,
        }
        assert await reply(ws, {"method": "SET_PROPERTY", "params": ["combined", True, 1], "id": 10}) == {
            "error": {"code": 2, "msg": "Invalid request: too many parameters"},
            "id": 10,
        }
        # the connection survives every error
        assert await reply(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 11}) == {"result": [], "id": 11}


# ---------------------------------------------------------------------------------------------
# limits, keepalive, lifetime


async def test_six_messages_in_a_second_close_1008(connect):
    async with BinanceSimulator(seed=1, rate=50, warmup=0.1) as sim:
        async with connect(sim.url + "/ws") as ws:
            for i in range(5):
                await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
            for _ in range(5):
                assert "result" in await recv_json(ws)
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 5}))
            with pytest.raises(ConnectionClosed):
                await recv_json(ws)
            assert ws.close_code == 1008 and ws.close_reason == "Too many requests"
        # spaced messages are fine; streams named in the URL cost nothing
        async with connect(
            sim.url + "/stream?streams=" + "/".join(f"btcusdt@kline_{i}" for i in ("1m", "5m", "1h", "1d", "1w", "1M"))
        ) as ws:
            for i in range(4):
                assert (await reply(ws, {"method": "LIST_SUBSCRIPTIONS", "id": i}))["id"] == i
            await asyncio.sleep(1.05)
            for i in range(4):
                assert (await reply(ws, {"method": "LIST_SUBSCRIPTIONS", "id": i}))["id"] == i


async def test_pings_count_toward_the_message_limit(connect):
    async with BinanceSimulator(seed=1, rate=50, warmup=0.1) as sim:
        async with connect(sim.url + "/ws") as ws:
            for _ in range(6):
                await ws.ping()
            await asyncio.wait_for(ws.wait_closed(), 2)
            assert ws.close_code == 1008


async def test_stream_limit_per_connection(connect):
    async with BinanceSimulator(seed=1, rate=50, warmup=0.1, max_streams=3, msg_limit=None) as sim:
        with pytest.raises(InvalidStatus) as e:
            async with connect(sim.url + "/stream?streams=a@trade/b@trade/c@trade/d@trade"):
                pass
        assert e.value.response.status_code == 400
        async with connect(sim.url + "/stream?streams=btcusdt@trade/ethusdt@trade") as ws:
            m = await reply(ws, {"method": "SUBSCRIBE", "params": ["solusdt@trade", "bnbusdt@trade"], "id": 1})
            assert m["error"]["code"] == 2 and "too many" in m["error"]["msg"]
            assert await reply(ws, {"method": "SUBSCRIBE", "params": ["solusdt@trade"], "id": 2}) == {"result": None, "id": 2}


async def test_server_pings_and_closes_without_pong(connect):
    # pongs count toward the 5 messages/s limit: with pings every 0.1 s it must be off here
    async with BinanceSimulator(seed=1, rate=50, warmup=0.1, ping_interval=0.1, pong_timeout=0.35, msg_limit=None) as sim:
        # a normal client answers pings (websockets does it by itself) and stays connected
        async with connect(sim.url + "/ws") as alive:
            await asyncio.sleep(0.8)
            assert (await reply(alive, {"method": "LIST_SUBSCRIPTIONS", "id": 1}))["result"] == []
            conn = sim.history[0]
            assert conn.received_frames["pong"] >= 5 and conn.close_code is None
        # a client that stops reading never pongs: the server gives up after pong_timeout
        async with connect(sim.url + "/ws") as deaf:
            deaf.transport.pause_reading()
            conn = (await sim.wait_for_connections(2))[1]
            async with asyncio.timeout(2):
                while conn in sim.connections:
                    await asyncio.sleep(0.05)
            assert conn.close_code == 1011
            deaf.transport.resume_reading()
            await asyncio.wait_for(deaf.wait_closed(), 2)


async def test_connection_lifetime(connect):
    async with BinanceSimulator(seed=1, rate=200, warmup=0.1, faults=Faults(lifetime=0.3)) as sim:
        async with connect(sim.url + "/ws/btcusdt@trade") as ws:
            t0 = time.monotonic()
            with pytest.raises(ConnectionClosed):
                while True:
                    await recv_json(ws)
            assert 0.25 < time.monotonic() - t0 < 1.5
            assert ws.close_code == 1000  # a clean close, like the 24 h cut


async def test_server_shutdown_notice(sim, connect):
    async with connect(sim.url + "/ws") as raw, connect(sim.url + "/stream") as comb:
        await sim.wait_for_connections(2)
        sim.server_shutdown()
        r = await recv_json(raw)
        c = await recv_json(comb)
    assert r["e"] == "serverShutdown" and len(str(r["E"])) == 13
    assert c["stream"] == "!serverShutdown" and c["data"]["e"] == "serverShutdown"


# ---------------------------------------------------------------------------------------------
# faults


async def test_drop_after_n_frames_without_close_frame(connect):
    async with BinanceSimulator(seed=1, rate=400, warmup=0.1, faults=Faults(drop_after=25)) as sim:
        async with connect(sim.url + "/ws/btcusdt@bookTicker") as ws:
            got = []
            with pytest.raises(ConnectionClosed) as e:
                while True:
                    got.append(await recv_json(ws))
        assert len(got) == 25
        assert e.value.rcvd is None  # abrupt: no close frame
        conn = sim.history[0]
        assert conn.sent == 25 and conn.sent_by_stream["btcusdt@bookTicker"] == 25


async def test_malformed_frames_every_n_and_on_demand(connect):
    async with BinanceSimulator(seed=1, rate=400, warmup=0.1, faults=Faults(malformed_every=4)) as sim:
        async with connect(sim.url + "/ws/btcusdt@bookTicker") as ws:
            frames = [await asyncio.wait_for(ws.recv(), 2) for _ in range(15)]
            bad = [i for i, f in enumerate(frames) if not _is_json(f)]
            assert bad == [4, 9, 14]
            sim.faults.malformed_every = None
            sim.inject_malformed(b"\x00garbage")
            frames = [await asyncio.wait_for(ws.recv(), 2) for _ in range(30)]
            assert sum(not _is_json(f) for f in frames) == 1
        assert sim.history[0].malformed_sent == 4


def _is_json(frame: str | bytes) -> bool:
    try:
        json.loads(frame)
        return True
    except ValueError:
        return False


async def test_stall_keeps_tcp_open_but_sends_nothing(sim, connect):
    async with connect(sim.url + "/ws/btcusdt@bookTicker") as ws:
        await recv_json(ws)
        conn = (await sim.wait_for_connections(1))[0]
        conn.stall()
        await asyncio.sleep(0.05)
        while True:  # drain what was already on the wire
            try:
                await asyncio.wait_for(ws.recv(), 0.1)
            except TimeoutError:
                break
        pong = await ws.ping()
        done, _ = await asyncio.wait({pong}, timeout=0.4)
        assert not done  # not even pongs
        assert ws.state is websockets.State.OPEN and conn in sim.connections
        assert conn.discarded > 0
        conn.resume()
        await asyncio.wait_for(pong, 1)
        assert "u" in await recv_json(ws)


async def test_rejected_connections(sim, connect):
    sim.faults.reject_connections(0.3, status=503)
    with pytest.raises(InvalidStatus) as e:
        async with connect(sim.url + "/ws"):
            pass
    assert e.value.response.status_code == 503
    status, _, _ = await http_get(sim.rest_url + "/api/v3/ping")
    assert status == 200  # REST is not affected
    await asyncio.sleep(0.35)
    async with connect(sim.url + "/ws") as ws:
        assert (await reply(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 1}))["result"] == []
    assert sim.rejected_upgrades == 1


async def test_withheld_trades_make_a_gap_that_rest_history_fills(sim, connect):
    async with connect(sim.url + "/stream?streams=btcusdt@trade/btcusdt@aggTrade") as ws:
        first = await recv_until(ws, lambda m: m["stream"] == "btcusdt@trade")
        sim.faults.withhold_trades(5, "BTCUSDT")
        trades, aggs = [first["data"]], []
        async with asyncio.timeout(4):
            while len(trades) < 40:
                m = await recv_json(ws)
                (trades if m["stream"] == "btcusdt@trade" else aggs).append(m["data"])
    ids = [t["t"] for t in trades]
    withheld = sim.faults.withheld["BTCUSDT"]
    assert len(withheld) == 5 and withheld == list(range(withheld[0], withheld[0] + 5))
    assert not set(withheld) & set(ids)
    assert sorted(set(range(ids[0], ids[-1] + 1)) - set(ids)) == withheld
    for a in aggs:  # aggregates covering a withheld trade are withheld too
        assert not any(a["f"] <= i <= a["l"] for i in withheld)
    status, _, rows = await http_get(f"{sim.rest_url}/api/v3/historicalTrades?symbol=BTCUSDT&fromId={withheld[0]}&limit=5")
    assert status == 200 and [r["id"] for r in rows] == withheld


# ---------------------------------------------------------------------------------------------
# streams: klines, depth


async def test_kline_updates_and_final_bar(sim, connect):
    async with connect(sim.url + "/ws/btcusdt@kline_1s") as ws:
        msgs = []
        final = None
        async with asyncio.timeout(4):
            while final is None or len(msgs) < 2:
                m = await recv_json(ws)
                assert m["e"] == "kline" and m["k"]["i"] == "1s"
                msgs.append(m)
                if m["k"]["x"] and final is None:
                    final = m
        after = await recv_until(ws, lambda m: m["k"]["t"] > final["k"]["t"])
    k = final["k"]
    assert k["T"] == k["t"] + 999
    bar = next(b for b in sim.market.bars("BTCUSDT", "1s", start_ns=k["t"] * 10**6, limit=1))
    spec = sim.market.spec("BTCUSDT")
    assert bar.open_ns == k["t"] * 10**6
    assert (k["o"], k["h"], k["l"], k["c"]) == tuple(spec.fmt_price(p, 8) for p in (bar.open, bar.high, bar.low, bar.close))
    assert (k["v"], k["n"], k["f"], k["L"]) == (spec.fmt_qty(bar.volume, 8), bar.count, bar.first_id, bar.last_id)
    assert after["k"]["x"] is False or after["k"]["t"] > k["t"]


async def test_partial_depth_is_top_n_of_the_book(sim, connect):
    async with connect(sim.url + "/stream?streams=ethusdt@depth10@100ms/ethusdt@depth5") as ws:
        m = await recv_until(ws, lambda m: m["stream"] == "ethusdt@depth10@100ms")
        d = m["data"]
        assert set(d) == {"lastUpdateId", "bids", "asks"}  # no symbol, no event type
        assert len(d["bids"]) == 10 and len(d["asks"]) == 10
        bids = [float(p) for p, _ in d["bids"]]
        assert bids == sorted(bids, reverse=True) and bids[0] < float(d["asks"][0][0])
        m = await recv_until(ws, lambda m: m["stream"] == "ethusdt@depth5", timeout=2.5)
        assert len(m["data"]["bids"]) == 5


async def test_rest_snapshot_plus_diff_stream_rebuilds_the_market_book(sim, connect):
    """The documented procedure (buffer, snapshot, drop u<=lastUpdateId, U<=id+1<=u, chain U==u+1)
    gives exactly the market's book at the last applied update id."""
    async with connect(sim.url + "/ws/btcusdt@depth@100ms") as ws:
        buffered = [await recv_json(ws)]
        _, _, snap = await http_get(sim.rest_url + "/api/v3/depth?symbol=BTCUSDT&limit=5000")
        assert snap["lastUpdateId"] >= buffered[0]["U"]
        async with asyncio.timeout(3):
            while buffered[-1]["u"] < snap["lastUpdateId"] + 20:
                buffered.append(await recv_json(ws))
    last = snap["lastUpdateId"]
    bids = {p: q for p, q in snap["bids"]}
    asks = {p: q for p, q in snap["asks"]}
    events = [e for e in buffered if e["u"] > last]
    assert events[0]["U"] <= last + 1 <= events[0]["u"]
    for e in events:
        assert e["e"] == "depthUpdate" and e["s"] == "BTCUSDT"
        assert e["U"] <= last + 1  # chained: no gap
        for side, book in (("b", bids), ("a", asks)):
            for p, q in e[side]:
                if float(q) == 0:
                    book.pop(p, None)
                else:
                    book[p] = q
        last = e["u"]
    # the same market, regenerated from its seed, at update id `last`
    twin = SyntheticMarket(
        sim.market.seed, [sim.market.spec(s) for s in sim.market.symbols], sim.market.rate, t0_ns=sim.market.t0_ns
    )
    while twin.book("BTCUSDT").update_id < last:
        twin.take(1)
    spec = twin.spec("BTCUSDT")
    assert twin.book("BTCUSDT").update_id == last
    assert sorted(bids.items(), key=lambda kv: -float(kv[0])) == [
        (spec.fmt_price(p, 8), spec.fmt_qty(q, 8)) for p, q in twin.book("BTCUSDT").bids()
    ]
    assert sorted(asks.items(), key=lambda kv: float(kv[0])) == [
        (spec.fmt_price(p, 8), spec.fmt_qty(q, 8)) for p, q in twin.book("BTCUSDT").asks()
    ]


async def test_book_ticker_update_ids_share_the_depth_id_space(sim, connect):
    async with connect(sim.url + "/stream?streams=solusdt@bookTicker/solusdt@depth@100ms") as ws:
        bt = await recv_until(ws, lambda m: m["stream"] == "solusdt@bookTicker")
        d = await recv_until(ws, lambda m: m["stream"] == "solusdt@depth@100ms")
    assert abs(bt["data"]["u"] - d["data"]["u"]) < 10_000
    assert sim.market.spec("SOLUSDT").first_update_id <= bt["data"]["u"] <= sim.market.book("SOLUSDT").update_id


# ---------------------------------------------------------------------------------------------
# determinism


async def test_same_seed_same_tape_on_the_wire(connect):
    """Two simulators with one seed stream the same trades (ids, prices, sizes, sides)."""
    tapes = []
    for _ in range(2):
        async with BinanceSimulator(seed=42, rate=300, warmup=0.0, symbols=["BTCUSDT", "XRPUSDT"]) as sim:
            async with connect(sim.url + "/ws/xrpusdt@trade") as ws:
                got = [await recv_json(ws) for _ in range(15)]
            tapes.append(got)
    a, b = ([(m["t"], m["p"], m["q"], m["m"]) for m in tape] for tape in tapes)
    # both started at the market's beginning; the first trade seen depends on connect time
    common = sorted(set(a) & set(b))
    assert len(common) >= 5
    start = max(a[0][0], b[0][0])
    assert [x for x in a if x[0] >= start][:5] == [x for x in b if x[0] >= start][:5]


# ---------------------------------------------------------------------------------------------
# REST


async def test_rest_endpoints(sim):
    base = sim.rest_url + "/api/v3"
    status, headers, body = await http_get(base + "/ping")
    assert (status, body) == (200, {}) and headers["Content-Type"] == "application/json"
    assert "X-MBX-USED-WEIGHT-1M" in headers
    _, _, body = await http_get(base + "/time")
    assert abs(body["serverTime"] / 1000 - time.time()) < 2

    _, _, info = await http_get(base + "/exchangeInfo?symbol=BTCUSDT")
    (s,) = info["symbols"]
    assert (s["symbol"], s["status"], s["baseAsset"], s["quoteAsset"]) == ("BTCUSDT", "TRADING", "BTC", "USDT")
    filters = {f["filterType"]: f for f in s["filters"]}
    assert filters["PRICE_FILTER"]["tickSize"] == "0.01000000" and filters["LOT_SIZE"]["stepSize"] == "0.00001000"
    _, _, info = await http_get(base + '/exchangeInfo?symbols=["ETHUSDT","SOLUSDT"]')
    assert [x["symbol"] for x in info["symbols"]] == ["ETHUSDT", "SOLUSDT"]
    _, _, info = await http_get(base + "/exchangeInfo")
    assert len(info["symbols"]) == 4
    for url in (base + "/exchangeInfo?symbol=NOPE", base + "/depth?symbol=NOPE", base + "/klines?symbol=btcusdt&interval=1m"):
        status, _, body = await http_get(url)
        assert (status, body) == (400, {"code": -1121, "msg": "Invalid symbol."})
    status, _, body = await http_get(base + "/trades")
    assert status == 400 and body["code"] == -1102

    _, _, depth = await http_get(base + "/depth?symbol=ETHUSDT&limit=5")
    assert len(depth["bids"]) == 5 and depth["lastUpdateId"] <= sim.market.book("ETHUSDT").update_id

    _, _, trades = await http_get(base + "/trades?symbol=ETHUSDT&limit=7")
    assert len(trades) == 7 and set(trades[0]) == {"id", "price", "qty", "quoteQty", "time", "isBuyerMaker", "isBestMatch"}
    first = sim.market.trades("ETHUSDT")[0].trade_id
    _, _, hist = await http_get(f"{base}/historicalTrades?symbol=ETHUSDT&fromId={first + 3}&limit=2000")
    ids = [t["id"] for t in hist]
    assert ids[0] == first + 3 and ids == list(range(ids[0], ids[0] + len(ids))) and len(ids) <= 1000

    _, _, aggs = await http_get(base + "/aggTrades?symbol=ETHUSDT&limit=3")
    assert len(aggs) == 3 and set(aggs[0]) == {"a", "p", "q", "f", "l", "T", "m", "M"}
    _, _, again = await http_get(f"{base}/aggTrades?symbol=ETHUSDT&fromId={aggs[0]['a']}&limit=3")
    assert again == aggs
    _, _, by_time = await http_get(f"{base}/aggTrades?symbol=ETHUSDT&startTime={aggs[0]['T']}&limit=1")
    assert by_time[0]["T"] >= aggs[0]["T"]

    _, _, kl = await http_get(base + "/klines?symbol=ETHUSDT&interval=1s&limit=3")
    assert 1 <= len(kl) <= 3 and len(kl[0]) == 12 and kl[0][6] == kl[0][0] + 999
    status, _, body = await http_get(base + "/klines?symbol=ETHUSDT&interval=2m")
    assert (status, body) == (400, {"code": -1120, "msg": "Invalid interval."})
    _, _, kl = await http_get(base + "/klines?symbol=ETHUSDT&interval=1d&timeZone=8")
    assert (kl[0][0] // 1000 + 8 * 3600) % 86400 == 0  # days open at 00:00 UTC+8

    _, _, trades_us = await http_get(base + "/trades?symbol=ETHUSDT&limit=1", {"X-MBX-TIME-UNIT": "MICROSECOND"})
    assert len(str(trades_us[0]["time"])) == 16
    status, _, _ = await http_get(sim.rest_url + "/api/v3/nothing")
    assert status == 404


async def test_rest_faults(sim):
    base = sim.rest_url + "/api/v3"
    sim.faults.rate_limit(2, retry_after=7)
    for _ in range(2):
        status, headers, body = await http_get(base + "/ping")
        assert status == 429 and headers["Retry-After"] == "7" and body["code"] == -1003
    assert (await http_get(base + "/ping"))[0] == 200
    sim.faults.rate_limit(1, retry_after=120, status=418)
    status, headers, body = await http_get(base + "/ping")
    assert status == 418 and body["code"] == -1003 and "banned until" in body["msg"]
    sim.faults.outage(n=1, status=503)
    status, _, body = await http_get(base + "/time")
    assert status == 503 and body["code"] == -1001
    assert (await http_get(base + "/time"))[0] == 200
    sim.faults.page_limit = 10
    _, _, rows = await http_get(base + "/historicalTrades?symbol=BTCUSDT&limit=1000")
    assert len(rows) == 10
    log = sim.rest_log
    assert [s for _, _, s in log[:3]] == [429, 429, 200]


async def test_weight_limit_answers_429():
    # an hour-long window so the test cannot straddle a window boundary
    async with BinanceSimulator(seed=1, rate=50, warmup=0.1, weight_limit=30, weight_window=3600) as sim:
        for _ in range(5):
            assert (await http_get(sim.rest_url + "/api/v3/ping"))[0] == 200  # weight 1 each
        assert (await http_get(sim.rest_url + "/api/v3/exchangeInfo"))[0] == 200  # 20
        status, headers, _ = await http_get(sim.rest_url + "/api/v3/depth?symbol=BTCUSDT")  # 5: 30 in all
        assert status == 200 and headers["X-MBX-USED-WEIGHT-1M"] == "30"
        status, headers, body = await http_get(sim.rest_url + "/api/v3/ping")
        assert status == 429 and body["code"] == -1003 and int(headers["Retry-After"]) > 0
        assert headers["X-MBX-USED-WEIGHT-1M"] == "31"
