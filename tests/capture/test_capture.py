"""The capture daemon against the Binance simulator: partitions, counts, crashes, rebuild."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import urllib.request
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from wrdata.capture.config import CaptureConfig, ConfigError, Target, load_config, parse_targets
from wrdata.capture.daemon import CaptureDaemon, shard
from wrdata.capture.rebuild import RebuildError, rebuild
from wrdata.capture.status import MetricsCollector
from wrdata.channels import parse_channels
from wrdata.sim.binance import BinanceSimulator
from wrdata.storage import DatasetWriter, list_segments, read_table

TABLES = ("trades", "quotes", "bars", "book", "events", "raw")


def capture_config(root, sim, symbols=("BTCUSDT", "ETHUSDT"), kinds="trade,quote,bar:1m,book:10") -> CaptureConfig:
    c = CaptureConfig(targets=[Target("binance", list(symbols), parse_channels(kinds))], root=str(root), endpoints={"binance": sim.url})
    c.storage.flush_interval = 0.2
    return c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_bounded_capture_records_every_frame_the_simulator_sent(tmp_path):
    sim = BinanceSimulator(seed=2, rate=300, kline_push_interval=0.3)
    async with sim:
        daemon = CaptureDaemon(capture_config(tmp_path, sim), duration=2.0, status="none")
        assert await daemon.run() == 0
        sent = dict(sim.sent_by_stream)
    # partitions: table/provider=binance/date=YYYY-MM-DD, every table, nothing left in the journal
    for t in TABLES:
        dirs = list((tmp_path / t).glob("provider=binance/date=*"))
        assert dirs, t
        assert all(d.name.startswith("date=20") for d in dirs)
    assert not list_segments(str(tmp_path / "_journal"), "trades")
    trades = read_table(str(tmp_path), "trades")
    quotes = read_table(str(tmp_path), "quotes")
    bars = read_table(str(tmp_path), "bars")
    for sym in ("BTCUSDT", "ETHUSDT"):
        s = sym.lower()
        n_trades = pc.sum(pc.equal(trades.column("symbol").cast("string"), sym)).as_py()
        assert n_trades == sent[f"{s}@trade"] > 0, "one row per trade the simulator sent"
        assert pc.sum(pc.equal(quotes.column("symbol").cast("string"), sym)).as_py() == sent[f"{s}@bookTicker"]
        assert pc.sum(pc.equal(bars.column("symbol").cast("string"), sym)).as_py() == sent[f"{s}@kline_1m"]
    # and the trades are the simulator's own tape
    tape = {t.trade_id: t for t in sim.market.trades("BTCUSDT")}
    spec = sim.market.spec("BTCUSDT")
    btc = trades.filter(pc.equal(trades.column("symbol").cast("string"), "BTCUSDT"))
    for tid, price, size in zip(btc.column("trade_id").to_pylist(), btc.column("price").to_pylist(), btc.column("size").to_pylist()):
        assert (price, size) == (spec.price(tape[tid].price), spec.qty(tape[tid].qty))
    raw = read_table(str(tmp_path), "raw")
    frames_in = pc.sum(pc.equal(raw.column("direction").cast("string"), "in")).as_py()
    assert frames_in >= sum(sent.values()), "raw keeps every frame received"
    # the events table tells the connection's story
    ev = read_table(str(tmp_path), "events").column("status").cast("string").to_pylist()
    assert ev[:2] == ["connected", "subscribed"] and "disconnected" in ev


async def test_rebuild_from_raw_reproduces_every_table_exactly(tmp_path):
    sim = BinanceSimulator(seed=6, rate=300, kline_push_interval=0.3)
    async with sim:
        cfg = capture_config(tmp_path, sim, kinds="trade,aggtrade,quote,bar:1m,book:10,book:5:partial")
        cfg.options["binance"] = {"backoff_initial": 0.05}
        daemon = CaptureDaemon(cfg, duration=2.5, status="none")
        task = asyncio.create_task(daemon.run())
        await asyncio.sleep(1.0)
        for c in list(sim.connections):  # an outage: events, gaps and a resync are rebuilt too
            c.drop()
        assert await task == 0
    before = {t: read_table(str(tmp_path), t) for t in TABLES[:-1]}
    assert before["book"].num_rows and before["events"].num_rows >= 5
    results = rebuild(str(tmp_path))
    assert results[0].frames > 0 and results[0].written
    after = {t: read_table(str(tmp_path), t) for t in TABLES[:-1]}
    for t in before:
        assert after[t].equals(before[t]), t
    # one file per table, provider, day and writer now
    assert len(list((tmp_path / "trades").glob("*/*/*.parquet"))) == 1


async def test_rebuild_refuses_a_dataset_still_being_written(tmp_path):
    sim = BinanceSimulator(seed=1, rate=100)
    async with sim:
        await CaptureDaemon(capture_config(tmp_path, sim, kinds="trade"), duration=0.8, status="none").run()
    sealed = next((tmp_path / "raw").glob("*/*/*.parquet"))
    writer = sealed.name.rsplit("-", 2)[0]
    seg_dir = tmp_path / "_journal" / "raw" / "provider=binance" / sealed.parent.name
    seg_dir.mkdir(parents=True, exist_ok=True)
    (seg_dir / f"{writer}-0.arrows").write_bytes(b"")  # as if that writer were still running
    with pytest.raises(RebuildError, match="journal segments"):
        rebuild(str(tmp_path))


async def _run_capture_process(root, url, *extra, duration=None):
    args = [sys.executable, "-m", "wrdata.cli", "capture", "binance:BTCUSDT,ETHUSDT", "--kinds", "trade,quote",
            "--root", str(root), "--endpoint", f"binance={url}", "--flush-interval", "0.2", "--status", "log", *extra]
    if duration:
        args += ["--duration", str(duration)]
    return await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def test_sigkill_then_restart_loses_at_most_the_last_flush(tmp_path):
    sim = BinanceSimulator(seed=8, rate=400)
    async with sim:
        p = await _run_capture_process(tmp_path, sim.url)
        await sim.wait_for_connections(1, timeout=20)
        await asyncio.sleep(2.0)
        p.send_signal(signal.SIGKILL)
        await p.wait()
        import time

        killed_ns = time.time_ns()
        assert list_segments(str(tmp_path / "_journal"), "trades"), "the killed process left its journal"
        # restart: leftovers are sealed first, then capture goes on
        p2 = await _run_capture_process(tmp_path, sim.url, duration=1.0)
        out, err = await p2.communicate()
        assert p2.returncode == 0, err.decode()[-2000:]
    assert not list_segments(str(tmp_path / "_journal"), "trades")
    for f in tmp_path.glob("*/*/*/*.parquet"):
        pq.read_table(f)  # every file readable
    trades = read_table(str(tmp_path), "trades")
    writers = set(trades.column("writer").cast("string").to_pylist())
    assert len(writers) == 2
    for sym in ("BTCUSDT", "ETHUSDT"):
        t = trades.filter(pc.equal(trades.column("symbol").cast("string"), sym))
        ids = t.column("trade_id").to_pylist()
        assert len(ids) == len(set(ids)), "no duplicate rows after recovery"
    # the first writer's trades are contiguous from its first id and end within a flush of the kill
    first_writer = min(writers, key=lambda w: pc.min(trades.filter(pc.equal(trades.column("writer").cast("string"), w)).column("ts_recv")).as_py())
    t1 = trades.filter(pc.equal(trades.column("writer").cast("string"), first_writer))
    last_ns = pc.max(t1.column("ts_recv")).as_py().value
    assert killed_ns - last_ns < 1.0e9, "at most the last flush interval (0.2 s, plus scheduling) is lost"
    for sym in ("BTCUSDT", "ETHUSDT"):
        ids = t1.filter(pc.equal(t1.column("symbol").cast("string"), sym)).column("trade_id").to_pylist()
        assert ids == list(range(ids[0], ids[0] + len(ids)))
    ev = read_table(str(tmp_path), "events")
    reasons = [r or "" for r in ev.column("reason").to_pylist()]
    assert any("recover" in r for r in reasons), "recovery is recorded as an event"


async def test_sigterm_seals_and_exits_zero(tmp_path):
    sim = BinanceSimulator(seed=3, rate=200)
    async with sim:
        p = await _run_capture_process(tmp_path, sim.url)
        await sim.wait_for_connections(1, timeout=20)
        await asyncio.sleep(1.0)
        p.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(p.communicate(), 30)
    assert p.returncode == 0, err.decode()[-2000:]
    assert not list_segments(str(tmp_path / "_journal"), "raw")
    assert read_table(str(tmp_path), "trades").num_rows > 0
    assert b"final: binance" in err


async def test_second_signal_exits_at_once_and_keeps_what_was_flushed(tmp_path):
    import time

    sim = BinanceSimulator(seed=5, rate=400)
    async with sim:
        p = await _run_capture_process(tmp_path, sim.url)
        await sim.wait_for_connections(1, timeout=20)
        await asyncio.sleep(1.5)  # several 0.2 s flushes
        # a venue that answers no close frame keeps the first signal's orderly stop busy
        # (up to 1 s per connection), so the second one comes in the middle of it
        sim.stall_all()
        p.send_signal(signal.SIGINT)
        await asyncio.sleep(0.3)
        p.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(p.communicate(), 30)
        signalled_ns = time.time_ns()
    assert p.returncode == 130, err.decode()[-2000:]
    assert b"second signal: exiting now" in err
    # what it flushed is in the journal or sealed; a writer started on the root seals the rest
    await asyncio.to_thread(lambda: DatasetWriter(str(tmp_path)).start().close())
    assert not list_segments(str(tmp_path / "_journal"), "trades")
    trades = read_table(str(tmp_path), "trades")
    assert trades.num_rows > 200
    assert signalled_ns - pc.max(trades.column("ts_recv")).as_py().value < 1.0e9, "at most the last flush is lost"
    for sym in ("BTCUSDT", "ETHUSDT"):
        ids = trades.filter(pc.equal(trades.column("symbol").cast("string"), sym)).column("trade_id").to_pylist()
        assert ids == list(range(ids[0], ids[0] + len(ids))), "no trade missing or repeated before the cut"


async def test_metrics_endpoint_serves_the_figures(tmp_path):
    port = free_port()
    sim = BinanceSimulator(seed=4, rate=200)
    async with sim:
        daemon = CaptureDaemon(capture_config(tmp_path, sim, kinds="trade"), duration=3.0, status="none", metrics_port=port)
        task = asyncio.create_task(daemon.run())
        await asyncio.sleep(1.5)
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode())
        await task
    assert 'wrdata_frames_received_total{provider="binance"}' in body
    assert 'wrdata_connections{provider="binance"} 1.0' in body
    assert 'wrdata_rows_written_total{provider="binance",table="trades"}' in body
    assert 'wrdata_messages_per_second{provider="binance"}' in body
    # after the run, the counters equal what was recorded: every frame received, every trade
    final = {(m.name, tuple(sorted(s.labels.items()))): s.value
             for m in MetricsCollector(daemon.stats, daemon.writer).collect() for s in m.samples}  # by family name
    raw = read_table(str(tmp_path), "raw")
    frames_in = pc.sum(pc.equal(raw.column("direction").cast("string"), "in")).as_py()
    assert frames_in > 100
    assert final[("wrdata_frames_received", (("provider", "binance"),))] == frames_in
    assert final[("wrdata_messages", (("provider", "binance"),))] >= read_table(str(tmp_path), "trades").num_rows
    assert 0 < final[("wrdata_storage_cpu_seconds", (("thread", "writer"),))] < 60
    assert 0 < final[("wrdata_storage_cpu_seconds", (("thread", "sealer"),))] < 60


async def test_workers_shard_symbols_over_processes(tmp_path):
    sim = BinanceSimulator(seed=7, rate=200)
    async with sim:
        p = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "wrdata.cli", "capture", "binance:BTCUSDT,ETHUSDT,BNBUSDT,SOLUSDT", "--root", str(tmp_path),
            "--endpoint", f"binance={sim.url}", "--workers", "2", "--duration", "1.5", "--flush-interval", "0.2",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(p.communicate(), 60)
    assert p.returncode == 0, err.decode()[-2000:]
    t = read_table(str(tmp_path), "trades")
    by_writer = {}
    for w, s in zip(t.column("writer").cast("string").to_pylist(), t.column("symbol").cast("string").to_pylist()):
        by_writer.setdefault(w, set()).add(s)
    assert len(by_writer) == 2
    a, b = by_writer.values()
    assert not a & b and a | b == {"BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT"}


def test_shard_keeps_symbols_whole():
    c = CaptureConfig(targets=[Target("binance", ["A", "B", "C"], parse_channels("trade,quote"))], root="x")
    shards = shard(c, 2)
    assert [sorted(s for t in sh.targets for s in t.symbols) for sh in shards] == [["A", "C"], ["B"]]
    assert all(t.kinds == parse_channels("trade,quote") for sh in shards for t in sh.targets)


def test_config_parsing_and_errors(tmp_path, monkeypatch):
    assert [(t.provider, t.symbols) for t in parse_targets(["binance:BTCUSDT,ETHUSDT", "ETHBTC"], "trade")] == [
        ("binance", ["BTCUSDT", "ETHUSDT", "ETHBTC"])
    ]
    with pytest.raises(ConfigError, match="unknown provider 'nosuch'"):
        parse_targets(["nosuch:X"], "trade")
    with pytest.raises(ConfigError, match="bad interval"):
        parse_targets(["BTCUSDT"], "bar:7q")
    monkeypatch.setenv("MY_KEY", "k1")
    monkeypatch.setenv("MY_SECRET", "s1")
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        'root = "/r"\nkinds = ["trade"]\n[providers.binance]\nsymbols = ["BTCUSDT"]\nkinds = ["trade", "book:20"]\n'
        'endpoint = "ws://127.0.0.1:1"\noptions = { lifetime = 60 }\n'
        '[providers.alpaca]\nsymbols = ["AAPL"]\ncredentials_env = { key = "MY_KEY", secret = "MY_SECRET" }\n'
        "[storage]\nflush_interval = 0.5\nraw_level = 1\n"
    )
    c = load_config(str(cfg))
    assert c.storage.raw_level == 1
    assert c.root == "/r" and c.endpoints == {"binance": "ws://127.0.0.1:1"} and c.options == {"binance": {"lifetime": 60}}
    assert c.credentials == {"alpaca": {"key": "k1", "secret": "s1"}} and c.storage.flush_interval == 0.5
    assert [str(k) for k in c.targets[0].kinds] == ["trade", "book:20"]
    cfg.write_text('[providers.binance]\nsymbols = ["BTCUSDT"]\n[storage]\nraw_level = 0\n')
    with pytest.raises(ConfigError, match="raw_level must be a zstd level"):
        load_config(str(cfg))
    cfg.write_text("root = [")
    with pytest.raises(ConfigError, match="bad TOML"):
        load_config(str(cfg))
    cfg.write_text('[providers.binance]\nsymbols = ["BTCUSDT"]\ncredentials_env = { key = "UNSET_VAR_X" }\n')
    with pytest.raises(ConfigError, match="UNSET_VAR_X is not set"):
        load_config(str(cfg))


@pytest.mark.parametrize(
    "args, message",
    [
        (["nosuch:BTCUSDT"], "unknown provider 'nosuch'"),
        (["BTCUSDT", "--kinds", "bar:xx"], "bad interval"),
        (["BTCUSDT", "--endpoint", "binance"], "provider=URL"),
        (["--config", "/nonexistent/c.toml"], "cannot read config"),
        ([], "nothing to capture"),
        (["BTCUSDT", "--workers", "0"], "--workers"),
        (["BTCUSDT", "--raw-level", "0"], "--raw-level"),
    ],
)
def test_bad_arguments_exit_2_with_one_line_and_write_nothing(tmp_path, args, message):
    import subprocess

    root = tmp_path / "root"
    p = subprocess.run([sys.executable, "-m", "wrdata.cli", "capture", *args, "--root", str(root)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert message in p.stderr
    assert not root.exists()


async def test_unknown_symbol_is_rejected_before_anything_is_written(tmp_path):
    sim = BinanceSimulator(seed=1, rate=50)
    async with sim:
        daemon = CaptureDaemon(capture_config(tmp_path, sim, symbols=("BTCUSDT", "NOPEUSDT"), kinds="trade"), duration=1, status="none")
        with pytest.raises(ConfigError, match="NOPEUSDT"):
            await daemon.run()
    assert not any(Path(tmp_path).iterdir())


def test_unwritable_root_is_a_clear_error(tmp_path):
    import subprocess

    if os.geteuid() == 0:
        root = "/proc/wrdata-cannot-write-here"
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        root = str(ro / "data")
    p = subprocess.run([sys.executable, "-m", "wrdata.cli", "capture", "BTCUSDT", "--root", root, "--endpoint", "binance=ws://127.0.0.1:9"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "cannot record into" in p.stderr
