"""A message storage cannot hold (an id or a time beyond int64, as a hostile frame can
carry: tests/reliability/fuzz.py) is rejected alone, counted, and costs nothing else."""

from __future__ import annotations

import time

from wrdata.message import StreamMessage
from wrdata.storage import DatasetWriter, read_table


def test_an_int_beyond_int64_costs_only_its_own_row(tmp_path):
    w = DatasetWriter(tmp_path, flush_interval=0.02).start()
    t0 = time.time_ns()
    trades = [StreamMessage(provider="binance", symbol="BTCUSDT", kind="trade", ts_recv=t0 + i, seq=i, price=1.0, size=1.0, trade_id=i)
              for i in range(100)]
    trades[50] = StreamMessage(provider="binance", symbol="BTCUSDT", kind="trade", ts_recv=t0 + 50, seq=50, price=1.0, size=1.0,
                               trade_id=2**70)
    w.on_messages(trades)  # in the same writer cycle as rows of other tables
    w.on_messages([StreamMessage(provider="binance", symbol="BTCUSDT", kind="quote", ts_recv=t0 + 200, seq=200, bid=1.0, ask=2.0)])
    w.on_raw("binance", 1, 201, t0 + 201, "in", "ws://x", b"frame")
    assert w.flush(10)
    w.close()
    assert read_table(str(tmp_path), "trades").column("trade_id").to_pylist() == [i for i in range(100) if i != 50]
    assert read_table(str(tmp_path), "quotes").num_rows == 1 and read_table(str(tmp_path), "raw").num_rows == 1
    st = w.stats.table("binance", "trades")
    assert st.rejected == 1 and st.dropped == 1
