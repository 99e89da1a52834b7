"""One dataset in a bucket: many writers, compaction while readers read, and queries and
replay from the bucket equal to the same over a local copy, with files pruned unopened."""

from __future__ import annotations

import asyncio
import json
import sys

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from click.testing import CliRunner
from s3_helpers import capture_config, subprocess_env, trade

from wrdata import DataStream
from wrdata.capture.daemon import CaptureDaemon
from wrdata.cli import main
from wrdata.queries import connect, coverage, ohlcv, refresh
from wrdata.queries.helpers import order_by, ts_literal
from wrdata.replay import read_batches
from wrdata.replay.serve import recorded_frames
from wrdata.sim.binance import BinanceSimulator
from wrdata.storage import DatasetWriter, compact_partition, default_writer_id, list_sealed, read_table, schema
from wrdata.storage import compact as compact_mod
from wrdata.storage import reader as reader_mod

TABLES = ("trades", "quotes", "book", "events", "raw")


def int_ts(t: pa.Table) -> dict:
    for i, f in enumerate(t.schema):
        if pa.types.is_timestamp(f.type):
            t = t.set_column(i, f.name, t.column(f.name).cast(pa.int64()))
    return t.to_pydict()


def _ids(t, sym: str, writer: str | None = None) -> list[int]:
    m = pc.equal(t.column("symbol").cast("string"), sym)
    if writer is not None:
        m = pc.and_(m, pc.equal(t.column("writer").cast("string"), writer))
    return t.filter(m).column("trade_id").to_pylist()


def test_default_writer_ids_are_unique_within_a_process():
    ids = [default_writer_id() for _ in range(2000)]  # far more than one per millisecond
    assert len(set(ids)) == len(ids)


async def test_two_daemons_write_one_dataset_without_coordinating(s3):
    """Two capture daemons (one per symbol shard) into one bucket prefix at the same time,
    sharing this host's journal directory: distinct writers, every trade once."""
    bucket = s3.new_bucket()
    root = f"s3://{bucket}/md"
    sim = BinanceSimulator(seed=1, rate=300)
    await sim.start()
    try:
        shards = (["BTCUSDT", "ETHUSDT"], ["BNBUSDT", "SOLUSDT"])
        daemons = []
        for syms in shards:
            cfg = capture_config(root, sim, s3.endpoint, symbols=syms, kinds="trade")
            cfg.storage.roll_interval = 1.0
            daemons.append(CaptureDaemon(cfg, duration=2.5, status="none"))
        assert await asyncio.gather(*(d.run() for d in daemons)) == [0, 0]
    finally:
        await sim.stop()
    writers = [d.writer.writer_id for d in daemons]
    assert len(set(writers)) == 2
    trades = read_table(root, "trades")
    assert sorted(set(trades.column("writer").cast("string").to_pylist())) == sorted(writers)
    for w, syms in zip(writers, shards):
        for sym in syms:
            ids = _ids(trades, sym)
            assert ids and ids == _ids(trades, sym, w), f"{sym} only from its own daemon"
            assert ids == list(range(ids[0], ids[0] + len(ids))), "every trade once, none missing"
    # each file is one writer's: names tell, and verify finds nothing wrong
    for f in list_sealed(root, "trades"):
        assert f.writer in writers
    res = CliRunner().invoke(main, ["verify", "--root", root, "--no-quarantine"])
    assert res.exit_code == 0, res.output


def _many_files(root: str, n_files: int = 6, per_file: int = 400) -> list[int]:
    """One writer, ``n_files`` sealed files of trades in one partition; returns the ids."""
    w = DatasetWriter(root, flush_interval=0.02).start()
    ids = []
    for k in range(n_files):
        msgs = [trade(k * per_file + i) for i in range(per_file)]
        w.on_messages(msgs)
        assert w.roll(30)
        ids += [m.trade_id for m in msgs]
    w.close()
    assert len(list_sealed(root, "trades")) == n_files
    return ids


def _check(root: str, ids: list[int], con=None) -> None:
    """Every row exactly once, through read_table and through a DuckDB view."""
    t = read_table(root, "trades")
    assert t.column("trade_id").to_pylist() == ids
    con = con or connect(root)
    got = con.sql("SELECT trade_id FROM trades ORDER BY ts_recv, seq").fetchall()
    assert [r[0] for r in got] == ids


