"""Frames for the benchmarks, built from the real Binance tape (bench/data, see its SOURCES.md).

``trade_frames(n)`` returns ``n`` combined-stream ``@trade`` frames whose fields come
from the 19,904 real trades of the hftbacktest tape (prices, sizes, sides, times),
with trade ids renumbered consecutively so a long run never looks like duplicates;
``aggtrade_frames(n)`` the same trades as ``@aggTrade`` frames (what cryptofeed's
``TRADES`` channel reads); ``polygon_frames(kind, n)`` seeded Polygon (Massive) frames of
100 events each. Standard library only: the peers' own interpreter imports this too.
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


def aggtrade_frames(n: int, first_id: int = 1_000_000) -> list[bytes]:
    """The tape's trades as combined-stream ``@aggTrade`` frames (one trade per aggregate)."""
    trades = tape_trades()
    out = []
    for i in range(n):
        d = trades[i % len(trades)]
        a = first_id + i
        out.append(
            b'{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":%d,"s":"BTCUSDT","a":%d,"p":"%s","q":"%s","f":%d,"l":%d,"T":%d,"m":%s,"M":true}}'
            % (d["E"], a, d["p"].encode(), d["q"].encode(), a, a, d["T"], b"true" if d["m"] else b"false")
        )
    return out


# -- Polygon (Massive): JSON arrays of events, 100 per frame --------------------------------

TICKERS = ["AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "TSLA", "AMD", "SPY", "QQQ", "IWM", "NFLX", "INTC", "BAC", "F"]
PAIRS = ["BTC-USD", "ETH-USD", "SOL-USD", "XRP-USD", "DOGE-USD"]
CONDITIONS = [[], [12], [14, 41], [0, 12], [37], [12, 37], [2, 14, 37, 41]]


def _p_trade(r, i: int) -> dict:
    e = {"ev": "T", "sym": r.choice(TICKERS), "x": r.randint(1, 21), "i": str(r.randint(1, 99_999_999)), "z": r.randint(1, 3),
         "p": round(r.uniform(10, 900), 2), "s": r.choice([1, 5, 10, 100, 100, 200, 300, 500]), "t": 1_764_000_000_000 + i,
         "q": 5_000_000 + i}
    c = r.choice(CONDITIONS)
    if c:
        e["c"] = c
    return e


def _p_quote(r, i: int) -> dict:
    p = round(r.uniform(10, 900), 2)
    return {"ev": "Q", "sym": r.choice(TICKERS), "bx": r.randint(1, 21), "bp": p, "bs": r.randint(1, 20), "ax": r.randint(1, 21),
            "ap": round(p + 0.01, 2), "as": r.randint(1, 20), "c": 1, "i": [604], "t": 1_764_000_000_000 + i, "q": 9_000_000 + i,
            "z": 3}


def _p_agg(r, i: int) -> dict:
    o = round(r.uniform(10, 900), 2)
    return {"ev": r.choice(["A", "AM"]), "sym": r.choice(TICKERS), "v": r.randint(100, 50_000), "av": r.randint(10**6, 10**8),
            "op": o, "vw": o, "o": o, "c": o, "h": round(o * 1.001, 2), "l": round(o * 0.999, 2), "a": o, "z": 120,
            "s": 1_764_000_000_000, "e": 1_764_000_060_000}


def _p_crypto(r, i: int) -> dict:
    if r.random() < 0.6:
        return {"ev": "XT", "pair": r.choice(PAIRS), "p": round(r.uniform(0.1, 90_000), 2), "t": 1_764_000_000_000 + i,
                "s": round(r.uniform(0.0001, 3), 8), "c": [r.choice([1, 2])], "i": r.randint(1, 10**9), "x": r.randint(1, 10),
                "r": 1_764_000_000_010 + i}
    p = round(r.uniform(0.1, 90_000), 2)
    return {"ev": "XQ", "pair": r.choice(PAIRS), "bp": p, "bs": round(r.uniform(0.01, 5), 4), "ap": round(p * 1.0001, 2),
            "as": round(r.uniform(0.01, 5), 4), "t": 1_764_000_000_000 + i, "x": r.randint(1, 10), "r": 1_764_000_000_010 + i}


def polygon_frames(kind: str, n: int, per: int = 100, seed: int = 1) -> list[bytes]:
    """``n`` frames of ``per`` events: ``trades`` (``T``), ``mix`` (70% ``T``, 25% ``Q``,
    5% ``A``/``AM``) or ``crypto`` (``XT``/``XQ``), compact JSON as the venue sends it."""
    import random

    r = random.Random(seed)
    out = []
    k = 0
    for _ in range(n):
        events = []
        for _ in range(per):
            k += 1
            if kind == "trades":
                events.append(_p_trade(r, k))
            elif kind == "crypto":
                events.append(_p_crypto(r, k))
            else:
                x = r.random()
                events.append(_p_trade(r, k) if x < 0.70 else _p_quote(r, k) if x < 0.95 else _p_agg(r, k))
        out.append(json.dumps(events, separators=(",", ":")).encode())
    return out
