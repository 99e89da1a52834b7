"""The peers: other projects measured beside wrdata in the same run, in their own venv.

``bench/.peers/py313`` (gitignored) is created on first use with a CPython ≥ 3.13
(cryptofeed 3.x needs it; ``WRDATA_BENCH_PEER_PYTHON`` names one, else pyenv's or
``python3.13`` on PATH) and the peers installed into it from the package index:
``cryptofeed`` and ``nautilus_trader``. They are never dependencies of wrdata. The
scripts in this folder run under that interpreter and import nothing of wrdata (only
``bench/frames.py``, standard library), and print one JSON line.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = HERE.parent / ".peers" / "py313"
PACKAGES = ["cryptofeed==3.0.1", "nautilus_trader==1.231.0"]


def _find_base_python() -> str | None:
    env = os.environ.get("WRDATA_BENCH_PEER_PYTHON")
    if env:
        return env
    cands = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.1[3-9]*/bin/python")), reverse=True)
    for name in ("python3.13", "python3.14"):
        p = shutil.which(name)
        if p:
            cands.append(p)
    return cands[0] if cands else None


def peer_python(install: bool = True) -> tuple[str | None, str]:
    """(the peers' interpreter, '') or (None, why not)."""
    py = VENV / "bin" / "python"
    marker = VENV / ".installed"
    if py.exists() and marker.exists() and marker.read_text().split() == PACKAGES:
        return str(py), ""
    if not install:
        return None, "the peers' venv (bench/.peers/py313) is not set up and installing was not allowed"
    base = _find_base_python()
    if base is None:
        return None, "no CPython >= 3.13 found (cryptofeed 3 needs it; set WRDATA_BENCH_PEER_PYTHON)"
    print(f"# setting up the peers' venv {VENV} with {base}: {' '.join(PACKAGES)} (first use only)", file=sys.stderr, flush=True)
    try:
        if not py.exists():
            subprocess.run([base, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *PACKAGES], check=True)
    except (subprocess.CalledProcessError, OSError) as e:
        return None, f"installing the peers failed: {e}"
    marker.write_text(" ".join(PACKAGES))
    return str(py), ""


def run_peer(script: str, *args: str, timeout: float = 600, install: bool = True) -> tuple[dict | None, str]:
    """Run ``bench/peers/<script>`` under the peers' interpreter: (its JSON result, '') or (None, why)."""
    py, why = peer_python(install)
    if py is None:
        return None, why
    try:
        p = subprocess.run([py, str(HERE / script), *args], capture_output=True, text=True, timeout=timeout,
                           cwd=str(HERE.parent.parent))
    except subprocess.TimeoutExpired:
        return None, f"{script} did not finish in {timeout:.0f} s"
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or ["no output"]
        return None, f"{script} failed (exit {p.returncode}): {tail[0][:200]}"
    return json.loads(lines[-1]), ""