def test_compaction_while_a_reader_reads_sees_each_row_once(s3, monkeypatch):
    bucket = s3.new_bucket()
    root = f"s3://{bucket}/md"
    ids = _many_files(root)
    date = list_sealed(root, "trades")[0].date
    old_con = connect(root)  # a snapshot taken before the compaction
    _check(root, ids, old_con)  # before
    seen_during = []

    def grace(seconds: float) -> None:
        # the moment between "new file written" and "old files removed": both are listed
        listed = list_sealed(root, "trades", supersede=False)
        assert len(listed) == 7 and len(list_sealed(root, "trades")) == 1
        _check(root, ids)  # a reader listing now sees each row once
        _check(root, ids, old_con)  # one that listed before still reads its old files
        seen_during.append(len(listed))

    monkeypatch.setattr(compact_mod.time, "sleep", grace)
    res = compact_partition(root, "trades", "binance", date, grace=60)
    assert seen_during == [7] and res.files_before == 6 and res.files_after == 1
    _check(root, ids)  # after
    with pytest.raises(Exception):  # noqa: B017 - which error depends on the store; never wrong rows
        old_con.sql("SELECT count(*) FROM trades").fetchall()  # its files are gone
    refresh(old_con)
    _check(root, ids, old_con)
    assert not [k for k in s3.keys(f"{bucket}/md") if k.rsplit("/", 1)[1].startswith(".")]


def test_a_reader_whose_listing_was_compacted_away_lists_again(s3, monkeypatch):
    """read_table (what replay reads through) lists, then compaction removes every file it
    listed before it reads them: it lists again and still returns each row once."""
    bucket = s3.new_bucket()
    root = f"s3://{bucket}/md"
    ids = _many_files(root, n_files=4)
    date = list_sealed(root, "trades")[0].date
    real = reader_mod.dataset
    calls = []

    def dataset_then_compact(*a, **kw):
        d = real(*a, **kw)
        if not calls:
            compact_partition(root, "trades", "binance", date, grace=0)  # removes what `d` lists
        calls.append(1)
        return d

    monkeypatch.setattr(reader_mod, "dataset", dataset_then_compact)
    assert read_table(root, "trades").column("trade_id").to_pylist() == ids
    assert len(calls) == 2, "the first read failed on a vanished file and listed again"


def test_compact_cli_on_a_bucket(s3):
    bucket = s3.new_bucket()
    root = f"s3://{bucket}/md"
    ids = _many_files(root, n_files=3)
    date = list_sealed(root, "trades")[0].date
    res = CliRunner().invoke(main, ["compact", "--root", root, "--s3-endpoint", s3.endpoint, "--date", date, "--grace", "0.1"])
    assert res.exit_code == 0, res.output
    assert f"trades/binance/{date}: merged 3 files into 1" in res.output
    _check(root, ids)
    assert len(s3.keys(f"{bucket}/md/trades")) == 1


async def _capture(root: str, s3, seconds: float = 2.0) -> None:
    sim = BinanceSimulator(seed=7, rate=300)
    await sim.start()
    try:
        cfg = capture_config(root, sim, s3.endpoint, kinds="trade,quote,book:10")
        cfg.storage.roll_interval = 1.0
        assert await CaptureDaemon(cfg, duration=seconds, status="none").run() == 0
    finally:
        await sim.stop()


async def _replay(root: str, kind: str) -> list:
    out = []
    async with DataStream.replay(root) as ds:
        async for m in ds.stream_many(["BTCUSDT", "ETHUSDT"], stream_type=kind):
            out.append(m)
    return out


