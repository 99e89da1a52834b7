"""Healing in the capture daemon (on by default, ``heal = false`` / ``--no-heal`` turns it
off) and through the DataStream API (``heal=True``, ``include_backfill=True``)."""

from __future__ import annotations

import asyncio

from wrdata import DataStream
from wrdata.capture.config import CaptureConfig, Target
from wrdata.capture.daemon import CaptureDaemon
from wrdata.channels import parse_channels
from wrdata.queries import connect
from wrdata.queries.helpers import gap_outcomes
from wrdata.sim.binance import BinanceSimulator

SYM = "BTCUSDT"


async def _capture(tmp_path, heal: bool) -> BinanceSimulator:
    sim = BinanceSimulator(seed=41, symbols=[SYM], rate=300, warmup=1.0, msg_limit=None)
    async with sim:
        cfg = CaptureConfig(targets=[Target("binance", [SYM], parse_channels("trade"))], root=str(tmp_path),
                            endpoints={"binance": sim.url}, heal=heal,
                            options={"binance": {"history_rate": 1000.0, "history_burst": 1000.0}})
        cfg.storage.flush_interval = 0.2
        daemon = CaptureDaemon(cfg, duration=2.5, status="none")
        task = asyncio.create_task(daemon.run())
        await asyncio.sleep(1.0)
        sim.faults.withhold_trades(4, SYM)
        assert await task == 0
    return sim


async def test_the_capture_daemon_heals_by_default(tmp_path):
    sim = await _capture(tmp_path / "on", heal=True)
    con = connect(tmp_path / "on")
    n, distinct, lo, hi = con.sql("SELECT count(*), count(DISTINCT trade_id), min(trade_id), max(trade_id) FROM trades").fetchall()[0]
    assert n == distinct == hi - lo + 1
    assert sorted(r[0] for r in con.sql("SELECT trade_id FROM trades WHERE source = 'backfill'").fetchall()) == sim.faults.withheld[SYM]
    assert [g["outcome"] for g in gap_outcomes(con).to_pylist()] == ["healed"]
    sim = await _capture(tmp_path / "off", heal=False)
    con = connect(tmp_path / "off")
    assert con.sql("SELECT count(*) FROM trades WHERE source = 'backfill'").fetchall()[0][0] == 0
    assert [g["outcome"] for g in gap_outcomes(con).to_pylist()] == ["open"]


async def test_datastream_heal_and_include_backfill():
    sim = BinanceSimulator(seed=42, symbols=[SYM], rate=300, warmup=1.0, msg_limit=None)
    async with sim:
        async with DataStream(endpoints={"binance": sim.url}, heal=True, include_backfill=True, include_status=True,
                              options={"binance": {"history_rate": 1000.0}}) as ds:
            out = []
            async for m in ds.stream(SYM):
                out.append(m)
                if len(out) == 20:
                    sim.faults.withhold_trades(3, SYM)
                if m.kind == "status" and m.status == "healed":
                    break
        plain = []
        async with DataStream(endpoints={"binance": sim.url}, heal=True) as ds:
            async for m in ds.stream(SYM):
                plain.append(m)
                if len(plain) == 5:
                    sim.faults.withhold_trades(3, SYM)
                if len(plain) == 60:
                    break
    healed = [m for m in out if m.kind == "trade" and m.source == "backfill"]
    assert [m.trade_id for m in healed] == sim.faults.withheld[SYM][:3]
    assert all(m.source == "stream" for m in plain), "only consumers that ask get healed trades"
