"""A loopback TCP proxy that does to a connection what networks do: cut it, delay it,
black-hole it, or let bytes through a few at a time.

Put it between any client and any server (a simulator, a TWS API port) to test how
the client notices and recovers::

    async with TcpProxy(sim.host, sim.port) as proxy:
        ds = DataStream(endpoints={"binance": proxy.url("ws")})
        ...
        proxy.blackhole()          # half-open: sockets stay up, nothing moves
        proxy.heal()               # back to normal for new and existing connections

Faults (each applies at once to open connections, and to new ones until changed):

``cut()``            abort every open connection (TCP reset: no FIN, no close frame)
``blackhole()``      keep the sockets open but forward nothing, either way (a half-open
                     connection: a dead NAT, a pulled cable behind a switch)
``delay(seconds)``   deliver every chunk ``seconds`` late, each direction (order kept;
                     latency, not a throughput limit: ``delay(rtt / 2)`` adds a round trip)
``drip(nbytes, interval)``  forward at most ``nbytes`` every ``interval`` seconds per
                     direction, reading no faster (the sender feels the back-pressure)
``refuse(seconds)``  close new connections at once for ``seconds`` (what a load balancer
                     in front of a restarting venue does); ``refuse(None)`` until ``heal()``
``heal()``           clear every fault

Synchronous code (pyarrow's S3 client in front of an S3 server) runs the proxy on a
thread of its own with :class:`ThreadedTcpProxy`.

Counters: ``accepted``, ``refused``, ``bytes_up`` (client to server), ``bytes_down``,
``open`` (live connection pairs); ``events`` lists ``(monotonic time, what)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time

__all__ = ["TcpProxy", "ThreadedTcpProxy"]

log = logging.getLogger(__name__)

_CHUNK = 65536


class _Pair:
    __slots__ = ("client", "upstream", "tasks")

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream = upstream
        self.tasks: list[asyncio.Task] = []

    def abort(self) -> None:
        for w in (self.client, self.upstream):
            with contextlib.suppress(Exception):
                w.transport.abort()


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.host = host
        self.port = port
        self.accepted = 0
        self.refused = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self.events: list[tuple[float, str]] = []
        self._pairs: set[_Pair] = set()
        self._server: asyncio.AbstractServer | None = None
        self._blackholed = False
        self._delay = 0.0
        self._drip: tuple[int, float] | None = None
        self._refuse_until: float | None = 0.0
        self._changed = asyncio.Event()

    # -- faults ---------------------------------------------------------------------------
    def cut(self) -> int:
        """Abort every open connection now; returns how many."""
        pairs = list(self._pairs)
        for p in pairs:
            p.abort()
        self._note(f"cut {len(pairs)}")
        return len(pairs)

    def blackhole(self) -> None:
        self._blackholed = True
        self._note("blackhole")

    def delay(self, seconds: float) -> None:
        self._delay = max(0.0, float(seconds))
        self._note(f"delay {seconds}")

    def drip(self, nbytes: int = 1, interval: float = 0.1) -> None:
        if nbytes < 1 or interval <= 0:
            raise ValueError("drip needs nbytes >= 1 and a positive interval")
        self._drip = (int(nbytes), float(interval))
        self._note(f"drip {nbytes}/{interval}s")

    def refuse(self, seconds: float | None) -> None:
        self._refuse_until = None if seconds is None else time.monotonic() + seconds
        self._note(f"refuse {seconds}")

    def heal(self) -> None:
        self._blackholed = False
        self._delay = 0.0
        self._drip = None
        self._refuse_until = 0.0
        self._note("heal")

    @property
    def open(self) -> int:
        return len(self._pairs)

    def _note(self, what: str) -> None:
        self.events.append((time.monotonic(), what))
        log.info("proxy :%d %s", self.port, what)
        self._changed.set()

    def _refusing(self) -> bool:
        return self._refuse_until is None or time.monotonic() < self._refuse_until

    # -- lifecycle ----------------------------------------------------------------------------
    def url(self, scheme: str = "ws") -> str:
        """``ws://host:port`` (or another scheme; ``""`` for a bare ``host:port``)."""
        return f"{scheme}://{self.host}:{self.port}" if scheme else f"{self.host}:{self.port}"

    async def start(self) -> TcpProxy:
        if self._server is None:
            self._server = await asyncio.start_server(self._accept, self.host, self.port)
            self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        pairs = list(self._pairs)
        for p in pairs:
            p.abort()
            for t in p.tasks:
                t.cancel()
        for p in pairs:
            await asyncio.gather(*p.tasks, return_exceptions=True)

    async def __aenter__(self) -> TcpProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- plumbing -------------------------------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing():
            self.refused += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError as e:
            log.info("proxy :%d cannot reach %s:%d: %s", self.port, self.target_host, self.target_port, e)
            writer.transport.abort()
            return
        self.accepted += 1
        pair = _Pair(writer, up_writer)
        self._pairs.add(pair)
        loop = asyncio.get_running_loop()
        pair.tasks = [
            loop.create_task(self._pump(reader, up_writer, pair, up=True)),
            loop.create_task(self._pump(up_reader, writer, pair, up=False)),
        ]
        try:
            await asyncio.gather(*pair.tasks, return_exceptions=True)
        finally:
            self._pairs.discard(pair)
            pair.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pair: _Pair, up: bool) -> None:
        # A reading half stamps each chunk with when it is due and a writing half sends it then,
        # so a delay is latency, not a throughput limit; the queue is bounded so a slow reader
        # on the far side still pushes back on the sender.
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(maxsize=16)

        async def read() -> None:
            while True:
                drip = self._drip
                data = await reader.read(drip[0] if drip else _CHUNK)
                if data and self._blackholed:
                    continue  # the bytes vanish; neither side is told
                await chunks.put((loop.time() + self._delay, data))
                if not data:
                    return
                drip = self._drip
                if drip:
                    await asyncio.sleep(drip[1])

        async def send() -> None:
            while True:
                due, data = await chunks.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:  # EOF: pass the close on (unless the line is dead)
                    if not self._blackholed:
                        with contextlib.suppress(Exception):
                            writer.write_eof()
                    return
                if self._blackholed:
                    continue
                writer.write(data)
                if up:
                    self.bytes_up += len(data)
                else:
                    self.bytes_down += len(data)
                await writer.drain()

        halves = [loop.create_task(read()), loop.create_task(send())]
        try:
            await asyncio.gather(*halves)
        except (ConnectionError, OSError):
            pass
        finally:
            for t in halves:
                t.cancel()
            await asyncio.gather(*halves, return_exceptions=True)
        # one side went away: on a dead line the other side must not hear of it
        await self._hold_while_blackholed()
        pair.abort()

    async def _hold_while_blackholed(self) -> None:
        while self._blackholed:
            self._changed.clear()
            await self._changed.wait()


