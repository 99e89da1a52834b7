"""Helpers of the query tests (a module of its own: ``from conftest import`` is ambiguous
with several test folders): a recording made by the capture daemon from the Binance simulator, shared by the
query tests (read-only; tests that change files copy it first).

The daemon records ``trade`` and ``quote`` of BTCUSDT and ETHUSDT for ~3 s with 1 s
rolls (several sealed files per partition). After ~1 s the simulator withholds 4
BTCUSDT trades, so the recording has a trade-id gap and the streaming layer's ``gap``
event for it. The simulator's seeded market is kept (``rec.market``) so tests compute
expected values from the market itself, not from the recording.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from wrdata.capture.config import CaptureConfig, Target
from wrdata.capture.daemon import CaptureDaemon
from wrdata.channels import parse_channels
from wrdata.sim.binance import BinanceSimulator
from wrdata.sim.market import SyntheticMarket
from wrdata.storage import read_table

SEED = 11
RATE = 300.0
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
WITHHELD = 4


@dataclass
class Recording:
    root: Path
    market: SyntheticMarket  # the simulator's market, after the capture
    withheld: dict[str, list[int]]  # trade ids the simulator did not send, per symbol
    rate: float

    def copy(self, dest: Path) -> Path:
        shutil.copytree(self.root, dest)
        return dest


async def record(root: Path, *, duration: float = 3.0, withhold: bool = True, roll: float = 1.0) -> Recording:
    sim = BinanceSimulator(seed=SEED, rate=RATE, warmup=0.5, msg_limit=None)
    await sim.start()
    try:
        config = CaptureConfig(
            targets=[Target("binance", SYMBOLS, parse_channels("trade,quote"))],
            root=str(root),
            endpoints={"binance": sim.url},
            heal=False,  # the withheld trades stay a gap: what the gap and coverage queries are tested on
        )
        config.storage.flush_interval = 0.2
        config.storage.roll_interval = roll
        config.storage.fsync = "never"
        daemon = CaptureDaemon(config, duration=duration, status="none")
        task = asyncio.ensure_future(daemon.run())
        if withhold:
            await asyncio.sleep(duration / 3)
            sim.faults.withhold_trades(WITHHELD, "BTCUSDT")
        code = await task
        assert code == 0
        return Recording(root, sim.market, {k: list(v) for k, v in sim.faults.withheld.items()}, RATE)
    finally:
        await sim.stop()


def sim_trades(rec: Recording, symbol: str, ids: set[int]) -> list[tuple[int, int, float, float]]:
    """(trade_id, ts_ns of the venue's T field, price, size) of the market's trades with
    these ids, from the seeded market (not from the recording)."""
    spec = rec.market.spec(symbol)
    out = []
    for t in rec.market.trades(symbol):
        if t.trade_id in ids:
            out.append((t.trade_id, t.ts_ns // 1_000_000 * 1_000_000, spec.price(t.price), spec.qty(t.qty)))
    out.sort()
    return out


def recorded_ids(root: Path, symbol: str) -> set[int]:
    t = read_table(str(root), "trades", symbols=symbol, columns=["trade_id"])
    return set(t.column("trade_id").to_pylist())


def int_ts(t: pa.Table, *names: str) -> pa.Table:
    for n in names:
        i = t.schema.get_field_index(n)
        t = t.set_column(i, n, t.column(n).cast(pa.int64()))
    return t
