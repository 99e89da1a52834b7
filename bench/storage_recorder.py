"""Recorder cost on the event-loop thread, writer throughput, seal rows/s.

Run: python -m bench.storage_recorder [--smoke|--quick] [--rows N] [--json FILE]   (prints figures; asserts nothing)

Input: the tape's trades and their raw frames, repeated with shifted receive times to N
trades (600,000; quick 300,000). Each "trade" is what the live manager does per @trade frame:
``on_raw(frame)`` then ``on_messages([trade])``.

- tap: per-trade cost of those two calls on the calling thread, with the writer thread
  idle (pure cost) and running concurrently (what the event loop sees under the GIL).
- writer: CPU seconds to convert, journal (zstd-1 IPC + CRC + write) and seal
  (Parquet zstd-9) those trades and frames; trades per CPU-second per stage.
- seal: rows/s of seal_segment on one segment of trades and one of raw frames, beside
  the floor: ``pq.write_table`` of the same rows, already Arrow, with the same Parquet
  options (what the Parquet encoding alone costs: no journal read, no checks).
- read back: Parquet → StreamMessages.
"""

from __future__ import annotations

import argparse
import io
import shutil
import tempfile
import time

import pyarrow as pa
import pyarrow.parquet as pq

from wrdata.message import StreamMessage
from wrdata.storage import (
    DatasetWriter,
    StorageFS,
    from_messages,
    list_sealed,
    list_segments,
    parquet_options,
    raw_batch,
    read_table,
    seal_segment,
    to_messages,
)
from wrdata.storage.journal import SegmentWriter

from .common import Report, add_mode_args, header, pick
from .storage_common import load_tape, machine


def build(n: int) -> tuple[list[StreamMessage], list[tuple]]:
    trades, raws = load_tape()
    by_seq = {r[2]: r for r in raws}
    frames = [by_seq[m.seq] for m in trades]
    span = trades[-1].ts_recv - trades[0].ts_recv + 1_000_000
    out_t: list[StreamMessage] = []
    out_r: list[tuple] = []
    rep = 0
    while len(out_t) < n:
        shift = rep * span
        for m, r in zip(trades, frames, strict=True):
            if len(out_t) >= n:
                break
            s = len(out_t)
            out_t.append(
                StreamMessage(
                    provider="binance", symbol=m.symbol, kind="trade", ts_recv=m.ts_recv + shift, ts_event=m.ts_event + shift,
                    conn=0, seq=s, channel="trade", price=m.price, size=m.size, side=m.side, trade_id=m.trade_id + rep * 19904,
                )
            )
            out_r.append(("binance", 0, s, r[3] + shift, "in", r[5], r[6]))
        rep += 1
    return out_t, out_r


class _Noop:
    def on_raw(self, provider, conn, seq, ts_recv, direction, url, payload):
        pass

    def on_messages(self, msgs):
        pass


