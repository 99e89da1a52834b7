"""The shared server framework with a toy venue: what other simulators build on."""

from __future__ import annotations

import asyncio

from sim_helpers import http_get

from wrdata.sim.server import RestError, RestRequest, RestResponse, SimConnection, SimServer, json_response


class ToyVenue(SimServer):
    """Every connection is subscribed to "ticks"; frames carry a per-connection sequence number."""

    venue = "toy"
    per_connection_framing = True

    def __init__(self, **kw):
        super().__init__(**kw)
        self.encoded = 0
        self.route("/v1/echo", self._echo)

    def ws_path_ok(self, path, params):
        return None if path in ("/json", "/bin") else 404

    async def serve_connection(self, conn: SimConnection) -> None:
        conn.binary = conn.path == "/bin"
        conn.props["seq"] = 0
        conn.subscribe("ticks")
        async for msg in conn:
            conn.send(b'{"echo":' + (msg if isinstance(msg, bytes) else msg.encode()) + b"}")

    def frame_for(self, conn, stream, body):
        conn.props["seq"] += 1
        return b'{"seq":' + str(conn.props["seq"]).encode() + b"," + body[1:]

    def tick(self, n: int) -> None:
        def encode(variant: str) -> bytes:
            self.encoded += 1
            return b'{"n":' + str(n).encode() + b"}"

        self.publish("ticks", encode)

    def _echo(self, req: RestRequest) -> RestResponse:
        if req.get("fail"):
            raise RestError(400, {"bad": req.get("fail")})
        return json_response({"q": req.params})


async def test_per_connection_framing_binary_frames_and_counters(connect):
    async with ToyVenue() as sim:
        async with connect(sim.url + "/json") as a, connect(sim.url + "/bin") as b:
            await sim.wait_for_connections(2)
            while len(sim.subscribers("ticks")) < 2:
                await asyncio.sleep(0.01)
            for n in range(3):
                sim.tick(n)
            got_a = [await asyncio.wait_for(a.recv(), 2) for _ in range(3)]
            got_b = [await asyncio.wait_for(b.recv(), 2) for _ in range(3)]
            await a.send("7")
            assert await asyncio.wait_for(a.recv(), 2) == '{"echo":7}'
        assert got_a == ['{"seq":1,"n":0}', '{"seq":2,"n":1}', '{"seq":3,"n":2}']
        assert got_b == [b'{"seq":1,"n":0}', b'{"seq":2,"n":1}', b'{"seq":3,"n":2}']  # binary frames
        assert sim.encoded == 3  # the body once per publish, not per subscriber
        assert sim.sent_by_stream["ticks"] == 6
        assert [c.sent_by_stream["ticks"] for c in sim.history] == [3, 3]
        assert sim.history[0].received_frames["text"] == 1


async def test_rest_routing_errors_and_overrides():
    async with ToyVenue() as sim:
        status, headers, body = await http_get(sim.rest_url + "/v1//echo?a=1&b=x%20y")
        assert (status, body) == (200, {"q": {"a": "1", "b": "x y"}})
        assert headers["Content-Length"] == str(len(b'{"q":{"a":"1","b":"x y"}}'))
        assert (await http_get(sim.rest_url + "/v1/echo?fail=yes"))[::2] == (400, {"bad": "yes"})
        assert (await http_get(sim.rest_url + "/v1/none"))[0] == 404
        sim.set_rest_override("/v1/echo", b'{"recorded":true}')
        assert (await http_get(sim.rest_url + "/v1/echo"))[2] == {"recorded": True}
        sim.faults.outage(seconds=0.2, status=502)
        assert (await http_get(sim.rest_url + "/v1/echo"))[0] == 502
        await asyncio.sleep(0.25)
        assert (await http_get(sim.rest_url + "/v1/echo"))[0] == 200
        assert [s for _, _, s in sim.rest_log] == [200, 400, 404, 200, 502, 200]


class _Fussy(SimServer):
    """Serves recorded frames to its "ticks" subscribers, but fails on one it cannot read."""

    venue = "fussy"

    async def serve_connection(self, conn: SimConnection) -> None:
        conn.subscribe("ticks")
        async for _ in conn:
            pass

    def publish_recorded(self, frame) -> None:
        if frame.payload == b"bad":
            raise ValueError("cannot read this one")
        self.publish("ticks", frame.payload)


async def test_frame_feed_goes_on_past_a_frame_the_venue_fails_on(connect, caplog):
    from wrdata.sim.server import FrameFeed, RecordedFrame

    async def frames():
        while not sim.subscribed():  # once the client is there
            await asyncio.sleep(0.01)
        for i, p in enumerate([b'{"n":1}', b"bad", b'{"n":2}']):
            yield RecordedFrame(i, p)

    feed = FrameFeed(frames(), speed=None)
    async with _Fussy(feed=feed) as sim:
        async with connect(sim.url) as ws:
            got = [await asyncio.wait_for(ws.recv(), 5) for _ in range(2)]
            assert await asyncio.wait_for(feed.done, 5) == 3
    assert got == ['{"n":1}', '{"n":2}'] and feed.failed == 1
    assert "serving a recorded frame failed" in caplog.text and "1 of 3 recorded frames" in caplog.text


async def test_frame_feed_tells_its_waiters_when_frames_cannot_be_read():
    import pytest

    from wrdata.sim.server import FrameFeed

    def broken():
        raise OSError("recording unreadable")
        yield  # a generator

    feed = FrameFeed(broken(), speed=None)
    async with _Fussy(feed=feed):
        while feed.done is None:
            await asyncio.sleep(0.01)
        with pytest.raises(OSError, match="unreadable"):
            await asyncio.wait_for(feed.done, 5)
