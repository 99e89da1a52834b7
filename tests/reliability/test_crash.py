"""SIGKILL a real ``wrdata capture`` process at random moments while it records from a
simulator, restart it, and check the recording (tests/reliability/helpers.py,
``crash_campaign``). The soak run does this 50+ times; here a few."""

from __future__ import annotations

from tests.reliability.helpers import crash_campaign


async def test_random_sigkills_lose_only_the_unflushed_tail(tmp_path):
    report = await crash_campaign(tmp_path, kills=4, seed=7, max_alive=2.0)
    assert report.kills == 4 and report.connected_kills >= 2
    assert report.rows > 0 and report.files > 0


_SEALER = """
import os, sys, time
from wrdata.message import StreamMessage
from wrdata.storage import DatasetWriter

marker = sys.argv[2]

def fault(op, path):
    if op == "seal.commit":  # the Parquet file is written under its temporary name: die here
        open(marker, "w").close()
        time.sleep(3600)

w = DatasetWriter(sys.argv[1], writer_id="victim", flush_interval=0.02, roll_interval=30 * 86400)
w.fs.fault = fault
w.start()
T0 = 1_764_000_000_000_000_000
w.on_messages([StreamMessage(provider="binance", symbol="BTCUSDT", kind="trade", ts_recv=T0 + i, seq=i, price=1.0, size=1.0,
                             trade_id=i) for i in range(5000)])
assert w.flush(10)
w.roll(0.01)  # seals in the background, into the fault
time.sleep(3600)
"""


async def test_a_kill_in_the_middle_of_a_seal_leaves_no_temporary_file_after_recovery(tmp_path):
    """The seal of a segment is killed after its Parquet file is written under the
    temporary name and before it is moved into place; recovery seals the segment again
    and removes what the dead process left."""
    import asyncio
    import os
    import sys

    from wrdata.storage import DatasetWriter, list_segments, read_table

    root, marker = tmp_path / "data", tmp_path / "sealing"
    p = await asyncio.create_subprocess_exec(sys.executable, "-c", _SEALER, str(root), str(marker))
    try:
        async with asyncio.timeout(60):
            while not marker.exists():
                await asyncio.sleep(0.02)
    finally:
        p.kill()
        await p.wait()
    tmps = lambda: [f for d, _, fs in os.walk(root) for f in fs if ".tmp-" in f]  # noqa: E731
    assert tmps(), "the kill left a half-done seal behind"
    w = DatasetWriter(root, flush_interval=0.02).start()
    assert w.wait_sealed(30)
    w.close()
    assert not list_segments(str(root / "_journal")) and not tmps()
    assert read_table(str(root), "trades", journal=False).column("trade_id").to_pylist() == list(range(5000))
