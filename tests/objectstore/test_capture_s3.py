"""Capture into an S3 bucket: seal, upload under a temporary key, move; the journal stays
local and keeps what could not be uploaded; credentials are never logged or stored."""

from __future__ import annotations

import logging
import os

import pyarrow.compute as pc
from s3_helpers import SECRET_KEY, capture_config, trade, wait_for

from wrdata.capture.daemon import CaptureDaemon
from wrdata.sim.binance import BinanceSimulator
from wrdata.storage import list_sealed, list_segments, read_table
from wrdata.storage.fs import default_journal_dir

TABLES = ("trades", "quotes", "events", "raw")


def _count(t, sym: str) -> int:
    return pc.sum(pc.equal(t.column("symbol").cast("string"), sym)).as_py() or 0


async def test_capture_seals_and_uploads_every_row_into_the_bucket(s3, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    bucket = s3.new_bucket()
    root = f"s3://{bucket}/md"
    sim = BinanceSimulator(seed=1, rate=300)
    await sim.start()
    try:
        cfg = capture_config(root, sim, s3.endpoint)
        cfg.storage.roll_interval = 1.0  # several sealed files per partition
        assert await CaptureDaemon(cfg, duration=2.5, status="none").run() == 0
        sent = dict(sim.sent_by_stream)
    finally:
        await sim.stop()
    keys = s3.keys(f"{bucket}/md")
    names = [k.rsplit("/", 1)[1] for k in keys]
    # only final keys: every temporary upload was moved, nothing partial is left
    assert names and not [n for n in names if n.startswith(".")], names
    for t in TABLES:
        assert any(k.startswith(f"{bucket}/md/{t}/provider=binance/date=20") for k in keys), t
    assert not [k for k in keys if "/_wrdata/" in k], "the start-up write check cleans up after itself"
    # the journal was local (derived from the root, under XDG_STATE_HOME) and is empty now
    jdir = default_journal_dir(root)
    assert jdir.startswith(str(tmp_path / "state")) and os.path.isdir(jdir)
    assert not list_segments(jdir)
    # every frame received is in the bucket once, and parsed into one row each: trade ids
    # contiguous from the first to the last one received (frames the simulator sent while
    # the daemon was closing its connection never arrived: not the storage's concern)
    trades = read_table(root, "trades")
    quotes = read_table(root, "quotes")
    raw = read_table(root, "raw")
    payloads = [p for p, d in zip(raw.column("payload").to_pylist(), raw.column("direction").cast("string").to_pylist()) if d == "in"]
    for sym in ("BTCUSDT", "ETHUSDT"):
        ids = trades.filter(pc.equal(trades.column("symbol").cast("string"), sym)).column("trade_id").to_pylist()
        assert ids == list(range(ids[0], ids[0] + len(ids))), "no trade missing or repeated"
        assert sent[f"{sym.lower()}@trade"] / 2 < len(ids) <= sent[f"{sym.lower()}@trade"], "the whole run is there"
        assert len(ids) == sum(f'"{sym.lower()}@trade"'.encode() in p for p in payloads)
        assert _count(quotes, sym) == sum(f'"{sym.lower()}@bookTicker"'.encode() in p for p in payloads) > 0
    assert len(list_sealed(root, "trades")) >= 2
    # credentials: in no log record, in no recorded byte
    assert SECRET_KEY not in caplog.text
    assert os.environ["AWS_ACCESS_KEY_ID"] not in caplog.text
    for k in keys:
        data = s3.read_bytes(k)
        assert SECRET_KEY.encode() not in data and os.environ["AWS_ACCESS_KEY_ID"].encode() not in data, k
    for dirpath, _, files in os.walk(tmp_path / "state"):  # the local journal's directory (locks included)
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                assert SECRET_KEY.encode() not in f.read(), name


def test_a_failed_upload_stays_in_the_journal_and_is_retried_until_it_succeeds(s3, tmp_path):
    """The store goes away (a real outage: connections reset in front of the S3 server):
    sealing fails, the segment stays in the local journal, no object appears; when the
    store is back the upload is retried and every row arrives once."""
    from wrdata.sim.proxy import ThreadedTcpProxy
    from wrdata.storage import DatasetWriter, open_filesystem

    host, port = s3.endpoint.rsplit("/", 1)[1].split(":")
    proxy = ThreadedTcpProxy(host, int(port))
    try:
        bucket = s3.new_bucket()
        root = f"s3://{bucket}/md"
        fs, _ = open_filesystem(root, s3_endpoint=proxy.url("http"))
        w = DatasetWriter(root, filesystem=fs, flush_interval=0.05, retry_interval=0.1).start()
        proxy.down()
        msgs = [trade(i) for i in range(500)]
        w.on_messages(msgs)
        assert w.flush(10), "the journal is local: flushing does not need the store"
        w.roll(timeout=0.1)  # closes the segments; sealing them fails while the store is away
        wait_for(lambda: w.stats.failing, 60)
        assert "seal" in (w.stats.last_error or "")
        assert list_segments(w.journal_dir, "trades"), "the segment is kept"
        assert not s3.keys(f"{bucket}/md/trades"), "nothing reached the bucket"
        proxy.up()
        assert w.wait_sealed(timeout=30)
        w.close()
    finally:
        proxy.close()
    assert not list_segments(w.journal_dir)
    names = [k.rsplit("/", 1)[1] for k in s3.keys(f"{bucket}/md")]
    assert not [n for n in names if n.startswith(".")]
    # (read straight from the server: the proxy is gone)
    assert read_table(root, "trades").column("trade_id").to_pylist() == [m.trade_id for m in msgs]
    reasons = [r or "" for r in read_table(root, "events").column("reason").to_pylist()]
    assert any("sealing trades failed" in r for r in reasons) and any("resumed" in r for r in reasons), reasons


def test_an_upload_failing_midway_leaves_no_object_under_any_name(s3):
    """pyarrow completes an S3 upload when its stream is closed, even after an error; a
    seal that fails while writing must leave neither a final nor a temporary object."""
    import errno

    from wrdata.storage import DatasetWriter

    bucket = s3.new_bucket()
    root = f"s3://{bucket}/md"
    w = DatasetWriter(root, flush_interval=0.05, retry_interval=0.1, row_group_rows=100)
    writes = {"n": 0}

    def fault(op: str, path: str) -> None:
        if op == "seal.write" and "/trades/" in path:
            writes["n"] += 1
            if writes["n"] == 3:  # a few pages in: part of the file is already uploaded
                raise OSError(errno.EIO, "injected failure while uploading", path)

    w.fs.fault = fault
    w.start()
    msgs = [trade(i) for i in range(1000)]
    w.on_messages(msgs)
    w.roll(timeout=10)
    assert writes["n"] > 3, "the failed seal was retried"
    w.close()
    keys = s3.keys(f"{bucket}/md/trades")
    assert len(keys) == 1 and not keys[0].rsplit("/", 1)[1].startswith("."), keys
    assert read_table(root, "trades").column("trade_id").to_pylist() == [m.trade_id for m in msgs]
