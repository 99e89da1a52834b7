"""Gap healing for IBKR: reqHistoricalTicks through ib_async (unmodified) against the TWS
simulator. No trade ids and one-second times: the outage's window is filled and its edge
seconds reconciled with the stream by (time, price, size) multiset."""

from __future__ import annotations

import asyncio
from collections import Counter

from wrdata.capture.rebuild import rebuild
from wrdata.datastream import DataStream
from wrdata.sim.ibkr import IbkrSimulator
from wrdata.storage import DatasetWriter, read_table

from .helpers import FAST as HEAL

S = 1_000_000_000
IB_FAST = {"backoff_initial": 0.05, "backoff_max": 0.2, "keepalive_interval": 0.1, "silence_timeout": 0.6,
           "connect_timeout": 2.0, "request_timeout": 2.0, "idle_linger": 0.1, "pacing_delay": 0.1}
SYM = "AAPL"


def stream_for(sim, **opts) -> DataStream:
    return DataStream(endpoints={"ibkr": sim.url}, include_status=True, include_backfill=True,
                      options={"ibkr": {**IB_FAST, **{k: v for k, v in HEAL.items() if k.startswith(("heal", "history"))},
                                        "history_pacing_wait": 0.2, **opts}})


async def run(sim, ds, w=None) -> list:
    if w is not None:
        ds.add_tap(w)
    out = []
    it = ds.stream(f"ibkr:{SYM}")
    async with asyncio.timeout(30):
        while len([m for m in out if m.kind == "trade"]) < 30:
            out.append(await anext(it))
        sim.drop_all()
        while not any(m.kind == "status" and m.status in ("healed", "error") and m.symbol == SYM for m in out):
            out.append(await anext(it))
        for _ in range(20):
            out.append(await anext(it))
    await ds.close()
    if w is not None:
        w.close()
    return out


async def test_an_outage_is_healed_from_historical_ticks(tmp_path):
    async with IbkrSimulator(seed=5, rate=300, speed=20.0, warmup=1.0) as sim:
        sim.hist_identical_s = 0.0
        out = await run(sim, stream_for(sim), DatasetWriter(tmp_path, writer_id="w", flush_interval=0.1).start())
        tape = sim.market.trades(SYM)
        spec = sim.market.spec(SYM)
    (gap,) = [m for m in out if m.kind == "status" and m.status == "gap" and m.symbol == SYM]
    (h,) = [m for m in out if m.kind == "status" and m.status == "healed" and m.symbol == SYM]
    assert (h.gap_start_ns, h.gap_end_ns) == (gap.gap_start_ns, gap.gap_end_ns)
    trades = [m for m in out if m.kind == "trade"]
    healed = [m for m in trades if m.source == "backfill"]
    assert h.dropped == len(healed) > 5
    lo, hi = trades[0].ts_event, trades[-1].ts_event
    got = Counter((m.ts_event, m.price, m.size) for m in trades if lo < m.ts_event < hi)
    want = Counter((t.ts_ns // S * S, spec.price(t.price), spec.qty(t.qty)) for t in tape if lo < t.ts_ns // S * S < hi)
    assert got == want, "every trade of the tape once, none twice"
    assert all(m.exchange for m in healed)
    before = read_table(str(tmp_path), "trades")
    assert before.num_rows >= len(trades)
    rebuild(str(tmp_path))
    assert read_table(str(tmp_path), "trades").equals(before)


async def test_without_historical_data_permissions_the_gap_is_unhealable():
    async with IbkrSimulator(seed=6, rate=300, speed=20.0, warmup=1.0) as sim:
        sim.historical_ticks = False
        out = await run(sim, stream_for(sim))
    (err,) = [m for m in out if m.kind == "status" and m.status == "error" and m.symbol == SYM]
    assert err.reason.startswith("unhealable: historical ticks refused") and "No market data permissions" in err.reason
    assert not [m for m in out if m.kind == "trade" and m.source == "backfill"]


async def test_wrdata_heal_through_tws(tmp_path):
    """Offline: the recording's outage is healed later over a TWS connection of its own."""
    from wrdata.capture.heal import aheal_dataset
    from wrdata.queries import connect
    from wrdata.queries.helpers import gap_outcomes

    async with IbkrSimulator(seed=7, rate=300, speed=20.0, warmup=1.0) as sim:
        ds = DataStream(endpoints={"ibkr": sim.url}, include_status=True, options={"ibkr": IB_FAST})
        w = DatasetWriter(tmp_path, writer_id="capture", flush_interval=0.1).start()
        ds.add_tap(w)
        out = []
        it = ds.stream(f"ibkr:{SYM}")
        async with asyncio.timeout(30):
            while len([m for m in out if m.kind == "trade"]) < 30:
                out.append(await anext(it))
            sim.drop_all()
            while not any(m.kind == "status" and m.status == "gap" for m in out):
                out.append(await anext(it))
            for _ in range(20):  # trades after the outage: where its window ends
                out.append(await anext(it))
        await ds.close()
        w.close()
        assert [g["outcome"] for g in gap_outcomes(connect(tmp_path)).to_pylist()] == ["open"]
        res = await aheal_dataset(str(tmp_path), endpoints={"ibkr": sim.url}, writer_id="heal",
                                  options={"ibkr": {**IB_FAST, "history_rate": 100.0}})
        tape = sim.market.trades(SYM)
        spec = sim.market.spec(SYM)
    assert res.healed == 1 and res.backfilled > 5, res.gaps
    con = connect(tmp_path)
    assert [g["outcome"] for g in gap_outcomes(con).to_pylist()] == ["healed"]
    rows = con.sql("SELECT epoch_ns(ts_event), price, size FROM trades").fetchall()
    lo, hi = min(r[0] for r in rows), max(r[0] for r in rows)
    got = Counter(r for r in rows if lo < r[0] < hi)
    want = Counter((t.ts_ns // S * S, spec.price(t.price), spec.qty(t.qty)) for t in tape if lo < t.ts_ns // S * S < hi)
    assert got == want
    before = {t: read_table(str(tmp_path), t) for t in ("trades", "events")}
    rebuild(str(tmp_path))
    for t, tab in before.items():
        assert read_table(str(tmp_path), t).equals(tab), t
