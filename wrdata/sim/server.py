"""Shared machinery of the venue simulators: one port for WebSocket and REST, a market
clock, fan-out that encodes once per stream, per-connection accounting and faults.

A venue simulator subclasses :class:`SimServer` and provides:

``ws_path_ok(path, params) -> int | None``
    Vet an upgrade request (decoded path, query parameters): ``None`` accepts it, an
    HTTP status refuses it (404 for unknown paths, 400 for bad parameters).
``async serve_connection(conn)``
    The protocol on one connection: read ``conn.path``/``conn.query``, subscribe with
    ``conn.subscribe(stream)``, answer control messages (``async for msg in conn``),
    send replies with ``conn.send(...)``. Return (or raise) to end the session.
``on_market_events(events)`` and ``on_clock(now_ns)``
    Turn market events into frames and publish them with ``self.publish(stream,
    encode)``; periodic streams (klines, depth snapshots) are pushed from ``on_clock``.
``publish_recorded(frame)``
    Replay: push one recorded frame (see "Feeding recorded frames" below).
``rest_error(status, kind, retry_after)``
    The venue's body for REST faults (429/418/5xx) and unknown paths.
REST routes
    ``self.route("/api/v3/depth", handler)``; a handler takes a :class:`RestRequest` and
    returns a :class:`RestResponse` (``json_response(obj)``) or raises :class:`RestError`.

What the base class does for every venue
-----------------------------------------
* ``async start() -> url`` (``ws://host:port``), ``stop()``, ``async with``; ``.url``,
  ``.rest_url`` (``http://host:port``); ``host`` 127.0.0.1 and ``port`` 0 (ephemeral)
  by default.
* Plain HTTP GETs on the same port are answered from ``process_request`` (JSON bodies,
  ``Content-Type``, ``Content-Length``, ``Connection: close``); upgrade requests go on to
  the WebSocket handshake.
* Each connection has a writer task and an outgoing queue: publishing never waits on a
  slow client, and a frame is encoded once per stream (and per framing variant, e.g.
  Binance raw vs combined, ``conn.variant``) however many subscribers get it. Frames are
  sent as text frames from UTF-8 bytes (binary frames when ``conn.binary``); no
  compression is negotiated, so those bytes go on the wire. Venues whose envelope holds
  per-connection state set ``per_connection_framing`` and wrap the shared body in
  ``frame_for(conn, stream, body)``.
* Server pings every ``ping_interval`` s and closes a connection whose pong does not come
  within ``pong_timeout`` s; an incoming-message rate limit (``msg_limit`` per
  ``msg_window`` s, counting text, binary, ping and pong frames) closes with the venue's
  code; both are off with ``None``.
* Faults (:mod:`wrdata.sim.faults`): ``drop_after``, ``malformed_every``, ``lifetime``,
  rejected upgrades, withheld trades, REST 429/418/5xx and short pages; per connection
  ``conn.drop()``, ``conn.stall()``/``conn.resume()``, ``conn.send_malformed()``.
* Accounting: ``conn.sent`` (frames queued), ``conn.sent_by_stream``,
  ``conn.received``, ``conn.malformed_sent``; ``sim.sent_by_stream`` over all
  connections; ``sim.connections`` (open) and ``sim.history`` (every connection ever);
  ``sim.rest_log`` (path, query, status) of every REST request.

Feeding recorded frames
-----------------------
A simulator is fed by a :class:`Feed`. :class:`MarketFeed` (the default) drives the
seeded :class:`~wrdata.sim.market.SyntheticMarket` from the wall clock: every ``tick``
seconds it asks the market for the events up to now and calls ``on_market_events``, then
``on_clock``. :class:`FrameFeed` instead pushes recorded frames, exact bytes, paced by
their recorded receive times (``speed=1`` real time, ``10`` ten times faster, ``None``
as fast as possible)::

    frames = [RecordedFrame(ts_ns=..., payload=b'{"stream":"btcusdt@trade","data":{...}}')]
    sim = BinanceSimulator(feed=FrameFeed(frames, speed=None))

For each frame it calls ``sim.publish_recorded(frame)``; the venue works out the stream
(Binance: from the combined envelope's ``stream``, or ``frame.stream``) and sends the
recorded bytes to that stream's subscribers (Binance sends the envelope to combined
connections and the exact ``data`` bytes to raw ones). ``on_clock`` is not called, since a
recording already holds the periodic frames. Recorded REST responses (depth snapshots,
exchangeInfo) can be served with ``sim.set_rest_override(path, body)``. ``replay serve``
reads the recording's ``raw`` table into ``RecordedFrame``s and hands them to a
``FrameFeed``; ``await feed.done`` tells when the recording is exhausted.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import time
import urllib.parse
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import Opcode
from websockets.http11 import Request, Response

from .faults import Faults, RestFault
from .market import MarketEvent, SyntheticMarket

__all__ = [
    "Feed",
    "FrameFeed",
    "MarketFeed",
    "RecordedFrame",
    "RestError",
    "RestRequest",
    "RestResponse",
    "SimConnection",
    "SimServer",
    "json_response",
]

log = logging.getLogger(__name__)

_json_encode = msgspec.json.Encoder().encode
_REASONS = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    418: "I'm a teapot",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


# ---------------------------------------------------------------------------------------------
# REST


@dataclass
class RestRequest:
    path: str
    query: str
    params: dict[str, str]  # last value wins
    headers: Headers
    remote: Any = None

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.params.get(name, default)


@dataclass
class RestResponse:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] | None = None
    content_type: str = "application/json"


class RestError(Exception):
    """Raised by a route handler: answered with ``status`` and the JSON ``body``."""

    def __init__(self, status: int, body: Any, headers: Mapping[str, str] | None = None):
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


def json_response(obj: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> RestResponse:
    return RestResponse(status, obj if isinstance(obj, bytes) else _json_encode(obj), dict(headers or {}))


# ---------------------------------------------------------------------------------------------
# connections

_DROP = object()  # writer queue sentinels
_STOP = object()


class _WS(ServerConnection):
    """websockets' connection, reporting every incoming frame (pings and pongs included)."""

    sim_conn: SimConnection | None = None

    def process_event(self, event: Any) -> None:
        super().process_event(event)
        conn = self.sim_conn
        if conn is not None and getattr(event, "opcode", None) in _COUNTED:
            conn._on_frame(event.opcode)


