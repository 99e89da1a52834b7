"""A disk that really fills up (a 24 MiB tmpfs) under a running capture daemon with a live
consumer, then gets space back. tests/reliability/test_disk_full.py does the same through
the storage layer's fault hook on every run; here the kernel says ENOSPC, with the short
writes and failed renames that come with it."""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess

import pytest

from tests.reliability.test_disk_full import final_parquet, watch_files
from wrdata.capture.config import CaptureConfig, Target
from wrdata.capture.daemon import CaptureDaemon
from wrdata.channels import parse_channels
from wrdata.sim.binance import BinanceSimulator
from wrdata.storage import list_segments, read_table

pytestmark = [pytest.mark.soak, pytest.mark.timeout(900)]


def fill(path) -> int:
    """Write zeros until the file system is full; returns the bytes written."""
    n = 0
    chunk = b"\0" * 65536
    with open(path, "wb", buffering=0) as f:
        while True:
            try:
                n += f.write(chunk)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                return n


async def test_a_real_full_disk_and_space_coming_back(tmp_path, figures):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs permission to mount a small tmpfs (run as root)")
    try:
        root = mnt / "data"
        sim = BinanceSimulator(seed=51, rate=600)
        async with sim:
            cfg = CaptureConfig(targets=[Target("binance", ["BTCUSDT", "ETHUSDT"], parse_channels("trade,quote"))], root=str(root),
                                endpoints={"binance": sim.url})
            cfg.storage.flush_interval = 0.2
            cfg.storage.roll_interval = 1.0
            daemon = CaptureDaemon(cfg, status="none")
            run = asyncio.create_task(daemon.run())
            while daemon.stream is None or daemon.writer is None:
                await asyncio.sleep(0.01)
            got: list = []

            async def consume() -> None:
                async for m in daemon.stream.stream("BTCUSDT"):
                    got.append(m)

            consumer = asyncio.create_task(consume())
            stop, seen = asyncio.Event(), {}
            watcher = asyncio.create_task(watch_files(root, stop, seen))
            await asyncio.sleep(2.0)
            ballast = mnt / "ballast"
            filled = await asyncio.to_thread(fill, ballast)
            full_for = 0.0
            for _ in range(20):  # 10 s on a full disk
                n = len(got)
                await asyncio.sleep(0.5)
                assert len(got) > n, "the live consumer stalled on a full disk"
                if daemon.writer.stats.failing:
                    full_for += 0.5
            assert full_for >= 5.0, "the disk was full for the writer"
            errors = daemon.writer.stats.totals().write_errors
            backlog = daemon.writer.stats.backlog_bytes
            ballast.unlink()
            for _ in range(40):
                await asyncio.sleep(0.5)
                if not daemon.writer.stats.failing and not daemon.writer.stats.backlog_bytes:
                    break
            assert not daemon.writer.stats.failing, "writing resumed once space came back"
            await asyncio.sleep(1.0)
            daemon.request_stop()
            assert await run == 0
            stop.set()
            await watcher
            consumer.cancel()
        assert final_parquet(root) and not list_segments(str(root / "_journal"))
        assert not [f for d, _, fs in os.walk(root) for f in fs if ".tmp" in f]
        trades = read_table(str(root), "trades", symbols="BTCUSDT")
        ids = trades.column("trade_id").to_pylist()
        assert ids == list(range(ids[0], ids[0] + len(ids))), "nothing lost"
        assert {m.trade_id for m in got} <= set(ids)
        assert daemon.writer.stats.totals().dropped == 0
        ev = read_table(str(root), "events")
        reasons = [r or "" for r in ev.column("reason").to_pylist()]
        assert any("No space left" in r for r in reasons) and any(r.startswith("storage:") and "resumed" in r for r in reasons)
        figures["real full disk (tmpfs 24 MiB)"] = {
            "ballast MiB": round(filled / 2**20, 1), "seconds full": full_for, "write errors": errors,
            "backlog held at most (MiB, sampled)": round(backlog / 2**20, 2), "trades recorded": len(ids),
            "consumer messages meanwhile": len(got),
        }
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
