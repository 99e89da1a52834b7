"""Receive → parse throughput on one connection, beside its floors, in one run.

A sender process (``bench/sender.py``, picows server on loopback) sends N pre-built
Binance ``@trade`` frames (fields from the real tape, ids renumbered) as fast as the
socket takes them. This process receives them through:

- ``picows`` bare (count frames): the transport floor;
- ``websockets`` bare (``async for`` over the connection): the alternative transport;
- wrdata's runner with the Binance session (``Link.on_frame`` → ``session.feed``),
  messages into a counting sink: **receive → parse**, what the issue targets;
- the same through ``DataStream.stream()`` (hub fan-out + consumer queue + async
  generator): what user code sees.

And, in memory (no socket): msgspec typed decode + float conversion, orjson decode,
and the Binance session's ``feed`` alone.

Two cores are shared by sender and receiver, so each figure is given per wall second
and per CPU second of the receiving process.

    python bench/receive.py [--frames 300000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.frames import trade_frames  # noqa: E402


def start_sender(n: int) -> tuple[subprocess.Popen, str]:
    p = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / "sender.py"), "--frames", str(n)],
        stdout=subprocess.PIPE,
        text=True,
    )
    url = p.stdout.readline().strip()
    return p, url


def cpu() -> float:
    return time.process_time()


async def run_picows(url: str, n: int) -> tuple[float, float]:
    import picows

    done = asyncio.get_running_loop().create_future()
    state = {"n": 0, "t0": 0.0, "c0": 0.0}

    class L(picows.WSListener):
        def on_ws_frame(self, transport, frame):
            if frame.msg_type == picows.WSMsgType.TEXT:
                frame.get_payload_as_bytes()
                k = state["n"] = state["n"] + 1
                if k == 1:
                    state["t0"], state["c0"] = time.perf_counter(), cpu()
                if k == n and not done.done():
                    done.set_result((time.perf_counter(), cpu()))

    ws, _ = await picows.ws_connect(L, url, max_frame_size=1 << 20)
    t1, c1 = await done
    ws.disconnect()
    return (n - 1) / (t1 - state["t0"]), (n - 1) / max(c1 - state["c0"], 1e-9)


async def run_websockets(url: str, n: int) -> tuple[float, float]:
    from websockets.asyncio.client import connect

    async with connect(url, max_size=1 << 20, compression=None, ping_interval=None, max_queue=None) as ws:
        k = 0
        async for _msg in ws:
            k += 1
            if k == 1:
                t0, c0 = time.perf_counter(), cpu()
            if k == n:
                t1, c1 = time.perf_counter(), cpu()
                break
    return (n - 1) / (t1 - t0), (n - 1) / max(c1 - c0, 1e-9)


async def run_runner(url: str, n: int, transport: str) -> tuple[float, float]:
    """The real runner path: Link.on_frame → BinanceSession.feed → sink."""
    from wrdata.streaming.binance import BinanceVenue

    base = url.rsplit("/", 1)[0]
    venue = BinanceVenue(url=base, silence_timeout=60)
    done = asyncio.get_running_loop().create_future()
    state = {"n": 0}

    def sink(msgs):
        for m in msgs:
            if m.kind != "trade":
                continue
            k = state["n"] = state["n"] + 1
            if k == 1:
                state["t0"], state["c0"] = time.perf_counter(), cpu()
            if k == n and not done.done():
                done.set_result((time.perf_counter(), cpu()))

    client = venue.client(sink, None, None, transport)
    client.add(["btcusdt@trade"])
    t1, c1 = await done
    await client.close()
    return (n - 1) / (t1 - state["t0"]), (n - 1) / max(c1 - state["c0"], 1e-9)


async def run_datastream(url: str, n: int) -> tuple[float, float]:
    from wrdata import DataStream
    from wrdata.streaming.base import HttpResponse

    base = url.rsplit("/", 1)[0]
    async with DataStream(endpoints={"binance": base}, queue_size=n + 10) as ds:
        ds.manager.venue("binance").instruments = {"BTCUSDT": {}}  # the sender serves no REST
        _ = HttpResponse
        k = 0
        async for _t in ds.stream("BTCUSDT"):
            k += 1
            if k == 1:
                t0, c0 = time.perf_counter(), cpu()
            if k == n:
                t1, c1 = time.perf_counter(), cpu()
                break
    return (n - 1) / (t1 - t0), (n - 1) / max(c1 - c0, 1e-9)


def in_memory(frames: list[bytes]) -> dict[str, float]:
    import msgspec
    import orjson

    from wrdata.streaming.binance import BinanceVenue

    D = msgspec.defstruct("D", [("E", int), ("s", str), ("t", int), ("p", str), ("q", str), ("T", int), ("m", bool)])
    dec = msgspec.json.Decoder(msgspec.defstruct("F", [("stream", str), ("data", D)]))
    out = {}
    t0 = time.perf_counter()
    for f in frames:
        x = dec.decode(f)
        float(x.data.p)
        float(x.data.q)
    out["msgspec typed + float()"] = len(frames) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for f in frames:
        orjson.loads(f)
    out["orjson.loads"] = len(frames) / (time.perf_counter() - t0)
    session = BinanceVenue().session(1, [])
    feed = session.feed
    t0 = time.perf_counter()
    for i, f in enumerate(frames):
        feed(f, i, i)
    out["BinanceSession.feed (parse only)"] = len(frames) / (time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=300_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    n = args.frames
    print(f"# receive -> parse, Binance @trade frames, N={n:,} per run, median of {args.repeat}")
    print(f"# {platform.python_implementation()} {platform.python_version()} on {platform.machine()}, "
          f"{os.cpu_count()} cpus, {platform.processor() or platform.platform()}")
    frames = trade_frames(min(n, 200_000))
    mem = in_memory(frames)
    print(f"{'in memory (no socket)':<48} {'frames/s':>12}")
    for k, v in mem.items():
        print(f"  {k:<46} {v:>12,.0f}")
    cases = [
        ("picows bare receive (transport floor)", lambda u: run_picows(u, n)),
        ("websockets bare receive", lambda u: run_websockets(u, n)),
        ("wrdata runner, picows: receive->parse", lambda u: run_runner(u, n, "picows")),
        ("wrdata runner, websockets: receive->parse", lambda u: run_runner(u, n, "websockets")),
        ("DataStream.stream() end to end (picows)", lambda u: run_datastream(u, n)),
    ]
    print(f"{'over loopback from a sender process':<48} {'frames/s wall':>14} {'frames/CPU-s':>14}")
    results = {}
    for name, fn in cases:
        walls, cpus = [], []
        for _ in range(args.repeat):
            p, url = start_sender(n)
            try:
                w, c = asyncio.run(fn(url))
            finally:
                p.terminate()
                p.wait()
            walls.append(w)
            cpus.append(c)
        results[name] = (statistics.median(walls), statistics.median(cpus))
        print(f"  {name:<46} {results[name][0]:>14,.0f} {results[name][1]:>14,.0f}")
    floor = results["picows bare receive (transport floor)"][1]
    ours = results["wrdata runner, picows: receive->parse"][1]
    print(f"receive->parse per CPU-s vs transport floor: {ours / floor:.0%}; target >= 300,000/s on one core: "
          f"{'met' if ours >= 300_000 else 'NOT met'} ({ours:,.0f})")


if __name__ == "__main__":
    main()
