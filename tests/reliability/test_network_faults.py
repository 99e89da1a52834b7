"""Network faults between a client and its venue, through a loopback TCP proxy
(:class:`wrdata.sim.proxy.TcpProxy`) and the simulators' own fault injection.

Every fault must be detected within the configured silence timeout (plus the watchdog's
tick), the connection replaced with backoff and jitter, every stream resubscribed, and
the outage recorded as a ``gap`` event whose time range covers exactly the time nothing
was received. The soak run (tests/soak) repeats these many times and reports the
detection times.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.reliability.helpers import (
    VENUES,
    Recorder,
    _binance,
    assert_gap_covers_the_outage,
    fault_cycle,
    hold_subscription,
    steady,
)
from wrdata.sim.faults import Faults
from wrdata.sim.proxy import TcpProxy

# The watchdog checks every min(1 s, silence_timeout / 4, ping intervals / 2): detection
# of a dead line takes silence_timeout plus at most one tick; the rest is slack for a
# loaded two-core machine.
SLACK = 1.5


async def _setup(name: str, **sim_kw):
    setup = VENUES[name]
    sim = setup.make_sim(**sim_kw)
    await sim.start()
    proxy = await TcpProxy(sim.host, sim.port).start()
    rec = Recorder()
    ds = setup.stream(setup.endpoint(proxy.host, proxy.port))
    ds.add_tap(rec)
    return setup, sim, proxy, rec, ds


async def _teardown(sim, proxy, ds, task) -> None:
    task.cancel()
    await ds.close()
    await proxy.stop()
    await sim.stop()


BOOKS = {"binance", "coinbase", "kraken", "ibkr"}


@pytest.mark.parametrize("venue", list(VENUES))
async def test_half_open_connection_is_detected_replaced_and_recorded_as_a_gap(venue):
    """The line goes dead with both sockets open (no FIN, no RST, pongs lost too)."""
    setup, sim, proxy, rec, ds = await _setup(venue)
    task = await hold_subscription(ds, setup.symbol)
    views: list = []
    if venue in BOOKS:  # a book consumer too: it must be resynchronised, not left waiting
        book = asyncio.ensure_future(_collect(ds.stream(setup.symbol, "book:5"), views))
    try:
        await steady(rec, venue)
        subs_before = _subscriptions(sim)
        res = await fault_cycle(setup, sim, proxy, rec, "blackhole")
        timeout = setup.options["silence_timeout"]
        assert timeout * 0.5 <= res.detected_s <= timeout + min(1.0, timeout / 4) + SLACK, res.detected_s
        assert "silent" in rec.events("disconnected")[-1][1].reason
        assert_gap_covers_the_outage(rec, res, setup.venue_symbol)
        # resubscribed: the venue's newest connection carries what the old one carried
        if subs_before is not None:
            await rec.wait(lambda: _subscriptions(sim) == subs_before, 5, "resubscription")
        if venue in BOOKS:
            gap_end = res.gaps[0].gap_end_ns
            await rec.wait(lambda: len([v for v in views if v.ts_recv > gap_end]) >= 3, 10, "book views after the outage")
            after = [v for v in views if v.ts_recv >= gap_end]
            assert after[0].snapshot, "the first view after an outage is a fresh snapshot"
            book.cancel()
    finally:
        await _teardown(sim, proxy, ds, task)


async def _collect(it, out: list) -> None:
    async for m in it:
        out.append(m)


def _subscriptions(sim):
    conns = [c for c in sim.history if not getattr(c, "closing", False) and getattr(c, "subscriptions", None)]
    return set(conns[-1].subscriptions) if conns else None


async def test_binance_fault_matrix_detection_backoff_and_gaps():
    """Abrupt close, slow drip, a venue refusing reconnects, TCP refusals and a venue-side
    close, one after another on one stream: each detected, healed and recorded."""
    setup, sim, proxy, rec, ds = await _setup("binance")
    task = await hold_subscription(ds, setup.symbol)
    timeout = setup.options["silence_timeout"]
    try:
        results = {}
        for fault in ("cut", "drip", "reject", "refuse", "venue_close"):
            res = results[fault] = await fault_cycle(setup, sim, proxy, rec, fault, reject_for=1.5)
            assert_gap_covers_the_outage(rec, res, "BTCUSDT")
            await asyncio.sleep(0.2)
        # an abrupt close or a venue's close is noticed at once, not by the watchdog
        assert results["cut"].detected_s < 0.5 and results["venue_close"].detected_s < 0.5
        # a drip too slow to complete a frame is a dead line: partial frames are not life
        assert timeout * 0.5 <= results["drip"].detected_s <= timeout + timeout / 4 + SLACK
        for fault in ("reject", "refuse"):
            r = results[fault]
            # backoff: it kept trying while refused, with growing, jittered delays, and came
            # back soon after the venue did (within one capped delay plus slack)
            assert len(r.reconnect_delays) >= 3, r.reconnect_delays
            initial, cap = setup.options["backoff_initial"], setup.options["backoff_max"]
            for k, d in enumerate(r.reconnect_delays, start=1):
                nominal = min(cap, initial * 2 ** (k - 1))
                assert 0.5 * nominal - 0.01 <= d <= nominal + 0.01, (k, d, nominal)
            ratios = {round(d / min(cap, initial * 2 ** k), 3) for k, d in enumerate(r.reconnect_delays)}
            assert len(ratios) > 1, "jittered: delays are not a fixed schedule"
            assert r.recovered_s <= 1.5 + cap + SLACK
        assert sim.rejected_upgrades >= 3 and proxy.refused >= 3
    finally:
        await _teardown(sim, proxy, ds, task)


async def test_added_latency_is_not_mistaken_for_a_dead_line():
    """A slow but live line (every byte 0.3 s late) keeps its connection and loses nothing."""
    setup, sim, proxy, rec, ds = await _setup("binance")
    task = await hold_subscription(ds, setup.symbol)
    try:
        await rec.wait(lambda: rec.data(), 15, "first data")
        proxy.delay(0.3)
        await asyncio.sleep(1.8)
        proxy.heal()
        await asyncio.sleep(0.3)
        assert not rec.events("disconnected") and not rec.events("gap")
        ids = [m.trade_id for m in rec.data()]
        assert len(ids) > 100 and ids == list(range(ids[0], ids[0] + len(ids)))
    finally:
        await _teardown(sim, proxy, ds, task)


@pytest.mark.parametrize("client_lifetime", [None, 0.7], ids=["no-rollover", "rollover-first"])
async def test_venue_lifetime_cuts_are_gaps_unless_the_client_rolls_over_first(client_lifetime):
    """The venue closes every connection after its lifetime (Binance: 24 h). A client that
    rolls over before that loses nothing; one that does not gets a gap per cut."""
    sim = _binance(faults=Faults(lifetime=1.2))
    await sim.start()
    rec = Recorder()
    ds = VENUES["binance"].stream(sim.url, options={"lifetime": client_lifetime, "rollover_overlap": 0.2})
    ds.add_tap(rec)
    task = await hold_subscription(ds, "binance:BTCUSDT")
    try:
        await rec.wait(lambda: len(rec.events("disconnected")) >= 2, 15, "two connections replaced")
        since = time.time_ns()
        await rec.wait(lambda: rec.data(since), 5, "data on the latest connection")
        gaps = [m for _, m in rec.events("gap") if m.gap_start_ns is not None]
        ids = [m.trade_id for m in rec.data()]
        assert ids == sorted(set(ids)), "never a duplicate"
        if client_lifetime is None:
            assert len(gaps) >= 2 and all("closed by venue" in g.reason for g in gaps)
            # a trade missed between two connections is named by an id gap, never silent
            holes = [(a + 1, b - 1) for a, b in zip(ids, ids[1:]) if b != a + 1]
            named = [(m.first_missing_id, m.last_missing_id) for _, m in rec.events("gap") if m.first_missing_id is not None]
            assert holes == named
            for _, e in rec.events("disconnected"):
                assert "closed by venue" in e.reason
        else:
            assert not gaps and len(rec.events("rollover")) >= 2
            assert ids == list(range(ids[0], ids[0] + len(ids))), "no hole either"
            assert all(e.reason == "rollover" for _, e in rec.events("disconnected")), "the venue never had to cut"
    finally:
        task.cancel()
        await ds.close()
        await sim.stop()


@pytest.mark.parametrize("transport", ["picows", "websockets"])
@pytest.mark.parametrize("how", ["reset", "close"])
async def test_a_connection_closed_during_the_handshake_is_a_failed_connect(transport, how):
    """A load balancer that accepts TCP and drops it at once: the connect fails (and is
    retried with backoff); it must not look like an open, subscribed connection."""
    from wrdata.streaming.transport import transport_class

    async def handle(reader, writer):
        if how == "reset":
            writer.transport.abort()
        else:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(Exception) as err:
            await transport_class(transport).connect(f"ws://127.0.0.1:{port}/", lambda p, ts: None, lambda ts: None, timeout=2)
        assert not isinstance(err.value, TimeoutError), "refused at once, not after a timeout"
    finally:
        server.close()
