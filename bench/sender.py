"""Benchmark sender: a picows server that sends N pre-built frames to each client, fast.

Prints its URL on the first line. Every connection gets the same N frames, built before
listening so that sending costs only the socket writes, paced by the transport's flow
control so memory stays bounded (or at a fixed ``--rate``, evenly, for latency runs).

``--kind``: ``trade`` (Binance ``@trade``, the default), ``aggtrade``, ``mixed`` (the
tape's own trade/bookTicker/depth mix), ``polygon`` (100-event arrays of ``T``). Binance
kinds are sent as soon as a client connects, whatever its path (wrdata's runner and
cryptofeed both put their streams in the URL); ``polygon`` first speaks Polygon's
handshake (``connected`` status, ``auth_success`` on auth, ``success`` per subscribed
topic), then sends.

    python bench/sender.py [--kind trade] [--frames 300000] [--rate 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import picows  # noqa: E402

from bench.frames import aggtrade_frames, mixed_frames, polygon_frames, trade_frames  # noqa: E402


def build(kind: str, n: int) -> list[bytes]:
    if kind == "trade":
        return trade_frames(n)
    if kind == "aggtrade":
        return aggtrade_frames(n)
    if kind == "mixed":
        return mixed_frames(n)
    if kind == "polygon":
        # a few distinct frames cycled: building 100 events per frame is the slow part
        base = polygon_frames("trades", min(n, 2000))
        return [base[i % len(base)] for i in range(n)]
    raise SystemExit(f"unknown --kind {kind!r}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kind", default="trade", choices=["trade", "aggtrade", "mixed", "polygon"])
    ap.add_argument("--frames", type=int, default=300_000)
    ap.add_argument("--mixed", action="store_true", help="same as --kind mixed")
    ap.add_argument("--rate", type=float, default=0, help="frames per second, evenly spread (0 = as fast as possible)")
    args = ap.parse_args()
    kind = "mixed" if args.mixed else args.kind
    frames = build(kind, args.frames)
    text = picows.WSMsgType.TEXT

    class Sender(picows.WSListener):
        def __init__(self) -> None:
            self.writable = asyncio.Event()
            self.writable.set()
            self.transport = None
            self.started = False

        def on_ws_connected(self, transport) -> None:
            self.transport = transport
            if kind == "polygon":
                transport.send(text, b'[{"ev":"status","status":"connected","message":"Connected Successfully"}]')
            else:
                self.start()

        def on_ws_frame(self, transport, frame) -> None:
            if frame.msg_type == picows.WSMsgType.CLOSE:  # answer a close as a venue does, at once
                transport.send_close(frame.get_close_code())
                transport.disconnect()
                return
            if kind != "polygon" or frame.msg_type != text:
                return
            try:
                msg = json.loads(frame.get_payload_as_bytes())
            except ValueError:
                return
            action = msg.get("action") if isinstance(msg, dict) else None
            if action == "auth":
                transport.send(text, b'[{"ev":"status","status":"auth_success","message":"authenticated"}]')
            elif action == "subscribe":
                acks = [{"ev": "status", "status": "success", "message": f"subscribed to: {t}"} for t in msg["params"].split(",")]
                transport.send(text, json.dumps(acks).encode())
                self.start()

        def start(self) -> None:
            if not self.started:
                self.started = True
                asyncio.get_running_loop().create_task(self.send_all(self.transport))

        def pause_writing(self) -> None:
            self.writable.clear()

        def resume_writing(self) -> None:
            self.writable.set()

        async def send_all(self, transport) -> None:
            loop = asyncio.get_running_loop()
            if not args.rate:
                for f in frames:
                    if not self.writable.is_set():
                        await self.writable.wait()
                    transport.send(text, f)
                return
            # fixed rate: every ~0.2 ms send the frames due by now, so frames are spread
            # evenly (bursts of rate/5000), not 100 at a time
            t0 = loop.time()
            i, n = 0, len(frames)
            while i < n:
                due = min(n, int((loop.time() - t0) * args.rate) + 1)
                while i < due:
                    transport.send(text, frames[i])
                    i += 1
                await asyncio.sleep(0.0002)

    async def serve() -> None:
        server = await picows.ws_create_server(lambda _req: Sender(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        print(f"ws://127.0.0.1:{port}", flush=True)
        await server.serve_forever()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