def tap_cost(w: DatasetWriter, trades, raws) -> float:
    on_raw, on_messages = w.on_raw, w.on_messages
    t0 = time.perf_counter()
    for m, r in zip(trades, raws, strict=True):
        on_raw(r[0], r[1], r[2], r[3], r[4], r[5], r[6])
        on_messages([m])
    return (time.perf_counter() - t0) / len(trades) * 1e6


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_mode_args(ap)
    ap.add_argument("--rows", type=int, default=None)
    args = ap.parse_args(argv)
    n = args.rows or pick(args.mode, 6_000, 300_000, 600_000)
    first = n // 3  # the tap phase; the rest is written in flushes of `chunk`
    trades, raws = build(n)
    header("storage recorder: tap, writer, seal", args.mode)
    print(f"# {machine()}")
    print(f"{n} trades + {n} raw trade frames (tape repeated)\n")
    rep = Report("storage_recorder", args.mode, f"{n:,} trades + {n:,} raw trade frames (the tape repeated)")
    g = "storage"
    tmp = tempfile.mkdtemp(prefix="wrdata-bench-")
    try:
        # 1. tap cost, writer idle (flush_interval long, queues big enough)
        w = DatasetWriter(f"{tmp}/a", flush_interval=3600, memory_budget=8 << 30).start()
        w._wake_at = 1 << 40  # measure the append alone: no early wake-ups
        us = tap_cost(w, trades[:first], raws[:first])
        base = tap_cost(_Noop(), trades[:first], raws[:first])
        print(f"tap (on_raw + on_messages per trade), writer idle:     {us - base:5.2f} µs/trade (loop overhead {base:.2f} µs excluded)")
        assert w.flush(600)
        # 2. writer: convert + journal in flushes of `chunk` trades (300k trades/s at
        #    flush_interval=1 s), then seal; CPU time of the flushes only
        chunk = max(1, min(100_000, (n - first) // 4))
        cpu = 0.0
        for a in range(first, n, chunk):
            for m, r in zip(trades[a : a + chunk], raws[a : a + chunk], strict=True):
                w.on_raw(r[0], r[1], r[2], r[3], r[4], r[5], r[6])
                w.on_messages([m])
            c0 = time.process_time()
            assert w.flush(600)
            cpu += time.process_time() - c0
        m_ = n - first
        journal_bytes = sum(s.size for s in list_segments(w.journal_dir))
        c1 = time.process_time()
        w.close(600)
        c2 = time.process_time()
        sealed = sum(f.size for f in list_sealed(w.root))
        print(f"writer: convert + journal  {cpu / m_ * 1e6:5.2f} µs per trade+frame = {m_ / cpu / 1e3:6.0f}k trades+frames per CPU-s (flushes of {chunk})")
        print(f"        seal to Parquet    {(c2 - c1) / n * 1e6:5.2f} µs per trade+frame = {n / (c2 - c1) / 1e3:6.0f}k trades+frames per CPU-s")
        tot = cpu / m_ + (c2 - c1) / n
        print(f"        both               {tot * 1e6:5.2f} µs per trade+frame = {1 / tot / 1e3:6.0f}k trades+frames per CPU-s")
        print(f"        journal {journal_bytes / n:.1f} B/trade+frame, sealed {sealed / n:.1f} B/trade+frame")
        rep.add(g, "recorder tap on the event loop (on_raw + on_messages)", "µs/trade", us - base, None, "", lower_is_better=True,
                note=f"per trade and its raw frame, writer idle; the loop's own {base:.2f} µs excluded")
        rep.add(g, "recorder writer: convert + journal (trade + its raw frame)", "k/CPU-s", m_ / cpu / 1e3, None, "",
                note=f"{cpu / m_ * 1e6:.2f} µs per trade+frame in flushes of {chunk:,}; with the seal: {1 / tot / 1e3:.0f}k/CPU-s")

        # 3. tap cost with the writer running concurrently at flush_interval=0.1
        w = DatasetWriter(f"{tmp}/b", flush_interval=0.1, memory_budget=8 << 30).start()
        us_live = tap_cost(w, trades, raws) - base
        w.close(600)
        print(f"tap, writer running concurrently (same process, GIL): {us_live:5.2f} µs/trade (includes the writer's share of the GIL)")

        # 4. seal rows/s on single segments (written directly, no writer running), beside
        #    pq.write_table of the same rows with the same options
        k = min(n, 300_000)
        fs = StorageFS(f"{tmp}/c")
        for table, batch in (("trades", from_messages("trades", trades[:k], "w")), ("raw", raw_batch(raws[:k], "w"))):
            path = f"{fs.journal_dir}/{table}/seg-0.arrows"
            seg = SegmentWriter(fs, path, table, "binance", 0, "w", 0)
            for b in pa.Table.from_batches([batch]).to_batches(max_chunksize=50_000):
                seg.append(b, 0, 0, (0,))
            seg.close()
            c0, t0 = time.process_time(), time.perf_counter()
            res = seal_segment(fs, path, table, "binance", 0, "w")
            dc, dt = time.process_time() - c0, time.perf_counter() - t0
            tab = pa.Table.from_batches([batch])
            c0 = time.process_time()
            pq.write_table(tab, io.BytesIO(), **parquet_options(table))
            fc = time.process_time() - c0
            print(f"seal {table:6s} segment: {res.rows} rows in {dt:.2f} s wall = {res.rows / dt / 1e3:5.0f}k rows/s "
                  f"({res.rows / dc / 1e3:5.0f}k per CPU-s); pq.write_table of the same rows {k / fc / 1e3:5.0f}k per CPU-s")
            rep.add(g, f"seal journal → Parquet, {table} segment", "rows/CPU-s", res.rows / dc, k / fc,
                    "pq.write_table of the same rows (already Arrow) with the same Parquet options, same run",
                    note=f"{res.rows:,} rows, zstd {parquet_options(table)['compression_level']}")

        # 5. read back
        t0 = time.perf_counter()
        tab = read_table(f"{tmp}/a", "trades", journal=False)
        t1 = time.perf_counter()
        msgs = to_messages("trades", tab)
        t2 = time.perf_counter()
        print(f"read back {len(msgs)} trades: Parquet → Arrow {len(msgs) / (t1 - t0) / 1e6:.1f}M rows/s, Arrow → StreamMessage {len(msgs) / (t2 - t1) / 1e6:.2f}M/s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rep.finish(args.json_out)


if __name__ == "__main__":
    main()
