"""Benchmark sender: a picows server that sends N pre-built frames to each client, fast.

Prints its URL on the first line. Each connection gets the same N ``@trade`` frames
(built before listening, so sending costs only the socket writes), paced by the
transport's flow control so memory stays bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import picows  # noqa: E402

from bench.frames import mixed_frames, trade_frames  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=300_000)
    ap.add_argument("--mixed", action="store_true", help="the tape's own trade/bookTicker/depth mix")
    ap.add_argument("--rate", type=float, default=0, help="frames per second (0 = as fast as possible)")
    args = ap.parse_args()
    frames = mixed_frames(args.frames) if args.mixed else trade_frames(args.frames)

    class Sender(picows.WSListener):
        def __init__(self) -> None:
            self.writable = asyncio.Event()
            self.writable.set()

        def on_ws_connected(self, transport) -> None:
            asyncio.get_running_loop().create_task(self.send_all(transport))

        def pause_writing(self) -> None:
            self.writable.clear()

        def resume_writing(self) -> None:
            self.writable.set()

        async def send_all(self, transport) -> None:
            text = picows.WSMsgType.TEXT
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            for i, f in enumerate(frames):
                if not self.writable.is_set():
                    await self.writable.wait()
                if args.rate and i % 100 == 0:
                    due = t0 + i / args.rate
                    delay = due - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                transport.send(text, f)

    async def serve() -> None:
        server = await picows.ws_create_server(lambda _req: Sender(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        print(f"ws://127.0.0.1:{port}/stream", flush=True)
        await server.serve_forever()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
