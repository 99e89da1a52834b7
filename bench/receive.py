"""Receive → parse on one connection, beside its floors and cryptofeed, in one run.

A sender process (``bench/sender.py``, picows server on loopback) sends N pre-built
frames as fast as the socket takes them. This process receives them through:

- ``picows`` bare (count frames): **the transport floor**;
- ``websockets`` bare (``async for`` over the connection): the alternative transport;
- wrdata's runner with the venue's session (``Link.on_frame`` → ``session.feed``),
  messages into a counting sink: **receive → parse**, what issue 2 targets (≥ 300k
  Binance trade frames/s on one core);
- the same through ``DataStream.stream()`` (hub fan-out, consumer queue, async
  generator): what user code sees.

Frames: Binance ``@trade`` (the tape's trades, ids renumbered), Binance ``@aggTrade``
(the same trades; what cryptofeed reads), and Polygon arrays of 100 ``T`` events (the
sender speaks Polygon's auth and subscribe handshake first). In memory, with no socket:
msgspec typed decode + ``float()`` and ``orjson.loads`` (the decode floors), the
sessions' ``feed`` alone, and cryptofeed's parser on the same ``@aggTrade`` frames.

Peer: cryptofeed 3's Binance feed, in its own interpreter (CPython 3.13, which it
needs), connected to the same sender sending the same ``@aggTrade`` frames, trades to
an async no-op callback.

Two cores are shared by sender and receiver (and by whatever else runs), so every
figure is frames per CPU-second of the receiving process (its figure of merit: the
sender's work is not counted) and per wall second. Cases are interleaved over the
repeats, and the median is kept.

    python -m bench.receive [--smoke|--quick] [--frames N] [--repeat R] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from bench.common import Report, Sender, add_mode_args, header, median, pick
from bench.frames import aggtrade_frames, polygon_frames, trade_frames
from bench.peers import run_peer

cpu = time.process_time


class _Count:
    """First/last time stamps of a counted stream of N items."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.k = 0
        self.done = asyncio.get_running_loop().create_future()
        self.t0 = self.c0 = 0.0

    def add(self, k: int = 1) -> None:
        if self.k == 0:
            self.t0, self.c0 = time.perf_counter(), cpu()
            self.k = k
            self.first = k
            return
        self.k += k
        if self.k >= self.n and not self.done.done():
            self.done.set_result((time.perf_counter(), cpu()))

    async def rates(self, timeout: float = 300) -> tuple[float, float]:
        t1, c1 = await asyncio.wait_for(self.done, timeout)
        n = self.k - self.first  # the first arrival starts the clocks
        return n / (t1 - self.t0), n / max(c1 - self.c0, 1e-9)


async def run_picows(url: str, n: int, per: int = 1) -> tuple[float, float]:
    import picows

    c = _Count(n)

    class L(picows.WSListener):
        def on_ws_frame(self, transport, frame):
            if frame.msg_type == picows.WSMsgType.TEXT:
                frame.get_payload_as_bytes()
                c.add(per)

        def on_ws_connected(self, transport):
            if per > 1:  # polygon: the handshake the sender waits for
                transport.send(picows.WSMsgType.TEXT, b'{"action":"auth","params":"bench"}')
                transport.send(picows.WSMsgType.TEXT, b'{"action":"subscribe","params":"T.*"}')

    ws, _ = await picows.ws_connect(L, url + ("/stocks" if per > 1 else "/stream"), max_frame_size=1 << 24)
    try:
        return await c.rates()
    finally:
        ws.disconnect()


async def run_websockets(url: str, n: int) -> tuple[float, float]:
    from websockets.asyncio.client import connect

    c = _Count(n)
    async with connect(url + "/stream", max_size=1 << 24, compression=None, ping_interval=None, max_queue=None, close_timeout=0.1) as ws:
        async for _msg in ws:
            c.add()
            if c.done.done():
                break
    return await c.rates()


async def run_runner(url: str, n: int, transport: str, kind: str) -> tuple[float, float]:
    """The real runner path: Link.on_frame → session.feed → sink (counting messages)."""
    c = _Count(n)

    def sink(msgs):
        k = 0
        for m in msgs:
            if m.kind == "trade":
                k += 1
        if k:
            c.add(k)

    if kind == "polygon":
        from wrdata.streaming.polygon import PolygonVenue

        venue = PolygonVenue(url=url, credentials={"key": "bench"}, silence_timeout=60)
        stream = "T.*"
    else:
        from wrdata.streaming.binance import BinanceVenue

        venue = BinanceVenue(url=url, silence_timeout=60)
        stream = "btcusdt@aggTrade" if kind == "aggtrade" else "btcusdt@trade"
    client = venue.client(sink, None, None, transport)
    client.add([stream])
    try:
        return await c.rates()
    finally:
        await client.close()


