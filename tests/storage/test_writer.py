"""DatasetWriter end to end: messages → journal → sealed Parquet → messages."""

from __future__ import annotations

import os

import duckdb
import pyarrow.dataset as ds
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
from storage_helpers import DAY, T0, trade

from wrdata.message import StreamMessage
from wrdata.storage import (
    SCHEMA_VERSION,
    dataset,
    list_sealed,
    list_segments,
    read_journal,
    read_messages,
    read_raw,
    read_table,
    schema,
)


def mixed(n: int, t0: int = T0) -> list[StreamMessage]:
    out = []
    for i in range(n):
        ts = t0 + i * 1_000_003 + 1
        out.append(trade(i, ts))
        if i % 3 == 0:
            out.append(StreamMessage(provider="binance", symbol="BTCUSDT", kind="quote", ts_recv=ts, conn=0, seq=i, idx=1, channel="quote", bid=1.0 + i, ask=2.0 + i, bid_size=0.5, ask_size=0.25, update_id=i))
        if i % 5 == 0:
            out.append(
                StreamMessage(provider="binance", symbol="BTCUSDT", kind="book", ts_recv=ts, conn=0, seq=i, idx=2, channel="book", bids=[(1.0 + i, 2.0), (0.5, 0.0)], asks=[(3.0, 1.0)], snapshot=i == 0, update_id=i)
            )
        if i % 50 == 0:
            out.append(StreamMessage(provider="binance", symbol="BTCUSDT", kind="bar", ts_recv=ts, conn=0, seq=i, idx=3, channel="bar:1m", open=1.0, high=2.0, low=0.5, close=1.5, size=10.0, interval="1m", closed=False))
            out.append(StreamMessage(provider="binance", kind="status", ts_recv=ts, conn=0, seq=i, idx=4, status="connected", reason="test"))
    return out


def by_table(msgs):
    from wrdata.storage import KIND_TABLE

    out: dict[str, list] = {}
    for m in msgs:
        out.setdefault(KIND_TABLE[m.kind], []).append(m)
    return out


def test_roundtrip_through_journal_and_sealed_parquet(make_writer, tmp_path):
    w = make_writer().start()
    msgs = mixed(300)
    raws = []
    for i, m in enumerate(msgs):
        w.on_messages([m])
        if m.kind == "trade":
            r = ("binance", 0, m.seq, m.ts_recv, "in", "wss://stream.binance.com:9443/stream", b'{"i":%d}' % i)
            w.on_raw(*r)
            raws.append(r)
    assert w.flush(10)
    want = by_table(msgs)
    # before sealing: the journal tail is readable, verified, complete up to the flush
    for table, ms in want.items():
        assert read_messages(w.root, table) == ms, table
    assert [tuple(r)[:7] for r in read_raw(w.root)] == raws  # frames carry no REST status
    assert list_sealed(w.root) == []
    w.close()
    assert list_segments(w.journal_dir) == []
    files = list_sealed(w.root)
    assert {f.table for f in files} == {"trades", "quotes", "bars", "book", "events", "raw"}
    for table, ms in want.items():
        assert read_messages(w.root, table, journal=False) == ms, table
    assert [tuple(r)[:7] for r in read_raw(w.root, journal=False)] == raws
    for f in files:
        md = pq.read_schema(f.path).metadata
        assert md[b"wrdata.schema_version"] == str(SCHEMA_VERSION).encode()
        assert md[b"wrdata.table"] == f.table.encode()
        assert f.writer == w.writer_id
        # a file is in total order and names its first and last ts_recv
        t = pq.read_table(f.path)
        ts = t.column("ts_recv").cast("int64").to_pylist()
        assert ts == sorted(ts) and (ts[0], ts[-1]) == (f.first_ts, f.last_ts)
        assert not os.path.basename(f.path).startswith(".")
    assert w.stats.totals().files_sealed == len(files)
    assert w.stats.table("binance", "trades").rows == len(want["trades"])


