"""What every benchmark script shares: sizes per mode, the figures it reports, the
machine it ran on, CPU clocks, and the sender process.

Each script takes ``--smoke`` (a few thousand rows, seconds: what the test suite runs),
``--quick`` (the ``python -m bench --quick`` sizes) or neither (the full sizes), and
``--json FILE`` to write its figures for ``python -m bench``. It prints its own detailed
lines as it goes, and ends with its figures (:meth:`Report.print`).

A figure is wrdata's value beside the floor measured in the same run (what the same
work costs with nothing of wrdata in the way) and, where one exists, a peer measured in
the same run; ``target`` is the issue's target, when it has one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODES = ("smoke", "quick", "full")


def add_mode_args(ap: argparse.ArgumentParser) -> None:
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--smoke", action="store_const", dest="mode", const="smoke", help="seconds: a few thousand rows (tests)")
    g.add_argument("--quick", action="store_const", dest="mode", const="quick", help="the quick suite's sizes")
    ap.set_defaults(mode="full")
    ap.add_argument("--json", dest="json_out", metavar="FILE", help="write the figures as JSON")
    ap.add_argument("--no-peers", action="store_true", help="do not run the peers (their own interpreter)")


def pick(mode: str, smoke, quick, full):
    return {"smoke": smoke, "quick": quick, "full": full}[mode]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def interpreter() -> str:
    return f"{platform.python_implementation()} {platform.python_version()}"


def machine() -> str:
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs ({cpu_model()})"


def load() -> str:
    a, b, c = os.getloadavg()
    return f"{a:.2f} {b:.2f} {c:.2f}"


def header(title: str, mode: str) -> None:
    print(f"# {title} [{mode}]")
    print(f"# {interpreter()} on {machine()}; load average {load()}", flush=True)


def process_cpu() -> float:
    """CPU seconds of this process, every thread, user + system."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def median(xs):
    return statistics.median(xs) if xs else None


def pin(cpu: int | None) -> int | None:
    """Run this process (every thread) on one CPU; returns the CPU, None if not possible."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return None
    try:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            return None
        c = cpus[cpu % len(cpus)]
        os.sched_setaffinity(0, {c})
        return c
    except OSError:
        return None


def unpin() -> None:
    if hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, range(os.cpu_count() or 1))
        except OSError:
            pass


# -- the sender process ------------------------------------------------------------------


class Sender:
    """``bench/sender.py`` in its own process: frames of ``kind`` to every client."""

    def __init__(self, n: int, kind: str = "trade", rate: float = 0, cpu: int | None = None) -> None:
        cmd = [sys.executable, str(ROOT / "bench" / "sender.py"), "--kind", kind, "--frames", str(n)]
        if rate:
            cmd += ["--rate", str(rate)]
        if cpu is not None and hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) > 1:
            cmd = ["taskset", "-c", str(sorted(os.sched_getaffinity(0))[cpu % len(os.sched_getaffinity(0))])] + cmd
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("ws://"):
            self.close()
            raise RuntimeError(f"the sender did not start: {self.url!r}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- figures ------------------------------------------------------------------------------


@dataclass
class Figure:
    group: str  # the section of the table: receive, capture, live, storage, replay, queries
    name: str
    unit: str  # what value, floor and peer are in ("msgs/s per CPU-s", "ms", "B/trade")
    value: float | None
    floor: float | None = None
    floor_what: str = ""  # exactly what the floor is
    peer: float | None = None
    peer_what: str = ""  # exactly what was measured for the peer, or "not measured: <why>"
    target: str = ""  # the target, in words ("≥ 300k", "< 3 s", "≥ 75% of floor")
    met: bool | None = None  # against the target; None when there is none or no value
    lower_is_better: bool = False
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.floor:
            return None
        return self.value / self.floor


@dataclass
class Report:
    script: str
    mode: str
    rows: str = ""  # what was processed ("1,000,000 frames x 3 runs")
    figures: list[Figure] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    def add(self, *args, **kw) -> Figure:
        f = Figure(*args, **kw)
        self.figures.append(f)
        return f

    def to_json(self) -> dict:
        return {
            "script": self.script,
            "mode": self.mode,
            "rows": self.rows,
            "python": interpreter(),
            "machine": machine(),
            "load_end": load(),
            "seconds": round(time.time() - self.started, 1),
            "figures": [dict(asdict(f), ratio=f.ratio) for f in self.figures],
        }

    def finish(self, json_out: str | None) -> None:
        print(f"\n# {self.script}: {self.rows}; {interpreter()}; {machine()}; load {load()}")
        print_table([dict(asdict(f), ratio=f.ratio) for f in self.figures])
        if json_out:
            Path(json_out).write_text(json.dumps(self.to_json(), indent=1))


# -- formatting -------------------------------------------------------------------------------


def fmt(v: float | None, unit: str = "") -> str:
    if v is None:
        return "—"
    a = abs(v)
    if unit.startswith("ms") or unit.startswith("µs") or unit.startswith("B/") or unit in ("%", "ms", "s"):
        if a >= 100:
            return f"{v:,.0f}"
        if a >= 10:
            return f"{v:.1f}"
        return f"{v:.2f}"
    if a >= 1e6:
        return f"{v / 1e6:.2f}M"
    if a >= 1e4:
        return f"{v / 1e3:.0f}k"
    if a >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def print_table(figs: list[dict], out=None) -> None:
    out = out or sys.stdout
    cols = ["figure", "unit", "wrdata", "floor", "ratio", "peer", "target", "met"]
    rows = []
    notes: list[str] = []
    def ref(text: str) -> int:
        # identical notes (the same floor for several figures) share one number
        if text not in notes:
            notes.append(text)
        return notes.index(text) + 1

    for f in figs:
        ratio = f.get("ratio")
        refs = []
        if f.get("floor_what"):
            refs.append(ref(f"floor: {f['floor_what']}"))
        peer = fmt(f["peer"], f["unit"]) if f.get("peer") is not None else ("n/m" if f.get("peer_what") else "")
        if f.get("peer_what"):
            refs.append(ref(f"peer: {f['peer_what']}"))
        if f.get("note"):
            refs.append(ref(f["note"]))
        met = {True: "yes", False: "NO", None: ""}[f.get("met")]
        name = f["name"] + (" [" + ",".join(map(str, refs)) + "]" if refs else "")
        rows.append([name, f["unit"], fmt(f["value"], f["unit"]), fmt(f.get("floor"), f["unit"]) if f.get("floor") is not None else "",
                     f"{ratio:.0%}" if ratio is not None else "", peer, f.get("target", ""), met])
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)]
    widths[0] = min(widths[0], 64)

    def line(cells):
        parts = []
        for i, c in enumerate(cells):
            w = widths[i]
            parts.append(c.ljust(w) if i in (0, 1, 6, 7) else c.rjust(w))
        return "  ".join(parts).rstrip()

    print(line(cols), file=out)
    print(line(["-" * w for w in widths]), file=out)
    group = None
    for f, r in zip(figs, rows):
        if f.get("group") != group:
            group = f.get("group")
            print(f"[{group}]", file=out)
        print(line(r), file=out)
    if notes:
        print("", file=out)
        for i, n in enumerate(notes, 1):
            print(f"  [{i}] {n}", file=out)
    out.flush()
