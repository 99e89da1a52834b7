"""Gap healing: time from a gap to its healed outcome, and live-stream latency with
healing running beside it.

The Binance simulator runs in a process of its own (its CPU is not the client's), fed
by a pipe of fault commands; this process runs ``DataStream`` (``include_status``,
``include_backfill``) on one trade stream and measures, per trade received by the
consumer, ``now - ts_event`` (both clocks are this host's: the simulator stamps its
trades when it makes them, pushes them every 5 ms), in three phases of equal length:

- ``idle``: healing on, no gaps (the baseline);
- ``healing``: healing on, ``--withhold`` trades skipped every ``--every`` seconds: a
  heal job always running, each paging through ``historicalTrades`` with short pages
  (``--page-limit``), the rate limiter wide open (the worst case for interference);
- ``no heal``: healing off, the same gaps (what the stream costs without healing's work).

Per gap: detection (the ``gap`` event reaching the consumer) to outcome (its ``healed``
event), in ms. The stream's latency must not grow with healing: compare the phases.

    python -m bench.heal [--seconds S] [--rate R] [--withhold N] [--every T] [--page-limit P]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import platform
import statistics
import threading
import time


def _sim_main(conn, rate: float, page_limit: int) -> None:
    """The simulator process: serve, then obey ("withhold", n) / ("stop",) from the pipe."""
    from wrdata.sim.binance import BinanceSimulator

    async def run() -> None:
        sim = BinanceSimulator(seed=7, symbols=["BTCUSDT"], rate=rate, warmup=1.0, msg_limit=None)
        sim.faults.page_limit = page_limit
        await sim.start()
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        conn.send(sim.url)

        def reader() -> None:
            while True:
                cmd = conn.recv()
                if cmd[0] == "withhold":
                    loop.call_soon_threadsafe(sim.faults.withhold_trades, cmd[1], "BTCUSDT")
                elif cmd[0] == "stop":
                    loop.call_soon_threadsafe(done.set)
                    return

        threading.Thread(target=reader, daemon=True).start()
        await done.wait()
        await sim.stop()

    asyncio.run(run())


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def phase(url: str, ctl, name: str, seconds: float, heal: bool, withhold: int, every: float) -> dict:
    from wrdata import DataStream

    opts = {"history_rate": 1e6, "history_burst": 1e6, "heal_wait": 2.0}
    lat: list[float] = []
    gap_at: dict[tuple, float] = {}
    heal_ms: list[float] = []
    n_backfill = 0
    async with DataStream(endpoints={"binance": url}, heal=heal, include_backfill=True, include_status=True,
                          options={"binance": opts}) as ds:
        it = ds.stream("BTCUSDT")
        t_end = time.monotonic() + seconds
        next_gap = time.monotonic() + 0.5
        async for m in it:
            now_ns = time.time_ns()
            if m.kind == "trade":
                if m.source == "stream":
                    lat.append((now_ns - m.ts_event) / 1e3)
                else:
                    n_backfill += 1
            elif m.status == "gap":
                gap_at[(m.first_missing_id, m.last_missing_id)] = time.monotonic()
            elif m.status == "healed":
                t0 = gap_at.get((m.first_missing_id, m.last_missing_id))
                if t0 is not None:
                    heal_ms.append((time.monotonic() - t0) * 1e3)
            t = time.monotonic()
            if withhold and t >= next_gap and t < t_end - 1.0:
                ctl.send(("withhold", withhold))
                next_gap = t + every
            if t >= t_end:
                break
        if heal:
            await ds.manager.healer.idle(10)
    return dict(name=name, trades=len(lat), lat=lat, gaps=len(gap_at), heal_ms=heal_ms, backfill=n_backfill)


async def main_async(args) -> None:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_sim_main, args=(child, args.rate, args.page_limit), daemon=True)
    proc.start()
    url = parent.recv()
    try:
        results = [
            await phase(url, parent, "idle", args.seconds, True, 0, args.every),
            await phase(url, parent, "healing", args.seconds, True, args.withhold, args.every),
            await phase(url, parent, "no heal", args.seconds, False, args.withhold, args.every),
        ]
    finally:
        parent.send(("stop",))
        proc.join(10)
    print(f"{'phase':<9} {'trades':>8} {'p50 µs':>8} {'p90 µs':>8} {'p99 µs':>8} {'max µs':>9} {'gaps':>5} {'healed':>6} "
          f"{'backfilled':>10} {'gap→healed ms: p50':>19} {'p90':>7} {'max':>7}")
    for r in results:
        lat, hm = r["lat"], r["heal_ms"]
        print(f"{r['name']:<9} {r['trades']:>8,} {pct(lat, .5):>8.0f} {pct(lat, .9):>8.0f} {pct(lat, .99):>8.0f} "
              f"{max(lat) if lat else float('nan'):>9.0f} {r['gaps']:>5} {len(hm):>6} {r['backfill']:>10,} "
              f"{pct(hm, .5):>19.1f} {pct(hm, .9):>7.1f} {max(hm) if hm else float('nan'):>7.1f}")
    idle, healing = results[0]["lat"], results[1]["lat"]
    if idle and healing:
        print(f"stream latency with healing beside it vs idle: p50 x{statistics.median(healing) / statistics.median(idle):.2f}, "
              f"p99 x{pct(healing, .99) / pct(idle, .99):.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    ap.add_argument("--rate", type=float, default=2000.0, help="simulator market events per second")
    ap.add_argument("--withhold", type=int, default=300, help="trades skipped per gap")
    ap.add_argument("--every", type=float, default=0.5, help="seconds between gaps")
    ap.add_argument("--page-limit", type=int, default=25, help="rows per history page (short pages: more requests)")
    args = ap.parse_args()
    print("# bench/heal: gap detection to healed, and stream latency with healing beside it")
    print(f"# {platform.python_implementation()} {platform.python_version()} on {platform.system()} {platform.machine()}, "
          f"{os.cpu_count()} CPUs; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"# {args.seconds:g} s per phase, {args.rate:g} events/s, {args.withhold} trades withheld every {args.every:g} s, "
          f"history pages of {args.page_limit}", flush=True)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
