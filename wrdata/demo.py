"""``wrdata demo``: the whole product in a minute, offline, against the built-in simulators.

1. starts the venue simulators in this process (seeded synthetic markets on loopback);
2. streams live prices from them through ``DataStream.stream()``;
3. captures them to a temporary dataset and shows what was written;
4. asks DuckDB for 1-second OHLCV bars over the recording;
5. replays the recording at 10x through the same ``stream()`` API.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from pathlib import Path

import click

from .sim import SIMULATORS, simulator_class

# what the demo streams from each simulator, if that simulator exists
DEMO_SYMBOLS = {
    "binance": ["BTCUSDT", "ETHUSDT"],
    "coinbase": ["BTC-USD"],
    "kraken": ["BTC/USD"],
}


async def _start_sims(seed: int) -> dict:
    sims = {}
    for name in DEMO_SYMBOLS:
        if name in SIMULATORS:
            sim = simulator_class(name)(seed=seed, rate=300)
            await sim.start()
            sims[name] = sim
    return sims


async def _stream(endpoints: dict[str, str], targets: list[str], seconds: float) -> int:
    from .datastream import DataStream

    n = 0
    async with DataStream(endpoints=endpoints) as ds:
        deadline = time.monotonic() + seconds
        it = ds.stream_many(targets)
        try:
            async for t in it:
                n += 1
                if n % 25 == 1:
                    click.echo(f"  {t.timestamp:%H:%M:%S.%f} {t.provider:<8} {t.symbol:<8} {t.price:>12.2f} x {t.size:<10g} {t.side or ''}")
                if time.monotonic() > deadline:
                    break
        finally:
            await it.aclose()
    return n


async def _capture(endpoints: dict[str, str], root: str, seconds: float) -> None:
    from .capture.config import CaptureConfig, Target
    from .capture.daemon import CaptureDaemon
    from .channels import parse_channels

    kinds = parse_channels("trade,quote,book:10")
    targets = [Target(p, syms, kinds) for p, syms in DEMO_SYMBOLS.items() if p in endpoints]
    config = CaptureConfig(targets=targets, root=root, endpoints=endpoints)
    config.storage.flush_interval = 0.5
    await CaptureDaemon(config, duration=seconds, status="none").run()


def _summary(root: str) -> None:
    import pyarrow.parquet as pq

    files = sorted(Path(root).glob("*/provider=*/date=*/*.parquet"))
    rows: dict[tuple[str, str], list[int]] = {}
    for f in files:
        table, provider = f.parts[-4], f.parts[-3].split("=", 1)[1]
        r = rows.setdefault((table, provider), [0, 0, 0])
        r[0] += 1
        r[1] += pq.ParquetFile(f).metadata.num_rows
        r[2] += f.stat().st_size
    click.echo(f"  {'table':<8} {'provider':<10} {'files':>5} {'rows':>8} {'bytes':>9}")
    for (table, provider), (nf, nr, nb) in sorted(rows.items()):
        click.echo(f"  {table:<8} {provider:<10} {nf:>5} {nr:>8} {nb:>9}")


def _query(root: str) -> None:
    try:
        from .queries import connect, ohlcv
    except ImportError:
        return
    con = connect(root)
    bars = ohlcv(con, interval="1s", output="arrow").slice(0, 5)
    click.echo("  first 1-second bars from trades (DuckDB):")
    for r in bars.to_pylist():
        click.echo(f"    {r['bar']:%H:%M:%S} {r['provider']:<8} {r['symbol']:<8} O={r['open']:.2f} H={r['high']:.2f} "
                   f"L={r['low']:.2f} C={r['close']:.2f} V={r['volume']:g} n={r['trades']}")


async def _replay(root: str) -> None:
    try:
        from .replay.source import ReplaySource  # noqa: F401
    except ImportError:
        return
    from .datastream import DataStream

    t0 = time.monotonic()
    n = 0
    first = last = None
    async with DataStream.replay(root, speed=10) as ds:
        async for t in ds.stream_many([f"{p}:{s}" for p, syms in DEMO_SYMBOLS.items() for s in syms]):
            n += 1
            first = first or t.ts_recv
            last = t.ts_recv
    took = time.monotonic() - t0
    span = (last - first) / 1e9 if first else 0.0
    click.echo(f"  replayed {n} trades spanning {span:.1f}s of recording in {took:.1f}s (speed 10)")


async def run(seconds: float = 3.0, root: str | None = None, seed: int = 1) -> None:
    sims = await _start_sims(seed)
    try:
        endpoints = {name: sim.url for name, sim in sims.items()}
        targets = [f"{p}:{s}" for p in sims for s in DEMO_SYMBOLS[p]]
        click.echo(f"1. simulators: {', '.join(f'{n} at {u}' for n, u in endpoints.items())}")
        click.echo(f"2. streaming live trades of {', '.join(targets)} for {seconds:g}s:")
        n = await _stream(endpoints, targets, seconds)
        click.echo(f"  ... {n} trades")
        with contextlib.ExitStack() as stack:
            if root is None:
                root = stack.enter_context(tempfile.TemporaryDirectory(prefix="wrdata-demo-"))
            click.echo(f"3. capturing trades, quotes and books for {seconds:g}s into {root}:")
            await _capture(endpoints, root, seconds)
            _summary(root)
            click.echo("4. querying the recording:")
            _query(root)
            click.echo("5. replaying it:")
            await _replay(root)
    finally:
        for sim in sims.values():
            await sim.stop()


@click.command()
@click.option("--seconds", type=float, default=3.0, show_default=True, help="How long to stream and to capture.")
@click.option("--root", help="Keep the recording here instead of a temporary folder.")
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of the simulated markets.")
def demo(seconds: float, root: str | None, seed: int) -> None:
    """Stream, capture, query and replay, offline, against the built-in simulators."""
    asyncio.run(run(seconds, root, seed))
