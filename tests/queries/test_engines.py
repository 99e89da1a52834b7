"""The pyarrow-dataset path (object stores, any pyarrow filesystem) answers like DuckDB's
own reader."""

from __future__ import annotations

import pyarrow.fs as pafs
import pytest
from conftest import int_ts

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
