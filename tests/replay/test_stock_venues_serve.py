"""``wrdata replay serve`` for Alpaca, Polygon and Finnhub: a recording made from each
simulator, served over the venue's protocol to its official client (alpaca-py, massive)
or the client its docs show (websocket-client for Finnhub)."""

from __future__ import annotations

import asyncio
import json
import threading
import warnings

import pytest

from wrdata import DataStream
from wrdata.replay import read_messages
from wrdata.replay.serve import serve
from wrdata.sim.alpaca import AlpacaSimulator
from wrdata.sim.finnhub import FinnhubSimulator
from wrdata.sim.polygon import PolygonSimulator
from wrdata.storage import DatasetWriter

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # alpaca-py imports websockets.legacy

SIMS = {"alpaca": AlpacaSimulator, "polygon": PolygonSimulator, "finnhub": FinnhubSimulator}
CREDS = {"alpaca": {"key": "test", "secret": "test"}, "polygon": {"key": "test"}, "finnhub": {"key": "test"}}
OPTIONS = {"alpaca": {"feed": "sip", "framing": "msgpack"}, "polygon": {}, "finnhub": {}}


async def _record(provider: str, root) -> None:
    sim = SIMS[provider](seed=12, rate=300, hours="always", warmup=0.3)
    await sim.start()
    writer = DatasetWriter(str(root), flush_interval=0.2).start()
    try:
        async with DataStream(endpoints={provider: sim.url}, credentials={provider: CREDS[provider]},
                              options={provider: OPTIONS[provider]}) as ds:
            ds.add_tap(writer)
            n = 0
            async for _ in ds.stream_many([f"{provider}:AAPL", f"{provider}:NVDA"]):
                n += 1
                if n >= 40:
                    break
    finally:
        await sim.stop()
        writer.close()


@pytest.fixture(scope="module", params=list(SIMS))
def recording(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"serve-{request.param}")
    asyncio.run(_record(request.param, root))
    return request.param, root


async def _until(pred, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.02)


def _key(symbol, price, size, ts_ns):
    return symbol, round(price, 6), round(float(size), 6), ts_ns


async def test_official_clients_receive_the_recorded_trades(recording):
    provider, root = recording
    recorded = [_key(m.symbol, m.price, m.size, m.ts_event) for m in read_messages(str(root), kinds=["trade"])]
    assert len(recorded) >= 40
    ready = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(serve(provider, str(root), speed=None, settle=0.5, on_ready=ready.set_result))
    sim = await asyncio.wait_for(ready, 10)
    got: list[tuple] = []
    if provider == "alpaca":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from alpaca.data.live import StockDataStream

            stream = StockDataStream("test", "test", url_override=sim.url + "/v2/sip")

            async def on_trade(t):
                got.append(_key(t.symbol, t.price, t.size, int(t.timestamp.timestamp()) * 10**9 + t.timestamp.microsecond * 1000))

            stream.subscribe_trades(on_trade, "AAPL", "NVDA")
            task = asyncio.create_task(stream._run_forever())
            await asyncio.wait_for(server, 30)
            await stream.stop_ws()
            await asyncio.wait_for(task, 5)
        # alpaca-py's Trade holds microseconds: compare at that precision
        recorded = [(s, p, v, ts // 1000 * 1000) for s, p, v, ts in recorded]
    elif provider == "polygon":
        from massive import WebSocketClient
        from massive.websocket.models import EquityTrade

        client = WebSocketClient(api_key="test", feed=f"127.0.0.1:{sim.port}", market="stocks", secure=False,
                                 subscriptions=["T.AAPL", "T.NVDA"], max_reconnects=0)

        async def processor(msgs):
            got.extend(_key(m.symbol, m.price, m.size, m.timestamp * 1_000_000) for m in msgs if isinstance(m, EquityTrade))

        task = asyncio.create_task(client.connect(processor))
        await _until(lambda: len(got) >= len(recorded) or server.done())
        await client.close()  # before the server goes away (massive would count that as an outage)
        await asyncio.wait_for(task, 5)
        await asyncio.wait_for(server, 30)
    else:
        import websocket

        def on_message(ws, message):
            m = json.loads(message)
            if m["type"] == "trade":
                got.extend(_key(t["s"], t["p"], t["v"], t["t"] * 1_000_000) for t in m["data"])

        def on_open(ws):
            ws.send('{"type":"subscribe","symbol":"AAPL"}')
            ws.send('{"type":"subscribe","symbol":"NVDA"}')

        app = websocket.WebSocketApp(f"ws://127.0.0.1:{sim.port}?token=test", on_message=on_message, on_open=on_open)
        thread = threading.Thread(target=app.run_forever, daemon=True)
        thread.start()
        await asyncio.wait_for(server, 30)
        app.close()
        await asyncio.to_thread(thread.join, 5)
    assert got == recorded
