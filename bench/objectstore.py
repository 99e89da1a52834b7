"""Replay from an S3 bucket versus from local disk, in the same run.

Run::

    python -m bench.objectstore                         # 1M trades over one hour, latency 0 and 20 ms
    python -m bench.objectstore --rows 200_000 --latency-ms 0,5,50
    python -m bench.objectstore --smoke                  # seconds (what a test would run)

What it does: writes one hour of synthetic trades (10 symbols, Zipf activity) with
wrdata's own sealing code (:func:`wrdata.storage.write_sealed`: the row groups, zstd and
statistics of a capture's hourly file) to a local directory, starts a real S3 API server
on loopback (moto in server mode, **in its own process**, so its request handling does
not share this interpreter's GIL), uploads the same files to a bucket, and puts
:class:`wrdata.sim.proxy.ThreadedTcpProxy` in front of it for each injected round-trip latency
(``0`` means the server directly). Then, for the local directory and for the bucket at
each latency:

- ``scan``: a bare ``pyarrow.dataset`` scan of every column of every file (the I/O and
  decode floor: nothing of wrdata in the way);
- ``batches``: ``wrdata.replay.read_batches`` (Arrow record batches in total order,
  windows of about 256K rows read with filters pushed down, one window after the other):
  rows/s; ``batches 1h`` the same with ``window=3600`` (a first window of an hour rather
  than 300 s; the later ones are sized by rows either way);
- ``replay max``: ``DataStream.replay(speed=None)`` consumed with ``stream_many`` over every
  symbol: messages/s through the ``stream()`` API;
- ``replay x100``: ``DataStream.replay(speed=100)`` over the first ``--paced-minutes`` of the
  hour: how late messages arrive against the schedule (wall time since the first message
  versus recording time / 100). A reader that cannot keep up with the pacing shows as
  lateness; the figures are the largest lateness and the 99th percentile, and the wall
  time of the whole paced run against its ideal (recording span / 100).

Every source is read cold first (a new process would be: footers not yet cached), then
``--repeat`` more times warm; the warm median is printed beside the cold figure. The local
figures are the floor each bucket figure is compared with (``vs local``). moto is not AWS:
it serves from memory, so latency is what ``--latency-ms`` injects per request round trip
(half each way) on top of loopback; 20 ms is a pessimistic same-region S3 figure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .queries import T0, _symbols, _write_hour
from .storage_common import machine

SECRET = "bench-secret-key"


def start_moto() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("moto server did not start")


def generate(local: Path, rows: int, nsym: int) -> None:
    _write_hour((str(local), "binance", 0, rows, nsym, 7, None))


def scan(root: str, fs) -> int:
    from wrdata.storage import dataset, list_sealed

    return dataset(root, "trades", filesystem=fs, files=list_sealed(root, "trades", filesystem=fs)).to_table().num_rows


def batches(root: str, fs, window: float = 300.0) -> int:
    from wrdata.replay import read_batches

    return sum(b.num_rows for _, b in read_batches(root, filesystem=fs, journal=False, window=window))


async def replay(root: str, fs, symbols: list[str], speed: float | None, end: int | None = None) -> tuple[int, list[float], float]:
    """(messages, lateness in s of each message, wall s from first to last message)."""
    from wrdata import DataStream

    n = 0
    late: list[float] = []
    t0 = ts0 = None
    last = 0.0
    loop = asyncio.get_running_loop()
    async with DataStream.replay(root, speed=speed, end=end, filesystem=fs, journal=False, queue_size=100_000) as ds:
        async for m in ds.stream_many([f"binance:{s}" for s in symbols]):
            now = loop.time()
            if t0 is None:
                t0, ts0 = now, m.ts_recv
            if speed is not None:
                late.append((now - t0) - (m.ts_recv - ts0) / (speed * 1e9))
            last = now
            n += 1
    return n, late, (last - t0) if t0 is not None else 0.0


def measure(fn, repeat: int) -> tuple[float, float | None, object]:
    """(cold s, warm median s or None, result)."""
    t = time.perf_counter()
    result = fn()
    cold = time.perf_counter() - t
    warm = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        warm.append(time.perf_counter() - t)
    return cold, (statistics.median(warm) if warm else None), result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=lambda s: int(s.replace("_", "")), default=1_000_000, help="trades in the hour")
    ap.add_argument("--symbols", type=int, default=10)
    ap.add_argument("--latency-ms", default="0,20", help="round-trip latencies to inject, comma-separated (0: no proxy)")
    ap.add_argument("--speed", type=float, default=100.0)
    ap.add_argument("--paced-minutes", type=float, default=10.0, help="recording minutes replayed at --speed")
    ap.add_argument("--repeat", type=int, default=2, help="warm runs after the cold one")
    ap.add_argument("--smoke", action="store_true", help="20k trades, 1 paced minute, no warm runs")
    ap.add_argument("--quick", action="store_true", help="the quick suite's size: 200k trades, 2 paced minutes, 1 warm run")
    ap.add_argument("--json", dest="json_out", metavar="FILE", help="write the figures for python -m bench")
    ap.add_argument("--no-peers", action="store_true", help=argparse.SUPPRESS)  # the suite passes it to every script
    args = ap.parse_args(argv)
    if args.smoke:
        args.rows, args.paced_minutes, args.repeat, args.latency_ms = 20_000, 1.0, 0, "0,20"
    elif args.quick:
        args.rows, args.paced_minutes, args.repeat, args.latency_ms = 200_000, 2.0, 1, "0,20"
    latencies = [float(x) for x in args.latency_ms.split(",") if x.strip()]

    # fake credentials, no ~/.aws, no instance metadata: nothing here may reach AWS
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY=SECRET, AWS_DEFAULT_REGION="us-east-1",
                      AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    for k in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        os.environ.pop(k, None)
    import pyarrow.fs as pafs

    from wrdata.sim.proxy import ThreadedTcpProxy
    from wrdata.storage import list_sealed, open_filesystem

    print("# bench/objectstore.py: replay from an S3 bucket (moto server on loopback) vs local disk")
    print(f"# {machine()}")
    print(f"# interpreter: {sys.executable}")
    work = Path(tempfile.mkdtemp(prefix="wrdata-bench-os-"))
    moto, endpoint = start_moto()
    proxies = []
    try:
        local = work / "local"
        t = time.perf_counter()
        generate(local, args.rows, args.symbols)
        files = list_sealed(str(local), "trades")
        size = sum(f.size for f in files)
        print(f"# recording: {args.rows:,} trades of {args.symbols} symbols over one hour, {len(files)} sealed file(s), "
              f"{size / 1e6:.1f} MB (written in {time.perf_counter() - t:.1f} s)")
        admin = pafs.S3FileSystem(endpoint_override=endpoint, scheme="http", allow_bucket_creation=True)
        admin.create_dir("bench")
        pafs.copy_files(str(local), "bench/md", source_filesystem=pafs.LocalFileSystem(), destination_filesystem=admin)
        sources: list[tuple[str, str, object]] = [("local disk", str(local), None)]
        host, port = endpoint.rsplit("/", 1)[1].split(":")
        for ms in latencies:
            url = endpoint
            if ms > 0:
                p = ThreadedTcpProxy(host, int(port))
                p.delay(ms / 2000)  # half the round trip each way
                proxies.append(p)
                url = p.url("http")
            fs, _ = open_filesystem("s3://bench/md", s3_endpoint=url)
            sources.append((f"s3 +{ms:g} ms RTT", "s3://bench/md", fs))
        symbols = _symbols(args.symbols)
        end = T0 + int(args.paced_minutes * 60e9)
        results: dict[str, dict] = {}
        print(f"# {'source':<18} {'what':<12} {'cold':>12} {'warm':>12} {'unit':<8} {'vs local (warm)':>15}")
        for label, root, fs in sources:
            r: dict = {}
            cold, warm, n = measure(lambda: scan(root, fs), args.repeat)  # noqa: B023
            r["scan"] = (n / cold, n / warm if warm else None)
            cold, warm, n = measure(lambda: batches(root, fs), args.repeat)  # noqa: B023
            assert n == args.rows, (label, n)
            r["batches"] = (n / cold, n / warm if warm else None)
            cold, warm, n = measure(lambda: batches(root, fs, 3600.0), args.repeat)  # noqa: B023
            r["batches 1h"] = (n / cold, n / warm if warm else None)

            def run_max():
                return asyncio.run(replay(root, fs, symbols, None))  # noqa: B023

            cold, warm, (n, _, _) = measure(run_max, args.repeat)
            assert n == args.rows, (label, n)
            r["replay max"] = (n / cold, n / warm if warm else None)
            # paced: one cold run (what a backtest starting now would see)
            t = time.perf_counter()
            n, late, span = asyncio.run(replay(root, fs, symbols, args.speed, end))
            wall = time.perf_counter() - t
            lat = np.array(late)
            r["paced"] = dict(n=n, max=float(lat.max()), p99=float(np.percentile(lat, 99)), span=span, wall=wall,
                              ideal=args.paced_minutes * 60 / args.speed, over50=int((lat > 0.05).sum()))
            results[label] = r
            base = results["local disk"]
            for what in ("scan", "batches", "batches 1h", "replay max"):
                c, w = r[what]
                rel = f"{w / base[what][1]:.2f}x" if w and base[what][1] else (f"{c / base[what][0]:.2f}x cold" if label != "local disk" else "")
                print(f"  {label:<18} {what:<12} {c:>12,.0f} {(f'{w:,.0f}' if w else '-'):>12} {'rows/s':<8} {rel:>15}", flush=True)
            p = r["paced"]
            print(f"  {label:<18} {'replay x' + format(args.speed, 'g'):<12} {p['n']:,} msgs in {p['span']:.2f} s "
                  f"(ideal {p['ideal']:.2f} s); lateness max {p['max'] * 1e3:.1f} ms, p99 {p['p99'] * 1e3:.1f} ms; "
                  f"{p['over50']} messages more than 50 ms late", flush=True)
        print("# floor: 'local disk' rows (same files, same process, page cache warm after the first pass)")
        _report(args, results, latencies)
    finally:
        for p in proxies:
            p.close()
        moto.terminate()
        moto.wait(10)
        shutil.rmtree(work, ignore_errors=True)


def _report(args, results: dict, latencies: list[float]) -> None:
    """The figures for ``python -m bench``: the slowest bucket beside local disk (warm, else cold)."""
    from .common import Report

    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    rep = Report("objectstore", mode, f"{args.rows:,} trades over one hour; S3 = moto server on loopback + injected RTT")
    base = results["local disk"]
    label = f"s3 +{max(latencies):g} ms RTT"
    r = results.get(label)
    if r is None:
        rep.finish(args.json_out)
        return
    for what, name in (("batches", "batch replay read_batches() from S3"), ("replay max", "replay stream() speed=None from S3")):
        c, w = r[what]
        bc, bw = base[what]
        v, f = (w, bw) if w and bw else (c, bc)
        rep.add("replay", f"{name}, +{max(latencies):g} ms RTT", "rows/s", v, f, f"the same from local disk, same run ({'warm' if w else 'cold'})",
                note="moto serves from memory: the injected round trip is the only latency")
    p = r["paced"]
    rep.add("replay", f"replay x{args.speed:g} from S3 +{max(latencies):g} ms RTT: lateness p99", "ms", p["p99"] * 1e3,
            base["paced"]["p99"] * 1e3, "the same from local disk, same run", lower_is_better=True,
            note=f"{p['n']:,} msgs; max {p['max'] * 1e3:.1f} ms; {p['over50']} more than 50 ms late")
    rep.finish(args.json_out)


if __name__ == "__main__":
    main()
