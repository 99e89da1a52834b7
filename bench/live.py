"""Live delivery latency while recording, and the capture's memory over a long run.

The sender (its own process) sends Binance ``@trade`` frames at a fixed rate, spread
evenly (a few frames every 0.2 ms). This process runs a ``DataStream`` with wrdata's
recorder tapped in (``DatasetWriter``: raw frames and trades journaled every second,
segments rolled and sealed to Parquet every ``--roll`` seconds, so sealing happens
during the run) and a user callback subscribed to the trades (``subscribe()``).

- **latency**: for every trade, the callback's ``time.time_ns()`` − the message's
  ``ts_recv`` (taken once per frame as it comes off the socket, same clock): what the
  runner, the parser, the taps, the hub, the consumer queue and the subscription task
  add. p50 / p99 / p99.9. The floor: the same run with nothing recorded.
- **RSS**: the process's resident memory every second; the slope of a least-squares
  line through the samples after the first third of the run (warm-up: queues, arenas
  and the first segments reach their working size), in MB per minute, and the growth
  from then to the end. The target is no growth (a slope under +1 MB/min; a falling
  one is memory a seal gave back): a capture runs for months.

    python -m bench.live [--smoke|--quick] [--rate R] [--seconds S] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import shutil
import tempfile
import time

from bench.common import Report, Sender, add_mode_args, header, pick, rss_bytes


async def run(url: str, n: int, root: str | None, roll: float, samples: list | None) -> list[int]:
    import numpy as np

    from wrdata import DataStream
    from wrdata.storage import DatasetWriter

    # preallocated and touched now, so that the bench's own list does not grow the RSS
    lat = np.ones(n, dtype=np.int64)
    k = 0
    now = time.time_ns
    done = asyncio.get_running_loop().create_future()

    def callback(m) -> None:
        nonlocal k
        lat[k] = now() - m.ts_recv
        k += 1
        if k >= n and not done.done():
            done.set_result(None)

    writer = None
    async with DataStream(endpoints={"binance": url}) as ds:
        ds.manager.venue("binance").instruments = {"BTCUSDT": {}}  # the sender serves no REST
        if root is not None:
            writer = DatasetWriter(root, roll_interval=roll).start()
            ds.add_tap(writer)
        sampler = None
        if samples is not None:
            async def sample() -> None:
                t0 = time.monotonic()
                while True:
                    samples.append((time.monotonic() - t0, rss_bytes()))
                    await asyncio.sleep(1.0)

            sampler = asyncio.create_task(sample())
        task = ds.subscribe("BTCUSDT", callback)
        await done
        task.cancel()
        if sampler is not None:
            sampler.cancel()
    if writer is not None:
        await asyncio.to_thread(writer.close)
    return lat.tolist()


def pct(xs: list[float], q: float) -> float:
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def slope(samples: list[tuple[float, int]]) -> tuple[float, float, float]:
    """(MB per minute after warm-up, MB growth after warm-up, peak MB); warm-up: the first third."""
    pts = samples[len(samples) // 3:]
    if len(pts) < 3:
        return 0.0, 0.0, max(s[1] for s in samples) / 1e6
    n = len(pts)
    mx = sum(t for t, _ in pts) / n
    my = sum(r for _, r in pts) / n
    var = sum((t - mx) ** 2 for t, _ in pts)
    b = sum((t - mx) * (r - my) for t, r in pts) / var if var else 0.0
    return b * 60 / 1e6, (pts[-1][1] - pts[0][1]) / 1e6, max(r for _, r in samples) / 1e6


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_mode_args(ap)
    ap.add_argument("--rate", type=float, default=None, help="frames per second offered")
    ap.add_argument("--seconds", type=float, default=None, help="length of the recording run")
    ap.add_argument("--switch-interval", type=float, default=None,
                    help="sys.setswitchinterval() for the run (seconds; CPython's default 0.005)")
    args = ap.parse_args(argv)
    if args.switch_interval:
        import sys

        sys.setswitchinterval(args.switch_interval)
    mode = args.mode
    rate = args.rate or pick(mode, 5_000, 20_000, 20_000)
    secs = args.seconds or pick(mode, 1.5, 20.0, 180.0)
    roll = max(1.0, secs / 6)
    floor_secs = min(secs, pick(mode, 0.5, 5.0, 20.0))
    logging.basicConfig(level=logging.ERROR)
    header("live delivery latency while recording, and RSS over the run", mode)
    import wrdata.storage  # noqa: F401  (imported before the clocks start)

    gc.collect()
    gc.freeze()  # as `wrdata capture` does once started: full collections skip what startup made

    rep = Report("live", mode, f"{rate:,.0f} frames/s offered for {secs:.0f} s recording (+{floor_secs:.0f} s not recording)")
    tmp = tempfile.mkdtemp(prefix="wrdata-bench-live-")
    samples: list[tuple[float, int]] = []
    try:
        n = int(rate * secs)
        with Sender(n, "trade", rate=rate) as s:
            t0 = time.monotonic()
            lat = asyncio.run(run(s.url, n, f"{tmp}/rec", roll, samples))
            took = time.monotonic() - t0
        nf = int(rate * floor_secs)
        with Sender(nf, "trade", rate=rate) as s:
            flat = asyncio.run(run(s.url, nf, None, roll, None))
        from wrdata.storage import list_sealed

        sealed = len(list_sealed(f"{tmp}/rec", "trades")) + len(list_sealed(f"{tmp}/rec", "raw"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lat_us = sorted(x / 1e3 for x in lat[len(lat) // 20:])  # the first 5%: connection warm-up
    flo_us = sorted(x / 1e3 for x in flat[len(flat) // 20:])
    print(f"recording: {len(lat):,} trades in {took:.1f} s, {sealed} files sealed during the run")
    for name, xs in (("recording", lat_us), ("not recording", flo_us)):
        print(f"  {name:<14} p50 {pct(xs, .5):8.1f} µs  p99 {pct(xs, .99):8.1f} µs  p99.9 {pct(xs, .999):8.1f} µs  max {xs[-1]:9.1f} µs")
    mbm, growth, peak = slope(samples)
    print(f"RSS: {len(samples)} samples, peak {peak:.0f} MB, after warm-up {mbm:+.2f} MB/min ({growth:+.1f} MB): "
          + " ".join(f"{r / 1e6:.0f}" for _, r in samples[:: max(1, len(samples) // 20)]))
    g = "live"
    for q, label in ((.5, "p50"), (.99, "p99"), (.999, "p99.9")):
        rep.add(g, f"delivery latency socket→callback while recording, {label}", "µs", pct(lat_us, q), pct(flo_us, q),
                "the same path with nothing recorded, same sender and rate, same run", lower_is_better=True,
                note=f"{rate:,.0f} trade frames/s offered, evenly; {len(lat):,} trades" if label == "p50" else "")
    rep.add(g, "capture RSS slope after warm-up (recording, sealing)", "MB/min", mbm, None, "",
            target="no growth (< +1 MB/min)", met=mbm < 1.0, lower_is_better=True,
            note=f"{secs:.0f} s at {rate:,.0f} frames/s, segments sealed every {roll:.0f} s ({sealed} files); peak {peak:.0f} MB, "
                 f"{growth:+.1f} MB from warm-up to end")
    rep.finish(args.json_out)


if __name__ == "__main__":
    main()
