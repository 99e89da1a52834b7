"""The Alpaca simulator against plain WebSocket clients and against alpaca-py, the
official SDK (its ``StockDataStream``/``CryptoDataStream`` with ``url_override``)."""

from __future__ import annotations

import asyncio
import json
import warnings

import msgspec
import pytest
import websockets

from tests.sim.sim_helpers import http_get
from wrdata.sim.alpaca import AlpacaSimulator, rfc3339
from wrdata.sim.stocks import session_of
from wrdata.streaming.alpaca import msgpack_ts_ns, rfc3339_ns


@pytest.fixture
async def sim():
    async with AlpacaSimulator(seed=4, rate=600, crypto_rate=200, hours="always", warmup=0.3, auth_timeout=0.5) as s:
        yield s


def connect(url: str, msgpack: bool = False):
    headers = {"Content-Type": "application/msgpack"} if msgpack else None
    return websockets.connect(url, additional_headers=headers, compression=None, ping_interval=None)


async def recv(ws, timeout: float = 3.0):
    raw = await asyncio.wait_for(ws.recv(), timeout)
    return msgspec.msgpack.decode(raw) if isinstance(raw, bytes) else json.loads(raw)


async def send(ws, msg: dict, msgpack: bool = False) -> None:
    await ws.send(msgspec.msgpack.encode(msg) if msgpack else json.dumps(msg))


async def login(ws, msgpack: bool = False, key: str = "test", secret: str = "test"):
    assert await recv(ws) == [{"T": "success", "msg": "connected"}]
    await send(ws, {"action": "auth", "key": key, "secret": secret}, msgpack)
    return await recv(ws)


async def until(ws, pred, timeout: float = 5.0):
    async with asyncio.timeout(timeout):
        while True:
            for item in await recv(ws, timeout):
                if pred(item):
                    return item


async def test_handshake_subscription_ack_and_data_json(sim):
    async with connect(sim.url + "/v2/sip") as ws:
        assert await login(ws) == [{"T": "success", "msg": "authenticated"}]
        await send(ws, {"action": "subscribe", "trades": ["AAPL"], "quotes": ["MSFT"], "bars": ["*"]})
        ack, = await recv(ws)
        assert ack == {"T": "subscription", "trades": ["AAPL"], "quotes": ["MSFT"], "bars": ["*"], "updatedBars": [],
                       "dailyBars": [], "statuses": [], "lulds": [], "corrections": ["AAPL"], "cancelErrors": ["AAPL"],
                       "imbalances": []}
        t = await until(ws, lambda i: i["T"] == "t")
        assert t["S"] == "AAPL" and set(t) == {"T", "S", "i", "x", "p", "s", "c", "z", "t"} and t["z"] == "C"
        assert t["c"][0] == "@" and isinstance(t["s"], int)
        assert t["t"].endswith("Z") and rfc3339_ns(t["t"]) > 0
        q = await until(ws, lambda i: i["T"] == "q")
        assert q["S"] == "MSFT" and q["bp"] < q["ap"] and q["bs"] >= 1
        await send(ws, {"action": "unsubscribe", "trades": ["AAPL"]})
        ack = await until(ws, lambda i: i["T"] == "subscription")
        assert ack["trades"] == [] and ack["corrections"] == [] and ack["quotes"] == ["MSFT"]


async def test_msgpack_framing_by_content_type(sim):
    async with connect(sim.url + "/v2/iex", msgpack=True) as ws:
        first = await ws.recv()
        assert isinstance(first, bytes) and msgspec.msgpack.decode(first) == [{"T": "success", "msg": "connected"}]
        await send(ws, {"action": "auth", "key": "test", "secret": "test"}, True)
        assert await recv(ws) == [{"T": "success", "msg": "authenticated"}]
        await send(ws, {"action": "subscribe", "quotes": ["NVDA"]}, True)
        await recv(ws)
        raw = await ws.recv()
        items = msgspec.msgpack.Decoder(list[dict[str, msgspec.Raw]]).decode(raw)
        q = next(i for i in items if bytes(i["T"]) == msgspec.msgpack.encode("q"))
        assert bytes(q["t"])[:3] == b"\xc7\x0c\xff", "a Timestamp extension (type -1) with nanoseconds"
        assert msgpack_ts_ns(q["t"]) > 1_600_000_000 * 10**9
        assert msgspec.msgpack.decode(q["bx"]) == "V", "the IEX feed quotes IEX"


