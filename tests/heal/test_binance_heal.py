"""Gap healing against the Binance simulator: trade-id gaps and disconnect windows are
filled from ``historicalTrades`` exactly (every id once, each as the simulator traded it)."""

from __future__ import annotations

import asyncio

import pytest

from wrdata.capture.rebuild import rebuild
from wrdata.sim.binance import BinanceSimulator
from wrdata.storage import DatasetWriter, read_messages, read_raw, read_table

from .helpers import check_tape, consume, drain, heal_stream, outage, statuses, trades_of, wait_for

SYM = "BTCUSDT"


@pytest.fixture
async def sim():
    s = BinanceSimulator(seed=11, symbols=["BTCUSDT", "ETHUSDT"], rate=400, warmup=1.0, msg_limit=None)
    async with s:
        yield s



async def test_id_gap_and_disconnect_window_are_healed_exactly(sim, tmp_path):
    ds = heal_stream("binance", sim.url)
    w = DatasetWriter(tmp_path, writer_id="w1", flush_interval=0.1).start()
    ds.add_tap(w)
    c, _ = await consume(ds, "binance", SYM)
    try:
        await wait_for(lambda: len(c.queue) > 20)
        sim.faults.withhold_trades(7, SYM)  # an id gap on a live connection
        await wait_for(lambda: len(sim.faults.withheld.get(SYM, [])) == 7)
        await asyncio.sleep(0.3)
        await outage(sim, 1.0)  # a disconnect window of a second
        await wait_for(lambda: any(m.kind == "status" and m.status == "gap" and m.first_missing_id is None for m in c.queue))
        await asyncio.sleep(0.5)
        assert await ds.manager.healer.idle(20)
        await asyncio.sleep(0.2)
    finally:
        await ds.close()
        w.close()
    msgs = drain(c)
    trades = trades_of(msgs, SYM)
    backfill = [t for t in trades if t.source == "backfill"]
    lo, hi = check_tape(sim, SYM, trades, 1_000_000)
    withheld = sim.faults.withheld[SYM]
    assert set(withheld) <= {t.trade_id for t in backfill}, "the withheld trades came back from history"
    assert all(t.ts_fetched is not None and t.ts_fetched >= t.ts_event for t in backfill)
    gaps = statuses(msgs, "gap")
    healed = statuses(msgs, "healed")
    assert not [e for e in statuses(msgs, "error") if e.symbol == SYM]
    # every gap got an outcome naming it; the id gap's says how many trades came back
    assert {(g.gap_start_ns, g.first_missing_id) for g in gaps} == {(h.gap_start_ns, h.first_missing_id) for h in healed}
    idgap = next(h for h in healed if h.first_missing_id == withheld[0])
    assert idgap.last_missing_id == withheld[-1] and idgap.dropped == 7 and idgap.reason.startswith("healed: 7 trades")
    # the recording holds the same: streamed and healed rows, every id once
    rec = read_messages(str(tmp_path), "trades", "binance", symbols=SYM)
    assert sorted(t.trade_id for t in rec) == list(range(rec[0].trade_id, rec[-1].trade_id + 1))
    assert {t.trade_id for t in rec if t.source == "backfill"} == {t.trade_id for t in backfill}
    ev = read_messages(str(tmp_path), "events", "binance")
    assert len([e for e in ev if e.status == "healed"]) == len(healed)
    # raw holds each job's spec and the answers it used
    raw = read_raw(str(tmp_path), "binance")
    assert any(f.direction == "heal" for f in raw)
    assert any(f.direction == "rest" and "historicalTrades" in (f.url or "") for f in raw)
    assert lo <= withheld[0] and withheld[-1] <= hi
    # raw rebuilds every table exactly, healed rows included
    before = {t: read_table(str(tmp_path), t) for t in ("trades", "events")}
    rebuild(str(tmp_path))
    for t, tab in before.items():
        assert read_table(str(tmp_path), t).equals(tab), t


async def test_history_outage_leaves_an_unhealed_gap_and_the_stream_goes_on(sim):
    ds = heal_stream("binance", sim.url, heal_attempts=3)
    c, _ = await consume(ds, "binance", SYM)
    try:
        await wait_for(lambda: len(c.queue) > 10)
        sim.faults.outage(seconds=30)  # the history API is down
        sim.faults.withhold_trades(4, SYM)
        await wait_for(lambda: any(m.kind == "status" and m.status == "error" and m.symbol == SYM for m in c.queue))
        before = len(trades_of(list(c.queue), SYM))
        await wait_for(lambda: len(trades_of(list(c.queue), SYM)) > before + 20)
    finally:
        sim.faults.clear()
        await ds.close()
    msgs = drain(c)
    (gap,) = statuses(msgs, "gap")
    (err,) = [e for e in statuses(msgs, "error") if e.symbol == SYM]
    assert err.reason.startswith("unhealable: ") and "HTTP 503" in err.reason
    assert (err.first_missing_id, err.last_missing_id) == (gap.first_missing_id, gap.last_missing_id)
    trades = trades_of(msgs, SYM)
    assert not [t for t in trades if t.source == "backfill"]
    ids = [t.trade_id for t in trades]
    assert sorted(set(range(ids[0], ids[-1] + 1)) - set(ids)) == list(range(gap.first_missing_id, gap.last_missing_id + 1))
    assert ids.index(gap.last_missing_id + 1) < len(ids) - 20, "the stream went on while healing failed"


async def test_rate_limits_and_short_pages_are_honoured(sim):
    sim.faults.page_limit = 3  # history pages of at most three trades
    ds = heal_stream("binance", sim.url)
    c, _ = await consume(ds, "binance", SYM)
    try:
        await wait_for(lambda: len(c.queue) > 10)
        sim.faults.rate_limit(2, retry_after=1)  # the first two history requests: 429, Retry-After: 1
        sim.faults.withhold_trades(10, SYM)
        await wait_for(lambda: any(m.kind == "status" and m.status in ("healed", "error") for m in c.queue))
    finally:
        await ds.close()
    msgs = drain(c)
    (h,) = statuses(msgs, "healed")
    assert h.dropped == 10
    hist = [(p, q, s) for p, q, s in sim.rest_log if p == "/api/v3/historicalTrades"]
    assert [s for _, _, s in hist[:2]] == [429, 429]
    assert [s for _, _, s in hist[2:]] == [200] * 4, "pages of 3, 3, 3, 1 after the two refusals"
    limits = [q.split("limit=")[1] for _, q, _ in hist[2:]]
    assert limits == ["10", "7", "4", "1"], "each page asks only for the ids still missing"
    check_tape(sim, SYM, trades_of(msgs, SYM), 1_000_000)
