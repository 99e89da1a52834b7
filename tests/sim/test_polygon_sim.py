"""The Polygon (Massive) simulator against plain WebSocket clients and against the
official ``massive`` client (``WebSocketClient(feed="127.0.0.1:<port>", secure=False)``)."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets

from wrdata.sim.faults import Faults
from wrdata.sim.polygon import PolygonSimulator


@pytest.fixture
async def sim():
    async with PolygonSimulator(seed=3, rate=800, crypto_rate=300, hours="always", warmup=0.3, auth_timeout=0.5) as s:
        yield s


def connect(url: str):
    return websockets.connect(url, compression=None, ping_interval=None)


async def recv(ws, timeout: float = 3.0) -> list:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def login(ws, key: str = "test") -> list:
    assert await recv(ws) == [{"ev": "status", "status": "connected", "message": "Connected Successfully"}]
    await ws.send(json.dumps({"action": "auth", "params": key}))
    return await recv(ws)


async def until(ws, pred, timeout: float = 5.0) -> dict:
    async with asyncio.timeout(timeout):
        while True:
            for e in await recv(ws, timeout):
                if pred(e):
                    return e


async def test_handshake_acks_and_batched_arrays(sim):
    async with connect(sim.url + "/stocks") as ws:
        assert await login(ws) == [{"ev": "status", "status": "auth_success", "message": "authenticated"}]
        await ws.send(json.dumps({"action": "subscribe", "params": "T.*,Q.AAPL,A.*"}))
        acks = [(await recv(ws))[0]["message"] for _ in range(3)]
        assert acks == ["subscribed to: T.*", "subscribed to: Q.AAPL", "subscribed to: A.*"]
        sizes = []
        kinds = set()
        async with asyncio.timeout(5):
            while len(sizes) < 40 or "A" not in kinds:
                frame = await recv(ws)
                sizes.append(len(frame))
                kinds |= {e["ev"] for e in frame}
        assert max(sizes) > 1, "busy frames carry several events"
        assert kinds >= {"T", "Q", "A"}
        await ws.send(json.dumps({"action": "unsubscribe", "params": "T.*"}))
        await until(ws, lambda e: e.get("message") == "unsubscribed to: T.*")


async def test_event_fields(sim):
    async with connect(sim.url + "/stocks") as ws:
        await login(ws)
        await ws.send(json.dumps({"action": "subscribe", "params": "T.NVDA,Q.NVDA"}))
        t = await until(ws, lambda e: e["ev"] == "T")
        assert {"sym", "x", "i", "z", "p", "s", "t", "q"} <= set(t) and isinstance(t["i"], str) and t["z"] == 3
        assert isinstance(t["t"], int) and t["t"] > 1_600_000_000_000 and all(isinstance(c, int) for c in t.get("c", []))
        q = await until(ws, lambda e: e["ev"] == "Q")
        assert {"sym", "bx", "bp", "bs", "ax", "ap", "as", "t", "q", "z"} <= set(q) and q["bp"] < q["ap"]
        seqs = []
        while len(seqs) < 10:
            seqs.append((await until(ws, lambda e: e["ev"] == "T"))["q"])
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


async def test_crypto_cluster(sim):
    async with connect(sim.url + "/crypto") as ws:
        await login(ws)
        await ws.send(json.dumps({"action": "subscribe", "params": "XT.BTC-USD,XQ.ETH-USD,XAS.*"}))
        xt = await until(ws, lambda e: e["ev"] == "XT")
        assert xt["pair"] == "BTC-USD" and xt["c"] in ([1], [2]) and xt["r"] >= xt["t"]
        xq = await until(ws, lambda e: e["ev"] == "XQ")
        assert xq["pair"] == "ETH-USD"
        xas = await until(ws, lambda e: e["ev"] == "XAS")
        assert xas["e"] - xas["s"] == 1000 and xas["l"] <= xas["h"]
        await ws.send(json.dumps({"action": "subscribe", "params": "T.AAPL"}))
        assert (await until(ws, lambda e: e["ev"] == "status"))["status"] == "error", "a stocks topic on /crypto"


@pytest.mark.parametrize("case", ["wrong key", "no auth", "subscribe first"])
async def test_auth_failures(sim, case):
    async with connect(sim.url + "/stocks") as ws:
        if case == "wrong key":
            assert await login(ws, "nope") == [{"ev": "status", "status": "auth_failed", "message": "authentication failed"}]
        elif case == "no auth":
            await recv(ws)
            assert await recv(ws) == [{"ev": "status", "status": "auth_timeout", "message": "No authentication request received."}]
        else:
            await recv(ws)
            await ws.send(json.dumps({"action": "subscribe", "params": "T.AAPL"}))
            assert (await recv(ws))[0]["status"] == "error"
            return
        with pytest.raises(websockets.ConnectionClosed):
            await recv(ws)


async def test_cluster_entitlement():
    async with PolygonSimulator(clusters={"stocks"}, hours="always", warmup=0.1) as sim:
        async with connect(sim.url + "/crypto") as ws:
            (e,) = await login(ws)
            assert e["status"] == "auth_failed" and "plan doesn't include" in e["message"]


async def test_max_connections_kicks_the_oldest(sim):
    async with connect(sim.url + "/stocks") as old, connect(sim.url + "/stocks") as new:
        await login(old)
        await login(new)
        assert await recv(old) == [{"ev": "status", "status": "max_connections", "message": "Maximum number of connections exceeded."}]
        with pytest.raises(websockets.ConnectionClosed):
            await recv(old)
        await new.send(json.dumps({"action": "subscribe", "params": "T.AAPL"}))
        assert (await recv(new))[0]["message"] == "subscribed to: T.AAPL"
        async with connect(sim.url + "/crypto") as crypto:  # another cluster has its own limit
            assert (await login(crypto))[0]["status"] == "auth_success"


async def test_slow_consumer_and_unknown_path(sim):
    async with connect(sim.url + "/stocks") as ws:
        await login(ws)
        sim.slow_consumer()
        assert (await recv(ws))[0]["status"] == "slow_consumer"
        with pytest.raises(websockets.ConnectionClosed):
            await recv(ws)
    with pytest.raises(websockets.InvalidStatus) as e:
        async with connect(sim.url + "/options"):
            pass
    assert e.value.response.status_code == 404


async def test_second_aggregates_exactly_for_seconds_with_trades():
    """A thin market (a few events a second): an ``A`` for every second with trades, none
    for a second without, and its OHLCV from exactly those trades."""
    async with PolygonSimulator(symbols=["AAPL"], rate=12, hours="always", warmup=0.1) as sim:
        async with connect(sim.url + "/stocks") as ws:
            await login(ws)
            await ws.send(json.dumps({"action": "subscribe", "params": "T.AAPL,A.AAPL"}))
            trades, aggs = [], []
            async with asyncio.timeout(30):
                while len(aggs) < 4:
                    for e in await recv(ws, 10):
                        (trades if e["ev"] == "T" else aggs if e["ev"] == "A" else []).append(e)
    first, last = aggs[0]["s"], aggs[-1]["s"]
    seconds = {t["t"] // 1000 * 1000 for t in trades if first <= t["t"] < last + 1000}
    assert seconds == {a["s"] for a in aggs}
    for a in aggs:
        inside = [t for t in trades if a["s"] <= t["t"] < a["e"]]
        assert a["v"] == sum(t["s"] for t in inside) and a["o"] == inside[0]["p"] and a["c"] == inside[-1]["p"]
        assert a["h"] == max(t["p"] for t in inside) and a["l"] == min(t["p"] for t in inside)


# -- the official client ------------------------------------------------------------------------------

async def _massive(sim, market: str, subs: list[str], enough, key: str = "test", timeout: float = 10.0):
    from massive import WebSocketClient

    got: list = []
    client = WebSocketClient(api_key=key, feed=f"127.0.0.1:{sim.port}", market=market, secure=False, subscriptions=subs,
                             max_reconnects=0)

    async def processor(msgs):
        got.extend(msgs)
        if enough(got):
            await client.close()

    await asyncio.wait_for(client.connect(processor), timeout)
    return got


async def test_massive_client_stocks(sim):
    from massive.websocket.models import EquityAgg, EquityQuote, EquityTrade

    got = await _massive(sim, "stocks", ["T.AAPL", "Q.AAPL", "A.AAPL"],
                         lambda g: {type(m) for m in g} >= {EquityTrade, EquityQuote, EquityAgg})
    trades = [m for m in got if isinstance(m, EquityTrade)]
    assert trades and all(t.symbol == "AAPL" and t.price > 0 and t.size > 0 and isinstance(t.id, str) for t in trades)
    aggs = [m for m in got if isinstance(m, EquityAgg)]
    assert all(a.end_timestamp - a.start_timestamp == 1000 and a.accumulated_volume >= a.volume for a in aggs)


async def test_massive_client_crypto(sim):
    from massive.websocket.models import CryptoQuote, CryptoTrade

    got = await _massive(sim, "crypto", ["XT.BTC-USD", "XQ.BTC-USD"], lambda g: {type(m) for m in g} >= {CryptoTrade, CryptoQuote})
    assert {m.pair for m in got} == {"BTC-USD"}


async def test_massive_client_wrong_key_raises_auth_error(sim):
    from massive.exceptions import AuthError

    with pytest.raises(AuthError, match="authentication failed"):
        await _massive(sim, "stocks", ["T.AAPL"], lambda g: True, key="bad")


async def test_massive_client_reconnects_and_resubscribes():
    async with PolygonSimulator(seed=1, rate=800, hours="always", warmup=0.2, faults=Faults(drop_after=15)) as sim:
        from massive import WebSocketClient

        got: list = []
        client = WebSocketClient(api_key="test", feed=f"127.0.0.1:{sim.port}", market="stocks", secure=False,
                                 subscriptions=["T.NVDA", "Q.NVDA"], max_reconnects=5)

        async def processor(msgs):
            got.extend(msgs)
            if len(sim.history) >= 3 and len(got) > 30:
                await client.close()

        await asyncio.wait_for(client.connect(processor), 20)
        assert len(sim.history) >= 3 and {c.props["key"] for c in sim.history} == {"test"}
