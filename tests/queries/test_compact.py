"""``compact`` merges a day's files without changing what queries and read_table return,
and a reader never sees a row twice, even when a compaction stops half way."""

from __future__ import annotations

import os

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from query_helpers import int_ts

from wrdata.cli import main
from wrdata.message import StreamMessage
from wrdata.queries import connect, coverage, ohlcv, verify
from wrdata.queries.helpers import order_by
from wrdata.storage import (
    DatasetWriter,
    StorageFS,
    compact_partition,
    list_sealed,
    list_segments,
    read_table,
    schema,
    seal_segment,
)
from wrdata.storage import compact as compact_mod
from wrdata.storage.journal import SegmentWriter
from wrdata.storage.layout import day_of, partition_dir, segment_name
from wrdata.storage.schema import PARQUET_DEFAULTS

TABLES = ("trades", "quotes", "events", "raw")


FLOAT_SUMS = ("volume", "vwap")


def results(root) -> tuple[dict, list[float]]:
    """Everything a reader can get: read_table and the views, row for row, and helpers.

    Sums of doubles (volume, vwap) depend on the order a parallel engine adds them in, so
    they are compared separately, to 1e-12; every other value must be identical."""
    out = {}
    con = connect(root)
    for t in TABLES:
        ts_cols = [c for c in ("ts_recv", "ts_event", "gap_start_ns", "gap_end_ns") if c in schema(t).names]
        out[("read_table", t)] = int_ts(read_table(str(root), t), *ts_cols).to_pydict()
        out[("view", t)] = int_ts(con.sql(f"SELECT * FROM {t} ORDER BY {order_by(t)}").to_arrow_table(), *ts_cols).to_pydict()
    bars = int_ts(ohlcv(con, "1s"), "bar").to_pydict()
    out["ohlcv"] = {k: v for k, v in bars.items() if k not in FLOAT_SUMS}
    out["coverage"] = int_ts(coverage(con), "first_ts", "last_ts").to_pydict()
    return out, [x for k in FLOAT_SUMS for x in bars[k]]


def same(after, before) -> bool:
    assert after[0] == before[0]
    assert after[1] == pytest.approx(before[1], rel=1e-12)
    return True


def test_compact_leaves_results_identical(recording, tmp_path):
    root = recording.copy(tmp_path / "d")
    before_files = list_sealed(str(root), "trades")
    assert len(before_files) >= 3  # 1 s rolls over ~3 s
    before = results(root)
    date = before_files[0].date
    r = CliRunner().invoke(main, ["compact", "--root", str(root), "--date", date])
    assert r.exit_code == 0, r.output
    assert f"trades/binance/{date}: merged {len(before_files)} files into 1" in r.output
    for t in TABLES:
        files = list_sealed(str(root), t)
        assert len(files) == 1, (t, files)
        assert {f.writer for f in files} == {before_files[0].writer}
    assert same(results(root), before)
    assert verify(str(root)).ok
    # nothing left but the new files (and no temporaries)
    names = os.listdir(os.path.dirname(list_sealed(str(root), "trades")[0].path))
    assert len(names) == 1


def test_compacted_files_have_the_sealed_layout(recording, tmp_path):
    root = recording.copy(tmp_path / "d")
    old = pq.ParquetFile(list_sealed(str(root), "trades")[0].path)
    res = compact_partition(str(root), "trades", "binance", list_sealed(str(root), "trades")[0].date, row_group_rows=100)
    new = pq.ParquetFile(res.written[0])
    md = new.metadata
    assert md.num_rows == res.rows > 200
    # row groups of at least the size given (whole input batches), as sealing writes them
    sizes = [md.row_group(i).num_rows for i in range(md.num_row_groups)]
    assert len(sizes) > 1 and all(n >= 100 for n in sizes[:-1])
    names = new.schema_arrow.names
    rg = md.row_group(0)
    for i, name in enumerate(names):
        col = rg.column(i)
        assert col.compression == "ZSTD"
        assert col.is_stats_set == old.metadata.row_group(0).column(i).is_stats_set, name
    assert [c.column_index for c in rg.sorting_columns] == [names.index(k) for k in ("ts_recv", "conn", "seq", "idx")]
    kv = md.metadata
    assert kv[b"wrdata.writer"] == old.metadata.metadata[b"wrdata.writer"]
    assert kv[b"wrdata.schema_version"] == old.metadata.metadata[b"wrdata.schema_version"]
    assert int(kv[b"wrdata.rows"]) == md.num_rows
    assert PARQUET_DEFAULTS["row_group_rows"] > 100


