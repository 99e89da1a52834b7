"""Replay: msgs/s through ``stream()``, batch rows/s, and pacing error, beside their ceilings.

The recording is written by wrdata's own recorder (``DatasetWriter``: journal, then
sealed zstd Parquet), from the real Binance tape (``bench/data``):

- throughput: the tape's 19,904 trades repeated (times shifted, ids renumbered) to N
  trades (~30 trades/s, as the tape: a sparse stream, the case where fixed read windows
  hurt most);
- pacing: the tape's own trades and bookTicker quotes at their recorded ``ts_recv``.

Figures (issue 4's targets in brackets):

- ``DataStream.replay(root).stream("BTCUSDT")`` with ``speed=None``, messages per CPU
  second, beside **the bare ceiling**: the same Parquet files read by ``pq.read_table``,
  the same ``StreamMessage`` objects built by ``to_messages``, yielded by a bare async
  generator, all in this process [≥ 75% of the ceiling];
- ``wrdata.replay.read_batches(root)`` rows per CPU second beside **a bare Parquet
  read** (``pyarrow.dataset`` of the same files, ``to_batches()``) [≥ 75%];
- pacing at ``speed=1``: for every message, |the moment the consumer got it − the moment
  it was due|, where due = first message's arrival + (its ``ts_recv`` − the first's) /
  speed; p50/p99/max, beside the same pacing done by a bare ``asyncio.sleep`` loop over
  the same times [p99 ≤ 2 ms];
- pacing at ``speed=100``: the time from first to last message over the recording's
  span / 100 [within 1%].

Medians of ``--repeat`` runs, interleaved (ceiling, replay, ceiling, ...).

    python -m bench.replay [--smoke|--quick] [--rows N] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import shutil
import tempfile
import time

from bench.common import Report, add_mode_args, header, median, pick

cpu = time.process_time


def write_trades(root: str, n: int) -> None:
    from bench.storage_recorder import build
    from wrdata.storage import DatasetWriter

    trades, _ = build(n)
    w = DatasetWriter(root, flush_interval=0.5, fsync="never").start()
    step = 20_000
    for i in range(0, n, step):
        w.on_messages(trades[i : i + step])
    w.close()


def write_tape(root: str) -> tuple[int, int]:
    """The tape's trades and bookTicker quotes, parsed by the Binance session, recorded."""
    from bench.storage_common import TAPES
    from wrdata.storage import DatasetWriter
    from wrdata.streaming.binance import BinanceVenue

    session = BinanceVenue().session(0, ["btcusdt@trade", "btcusdt@bookTicker"])
    w = DatasetWriter(root, flush_interval=0.5, fsync="never").start()
    seq = n = 0
    first = last = 0
    for path in TAPES:
        with gzip.open(path, "rb") as f:
            for line in f:
                ts_s, _, frame = line.rstrip(b"\n").partition(b" ")
                if b"@trade" not in frame[:40] and b"@bookTicker" not in frame[:40]:
                    continue
                ts = int(ts_s)
                msgs = [m for m in session.feed(frame, ts, seq) if m.kind in ("trade", "quote")]
                seq += 1
                if msgs:
                    w.on_messages(msgs)
                    n += len(msgs)
                    first = first or ts
                    last = ts
    w.close()
    return n, last - first


async def ceiling(files: list[str]) -> int:
    import pyarrow.parquet as pq

    from wrdata.storage import to_messages

    async def gen():
        t = pq.read_table(files)
        for m in to_messages("trades", t):
            yield m

    k = 0
    async for _m in gen():
        k += 1
    return k


async def replay(root: str) -> int:
    from wrdata import DataStream

    k = 0
    async with DataStream.replay(root) as ds:
        async for _m in ds.stream("BTCUSDT"):
            k += 1
    return k


def batches(root: str) -> int:
    from wrdata.replay import read_batches

    return sum(b.num_rows for _t, b in read_batches(root))


def bare_read(files: list[str]) -> int:
    import pyarrow.dataset as pds

    return sum(b.num_rows for b in pds.dataset(files, format="parquet").to_batches())


def timed(fn, *a) -> tuple[float, float, int]:
    w0, c0 = time.perf_counter(), cpu()
    r = fn(*a)
    if asyncio.iscoroutine(r):
        r = asyncio.run(r)
    return time.perf_counter() - w0, cpu() - c0, r


async def paced(root: str, speed: float, start: int | None, end: int | None) -> list[tuple[int, float]]:
    """(ts_recv, arrival) of every trade and quote replayed at ``speed``."""
    from wrdata import DataStream

    got: list[tuple[int, float]] = []
    loop = asyncio.get_running_loop()

    async def take(ds, kind):
        async for m in ds.stream("BTCUSDT", kind):
            got.append((m.ts_recv, loop.time()))

    async with DataStream.replay(root, speed=speed, start=start, end=end) as ds:
        await asyncio.gather(take(ds, "trade"), take(ds, "quote"))
    got.sort()
    return got


async def bare_paced(times: list[int], speed: float) -> list[tuple[int, float]]:
    """The floor: a bare asyncio loop sleeping until each time is due."""
    loop = asyncio.get_running_loop()
    got = []
    t0 = loop.time()
    ts0 = times[0]
    for ts in times:
        delay = t0 + (ts - ts0) / 1e9 / speed - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        got.append((ts, loop.time()))
    return got


