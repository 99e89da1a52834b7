"""Crash recovery: torn and corrupt journal tails, and a real SIGKILL mid-stream."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
from storage_helpers import REPO, T0, StatusLog, trade

from wrdata.storage import StorageFS, from_messages, list_sealed, list_segments, read_messages, read_segment, read_table
from wrdata.storage.journal import SegmentWriter
from wrdata.storage.layout import day_of, partition_dir, segment_name


def dead_segment(root, writer="dead-1", units=5, per=100):
    """A journal segment left by a writer that is gone (no lock held)."""
    fs = StorageFS(root)
    day = day_of(T0)
    path = os.path.join(partition_dir(fs.journal_dir, "trades", "binance", day), segment_name(writer, 0))
    seg = SegmentWriter(fs, path, "trades", "binance", day, writer, 0)
    ms = [trade(i) for i in range(units * per)]
    for k in range(units):
        part = ms[k * per : (k + 1) * per]
        seg.append(from_messages("trades", part, writer), part[0].ts_recv, part[-1].ts_recv, (part[-1].ts_recv,))
    os.close(seg.fd)  # dies without closing the stream
    return path, ms


def unit_bounds(path):
    _, info = read_segment(path)
    return info


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_torn_or_corrupt_tail_is_cut_at_last_valid_batch(tmp_path, make_writer, damage):
    root = tmp_path / "data"
    path, ms = dead_segment(root)
    size = os.path.getsize(path)
    data = bytearray(open(path, "rb").read())
    if damage == "truncate":
        data = data[: size - 50]  # the last unit loses its end
        keep = 400
    elif damage == "flip":
        # a byte inside the third unit's batch body
        lens = _unit_ends(path)
        data[lens[1] + (lens[2] - lens[1]) // 2] ^= 0x5A
        keep = 200
    else:
        data += b"\xff\xff\xff\xff\x10\x00\x00\x00half a message"
        keep = 500
    with open(path, "wb") as f:
        f.write(data)
    log = StatusLog()
    w = make_writer(root, on_status=log).start()
    assert w.wait_sealed(10)
    assert not os.path.exists(path)  # sealed and removed
    (f,) = list_sealed(root, "trades")
    assert f.writer == "dead-1"
    got = read_messages(str(root), "trades")
    assert got == ms[:keep]
    (ev,) = [e for e in log.of("gap") if "dead-1" in e.reason]
    assert ev.provider == "binance" and ev.conn == -1
    assert f"recovered {keep} rows" in ev.reason and "torn" in ev.reason
    assert ev.gap_start_ns == ms[keep - 1].ts_recv
    assert w.stats.torn_bytes == len(data) - _valid(path, data)
    w.close()
    # the event is recorded in the events table too
    evs = [e for e in read_messages(str(root), "events") if e.reason and "dead-1" in e.reason]
    assert len(evs) == 1 and evs[0].status == "gap"


def _unit_ends(path):
    """Byte offsets where units end (from the commit metadata)."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    src = pa.memory_map(path)
    r = ipc.open_stream(src)
    ends = []
    while True:
        try:
            b, md = r.read_next_batch_with_custom_metadata()
        except StopIteration:
            break
        if md is not None and md.get("wrdata.commit"):
            ends.append(src.tell())
    return ends


def _valid(path, data):
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".arrows", delete=False) as t:
        t.write(data)
    try:
        return read_segment(t.name)[1].valid_bytes
    finally:
        os.remove(t.name)


def test_clean_dead_segment_has_no_torn_tail(tmp_path, make_writer):
    root = tmp_path / "data"
    path, ms = dead_segment(root)
    log = StatusLog()
    w = make_writer(root, on_status=log).start()
    assert w.wait_sealed(10)
    assert read_messages(str(root), "trades") == ms
    (ev,) = log.of("gap")
    assert "no torn tail" in ev.reason