async def test_iex_feed_carries_only_iex_prints(sim):
    async with connect(sim.url + "/v2/iex") as ws:
        await login(ws)
        await send(ws, {"action": "subscribe", "trades": ["*"]})
        await recv(ws)
        for _ in range(3):
            t = await until(ws, lambda i: i["T"] == "t", timeout=10)
            assert t["x"] == "V"


@pytest.mark.parametrize("case, code", [
    ("bad secret", 402), ("subscribe first", 401), ("twice", 403), ("silent", 404), ("garbage", 400),
    ("channel", 410), ("symbol", 400),
])
async def test_documented_errors(sim, case, code):
    async with connect(sim.url + "/v2/sip") as ws:
        assert await recv(ws) == [{"T": "success", "msg": "connected"}]
        if case == "bad secret":
            await send(ws, {"action": "auth", "key": "test", "secret": "nope"})
        elif case == "subscribe first":
            await send(ws, {"action": "subscribe", "trades": ["AAPL"]})
        elif case == "garbage":
            await ws.send("{not json")
        elif case == "silent":
            pass  # the auth timeout (0.5 s here)
        else:
            await send(ws, {"action": "auth", "key": "test", "secret": "test"})
            await recv(ws)
            await send(ws, {"action": "auth", "key": "test", "secret": "test"} if case == "twice"
                       else {"action": "subscribe", "orderbooks": ["AAPL"]} if case == "channel"
                       else {"action": "subscribe", "trades": ["aapl lower"]})
        err, = await recv(ws)
        assert err["T"] == "error" and err["code"] == code and err["msg"] == {
            400: "invalid syntax", 401: "not authenticated", 402: "auth failed", 403: "already authenticated",
            404: "auth timeout", 410: "invalid subscribe action for this feed"}[code]
        if code in (402, 404):
            with pytest.raises(websockets.ConnectionClosed):
                await recv(ws)


async def test_connection_limit_and_plan(sim):
    async with connect(sim.url + "/v2/sip") as first:
        assert (await login(first))[0]["msg"] == "authenticated"
        async with connect(sim.url + "/v2/sip") as second:
            assert await login(second) == [{"T": "error", "code": 406, "msg": "connection limit exceeded"}]
        async with connect(sim.url + "/v2/iex") as other_feed:  # a separate endpoint has its own slot
            assert (await login(other_feed))[0]["msg"] == "authenticated"
    async with AlpacaSimulator(hours="always", feeds={"iex"}, warmup=0.1) as plan:
        async with connect(plan.url + "/v2/sip") as ws:
            assert await login(ws) == [{"T": "error", "code": 409, "msg": "insufficient subscription"}]


async def test_dropped_session_holds_its_slot_for_reap_after():
    async with AlpacaSimulator(hours="always", warmup=0.1, reap_after=60) as sim:
        async with connect(sim.url + "/v2/sip") as ws:
            await login(ws)
            sim.drop_all()  # gone without a close handshake
        async with connect(sim.url + "/v2/sip") as ws:
            assert (await login(ws))[0]["code"] == 406


async def test_symbol_limit(sim):
    sim.symbol_limit = 2
    async with connect(sim.url + "/v2/sip") as ws:
        await login(ws)
        await send(ws, {"action": "subscribe", "trades": ["AAPL", "MSFT"]})
        assert (await recv(ws))[0]["trades"] == ["AAPL", "MSFT"]
        await send(ws, {"action": "subscribe", "quotes": ["TSLA"], "bars": ["NVDA"]})
        assert await recv(ws) == [{"T": "error", "code": 405, "msg": "symbol limit exceeded"}]
        await send(ws, {"action": "subscribe", "quotes": ["AAPL"]})  # same symbols: within the limit
        assert (await recv(ws))[0]["quotes"] == ["AAPL"]


