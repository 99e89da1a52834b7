"""Runner hooks that venues with several endpoints or URL credentials need.

- ``Venue.connection_group``: streams of different groups never share a connection
  (Alpaca's stock and crypto feeds, Polygon's clusters live behind different URLs).
- ``Session.reconnect_requested``: a venue error only a new connection cures (an auth
  timeout, "slow client") drops the connection and reconnects, with gap events.
- ``Session.on_connect_error``: a refused upgrade (HTTP 401 for a bad key in the URL)
  stops the provider instead of retrying forever.
- The websockets transport keeps ``?token=`` out of its debug log.
"""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from websockets.asyncio.server import serve
from websockets.datastructures import Headers
from websockets.http11 import Response

from wrdata.message import StreamMessage
from wrdata.streaming.base import AuthenticationError, Session, Venue
from wrdata.streaming.runner import WsClient, backoff_delay
from wrdata.streaming.transport import transport_class


class _Server:
    """Per connection: answers ``sub X`` with ``{"data": X, "path": P}`` frames every 10 ms.

    A path in ``reject`` is refused with HTTP 401; ``kick_first`` sends ``{"kick": 1}`` on
    the first connection only.
    """

    def __init__(self, reject: bool = False, kick_first: bool = False) -> None:
        self.reject = reject
        self.kick_first = kick_first
        self.paths: list[str] = []
        self.requests: list[str] = []

    def process_request(self, ws, request):
        self.requests.append(request.path)
        if self.reject:
            return Response(401, "Unauthorized", Headers({"Content-Length": "0"}), b"")
        return None

    async def handler(self, ws) -> None:
        path = ws.request.path
        self.paths.append(path)
        first = len(self.paths) == 1
        subs: list[str] = []

        async def pump() -> None:
            while True:
                for s in subs:
                    await ws.send(json.dumps({"data": s, "path": path}))
                await asyncio.sleep(0.01)

        task = asyncio.create_task(pump())
        try:
            async for msg in ws:
                subs.append(msg.split(" ", 1)[1])
                if first and self.kick_first:
                    await ws.send(json.dumps({"kick": 1}))
        finally:
            task.cancel()


class _Venue(Venue):
    name = "fake"
    default_url = "ws://127.0.0.1:1"
    backoff_initial = 0.01
    backoff_max = 0.02
    control_interval = 0.0
    ws_ping_interval = None
    ready_timeout = 2.0

    def streams(self, symbol, channel):
        return [symbol]

    def stream_target(self, stream):
        return str(stream), "trade"

    def connection_group(self, stream):
        return str(stream).split("/")[0]  # "a/1" and "b/1" live behind /a and /b

    def session(self, conn, streams):
        return _Session(self, conn, streams)


class _Session(Session):
    def url(self) -> str:
        group = self.venue.connection_group(next(iter(self.streams)))
        return f"{self.venue.url}/{group}?token=SECRET-TOKEN-123"

    def on_open(self, ts_recv: int) -> list[StreamMessage]:
        for s in sorted(self.streams):
            self.outbox.append(f"sub {s}")
        self.ready = True
        return []

    def add(self, streams) -> None:
        for s in streams:
            self.outbox.append(f"sub {s}")
        self.streams.update(streams)

    def remove(self, streams) -> None:
        self.streams.difference_update(streams)

    def feed(self, payload: bytes, ts_recv: int, seq: int) -> list[StreamMessage]:
        d = json.loads(payload)
        if "kick" in d:
            self.reconnect_requested = "venue says: slow client"
            return []
        return [StreamMessage(provider="fake", symbol=d["data"], kind="trade", ts_recv=ts_recv, conn=self.conn, seq=seq,
                              channel="trade", trade_ref=d["path"])]

    def on_connect_error(self, status, error):
        if status == 401:
            return AuthenticationError("fake: key refused")
        return None


async def _collect(server: _Server, streams: list[str], until, transport: str | None = None, timeout: float = 5.0):
    got: list[StreamMessage] = []
    fatal: list[Exception] = []
    async with serve(server.handler, "127.0.0.1", 0, process_request=server.process_request) as srv:
        port = next(iter(srv.sockets)).getsockname()[1]
        venue = _Venue(url=f"ws://127.0.0.1:{port}")
        client = WsClient(venue, got.extend, None, lambda p, e: fatal.append(e), transport)
        client.add(streams)
        async with asyncio.timeout(timeout):
            while not until(got, fatal):
                await asyncio.sleep(0.01)
        await client.close()
    return got, fatal, client