def test_fixed_writer_id_recovers_its_predecessor(tmp_path, make_writer):
    root = tmp_path / "data"
    _, ms = dead_segment(root, writer="capture-main")
    w = make_writer(root, writer_id="capture-main").start()
    w.on_messages([trade(10_000)])
    w.close()
    got = read_messages(str(root), "trades")
    assert got == ms + [trade(10_000)]


CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {repo!r})
    sys.path.insert(0, {tests!r})
    from storage_helpers import trade
    from wrdata.storage import DatasetWriter
    w = DatasetWriter({root!r}, writer_id="victim", flush_interval=0.01).start()
    i = 0
    while True:
        for _ in range(200):
            m = trade(i)
            w.on_messages([m])
            w.on_raw("binance", 0, i, m.ts_recv, "in", "wss://x", b'{{"t":%d}}' % i)
            i += 1
        w.flush(30)
        print(i, flush=True)  # everything below i is in the journal
    """
)


def test_sigkill_mid_stream_then_recovery(tmp_path, make_writer):
    root = tmp_path / "data"
    script = CHILD.format(repo=str(REPO), tests=str(REPO / "tests" / "storage"), root=str(root))
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    flushed = 0
    try:
        for line in p.stdout:
            flushed = int(line)
            if flushed >= 3000:
                break
        os.kill(p.pid, signal.SIGKILL)  # mid-stream: the child keeps appending meanwhile
        p.wait(10)
    finally:
        if p.poll() is None:
            p.kill()
    assert flushed >= 3000
    assert list_segments(str(root / "_journal"), writer="victim")
    log = StatusLog()
    w = make_writer(root, on_status=log).start()
    assert w.wait_sealed(30)
    w.close()
    assert list_segments(str(root / "_journal")) == []
    trades = read_table(str(root), "trades")
    ids = trades.column("seq").to_pylist()
    assert ids == list(range(len(ids)))  # a prefix, in order, no duplicates, no holes
    assert len(ids) >= flushed  # nothing flushed was lost
    raw_seqs = read_table(str(root), "raw").column("seq").to_pylist()
    assert raw_seqs == list(range(len(raw_seqs))) and len(raw_seqs) >= flushed
    assert read_messages(str(root), "trades") == [trade(i) for i in range(len(ids))]
    assert any("victim" in e.reason for e in log.of("gap"))


def test_crash_between_seal_and_segment_removal_is_idempotent(tmp_path, make_writer):
    from wrdata.storage import seal_segment

    root = tmp_path / "data"
    path, ms = dead_segment(root)
    fs = StorageFS(root)
    res = seal_segment(fs, path, "trades", "binance", day_of(T0), "dead-1")  # ... and "crash" before removing
    assert os.path.exists(path) and res.rows == len(ms)
    # readers do not count the rows twice
    assert read_messages(str(root), "trades") == ms
    w = make_writer(root).start()  # recovery seals it again: same name, same content
    assert w.wait_sealed(10)
    w.close()
    (f,) = list_sealed(root, "trades")
    assert f.path == res.path
    assert read_messages(str(root), "trades") == ms


def test_recovery_seal_failure_is_retried_by_the_next_scan(tmp_path, make_writer):
    import errno

    root = tmp_path / "data"
    path, ms = dead_segment(root)
    failing = {"on": True}

    def fault(op, p):
        if failing["on"] and op == "seal.write":
            raise OSError(errno.ENOSPC, "No space left on device", p)

    log = StatusLog()
    w = make_writer(root, on_status=log, recover_interval=0.05)
    w.fs.fault = fault
    w.start()
    assert w.wait_sealed(10)  # the attempt failed and is not left pending
    assert os.path.exists(path) and list_sealed(root) == []
    assert log.of("error")
    failing["on"] = False
    import time

    deadline = time.monotonic() + 10
    while os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert w.wait_sealed(10)
    assert read_messages(str(root), "trades") == ms and len(list_sealed(root)) == 1
