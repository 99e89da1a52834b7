"""Trades to disk and back: wrdata's recorder and reader beside NautilusTrader's
ParquetDataCatalog, on the same trades, in one run.

Trades: the real tape's 19,904 trades for bytes per trade; the tape repeated (times
shifted, ids renumbered) to N for the speeds.

- **bytes per trade**: wrdata: ``DatasetWriter`` (journal, then sealed zstd Parquet;
  the tape spans midnight: two files, footers included). Peer: ``ParquetDataCatalog
  .write_data`` of the same trades as ``TradeTick`` (see ``bench/peers/nautilus_peer.py``).
  Baseline: ``pq.write_table`` defaults with zstd of wrdata's rows.
- **write rows/s**: wrdata: N ``StreamMessage`` trades into ``DatasetWriter`` (in
  lists of 10,000, as a capture's flushes come) until sealed, CPU seconds of the process
  (every thread). Floor: ``from_messages`` + ``pq.write_table`` with wrdata's options
  (objects → Arrow → Parquet, no journal). Peer: ``write_data`` of N ``TradeTick``.
- **read rows/s**: wrdata: ``read_messages(root, "trades")``, every trade back as a
  ``StreamMessage``. Floor: ``pq.read_table`` of the same files (Arrow, no objects).
  Peer: ``catalog.trade_ticks()``, every trade back as a ``TradeTick``.

The peer runs in its own interpreter (CPython 3.13); wrdata on this one.

    python -m bench.catalog [--smoke|--quick] [--rows N] [--json FILE]
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import shutil
import tempfile

from bench.common import Report, add_mode_args, header, pick, process_cpu
from bench.peers import run_peer


def dir_bytes(d: str) -> int:
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(d) for f in fs if not r.split(os.sep)[-1].startswith("_"))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_mode_args(ap)
    ap.add_argument("--rows", type=int, default=None)
    args = ap.parse_args(argv)
    n = args.rows or pick(args.mode, 5_000, 200_000, 1_000_000)
    logging.basicConfig(level=logging.ERROR)
    header("trades to disk and back, wrdata and NautilusTrader's catalog", args.mode)
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bench.storage_common import load_tape
    from bench.storage_recorder import build
    from wrdata.storage import DatasetWriter, from_messages, list_sealed, parquet_options, read_messages

    rep = Report("catalog", args.mode, f"{n:,} trades (the tape repeated); bytes on the tape's 19,904")
    tape, _ = load_tape()
    trades, _ = build(n)
    tmp = tempfile.mkdtemp(prefix="wrdata-bench-catalog-")
    try:
        w = DatasetWriter(f"{tmp}/tape").start()
        w.on_messages(tape)
        w.close()
        tape_bytes = sum(f.size for f in list_sealed(f"{tmp}/tape", "trades"))
        b = io.BytesIO()
        pq.write_table(pa.Table.from_batches([from_messages("trades", tape, "w")]), b, compression="zstd")
        base_bytes = len(b.getvalue())

        c0 = process_cpu()
        w = DatasetWriter(f"{tmp}/many", fsync="never").start()
        for i in range(0, n, 10_000):
            w.on_messages(trades[i : i + 10_000])
        w.close()
        wc = process_cpu() - c0
        c0 = process_cpu()
        pq.write_table(pa.Table.from_batches([from_messages("trades", trades, "w")]), io.BytesIO(), **parquet_options("trades"))
        fwc = process_cpu() - c0

        files = [f.path for f in list_sealed(f"{tmp}/many", "trades")]
        read_messages(f"{tmp}/many", "trades", journal=False)  # warm: imports, footers
        c0 = process_cpu()
        back = read_messages(f"{tmp}/many", "trades", journal=False)
        rc = process_cpu() - c0
        assert len(back) == n
        c0 = process_cpu()
        pq.read_table(files)
        frc = process_cpu() - c0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    peer, why = (None, "--no-peers") if args.no_peers else run_peer("nautilus_peer.py", str(n))
    pv = f"NautilusTrader {peer['nautilus_trader']} on CPython {peer['python']}" if peer else ""
    print(f"wrdata: {tape_bytes / len(tape):.2f} B/trade; write {n / wc:,.0f} rows/CPU-s (floor {n / fwc:,.0f}); "
          f"read {n / rc:,.0f} StreamMessages/CPU-s (floor pq.read_table {n / frc:,.0f})")
    if peer:
        print(f"{pv}: {peer['tape_bytes'] / peer['tape_trades']:.2f} B/trade; write {n / peer['write_cpu']:,.0f} rows/CPU-s "
              f"({n / peer['write_wall']:,.0f}/s wall); read {n / peer['read_cpu']:,.0f} TradeTicks/CPU-s")
    g = "storage"
    nm = f"not measured: {why}"
    rep.add(g, "bytes per trade on disk (tape), vs NautilusTrader catalog", "B/trade", tape_bytes / len(tape), base_bytes / len(tape),
            "baseline: pq.write_table defaults with zstd, same rows", lower_is_better=True, target="≤ 8 B",
            met=tape_bytes / len(tape) <= 8,
            peer=peer["tape_bytes"] / peer["tape_trades"] if peer else None,
            peer_what=(f"{pv}: ParquetDataCatalog.write_data of the same 19,904 trades as TradeTick (instrument "
                       "BTCUSDT.BINANCE: price 2 dp, size 6 dp, id as string), its defaults (snappy); every byte of the catalog")
            if peer else nm)
    rep.add(g, "write trades: objects → sealed Parquet", "rows/CPU-s", n / wc, n / fwc,
            "from_messages + pq.write_table with wrdata's options (no journal), same rows",
            peer=n / peer["write_cpu"] if peer else None,
            peer_what=f"{pv}: ParquetDataCatalog.write_data(list of {n:,} TradeTick), CPU of its process" if peer else nm,
            note="wrdata: DatasetWriter (convert, zstd IPC journal, seal to zstd-9 Parquet), every thread's CPU")
    rep.add(g, "read trades back as objects", "rows/CPU-s", n / rc, n / frc,
            "pq.read_table of the same files (Arrow only, no objects)",
            peer=n / peer["read_cpu"] if peer else None,
            peer_what=f"{pv}: catalog.trade_ticks(), {n:,} TradeTick objects" if peer else nm,
            note="wrdata: read_messages(root, 'trades'): Parquet → StreamMessage in total order")
    rep.finish(args.json_out)


if __name__ == "__main__":
    main()