class ThreadedTcpProxy:
    """A :class:`TcpProxy` on an event loop of its own thread, for synchronous clients.

    The faults are the proxy's (``cut``, ``blackhole``, ``delay``, ``drip``, ``refuse``,
    ``heal``), each run on the proxy's loop and waited for; ``down()`` is an outage (open
    connections reset, new ones refused) and ``up()`` ends it::

        with ThreadedTcpProxy(host, port) as proxy:
            fs = pyarrow.fs.S3FileSystem(endpoint_override=proxy.url("http"), ...)
            proxy.down()
    """

    _FAULTS = frozenset({"cut", "blackhole", "delay", "drip", "refuse", "heal"})

    def __init__(self, target_host: str, target_port: int, **kwargs: object) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="wrdata-tcpproxy", daemon=True)
        self._thread.start()
        self.proxy: TcpProxy = self._run(TcpProxy(target_host, target_port, **kwargs).start())

    def _run(self, coro):  # noqa: ANN001, ANN202 - any coroutine, its result
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def __getattr__(self, name: str):  # noqa: ANN204 - a fault, run on the proxy's loop
        if name not in self._FAULTS:
            raise AttributeError(name)
        fault = getattr(self.proxy, name)

        async def call(*args: object):  # noqa: ANN202
            return fault(*args)

        return lambda *args: self._run(call(*args))

    def url(self, scheme: str = "ws") -> str:
        return self.proxy.url(scheme)

    def down(self) -> None:
        self.refuse(None)
        self.cut()

    def up(self) -> None:
        self.heal()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self.proxy.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> ThreadedTcpProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
