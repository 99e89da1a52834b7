"""Disk failures: ENOSPC (and EACCES) in a journal write and in a seal, and the memory budget."""

from __future__ import annotations

import errno
import os
import threading
import time

import pytest
from storage_helpers import T0, StatusLog, trade

from wrdata.storage import list_sealed, list_segments, read_messages, read_table


class Faults:
    """fs.fault hook: raise ``code`` (ENOSPC) for the named operations while armed."""

    def __init__(self, *ops: str, code: int = errno.ENOSPC) -> None:
        self.ops = set(ops)
        self.code = code
        self.armed = threading.Event()
        self.hits = 0

    def __call__(self, op: str, path: str) -> None:
        if self.armed.is_set() and op in self.ops:
            self.hits += 1
            raise OSError(self.code, os.strerror(self.code), path)


def visible_parquet(root):
    out = []
    for _d, _, files in os.walk(root):
        out += [f for f in files if ".parquet" in f]  # final names and temporary ones
    return out


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES], ids=["full-disk", "permissions"])
def test_enospc_in_journal_write_loses_nothing_and_resumes(make_writer, code):
    log = StatusLog()
    w = make_writer(on_status=log)
    faults = Faults("journal.write", code=code)
    w.fs.fault = faults
    w.start()
    a = [trade(i) for i in range(100)]
    w.on_messages(a)
    assert w.flush(10)
    faults.armed.set()
    b = [trade(i) for i in range(100, 300)]
    for m in b:
        w.on_messages([m])
        w.on_raw("binance", 0, m.seq, m.ts_recv, "in", "wss://x", b"frame")
    assert not w.flush(0.3)  # cannot be journaled while the disk is full
    assert faults.hits >= 2  # and it keeps retrying
    st = w.stats
    assert st.failing and st.table("binance", "trades").write_errors >= 1 and st.backlog_bytes > 0
    (err,) = [e for e in log.of("error") if "trades" in e.reason]
    assert os.strerror(code) in err.reason and err.conn == -1
    # live streaming continues: the tap never blocks or raises
    c = [trade(i) for i in range(300, 400)]
    w.on_messages(c)
    faults.armed.clear()
    assert w.flush(10)
    assert not w.stats.failing
    assert any("resumed" in e.reason for e in log.of("healed"))
    w.close()
    assert read_messages(w.root, "trades") == a + b + c
    assert len(read_table(w.root, "raw")) == 200
    assert w.stats.table("binance", "trades").dropped == 0
    statuses = [e.status for e in read_messages(w.root, "events")]
    assert "error" in statuses and "healed" in statuses


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES], ids=["full-disk", "permissions"])
def test_enospc_during_seal_leaves_no_partial_file_and_retries(make_writer, code):
    log = StatusLog()
    w = make_writer(on_status=log)
    faults = Faults("seal.write", code=code)
    w.fs.fault = faults
    w.start()
    ms = [trade(i) for i in range(1000)]
    w.on_messages(ms)
    assert w.flush(10)
    faults.armed.set()
    assert not w.roll(0.5)  # the seal fails and is retried
    assert faults.hits >= 1
    assert visible_parquet(w.root) == []  # no partial file, not even a temporary one left
    assert list_sealed(w.root) == []
    assert list_segments(w.journal_dir, "trades")  # the journal keeps the data
    assert read_messages(w.root, "trades") == ms  # and it is still readable
    assert any("sealing trades failed" in e.reason for e in log.of("error"))
    faults.armed.clear()
    assert w.wait_sealed(10)
    assert list_segments(w.journal_dir, "trades") == []
    assert len(list_sealed(w.root, "trades")) == 1
    assert any("sealing trades resumed" in e.reason for e in log.of("healed"))
    w.close()
    assert read_messages(w.root, "trades", journal=False) == ms


def test_enospc_opening_a_segment(make_writer):
    w = make_writer()
    faults = Faults("journal.open")
    w.fs.fault = faults
    faults.armed.set()
    w.start()
    ms = [trade(i) for i in range(50)]
    w.on_messages(ms)
    assert not w.flush(0.2)
    faults.armed.clear()
    assert w.flush(10)
    w.close()
    assert read_messages(w.root, "trades") == ms


def test_budget_overflow_drops_oldest_and_records_a_gap(make_writer):
    log = StatusLog()
    w = make_writer(on_status=log, memory_budget=200_000)
    faults = Faults("journal.write")
    w.fs.fault = faults
    w.start()
    faults.armed.set()
    sent = []
    for k in range(40):
        batch = [trade(k * 100 + i) for i in range(100)]
        sent += batch
        w.on_messages(batch)
        w.flush(0.02)
    faults.armed.clear()
    assert w.flush(10)
    w.close()
    got = read_messages(w.root, "trades")
    dropped = w.stats.table("binance", "trades").dropped
    assert dropped > 0 and len(got) + dropped == len(sent)
    kept = {m.seq for m in got}
    missing = [m for m in sent if m.seq not in kept]
    assert got == [m for m in sent if m.seq in kept]  # what is kept is exact and in order
    gaps = [e for e in read_messages(w.root, "events") if e.status == "gap" and "dropped" in e.reason]
    assert gaps and sum(e.dropped for e in gaps) == dropped
    for m in missing:  # every lost row is inside a recorded gap
        assert any(e.gap_start_ns <= m.ts_recv <= e.gap_end_ns for e in gaps)
    assert min(m.seq for m in missing) == 0  # the oldest went first
    assert log.of("gap")


def test_hung_writer_event_loop_drops_oldest_itself(make_writer):
    # the writer thread cannot drain at all: the tap bounds memory on its own
    block = threading.Event()
    w = make_writer(memory_budget=100_000)
    w.fs.fault = lambda op, path: block.wait() if op == "journal.write" else None
    w.start()
    w.on_messages([trade(0)])
    time.sleep(0.1)  # the writer is now stuck inside a journal write
    for i in range(1, 3001):
        w.on_messages([trade(i, T0 + i * 1000)])
    queued = w._in_bytes - w._out_bytes
    assert queued <= 100_000
    block.set()
    w.close()
    got = read_messages(w.root, "trades")
    dropped = w.stats.table("binance", "trades").dropped
    assert dropped > 0 and len(got) + dropped == 3001
    gaps = [e for e in read_messages(w.root, "events") if e.status == "gap"]
    assert sum(e.dropped for e in gaps) == dropped


def test_frames_received_counts_the_ones_the_budget_dropped(make_writer):
    # the capture's frames-received figure comes from the writer: frames the memory
    # budget drops were received all the same, and frames sent are not counted
    block = threading.Event()
    w = make_writer(memory_budget=100_000)
    w.fs.fault = lambda op, path: block.wait() if op == "journal.write" else None
    w.start()
    w.on_raw("binance", 1, 0, T0, "out", "wss://x", b'{"method":"SUBSCRIBE"}')
    time.sleep(0.1)  # the writer is now stuck inside a journal write
    for i in range(1, 3001):
        w.on_raw("binance", 1, i, T0 + i * 1000, "in", "wss://x", b"x" * 200)
    block.set()
    w.close()
    st = w.stats.table("binance", "raw")
    assert st.dropped > 0
    assert st.received == 3000