def test_an_interrupted_compaction_shows_each_row_once(recording, tmp_path, monkeypatch):
    root = recording.copy(tmp_path / "d")
    before = results(root)
    date = list_sealed(str(root), "trades")[0].date
    n_before = len(list_sealed(str(root), "trades"))
    # "crash" after the new files are in place, before the old ones are removed
    monkeypatch.setattr(compact_mod, "_remove", lambda sfs, path, res: None)
    for t in TABLES:
        compact_partition(str(root), t, "binance", date)
    on_disk = [n for n in os.listdir(os.path.dirname(list_sealed(str(root), "trades")[0].path)) if n.endswith(".parquet")]
    assert len(on_disk) == n_before + 1  # old and new side by side
    assert len(list_sealed(str(root), "trades")) == 1  # readers see only the new one
    assert same(results(root), before)
    rep = verify(str(root))
    assert {f.kind for f in rep.problems} == {"superseded"}
    monkeypatch.undo()
    # a second run finishes the job
    for t in TABLES:
        res = compact_partition(str(root), t, "binance", date)
        assert all("replaced by an earlier compaction" in why for _, why in res.skipped)
    assert verify(str(root)).ok
    assert same(results(root), before)


def test_a_failed_compaction_changes_nothing(recording, tmp_path, monkeypatch):
    root = recording.copy(tmp_path / "d")
    date = list_sealed(str(root), "trades")[0].date
    before = sorted(p for p in root.rglob("*") if p.is_file())
    real = compact_mod.write_sealed
    calls = []

    def failing(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(*a, **kw)

    _two_writers(root, date)  # two merges: the second fails after the first succeeded
    monkeypatch.setattr(compact_mod, "write_sealed", failing)
    with pytest.raises(OSError, match="No space"):
        compact_partition(str(root), "trades", "binance", date)
    assert len(calls) == 2
    after = sorted(p for p in root.rglob("*") if p.is_file())
    assert [p for p in after if p not in before and "w-extra" not in p.name] == []
    assert verify(str(root)).ok


def _two_writers(root, date) -> None:
    """Add two sealed files of a second writer to the trades partition."""
    from wrdata.storage.layout import day_from_str

    day = day_from_str(date)
    fs = StorageFS(root, fsync=False)
    t0 = day * 86_400_000_000_000 + 1_000
    for k in range(2):
        msgs = [StreamMessage(provider="binance", symbol="BTCUSDT", kind="trade", ts_recv=t0 + k * 1000 + i, ts_event=None, conn=9,
                              seq=k * 10 + i, idx=0, channel="trade", price=1.0, size=1.0) for i in range(3)]
        from wrdata.storage import from_messages

        path = os.path.join(fs.journal_dir, "trades", "provider=binance", f"date={date}", segment_name("w-extra", k))
        w = SegmentWriter(fs, path, "trades", "binance", day, "w-extra", k)
        b = from_messages("trades", msgs, "w-extra")
        w.append(b, t0 + k * 1000, t0 + k * 1000 + 2, ())
        w.close()
        seal_segment(fs, path, "trades", "binance", day, "w-extra")
        fs.journal_remove(path)


def test_compact_merges_files_that_interleave(tmp_path):
    """Late rows make the recorder start a new file whose range overlaps the previous
    one; compaction merges them into one file in total order."""
    root = tmp_path / "d"
    t0 = 1_790_000_000_000_000_000
    w = DatasetWriter(root, writer_id="w1", flush_interval=0.01, fsync="never")
    w.start()

    def trade(ts, conn, seq):
        return StreamMessage(provider="sim", symbol="X", kind="trade", ts_recv=ts, ts_event=ts, conn=conn, seq=seq, idx=0,
                             channel="trade", price=float(seq), size=1.0, trade_id=seq)

    w.on_messages([trade(t0 + i * 10, 1, i) for i in range(50)])
    assert w.flush()
    w.on_messages([trade(t0 + 5 + i * 10, 2, 100 + i) for i in range(20)])  # behind what is journaled
    assert w.flush()
    w.close()
    files = list_sealed(str(root), "trades")
    assert len(files) == 2 and files[1].first_ts < files[0].last_ts
    before = int_ts(read_table(str(root), "trades"), "ts_recv", "ts_event").to_pydict()
    rep = verify(str(root))
    assert rep.ok and [f.kind for f in rep.notes] == ["interleaved"]
    res = compact_partition(str(root), "trades", "sim", files[0].date)
    assert res.files_before == 2 and res.files_after == 1
    after = int_ts(read_table(str(root), "trades"), "ts_recv", "ts_event").to_pydict()
    assert after == before
    rows = int_ts(pq.read_table(res.written[0], columns=["ts_recv", "conn", "seq"]), "ts_recv").to_pydict()
    keys = list(zip(rows["ts_recv"], rows["conn"], rows["seq"], strict=True))
    assert keys == sorted(keys)
    assert verify(str(root)).findings == []


def test_a_file_whose_segment_still_exists_is_left_alone(tmp_path):
    """Sealed, then the writer died before removing the segment: recovery will seal it
    again under the same name, so compaction must not replace that name."""
    root = tmp_path / "d"
    fs = StorageFS(root, fsync=False)
    t0 = 1_790_000_000_000_000_000
    day = day_of(t0)
    from wrdata.storage import from_messages

    paths = []
    for k in range(3):
        msgs = [StreamMessage(provider="sim", symbol="X", kind="trade", ts_recv=t0 + k * 100 + i, ts_event=None, conn=1, seq=k * 10 + i,
                              idx=0, channel="trade", price=1.0, size=1.0) for i in range(5)]
        path = os.path.join(partition_dir(fs.journal_dir, "trades", "sim", day), segment_name("dead", k))
        w = SegmentWriter(fs, path, "trades", "sim", day, "dead", k)
        w.append(from_messages("trades", msgs, "dead"), t0 + k * 100, t0 + k * 100 + 4, ())
        w.close()
        seal_segment(fs, path, "trades", "sim", day, "dead")
        paths.append(path)
    for p in paths[:2]:
        fs.journal_remove(p)
    assert len(list_segments(fs.journal_dir)) == 1
    before = int_ts(read_table(str(root), "trades"), "ts_recv", "ts_event").to_pydict()
    res = compact_partition(str(root), "trades", "sim", list_sealed(str(root), "trades")[0].date)
    assert res.files_before == 2 and res.files_after == 1
    assert len(res.skipped) == 1 and "journal segment still exists" in res.skipped[0][1]
    assert len(list_sealed(str(root), "trades")) == 2
    assert int_ts(read_table(str(root), "trades"), "ts_recv", "ts_event").to_pydict() == before
    assert sum(len(v) for v in before.values()) > 0


def test_compact_arguments(recording, tmp_path):
    root = recording.copy(tmp_path / "d")
    run = CliRunner().invoke
    r = run(main, ["compact", "--root", str(root), "--date", "2026-13-01"])
    assert r.exit_code == 2 and "not a calendar date" in r.output
    r = run(main, ["compact", "--root", str(root), "--date", "23/11/2026"])
    assert r.exit_code == 2 and "expected YYYY-MM-DD" in r.output
    r = run(main, ["compact", "--root", str(root), "--date", "2020-01-01"])
    assert r.exit_code == 0 and "nothing sealed on 2020-01-01" in r.output
    date = list_sealed(str(root), "trades")[0].date
    r = run(main, ["compact", "--root", str(root), "--date", date, "--table", "trades", "--dry-run"])
    assert r.exit_code == 0 and "would merge" in r.output
    assert len(list_sealed(str(root), "trades")) > 1
    r = run(main, ["compact", "--root", str(root), "--date", date, "--table", "nope"])
    assert r.exit_code == 2 and "unknown table 'nope'" in r.output
