"""Replay of datasets with redundant writers and healed trades: the merged view by
default, one writer's view on request, healed trades where received, at event time, or
left out."""

from __future__ import annotations

import asyncio

import pytest

from wrdata import DataStream
from wrdata.sim.binance import BinanceSimulator
from wrdata.storage import DatasetWriter

from .helpers import consume, heal_stream, wait_for
from .test_merge import _daemon

SYM = "BTCUSDT"


async def replayed(root, **kw) -> list:
    async with DataStream.replay(str(root), speed=None, **kw) as ds:
        return [m async for m in ds.stream(f"binance:{SYM}", include_status=True)]


@pytest.fixture
async def two_writers(tmp_path):
    sim = BinanceSimulator(seed=23, symbols=[SYM], rate=300, warmup=1.0, msg_limit=None)
    async with sim:
        a, wa, ca = await _daemon(sim, tmp_path, "daemon-a")
        await wait_for(lambda: len(sim.connections) == 1)
        b, wb, cb = await _daemon(sim, tmp_path, "daemon-b")
        await wait_for(lambda: len(sim.connections) == 2 and len(ca.queue) > 20 and len(cb.queue) > 20)
        sim.faults.reject_connections(0.7)
        sim.history[0].drop()
        await wait_for(lambda: any(m.kind == "status" and m.status == "gap" for m in ca.queue))
        await asyncio.sleep(0.3)
        for ds in (a, b):
            await ds.close()
        wa.close()
        wb.close()
    return tmp_path


async def test_replay_is_the_merged_view_and_one_writer_alone_shows_its_outage(two_writers):
    merged = await replayed(two_writers)
    ids = [m.trade_id for m in merged if m.kind == "trade"]
    assert len(ids) == len(set(ids)) and sorted(ids) == list(range(min(ids), max(ids) + 1)), "each trade once, none missing"
    assert ids == sorted(ids), "in receive order, the earliest receipt of each"
    alone = await replayed(two_writers, writers=["daemon-a"])
    a_ids = [m.trade_id for m in alone if m.kind == "trade"]
    assert len(a_ids) == len(set(a_ids)) and set(a_ids) < set(ids)
    hole = sorted(set(range(min(a_ids), max(a_ids) + 1)) - set(a_ids))
    assert hole, "daemon a's outage"
    gaps = [m for m in alone if m.kind == "status" and m.status == "gap"]
    assert len(gaps) == 2, "its outage, as its live code saw it: the disconnection and the trade ids skipped"
    assert {(g.first_missing_id, g.last_missing_id) for g in gaps if g.first_missing_id} == {(hole[0], hole[-1])}
    b_only = await replayed(two_writers, writers=["daemon-b"])
    assert not [m for m in b_only if m.kind == "status" and m.status == "gap"]


async def test_healed_trades_where_received_at_event_time_or_not_at_all(tmp_path):
    sim = BinanceSimulator(seed=24, symbols=[SYM], rate=300, warmup=1.0, msg_limit=None)
    async with sim:
        ds = heal_stream("binance", sim.url)
        w = DatasetWriter(tmp_path, writer_id="w", flush_interval=0.1).start()
        ds.add_tap(w)
        c, _ = await consume(ds, "binance", SYM)
        await wait_for(lambda: len(c.queue) > 20)
        sim.faults.withhold_trades(6, SYM)
        await wait_for(lambda: any(m.kind == "status" and m.status == "healed" for m in c.queue))
        await asyncio.sleep(0.3)
        await ds.close()
        w.close()
    withheld = sim.faults.withheld[SYM]
    received = await replayed(tmp_path)
    ids = [m.trade_id for m in received if m.kind == "trade"]
    assert sorted(ids) == list(range(ids[0], ids[-1] + 1)) and len(ids) == len(set(ids))
    healed = [m for m in received if m.kind == "trade" and m.source == "backfill"]
    assert [m.trade_id for m in healed] == withheld
    pos = ids.index(withheld[0])
    assert ids[pos - 1] > withheld[-1], "where received: after the trade that revealed the gap"
    kinds = [(m.kind, m.status) for m in received]
    assert kinds.index(("status", "gap")) < kinds.index(("status", "healed"))
    at_event = await replayed(tmp_path, backfill="event")
    ev_ids = [m.trade_id for m in at_event if m.kind == "trade"]
    assert sorted(ev_ids) == sorted(ids)
    placed = [ev_ids.index(i) for i in withheld]
    assert placed == sorted(placed), "healed trades in their own order"
    # at event time: inside the gap, before the trade that revealed it (streamed trades sit
    # at their receive time, a few ms after their event time, so the two interleave there)
    assert max(placed) < ev_ids.index(withheld[-1] + 1)
    assert all(m.ts_recv == m.ts_event for m in at_event if m.kind == "trade" and m.source == "backfill")
    streamed = await replayed(tmp_path, backfill="none")
    s_ids = [m.trade_id for m in streamed if m.kind == "trade"]
    assert sorted(set(ids) - set(s_ids)) == withheld, "the feed as streamed: the hole"


async def test_wrdata_replay_prints_the_merged_view_or_one_writer(two_writers):
    import json

    from click.testing import CliRunner

    from wrdata.cli import main

    def ids(*args: str) -> list[int]:
        r = CliRunner().invoke(main, ["replay", "--root", str(two_writers), "--kinds", "trade", "--format", "jsonl", *args])
        assert r.exit_code == 0, r.output
        return [json.loads(line)["trade_id"] for line in r.output.splitlines() if line.startswith("{")]

    merged = await asyncio.to_thread(ids)
    assert len(merged) == len(set(merged)) == max(merged) - min(merged) + 1
    every = await asyncio.to_thread(ids, "--all-rows")
    assert len(every) > len(merged) and set(every) == set(merged)
    alone = await asyncio.to_thread(ids, "--writer", "daemon-a")
    assert set(alone) < set(merged) and len(alone) == len(set(alone))
