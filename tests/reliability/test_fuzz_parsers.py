"""Hostile input for every provider parser (tests/reliability/fuzz.py): truncated frames,
wrong types, huge numbers, NaN, unknown event types, deep nesting, very large frames.

What must hold for each of the seven sessions, frame after frame on one connection:
no exception; every message it emits is fit to record (finite prices and sizes, and
accepted by the storage layer); every unparseable frame counted (``bad_frames``) and
reported as an error event, and logged once per kind, not once per frame; and the stream
is not stuck: a valid trade after any hostile frame is delivered. The soak run feeds
each venue many thousands of cases.
"""

from __future__ import annotations

import pytest

from tests.reliability.fuzz import TARGETS, run_fuzz


@pytest.mark.parametrize("venue", list(TARGETS))
def test_hostile_frames_are_counted_never_fatal_never_stuck(venue):
    report = run_fuzz(venue, examples=100)
    assert report.cases == 100
    assert report.bad_frames > 0 and report.kinds


def test_hostile_frames_through_the_runner_are_kept_in_raw():
    """The live path: the runner records every frame in raw before parsing it, so a frame
    the parser refuses (or chokes on) is kept byte for byte, counted, and the connection
    goes on."""
    import asyncio

    from tests.reliability.helpers import VENUES, Recorder, hold_subscription, steady

    hostile = [b'{"stream":"btcusdt@trade","data":{"e":"trade","E":', b"[" * 5000 + b"]" * 5000,
               b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT","t":"x","p":"NaN","q":"1","T":1,"m":true}}',
               b'{"stream":"btcusdt@nosuch","data":{}}', b"\xff\xfe\x00garbage", b"{" + b'"a":1,' * 200_000 + b'"b":2}']

    async def run():
        setup = VENUES["binance"]
        sim = setup.make_sim()
        await sim.start()
        rec = Recorder()
        ds = setup.stream(sim.url)
        ds.add_tap(rec)
        task = await hold_subscription(ds, setup.symbol)
        try:
            await steady(rec, "binance")
            for frame in hostile:
                sim.inject_malformed(frame)
            n = len(rec.data())
            await rec.wait(lambda: all(any(r[4] == "in" and r[6] == f for r in rec.raw) for f in hostile), 10, "hostile frames in raw")
            await rec.wait(lambda: len(rec.data()) > n + 20, 10, "trades after the hostile frames")
            session = next(iter(ds.manager.clients["binance"].slots)).link.session
            assert session.bad_frames >= len(hostile) - 1  # an unknown stream name may be ignored
            assert not rec.events("disconnected")
        finally:
            task.cancel()
            await ds.close()
            await sim.stop()

    asyncio.run(run())


def test_bad_frame_kinds_named_by_the_wire_are_logged_a_bounded_number_of_times(caplog):
    """An unknown message type is a kind of bad frame; a venue (or an attacker) inventing
    a new type per frame must not produce a log line, and a set entry, per frame."""
    import logging

    from wrdata.streaming.finnhub import FinnhubVenue

    caplog.set_level(logging.WARNING, logger="wrdata")
    s = FinnhubVenue(credentials={"key": "k"}).session(1, ["AAPL"])
    for i in range(2000):
        out = s.feed(b'{"type":"kind-%d","data":[]}' % i, i, i)
        assert out and out[0].status == "error"
    assert s.bad_frames == 2000
    lines = [r for r in caplog.records if r.name.startswith("wrdata.streaming")]
    assert 100 <= len(lines) <= 101 and "further kinds are counted, not logged" in lines[-1].getMessage()
    assert len(s._bad_kinds) <= 101
