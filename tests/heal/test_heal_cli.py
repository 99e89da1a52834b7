"""``wrdata heal`` on recordings with open gaps: the gaps are healed from the venues'
history APIs afterwards, the recording becomes complete, and rebuild re-derives it."""

from __future__ import annotations

import asyncio
from collections import Counter

from click.testing import CliRunner

from wrdata import DataStream
from wrdata.capture.rebuild import rebuild
from wrdata.cli import main
from wrdata.queries import connect
from wrdata.queries.helpers import gap_outcomes
from wrdata.sim.alpaca import AlpacaSimulator
from wrdata.sim.binance import BinanceSimulator
from wrdata.storage import DatasetWriter, read_table

from .helpers import consume, outage, wait_for


async def _record(sim, provider: str, symbol: str, root, during, **options):
    ds = DataStream(endpoints={provider: sim.url}, options={provider: {"backoff_initial": 0.05, "backoff_max": 0.2, **options}})
    if provider == "alpaca":
        ds.manager.credentials["alpaca"] = {"key": "k", "secret": "s"}
    w = DatasetWriter(root, writer_id="capture-1", flush_interval=0.1).start()
    ds.add_tap(w)
    c, _ = await consume(ds, provider, symbol, backfill=False)
    await wait_for(lambda: len(c.queue) > 20)
    await during(c)
    await asyncio.sleep(0.3)
    await ds.close()
    w.close()


def _heal(*args: str):
    return CliRunner().invoke(main, ["heal", *args], catch_exceptions=False)


async def test_wrdata_heal_makes_a_recording_with_id_gaps_and_an_outage_complete(tmp_path):
    sim = BinanceSimulator(seed=31, symbols=["BTCUSDT"], rate=300, warmup=1.0, msg_limit=None)
    async with sim:
        async def during(c):
            sim.faults.withhold_trades(5, "BTCUSDT")
            await wait_for(lambda: len(sim.faults.withheld.get("BTCUSDT", [])) == 5)
            await asyncio.sleep(0.2)
            await outage(sim, 0.8)
            await wait_for(lambda: sum(1 for m in c.queue if m.kind == "status" and m.status == "gap") >= 3)

        await _record(sim, "binance", "BTCUSDT", tmp_path, during)
        before = gap_outcomes(connect(tmp_path)).to_pylist()
        assert len(before) == 3 and {g["outcome"] for g in before} == {"open"}, "withheld ids, the outage, its id hole"
        con = connect(tmp_path)
        assert con.sql("SELECT max(trade_id) - min(trade_id) + 1 - count(*) FROM trades").fetchall()[0][0] > 5
        dry = await asyncio.to_thread(_heal, "--root", str(tmp_path), "--dry-run", "--endpoint", f"binance={sim.url}")
        assert dry.output.count("would heal") == 3
        r = await asyncio.to_thread(_heal, "--root", str(tmp_path), "--endpoint", f"binance={sim.url}",
                                    "--option", "binance.history_rate=1000", "--option", "binance.history_burst=1000",
                                    "--writer-id", "heal-1")
    assert r.exit_code == 0, r.output
    assert "3 gaps: 3 healed" in r.output and "(writer heal-1)" in r.output
    con = connect(tmp_path)
    lo, hi, n, distinct = con.sql("SELECT min(trade_id), max(trade_id), count(*), count(DISTINCT trade_id) FROM trades").fetchall()[0]
    assert n == distinct == hi - lo + 1, "complete: every trade once"
    tape = {t.trade_id: t for t in sim.market.trades("BTCUSDT")}
    spec = sim.market.spec("BTCUSDT")
    for tid, price, size, src in con.sql("SELECT trade_id, price, size, source FROM trades").fetchall():
        assert (price, size) == (spec.price(tape[tid].price), spec.qty(tape[tid].qty)), src
    assert {g["outcome"] for g in gap_outcomes(con).to_pylist()} == {"healed"}
    # healed rows sit where the gap was (stamped with the gap event's receive time) and say when they were fetched
    rows = con.sql("SELECT epoch_ns(ts_recv), epoch_ns(ts_fetched) FROM trades WHERE writer = 'heal-1'").fetchall()
    assert rows and all(f > t for t, f in rows)
    again = await asyncio.to_thread(_heal, "--root", str(tmp_path))
    assert "no open trade gaps" in again.output
    # the heal writer's rows rebuild from its raw, exactly
    before = read_table(str(tmp_path), "trades")
    rebuild(str(tmp_path))
    assert read_table(str(tmp_path), "trades").equals(before)


async def test_wrdata_heal_by_time_window(tmp_path):
    sim = AlpacaSimulator(key="k", secret="s", seed=5, rate=400, hours="always", warmup=0.5, late_fraction=0.0,
                          reap_after=0.05, symbols=["NVDA"])
    async with sim:
        async def during(c):
            await outage(sim, 1.0)
            await wait_for(lambda: any(m.kind == "status" and m.status == "gap" for m in c.queue))
            await asyncio.sleep(0.3)

        await _record(sim, "alpaca", "NVDA", tmp_path, during, feed="sip")
        r = await asyncio.to_thread(_heal, "--root", str(tmp_path), "--endpoint", f"alpaca={sim.url}",
                                    "--option", "alpaca.history_rate=1000")
        # credentials come from the environment as for capture; without them the history refuses
        assert r.exit_code == 0 and "unhealable: history refused (HTTP 401" in r.output
        import os

        os.environ["APCA_API_KEY_ID"], os.environ["APCA_API_SECRET_KEY"] = "k", "s"
        try:
            r = await asyncio.to_thread(_heal, "--root", str(tmp_path), "--endpoint", f"alpaca={sim.url}",
                                        "--option", "alpaca.history_rate=1000", "--option", "alpaca.feed=sip")
        finally:
            del os.environ["APCA_API_KEY_ID"], os.environ["APCA_API_SECRET_KEY"]
    assert "1 gaps: 1 healed" in r.output, r.output
    con = connect(tmp_path)
    (g,) = gap_outcomes(con).to_pylist()
    assert g["outcome"] == "healed"
    got = Counter(con.sql("SELECT epoch_ns(ts_event), price, size FROM trades").fetchall())
    lo, hi = min(t for t, _, _ in got), max(t for t, _, _ in got)
    spec = sim.market.spec("NVDA")
    want = Counter((t.ts_ns, spec.price(t.price), float(int(spec.qty(t.qty)))) for t in sim.market.trades("NVDA")
                   if lo < t.ts_ns < hi)
    assert Counter({k: v for k, v in got.items() if lo < k[0] < hi}) == want
