"""Bytes per normalized trade and per raw frame on the real tape, beside the floors.

Run: python -m bench.storage_size [--smoke|--quick] [--json FILE]   (prints figures; asserts nothing)

Everything is measured in this run on the 19,904-trade Binance tape (bench/data/):
pyarrow's default Parquet settings with zstd, dictionary on the symbol only, and our
encodings at several zstd levels, then the real pipeline (DatasetWriter: journal,
seal, midnight split, footers included). Quotes: the tape's 73,174 bookTicker frames
parsed by the Binance session; bars: one-second bars built by wrdata's bar builder
from the tape's trades (few rows: the figure includes each file's footer). Issue 3's
targets: at most 8 bytes per trade and per raw trade frame, and the raw archive under
15% of the raw frames' bytes.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import tempfile
import time

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from wrdata.storage import DatasetWriter, from_messages, list_sealed, parquet_options, raw_batch

from .common import Report, add_mode_args, header
from .storage_common import load_tape, machine


def pq_size(table: pa.Table, **kw) -> tuple[int, float, bytes]:
    b = io.BytesIO()
    t0 = time.perf_counter()
    pq.write_table(table, b, **kw)
    return len(b.getvalue()), time.perf_counter() - t0, b.getvalue()


def columns(data: bytes) -> dict[str, int]:
    md = pq.ParquetFile(io.BytesIO(data)).metadata
    out: dict[str, int] = {}
    for rg in range(md.num_row_groups):
        r = md.row_group(rg)
        for c in range(r.num_columns):
            cc = r.column(c)
            out[cc.path_in_schema] = out.get(cc.path_in_schema, 0) + cc.total_compressed_size
    return out


def files_bytes(root: str, table: str, column: str | None = None) -> int:
    total = 0
    for f in list_sealed(root, table):
        if column is None:
            total += f.size
        else:
            total += columns(open(f.path, "rb").read()).get(column, 0)
    return total


def row(label: str, size: int, n: int, dt: float | None = None) -> None:
    speed = f"{n / dt / 1e3:8.0f}k rows/s" if dt else ""
    print(f"  {label:58s} {size / n:6.2f} B  {speed}")


def tape_quotes() -> list:
    """The tape's bookTicker frames as quote messages (the Binance session's parse)."""
    import gzip

    from wrdata.streaming.binance import BinanceVenue

    from .storage_common import TAPES

    session = BinanceVenue().session(0, ["btcusdt@bookTicker"])
    out = []
    seq = 0
    for path in TAPES:
        with gzip.open(path, "rb") as f:
            for line in f:
                ts, _, frame = line.rstrip(b"\n").partition(b" ")
                if b"@bookTicker" in frame[:40]:
                    out += [m for m in session.feed(frame, int(ts), seq) if m.kind == "quote"]
                seq += 1
    return out


def tape_bars(trades: list) -> list:
    """Closed one-second bars built from the tape's trades by wrdata's bar builder."""
    from wrdata.streaming.bars import BarBuilder

    b = BarBuilder("1s")
    out: list = []
    b.consumers.append(lambda m: out.append(m) if m.closed else None)
    for t in trades:
        b.on_message(t)
    return out


def pipeline_bytes(tmp: str, name: str, msgs: list) -> int:
    w = DatasetWriter(f"{tmp}/{name}").start()
    w.on_messages(msgs)
    w.close()
    table = {"quote": "quotes", "bar": "bars", "trade": "trades"}[msgs[0].kind]
    return files_bytes(f"{tmp}/{name}", table)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_mode_args(ap)
    args = ap.parse_args(argv)
    header("storage size on the real tape", args.mode)
    rep = Report("storage_size", args.mode)
    trades, raws = load_tape()
    trade_seqs = {m.seq for m in trades}
    raw_trades = [r for r in raws if r[2] in trade_seqs]
    print(f"# {machine()}")
    print(f"tape: {len(trades)} trades, {len(raws)} frames ({len(raw_trades)} trade frames)\n")

    t = pa.Table.from_batches([from_messages("trades", trades, "host-12345-1723161600000")])
    n = len(trades)
    default_trade, _, _ = pq_size(t, compression="zstd")
    ours = parquet_options("trades")
    dicts = ours["use_dictionary"]
    ints = ours["column_encoding"]
    print("normalized trades (bytes per trade; one file unless noted):")
    s, dt, _ = pq_size(t, compression="zstd")
    row("pyarrow defaults, zstd (level 3)", s, n, dt)
    s, dt, _ = pq_size(t, compression="zstd", use_dictionary=["symbol"])
    row("dictionary on symbol only, zstd 3", s, n, dt)
    for lvl in (3, 9):
        s, dt, _ = pq_size(t, compression="zstd", compression_level=lvl, use_dictionary=dicts, column_encoding=ints)
        row(f"delta on times and ids, no dict on floats, zstd {lvl}", s, n, dt)
    for lvl in (3, 6, 9, 12):
        s, dt, data = pq_size(t, **{**ours, "compression_level": lvl})
        row(f"wrdata settings, zstd {lvl}", s, n, dt)
        if lvl == 9:
            best = data
    print("  per column at zstd 9:", {k: round(v / n, 2) for k, v in columns(best).items() if v / n >= 0.05})

    tmp = tempfile.mkdtemp(prefix="wrdata-bench-")
    try:
        w = DatasetWriter(f"{tmp}/tape", flush_interval=0.05).start()
        ti = 0
        t0 = time.perf_counter()
        for r in raws:
            w.on_raw(*r)
            if ti < n and trades[ti].seq == r[2]:
                w.on_messages([trades[ti]])
                ti += 1
        w.close()
        dt = time.perf_counter() - t0
        nfiles = len(list_sealed(f"{tmp}/tape", "trades"))
        pipe_trades = files_bytes(f"{tmp}/tape", "trades")
        row(f"wrdata pipeline: DatasetWriter → {nfiles} sealed files (split at midnight)", pipe_trades, n)
        g = "storage"
        rep.add(g, "bytes per trade (real tape, DatasetWriter → sealed Parquet)", "B/trade", pipe_trades / n, default_trade / n,
                "baseline: pyarrow.parquet.write_table defaults with zstd, same rows", target="≤ 8 B", met=pipe_trades / n <= 8,
                lower_is_better=True, note=f"{n:,} real trades, {nfiles} files (the tape spans midnight), footers included")

        print("\nraw trade frames (bytes per frame):")
        rt = pa.Table.from_batches([raw_batch(raw_trades, "host-12345-1723161600000")])
        m = len(raw_trades)
        s, dt, data = pq_size(rt, compression="zstd")
        row("pyarrow defaults, zstd 3 (whole row)", s, m, dt)
        ropts = parquet_options("raw")
        for lvl in (3, 6, 9, 19):
            s, dt, data = pq_size(rt, **{**ropts, "compression_level": lvl})
            cols = columns(data)
            row(f"wrdata settings, zstd {lvl}: payload column only", cols["payload"], m, dt)
            row(f"wrdata settings, zstd {lvl}: whole row (+ts_recv, seq, ...)", s, m)
        w = DatasetWriter(f"{tmp}/rawtrades").start()
        for r in raw_trades:
            w.on_raw(*r)
        w.close()
        raw_payload = files_bytes(f"{tmp}/rawtrades", "raw", "payload")
        row("wrdata pipeline, payload column only", raw_payload, m)
        raw_whole = files_bytes(f"{tmp}/rawtrades", "raw")
        row("wrdata pipeline, whole row", raw_whole, m)
        s3, _, _ = pq_size(rt, compression="zstd")
        c3 = columns(pq_size(rt, compression="zstd")[2])["payload"]
        rep.add(g, "bytes per raw trade frame, payload column (DatasetWriter)", "B/frame", raw_payload / m, c3 / m,
                "baseline: the payload column of pyarrow defaults with zstd, same rows", target="≤ 8 B", met=raw_payload / m <= 8,
                lower_is_better=True,
                note=f"{m:,} raw @trade frames of the tape, {sum(len(r[6]) for r in raw_trades) / m:.0f} bytes of JSON each; "
                     "what DESIGN.md's 7.5-7.9 B at zstd 9 measures")
        rep.add(g, "bytes per raw trade frame, whole row (+ts_recv, conn, seq, ...)", "B/frame", raw_whole / m, s3 / m,
                "baseline: pyarrow defaults with zstd, same rows", lower_is_better=True,
                note="the row's receive time, connection and sequence columns add ~3 B to the payload's")
        frac = raw_whole / sum(len(r[6]) for r in raw_trades)
        rep.add(g, "raw archive / raw trade frame bytes", "%", frac * 100, None, "", target="< 15%", met=frac < 0.15,
                lower_is_better=True)

        print("\nall frames of the tape (trade, bookTicker, depth@100ms, 1 REST), bytes per frame:")
        at = pa.Table.from_batches([raw_batch(raws, "host-12345-1723161600000")])
        k = len(raws)
        s, dt, _ = pq_size(at, compression="zstd")
        row("pyarrow defaults, zstd 3", s, k, dt)
        s, dt, _ = pq_size(at, **ropts)
        row("wrdata settings, zstd 9", s, k, dt)
        mixed = files_bytes(f"{tmp}/tape", "raw")
        row("wrdata pipeline, whole row", mixed, k)
        avg = sum(len(r[6]) for r in raws) / k
        print(f"  (frames average {avg:.0f} bytes of JSON)")
        s3, _, _ = pq_size(at, compression="zstd")
        rep.add(g, "bytes per raw frame, mixed trade/bookTicker/depth", "B/frame", mixed / k, s3 / k,
                "baseline: pyarrow defaults with zstd, same rows", lower_is_better=True,
                note=f"{k:,} frames of the tape, {avg:.0f} bytes of JSON on average; archive = {mixed / (avg * k):.1%} of the frames' bytes")
        quotes = tape_quotes()
        qb = pipeline_bytes(tmp, "quotes", quotes)
        qt = pa.Table.from_batches([from_messages("quotes", quotes, "host-12345-1723161600000")])
        qd, _, _ = pq_size(qt, compression="zstd")
        print(f"\nquotes: {len(quotes):,} bookTicker quotes, wrdata pipeline {qb / len(quotes):.2f} B/quote, pyarrow defaults {qd / len(quotes):.2f}")
        rep.add(g, "bytes per quote (tape bookTicker, DatasetWriter)", "B/quote", qb / len(quotes), qd / len(quotes),
                "baseline: pyarrow defaults with zstd, same rows", lower_is_better=True, note=f"{len(quotes):,} real quotes")
        bars = tape_bars(trades)
        bb = pipeline_bytes(tmp, "bars", bars)
        bt = pa.Table.from_batches([from_messages("bars", bars, "host-12345-1723161600000")])
        bd, _, _ = pq_size(bt, compression="zstd")
        print(f"bars: {len(bars):,} one-second bars, wrdata pipeline {bb / len(bars):.2f} B/bar, pyarrow defaults {bd / len(bars):.2f}")
        rep.add(g, "bytes per bar (1 s bars of the tape's trades)", "B/bar", bb / len(bars), bd / len(bars),
                "baseline: pyarrow defaults with zstd, same rows", lower_is_better=True,
                note=f"only {len(bars):,} bars: each file's footer (~3 KB) is a large part of it")
        rep.rows = f"{n:,} trades, {len(raws):,} frames, {len(quotes):,} quotes, {len(bars):,} bars (the real tape)"
        if args.mode != "full":
            return
        print("\nrow-group size and zstd level vs size and read speed (tape repeated to 600k trades, one file):")
        big = pa.concat_tables([_shifted(t, k) for k in range(31)]).slice(0, 600_000)
        nb = big.num_rows
        lo = big.column("ts_recv")[nb // 2].value
        hi = big.column("ts_recv")[nb // 2 + 20_000].value
        for lvl in (3, 9):
            for rg in (64 * 1024, 128 * 1024, 256 * 1024, 1024 * 1024):
                path = f"{tmp}/rg-{lvl}-{rg}.parquet"
                t0 = time.perf_counter()
                pq.write_table(big, path, row_group_size=rg, **{**ours, "compression_level": lvl})
                wdt = time.perf_counter() - t0
                size = os.path.getsize(path)
                t0 = time.perf_counter()
                for _ in range(3):
                    pq.read_table(path)
                rdt = (time.perf_counter() - t0) / 3
                d = pads.dataset(path, format="parquet")
                flt = (pads.field("ts_recv") >= pa.scalar(lo, pa.timestamp("ns", "UTC"))) & (pads.field("ts_recv") < pa.scalar(hi, pa.timestamp("ns", "UTC")))
                t0 = time.perf_counter()
                for _ in range(3):
                    got = d.to_table(filter=flt)
                fdt = (time.perf_counter() - t0) / 3
                print(
                    f"  zstd {lvl} row groups of {rg // 1024:5d}k: {size / nb:5.2f} B/trade, write {nb / wdt / 1e6:4.1f}M rows/s, "
                    f"full read {nb / rdt / 1e6:5.1f}M rows/s, 20k-row time range {fdt * 1e3:5.1f} ms ({got.num_rows} rows)"
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        rep.finish(args.json_out)


def _shifted(t: pa.Table, k: int) -> pa.Table:
    if k == 0:
        return t
    import pyarrow.compute as pc

    span = 700_000_000_000 * k  # the tape spans ~11 min: shift whole copies later
    i = t.schema.get_field_index("ts_recv")
    ts = pc.add(t.column("ts_recv").cast(pa.int64()), span).cast(t.schema.field("ts_recv").type)
    return t.set_column(i, t.schema.field("ts_recv"), ts)


if __name__ == "__main__":
    main()
