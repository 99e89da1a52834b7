"""The pyarrow-dataset path (object stores, any pyarrow filesystem) answers like DuckDB's
own reader."""

from __future__ import annotations

import pyarrow.fs as pafs
import pytest
from query_helpers import int_ts

from wrdata.queries import connect, coverage, ohlcv, scan
from wrdata.queries.helpers import order_by


@pytest.mark.parametrize("how", ["engine", "filesystem"])
def test_arrow_path_gives_the_same_answers(recording, how):
    local = connect(recording.root)
    if how == "engine":
        other = connect(recording.root, engine="arrow")
    else:
        # a non-local pyarrow filesystem (what s3:// resolves to), journal given apart
        fs = pafs.SubTreeFileSystem(str(recording.root), pafs.LocalFileSystem())
        other = connect("", filesystem=fs, journal=str(recording.root / "_journal"))
    for t in ("trades", "quotes", "events", "raw"):
        q = f"SELECT * FROM {t} ORDER BY {order_by(t)}"
        cols = [c for c in ("ts_recv", "ts_event", "gap_start_ns", "gap_end_ns") if c in local.sql(q).columns]
        assert int_ts(other.sql(q).to_arrow_table(), *cols).to_pydict() == int_ts(local.sql(q).to_arrow_table(), *cols).to_pydict()
    a, b = int_ts(ohlcv(local, "1s"), "bar"), int_ts(ohlcv(other, "1s"), "bar")
    for c in ("bar", "provider", "symbol", "open", "high", "low", "close", "trades"):
        assert a.column(c).to_pylist() == b.column(c).to_pylist()
    assert b.column("volume").to_pylist() == pytest.approx(a.column("volume").to_pylist(), rel=1e-12)
    assert int_ts(coverage(other), "first_ts", "last_ts").to_pydict() == int_ts(coverage(local), "first_ts", "last_ts").to_pydict()
    ts = local.sql("SELECT epoch_ns(ts_recv) FROM trades ORDER BY 1").fetchall()
    lo, hi = ts[len(ts) // 3][0], ts[2 * len(ts) // 3][0]
    assert int_ts(scan(other, "trades", start=lo, end=hi), "ts_recv", "ts_event").to_pydict() == \
        int_ts(scan(local, "trades", start=lo, end=hi), "ts_recv", "ts_event").to_pydict()


def test_engine_arguments(recording, tmp_path):
    with pytest.raises(ValueError, match="reads local files only"):
        connect("", filesystem=pafs.SubTreeFileSystem(str(recording.root), pafs.LocalFileSystem()), engine="duckdb")
    with pytest.raises(ValueError, match="bad engine"):
        connect(recording.root, engine="spark")
    with pytest.raises(FileNotFoundError, match="no recording at"):
        connect(tmp_path / "nothing")
    with pytest.raises(ValueError, match="unknown table"):
        connect(recording.root, tables=("ticks",))


@pytest.mark.parametrize("branches", [1, 2])
def test_views_grouped_into_few_scans_lose_no_row(recording, monkeypatch, branches):
    """The view scans consecutive files together, each group bounded by its names' range."""
    from wrdata.queries import connection

    want = connect(recording.root)
    monkeypatch.setattr(connection, "MAX_BRANCHES", branches)
    got = connect(recording.root)
    for t in ("trades", "quotes", "raw"):
        q = f"SELECT * FROM {t} ORDER BY {order_by(t)}"
        assert int_ts(got.sql(q).to_arrow_table(), "ts_recv").to_pydict() == int_ts(want.sql(q).to_arrow_table(), "ts_recv").to_pydict()
    ts = want.sql("SELECT epoch_ns(ts_recv) FROM trades ORDER BY 1").fetchall()
    lo, hi = ts[len(ts) // 3][0], ts[2 * len(ts) // 3][0]
    q = f"SELECT count(*) FROM trades WHERE ts_recv >= make_timestamp_ns({lo})::TIMESTAMPTZ_NS AND ts_recv < make_timestamp_ns({hi})::TIMESTAMPTZ_NS"
    assert got.sql(q).fetchall() == want.sql(q).fetchall() == [(sum(1 for (t,) in ts if lo <= t < hi),)]


@pytest.mark.parametrize("engine", ["duckdb", "arrow"])
def test_files_of_an_older_schema_version(recording, tmp_path, engine):
    """A file written before some columns existed (plain strings, no trade_id) reads
    through the views with those columns null, beside current files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from wrdata.queries import verify
    from wrdata.storage import list_sealed

    root = recording.copy(tmp_path / "d")
    f = list_sealed(str(root), "trades")[0]
    t = f.first_ts - 1_000_000_000  # a second before the first recorded trade, same day
    old = pa.table(
        {"ts_recv": pa.array([t], pa.timestamp("ns", "UTC")), "symbol": ["OLDUSDT"], "writer": ["old-writer"],
         "conn": pa.array([0], pa.int32()), "seq": [9], "idx": pa.array([0], pa.int32()), "source": ["stream"],
         "channel": ["trade"], "price": [2.5], "size": [1.0]},
        metadata={"wrdata.schema_version": "0", "wrdata.table": "trades"},
    )
    pq.write_table(old, f"{root}/trades/provider=binance/date={f.date}/old-writer-{t}-{t}.parquet")
    con = connect(root, engine=engine)
    rows = con.sql("SELECT symbol, price, trade_id, ts_fetched, provider FROM trades WHERE symbol = 'OLDUSDT'").fetchall()
    assert rows == [("OLDUSDT", 2.5, None, None, "binance")]
    assert con.sql("SELECT count(*) FROM trades").fetchall()[0][0] == connect(recording.root).sql("SELECT count(*) FROM trades").fetchall()[0][0] + 1
    assert ohlcv(con, "1s", symbols="OLDUSDT").column("open").to_pylist() == [2.5]
    assert verify(str(root)).ok
