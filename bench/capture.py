"""Capture end to end on one core: local sender → parse → journal → sealed Parquet.

The sender (``bench/sender.py``, its own process, pinned to the other core) sends N
Binance ``@trade`` frames (the tape's trades) as fast as the socket takes them. This
process, pinned to one core, runs:

- **capture**: wrdata's own ``CaptureDaemon`` (``wrdata capture binance:BTCUSDT
  --kinds trade --endpoint binance=<sender>``, status view off): runner, Binance
  session, the capture's taps (its figures, the healer, the ``DatasetWriter``: raw
  frames and trades journaled every second, zstd IPC, fdatasync), stopped once every
  frame is in, then sealed to zstd Parquet as on SIGTERM. The rate is N over the time
  from the first frame's ``ts_recv`` to the last file sealed, and per CPU second of the
  process (every thread: event loop, writer, sealer, Arrow's pool); run twice, with raw
  sealed at the default zstd 9 and at ``--raw-level 1``;
- **receive → parse**, the floor issue 3 measures against (its target: capture ≥ 50% of
  it): the same runner and session into a counting sink, nothing recorded;
- **picows bare receive**, the transport floor.

**Codec work alone**: on the capture's own sealed rows, the CPU of the compiled work its
storage cannot avoid (the zstd IPC journal written in ~1 s flushes and read back, the
Parquet files with the seal's settings), with no Python per row: receive→parse plus that
is the best ratio any capture with these codecs could reach on one core.

The writer's CPU share is the CPU of every thread but the event loop's (the writer and
sealer threads) over the process's, for the capture run; the split of a message's CPU
between the event loop, the writer and the sealer comes from the storage stats'
per-thread CPU (``wrdata_storage_cpu_seconds``). Medians of ``--repeat``.

    python -m bench.capture [--smoke|--quick] [--frames N] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import tempfile
import time

from bench.common import Report, Sender, add_mode_args, header, median, pick, pin, process_cpu, unpin
from bench.receive import run_picows, run_runner


async def capture(url: str, n: int, root: str, raw_level: int = 9) -> dict:
    from wrdata.capture.config import CaptureConfig, StorageSettings, parse_targets
    from wrdata.capture.daemon import CaptureDaemon

    config = CaptureConfig(targets=parse_targets(["binance:BTCUSDT"], "trade"), root=root, endpoints={"binance": url},
                           storage=StorageSettings(raw_level=raw_level))
    daemon = CaptureDaemon(config, status="none", validate=False, freeze_gc=True)  # as `wrdata capture` runs
    c0, l0 = process_cpu(), time.thread_time()  # the event loop runs on this thread

    async def stop_when_done() -> None:
        while True:
            f = daemon.stats.providers.get("binance")
            if f is not None and f.messages >= n:  # one trade per @trade frame
                daemon.request_stop()
                return
            await asyncio.sleep(0.02)

    watcher = asyncio.create_task(stop_when_done())
    await daemon.run()
    watcher.cancel()
    end_ns = time.time_ns()
    c1, l1 = process_cpu(), time.thread_time()
    from wrdata.storage import read_table

    t = read_table(root, "trades", columns=["ts_recv"], journal=False)
    raw = read_table(root, "raw", columns=["ts_recv"], journal=False)
    assert t.num_rows == n, (t.num_rows, n)
    first = t.column("ts_recv")[0].value
    cpu = c1 - c0
    st = daemon.writer.stats
    return {"wall": (end_ns - first) / 1e9, "cpu": cpu, "loop_cpu": l1 - l0, "writer_cpu": st.writer_cpu_s, "sealer_cpu": st.sealer_cpu_s,
            "trades": t.num_rows, "raw": raw.num_rows}


def codec_work(root: str, n: int, flush_rows: int) -> dict[str, float]:
    """CPU µs per message of the compiled codec work alone that a capture of ``root``
    needs, on its own sealed rows: the journal's zstd IPC, written and read back in
    flushes of ``flush_rows``, and the Parquet files (the seal's settings). No Python
    work per row is in it: it is what the storage costs if conversion and taps were free."""
    import io

    import pyarrow as pa
    import pyarrow.ipc as ipc
    import pyarrow.parquet as pq

    from wrdata.storage import list_sealed
    from wrdata.storage.journal import JOURNAL_CODEC_LEVEL
    from wrdata.storage.schema import PARQUET_DEFAULTS, parquet_options

    out = {}
    for table in ("trades", "raw"):
        files = list_sealed(root, table)
        t = pa.concat_tables([pq.read_table(f.path) for f in files]).combine_chunks()
        opts = ipc.IpcWriteOptions(compression=pa.Codec("zstd", JOURNAL_CODEC_LEVEL))
        c0 = process_cpu()
        buf = io.BytesIO()
        with ipc.new_stream(buf, t.schema, options=opts) as w:
            for b in t.to_batches(max_chunksize=flush_rows):
                w.write_batch(b)
        ipc.open_stream(buf.getvalue()).read_all()
        c1 = process_cpu()
        pq.write_table(t, io.BytesIO(), row_group_size=PARQUET_DEFAULTS["row_group_rows"], **parquet_options(table))
        c2 = process_cpu()
        out[f"{table}_journal"] = (c1 - c0) / n * 1e6
        out[f"{table}_parquet"] = (c2 - c1) / n * 1e6
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_mode_args(ap)
    ap.add_argument("--frames", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=None)
    ap.add_argument("--no-pin", action="store_true", help="do not pin the receiver and the sender to one core each")
    args = ap.parse_args(argv)
    mode = args.mode
    n = args.frames or pick(mode, 5_000, 200_000, 1_000_000)
    repeat = args.repeat or pick(mode, 1, 1, 3)
    logging.basicConfig(level=logging.ERROR)
    header("capture end to end, one core", mode)
    # import everything the runs use now, so that no run pays for imports
    import wrdata.capture.daemon  # noqa: F401
    import wrdata.storage  # noqa: F401
    import wrdata.streaming.binance  # noqa: F401
    import wrdata.streaming.runner  # noqa: F401

    cpu = None if args.no_pin else pin(1)
    scpu = None if cpu is None else 0
    print(f"# receiver pinned to CPU {cpu}, sender to the other" if cpu is not None else "# not pinned")
    rep = Report("capture", mode, f"{n:,} @trade frames per run, median of {repeat}")
    res: dict[str, list] = {"bare": [], "parse": [], "capture": [], "capture_raw1": [], "codec": []}
    tmp = tempfile.mkdtemp(prefix="wrdata-bench-capture-")
    try:
        for r in range(repeat):
            with Sender(n, "trade", cpu=scpu) as s:
                res["bare"].append(asyncio.run(run_picows(s.url, n)))
                res["parse"].append(asyncio.run(run_runner(s.url, n, "picows", "trade")))
                for key, level in (("capture", 9), ("capture_raw1", 1)):
                    root = f"{tmp}/run{r}-{level}"
                    res[key].append(asyncio.run(capture(s.url, n, root, raw_level=level)))
                    if key == "capture":
                        res["codec"].append(codec_work(root, n, flush_rows=100_000))  # ~1 s of messages a flush
                    shutil.rmtree(root, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        unpin()
    bare_w, bare_c = median([x[0] for x in res["bare"]]), median([x[1] for x in res["bare"]])
    parse_w, parse_c = median([x[0] for x in res["parse"]]), median([x[1] for x in res["parse"]])
    caps = res["capture"]
    cap_w = median([n / c["wall"] for c in caps])
    cap_c = median([n / c["cpu"] for c in caps])
    share = median([(c["cpu"] - c["loop_cpu"]) / c["cpu"] for c in caps])
    fast_c = median([n / c["cpu"] for c in res["capture_raw1"]])
    print(f"  picows bare receive        {bare_w:>12,.0f} /s wall {bare_c:>12,.0f} /CPU-s")
    print(f"  receive->parse (runner)    {parse_w:>12,.0f} /s wall {parse_c:>12,.0f} /CPU-s  ({1e6 / parse_c:.2f} us per message)")
    print(f"  capture end to end         {cap_w:>12,.0f} /s wall {cap_c:>12,.0f} /CPU-s  (first frame -> last file sealed; "
          f"{caps[0]['trades']:,} trades and {caps[0]['raw']:,} raw rows sealed)")
    print(f"  storage threads' share of the capture's CPU: {share:.0%}")
    # where a message's CPU goes (medians; "other" is Arrow's own pool threads, which
    # compress and decompress IPC buffers for the writer and the sealer, and the rest)
    for key, label in (("capture", "raw sealed at zstd 9 (default)"), ("capture_raw1", "raw sealed at zstd 1 (--raw-level 1)")):
        cs = res[key]
        us = {k: median([c[k] / n * 1e6 for c in cs]) for k in ("cpu", "loop_cpu", "writer_cpu", "sealer_cpu")}
        other = us["cpu"] - us["loop_cpu"] - us["writer_cpu"] - us["sealer_cpu"]
        print(f"  us per message, {label}: {us['cpu']:.2f} = event loop {us['loop_cpu']:.2f} + writer {us['writer_cpu']:.2f} "
              f"+ sealer {us['sealer_cpu']:.2f} + other {other:.2f}")
    # the compiled codec work alone (zstd IPC journal written and read, zstd Parquet): what
    # storage would cost with free conversion and taps, and so the best ratio possible
    codec = {k: median([c[k] for c in res["codec"]]) for k in res["codec"][0]}
    codec_us = sum(codec.values())
    parse_us = 1e6 / parse_c
    ceiling = parse_us / (parse_us + codec_us)
    print(f"  codec work alone, us per message: {codec_us:.2f} = journal (zstd {codec['trades_journal'] + codec['raw_journal']:.2f}: "
          f"trades {codec['trades_journal']:.2f}, raw {codec['raw_journal']:.2f}) + Parquet (trades {codec['trades_parquet']:.2f}, "
          f"raw {codec['raw_parquet']:.2f}); with nothing else, capture would reach at most {ceiling:.0%} of receive->parse")
    g = "capture"
    rep.add(g, "capture end to end, recording on (1 core, per CPU-s)", "msgs/CPU-s", cap_c, parse_c,
            "receive→parse without recording (runner + Binance session into a counting sink), same sender, same run",
            target="≥ 50% of floor", met=cap_c >= 0.5 * parse_c,
            note=f"per wall second {cap_w:,.0f} (first frame → last file sealed) vs receive→parse {parse_w:,.0f}/s wall; "
                 f"picows bare receive {bare_c:,.0f}/CPU-s")
    rep.add(g, "capture end to end, recording on (1 core, wall)", "msgs/s", cap_w, parse_w,
            "receive→parse without recording, per wall second, same run", target="≥ 50% of floor", met=cap_w >= 0.5 * parse_w)
    rep.add(g, "capture end to end, raw sealed at zstd 1 (--raw-level 1; per CPU-s)", "msgs/CPU-s", fast_c, parse_c,
            "receive→parse without recording, same run", target="≥ 50% of floor", met=fast_c >= 0.5 * parse_c,
            note="raw frames ~9.1 B instead of ~7.8 B each (tests/storage/test_size.py): under 15% of frame bytes, over DESIGN.md's 8 B")
    rep.add(g, "capture ceiling: receive→parse + codec work alone (no Python per row)", "% of floor", ceiling * 100, None, "",
            note=f"codec work {codec_us:.2f} µs per message: journal zstd IPC written and read "
                 f"{codec['trades_journal'] + codec['raw_journal']:.2f}, Parquet trades {codec['trades_parquet']:.2f}, "
                 f"raw frames at zstd 9 {codec['raw_parquet']:.2f}; receive→parse {parse_us:.2f}")
    rep.add(g, "capture: storage threads' share of the process CPU", "%", share * 100, None, "",
            note="writer (convert, journal, fdatasync) and sealer (Parquet) threads vs the whole capture process")
    rep.finish(args.json_out)


if __name__ == "__main__":
    main()
