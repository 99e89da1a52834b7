"""WebSocket client transports: picows on the hot path, websockets as the fallback.

The runner talks to a transport through four calls (``send``, ``ping``, ``close``,
``closed``) and receives through two callbacks given at connect time:
``on_frame(payload: bytes, ts_recv: int)`` for every complete text or binary message
and ``on_activity(ts)`` for control frames (pings and pongs prove the peer is alive).

Why picows: on this project's bench (``bench/receive.py``) it receives small frames
several times faster than the ``websockets`` asyncio client, and the receive path
is the ceiling of everything downstream. It hands frames to a callback synchronously,
so one frame costs no coroutine switch. ``websockets`` stays as a fallback
(``transport="websockets"``) and is what the simulators use.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ..clock import recv_ns

log = logging.getLogger("wrdata.streaming.transport")

FrameCallback = Callable[[bytes, int], None]
ActivityCallback = Callable[[int], None]


def handshake_status(error: BaseException) -> int | None:
    """The HTTP status of a refused WebSocket upgrade (401, 403, 429, ...), else None.

    picows raises ``WSInvalidStatusError`` (``.response.status``), websockets
    ``InvalidStatus`` (``.response.status_code``).
    """
    resp = getattr(error, "response", None)
    if resp is None:
        return None
    status = getattr(resp, "status_code", None)
    if status is None:
        status = getattr(resp, "status", None)
    try:
        return int(status) if status is not None else None
    except (TypeError, ValueError):
        return None


class _RedactingLogger(logging.LoggerAdapter):
    """websockets logs, at DEBUG, the request line (``GET /?token=...``) and the start of
    every frame; the frames we send include authentication (``{"action":"auth","key":..``).
    Keep credentials out of logs: query values are redacted and frames we send are logged
    by type and size only."""

    def log(self, level, msg, *args, **kwargs):  # type: ignore[override]
        if not self.isEnabledFor(level):
            return
        from .base import redact_url

        if msg == "> %s" and args and getattr(args[0], "opcode", None) is not None and hasattr(args[0], "data"):
            frame = args[0]
            if frame.opcode.name in ("TEXT", "BINARY", "CONT"):
                self.logger.log(level, "> %s [%d bytes, content not logged]", frame.opcode.name, len(frame.data), **kwargs)
                return
        text = redact_url(str(msg) % args if args else str(msg))
        self.logger.log(level, "%s", text, **kwargs)


class TransportClosed(Exception):
    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"connection closed (code {code}{', ' + reason if reason else ''})")
        self.code = code
        self.reason = reason


class Transport:
    """A connected WebSocket; subclasses adapt one library."""

    close_code: int | None = None
    close_reason: str = ""

    def __init__(self) -> None:
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def send(self, data: str | bytes) -> None:
        raise NotImplementedError

    def ping(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        """Drop the connection now (no close handshake)."""
        raise NotImplementedError

    async def close(self, timeout: float = 1.0) -> None:
        raise NotImplementedError

    def _finished(self, code: int | None, reason: str) -> None:
        if not self.done.done():
            self.close_code, self.close_reason = code, reason
            self.done.set_result(None)


# -- picows --------------------------------------------------------------------------

try:  # picows is a dependency, but keep the fallback importable without it
    import picows
    from picows import WSListener, WSMsgType
except ImportError:  # pragma: no cover
    picows = None  # type: ignore[assignment]


if picows is not None:
    _TEXT = WSMsgType.TEXT
    _BINARY = WSMsgType.BINARY
    _CONT = WSMsgType.CONTINUATION
    _CLOSE = WSMsgType.CLOSE

    class _Listener(WSListener):
        __slots__ = ("owner", "on_frame", "on_activity", "parts")

        def __init__(self, owner: PicowsTransport, on_frame: FrameCallback, on_activity: ActivityCallback) -> None:
            self.owner = owner
            self.on_frame = on_frame
            self.on_activity = on_activity
            self.parts: list[bytes] | None = None

        def on_ws_frame(self, transport, frame) -> None:  # type: ignore[override]
            # ts_recv is taken once per frame, as it comes off the socket.
            ts = recv_ns()
            mt = frame.msg_type
            if mt is _TEXT or mt is _BINARY:
                if frame.fin:
                    self.on_frame(frame.get_payload_as_bytes(), ts)
                else:  # fragmented message: collect until the final continuation frame
                    self.parts = [frame.get_payload_as_bytes()]
            elif mt is _CONT:
                if self.parts is not None:
                    self.parts.append(frame.get_payload_as_bytes())
                    if frame.fin:
                        data = b"".join(self.parts)
                        self.parts = None
                        self.on_frame(data, ts)
            elif mt is _CLOSE:
                code = frame.get_close_code()
                self.owner._finished(int(code.value) if code is not None else None, frame.get_close_reason() or "")
                transport.send_close(code)
                transport.disconnect()
            else:  # ping / pong: auto-pong answers pings; both prove the peer is alive
                self.on_activity(ts)

        def on_ws_disconnected(self, transport) -> None:  # type: ignore[override]
            self.owner._finished(None, "connection lost")

    class PicowsTransport(Transport):
        def __init__(self) -> None:
            super().__init__()
            self.ws = None

        @classmethod
        async def connect(
            cls,
            url: str,
            on_frame: FrameCallback,
            on_activity: ActivityCallback,
            *,
            headers: dict[str, str] | None = None,
            max_frame_size: int = 64 * 1024 * 1024,
            timeout: float = 10.0,
        ) -> PicowsTransport:
            self = cls()
            ws, _listener = await asyncio.wait_for(
                picows.ws_connect(
                    lambda: _Listener(self, on_frame, on_activity),
                    url,
                    websocket_handshake_timeout=timeout,
                    enable_auto_pong=True,
                    max_frame_size=max_frame_size,
                    extra_headers=headers or None,
                    read_buffer_init_size=256 * 1024,
                    logger_name="wrdata.picows",
                ),
                timeout,
            )
            if ws.is_disconnected:
                # picows completes the handshake "successfully" when the peer closes or
                # resets the TCP connection before answering it, and then never reports
                # the disconnect: a refused connection must not look like an open one
                raise ConnectionResetError("connection closed during the WebSocket handshake")
            self.ws = ws
            return self

        def send(self, data: str | bytes) -> None:
            if isinstance(data, str):
                self.ws.send(_TEXT, data.encode())
            else:
                self.ws.send(_BINARY, data)

        def ping(self) -> None:
            self.ws.send_ping(b"")

        def abort(self) -> None:
            if self.ws is not None:
                self.ws.disconnect(graceful=False)
            self._finished(None, "aborted")

        async def close(self, timeout: float = 1.0) -> None:
            if self.ws is None or self.done.done():
                return
            try:
                self.ws.send_close(picows.WSCloseCode.OK)
                await asyncio.wait_for(asyncio.shield(self.done), timeout)
            except (TimeoutError, OSError, RuntimeError):
                pass
            finally:
                self.ws.disconnect(graceful=False)
                self._finished(1000, "closed by client")


# -- websockets ----------------------------------------------------------------------


class WebsocketsTransport(Transport):
    def __init__(self) -> None:
        super().__init__()
        self.ws = None
        self.task: asyncio.Task | None = None

    @classmethod
    async def connect(
        cls,
        url: str,
        on_frame: FrameCallback,
        on_activity: ActivityCallback,
        *,
        headers: dict[str, str] | None = None,
        max_frame_size: int = 64 * 1024 * 1024,
        timeout: float = 10.0,
    ) -> WebsocketsTransport:
        from websockets.asyncio.client import connect

        self = cls()
        self.ws = await connect(
            url,
            additional_headers=headers or None,
            max_size=max_frame_size,
            open_timeout=timeout,
            ping_interval=None,  # the runner decides when to ping
            compression=None,
            max_queue=None,
            logger=_RedactingLogger(logging.getLogger("websockets.client")),
        )
        self._on_activity = on_activity
        self.task = asyncio.get_running_loop().create_task(self._pump(on_frame, on_activity))
        return self

    async def _pump(self, on_frame: FrameCallback, on_activity: ActivityCallback) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for data in self.ws:
                on_frame(data if isinstance(data, bytes) else data.encode(), recv_ns())
        except ConnectionClosed:
            pass
        except Exception:  # a bug in a callback must not hang the connection
            log.exception("frame handler failed")
            await self.ws.close(1011, "client error")
        # the asyncio ClientConnection keeps the received close frame on its protocol object
        rcvd = getattr(self.ws.protocol, "close_rcvd", None)
        self._finished(rcvd.code if rcvd else None, rcvd.reason if rcvd else "connection lost")

    def send(self, data: str | bytes) -> None:
        asyncio.get_running_loop().create_task(self._send(data))

    async def _send(self, data: str | bytes) -> None:
        try:
            await self.ws.send(data)
        except Exception as e:  # the pump notices the close
            log.debug("send failed: %s", e)

    def ping(self) -> None:
        async def _ping() -> None:
            try:
                waiter = await self.ws.ping()
                await waiter
            except Exception:
                return
            self._on_activity(recv_ns())

        asyncio.get_running_loop().create_task(_ping())

    def abort(self) -> None:
        if self.ws is not None:
            self.ws.transport.abort()
        self._finished(None, "aborted")

    async def close(self, timeout: float = 1.0) -> None:
        if self.ws is None:
            return
        try:
            await asyncio.wait_for(self.ws.close(), timeout)
        except (TimeoutError, OSError):
            self.ws.transport.abort()
        if self.task is not None:
            self.task.cancel()
        self._finished(1000, "closed by client")


def transport_class(name: str | None):
    if name in (None, "picows") and picows is not None:
        return PicowsTransport
    if name in (None, "websockets", "picows"):
        return WebsocketsTransport
    raise ValueError(f"unknown transport {name!r}: expected 'picows' or 'websockets'")
