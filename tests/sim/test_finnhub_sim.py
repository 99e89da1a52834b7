"""The Finnhub simulator against plain clients and against the client Finnhub's docs show:
``websocket-client``'s ``WebSocketApp`` on ``wss://ws.finnhub.io?token=`` (the official
finnhub-python SDK has no WebSocket client)."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
import websockets

from tests.sim.sim_helpers import http_get
from wrdata.sim.finnhub import FinnhubSimulator


@pytest.fixture
async def sim():
    async with FinnhubSimulator(seed=2, rate=800, crypto_rate=300, hours="always", warmup=0.3, ping_every=0.3) as s:
        yield s


def connect(url: str):
    return websockets.connect(url, compression=None, ping_interval=None)


async def recv(ws, timeout: float = 3.0):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def until(ws, pred, timeout: float = 5.0):
    async with asyncio.timeout(timeout):
        while True:
            m = await recv(ws, timeout)
            if pred(m):
                return m


async def test_token_in_the_url(sim):
    with pytest.raises(websockets.InvalidStatus) as e:
        async with connect(sim.url + "/?token=wrong"):
            pass
    assert e.value.response.status_code == 401
    with pytest.raises(websockets.InvalidStatus) as e:
        async with connect(sim.url + "/"):
            pass
    assert e.value.response.status_code == 401
    async with connect(sim.url + "?token=test") as ws:  # the docs' spelling, no slash
        await ws.send(json.dumps({"type": "subscribe", "symbol": "AAPL"}))
        assert (await recv(ws))["type"] in ("trade", "ping")


async def test_trade_frames_as_the_venue_writes_them(sim):
    async with connect(sim.url + "/?token=test") as ws:
        for s in ("AAPL", "NVDA", "BINANCE:BTCUSDT"):
            await ws.send(json.dumps({"type": "subscribe", "symbol": s}))
        seen = set()
        async with asyncio.timeout(10):
            while seen != {"AAPL", "NVDA", "BINANCE:BTCUSDT"}:
                raw = await ws.recv()
                m = json.loads(raw)
                if m["type"] != "trade":
                    continue
                assert raw.startswith('{"data":[{') and raw.endswith('],"type":"trade"}'), "keys in alphabetical order"
                for t in m["data"]:
                    seen.add(t["s"])
                    if t["s"] == "BINANCE:BTCUSDT":
                        assert list(t) == ["p", "s", "t", "v"]
                    else:
                        assert list(t) == ["c", "p", "s", "t", "v"] and all(isinstance(c, str) for c in t["c"])
                        assert isinstance(t["v"], int) and isinstance(t["t"], int)
        await ws.send(json.dumps({"type": "unsubscribe", "symbol": "AAPL"}))
        await ws.send(json.dumps({"type": "unsubscribe", "symbol": "NVDA"}))
        await ws.send(json.dumps({"type": "unsubscribe", "symbol": "BINANCE:BTCUSDT"}))
        assert await until(ws, lambda m: m["type"] == "ping") == {"type": "ping"}, "idle: pings only"


async def test_symbol_limit_error():
    async with FinnhubSimulator(hours="always", warmup=0.1, symbol_limit=2) as sim:
        async with connect(sim.url + "/?token=test") as ws:
            for s in ("AAPL", "MSFT", "NVDA"):
                await ws.send(json.dumps({"type": "subscribe", "symbol": s}))
            assert await until(ws, lambda m: m["type"] == "error") == {"msg": "Subscribing to too many symbols", "type": "error"}
            assert sim.history[0].props["symbols"] == {"AAPL", "MSFT"}


@pytest.mark.parametrize("policy, survivors", [("both", set()), ("oldest", {"new"}), ("newest", {"old"}), ("allow", {"old", "new"})])
async def test_one_connection_per_token(policy, survivors):
    async with FinnhubSimulator(hours="always", warmup=0.1, conn_policy=policy, ping_every=0.1) as sim:
        async with connect(sim.url + "/?token=test") as old:
            await until(old, lambda m: m["type"] == "ping")
            async with connect(sim.url + "/?token=test") as new:
                alive = set()
                for name, ws in (("old", old), ("new", new)):
                    try:
                        await until(ws, lambda m: m["type"] == "ping", timeout=2)
                        alive.add(name)
                    except websockets.ConnectionClosed:
                        pass
                assert alive == survivors


async def test_symbol_lists(sim):
    status, _, body = await http_get(sim.rest_url + "/api/v1/stock/symbol?exchange=US")
    assert status == 401
    status, _, body = await http_get(sim.rest_url + "/api/v1/stock/symbol?exchange=US&token=test")
    assert status == 200 and "AAPL" in {r["symbol"] for r in body} and body[0]["type"] == "Common Stock"
    status, _, body = await http_get(sim.rest_url + "/api/v1/crypto/symbol?exchange=binance", {"X-Finnhub-Token": "test"})
    assert status == 200 and "BINANCE:BTCUSDT" in {r["symbol"] for r in body}


async def test_websocket_client_as_the_docs_show(sim):
    """Finnhub's docs: ``websocket.WebSocketApp("wss://ws.finnhub.io?token=", on_message=...,
    on_open=...)`` with ``ws.send('{"type":"subscribe","symbol":"AAPL"}')`` in on_open."""
    import websocket

    got: list[dict] = []
    done = threading.Event()

    def on_message(ws, message):
        m = json.loads(message)
        if m["type"] == "trade":
            got.extend(m["data"])
        if len(got) >= 10:
            done.set()
            ws.close()

    def on_open(ws):
        ws.send('{"type":"subscribe","symbol":"AAPL"}')
        ws.send('{"type":"subscribe","symbol":"BINANCE:BTCUSDT"}')

    app = websocket.WebSocketApp(f"ws://127.0.0.1:{sim.port}?token=test", on_message=on_message, on_open=on_open)
    thread = threading.Thread(target=app.run_forever, daemon=True)
    thread.start()
    assert await asyncio.to_thread(done.wait, 15)
    await asyncio.to_thread(thread.join, 5)
    assert {t["s"] for t in got} <= {"AAPL", "BINANCE:BTCUSDT"} and all(t["p"] > 0 for t in got)

    refused: list = []
    bad = websocket.WebSocketApp(f"ws://127.0.0.1:{sim.port}?token=nope", on_error=lambda ws, e: refused.append(e))
    await asyncio.to_thread(bad.run_forever)
    assert refused and "401" in str(refused[0])
