"""Serving recorded frames byte for byte (what `replay serve` builds on), and `wrdata sim`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sim_helpers import http_get, recv_json

from wrdata.sim.binance import BinanceSimulator
from wrdata.sim.server import FrameFeed, RecordedFrame

DATA = Path(__file__).parent.parent / "data" / "binance"


def _recorded(n: int = 400) -> tuple[list[RecordedFrame], bytes]:
    """Real Binance frames (hftbacktest, MIT; see tests/data/SOURCES.md) and the recorded depth snapshot."""
    frames, snapshot = [], b""
    with open(DATA / "spot_btcusdt_trade_bookticker_depth100ms_2024-08-08.jsonl") as f:
        for line in f:
            row = json.loads(line)
            if row["url"].startswith("https://"):
                snapshot = row["frame"].encode()
                continue
            frames.append(RecordedFrame(row["ts_recv"], row["frame"].encode(), row["url"]))
            if len(frames) == n:
                break
    return frames, snapshot


async def test_frame_feed_serves_recorded_bytes(connect):
    frames, snapshot = _recorded()
    go = asyncio.Event()

    async def gated():
        await go.wait()  # start once the clients are subscribed
        for f in frames:
            yield f

    feed = FrameFeed(gated(), speed=None)
    async with BinanceSimulator(feed=feed, warmup=0.0) as sim:
        sim.set_rest_override("/api/v3/depth", snapshot)
        async with (
            connect(sim.url + "/stream?streams=btcusdt@trade/btcusdt@depth@100ms") as comb,
            connect(sim.url + "/ws/btcusdt@trade") as raw,
        ):
            await sim.wait_for_connections(2)
            go.set()
            await asyncio.wait_for(feed.done, 5)
            want_comb = [f.payload for f in frames if b'"btcusdt@trade"' in f.payload or b'"btcusdt@depth@100ms"' in f.payload]
            got_comb = [(await asyncio.wait_for(comb.recv(decode=False), 2)) for _ in want_comb]
            assert got_comb == want_comb  # exact bytes, recorded order
            trades = [json.loads(f.payload) for f in frames if b'"btcusdt@trade"' in f.payload]
            got_raw = [await recv_json(raw) for _ in trades]
            assert got_raw == [t["data"] for t in trades]
            assert feed.published == len(frames)
        status, _, body = await http_get(sim.rest_url + "/api/v3/depth?symbol=BTCUSDT&limit=1000")
        assert status == 200 and body == json.loads(snapshot)


async def test_frame_feed_paces_by_recorded_time(connect):
    base = 1_700_000_000_000_000_000
    frames = [
        RecordedFrame(base + i * 100_000_000, json.dumps({"stream": "x@trade", "data": {"i": i}}).encode()) for i in range(4)
    ]
    go = asyncio.Event()

    async def gated():
        await go.wait()
        for f in frames:
            yield f

    feed = FrameFeed(gated(), speed=2.0)  # 100 ms apart at twice the speed: 50 ms apart
    async with BinanceSimulator(feed=feed, warmup=0.0) as sim:
        async with connect(sim.url + "/ws/x@trade") as ws:
            await sim.wait_for_connections(1)
            go.set()
            loop = asyncio.get_running_loop()
            times = []
            for i in range(4):
                assert await recv_json(ws) == {"i": i}
                times.append(loop.time())
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert all(0.03 < g < 0.2 for g in gaps), gaps


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
async def test_cli_prints_url_first_and_stops_on_sigterm(connect):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wrdata.cli",
        "sim",
        "binance",
        "--seed",
        "3",
        "--rate",
        "200",
        "--symbols",
        "BTCUSDT,DOGEUSDT",
        "--warmup",
        "0.2",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().strip()
        assert line.startswith("ws://127.0.0.1:")
        async with connect(line + "/ws/dogeusdt@trade") as ws:
            m = await recv_json(ws, 3)
            assert m["s"] == "DOGEUSDT"
        status, _, info = await http_get(line.replace("ws://", "http://") + "/api/v3/exchangeInfo")
        assert [s["symbol"] for s in info["symbols"]] == ["BTCUSDT", "DOGEUSDT"]
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
