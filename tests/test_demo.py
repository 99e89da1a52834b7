"""The README's quick start: `wrdata demo` streams, captures, queries and replays offline."""

from __future__ import annotations

import re
import subprocess
import sys


def test_demo_runs_every_step_offline(tmp_path):
    root = tmp_path / "rec"
    p = subprocess.run([sys.executable, "-m", "wrdata.cli", "demo", "--seconds", "1", "--root", str(root)],
                       capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    out = p.stdout
    for step in ("1. simulators:", "2. streaming live trades", "3. capturing", "4. querying", "5. replaying"):
        assert step in out
    streamed = int(re.search(r"\.\.\. (\d+) trades", out).group(1))
    assert streamed > 0
    assert re.search(r"trades\s+binance\s+1\s+\d+", out), "the capture wrote binance trades"
    assert "O=" in out, "DuckDB computed bars from the recording"
    replayed = int(re.search(r"replayed (\d+) trades", out).group(1))
    assert replayed > 0
    assert list(root.glob("trades/provider=binance/date=*/*.parquet"))