_COUNTED = (Opcode.TEXT, Opcode.BINARY, Opcode.PING, Opcode.PONG)


class SimConnection:
    """One client connection: subscriptions, an outgoing queue, counters and faults."""

    _ids = itertools.count(1)

    def __init__(self, server: SimServer, ws: _WS):
        self.id = next(self._ids)
        self.server = server
        self.ws = ws
        raw_path = ws.request.path if ws.request else "/"
        path, _, query = raw_path.partition("?")
        self.raw_path = raw_path
        self.path = urllib.parse.unquote(path)
        self.query = query
        self.params = {k: v for k, v in urllib.parse.parse_qsl(query, keep_blank_values=True)}
        self.subscriptions: dict[str, None] = {}  # ordered set
        self.variant: str = ""  # the framing this connection wants (venue-defined)
        self.binary = False  # send data as binary frames (e.g. Alpaca's MessagePack framing)
        self.props: dict[str, Any] = {}  # venue session state
        self.opened_at = time.monotonic()
        self.sent = 0
        self.sent_by_stream: collections.Counter[str] = collections.Counter()
        self.received = 0
        self.received_frames: collections.Counter[str] = collections.Counter()
        self.malformed_sent = 0
        self.discarded = 0  # frames not sent because the connection was stalled or dropping
        self.stalled = False
        self.closing = False
        self.close_code: int | None = None  # set when the server closes (or drops: 1006)
        self.close_reason: str = ""
        self._queue: collections.deque[Any] = collections.deque()
        self._wake = asyncio.Event()
        self._unstalled = asyncio.Event()
        self._unstalled.set()
        self._recent: collections.deque[float] = collections.deque()
        self._tasks: list[asyncio.Task] = []

    def __repr__(self) -> str:
        return f"<SimConnection #{self.id} {self.raw_path} sent={self.sent} subs={len(self.subscriptions)}>"

    # -- subscriptions --
    def subscribe(self, stream: str) -> bool:
        if stream in self.subscriptions:
            return False
        self.subscriptions[stream] = None
        self.server._subs.setdefault(stream, set()).add(self)
        self.server.on_subscribe(stream)
        return True

    def unsubscribe(self, stream: str) -> bool:
        if stream not in self.subscriptions:
            return False
        del self.subscriptions[stream]
        subs = self.server._subs.get(stream)
        if subs is not None:
            subs.discard(self)
            if not subs:
                del self.server._subs[stream]
        return True

    # -- sending --
    def send(self, payload: bytes | str, stream: str | None = None) -> bool:
        """Queue one text frame. Returns False if it was discarded (stalled, closing)."""
        if self.closing or self.stalled:
            self.discarded += 1
            return False
        if isinstance(payload, str):
            payload = payload.encode()
        q = self._queue
        q.append(payload)
        self.sent += 1
        if stream is not None:
            self.sent_by_stream[stream] += 1
        faults = self.server.faults
        every = faults.malformed_every
        if every and self.sent % every == 0:
            q.append(faults.malformed_payload)
            self.malformed_sent += 1
        if faults.drop_after is not None and self.sent >= faults.drop_after:
            self.closing = True
            self.close_code = 1006
            self.close_reason = "drop_after"
            q.append(_DROP)
        elif len(q) > self.server.max_queue:
            log.warning("connection %s: %d frames queued, client too slow: dropping it", self.id, len(q))
            self.closing = True
            self.close_code = 1006
            self.close_reason = "slow client"
            q.clear()
            q.append(_DROP)
        self._wake.set()
        return True

    def send_malformed(self, payload: bytes | None = None) -> None:
        """Queue a malformed frame now (default: a truncated JSON object)."""
        if self.closing or self.stalled:
            return
        self._queue.append(payload if payload is not None else self.server.faults.malformed_payload)
        self.malformed_sent += 1
        self._wake.set()

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close after the frames already queued (a close frame, then TCP close)."""
        if self.closing:
            return
        self.closing = True
        self.close_code, self.close_reason = code, reason
        self._queue.append((_STOP, code, reason))
        self._wake.set()

    def drop(self) -> None:
        """Abort the TCP connection now: no close frame (what a crashed server or a cut cable looks like)."""
        self.closing = True
        if self.close_code is None:
            self.close_code, self.close_reason = 1006, "dropped"
        self._queue.clear()
        self.ws.transport.abort()

    def stall(self) -> None:
        """Stop sending everything (data, replies, pings, pongs) but keep TCP open."""
        if self.stalled:
            return
        self.stalled = True
        self._unstalled.clear()
        self.discarded += len(self._queue)
        self._queue.clear()
        # not reading means websockets answers no ping and no close either
        with contextlib.suppress(Exception):
            self.ws.transport.pause_reading()

    def resume(self) -> None:
        if not self.stalled:
            return
        self.stalled = False
        self._unstalled.set()
        with contextlib.suppress(Exception):
            self.ws.transport.resume_reading()

    # -- receiving --
    async def recv(self) -> str | bytes:
        return await self.ws.recv()

    def __aiter__(self) -> AsyncIterator[str | bytes]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[str | bytes]:
        try:
            while True:
                yield await self.ws.recv()
        except ConnectionClosed:
            return

    def _on_frame(self, opcode: Opcode) -> None:
        self.received += 1
        self.received_frames[opcode.name.lower()] += 1
        srv = self.server
        if srv.msg_limit is None or self.closing:
            return
        now = time.monotonic()
        recent = self._recent
        recent.append(now)
        while recent and recent[0] <= now - srv.msg_window:
            recent.popleft()
        if len(recent) > srv.msg_limit:
            log.info("connection %s: %d messages in %.1fs: closing", self.id, len(recent), srv.msg_window)
            code, reason = srv.msg_limit_close
            # the venue closes at once, ahead of queued data
            self._queue.clear()
            self.close(code, reason)

    # -- tasks --
    async def _writer(self) -> None:
        ws = self.ws
        q = self._queue
        try:
            while True:
                if self.stalled:
                    await self._unstalled.wait()
                    continue
                if not q:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                item = q.popleft()
                if item is _DROP:
                    ws.transport.abort()
                    return
                if type(item) is tuple:
                    _, code, reason = item
                    await ws.close(code, reason)
                    return
                await ws.send(item, text=not self.binary)
        except ConnectionClosed:
            return

    async def _keepalive(self, interval: float, timeout: float | None) -> None:
        ws = self.ws
        waiting: list[tuple[float, asyncio.Future]] = []
        try:
            while True:
                await asyncio.sleep(min(interval, timeout or interval) if waiting else interval)
                now = time.monotonic()
                waiting = [(t, f) for t, f in waiting if not f.done()]
                if timeout is not None and waiting and now - waiting[0][0] >= timeout:
                    log.info("connection %s: no pong in %.1fs: closing", self.id, timeout)
                    code, reason = self.server.pong_timeout_close
                    self._queue.clear()
                    self.close(code, reason)
                    return
                if self.stalled or self.closing:
                    continue
                if not waiting or now - waiting[-1][0] >= interval:
                    fut = await ws.ping()
                    waiting.append((now, fut))
        except ConnectionClosed:
            return

    async def _lifetime(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        code, reason = self.server.lifetime_close
        log.info("connection %s: lifetime %.1fs over: closing", self.id, seconds)
        self.close(code, reason)


# ---------------------------------------------------------------------------------------------
# feeds


@dataclass
class RecordedFrame:
    """One recorded frame: receive time (ns), the exact bytes, and where it came from.

    ``conn`` is the recorded connection's id (``raw.conn``) when known: a venue whose
    envelope counts a connection's messages (Coinbase's ``sequence_num``) tells from it
    where the recording lost messages, so its clients can be told too."""

    ts_ns: int
    payload: bytes
    url: str | None = None
    stream: str | None = None
    conn: int | None = None


class Feed:
    """What drives a simulator. ``run`` is started by ``SimServer.start`` and cancelled by ``stop``."""

    def __init__(self) -> None:
        self.done: asyncio.Future | None = None

    async def run(self, sim: SimServer) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class MarketFeed(Feed):
    """The synthetic market on the wall clock: events at ``t0 + offset``, checked every ``tick`` s.

    ``warmup`` seconds of market time are generated before the server starts (their events
    are not streamed): REST history and books are populated from the first request.
    """

    def __init__(self, market: SyntheticMarket, tick: float = 0.005, warmup: float = 2.0):
        super().__init__()
        self.market = market
        self.tick = tick
        self.warmup = warmup
        self._mono0 = 0.0

    def prepare(self) -> None:
        t0 = time.time_ns() - int(self.warmup * 1e9)
        if self.market.t0_ns is None or self.market.seq == 0:
            self.market.start(t0)
        self._mono0 = time.monotonic() - (time.time_ns() - self.market.t0_ns) / 1e9
        self.market.advance(self.now_offset_ns())

    def now_offset_ns(self) -> int:
        return int((time.monotonic() - self._mono0) * 1e9)

    def now_ns(self) -> int:
        return self.market.t0_ns + self.now_offset_ns()

    async def run(self, sim: SimServer) -> None:
        market = self.market
        while True:
            await asyncio.sleep(self.tick)
            off = self.now_offset_ns()
            events = market.advance(off)
            try:
                if events:
                    sim.on_market_events(events)
                sim.on_clock(market.t0_ns + off)
            except Exception:
                # a venue bug must not silently stop the clock for every client: log, go on
                log.exception("%s: publishing market events failed", sim.venue)


class FrameFeed(Feed):
    """Recorded frames, exact bytes, paced by their ``ts_ns`` gaps (``speed=None``: no pacing)."""

    def __init__(
        self, frames: Iterable[RecordedFrame] | AsyncIterable[RecordedFrame], speed: float | None = 1.0, start_delay: float = 0.0
    ):
        super().__init__()
        self.frames = frames
        self.speed = speed
        self.start_delay = start_delay
        self.published = 0
        self.failed = 0  # frames the venue could not serve (logged; the feed goes on)

    async def _iter(self) -> AsyncIterator[RecordedFrame]:
        if isinstance(self.frames, AsyncIterable):
            async for f in self.frames:
                yield f
        else:
            for f in self.frames:
                yield f

    async def run(self, sim: SimServer) -> None:
        loop = asyncio.get_running_loop()
        self.done = loop.create_future()
        if self.start_delay:
            await asyncio.sleep(self.start_delay)
        first_ts: int | None = None
        start = loop.time()
        n = 0
        try:
            async for frame in self._iter():
                if self.speed:
                    if first_ts is None:
                        first_ts = frame.ts_ns
                    due = start + (frame.ts_ns - first_ts) / 1e9 / self.speed
                    delay = due - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                elif n % 256 == 255:
                    await asyncio.sleep(0)  # let writers run
                try:
                    sim.publish_recorded(frame)
                except Exception:
                    # a venue bug must not stop the recording for every client (nor leave
                    # ``done`` pending forever): logged, counted, and the feed goes on
                    self.failed += 1
                    if self.failed == 1:
                        log.exception("%s: serving a recorded frame failed: %.200r", sim.venue, frame.payload)
                n += 1
                self.published = n
        except Exception as e:  # the frames themselves could not be read: whoever waits is told
            if not self.done.done():
                self.done.set_exception(e)
            return
        if self.failed:
            log.error("%s: %d of %d recorded frames could not be served", sim.venue, self.failed, n)
        if not self.done.done():
            self.done.set_result(n)


def _canonical(path: str) -> str:
    """``path?b=2&a=1`` → ``path?a=1&b=2``: clients order query parameters differently."""
    p, sep, q = path.partition("?")
    if not sep:
        return p
    return p + "?" + "&".join(sorted(q.split("&")))


# ---------------------------------------------------------------------------------------------
# the server


class SimServer:
    """Base of every venue simulator (see the module docstring)."""

    venue = "sim"
    #: close code and reason when the incoming-message rate is exceeded / pong missing / lifetime over
    msg_limit_close: tuple[int, str] = (1008, "Too many requests")
    pong_timeout_close: tuple[int, str] = (1011, "keepalive ping timeout")
    lifetime_close: tuple[int, str] = (1000, "")

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        feed: Feed | None = None,
        faults: Faults | None = None,
        ping_interval: float | None = 20.0,
        pong_timeout: float | None = 60.0,
        msg_limit: int | None = None,
        msg_window: float = 1.0,
        max_queue: int = 100_000,
        max_size: int | None = 1 << 20,
    ):
        self.host = host
        self.port = port
        self.feed = feed
        self.faults = faults or Faults()
        self.ping_interval = ping_interval
        self.pong_timeout = pong_timeout
        self.msg_limit = msg_limit
        self.msg_window = msg_window
        self.max_queue = max_queue
        self.max_size = max_size
        self.connections: set[SimConnection] = set()
        self.history: list[SimConnection] = []
        self.sent_by_stream: collections.Counter[str] = collections.Counter()
        self.rest_log: list[tuple[str, str, int]] = []
        self.rejected_upgrades = 0
        self._subs: dict[str, set[SimConnection]] = {}
        self._routes: dict[str, Callable[[RestRequest], RestResponse]] = {}
        self._overrides: dict[str, RestResponse] = {}
        self._server: Server | None = None
        self._feed_task: asyncio.Task | None = None
        self._conn_waiters: list[asyncio.Future] = []

    # -- venue hooks --
    def ws_path_ok(self, path: str, params: dict[str, str]) -> int | None:
        return None

    async def serve_connection(self, conn: SimConnection) -> None:
        async for _ in conn:
            pass

    def on_market_events(self, events: list[MarketEvent]) -> None:
        pass

    def on_clock(self, now_ns: int) -> None:
        pass

    def on_subscribe(self, stream: str) -> None:
        """A stream got a subscriber (venues start per-stream state lazily here)."""

    #: set True when every frame carries per-connection state (Coinbase's ``sequence_num``):
    #: ``publish`` then passes the once-encoded body through ``frame_for`` per subscriber
    per_connection_framing = False

    def frame_for(self, conn: SimConnection, stream: str, body: bytes) -> bytes:
        """Wrap a shared body for one connection (only with ``per_connection_framing``).

        Keep it to cheap byte concatenation: ``b'{"sequence_num":' + n + b',' + body[1:]``.
        """
        return body

    def publish_recorded(self, frame: RecordedFrame) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot serve recorded frames")

    def http_reject(self, status: int) -> Response:
        """The answer to a refused upgrade request."""
        return self._http_response(json_response({"error": _REASONS.get(status, "refused")}, status))

    def rest_error(self, status: int, kind: str, retry_after: int | None = None) -> RestResponse:
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        return json_response({"error": kind}, status, headers)

    # -- REST --
    def route(self, path: str, handler: Callable[[RestRequest], RestResponse]) -> None:
        self._routes[path] = handler

    def set_rest_override(self, path: str, body: bytes | None, status: int = 200) -> None:
        """Answer GET ``path`` with fixed bytes (e.g. a recorded depth snapshot); None removes it.

        ``path`` may carry a query (``/api/v3/depth?symbol=BTCUSDT&limit=1000``): it then
        answers only that exact query, ahead of an override of the bare path."""
        path = _canonical(path)
        if body is None:
            self._overrides.pop(path, None)
        else:
            self._overrides[path] = RestResponse(status, body)

    def _http_response(self, resp: RestResponse) -> Response:
        headers = Headers()
        headers["Content-Type"] = resp.content_type
        for k, v in (resp.headers or {}).items():
            headers[k] = v
        headers["Content-Length"] = str(len(resp.body))
        headers["Connection"] = "close"  # websockets closes the TCP connection after a non-101 answer
        return Response(resp.status, _REASONS.get(resp.status, "Unknown"), headers, resp.body)

    def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        path, _, query = request.path.partition("?")
        if request.headers.get("Upgrade", "").lower() == "websocket":
            if self.faults.rejecting():
                self.rejected_upgrades += 1
                return self._http_response(json_response({"error": "connection rejected"}, self.faults.reject_status))
            params = {k: v for k, v in urllib.parse.parse_qsl(query, keep_blank_values=True)}
            status = self.ws_path_ok(urllib.parse.unquote(path), params)
            if status is not None:
                return self.http_reject(status)
            return None
        # plain HTTP: collapse '//' (some SDKs join base and path with an extra slash)
        while "//" in path:
            path = path.replace("//", "/")
        resp = self._rest(path, query, request)
        self.rest_log.append((path, query, resp.status))
        return self._http_response(resp)

    def _rest(self, path: str, query: str, request: Request) -> RestResponse:
        # an override for this exact query (a recorded depth snapshot of one symbol) first
        override = (self._overrides.get(_canonical(f"{path}?{query}")) if query else None) or self._overrides.get(path)
        handler = self._routes.get(path)
        if handler is None and override is None:
            return self.rest_error(404, "not_found")
        fault: RestFault | None = self.faults.rest_fault()
        if fault is not None:
            return self.rest_error(fault.status, fault.kind, fault.retry_after)
        if override is not None:
            return override
        params = {k: v for k, v in urllib.parse.parse_qsl(query, keep_blank_values=True)}
        req = RestRequest(path, query, params, request.headers)
        try:
            return handler(req)  # type: ignore[misc]
        except RestError as e:
            return json_response(e.body, e.status, e.headers)
        except Exception:
            log.exception("%s: REST %s?%s failed", self.venue, path, query)
            return self.rest_error(500, "internal")

    # -- fan-out --
    def has_subscribers(self, stream: str) -> bool:
        return stream in self._subs

    def subscribed(self) -> bool:
        """Has any open connection subscribed to anything? (``replay serve`` starts then.)"""
        return bool(self._subs)

    def subscribers(self, stream: str) -> set[SimConnection]:
        return self._subs.get(stream, set())

    def publish(self, stream: str, payload: bytes | Callable[[str], bytes]) -> int:
        """Send one frame of ``stream`` to its subscribers; returns how many got it.

        ``payload`` is the bytes, or ``encode(variant) -> bytes`` called once per framing
        variant present among the subscribers (so nothing is encoded per subscriber).
        """
        subs = self._subs.get(stream)
        if not subs:
            return 0
        if self.per_connection_framing:
            cache_pc: dict[str, bytes] = {}
            for conn in subs:
                v = conn.variant
                b = cache_pc.get(v)
                if b is None:
                    b = cache_pc[v] = payload(v) if callable(payload) else payload
                conn.send(self.frame_for(conn, stream, b), stream)
        elif callable(payload):
            cache: dict[str, bytes] = {}
            for conn in subs:
                v = conn.variant
                b = cache.get(v)
                if b is None:
                    b = cache[v] = payload(v)
                conn.send(b, stream)
        else:
            for conn in subs:
                conn.send(payload, stream)
        n = len(subs)
        self.sent_by_stream[stream] += n
        return n

    def broadcast(self, payload: bytes | Callable[[SimConnection], bytes]) -> None:
        """Send to every open connection (server notices)."""
        for conn in list(self.connections):
            conn.send(payload(conn) if callable(payload) else payload)

    # -- server-wide faults --
    def drop_all(self) -> None:
        for conn in list(self.connections):
            conn.drop()

    def stall_all(self) -> None:
        for conn in list(self.connections):
            conn.stall()

    def resume_all(self) -> None:
        for conn in list(self.connections):
            conn.resume()

    def inject_malformed(self, payload: bytes | None = None) -> None:
        for conn in list(self.connections):
            conn.send_malformed(payload)

    def close_all(self, code: int = 1001, reason: str = "") -> None:
        for conn in list(self.connections):
            conn.close(code, reason)

    async def wait_for_connections(self, n: int = 1, timeout: float = 5.0) -> list[SimConnection]:
        """Wait until ``n`` connections have been opened in total (tests)."""
        async with asyncio.timeout(timeout):
            while len(self.history) < n:
                fut = asyncio.get_running_loop().create_future()
                self._conn_waiters.append(fut)
                await fut
        return self.history[:n]

    # -- lifecycle --
    @property
    def url(self) -> str:
        return f"ws://{self._url_host()}:{self.port}"

    @property
    def rest_url(self) -> str:
        return f"http://{self._url_host()}:{self.port}"

    def _url_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    def now_ns(self) -> int:
        feed = self.feed
        if isinstance(feed, MarketFeed):
            return feed.now_ns()
        return time.time_ns()

    async def start(self) -> str:
        if self._server is not None:
            return self.url
        if isinstance(self.feed, MarketFeed):
            self.feed.prepare()
        self._server = await serve(
            self._handler,
            self.host,
            self.port,
            process_request=self._process_request,
            create_connection=_WS,
            compression=None,  # the bytes encoded once per stream are what goes on the wire
            ping_interval=None,  # our own keepalive: venue intervals, stall-aware
            ping_timeout=None,
            close_timeout=1.0,
            max_size=self.max_size,
            server_header=None,
        )
        sock = next(iter(self._server.sockets))
        self.port = sock.getsockname()[1]
        if self.feed is not None:
            self._feed_task = asyncio.create_task(self.feed.run(self), name=f"{self.venue}-feed")
        log.info("%s simulator on %s", self.venue, self.url)
        return self.url

    async def stop(self) -> None:
        if self._feed_task is not None:
            self._feed_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._feed_task
            self._feed_task = None
        if self._server is not None:
            for conn in list(self.connections):
                conn.closing = True
                conn.ws.transport.abort()
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    async def __aenter__(self) -> SimServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def serve_forever(self) -> None:
        await self.start()
        try:
            await asyncio.Future()
        finally:
            await self.stop()

    async def _handler(self, ws: _WS) -> None:
        conn = SimConnection(self, ws)
        ws.sim_conn = conn
        self.connections.add(conn)
        self.history.append(conn)
        for fut in self._conn_waiters:
            if not fut.done():
                fut.set_result(None)
        self._conn_waiters.clear()
        tasks = [asyncio.create_task(conn._writer(), name=f"sim-writer-{conn.id}")]
        if self.ping_interval:
            tasks.append(asyncio.create_task(conn._keepalive(self.ping_interval, self.pong_timeout)))
        if self.faults.lifetime:
            tasks.append(asyncio.create_task(conn._lifetime(self.faults.lifetime)))
        conn._tasks = tasks
        try:
            await self.serve_connection(conn)
            # the session ended on our side (e.g. a close was queued): let the writer finish it
            await asyncio.wait([tasks[0], asyncio.ensure_future(ws.wait_closed())], return_when=asyncio.FIRST_COMPLETED)
            await ws.wait_closed()
        except ConnectionClosed:
            pass
        finally:
            for t in tasks:
                t.cancel()
            for stream in list(conn.subscriptions):
                conn.unsubscribe(stream)
            self.connections.discard(conn)
            if conn.close_code is None and ws.close_code is not None:
                conn.close_code = ws.close_code