def errors_ms(got: list[tuple[int, float]], speed: float) -> list[float]:
    ts0, a0 = got[0]
    return sorted(abs(a - (a0 + (ts - ts0) / 1e9 / speed)) * 1e3 for ts, a in got)


def pct(xs: list[float], q: float) -> float:
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_mode_args(ap)
    ap.add_argument("--rows", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=None)
    args = ap.parse_args(argv)
    mode = args.mode
    n = args.rows or pick(mode, 5_000, 300_000, 1_000_000)
    repeat = args.repeat or pick(mode, 1, 2, 3)
    pace_s = pick(mode, 1.0, 10.0, 60.0)
    header("replay", mode)
    tmp = tempfile.mkdtemp(prefix="wrdata-bench-replay-")
    rep = Report("replay", mode)
    try:
        root = f"{tmp}/trades"
        t0 = time.perf_counter()
        write_trades(root, n)
        from wrdata.storage import list_sealed

        files = [f.path for f in list_sealed(root, "trades")]
        print(f"recorded {n:,} trades (tape repeated) into {len(files)} sealed files in {time.perf_counter() - t0:.1f} s")
        res: dict[str, list[tuple[float, float]]] = {k: [] for k in ("ceiling", "stream", "bare", "batches")}
        for _ in range(repeat):
            for name, fn, arg in (("ceiling", ceiling, files), ("stream", replay, root), ("bare", bare_read, files),
                                  ("batches", batches, root)):
                w, c, k = timed(fn, arg)
                assert k == n, (name, k, n)
                res[name].append((n / w, n / max(c, 1e-9)))
        med = {k: (median([x[0] for x in v]), median([x[1] for x in v])) for k, v in res.items()}
        for k, (w, c) in med.items():
            print(f"  {k:<10} {w:>12,.0f} rows/s wall {c:>12,.0f} rows/CPU-s")

        g = "replay"
        s, c = med["stream"], med["ceiling"]
        rep.add(g, "replay DataStream.stream(), speed=None", "msgs/CPU-s", s[1], c[1],
                "pq.read_table of the same files + to_messages (same StreamMessage objects) through a bare async generator, same process",
                target="≥ 75% of floor", met=s[1] >= 0.75 * c[1], note=f"per wall second: {s[0]:,.0f} vs ceiling {c[0]:,.0f} ({s[0] / c[0]:.0%})")
        b, f = med["batches"], med["bare"]
        rep.add(g, "batch replay wrdata.replay.read_batches()", "rows/CPU-s", b[1], f[1],
                "pyarrow.dataset(files).to_batches(), same files, all columns, no order", target="≥ 75% of floor",
                met=b[1] >= 0.75 * f[1], note=f"per wall second: {b[0]:,.0f} vs bare {f[0]:,.0f} ({b[0] / f[0]:.0%})")

        # pacing, on the tape's own times
        troot = f"{tmp}/tape"
        count, span = write_tape(troot)
        from wrdata.storage import read_table

        t = read_table(troot, "trades", columns=["ts_recv"])
        q = read_table(troot, "quotes", columns=["ts_recv"])
        first = min(t.column("ts_recv")[0].value, q.column("ts_recv")[0].value)
        end = first + int(pace_s * 1e9)
        got = asyncio.run(paced(troot, 1, first, end))
        e1 = errors_ms(got, 1)
        floor_got = asyncio.run(bare_paced([ts for ts, _ in got], 1))
        f1 = errors_ms(floor_got, 1)
        print(f"speed 1, {len(got):,} messages over {pace_s:.0f} s: |error| p50 {pct(e1, .5):.3f} ms, p99 {pct(e1, .99):.3f} ms, "
              f"p99.9 {pct(e1, .999):.3f} ms, max {e1[-1]:.3f} ms; bare asyncio.sleep loop p99 {pct(f1, .99):.3f} ms")
        rep.add(g, "replay pacing error at speed=1, p99", "ms", pct(e1, .99), pct(f1, .99),
                "a bare asyncio.sleep loop pacing the same ts_recv times, same run", target="≤ 2 ms", met=pct(e1, .99) <= 2.0,
                lower_is_better=True, note=f"{len(got):,} trades+quotes, {pace_s:.0f} s of the tape; p50 {pct(e1, .5):.3f} ms, max {e1[-1]:.2f} ms")
        speed = 100.0
        span100 = pick(mode, 50.0, 200.0, None)  # seconds of the tape (None: all of it)
        end100 = first + int(span100 * 1e9) if span100 else None
        got = asyncio.run(paced(troot, speed, first, end100))
        rec_span = (got[-1][0] - got[0][0]) / 1e9
        took = got[-1][1] - got[0][1]
        err = took / (rec_span / speed) - 1
        print(f"speed 100: {len(got):,} messages, recording span {rec_span:.1f} s, replayed in {took:.3f} s "
              f"(expected {rec_span / speed:.3f} s): {err:+.2%}")
        rep.add(g, "replay pacing at speed=100: duration error", "%", abs(err) * 100, None, "", target="within 1%",
                met=abs(err) <= 0.01, lower_is_better=True,
                note=f"{len(got):,} trades+quotes over {rec_span:.0f} s of the tape, replayed in {took:.3f} s")
        rep.rows = f"{n:,} trades x {repeat} runs; pacing on {count:,} tape trades+quotes ({span / 1e9:.0f} s)"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rep.finish(args.json_out)


if __name__ == "__main__":
    main()