async def test_crypto_endpoint(sim):
    async with connect(sim.url + "/v1beta3/crypto/us") as ws:
        await login(ws)
        await send(ws, {"action": "subscribe", "trades": ["BTC/USD"], "orderbooks": ["ETH/USD"]})
        ack, = await recv(ws)
        assert ack == {"T": "subscription", "trades": ["BTC/USD"], "quotes": [], "orderbooks": ["ETH/USD"], "bars": [],
                       "updatedBars": [], "dailyBars": []}
        book = await until(ws, lambda i: i["T"] == "o")
        assert book["r"] is True and len(book["b"]) > 10 and book["b"][0]["p"] < book["a"][0]["p"]
        delta = await until(ws, lambda i: i["T"] == "o")
        assert "r" not in delta
        t = await until(ws, lambda i: i["T"] == "t")
        assert set(t) == {"T", "S", "p", "s", "t", "i", "tks"} and t["tks"] in ("B", "S")
        await send(ws, {"action": "subscribe", "statuses": ["BTC/USD"]})
        assert (await until(ws, lambda i: i["T"] == "error"))["code"] == 410


async def test_test_stream_serves_fakepaca(sim):
    async with connect(sim.url + "/v2/test") as ws:
        await login(ws)
        await send(ws, {"action": "subscribe", "trades": ["FAKEPACA"], "quotes": ["FAKEPACA"]})
        await recv(ws)
        t = await until(ws, lambda i: i["T"] == "t", timeout=10)
        assert t["S"] == "FAKEPACA"


async def test_halt_and_resume_status(sim):
    async with connect(sim.url + "/v2/sip") as ws:
        await login(ws)
        await send(ws, {"action": "subscribe", "statuses": ["AAPL"]})
        await recv(ws)
        sim.halt("AAPL")
        s = await until(ws, lambda i: i["T"] == "s")
        assert (s["S"], s["sc"], s["sm"], s["rc"]) == ("AAPL", "H", "Trading Halt", "T12")
        sim.resume("AAPL")
        assert (await until(ws, lambda i: i["T"] == "s"))["sc"] == "T"


async def test_unknown_path_and_assets(sim):
    status, _, _ = await http_get(sim.rest_url + "/v2/nope")
    assert status == 404
    with pytest.raises(websockets.InvalidStatus) as e:
        async with connect(sim.url + "/v2/nope"):
            pass
    assert e.value.response.status_code == 404
    status, _, body = await http_get(sim.rest_url + "/v2/assets?status=active&asset_class=us_equity")
    assert status == 401 and body["message"] == "request is not authorized"
    hdrs = {"APCA-API-KEY-ID": "test", "APCA-API-SECRET-KEY": "test"}
    status, _, body = await http_get(sim.rest_url + "/v2/assets?status=active&asset_class=us_equity", hdrs)
    assert status == 200 and {"AAPL", "NVDA", "BRK.B"} <= {a["symbol"] for a in body}
    assert all(a["class"] == "us_equity" and a["status"] == "active" for a in body)
    status, _, body = await http_get(sim.rest_url + "/v2/assets?asset_class=crypto", hdrs)
    assert "BTC/USD" in {a["symbol"] for a in body}


def test_us_trading_hours_shape_the_tape():
    """Stocks are quiet at weekends and overnight, busiest in regular hours; pre-market
    prints carry the extended-hours condition (deterministic: market time, no wall clock)."""

    def events(start: str, seconds: int) -> list:
        sim = AlpacaSimulator(hours="us", start_et=start, rate=100, warmup=0)
        sim.market.start(0)
        return sim.market.advance(seconds * 10**9)

    assert events("2026-11-21T12:00:00", 3600) == [], "Saturday"
    assert events("2026-11-23T02:00:00", 3600) == [], "Monday 02:00, closed"
    regular = events("2026-11-23T11:00:00", 600)
    pre = events("2026-11-23T05:00:00", 600)
    assert len(regular) > 5 * len(pre) > 0
    start = AlpacaSimulator(hours="us", start_et="2026-11-23T09:25:00", rate=100, warmup=0)
    start.market.start(0)
    evs = start.market.advance(600 * 10**9)
    assert evs and evs[0].offset_ns < 300 * 10**9 < evs[-1].offset_ns, "trading runs through the open"


