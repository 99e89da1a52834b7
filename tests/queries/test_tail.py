"""The unsealed journal tail is queryable: today's data up to the last flush."""

from __future__ import annotations

import asyncio
import time

from query_helpers import int_ts, record

from wrdata.message import StreamMessage
from wrdata.queries import connect, ohlcv, refresh
from wrdata.storage import DatasetWriter, list_sealed, list_segments, read_table


def _trades(t0: int, n: int, start: int = 0) -> list[StreamMessage]:
    return [StreamMessage(provider="sim", symbol="X", kind="trade", ts_recv=t0 + i * 1_000_003, ts_event=t0 + i * 1_000_003 - 77,
                          conn=1, seq=i, idx=0, channel="trade", price=100.0 + i % 7, size=0.5, trade_id=i) for i in range(start, start + n)]


def test_flushed_rows_are_visible_before_sealing(tmp_path):
    root = tmp_path / "d"
    # today (the recorder seals past days' segments at once), a little in the past
    now = time.time_ns()
    t0 = now - min(10_000_000_000, now % 86_400_000_000_000) + 789
    w = DatasetWriter(root, writer_id="w1", flush_interval=0.01, roll_interval=3600, fsync="never")
    w.start()
    try:
        w.on_messages(_trades(t0, 100))
        assert w.flush()
        assert list_sealed(str(root), "trades") == [] and list_segments(str(root / "_journal"), "trades")
        con = connect(root)
        got = con.sql("SELECT epoch_ns(ts_recv), trade_id FROM trades ORDER BY ts_recv").fetchall()
        assert got == [(t0 + i * 1_000_003, i) for i in range(100)]
        assert con.sql("SELECT count(*) FROM wrdata_files WHERE NOT sealed").fetchall() == [(1,)]
        # more rows after the snapshot: seen after refresh()
        w.on_messages(_trades(t0, 50, start=100))
        assert w.flush()
        assert con.sql("SELECT count(*) FROM trades").fetchall() == [(100,)]
        refresh(con)
        assert con.sql("SELECT count(*) FROM trades").fetchall() == [(150,)]
        bars = ohlcv(con, "1s", clock="recv")
        assert sum(bars.column("trades").to_pylist()) == 150
    finally:
        w.close()
    # sealed now: the same rows, once, from the file
    assert len(list_sealed(str(root), "trades")) == 1 and list_segments(str(root / "_journal"), "trades") == []
    con2 = connect(root)
    assert con2.sql("SELECT count(*), count(DISTINCT trade_id) FROM trades").fetchall() == [(150, 150)]
    # the old snapshot still answers from memory for the tail it read
    assert con.sql("SELECT count(*) FROM trades").fetchall() == [(150,)]


async def test_tail_of_a_running_capture(tmp_path):
    """While the capture daemon runs (hourly rolls: nothing sealed yet), the views show
    what it has flushed; the rows seen are the start of what it finally records."""
    root = tmp_path / "d"
    task = asyncio.ensure_future(record(root, duration=2.5, withhold=False, roll=3600.0))
    seen = None
    for _ in range(200):
        await asyncio.sleep(0.05)
        if (root / "_journal").is_dir() and not list_sealed(str(root), "trades"):
            con = connect(root)
            n = con.sql("SELECT count(*) FROM trades").fetchall()[0][0]
            if n >= 20:
                seen = int_ts(con.sql("SELECT ts_recv, trade_id, symbol FROM trades ORDER BY ts_recv, conn, seq, idx").to_arrow_table(),
                              "ts_recv").to_pydict()
                break
    rec = await task
    assert seen is not None, "no flushed trades became visible while capturing"
    assert list_sealed(str(rec.root), "trades")  # sealed at shutdown
    final = int_ts(read_table(str(rec.root), "trades", columns=["ts_recv", "trade_id", "symbol"]), "ts_recv")
    n = len(seen["trade_id"])
    assert n < final.num_rows
    assert final.slice(0, n).to_pydict() == seen
