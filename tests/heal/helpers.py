"""Helpers of the gap-healing tests: a DataStream with healing on, recording into a dataset,
and the checks against a simulator's tape."""

from __future__ import annotations

import asyncio
from typing import Any

from wrdata import DataStream
from wrdata.streaming.hub import Consumer

FAST = dict(
    heal=True, heal_wait=2.0, history_rate=1000.0, history_burst=1000.0, heal_backoff=0.05, heal_backoff_max=0.2,
    backoff_initial=0.05, backoff_max=0.2,
)


def heal_stream(provider: str, url: str, **options: Any) -> DataStream:
    opts = dict(FAST)
    opts.update(options)
    return DataStream(endpoints={provider: url}, options={provider: opts})


async def consume(ds: DataStream, provider: str, symbol: str, backfill: bool = True) -> tuple[Consumer, Any]:
    """A consumer of ``symbol``'s trades (and status events, and healed trades if asked)."""
    from wrdata.channels import parse_channel

    c = Consumer(100_000, include_status=True, label="test", include_backfill=backfill)
    sub = await ds.source.subscribe(provider, symbol, parse_channel("trade"), c)
    return c, sub


def drain(c: Consumer) -> list:
    assert not c.dropped, "the test consumer never overflows"
    out = list(c.queue)
    c.queue.clear()
    return out


async def wait_for(pred, timeout: float = 20.0, step: float = 0.02) -> None:
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(step)


async def outage(sim, seconds: float) -> None:
    """Drop every connection and refuse new ones for ``seconds``: a disconnect window."""
    sim.faults.reject_connections(seconds)
    for c in list(sim.connections):
        c.drop()
    await asyncio.sleep(seconds)


def trades_of(msgs: list, symbol: str) -> list:
    return [m for m in msgs if m.kind == "trade" and m.symbol == symbol]


def statuses(msgs: list, *codes: str) -> list:
    return [m for m in msgs if m.kind == "status" and m.status in codes]


def check_tape(sim, symbol: str, trades: list, ts_unit_ns: int) -> tuple[int, int]:
    """Healed trades (stream and backfill) against the simulator's tape: no id twice, none
    missing, every field as the venue sends it (times at the venue's ``ts_unit_ns``
    resolution). Returns (first id, last id)."""
    ids = [t.trade_id for t in trades]
    assert len(ids) == len(set(ids)), "no trade twice"
    lo, hi = min(ids), max(ids)
    assert sorted(ids) == list(range(lo, hi + 1)), "no trade missing"
    tape = {t.trade_id: t for t in sim.market.trades(symbol)}
    spec = sim.market.spec(symbol)
    for t in trades:
        src = tape[t.trade_id]
        assert (t.price, t.size, t.ts_event) == (spec.price(src.price), spec.qty(src.qty), src.ts_ns // ts_unit_ns * ts_unit_ns)
        assert t.side == ("sell" if src.buyer_maker else "buy")
    return lo, hi
