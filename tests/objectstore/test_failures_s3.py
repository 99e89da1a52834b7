"""Crashes and bad input with an S3 root: a daemon killed while uploads were failing,
a bucket that does not exist, wrong credentials, an endpoint that does not answer. Each
is one clear line (exit status 2), and nothing already recorded is lost."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys

import pyarrow.compute as pc
import pytest
from click.testing import CliRunner
from s3_helpers import SECRET_KEY, subprocess_env, trade, wait_for

from wrdata.cli import main
from wrdata.sim.binance import BinanceSimulator
from wrdata.sim.proxy import ThreadedTcpProxy
from wrdata.storage import DatasetWriter, list_segments, read_journal, read_table
from wrdata.storage.fs import default_journal_dir


def _capture_args(root: str, sim_url: str, s3_endpoint: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "wrdata.cli", "capture", "binance:BTCUSDT,ETHUSDT", "--kinds", "trade", "--root", root,
            "--s3-endpoint", s3_endpoint, "--endpoint", f"binance={sim_url}", "--flush-interval", "0.2", "--roll-interval", "1",
            "--status", "log", *extra]


def _ids(t, sym: str) -> list[int]:
    return t.filter(pc.equal(t.column("symbol").cast("string"), sym)).column("trade_id").to_pylist()


async def test_sigkill_with_uploads_pending_then_restart_uploads_everything_once(s3, tmp_path):
    """A real `wrdata capture` process records into the bucket through a proxy; the store
    becomes unreachable (seals fail, the journal keeps growing), the process is killed;
    the restart (reaching the store directly: the journal is found by the root, not the
    endpoint) uploads what the journal held, and every trade is in the bucket once."""
    bucket = s3.new_bucket()
    root = f"s3://{bucket}/md"
    host, port = s3.endpoint.rsplit("/", 1)[1].split(":")
    proxy = ThreadedTcpProxy(host, int(port))
    env = subprocess_env(tmp_path)  # no AWS_ENDPOINT_URL*: --s3-endpoint is what names the store
    sim = BinanceSimulator(seed=4, rate=300)
    await sim.start()
    try:
        p1 = await asyncio.create_subprocess_exec(*_capture_args(root, sim.url, proxy.url("http")), env=env,
                                                  stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        await sim.wait_for_connections(1, timeout=30)
        await asyncio.to_thread(wait_for, lambda: s3.keys(f"{bucket}/md/trades"), 30)  # uploads work
        proxy.down()
        jdir = default_journal_dir(root)
        # wait until a rolled segment could not be uploaded (the daemon logs it), then kill
        err = b""
        while b"sealing" not in err or b"failed" not in err:
            err += await asyncio.wait_for(p1.stderr.readline(), 60)
        p1.send_signal(signal.SIGKILL)
        await p1.wait()
        pending = read_journal(jdir, "trades")
        assert pending.num_rows, "the killed process left rows in its journal"
        closed = [s for s in list_segments(jdir, "trades") if s.n > 0]
        assert closed, "and segments it had closed but could not upload"
        before = read_table(root, "trades", journal=False)
        proxy.up()
        p2 = await asyncio.create_subprocess_exec(*_capture_args(root, sim.url, s3.endpoint, "--duration", "1"), env=env,
                                                  stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err2 = await p2.communicate()
        assert p2.returncode == 0, err2.decode()[-3000:]
        assert SECRET_KEY.encode() not in err + err2, "credentials are never logged"
    finally:
        await sim.stop()
        proxy.close()
    assert not list_segments(jdir), "the restart uploaded and removed every leftover segment"
    trades = read_table(root, "trades", journal=False)
    writers = sorted(set(trades.column("writer").cast("string").to_pylist()))
    assert len(writers) == 2
    first = trades.filter(pc.equal(trades.column("writer").cast("string"), pending.column("writer").cast("string")[0]))
    for sym in ("BTCUSDT", "ETHUSDT"):
        ids = _ids(trades, sym)
        assert len(ids) == len(set(ids)), "every trade once"
        got = _ids(first, sym)
        assert set(_ids(pending, sym)) <= set(got), "what the journal held is in the bucket"
        assert set(_ids(before, sym)) <= set(got)
        assert got == list(range(got[0], got[0] + len(got))), "nothing of the killed writer is missing"
    reasons = [r or "" for r in read_table(root, "events", journal=False).column("reason").to_pylist()]
    assert any("stopped without sealing" in r for r in reasons), "the recovery is recorded"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


COMMANDS = [
    ["capture", "binance:BTCUSDT"],
    ["query", "SELECT count(*) FROM trades"],
    ["ls"],
    ["verify"],
    ["compact", "--date", "2024-08-09"],
    ["rebuild"],
    ["replay"],
    ["ohlcv", "BTCUSDT"],
]


def _run(args: list[str]):
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    lines = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
    return res.exit_code, lines


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: c[0])
def test_a_bucket_that_does_not_exist_is_one_line_and_exit_2(s3, cmd):
    code, errors = _run([*cmd, "--root", "s3://no-such-bucket-wrdata/md", "--s3-endpoint", s3.endpoint])
    assert code == 2
    assert errors == [f"Error: s3://no-such-bucket-wrdata/md: the bucket 'no-such-bucket-wrdata' does not exist at {s3.endpoint}"]


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: c[0])
def test_an_endpoint_that_does_not_answer_is_one_line_and_exit_2(s3, cmd):
    endpoint = f"http://127.0.0.1:{_free_port()}"
    code, errors = _run([*cmd, "--root", f"s3://{s3.new_bucket()}/md", "--s3-endpoint", endpoint])
    assert code == 2
    assert len(errors) == 1 and f"cannot reach the object store at {endpoint}" in errors[0], errors


def test_replay_serve_refuses_a_missing_bucket(s3):
    code, errors = _run(["replay", "serve", "binance", "--root", "s3://no-such-bucket-wrdata/md", "--s3-endpoint", s3.endpoint])
    assert code == 2 and len(errors) == 1 and "does not exist" in errors[0]


def test_s3_endpoint_needs_an_s3_root(s3, tmp_path):
    code, errors = _run(["ls", "--root", str(tmp_path), "--s3-endpoint", s3.endpoint])
    assert code == 2 and errors == [f"Error: --s3-endpoint needs an s3:// --root, not {str(tmp_path)!r}"]


def test_credentials_in_the_root_uri_are_refused_without_echoing_them(s3):
    code, errors = _run(["ls", "--root", "s3://AKIAX:topsecret@bucket/md", "--s3-endpoint", s3.endpoint])
    assert code == 2 and len(errors) == 1 and "topsecret" not in errors[0] and "not accepted" in errors[0]


def _leave_unsealed_journal(root: str) -> tuple[str, dict[str, int]]:
    """A writer whose uploads all failed and that closed anyway: its rows stay in the journal."""
    w = DatasetWriter(root, flush_interval=0.05, retry_interval=0.05)

    def refuse(op: str, path: str) -> None:
        if op == "seal.open":
            raise OSError("the store refused the upload")

    w.fs.fault = refuse
    w.start()
    w.on_messages([trade(i) for i in range(300)])
    w.close(timeout=0.5)
    segs = list_segments(w.journal_dir)
    assert segs
    return w.journal_dir, {s.path: s.size for s in segs}


def test_wrong_credentials_are_one_line_exit_2_and_the_journal_is_kept(s3, tmp_path, monkeypatch):
    import boto3
    from moto.core.authorization import enable_iam_authentication

    bucket = s3.new_bucket()
    root = f"s3://{bucket}/md"
    jdir, segs = _leave_unsealed_journal(root)
    # a real IAM user allowed s3:*, then the server checks every request's signature
    iam = boto3.client("iam", endpoint_url=s3.endpoint, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
    iam.create_user(UserName="capture")
    iam.put_user_policy(UserName="capture", PolicyName="s3", PolicyDocument='{"Version": "2012-10-17", "Statement": '
                        '[{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}')
    key = iam.create_access_key(UserName="capture")["AccessKey"]
    from wrdata.storage import remote

    with enable_iam_authentication():
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        for cmd in (["capture", "binance:BTCUSDT"], ["ls"], ["query", "SELECT 1"]):
            remote.clear_cache()
            code, errors = _run([*cmd, "--root", root, "--s3-endpoint", s3.endpoint])
            assert code == 2, cmd
            assert len(errors) == 1 and "access denied" in errors[0] and "not-the-secret" not in errors[0], errors
        remote.clear_cache()
        with pytest.raises(PermissionError, match="access denied"):
            DatasetWriter(root).start()
        assert {s.path: s.size for s in list_segments(jdir)} == segs, "the journal is untouched"
        # the right secret: the next writer uploads what the journal kept
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
        remote.clear_cache()
        w = DatasetWriter(root).start()
        assert w.wait_sealed(60)
        w.close()
        assert not list_segments(jdir)
        assert read_table(root, "trades").column("trade_id").to_pylist() == [trade(i).trade_id for i in range(300)]
