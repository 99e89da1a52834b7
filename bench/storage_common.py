"""Shared by the storage benches: the real tape as messages and frames, machine info."""

from __future__ import annotations

import gzip
import os
import platform
import sys
from pathlib import Path

from wrdata.message import StreamMessage

DATA = Path(__file__).parent / "data"
TAPES = [DATA / f"hftbacktest_binance_spot_btcusdt_2024080{d}.gz" for d in (8, 9)]  # see data/SOURCES.md
WS_URL = "wss://stream.binance.com:9443/stream"
REST_URL = "https://api.binance.com/api/v3/depth?symbol=BTCUSDT&limit=1000"


def load_tape() -> tuple[list[StreamMessage], list[tuple]]:
    """(trade messages, raw frames as on_raw argument tuples) of the 19,904-trade tape: every
    line a frame (the REST depth snapshot as ``rest``), the trades parsed from the @trade
    frames by wrdata's own Binance session, as live."""
    from wrdata.streaming.driver import RawDriver
    from wrdata.streaming.registry import venue_class

    driver = RawDriver(venue_class("binance")())
    trades: list[StreamMessage] = []
    raws: list[tuple] = []
    seq = 0
    for path in TAPES:
        with gzip.open(path, "rt") as f:
            for line in f:
                ts_s, _, frame = line.rstrip("\n").partition(" ")
                ts = int(ts_s)
                rest = frame.startswith('{"lastUpdateId"')
                raws.append(("binance", 0, seq, ts, "rest" if rest else "in", REST_URL if rest else WS_URL, frame.encode()))
                if not rest and '@trade"' in frame[:40]:
                    trades.extend(m for m in driver.feed(0, seq, ts, "in", WS_URL, frame.encode()) if m.kind == "trade")
                seq += 1
    return trades, raws


def machine() -> str:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import duckdb
    import pyarrow

    return (
        f"Python {sys.version.split()[0]} ({platform.python_implementation()}), {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs: {cpu}; pyarrow {pyarrow.__version__}, duckdb {duckdb.__version__}"
    )
