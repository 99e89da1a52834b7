"""Polygon (Massive) batched frames: events parsed per second on one core.

Polygon sends every frame as a JSON array of events, often many per frame when the
market is busy. The issue's target: at least 1M events/s parsed on one core for
100-event frames. "Parsed" means what a wrdata user receives: one ``StreamMessage`` per
event, out of ``PolygonSession.feed`` (the code the live runner calls per frame).

Printed beside it, measured in the same run on the same frames:

- ``msgspec.json.decode`` bare (to dicts and lists): the floor the brief names;
- ``orjson.loads``: the usual peer;
- the typed one-pass decode alone (tagged union of per-event structs), without building
  messages: how much of the time is JSON and how much is message construction.

Frames: 100 events each, seeded: (a) trades only, (b) a stocks mix of 70 % ``T``,
25 % ``Q``, 5 % ``AM``/``A``, (c) crypto ``XT``/``XQ``. Field values in realistic ranges
(tickers, exchange ids 1-21, string trade ids, condition lists, ms timestamps, sequence
numbers), shaped like the documented examples.

Figures are the best of ``--repeat`` passes (the machine may be shared); both per wall
second and per CPU second of this process.

    python bench/polygon_parse.py [--frames 2000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import platform
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgspec  # noqa: E402
import orjson  # noqa: E402

from wrdata.streaming import polygon  # noqa: E402
from wrdata.streaming.polygon import PolygonVenue  # noqa: E402

TICKERS = ["AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "TSLA", "AMD", "SPY", "QQQ", "IWM", "NFLX", "INTC", "BAC", "F"]
PAIRS = ["BTC-USD", "ETH-USD", "SOL-USD", "XRP-USD", "DOGE-USD"]
CONDITIONS = [[], [12], [14, 41], [0, 12], [37], [12, 37], [2, 14, 37, 41]]


def _trade(r: random.Random, i: int) -> dict:
    e = {"ev": "T", "sym": r.choice(TICKERS), "x": r.randint(1, 21), "i": str(r.randint(1, 99_999_999)), "z": r.randint(1, 3),
         "p": round(r.uniform(10, 900), 2), "s": r.choice([1, 5, 10, 100, 100, 200, 300, 500]), "t": 1_764_000_000_000 + i,
         "q": 5_000_000 + i}
    c = r.choice(CONDITIONS)
    if c:
        e["c"] = c
    return e


def _quote(r: random.Random, i: int) -> dict:
    p = round(r.uniform(10, 900), 2)
    return {"ev": "Q", "sym": r.choice(TICKERS), "bx": r.randint(1, 21), "bp": p, "bs": r.randint(1, 20), "ax": r.randint(1, 21),
            "ap": round(p + 0.01, 2), "as": r.randint(1, 20), "c": 1, "i": [604], "t": 1_764_000_000_000 + i, "q": 9_000_000 + i,
            "z": 3}


def _agg(r: random.Random, i: int) -> dict:
    o = round(r.uniform(10, 900), 2)
    return {"ev": r.choice(["A", "AM"]), "sym": r.choice(TICKERS), "v": r.randint(100, 50_000), "av": r.randint(10**6, 10**8),
            "op": o, "vw": o, "o": o, "c": o, "h": round(o * 1.001, 2), "l": round(o * 0.999, 2), "a": o, "z": 120,
            "s": 1_764_000_000_000, "e": 1_764_000_060_000}


def _crypto(r: random.Random, i: int) -> dict:
    if r.random() < 0.6:
        return {"ev": "XT", "pair": r.choice(PAIRS), "p": round(r.uniform(0.1, 90_000), 2), "t": 1_764_000_000_000 + i,
                "s": round(r.uniform(0.0001, 3), 8), "c": [r.choice([1, 2])], "i": r.randint(1, 10**9), "x": r.randint(1, 10),
                "r": 1_764_000_000_010 + i}
    p = round(r.uniform(0.1, 90_000), 2)
    return {"ev": "XQ", "pair": r.choice(PAIRS), "bp": p, "bs": round(r.uniform(0.01, 5), 4), "ap": round(p * 1.0001, 2),
            "as": round(r.uniform(0.01, 5), 4), "t": 1_764_000_000_000 + i, "x": r.randint(1, 10), "r": 1_764_000_000_010 + i}


def frames(kind: str, n: int, per: int = 100, seed: int = 1) -> list[bytes]:
    r = random.Random(seed)
    out = []
    k = 0
    for _ in range(n):
        events = []
        for _ in range(per):
            k += 1
            if kind == "trades":
                events.append(_trade(r, k))
            elif kind == "crypto":
                events.append(_crypto(r, k))
            else:
                x = r.random()
                events.append(_trade(r, k) if x < 0.70 else _quote(r, k) if x < 0.95 else _agg(r, k))
        out.append(orjson.dumps(events))  # compact JSON, as the venue sends it
    return out


def measure(fn, data: list[bytes], events: int, repeat: int) -> tuple[float, float]:
    """Best events/s over ``repeat`` passes: (per wall second, per CPU second)."""
    best_wall = best_cpu = 0.0
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        for f in data:
            fn(f)
        w, c = time.perf_counter() - w0, time.process_time() - c0
        best_wall = max(best_wall, events / w)
        best_cpu = max(best_cpu, events / max(c, 1e-9))
    return best_wall, best_cpu


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=2000, help="frames per data set (100 events each)")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    session = PolygonVenue(credentials={"key": "bench"}).session(1, ["T.*"])
    typed = polygon._frame.decode
    bare = msgspec.json.decode
    seq = [0]

    def feed(f: bytes) -> None:
        seq[0] += 1
        session.feed(f, 1_764_000_000_000_000_000, seq[0])

    print(f"python {sys.version.split()[0]} ({platform.python_implementation()}), msgspec {msgspec.__version__}, "
          f"orjson {orjson.__version__}")
    print(f"machine: {cpu_model()}, {platform.machine()}, {platform.system()} {platform.release()}")
    print(f"{args.frames} frames x 100 events per data set, best of {args.repeat} passes; events/s per wall / per CPU second")
    print()
    print(f"{'data set':<10} {'bytes/event':>11}  {'what':<44} {'wall ev/s':>12} {'CPU ev/s':>12} {'ns/event':>9}")
    for kind in ("trades", "mix", "crypto"):
        data = frames(kind, args.frames)
        events = 100 * len(data)
        # one message per data event: check once that the parser loses nothing
        out = session.feed(data[0], 1, 0)
        assert len(out) == 100 and all(m.kind != "status" for m in out), out[:3]
        size = sum(map(len, data)) / events
        rows = [
            ("msgspec.json.decode (untyped), the floor", bare),
            ("orjson.loads", orjson.loads),
            ("typed one-pass decode only (no messages)", typed),
            ("PolygonSession.feed -> StreamMessage", feed),
        ]
        for label, fn in rows:
            wall, cpu = measure(fn, data, events, args.repeat)
            print(f"{kind:<10} {size:>11.1f}  {label:<44} {wall:>12,.0f} {cpu:>12,.0f} {1e9 / cpu:>9.0f}")
        print()
    print("target: >= 1,000,000 events/s through PolygonSession.feed on one core for 100-event frames")


if __name__ == "__main__":
    main()
