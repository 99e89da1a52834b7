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

    python -m bench.polygon_parse [--smoke|--quick] [--frames 2000] [--repeat 5] [--json FILE]
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import time  # noqa: E402

import msgspec  # noqa: E402
import orjson  # noqa: E402

from bench.common import Report, add_mode_args, header, pick  # noqa: E402
from bench.frames import polygon_frames as frames  # noqa: E402  (the frames moved to bench/frames.py)
from wrdata.streaming import polygon  # noqa: E402
from wrdata.streaming.polygon import PolygonVenue  # noqa: E402


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


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_mode_args(ap)
    ap.add_argument("--frames", type=int, default=None, help="frames per data set (100 events each; default 2000)")
    ap.add_argument("--repeat", type=int, default=None)
    args = ap.parse_args(argv)
    args.frames = args.frames or pick(args.mode, 50, 1000, 2000)
    args.repeat = args.repeat or pick(args.mode, 1, 3, 5)
    header("Polygon 100-event frames, parsed on one core", args.mode)
    rep = Report("polygon_parse", args.mode, f"{args.frames:,} frames x 100 events per data set, best of {args.repeat}")

    session = PolygonVenue(credentials={"key": "bench"}).session(1, ["T.*"])
    typed = polygon._frame.decode
    bare = msgspec.json.decode
    seq = [0]

    def feed(f: bytes) -> None:
        seq[0] += 1
        session.feed(f, 1_764_000_000_000_000_000, seq[0])

    print(f"python {sys.version.split()[0]} ({platform.python_implementation()}), msgspec {msgspec.__version__}, "
          f"orjson {orjson.__version__}")
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
        got = {}
        for label, fn in rows:
            wall, cpu = measure(fn, data, events, args.repeat)
            got[label] = cpu
            print(f"{kind:<10} {size:>11.1f}  {label:<44} {wall:>12,.0f} {cpu:>12,.0f} {1e9 / cpu:>9.0f}")
        print()
        v = got["PolygonSession.feed -> StreamMessage"]
        rep.add("receive", f"parse only, Polygon 100-event frames, {kind}", "events/CPU-s", v,
                got["msgspec.json.decode (untyped), the floor"], "msgspec.json.decode (untyped) of the same frames",
                target="≥ 1M on 1 core", met=v >= 1_000_000,
                note=f"orjson.loads {got['orjson.loads']:,.0f}/s; typed decode alone {got['typed one-pass decode only (no messages)']:,.0f}/s")
    print("target: >= 1,000,000 events/s through PolygonSession.feed on one core for 100-event frames")
    rep.finish(args.json_out)


if __name__ == "__main__":
    main()