async def run_datastream(url: str, n: int) -> tuple[float, float]:
    from wrdata import DataStream

    c = _Count(n)
    async with DataStream(endpoints={"binance": url}, queue_size=n + 10) as ds:
        ds.manager.venue("binance").instruments = {"BTCUSDT": {}}  # the sender serves no REST
        async for _t in ds.stream("BTCUSDT"):
            c.add()
            if c.done.done():
                break
    return await c.rates()


def in_memory(n: int) -> dict[str, float]:
    """Frames (or events) per second, no socket: decode floors and the sessions' feed."""
    import msgspec
    import orjson

    from wrdata.streaming.binance import BinanceVenue
    from wrdata.streaming.polygon import PolygonVenue

    out: dict[str, float] = {}

    def timed(name: str, fn, data, per: int = 1) -> None:
        fn(data[0])
        c0 = cpu()
        for f in data:
            fn(f)
        out[name] = len(data) * per / max(cpu() - c0, 1e-9)

    trades = trade_frames(n)
    aggs = aggtrade_frames(n)
    D = msgspec.defstruct("D", [("E", int), ("s", str), ("t", int), ("p", str), ("q", str), ("T", int), ("m", bool)])
    dec = msgspec.json.Decoder(msgspec.defstruct("F", [("stream", str), ("data", D)]))

    def typed(f):
        x = dec.decode(f)
        float(x.data.p)
        float(x.data.q)

    A = msgspec.defstruct("A", [("E", int), ("s", str), ("a", int), ("p", str), ("q", str), ("T", int), ("m", bool)])
    adec = msgspec.json.Decoder(msgspec.defstruct("FA", [("stream", str), ("data", A)]))

    def atyped(f):
        x = adec.decode(f)
        float(x.data.p)
        float(x.data.q)

    timed("trade: msgspec typed + float()", typed, trades)
    timed("trade: orjson.loads", orjson.loads, trades)
    session = BinanceVenue().session(1, ["btcusdt@trade"])
    timed("trade: BinanceSession.feed", lambda f: session.feed(f, 1, 1), trades)
    timed("aggTrade: msgspec typed + float()", atyped, aggs)
    asession = BinanceVenue().session(1, ["btcusdt@aggTrade"])
    timed("aggTrade: BinanceSession.feed", lambda f: asession.feed(f, 1, 1), aggs)
    poly = polygon_frames("trades", max(10, n // 100))
    timed("polygon: msgspec.json.decode (untyped)", msgspec.json.decode, poly, 100)
    psession = PolygonVenue(credentials={"key": "bench"}).session(1, ["T.*"])
    timed("polygon: PolygonSession.feed", lambda f: psession.feed(f, 1, 1), poly, 100)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_mode_args(ap)
    ap.add_argument("--frames", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=None)
    args = ap.parse_args(argv)
    mode = args.mode
    n = args.frames or pick(mode, 5_000, 60_000, 300_000)
    repeat = args.repeat or pick(mode, 1, 1, 3)
    npoly = max(50, n // 100)  # polygon frames carry 100 events
    header("receive -> parse, one connection", mode)
    rep = Report("receive", mode, f"{n:,} frames per case (Polygon: {npoly:,} frames x 100 events), median of {repeat}")

    mem = in_memory(min(n, 100_000))
    print(f"{'in memory (no socket)':<52} {'per CPU-s':>12}")
    for k, v in mem.items():
        print(f"  {k:<50} {v:>12,.0f}")

    cases = {
        "picows bare receive (trade)": ("trade", n, lambda u: run_picows(u, n)),
        "websockets bare receive (trade)": ("trade", n, lambda u: run_websockets(u, n)),
        "runner picows: receive->parse (trade)": ("trade", n, lambda u: run_runner(u, n, "picows", "trade")),
        "runner websockets: receive->parse (trade)": ("trade", n, lambda u: run_runner(u, n, "websockets", "trade")),
        "DataStream.stream() (trade)": ("trade", n, lambda u: run_datastream(u, n)),
        "picows bare receive (aggTrade)": ("aggtrade", n, lambda u: run_picows(u, n)),
        "runner picows: receive->parse (aggTrade)": ("aggtrade", n, lambda u: run_runner(u, n, "picows", "aggtrade")),
        "picows bare receive (polygon, events)": ("polygon", npoly, lambda u: run_picows(u, npoly * 100, 100)),
        "runner picows: receive->parse (polygon, events)": ("polygon", npoly, lambda u: run_runner(u, npoly * 100, "picows", "polygon")),
    }
    walls: dict[str, list[float]] = {k: [] for k in cases}
    cpus: dict[str, list[float]] = {k: [] for k in cases}
    peer_live: list[dict] = []
    peer_why = ""
    for _ in range(repeat):
        # one sender per kind: it sends the same frames to every connection, one after the other
        for kind in ("trade", "aggtrade", "polygon"):
            group = {k: v for k, v in cases.items() if v[0] == kind}
            with Sender(next(iter(group.values()))[1], kind) as s:
                for name, (_kind, _frames, fn) in group.items():
                    w, c = asyncio.run(fn(s.url))
                    walls[name].append(w)
                    cpus[name].append(c)
                if kind == "aggtrade" and not args.no_peers:
                    res, peer_why = run_peer("cryptofeed_peer.py", "live", s.url, str(n))
                    if res:
                        peer_live.append(res)
    print(f"\n{'over loopback from a sender process':<52} {'per wall s':>12} {'per CPU-s':>12}")
    res = {k: (median(walls[k]), median(cpus[k])) for k in cases}
    for k, (w, c) in res.items():
        print(f"  {k:<50} {w:>12,.0f} {c:>12,.0f}")
    cf_live = None
    if peer_live:
        cf_live = median([p["frames"] / p["cpu"] for p in peer_live])
        cf_live_wall = median([p["frames"] / p["wall"] for p in peer_live])
        print(f"  {'cryptofeed Binance feed, live (aggTrade)':<50} {cf_live_wall:>12,.0f} {cf_live:>12,.0f}")
    cf_parse, why_parse = (None, "not measured: --no-peers") if args.no_peers else run_peer("cryptofeed_peer.py", "parse", str(min(n, 100_000)))
    if cf_parse:
        print(f"  {'cryptofeed message_handler, in memory (aggTrade)':<50} {'':>12} {cf_parse['frames'] / cf_parse['cpu']:>12,.0f}")

    floor = res["picows bare receive (trade)"]
    ours = res["runner picows: receive->parse (trade)"]
    g = "receive"
    rep.add(g, "receive→parse, Binance @trade, 1 conn (runner, picows)", "msgs/CPU-s", ours[1], floor[1],
            "picows bare receive of the same frames (count only), same sender, same run", target="≥ 300k on 1 core",
            met=ours[1] >= 300_000, note=f"per wall second {ours[0]:,.0f} (floor {floor[0]:,.0f}); sender on the other core")
    ds = res["DataStream.stream() (trade)"]
    rep.add(g, "receive→parse→user, DataStream.stream() (trade)", "msgs/CPU-s", ds[1], floor[1], "picows bare receive, same run")
    wsr = res["runner websockets: receive->parse (trade)"]
    rep.add(g, "receive→parse, runner on websockets (fallback)", "msgs/CPU-s", wsr[1], res["websockets bare receive (trade)"][1],
            "websockets bare receive (async for), same run")
    fa, oa = res["picows bare receive (aggTrade)"], res["runner picows: receive->parse (aggTrade)"]
    peer_what = (f"cryptofeed {peer_live[0]['cryptofeed']} Binance feed on CPython {peer_live[0]['python']}: its own Feed.run() "
                 "and websockets client connected to the same sender (same @aggTrade frames), trades to an async no-op "
                 "callback; frames per CPU-s of its process") if peer_live else f"not measured: {peer_why or 'no result'}"
    rep.add(g, "receive→parse, Binance @aggTrade, 1 conn", "msgs/CPU-s", oa[1], fa[1], "picows bare receive, same run",
            peer=cf_live, peer_what=peer_what)
    pf, po = res["picows bare receive (polygon, events)"], res["runner picows: receive->parse (polygon, events)"]
    rep.add(g, "receive→parse, Polygon 100-event frames, 1 conn", "events/CPU-s", po[1], pf[1],
            "picows bare receive of the same frames x 100 events, same run")
    rep.add(g, "parse only, Binance @trade (BinanceSession.feed)", "msgs/CPU-s", mem["trade: BinanceSession.feed"],
            mem["trade: msgspec typed + float()"], "msgspec typed decode + float() of price and size, same frames")
    cf_what = (f"cryptofeed {cf_parse['cryptofeed']} Binance.message_handler on CPython {cf_parse['python']}, same @aggTrade frames "
               "in memory, to an async no-op callback (its network receive left out)") if cf_parse else (why_parse or "not measured")
    rep.add(g, "parse only, Binance @aggTrade (BinanceSession.feed)", "msgs/CPU-s", mem["aggTrade: BinanceSession.feed"],
            mem["aggTrade: msgspec typed + float()"], "msgspec typed decode + float(), same frames",
            peer=(cf_parse["frames"] / cf_parse["cpu"]) if cf_parse else None, peer_what=cf_what)
    # Polygon parsing alone: bench/polygon_parse.py (three data sets)
    rep.finish(args.json_out)


if __name__ == "__main__":
    main()
