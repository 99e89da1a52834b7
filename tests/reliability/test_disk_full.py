"""A full disk and failing writes under a running capture daemon with a live consumer.

tests/storage/test_faults.py proves the writer alone; here the whole daemon runs against
a simulator, a strategy-like consumer reads the same streams, and the disk fails first
for the journal, then for sealing (``writer.fs.fault``, the storage layer's injection
point, raising what a full disk raises). What must hold: the consumer never stops
receiving; nothing the daemon received is lost (the memory budget holds the backlog);
no half-written Parquet file is ever visible under a final name; writing and sealing
resume by themselves when space returns, and the outage is in the events table.
"""

from __future__ import annotations

import asyncio
import errno
import os
import threading

import pyarrow.parquet as pq

from wrdata.capture.config import CaptureConfig, Target
from wrdata.capture.daemon import CaptureDaemon
from wrdata.channels import parse_channels
from wrdata.sim.binance import BinanceSimulator
from wrdata.storage import list_segments, read_table


class DiskFull:
    """``fs.fault`` hook: the named operations fail with ENOSPC while armed."""

    def __init__(self) -> None:
        self.ops: set[str] = set()
        self.hits = 0
        self.lock = threading.Lock()

    def arm(self, *ops: str) -> None:
        with self.lock:
            self.ops = set(ops)

    def clear(self) -> None:
        with self.lock:
            self.ops = set()

    def __call__(self, op: str, path: str) -> None:
        with self.lock:
            if op in self.ops:
                self.hits += 1
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


def final_parquet(root) -> list[str]:
    return [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.endswith(".parquet") and not f.startswith(".")]


async def watch_files(root, stop: asyncio.Event, seen: dict) -> None:
    """Open every Parquet file under a final name, as a reader would, all the time."""
    while not stop.is_set():
        for f in final_parquet(root):
            if f not in seen:
                await asyncio.to_thread(pq.read_table, f)  # raises on a half-written file
                seen[f] = True
        await asyncio.sleep(0.05)


async def test_full_disk_during_capture_and_sealing_with_a_live_consumer(tmp_path):
    sim = BinanceSimulator(seed=21, rate=400)
    async with sim:
        cfg = CaptureConfig(targets=[Target("binance", ["BTCUSDT", "ETHUSDT"], parse_channels("trade,quote"))], root=str(tmp_path),
                            endpoints={"binance": sim.url})
        cfg.storage.flush_interval = 0.2
        cfg.storage.roll_interval = 1.0
        daemon = CaptureDaemon(cfg, status="none")
        run = asyncio.create_task(daemon.run())
        while daemon.stream is None or daemon.writer is None:
            await asyncio.sleep(0.01)
        disk = DiskFull()
        daemon.writer.fs.fault = disk
        got: list = []

        async def consume() -> None:
            async for m in daemon.stream.stream("BTCUSDT"):
                got.append(m)

        consumer = asyncio.create_task(consume())
        stop, seen = asyncio.Event(), {}
        watcher = asyncio.create_task(watch_files(tmp_path, stop, seen))

        async def receiving_for(seconds: float) -> None:
            """The consumer keeps receiving, every half second, however the disk is doing."""
            for _ in range(int(seconds / 0.5)):
                n = len(got)
                await asyncio.sleep(0.5)
                assert len(got) > n, "the live consumer stalled"

        await receiving_for(0.5)
        sealed_before = set(final_parquet(tmp_path))
        # 1. the disk is full: journal writes (and new segments) fail
        disk.arm("journal.write", "journal.open", "journal.sync")
        await receiving_for(1.5)
        st = daemon.writer.stats
        assert st.failing and st.backlog_bytes > 0
        disk.clear()
        for _ in range(100):  # writes are retried every retry_interval (1 s)
            if not daemon.writer.stats.failing:
                break
            await asyncio.sleep(0.05)
        assert not daemon.writer.stats.failing, "writing resumed by itself"
        # 2. the disk fills up while segments are being sealed
        disk.arm("seal.write", "seal.commit")
        await receiving_for(2.0)
        assert daemon.writer.stats.seal_pending > 0
        disk.clear()
        await receiving_for(1.0)
        assert disk.hits > 3
        daemon.request_stop()
        assert await run == 0
        stop.set()
        await watcher  # raised if a half-written file was ever visible
        consumer.cancel()
    assert set(final_parquet(tmp_path)) > sealed_before
    assert not list_segments(str(tmp_path / "_journal")), "every segment sealed once space returned"
    assert not [f for d, _, fs in os.walk(tmp_path) for f in fs if ".tmp" in f], "no temporary file left behind"
    # nothing received was lost: every trade the consumer saw was recorded, ids without a hole
    trades = read_table(str(tmp_path), "trades", symbols="BTCUSDT")
    recorded = trades.column("trade_id").to_pylist()
    assert recorded == list(range(recorded[0], recorded[0] + len(recorded)))
    seen_ids = [m.trade_id for m in got if m.kind == "trade"]
    assert set(seen_ids) <= set(recorded) and len(seen_ids) > 100
    totals = daemon.writer.stats.totals()
    assert totals.dropped == 0 and totals.write_errors > 0
    # and the outage is on record
    ev = read_table(str(tmp_path), "events")
    rows = list(zip(ev.column("status").cast("string").to_pylist(), ev.column("reason").to_pylist()))
    assert any(s == "error" and "No space left" in (r or "") for s, r in rows)
    assert any(s == "error" and "sealing" in (r or "") for s, r in rows)
    assert sum(1 for s, r in rows if s == "healed" and (r or "").startswith("storage:")) >= 2
