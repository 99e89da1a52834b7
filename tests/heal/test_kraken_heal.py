"""Gap healing against the Kraken simulator: trade-id gaps and an outage longer than the
resubscription snapshot are filled from ``/0/public/Trades`` (``since`` cursor), matched
on trade_id, exactly."""

from __future__ import annotations

import asyncio

import pytest

from wrdata.capture.rebuild import rebuild
from wrdata.sim.kraken import KrakenSimulator
from wrdata.storage import DatasetWriter, read_messages, read_table

from .helpers import check_tape, consume, drain, heal_stream, outage, statuses, trades_of, wait_for

SYM = "BTC/USD"


@pytest.fixture
async def sim():
    s = KrakenSimulator(seed=8, symbols=["BTC/USD"], rate=500, warmup=1.0)
    async with s:
        yield s



async def test_id_gap_and_long_outage_are_healed_exactly(sim, tmp_path):
    sim.faults.page_limit = 40  # short pages: the cursor carries on
    ds = heal_stream("kraken", sim.url)
    w = DatasetWriter(tmp_path, writer_id="w1", flush_interval=0.1).start()
    ds.add_tap(w)
    c, _ = await consume(ds, "kraken", SYM)
    try:
        await wait_for(lambda: len(trades_of(list(c.queue), SYM)) > 10)
        sim.faults.withhold_trades(6, SYM)
        await wait_for(lambda: any(m.kind == "status" and m.status == "healed" for m in c.queue))
        sim.faults.rate_limit(1, retry_after=1)
        await outage(sim, 2.0)  # longer than the 50 trades a resubscription snapshot gives back
        await wait_for(lambda: len(statuses(list(c.queue), "healed")) >= 3)
        assert await ds.manager.healer.idle(15)
        await asyncio.sleep(0.3)
    finally:
        await ds.close()
        w.close()
    msgs = drain(c)
    trades = trades_of(msgs, SYM)
    check_tape(sim, SYM, trades, 1_000)
    gaps = [g for g in statuses(msgs, "gap") if g.symbol == SYM]
    healed = [h for h in statuses(msgs, "healed") if h.symbol == SYM]
    assert not [e for e in statuses(msgs, "error") if e.symbol == SYM]
    assert len(gaps) == len(healed) == 3, "the withheld ids, the outage, and the ids its snapshot could not cover"
    withheld = sim.faults.withheld[SYM]
    first = next(h for h in healed if h.first_missing_id == withheld[0])
    assert first.dropped == 6 and first.last_missing_id == withheld[-1]
    idgap = [h for h in healed if h.first_missing_id is not None and h is not first]
    assert idgap and idgap[0].dropped == idgap[0].last_missing_id - idgap[0].first_missing_id + 1 > 0
    assert 429 in [s for p, _, s in sim.rest_log if p == "/0/public/Trades"]
    rec = read_messages(str(tmp_path), "trades", "kraken", symbols=SYM)
    assert sorted({t.trade_id for t in rec}) == list(range(rec[0].trade_id, rec[-1].trade_id + 1))
    assert len(rec) == len({t.trade_id for t in rec}), "healing by id records only the missing ids"
    before = {t: read_table(str(tmp_path), t) for t in ("trades", "events")}
    rebuild(str(tmp_path))
    for t, tab in before.items():
        assert read_table(str(tmp_path), t).equals(tab), t


async def test_history_outage_leaves_the_gap_unhealed(sim):
    ds = heal_stream("kraken", sim.url, heal_attempts=2)
    c, _ = await consume(ds, "kraken", SYM)
    try:
        await wait_for(lambda: len(trades_of(list(c.queue), SYM)) > 10)
        sim.faults.outage(seconds=60)
        sim.faults.withhold_trades(3, SYM)
        await wait_for(lambda: any(m.kind == "status" and m.status == "error" and m.symbol == SYM for m in c.queue))
        n = len(trades_of(list(c.queue), SYM))
        await wait_for(lambda: len(trades_of(list(c.queue), SYM)) > n + 10)
    finally:
        sim.faults.clear()
        await ds.close()
    msgs = drain(c)
    (gap,) = [g for g in statuses(msgs, "gap") if g.symbol == SYM]
    (err,) = [e for e in statuses(msgs, "error") if e.symbol == SYM]
    assert err.reason.startswith("unhealable: ") and (err.first_missing_id, err.last_missing_id) == (gap.first_missing_id, gap.last_missing_id)
    assert not [t for t in trades_of(msgs, SYM) if t.source == "backfill"]
