"""Gap healing for the stock venues against their simulators: a disconnect window is
filled from each venue's trade history by time window (Alpaca: next_page_token; Polygon:
next_url; Finnhub: date and skip), matched by (time, exchange, id), (exchange, id) and
the (time, price, size) multiset; a Finnhub key without tick history leaves it unhealable."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from wrdata.sim.alpaca import AlpacaSimulator
from wrdata.sim.finnhub import FinnhubSimulator
from wrdata.sim.polygon import PolygonSimulator
from wrdata.streaming.base import HttpResponse
from wrdata.streaming.finnhub import FinnhubVenue
from wrdata.streaming.heal import HealSpec

from .helpers import consume, drain, heal_stream, outage, statuses, trades_of, wait_for

KEY, SECRET = "sim-key", "sim-secret"
MS = 1_000_000
SYM = "NVDA"


def make_sim(venue: str):
    if venue == "alpaca":
        return AlpacaSimulator(key=KEY, secret=SECRET, seed=3, rate=400, hours="always", warmup=0.5, late_fraction=0.0,
                               reap_after=0.05, symbols=[SYM, "AAPL"])
    if venue == "polygon":
        return PolygonSimulator(key=KEY, seed=3, rate=400, hours="always", warmup=0.5, symbols=[SYM, "AAPL"])
    return FinnhubSimulator(key=KEY, seed=3, rate=400, hours="always", warmup=0.5, symbols=[SYM, "AAPL"])


def stream_for(venue: str, sim, **options):
    ds = heal_stream(venue, sim.url, **({"feed": "sip"} if venue == "alpaca" else {}), **options)
    ds.manager.credentials[venue] = {"key": KEY, "secret": SECRET}
    return ds


def tape_between(sim, lo: int, hi: int, res: int) -> Counter:
    """The simulator's own trades strictly inside (lo, hi) (times at the stream's resolution)."""
    spec = sim.market.spec(SYM)
    out = Counter()
    for t in sim.market.trades(SYM):
        ts = t.ts_ns // res * res
        if lo < ts < hi:
            out[(ts, spec.price(t.price), float(int(spec.qty(t.qty))))] += 1
    return out


@pytest.mark.parametrize("venue", ["alpaca", "polygon", "finnhub"])
async def test_disconnect_window_is_healed_exactly(venue):
    res = 1 if venue == "alpaca" else MS
    async with make_sim(venue) as sim:
        ds = stream_for(venue, sim)
        c, _ = await consume(ds, venue, SYM)
        try:
            await wait_for(lambda: len(trades_of(list(c.queue), SYM)) > 10)
            sim.faults.rate_limit(1, retry_after=1)  # the first history request is refused once
            await outage(sim, 1.2)
            await wait_for(lambda: any(m.kind == "status" and m.status in ("healed", "error") and m.symbol == SYM
                                       for m in c.queue))
            n = len(trades_of(list(c.queue), SYM))
            await wait_for(lambda: len(trades_of(list(c.queue), SYM)) > n + 5)
        finally:
            await ds.close()
        msgs = drain(c)
    trades = trades_of(msgs, SYM)
    (gap,) = [g for g in statuses(msgs, "gap") if g.symbol == SYM]
    (h,) = [h for h in statuses(msgs, "healed") if h.symbol == SYM]
    assert not [e for e in statuses(msgs, "error") if e.symbol == SYM]
    assert (h.gap_start_ns, h.gap_end_ns) == (gap.gap_start_ns, gap.gap_end_ns)
    backfill = [t for t in trades if t.source == "backfill"]
    assert h.dropped == len(backfill) > 5
    lo, hi = trades[0].ts_event // res * res, trades[-1].ts_event // res * res
    got = Counter((t.ts_event // res * res, t.price, t.size) for t in trades if lo < t.ts_event // res * res < hi)
    assert got == tape_between(sim, lo, hi, res), "every trade of the simulator's tape once, none twice"
    assert all(t.ts_fetched is not None for t in backfill)
    if venue != "finnhub":
        assert all(t.exchange is not None for t in backfill)


async def test_finnhub_without_a_tick_plan_is_unhealable():
    async with make_sim("finnhub") as sim:
        sim.tick_history = False
        ds = stream_for("finnhub", sim)
        c, _ = await consume(ds, "finnhub", SYM)
        try:
            await wait_for(lambda: len(trades_of(list(c.queue), SYM)) > 5)
            await outage(sim, 0.5)
            await wait_for(lambda: any(m.kind == "status" and m.status == "error" and m.symbol == SYM for m in c.queue))
        finally:
            await ds.close()
        msgs = drain(c)
    (err,) = [e for e in statuses(msgs, "error") if e.symbol == SYM]
    assert err.reason.startswith("unhealable: history refused (HTTP 403") and "no credentials or plan" in err.reason
    assert not [t for t in trades_of(msgs, SYM) if t.source == "backfill"]
    assert [s for p, _, s in sim.rest_log if p == "/api/v1/stock/tick"] == [403], "a refusal is not retried"


async def test_alpaca_history_outage_leaves_the_gap_and_the_stream_goes_on():
    async with make_sim("alpaca") as sim:
        ds = stream_for("alpaca", sim, heal_attempts=2)
        c, _ = await consume(ds, "alpaca", SYM)
        try:
            await wait_for(lambda: len(trades_of(list(c.queue), SYM)) > 5)
            sim.faults.outage(seconds=60)
            await outage(sim, 0.5)
            await wait_for(lambda: any(m.kind == "status" and m.status == "error" and m.symbol == SYM for m in c.queue))
            n = len(trades_of(list(c.queue), SYM))
            await wait_for(lambda: len(trades_of(list(c.queue), SYM)) > n + 10)
        finally:
            sim.faults.clear()
            await ds.close()
        msgs = drain(c)
    (err,) = [e for e in statuses(msgs, "error") if e.symbol == SYM]
    assert err.reason.startswith("unhealable: history API unavailable (HTTP 503")


def _tick(rows) -> HttpResponse:
    return HttpResponse(200, json.dumps({"s": SYM, "skip": 0, "count": len(rows), "total": len(rows),
                                         "t": [r[0] for r in rows], "p": [r[1] for r in rows], "v": [r[2] for r in rows],
                                         "x": ["Q"] * len(rows), "c": [["1"]] * len(rows)}).encode())


def test_finnhub_edges_reconcile_by_multiset_or_stay_unhealed():
    """No ids: the window's first and last milliseconds hold trades the stream also had.
    Where every streamed edge trade is in the history, the rest of that millisecond is
    backfilled; where one is not (the stream and the history disagree), nothing of that
    millisecond is, and the gap is only partly healed."""
    v = FinnhubVenue(url="ws://127.0.0.1:1", credentials={"key": "k"})
    t0 = 1_795_600_000_000  # ms
    hist = [(t0, 10.0, 100), (t0, 10.0, 100), (t0, 10.1, 5), (t0 + 1, 10.2, 7), (t0 + 2, 10.3, 8), (t0 + 3, 10.4, 9),
            (t0 + 3, 10.4, 1)]

    def run(edges):
        spec = HealSpec(symbol=SYM, start_ns=t0 * MS + 500, end_ns=(t0 + 3) * MS, edges=edges)
        p = v.history_pager(spec)
        req = p.next_request()
        assert req.params["date"] == "2026-11-25" and req.params["skip"] == 0
        rows = p.on_response(req, _tick(hist), 10, 1)
        assert p.next_request() is None
        return rows + p.finish(20, 2), p.outcome()

    # streamed: one of the two (t0, 10.0, 100) and the first trade of t0+3
    rows, (status, why) = run([(t0 * MS, 10.0, 100.0), ((t0 + 3) * MS, 10.4, 9.0)])
    assert status == "healed"
    assert Counter((m.ts_event // MS, m.price, m.size) for m in rows) == Counter((t, p, float(s)) for t, p, s in hist)
    # the stream had a trade at t0+3 the history does not report: that millisecond stays a gap
    rows, (status, why) = run([(t0 * MS, 10.0, 100.0), ((t0 + 3) * MS, 10.5, 9.0)])
    assert status == "partly" and "streamed trades not in the history" in why
    assert sorted(m.ts_event // MS for m in rows) == [t0, t0, t0, t0 + 1, t0 + 2]
