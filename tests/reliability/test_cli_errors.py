"""Bad configuration and arguments, for every command: a clear one-line error naming the
problem, exit status 2, no traceback, and nothing written.

tests/capture/test_capture.py and tests/queries/test_cli.py already try some cases
(an unknown provider or a bad interval for capture, bad dates for ls, verify and
compact, bad formats for query); this covers the rest of the matrix: unknown provider,
malformed symbol, bad TOML, unwritable or missing root, bad dates and empty time ranges,
for capture, replay, replay serve, query, ls, verify, compact, ohlcv, rebuild and sim.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from click.testing import CliRunner

from wrdata.cli import main
from wrdata.message import StreamMessage
from wrdata.storage import DatasetWriter

NOWHERE = "/nonexistent/wrdata-root"
DEAD = "binance=ws://127.0.0.1:9"  # a closed port: nothing here may reach a real venue


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """A small recording: binance trades and raw frames an hour ago."""
    root = tmp_path_factory.mktemp("cli") / "data"
    w = DatasetWriter(root, flush_interval=0.05, writer_id="rec").start()
    t0 = time.time_ns() - 3600 * 10**9
    w.on_messages([StreamMessage(provider="binance", symbol="BTCUSDT", kind="trade", ts_recv=t0 + i * 10**7, ts_event=t0 + i * 10**7,
                                 seq=i, price=100.0 + i, size=1.0, trade_id=i + 1, channel="trade") for i in range(50)])
    w.on_raw("binance", 1, 0, t0, "in", "ws://127.0.0.1:9/stream", b"{}")
    w.close()
    return root


def snapshot(root) -> dict[str, tuple[int, int]]:
    return {os.path.join(d, f): (os.stat(os.path.join(d, f)).st_size, os.stat(os.path.join(d, f)).st_mtime_ns)
            for d, _, fs in os.walk(root) for f in fs}


def check_usage_error(result_output: str, code: int, message: str) -> None:
    assert code == 2, result_output
    assert "Traceback" not in result_output, result_output
    errors = [ln for ln in result_output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0], result_output  # one line, naming the problem


def toml(tmp_path, text: str) -> str:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return str(p)


CAPTURE = [  # (args, message); {toml} is replaced by a config file with the given text
    (["binance:"], "no symbol after the provider"),
    (["binance:BTC USDT"], "malformed symbol 'BTC USDT'"),
    (["nosuch:BTCUSDT"], "unknown provider 'nosuch'"),
    (["BTCUSDT", "--kinds", "tick"], "unknown kind 'tick'"),
    (["BTCUSDT", "--flush-interval", "0"], "flush_interval must be positive"),
    (["--config", "[providers.nosuch]\nsymbols = ['X']\n"], "unknown provider 'nosuch'"),
    (["--config", "[providers.binance\nsymbols = ["], "bad TOML"),
    (["--config", "[providers.binance]\nsymbols = ['BTC USDT']\n"], "malformed symbol"),
    (["--config", "[providers.binance]\nsymbols = [1, 2]\n"], "symbols must be strings"),
    (["--config", "[providers.binance]\nsymbols = ['BTCUSDT']\n[storage]\nflush_interval = 'fast'\n"], "flush_interval must be a number"),
    (["--config", "root = 5\n[providers.binance]\nsymbols = ['BTCUSDT']\n"], "root must be a string"),
    (["--config", "[providers.binance]\nsymbols = ['BTCUSDT']\noptions = { silence_timeout = 'x' }\n"], "option silence_timeout must be"),
    (["--config", "[providers.binance]\nsymbols = ['BTCUSDT']\noptions = { nosuch = 1 }\n"], "unknown option 'nosuch'"),
]


@pytest.mark.parametrize("args, message", CAPTURE, ids=[m for _, m in CAPTURE])
def test_capture(tmp_path, args, message):
    args = [toml(tmp_path, a) if i and args[i - 1] == "--config" else a for i, a in enumerate(args)]
    root = tmp_path / "root"
    r = CliRunner().invoke(main, ["capture", *args, "--root", str(root), "--endpoint", DEAD, "--duration", "5"])
    check_usage_error(r.output, r.exit_code, message)
    assert not root.exists(), "nothing written"


def _cases(rec: str, tmp: str) -> list[tuple[list[str], str]]:
    return [
        (["replay", "--root", rec, "--provider", "nosuch"], "unknown provider 'nosuch'"),
        (["replay", "--root", rec, "--symbols", "BTC USDT"], "malformed symbol"),
        (["replay", "--root", rec, "--start", "yesterday"], "bad time 'yesterday'"),
        (["replay", "--root", rec, "--start", "2026-11-24", "--end", "2026-11-23"], "empty time range"),
        (["replay", "--root", NOWHERE], "no recording at"),
        (["replay", "serve", "nosuch", "--root", rec], "no simulator for 'nosuch'"),
        (["replay", "serve", "binance", "--root", NOWHERE], "no recording at"),
        (["replay", "serve", "kraken", "--root", rec], "nothing recorded for kraken"),
        (["replay", "serve", "binance", "--root", rec, "--start", "nope"], "bad time 'nope'"),
        (["replay", "serve", "binance", "--root", rec, "--start", "2026-11-24", "--end", "2026-11-23"], "empty time range"),
        (["query", "--root", NOWHERE, "SELECT 1"], "no recording at"),
        (["ls", "--root", rec, "--provider", "nosuch"], "unknown provider 'nosuch'"),
        (["ls", "--root", NOWHERE], "no recording at"),
        (["verify", "--root", rec, "--provider", "nosuch"], "unknown provider 'nosuch'"),
        (["verify", "--root", NOWHERE], "no recording at"),
        (["compact", "--root", rec, "--date", "2026-11-25", "--provider", "nosuch"], "unknown provider 'nosuch'"),
        (["compact", "--root", NOWHERE, "--date", "2026-11-25"], "no recording at"),
        (["ohlcv", "nosuch:BTCUSDT", "--root", rec], "unknown provider 'nosuch'"),
        (["ohlcv", "BTC USDT", "--root", rec], "malformed symbol"),
        (["ohlcv", "BTCUSDT", "--root", rec, "--start", "2026-11-25", "--end", "2026-11-24"], "empty time range"),
        (["rebuild", "--root", rec, "--provider", "nosuch"], "unknown provider 'nosuch'"),
        (["rebuild", "--root", NOWHERE], "no recording at"),
        (["sim", "nosuch"], "No such command 'nosuch'"),
        (["sim", "binance", "--port", "99999"], "99999 is not in the range"),
        (["sim", "binance", "--symbols", "BTC USDT"], "malformed symbol"),
        (["sim", "binance", "--rate", "-5"], "rate must be positive"),
    ]


def test_every_other_command(recording, tmp_path):
    """In process (click's runner), one case after another; the recording is unchanged."""
    before = snapshot(recording)
    failures = []
    for args, message in _cases(str(recording), str(tmp_path)):
        r = CliRunner().invoke(main, args)
        try:
            check_usage_error(r.output, r.exit_code, message)
        except AssertionError as e:
            failures.append(f"{' '.join(args)}: {e}")
    assert not failures, "\n".join(failures)
    assert snapshot(recording) == before, "nothing written"


def test_commands_that_write_refuse_an_unwritable_root(recording, tmp_path):
    """compact and rebuild say so before they change anything (a read-only root)."""
    import shutil

    ro = tmp_path / "ro"
    shutil.copytree(recording, ro)
    if os.geteuid() == 0:  # permissions do not stop root: a read-only bind mount does
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        if subprocess.run(["mount", "--bind", "-o", "ro", str(ro), str(mnt)], capture_output=True).returncode != 0:
            pytest.skip("running as root without permission to mount a read-only view")
        target = mnt
    else:
        for d, _, _ in os.walk(ro):
            os.chmod(d, 0o555)
        target = ro
    try:
        before = snapshot(target)
        date = next((ro / "trades" / "provider=binance").iterdir()).name.split("=", 1)[1]
        for args in (["compact", "--root", str(target), "--date", date], ["rebuild", "--root", str(target)]):
            r = CliRunner().invoke(main, args)
            check_usage_error(r.output, r.exit_code, "cannot write to")
        assert snapshot(target) == before
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(target)], capture_output=True)
        else:
            for d, _, _ in os.walk(ro):
                os.chmod(d, 0o755)
