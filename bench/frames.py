"""Frames for the benchmarks, built from the real Binance tape (bench/data, see its SOURCES.md).

``trade_frames(n)`` returns ``n`` combined-stream ``@trade`` frames whose fields come
from the 19,904 real trades of the hftbacktest tape (prices, sizes, sides, times),
with trade ids renumbered consecutively so a long run never looks like duplicates.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

DATA = Path(__file__).parent / "data"
TAPES = [DATA / "hftbacktest_binance_spot_btcusdt_20240808.gz", DATA / "hftbacktest_binance_spot_btcusdt_20240809.gz"]


def tape_lines() -> list[tuple[int, bytes]]:
    """(ts_recv ns, frame bytes) of every line of both tape files, in order."""
    out = []
    for path in TAPES:
        with gzip.open(path, "rb") as f:
            for line in f:
                ts, _, frame = line.rstrip(b"\n").partition(b" ")
                out.append((int(ts), frame))
    return out


def tape_trades() -> list[dict]:
    """The 19,904 real trades (the ``data`` objects of the ``@trade`` frames)."""
    return [json.loads(f)["data"] for _, f in tape_lines() if b'@trade"' in f[:40]]


def trade_frames(n: int, first_id: int = 1_000_000) -> list[bytes]:
    trades = tape_trades()
    out = []
    for i in range(n):
        d = trades[i % len(trades)]
        out.append(
            b'{"stream":"btcusdt@trade","data":{"e":"trade","E":%d,"s":"BTCUSDT","t":%d,"p":"%s","q":"%s","T":%d,"m":%s,"M":true}}'
            % (d["E"], first_id + i, d["p"].encode(), d["q"].encode(), d["T"], b"true" if d["m"] else b"false")
        )
    return out


def mixed_frames(n: int) -> list[bytes]:
    """The tape's own mix (trades, bookTicker, depth@100ms) cycled to ``n`` frames, REST line excluded."""
    lines = [f for _, f in tape_lines() if f.startswith(b'{"stream"')]
    return [lines[i % len(lines)] for i in range(n)]