async def test_queries_and_replay_from_the_bucket_equal_a_local_copy(s3, tmp_path):
    bucket = s3.new_bucket()
    root = f"s3://{bucket}/md"
    await _capture(root, s3)
    local = str(tmp_path / "copy")
    s3.download(f"{bucket}/md", local)
    remote_con, local_con = connect(root), connect(local)
    for t in TABLES:
        q = f"SELECT * FROM {t} ORDER BY {order_by(t)}"
        a, b = int_ts(remote_con.sql(q).to_arrow_table()), int_ts(local_con.sql(q).to_arrow_table())
        assert a == b and len(next(iter(a.values()))) > 0, t
    bars_r, bars_l = int_ts(ohlcv(remote_con, "1s")), int_ts(ohlcv(local_con, "1s"))
    for k in bars_l:  # sums of doubles depend on the order a parallel engine adds them in
        assert bars_r[k] == (pytest.approx(bars_l[k], rel=1e-12) if k in ("volume", "vwap") else bars_l[k]), k
    assert int_ts(coverage(remote_con)) == int_ts(coverage(local_con))
    # replay through the stream() API, and the batch API
    for kind in ("trade", "quote", "book:5"):
        got = await _replay(root, kind)
        assert got and got == await _replay(local, kind), kind
    rb = [(t, b.to_pydict()) for t, b in read_batches(root)]
    assert rb == [(t, b.to_pydict()) for t, b in read_batches(local)]
    # what `replay serve` sends
    assert list(recorded_frames(root, "binance")) == list(recorded_frames(local, "binance"))


