"""Redundant capture: two daemons recording one venue with different outages merge into
one complete tape (each trade once, the earliest receipt); each writer's own rows still
show its outage; healed rows that duplicate streamed ones are left out of the merged view."""

from __future__ import annotations

import asyncio

from wrdata import DataStream
from wrdata.queries import connect
from wrdata.queries.helpers import coverage, gap_outcomes
from wrdata.sim.binance import BinanceSimulator
from wrdata.storage import DatasetWriter
from wrdata.storage.merge import drop_set

from .helpers import consume, heal_stream, wait_for

SYM = "BTCUSDT"


async def _daemon(sim, root, writer: str):
    ds = DataStream(endpoints={"binance": sim.url}, options={"binance": {"backoff_initial": 1.0, "backoff_max": 1.0}})
    w = DatasetWriter(root, writer_id=writer, flush_interval=0.1).start()
    ds.add_tap(w)
    c, _ = await consume(ds, "binance", SYM, backfill=False)
    return ds, w, c


async def test_two_daemons_with_different_outages_merge_into_one_complete_tape(tmp_path):
    sim = BinanceSimulator(seed=21, symbols=["BTCUSDT"], rate=300, warmup=1.0, msg_limit=None)
    async with sim:
        a, wa, ca = await _daemon(sim, tmp_path, "daemon-a")
        await wait_for(lambda: len(sim.connections) == 1)
        b, wb, cb = await _daemon(sim, tmp_path, "daemon-b")
        await wait_for(lambda: len(sim.connections) == 2 and len(ca.queue) > 20 and len(cb.queue) > 20)
        first_a, first_b = sim.history[0], sim.history[1]
        sim.faults.reject_connections(0.7)  # new connections are refused: daemon a is away for a while
        first_a.drop()
        await wait_for(lambda: any(m.kind == "status" and m.status == "gap" for m in ca.queue))
        await asyncio.sleep(0.3)
        sim.faults.reject_connections(0.7)  # later, daemon b
        first_b.drop()
        await wait_for(lambda: any(m.kind == "status" and m.status == "gap" for m in cb.queue))
        await asyncio.sleep(0.5)
        for ds in (a, b):
            await ds.close()
        wa.close()
        wb.close()
    con = connect(tmp_path)
    per_writer = dict(con.sql(
        "SELECT writer, max(trade_id) - min(trade_id) + 1 - count(*) FROM trades_all WHERE symbol = 'BTCUSDT' GROUP BY 1"
    ).fetchall())
    assert per_writer["daemon-a"] > 0 and per_writer["daemon-b"] > 0, "each daemon alone has a hole"
    lo, hi, n, distinct = con.sql(
        "SELECT min(trade_id), max(trade_id), count(*), count(DISTINCT trade_id) FROM trades WHERE symbol = 'BTCUSDT'"
    ).fetchall()[0]
    assert n == distinct == hi - lo + 1, "merged: every trade of the range once"
    # the earliest receipt survives: no merged row was received later than its twin
    later = con.sql(
        "SELECT count(*) FROM trades m JOIN trades_all o USING (trade_id) WHERE o.writer <> m.writer AND o.ts_recv < m.ts_recv"
    ).fetchall()[0][0]
    assert later == 0
    # and the tape is the simulator's
    tape = {t.trade_id for t in sim.market.trades(SYM)}
    assert set(range(lo, hi + 1)) <= tape
    # each writer's outage is a gap of its own, covered by the other writer in the merged view
    out = gap_outcomes(con).to_pylist()
    assert {o["writer"] for o in out} == {"daemon-a", "daemon-b"}
    assert all(o["outcome"] == "covered" for o in out), out
    cov = coverage(con, tables=("trades",)).to_pylist()
    (row,) = [r for r in cov if r["symbol"] == SYM]
    assert row["rows"] == hi - lo + 1 and row["missing_ids"] == 0
    assert row["gaps"] == len(out) and row["covered"] == len(out) and row["unhealed"] == 0
    # the rule ran only where it had to: the day both wrote
    assert len(drop_set(str(tmp_path))) == sum(
        c for (c,) in con.sql("SELECT count(*) - count(DISTINCT trade_id) FROM trades_all").fetchall())


async def test_healed_rows_that_repeat_streamed_ones_leave_the_merged_view(tmp_path):
    """Alpaca numbers trades per exchange, so a heal window is a time window: the job
    records every trade in it, the edge trades the stream also had included."""
    from wrdata.sim.alpaca import AlpacaSimulator

    from .helpers import outage

    sim = AlpacaSimulator(key="k", secret="s", seed=3, rate=400, hours="always", warmup=0.5, late_fraction=0.0,
                          reap_after=0.05, symbols=["NVDA"])
    async with sim:
        ds = heal_stream("alpaca", sim.url, feed="sip")
        ds.manager.credentials["alpaca"] = {"key": "k", "secret": "s"}
        w = DatasetWriter(tmp_path, writer_id="solo", flush_interval=0.1).start()
        ds.add_tap(w)
        c, _ = await consume(ds, "alpaca", "NVDA")
        await wait_for(lambda: len(c.queue) > 10)
        await outage(sim, 1.0)
        await wait_for(lambda: any(m.kind == "status" and m.status == "healed" for m in c.queue))
        await asyncio.sleep(0.3)
        await ds.close()
        w.close()
    con = connect(tmp_path)
    dups_all = con.sql("SELECT count(*) - count(DISTINCT (ts_event, exchange, trade_id)) FROM trades_all").fetchall()[0][0]
    assert dups_all > 0, "the heal job recorded its window's edge trades too"
    n, distinct = con.sql("SELECT count(*), count(DISTINCT (ts_event, exchange, trade_id)) FROM trades").fetchall()[0]
    assert n == distinct, "merged: each trade once"
    assert n == con.sql("SELECT count(DISTINCT (ts_event, exchange, trade_id)) FROM trades_all").fetchall()[0][0]
    # the streamed rows survive (received first), the heal job's repeats of them do not
    assert con.sql("SELECT count(*) FROM trades b JOIN trades_all s USING (ts_event, exchange, trade_id) "
                   "WHERE b.source = 'backfill' AND s.source = 'stream'").fetchall()[0][0] == 0
    (out,) = gap_outcomes(con).to_pylist()
    assert out["outcome"] == "healed" and out["reason"].startswith("healed: ")
