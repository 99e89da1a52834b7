"""`wrdata replay serve`: a recording served over Binance's own protocol, byte for byte."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from wrdata import DataStream
from wrdata.capture.config import CaptureConfig, Target
from wrdata.capture.daemon import CaptureDaemon
from wrdata.channels import parse_channels
from wrdata.replay import read_messages
from wrdata.replay.serve import serve
from wrdata.sim.binance import BinanceSimulator
from wrdata.storage import read_raw

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # python-binance imports legacy websockets


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")

    async def rec():
        sim = BinanceSimulator(seed=11, rate=300)
        async with sim:
            config = CaptureConfig(
                targets=[Target("binance", ["BTCUSDT", "ETHUSDT"], parse_channels("trade,book:10"))],
                root=str(root),
                endpoints={"binance": sim.url},
            )
            config.storage.flush_interval = 0.2
            await CaptureDaemon(config, duration=2.0, status="none").run()

    asyncio.run(rec())
    return root


async def test_wrdata_client_receives_the_recorded_trades(recording):
    recorded = [m for m in read_messages(str(recording), kinds=["trade"])]
    assert len(recorded) > 20
    got = []
    ready = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(serve("binance", str(recording), speed=None, settle=0.3, on_ready=ready.set_result))
    sim = await asyncio.wait_for(ready, 10)
    async with DataStream(endpoints={"binance": sim.url}) as ds:
        it = ds.stream_many(["BTCUSDT", "ETHUSDT"])

        async def collect():
            async for t in it:
                got.append(t)

        task = asyncio.create_task(collect())
        n = await asyncio.wait_for(server, 20)
        await asyncio.sleep(0.2)
        task.cancel()
    assert n > 0
    key = [(t.symbol, t.trade_id, t.price, t.size, t.side, t.ts_event) for t in recorded]
    assert [(t.symbol, t.trade_id, t.price, t.size, t.side, t.ts_event) for t in got] == key


async def test_python_binance_client_against_the_served_recording(recording):
    from binance import AsyncClient
    from binance.ws.streams import BinanceSocketManager

    raw = [f.payload for f in read_raw(str(recording), "binance") if f.direction == "in" and b"btcusdt@trade" in f.payload[:40]]
    ready = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(serve("binance", str(recording), speed=None, settle=0.3, on_ready=ready.set_result))
    sim = await asyncio.wait_for(ready, 10)
    client = AsyncClient()
    client.API_URL = sim.rest_url + "/api"
    bsm = BinanceSocketManager(client)
    bsm.STREAM_URL = sim.url + "/"
    received = []
    try:
        import json

        # the recorded REST depth snapshot answers the same request
        book = await client.get_order_book(symbol="BTCUSDT", limit=1000)
        snaps = [f.payload for f in read_raw(str(recording), "binance") if f.direction == "rest" and b"symbol=BTCUSDT" in (f.url or "").encode()]
        assert snaps and book == json.loads(snaps[0])
        async with bsm.multiplex_socket(["btcusdt@trade"]) as s:
            while len(received) < len(raw):
                msg = await asyncio.wait_for(s.recv(), 10)
                received.append(msg)
        # every recorded frame arrives, in order, exactly as recorded (parsed by the client)
        assert received == [json.loads(p) for p in raw]
    finally:
        await client.close_connection()
        await asyncio.wait_for(server, 20)


async def test_the_recording_starts_once_a_slow_client_has_subscribed(recording):
    """A client that takes longer than ``settle`` to subscribe after connecting (some SDKs
    wait seconds) still gets the recording from its first frame."""
    import json

    import websockets

    raw = [f.payload for f in read_raw(str(recording), "binance") if f.direction == "in" and b"btcusdt@trade" in f.payload[:40]]
    ready = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(serve("binance", str(recording), speed=None, settle=0.2, linger=30, on_ready=ready.set_result))
    sim = await asyncio.wait_for(ready, 10)
    got = []
    try:
        async with websockets.connect(sim.url + "/ws") as ws:
            await asyncio.sleep(1.0)  # connected, not yet subscribed, for five times the settle time
            assert sim.feed.published == 0, "nothing is served before a client subscribed"
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 1}))
            async with asyncio.timeout(10):
                while len(got) < len(raw):
                    m = json.loads(await ws.recv())
                    if m.get("e") == "trade":
                        got.append(m)
    finally:
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)
    assert got == [json.loads(p)["data"] for p in raw]


def test_recorded_frames_carry_their_connection(recording):
    """Served frames say which recorded connection received them (a venue that numbers a
    connection's messages tells from it where the recording lost some)."""
    from wrdata.replay.serve import recorded_frames

    raw_in = [(f.ts_recv, f.conn, f.payload) for f in read_raw(str(recording), "binance") if f.direction == "in"]
    frames = [(f.ts_ns, f.conn, f.payload) for f in recorded_frames(str(recording), "binance")]
    assert len(frames) > 20 and frames == raw_in
    assert all(isinstance(c, int) for _, c, _ in frames)


def test_cli_prints_its_url_first(recording):
    p = subprocess.Popen(
        [sys.executable, "-m", "wrdata.cli", "replay", "serve", "binance", "--root", str(recording), "--speed", "max"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = p.stdout.readline().strip()
        assert url.startswith("ws://127.0.0.1:")
    finally:
        p.terminate()
        p.wait(10)