def test_the_cli_on_a_bucket_equals_the_cli_on_a_local_copy(s3, tmp_path):
    """query, replay, ohlcv, ls and verify with --root s3://... --s3-endpoint (the endpoint
    not in the environment) print what they print for a local copy."""
    bucket = s3.new_bucket()
    root = f"s3://{bucket}/md"
    asyncio.run(_capture(root, s3))
    local = str(tmp_path / "copy")
    s3.download(f"{bucket}/md", local)

    def cli(*args: str, remote: bool) -> str:
        extra = ["--root", root, "--s3-endpoint", s3.endpoint] if remote else ["--root", local]
        res = CliRunner(env={"AWS_ENDPOINT_URL_S3": None}).invoke(main, [*args, *extra], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        return res.output

    # (no float sums: their last digits depend on the order a parallel engine adds them in)
    q = "SELECT symbol, count(*) AS n, min(price), max(price), sum(trade_id), max(ts_recv) FROM trades GROUP BY symbol ORDER BY symbol"
    assert cli("query", q, "--format", "csv", remote=True) == cli("query", q, "--format", "csv", remote=False)
    assert cli("replay", "--format", "jsonl", remote=True) == cli("replay", "--format", "jsonl", remote=False)
    bars = [cli("ohlcv", "BTCUSDT", "--format", "csv", remote=r).splitlines() for r in (True, False)]
    assert len(bars[0]) > 1 and [ln.split(",")[:7] for ln in bars[0]] == [ln.split(",")[:7] for ln in bars[1]]  # up to volume
    ls_r = [json.loads(x) for x in cli("ls", "--json", remote=True).splitlines()]
    ls_l = [json.loads(x) for x in cli("ls", "--json", remote=False).splitlines()]
    assert ls_r == ls_l and ls_r
    cli("verify", remote=True)


async def test_replay_serve_from_a_bucket(s3, tmp_path):
    bucket = s3.new_bucket()
    root = f"s3://{bucket}/md"
    await _capture(root, s3, seconds=1.5)
    recorded = [m for m in (await _replay(root, "trade"))]
    assert recorded
    env = subprocess_env(tmp_path)
    p = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wrdata.cli", "replay", "serve", "binance", "--root", root, "--s3-endpoint", s3.endpoint,
        "--speed", "max", "--settle", "0.3", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    url = (await asyncio.wait_for(p.stdout.readline(), 60)).decode().strip()
    got = []
    async with DataStream(endpoints={"binance": url}) as ds:
        it = ds.stream_many(["BTCUSDT", "ETHUSDT"])

        async def collect():
            async for t in it:
                got.append(t)

        task = asyncio.create_task(collect())
        out, err = await asyncio.wait_for(p.communicate(), 60)
        await asyncio.sleep(0.2)
        task.cancel()
    assert p.returncode == 0, err.decode()[-2000:]
    key = lambda t: (t.symbol, t.trade_id, t.price, t.size, t.side, t.ts_event)  # noqa: E731
    assert [key(t) for t in got] == [key(t) for t in recorded]


def test_queries_prune_files_by_partition_and_time_without_opening_them(s3):
    """A query's time filter skips files by the range their names state, and listed
    files cost no HEAD: the requests the server saw say which files were opened."""
    bucket = s3.new_bucket()
    root = f"s3://{bucket}/md"
    _many_files(root, n_files=5, per_file=200)
    files = list_sealed(root, "trades")
    con = connect(root, tables=("trades",))
    last = files[-1]
    s3.clear_requests()
    n = con.sql(f"SELECT count(*) FROM trades WHERE ts_recv >= {ts_literal(last.first_ts)}").fetchall()[0][0]
    assert n == 200
    touched = {ln.split(" ")[1].split("?")[0] for ln in s3.request_lines()}
    names = {f.path.split("/", 1)[1] for f in files}
    opened = {p for p in touched if p.split("/", 2)[-1] in names}
    assert opened == {f"/{last.path}"}, opened
    assert not [ln for ln in s3.request_lines() if ln.startswith("HEAD")], "sizes come from the listing"
    # a provider that is not there: no file opened at all
    s3.clear_requests()
    assert con.sql("SELECT count(*) FROM trades WHERE provider = 'kraken'").fetchall()[0][0] == 0
    assert not [ln for ln in s3.request_lines() if ln.startswith("GET /" + bucket + "/md/trades")]
    # a second query over the same file reads no footer again: only column chunks
    s3.clear_requests()
    con.sql(f"SELECT sum(price) FROM trades WHERE ts_recv >= {ts_literal(last.first_ts)}").fetchall()
    gets = [ln for ln in s3.request_lines() if ln.startswith("GET")]
    assert 1 <= len(gets) <= 2, gets


def test_schema_nanoseconds_survive_the_bucket(s3):
    bucket = s3.new_bucket()
    root = f"s3://{bucket}/md"
    w = DatasetWriter(root, flush_interval=0.02).start()
    m = trade(1, ts=1_723_161_600_123_456_789)
    w.on_messages([m])
    w.close()
    con = connect(root)
    assert con.sql("SELECT epoch_ns(ts_recv) FROM trades").fetchall() == [(1_723_161_600_123_456_789,)]
    assert schema("trades").field("ts_recv").type == pa.timestamp("ns", "UTC")


def test_rebuild_on_a_bucket_reproduces_the_tables(s3):
    """`wrdata rebuild` re-derives the normalized tables from raw in the bucket; with
    unchanged parsers they come out row for row as recorded."""
    bucket = s3.new_bucket()
    root = f"s3://{bucket}/md"
    asyncio.run(_capture(root, s3, seconds=1.5))
    before = {t: int_ts(read_table(root, t)) for t in ("trades", "quotes", "book")}
    res = CliRunner().invoke(main, ["rebuild", "--root", root, "--s3-endpoint", s3.endpoint])
    assert res.exit_code == 0, res.output
    assert "binance:" in res.output and "replaced" in res.output
    for t, rows in before.items():
        assert int_ts(read_table(root, t)) == rows, t
    assert not [k for k in s3.keys(f"{bucket}/md") if k.rsplit("/", 1)[1].startswith(".")]


def test_verify_on_a_bucket_quarantines_a_damaged_file(s3):
    bucket = s3.new_bucket()
    root = f"s3://{bucket}/md"
    ids = _many_files(root, n_files=2)
    good = list_sealed(root, "trades")
    d = good[0].path.rsplit("/", 1)[0]
    bad = f"{d}/{good[0].writer}-{good[-1].last_ts + 1}-{good[-1].last_ts + 5}.parquet"
    with s3.admin_fs().open_output_stream(bad) as f:
        f.write(b"PAR1 this is not parquet PAR1")
    res = CliRunner().invoke(main, ["verify", "--root", root, "--s3-endpoint", s3.endpoint])
    assert res.exit_code == 1 and "PROBLEM unreadable" in res.output, res.output
    keys = s3.keys(f"{bucket}/md")
    assert bad not in keys
    assert any(k.startswith(f"{bucket}/md/_quarantine/trades/") and k.endswith(".parquet") for k in keys)
    assert read_table(root, "trades").column("trade_id").to_pylist() == ids
    res = CliRunner().invoke(main, ["verify", "--root", root, "--s3-endpoint", s3.endpoint])
    assert res.exit_code == 0, res.output