def test_sessions_and_rfc3339():
    ns = 1763994600 * 10**9  # 2025-11-24 14:30 UTC = 09:30 ET, a Monday
    assert session_of(ns) == "regular" and session_of(ns - 1) == "pre" and session_of(ns + 6 * 3600 * 10**9 + 30 * 60 * 10**9) == "post"
    assert rfc3339(1680782066838232225) == "2023-04-06T11:54:26.838232225Z"
    assert rfc3339(1680782066830000000) == "2023-04-06T11:54:26.83Z" and rfc3339(1614021300 * 10**9) == "2021-02-22T19:15:00Z"


# -- the official SDK ---------------------------------------------------------------------------------

async def _run_sdk(stream, until_pred, timeout: float = 15.0) -> None:
    task = asyncio.create_task(stream._run_forever())
    try:
        async with asyncio.timeout(timeout):
            while not until_pred():
                if task.done():
                    task.result()
                await asyncio.sleep(0.02)
    finally:
        await stream.stop_ws()
        await asyncio.wait_for(task, 5)


async def test_alpaca_py_stock_stream_msgpack(sim):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # alpaca-py uses websockets.legacy
        from alpaca.data.live import StockDataStream
        from alpaca.data.models import Quote, Trade

        trades: list = []
        quotes: list = []
        stream = StockDataStream("test", "test", url_override=sim.url + "/v2/sip")

        async def on_trade(t):
            trades.append(t)

        async def on_quote(q):
            quotes.append(q)

        stream.subscribe_trades(on_trade, "AAPL", "NVDA")
        stream.subscribe_quotes(on_quote, "MSFT")
        await _run_sdk(stream, lambda: len(trades) >= 10 and len(quotes) >= 5)
    assert all(isinstance(t, Trade) and t.symbol in ("AAPL", "NVDA") and t.price > 0 and t.size > 0 for t in trades)
    assert all(isinstance(q, Quote) and q.symbol == "MSFT" and q.bid_price < q.ask_price for q in quotes)
    assert trades[0].timestamp.tzinfo is not None
    assert sim.history[0].variant == "msgpack", "alpaca-py speaks MessagePack (its Content-Type header)"
    assert sim.history[0].received_frames["binary"] >= 2


async def test_alpaca_py_crypto_stream_and_test_feed(sim):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from alpaca.data.live import CryptoDataStream, StockDataStream

        got: list = []
        crypto = CryptoDataStream("test", "test", url_override=sim.url + "/v1beta3/crypto/us")

        async def on_trade(t):
            got.append(t)

        crypto.subscribe_trades(on_trade, "BTC/USD")
        await _run_sdk(crypto, lambda: len(got) >= 5)
        assert {t.symbol for t in got} == {"BTC/USD"}

        fake: list = []
        test_feed = StockDataStream("test", "test", url_override=sim.url + "/v2/test")

        async def on_fake(t):
            fake.append(t)

        test_feed.subscribe_trades(on_fake, "FAKEPACA")
        await _run_sdk(test_feed, lambda: len(fake) >= 2)
        assert fake[0].symbol == "FAKEPACA"


async def test_alpaca_py_is_refused_with_the_venue_error(sim, caplog):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from alpaca.data.live import StockDataStream

        stream = StockDataStream("test", "wrong", url_override=sim.url + "/v2/sip")

        async def on_trade(t):
            pass

        stream.subscribe_trades(on_trade, "AAPL")
        await _run_sdk(stream, lambda: any("auth failed" in r.getMessage() for r in caplog.records), timeout=10)