def test_nanoseconds_survive_parquet_and_duckdb(make_writer):
    w = make_writer().start()
    stamps = [T0 + 123_456_789, T0 + 123_456_790, T0 + DAY // 2 + 999_999_999]
    for i, t in enumerate(stamps):
        w.on_messages([trade(i, t, ts_event=t - 1)])
    w.close()
    files = [f.path for f in list_sealed(w.root, "trades")]
    got = duckdb.sql(f"select epoch_ns(ts_recv), epoch_ns(ts_event), typeof(ts_recv) from read_parquet({files!r}) order by 1").fetchall()
    assert [g[0] for g in got] == stamps
    assert [g[1] for g in got] == [t - 1 for t in stamps]
    assert got[0][2] == "TIMESTAMPTZ_NS"
    # DuckDB over the pyarrow dataset (partition columns from the path)
    d = dataset(w.root, "trades")  # noqa: F841 - DuckDB finds it by name
    rows = duckdb.sql("select provider, date::varchar, epoch_ns(ts_recv) from d order by 3").fetchall()
    assert rows == [("binance", "2024-08-09", t) for t in stamps]


def test_hive_layout_reads_without_wrdata(make_writer):
    w = make_writer().start()
    for i in range(10):
        w.on_messages([trade(i)])
        w.on_messages([trade(i, provider="kraken", symbol="BTC/USD")])
    w.close()
    root = w.root
    t = ds.dataset(f"{root}/trades", format="parquet", partitioning="hive").to_table()
    assert t.num_rows == 20 and set(t.column("provider").to_pylist()) == {"binance", "kraken"}
    n = duckdb.sql(f"select count(*) from read_parquet('{root}/trades/*/*/*.parquet', hive_partitioning=true) where provider='kraken'").fetchall()[0][0]
    assert n == 10
    assert set(os.listdir(f"{root}/trades")) == {"provider=binance", "provider=kraken"}


def test_file_never_spans_midnight(make_writer):
    w = make_writer().start()
    # one batch crossing midnight (all appended before the writer runs)
    ms = [trade(i, T0 - 50_000_000 + i * 1_000_000) for i in range(100)]
    w.on_messages(ms)
    w.close()
    files = list_sealed(w.root, "trades")
    assert [f.date for f in files] == ["2024-08-08", "2024-08-09"]
    assert files[0].last_ts < T0 <= files[1].first_ts
    assert sum(pq.read_metadata(f.path).num_rows for f in files) == 100
    assert read_messages(w.root, "trades") == ms


def test_roll_on_size(make_writer):
    w = make_writer(roll_bytes=4096).start()
    ms = [trade(i) for i in range(2000)]
    for k in range(0, 2000, 100):
        w.on_messages(ms[k : k + 100])
        assert w.flush(10)
    w.close()
    files = list_sealed(w.root, "trades")
    assert len(files) >= 5
    assert read_messages(w.root, "trades") == ms
    # consecutive files of one writer do not overlap in time
    assert all(a.last_ts < b.first_ts for a, b in zip(files, files[1:], strict=False))


def test_roll_on_time(make_writer):
    import time

    w = make_writer(roll_interval=0.1).start()
    ms = []
    for k in range(6):
        batch = [trade(k * 10 + i) for i in range(10)]
        ms.extend(batch)
        w.on_messages(batch)
        assert w.flush(10)
        time.sleep(0.06)
    w.wait_sealed(10)
    assert len(list_sealed(w.root, "trades")) >= 2  # sealed while running, not at close
    w.close()
    assert read_messages(w.root, "trades") == ms


def test_journal_segment_is_a_plain_arrow_stream(make_writer):
    w = make_writer().start()
    w.on_messages([trade(i) for i in range(50)])
    assert w.flush(10)
    (seg,) = list_segments(w.journal_dir, "trades")
    assert seg.writer == w.writer_id and seg.provider == "binance" and seg.date == "2024-08-09"
    with ipc.open_stream(seg.path) as r:
        t = r.read_all()
    assert t.num_rows == 50
    assert t.schema.equals(schema("trades"))
    j = read_journal(w.journal_dir, "trades")
    assert j.num_rows == 50 and set(j.column("provider").to_pylist()) == {"binance"}


def test_two_writers_share_a_root(make_writer, tmp_path):
    a = make_writer(writer_id="cap-a").start()
    b = make_writer(writer_id="cap-b").start()
    ms_a = [trade(i, T0 + 2 * i * 1000) for i in range(500)]
    ms_b = [trade(i, T0 + (2 * i + 1) * 1000, conn=1) for i in range(500)]
    for x, y in zip(ms_a, ms_b, strict=True):
        a.on_messages([x])
        b.on_messages([y])
    assert a.flush(10) and b.flush(10)
    # a third writer starting now must not touch live writers' segments
    c = make_writer(writer_id="cap-c").start()
    c.close()
    assert {s.writer for s in list_segments(a.journal_dir)} == {"cap-a", "cap-b"}
    a.close()
    b.close()
    files = list_sealed(a.root, "trades")
    assert sorted(f.writer for f in files) == ["cap-a", "cap-b"]
    t = read_table(a.root, "trades")
    assert t.column("writer").to_pylist() == ["cap-a", "cap-b"] * 500  # merged in total order
    got = read_messages(a.root, "trades")
    assert got == [m for pair in zip(ms_a, ms_b, strict=True) for m in pair]


def test_writer_id_in_use_is_refused(make_writer):
    import pytest

    make_writer(writer_id="same").start()
    with pytest.raises(RuntimeError, match="in use"):
        make_writer(writer_id="same").start()


def test_close_is_idempotent_and_late_calls_are_ignored(make_writer):
    w = make_writer().start()
    w.on_messages([trade(0)])
    w.close()
    w.close()
    w.on_messages([trade(1)])
    w.on_raw("binance", 0, 1, T0, "in", "u", b"x")
    assert read_messages(w.root, "trades") == [trade(0)]


def test_out_of_order_rows_stay_in_total_order(make_writer):
    w = make_writer().start()
    late = trade(5, T0 + 10)
    w.on_messages([trade(i, T0 + 1000 + i) for i in range(5)])
    assert w.flush(10)
    w.on_messages([late])  # earlier than what is journaled: goes to a new segment
    w.on_messages([trade(7, T0 + 5), trade(6, T0 + 3)])  # unsorted within one flush
    w.close()
    for f in list_sealed(w.root, "trades"):
        ts = pq.read_table(f.path).column("ts_recv").cast("int64").to_pylist()
        assert ts == sorted(ts)
    got = read_messages(w.root, "trades")
    assert [m.ts_recv for m in got] == sorted(m.ts_recv for m in got) and len(got) == 8


def test_bad_message_is_rejected_alone(make_writer, caplog):
    w = make_writer().start()
    bad = trade(1, price="not a number")
    w.on_messages([trade(0), bad, trade(2)])
    w.close()
    assert [m.seq for m in read_messages(w.root, "trades")] == [0, 2]
    assert w.stats.table("binance", "trades").rejected == 1
    assert "rejected" in caplog.text


def test_sealed_files_on_another_filesystem(tmp_path):
    """A non-local pyarrow filesystem (here a SubTreeFileSystem): temp key + move, the
    journal stays local, and readers take the same filesystem."""
    import pyarrow.fs as pafs

    from wrdata.storage import DatasetWriter

    (tmp_path / "bucket").mkdir()
    fs = pafs.SubTreeFileSystem(str(tmp_path / "bucket"), pafs.LocalFileSystem())
    w = DatasetWriter("rec", filesystem=fs, journal_dir=tmp_path / "journal", flush_interval=0.02).start()
    assert not w.fs.local
    ms = [trade(i) for i in range(100)]
    w.on_messages(ms)
    w.close()
    files = list_sealed("rec", "trades", filesystem=fs)
    assert len(files) == 1 and files[0].path.startswith("rec/trades/provider=binance/date=2024-08-09/")
    assert read_messages("rec", "trades", filesystem=fs, journal=False) == ms
    assert [p.name for p in (tmp_path / "bucket" / "rec" / "trades" / "provider=binance" / "date=2024-08-09").iterdir()] == [
        os.path.basename(files[0].path)
    ]


def test_non_local_root_journal_defaults_to_a_local_directory_derived_from_the_root(tmp_path, monkeypatch):
    """The journal of a remote root stays local: by default under $XDG_STATE_HOME, named
    after the root (the same directory for every process, so a restart finds it)."""
    import pyarrow.fs as pafs

    from wrdata.storage import DatasetWriter
    from wrdata.storage.fs import default_journal_dir

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    (tmp_path / "bucket").mkdir()
    fs = pafs.SubTreeFileSystem(str(tmp_path / "bucket"), pafs.LocalFileSystem())
    w = DatasetWriter("rec", filesystem=fs)
    assert w.journal_dir == default_journal_dir("rec", fs)
    assert w.journal_dir.startswith(str(tmp_path / "state" / "wrdata" / "journal") + os.sep)
    assert DatasetWriter("rec", filesystem=fs).journal_dir == w.journal_dir
    assert DatasetWriter("other", filesystem=fs).journal_dir != w.journal_dir
    w.close()


def test_files_of_an_older_schema_version_still_read(make_writer):
    """A file written before a column existed (and with plain strings) reads as the
    current schema through the dataset, with the missing column null."""
    import pyarrow as pa

    w = make_writer().start()
    w.on_messages([trade(1)])
    w.close()
    old = pa.table(
        {
            "ts_recv": pa.array([T0 + 5], pa.timestamp("ns", "UTC")),
            "symbol": ["ETHUSDT"],
            "writer": ["old-writer"],
            "conn": pa.array([0], pa.int32()),
            "seq": [9],
            "idx": pa.array([0], pa.int32()),
            "source": ["stream"],
            "channel": ["trade"],
            "price": [2.5],
            "size": [1.0],
        },
        metadata={"wrdata.schema_version": "0", "wrdata.table": "trades"},
    )
    pq.write_table(old, f"{w.root}/trades/provider=binance/date=2024-08-09/old-writer-{T0 + 5}-{T0 + 5}.parquet")
    t = read_table(w.root, "trades")
    assert t.num_rows == 2 and t.schema.field("symbol").type == schema("trades").field("symbol").type
    got = read_messages(w.root, "trades")
    assert got[0].symbol == "ETHUSDT" and got[0].trade_id is None and got[0].price == 2.5
    assert got[1] == trade(1)


def test_list_sealed_prunes_by_table_provider_date_and_time(make_writer):
    w = make_writer().start()
    w.on_messages([trade(i, T0 - DAY + i) for i in range(3)] + [trade(10 + i, T0 + i) for i in range(3)])
    w.on_messages([trade(i, T0 + i, provider="kraken", symbol="BTC/USD") for i in range(3)])
    w.close()
    assert {(f.provider, f.date) for f in list_sealed(w.root, "trades")} == {
        ("binance", "2024-08-08"),
        ("binance", "2024-08-09"),
        ("kraken", "2024-08-09"),
    }
    assert [f.date for f in list_sealed(w.root, "trades", "binance", date="2024-08-09")] == ["2024-08-09"]
    assert [f.provider for f in list_sealed(w.root, "trades", start=T0, end=T0 + 2)] == ["binance", "kraken"]
    assert list_sealed(w.root, "quotes") == []
