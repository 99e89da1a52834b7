"""The benchmark suite runs end to end in its smoke mode and prints its table.

No figure is checked (speed is measured by bench/, never asserted in tests): only that
every script runs, reports its figures, and that ``python -m bench`` prints one table
and writes the same as JSON. The peers (their own interpreter) are left out.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_suite_smoke(tmp_path):
    out = tmp_path / "suite.json"
    p = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--no-peers", "--json", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    text = p.stdout
    assert "figure" in text and "wrdata" in text and "floor" in text and "peer" in text, text[-2000:]
    suite = json.loads(out.read_text())
    from bench.run import SCRIPTS

    by_script = {r["script"]: r for r in suite["scripts"]}
    assert set(by_script) == set(SCRIPTS)
    for name, r in by_script.items():
        assert not r.get("failed"), (name, r.get("failed"))
        assert r["figures"], name
        for f in r["figures"]:
            assert f["name"] in text  # every figure is in the printed table
            assert f["value"] is not None, (name, f["name"])
    # a peer that is not run says why
    peered = [f for r in suite["scripts"] for f in r["figures"] if f["peer_what"]]
    assert peered and all(f["peer_what"].startswith("not measured: ") for f in peered)
