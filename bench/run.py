"""The benchmark suite: every script in one process tree, one table.

    python -m bench                 # full sizes (~10-15 min on 2 cores; the first run also
                                    # generates the 100M-trade query recording, ~4 min, kept)
    python -m bench --quick         # under two minutes
    python -m bench --smoke         # seconds: checks that everything runs (the test suite)
    python -m bench --json FILE     # the same table as JSON
    python -m bench --only receive,replay --no-peers

Each script runs in its own subprocess (``python -m bench.<script> --<mode> --json
<tmp>``), one after the other, so none disturbs another's figures; its detailed output
goes to ``bench/results/<mode>-<time>/<script>.log`` (``-v`` prints it as well). The
table: each figure, wrdata's value, the floor measured in the same run (what the same
work costs with nothing of wrdata in the way), their ratio, the peer measured in the
same run where one exists, and the target from the issues; then what each floor and
peer was exactly. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import interpreter, load, machine, print_table

HERE = Path(__file__).resolve().parent
# in the order they run; objectstore needs moto (the test extra), the peers their own venv
SCRIPTS = ["receive", "polygon_parse", "capture", "live", "storage_size", "storage_recorder", "catalog", "replay", "objectstore", "queries"]
PEERS = {"receive", "catalog"}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--smoke", action="store_const", dest="mode", const="smoke")
    g.add_argument("--quick", action="store_const", dest="mode", const="quick")
    ap.set_defaults(mode="full")
    ap.add_argument("--json", dest="json_out", metavar="FILE")
    ap.add_argument("--only", help=f"comma-separated scripts ({', '.join(SCRIPTS)})")
    ap.add_argument("--skip", help="comma-separated scripts not to run")
    ap.add_argument("--no-peers", action="store_true", help="do not run (or install) the peers")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every script's own output too")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per script")
    args = ap.parse_args(argv)
    scripts = [s for s in SCRIPTS if not args.only or s in args.only.split(",")]
    scripts = [s for s in scripts if not args.skip or s not in args.skip.split(",")]
    mode = args.mode
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logdir = Path(tempfile.mkdtemp(prefix="wrdata-bench-")) if mode == "smoke" else HERE / "results" / f"{mode}-{stamp}"
    logdir.mkdir(parents=True, exist_ok=True)
    load_start = load()
    t_start = time.time()
    print(f"# wrdata benchmark suite [{mode}] {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"# {interpreter()} on {machine()}; load average at start {load_start}")
    print(f"# logs: {logdir}", flush=True)
    if not args.no_peers and any(s in PEERS for s in scripts) and mode != "smoke":
        from bench.peers import peer_python

        py, why = peer_python()  # installs them on first use, before any clock starts
        print(f"# peers: {py or 'not measured: ' + why}", flush=True)
    results = []
    for s in scripts:
        out = logdir / f"{s}.json"
        cmd = [sys.executable, "-m", f"bench.{s}", "--json", str(out)]
        if mode != "full":
            cmd.append(f"--{mode}")
        if args.no_peers or mode == "smoke":
            cmd.append("--no-peers")
        t0 = time.time()
        with open(logdir / f"{s}.log", "w") as log:
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=str(HERE.parent),
                                 env={**os.environ, "PYTHONUNBUFFERED": "1"})
            try:
                for line in p.stdout:
                    log.write(line)
                    if args.verbose:
                        sys.stdout.write("  | " + line)
                p.wait(args.timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        took = time.time() - t0
        if p.returncode == 0 and out.exists():
            r = json.loads(out.read_text())
            results.append(r)
            print(f"  {s:<18} {took:6.1f} s  {r['rows']}", flush=True)
        else:
            tail = (logdir / f"{s}.log").read_text().strip().splitlines()[-1:] or ["no output"]
            why = f"exit {p.returncode}: {tail[0][:160]}"
            results.append({"script": s, "mode": mode, "rows": "", "failed": why, "figures": []})
            print(f"  {s:<18} {took:6.1f} s  NOT MEASURED ({why})", flush=True)
    total = time.time() - t_start
    figs = [f for r in results for f in r["figures"]]
    print(f"\n# {len(figs)} figures from {len(results)} scripts in {total:.0f} s; load average at start {load_start}, at end {load()}")
    print(f"# {interpreter()} on {machine()}\n")
    print_table(figs)
    failed = [r for r in results if r.get("failed")]
    if failed:
        print("\nnot measured:")
        for r in failed:
            print(f"  {r['script']}: {r['failed']} (log: {logdir / (r['script'] + '.log')})")
    summary = {
        "mode": mode, "started": t_start, "seconds": round(total, 1), "python": interpreter(), "machine": machine(),
        "load_start": load_start, "load_end": load(), "scripts": results,
    }
    (logdir / "suite.json").write_text(json.dumps(summary, indent=1))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(summary, indent=1))
    if mode == "smoke" and not args.json_out:
        import shutil

        shutil.rmtree(logdir, ignore_errors=True)
    if failed and mode == "smoke":
        sys.exit(1)


if __name__ == "__main__":
    main()
