"""A TCP proxy on loopback that adds network latency and outages in front of a local server.

Used in front of an S3 API server (moto) to test and measure what object stores do to
capture and replay: a round trip of ``latency`` seconds on every request (half each way,
without limiting throughput: data is delayed, not throttled), and outages
(:meth:`NetProxy.down`: open connections are reset and new ones refused until
:meth:`NetProxy.up`). Runs its own event loop on a thread, so synchronous code (pyarrow's
S3 client) can be put behind it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import threading

log = logging.getLogger("wrdata.sim.netproxy")


class NetProxy:
    def __init__(self, target_host: str, target_port: int, *, latency: float = 0.0, host: str = "127.0.0.1", port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.latency = latency
        self.host = host
        self.port = port
        self.connections = 0  # accepted so far
        self._down = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._open: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> NetProxy:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, self.host, self.port))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="wrdata-netproxy", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is None:
            return

        async def close() -> None:
            self._reset_all()
            if self._server is not None:
                self._server.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        self._loop = None

    def down(self) -> None:
        """Reset every open connection and refuse new ones (an outage)."""
        self._down = True
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._async_reset(), self._loop).result(5)

    def up(self) -> None:
        self._down = False

    async def _async_reset(self) -> None:
        self._reset_all()

    def _reset_all(self) -> None:
        for w in list(self._open):
            _abort(w)
        self._open.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self._down:
            _abort(writer)
            return
        try:
            ur, uw = await asyncio.open_connection(*self.target)
        except OSError:
            _abort(writer)
            return
        self._open.update((writer, uw))
        try:
            await asyncio.gather(self._pipe(reader, uw), self._pipe(ur, writer))
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            for w in (writer, uw):
                self._open.discard(w)
                try:
                    w.close()
                except Exception:  # noqa: BLE001 - closing a reset connection
                    pass

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue()

        async def send() -> None:
            while True:
                due, data = await q.get()
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                if not data:
                    if w.can_write_eof():
                        w.write_eof()
                    return
                w.write(data)
                await w.drain()

        sender = asyncio.ensure_future(send())
        try:
            while True:
                data = await r.read(256 * 1024)
                q.put_nowait((loop.time() + self.latency / 2, data))
                if not data:
                    break
            await sender
        finally:
            sender.cancel()


def _abort(w: asyncio.StreamWriter) -> None:
    # SO_LINGER 0: close with RST, as a dead peer or a dropped route looks to the client
    sock = w.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    w.transport.abort()
