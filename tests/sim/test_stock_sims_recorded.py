"""The Alpaca, Polygon and Finnhub simulators serve a recording (``FrameFeed``) over the
venue's own protocol, what ``replay serve`` builds on: frames recorded from a live
session reach a client again, exact bytes for the same framing (Alpaca re-encodes
MessagePack recordings for JSON clients and the reverse)."""

from __future__ import annotations

import asyncio

import pytest

from wrdata import DataStream
from wrdata.sim.alpaca import AlpacaSimulator
from wrdata.sim.finnhub import FinnhubSimulator
from wrdata.sim.polygon import PolygonSimulator
from wrdata.sim.server import FrameFeed, RecordedFrame

CREDS = {"alpaca": {"key": "test", "secret": "test"}, "polygon": {"key": "test"}, "finnhub": {"key": "test"}}
SIMS = {"alpaca": AlpacaSimulator, "polygon": PolygonSimulator, "finnhub": FinnhubSimulator}
SYMBOLS = {"alpaca": ["alpaca:AAPL", "alpaca:NVDA"], "polygon": ["polygon:AAPL", "polygon:NVDA"],
           "finnhub": ["finnhub:AAPL", "finnhub:NVDA"]}


class _Rows:
    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def on_raw(self, *row) -> None:
        self.rows.append(row)

    def on_messages(self, msgs) -> None:
        pass


def _key(m):
    return (m.symbol, m.price, m.size, m.ts_event, m.trade_id, m.trade_ref, m.exchange, m.conditions)


async def _record(provider: str, options: dict, n: int = 60):
    """Trades from a live simulator, with the raw frames they came in."""
    tap = _Rows()
    async with SIMS[provider](seed=9, rate=600, hours="always", warmup=0.3) as live:
        async with DataStream(endpoints={provider: live.url}, credentials={provider: CREDS[provider]},
                              options={provider: options}) as ds:
            ds.add_tap(tap)
            trades = []
            async for m in ds.stream_many(SYMBOLS[provider]):
                trades.append(m)
                if len(trades) >= n:
                    break
    frames = [RecordedFrame(ts, payload, url) for _p, _c, _s, ts, direction, url, payload, *_status in tap.rows if direction == "in"]
    return trades, frames


async def _serve(provider: str, frames: list[RecordedFrame], options: dict, n: int):
    go = asyncio.Event()

    async def gated():
        await go.wait()
        for f in frames:
            yield f

    feed = FrameFeed(gated(), speed=None)
    async with SIMS[provider](feed=feed, hours="always", warmup=0) as sim:
        async with DataStream(endpoints={provider: sim.url}, credentials={provider: CREDS[provider]},
                              options={provider: {**options, "validate_symbols": False} if provider != "polygon" else options}) as ds:
            it = ds.stream_many(SYMBOLS[provider], include_status=True)
            got = []

            async def run():
                async for m in it:
                    if m.kind == "status" and m.status == "subscribed":
                        # Finnhub acknowledges nothing: wait until the server holds both subscriptions
                        while provider == "finnhub" and not all(sim.has_subscribers(s) for s in ("AAPL", "NVDA")):
                            await asyncio.sleep(0.01)
                        go.set()
                    if m.kind == "trade":
                        got.append(m)
                        if len(got) >= n:
                            break

            await asyncio.wait_for(run(), 15)
            await it.aclose()
    return got


@pytest.mark.parametrize("provider, recorded_as, served_as", [
    ("alpaca", "msgpack", "msgpack"), ("alpaca", "msgpack", "json"), ("alpaca", "json", "msgpack"),
    ("polygon", None, None), ("finnhub", None, None),
])
async def test_recorded_frames_are_served_again(provider, recorded_as, served_as):
    rec_opts = {"feed": "sip", "framing": recorded_as} if provider == "alpaca" else {}
    srv_opts = {"feed": "sip", "framing": served_as} if provider == "alpaca" else {}
    trades, frames = await _record(provider, rec_opts)
    got = await _serve(provider, frames, srv_opts, len(trades))
    assert [_key(m) for m in got] == [_key(m) for m in trades]


@pytest.mark.parametrize("venue, path, auth, ok", [
    ("alpaca", "/v2/sip", {"action": "auth", "key": "K1", "secret": "S1"}, [{"T": "success", "msg": "authenticated"}]),
    ("polygon", "/stocks", {"action": "auth", "params": "K1"}, [{"ev": "status", "status": "auth_success", "message": "authenticated"}]),
    ("finnhub", "/?token=K1", None, None),
])
async def test_cli_serves_each_venue_with_the_given_key(venue, path, auth, ok):
    import json
    import os
    import signal
    import subprocess
    import sys

    import websockets

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wrdata.cli", "sim", venue, "--port", "0", "--key", "K1", "--secret", "S1", "--hours", "always",
        "--rate", "300", stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    try:
        url = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
        assert url.startswith("ws://127.0.0.1:")
        async with websockets.connect(url + path, compression=None) as ws:
            if auth is None:  # finnhub: the token was in the URL; trades follow a subscribe
                await ws.send(json.dumps({"type": "subscribe", "symbol": "AAPL"}))
                assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "trade"
            else:
                await asyncio.wait_for(ws.recv(), 5)
                await ws.send(json.dumps(auth))
                assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == ok
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