async def test_connection_groups_get_their_own_connections():
    server = _Server()

    def both_seen(got, fatal):
        return {m.symbol for m in got if m.kind == "trade"} >= {"a/1", "a/2", "b/1"}

    got, fatal, _ = await _collect(server, ["a/1", "b/1", "a/2"], both_seen)
    assert not fatal
    assert sorted(p.split("?")[0] for p in server.paths) == ["/a", "/b"]
    for m in got:
        if m.kind == "trade":  # every stream arrived over its own group's URL
            assert m.trade_ref.startswith("/" + m.symbol.split("/")[0] + "?")
    conns = {m.symbol: m.conn for m in got if m.kind == "trade"}
    assert conns["a/1"] == conns["a/2"] != conns["b/1"]


async def test_reconnect_requested_reconnects_with_gap_events():
    server = _Server(kick_first=True)

    def second_connection_delivers(got, fatal):
        return len(server.paths) >= 2 and any(m.kind == "trade" and m.conn != got[0].conn for m in got)

    got, fatal, _ = await _collect(server, ["a/1"], second_connection_delivers)
    assert not fatal
    statuses = [(m.status, m.reason) for m in got if m.kind == "status"]
    assert ("disconnected", "venue says: slow client") in statuses
    gaps = [m for m in got if m.kind == "status" and m.status == "gap"]
    assert len(gaps) == 1 and gaps[0].symbol == "a/1" and gaps[0].gap_start_ns <= gaps[0].gap_end_ns


@pytest.mark.parametrize("transport", ["picows", "websockets"])
async def test_refused_upgrade_is_fatal_and_not_retried(transport, caplog):
    caplog.set_level(logging.DEBUG)
    server = _Server(reject=True)
    got, fatal, client = await _collect(server, ["a/1"], lambda got, fatal: bool(fatal), transport)
    await asyncio.sleep(0.1)  # a retry loop would have made more requests by now (backoff is 10 ms)
    assert len(server.requests) == 1
    assert isinstance(fatal[0], AuthenticationError) and client.fatal is fatal[0]
    errors = [m.reason for m in got if m.kind == "status" and m.status == "error"]
    assert errors and "401" in errors[0]
    assert not [m for m in got if m.kind == "status" and m.status == "reconnecting"]
    # the token never reaches a log line or a status event, whichever transport ran
    client_side = [r.getMessage() for r in caplog.records if not r.name.startswith("websockets.server")]  # not our test server
    assert any("401" in line for line in client_side)
    assert not [line for line in client_side if "SECRET-TOKEN-123" in line]
    assert all("SECRET-TOKEN-123" not in (m.reason or "") for m in got)


def test_backoff_is_capped_and_never_overflows():
    venue = _Venue()
    venue.backoff_initial, venue.backoff_max = 0.5, 30.0
    assert 0.25 <= backoff_delay(venue, 1) <= 0.5
    for attempt in (12, 1100, 10**6):  # 2.0 ** 1100 would raise OverflowError
        assert 15.0 <= backoff_delay(venue, attempt) <= 30.0


@pytest.mark.parametrize("transport", ["picows", "websockets"])
@pytest.mark.parametrize("how", ["abort", "close"])
async def test_transports_notice_the_server_going_away(transport, how):
    conns = []

    async def handler(ws):
        conns.append(ws)
        await ws.send("x")
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as srv:
        port = next(iter(srv.sockets)).getsockname()[1]
        got: list[bytes] = []
        t = await transport_class(transport).connect(f"ws://127.0.0.1:{port}/", lambda p, ts: got.append(p), lambda ts: None)
        while not conns or not got:
            await asyncio.sleep(0.01)
        if how == "abort":
            conns[0].transport.abort()
        else:
            await conns[0].close(4001, "bye")
        await asyncio.wait_for(asyncio.shield(t.done), 5)
        assert got == [b"x"]
        assert (t.close_code, t.close_reason) == ((None, "connection lost") if how == "abort" else (4001, "bye"))


async def test_websockets_transport_does_not_log_what_we_send(caplog):
    """websockets logs frame contents at DEBUG; ours hold credentials (auth messages)."""
    caplog.set_level(logging.DEBUG)
    received = []

    async def handler(ws):
        received.append(await ws.recv())
        await ws.send("ack")
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as srv:
        port = next(iter(srv.sockets)).getsockname()[1]
        got: list[bytes] = []
        t = await transport_class("websockets").connect(f"ws://127.0.0.1:{port}/", lambda p, ts: got.append(p), lambda ts: None)
        t.send('{"action":"auth","key":"SECRET-TOKEN-123"}')
        while not got:
            await asyncio.sleep(0.01)
        await t.close()
    assert received == ['{"action":"auth","key":"SECRET-TOKEN-123"}']
    client = [r.getMessage() for r in caplog.records if r.name == "websockets.client"]
    assert any("> TEXT [42 bytes" in line for line in client) and any("ack" in line for line in client)
    assert not [line for line in client if "SECRET-TOKEN-123" in line]
