"""cryptofeed's Binance feed on the benchmark's frames (runs in the peers' venv, Python ≥ 3.13).

    python bench/peers/cryptofeed_peer.py parse N        # its parser alone, in memory
    python bench/peers/cryptofeed_peer.py live URL N     # its feed connected to a sender

Frames: the tape's trades as combined-stream ``@aggTrade`` frames (``bench/frames.py``),
since cryptofeed's ``TRADES`` channel is Binance's ``@aggTrade`` (it logs a raw
``@trade`` frame as unexpected). Its symbol map is set from a minimal exchangeInfo
document through its own ``_parse_symbol_data`` (no REST call), as ``load_symbols``
does. The callback is an async no-op that counts trades.

- ``parse``: ``await feed.message_handler(frame_str, conn, timestamp)`` per frame: JSON
  with Decimal floats, the ``Trade`` object, the callback. No network.
- ``live``: a subclass of ``Binance`` whose WebSocket endpoint is the sender's URL,
  run by its own ``Feed.run()`` (its connection handler, its ``websockets`` client):
  frames off the socket to the callback, as a cryptofeed user gets them. Its
  ``WSAsyncConn`` refuses any address but ``wss://``; the check is passed for the
  loopback ``ws://`` sender (TLS would make its receive dearer than wrdata's), nothing
  else of it is changed.

Prints one JSON line: frames, seconds (wall) and CPU seconds of this process from the
first to the last trade.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from cryptofeed import connection as cf_connection  # noqa: E402
from cryptofeed.connection import WebsocketEndpoint  # noqa: E402
from cryptofeed.defines import TRADES  # noqa: E402
from cryptofeed.exchanges import Binance  # noqa: E402
from cryptofeed.symbols import Symbols  # noqa: E402

from bench.frames import aggtrade_frames  # noqa: E402

EXCHANGE_INFO = {"symbols": [{"symbol": "BTCUSDT", "status": "TRADING", "baseAsset": "BTC", "quoteAsset": "USDT",
                              "filters": [{"filterType": "PRICE_FILTER", "tickSize": "0.01"}]}]}


def set_symbols() -> None:
    syms, info = Binance._parse_symbol_data(EXCHANGE_INFO)
    Symbols.set(Binance.id, syms, info)


class _Conn:
    uuid = "bench"


async def parse(n: int) -> dict:
    frames = [f.decode() for f in aggtrade_frames(n)]
    count = 0

    async def on_trade(t, ts):
        nonlocal count
        count += 1

    set_symbols()
    feed = Binance(symbols=["BTC-USDT"], channels=[TRADES], callbacks={TRADES: on_trade})
    conn = _Conn()
    handler = feed.message_handler
    await handler(frames[0], conn, time.time())  # warm up
    count = 0
    w0, c0 = time.perf_counter(), time.process_time()
    for f in frames:
        await handler(f, conn, 1.0)
    w, c = time.perf_counter() - w0, time.process_time() - c0
    assert count == n, (count, n)
    return {"frames": n, "wall": w, "cpu": c}


async def live(url: str, n: int) -> dict:
    set_symbols()
    state = {"n": 0}
    done = asyncio.get_running_loop().create_future()

    async def on_trade(t, ts):
        k = state["n"] = state["n"] + 1
        if k == 1:
            state["w0"], state["c0"] = time.perf_counter(), time.process_time()
        elif k == n and not done.done():
            done.set_result((time.perf_counter(), time.process_time()))

    class Local(Binance):
        websocket_endpoints = [WebsocketEndpoint(url)]

    init = cf_connection.WSAsyncConn.__init__

    def loopback_init(self, address, *a, **kw):
        plain = address.startswith("ws://127.0.0.1")
        init(self, "wss://" + address[5:] if plain else address, *a, **kw)
        if plain:
            self.address = address

    cf_connection.WSAsyncConn.__init__ = loopback_init

    feed = Local(symbols=["BTC-USDT"], channels=[TRADES], callbacks={TRADES: on_trade}, timeout=-1)
    stop = asyncio.Event()
    task = asyncio.create_task(feed.run(stop))
    try:
        w1, c1 = await asyncio.wait_for(done, 600)
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, 10)
        except (Exception, asyncio.CancelledError):  # noqa: BLE001 - the figure is taken
            task.cancel()
    return {"frames": n - 1, "wall": w1 - state["w0"], "cpu": c1 - state["c0"], "address": feed.address}


def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    from importlib.metadata import version

    mode = sys.argv[1]
    if mode == "parse":
        out = asyncio.run(parse(int(sys.argv[2])))
    else:
        out = asyncio.run(live(sys.argv[2], int(sys.argv[3])))
    out.update(python=sys.version.split()[0], cryptofeed=version("cryptofeed"))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
