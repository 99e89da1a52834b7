"""Every network fault, many times, on every venue (tests/reliability/helpers.py,
``fault_cycle``): detection times against the configured silence timeout, backoff,
resubscription and the recorded gap, each time."""

from __future__ import annotations

import asyncio
import statistics

import pytest

from tests.reliability.helpers import VENUES, Recorder, assert_gap_covers_the_outage, fault_cycle, hold_subscription
from wrdata.sim.faults import Faults
from wrdata.sim.proxy import TcpProxy

pytestmark = [pytest.mark.soak, pytest.mark.timeout(1800)]

ROUNDS = 4
SLACK = 1.5


@pytest.mark.parametrize("venue", list(VENUES))
async def test_fault_rounds(venue, figures):
    setup = VENUES[venue]
    faults = ["cut", "blackhole", "drip", "refuse"] + (["reject", "venue_close"] if setup.ws else [])
    sim = setup.make_sim()
    await sim.start()
    proxy = await TcpProxy(sim.host, sim.port).start()
    rec = Recorder()
    ds = setup.stream(setup.endpoint(proxy.host, proxy.port))
    ds.add_tap(rec)
    task = await hold_subscription(ds, setup.symbol)
    timeout = setup.options["silence_timeout"]
    times: dict[str, list[float]] = {f: [] for f in faults}
    try:
        for _ in range(ROUNDS):
            for fault in faults:
                res = await fault_cycle(setup, sim, proxy, rec, fault, reject_for=1.5)
                assert_gap_covers_the_outage(rec, res, setup.venue_symbol)
                if fault in ("blackhole", "drip"):
                    assert timeout * 0.5 <= res.detected_s <= timeout + timeout / 4 + SLACK, (fault, res.detected_s)
                else:
                    assert res.detected_s < 1.0, (fault, res.detected_s)
                if fault in ("reject", "refuse"):
                    assert len(res.reconnect_delays) >= 2, res.reconnect_delays
                times[fault].append(res.detected_s)
                await asyncio.sleep(0.2)
    finally:
        task.cancel()
        await ds.close()
        await proxy.stop()
        await sim.stop()
    figures[f"network {venue} (silence timeout {timeout}s)"] = {
        f: {"n": len(v), "detect_s min/median/max": [round(min(v), 3), round(statistics.median(v), 3), round(max(v), 3)]}
        for f, v in times.items()
    }


@pytest.mark.parametrize("client_lifetime", [None, 0.6], ids=["venue-cuts", "client-rolls-first"])
async def test_venue_lifetime_for_half_a_minute(client_lifetime, figures):
    from tests.reliability.helpers import _binance

    sim = _binance(faults=Faults(lifetime=1.0))
    await sim.start()
    rec = Recorder()
    ds = VENUES["binance"].stream(sim.url, options={"lifetime": client_lifetime, "rollover_overlap": 0.2})
    ds.add_tap(rec)
    task = await hold_subscription(ds, "binance:BTCUSDT")
    try:
        await asyncio.sleep(30)
    finally:
        task.cancel()
        await ds.close()
        await sim.stop()
    ids = [m.trade_id for m in rec.data()]
    assert ids == sorted(set(ids)), "never a duplicate"
    gaps = [m for _, m in rec.events("gap") if m.gap_start_ns is not None]
    holes = [(a + 1, b - 1) for a, b in zip(ids, ids[1:]) if b != a + 1]
    named = [(m.first_missing_id, m.last_missing_id) for _, m in rec.events("gap") if m.first_missing_id is not None]
    assert holes == named, "every missing trade is named by a gap"
    if client_lifetime is None:
        assert len(gaps) >= 20
    else:
        assert not gaps and not holes and len(rec.events("rollover")) >= 30
    figures[f"rollover ({'venue cuts every 1 s' if client_lifetime is None else 'client rolls every 0.6 s'}, 30 s)"] = {
        "connections": len(sim.history), "rollovers": len(rec.events("rollover")), "gaps": len(gaps), "trades": len(ids),
        "trades missed": sum(b - a + 1 for a, b in holes),
    }
