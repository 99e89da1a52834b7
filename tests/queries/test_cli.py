"""wrdata query / ls / ohlcv on the command line."""

from __future__ import annotations

import csv
import io
import json

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from query_helpers import int_ts

from wrdata.cli import main
from wrdata.queries import connect, ohlcv
from wrdata.storage import list_sealed, read_table


@pytest.fixture
def run():
    return lambda *args: CliRunner().invoke(main, list(args))


def test_query_formats(recording, run, tmp_path):
    root = str(recording.root)
    sql = "SELECT symbol, count(*) AS n, min(epoch_ns(ts_recv)) AS first FROM trades GROUP BY symbol ORDER BY symbol"
    want = connect(root).sql(sql).fetchall()
    r = run("query", "--root", root, sql)
    assert r.exit_code == 0, r.output
    assert "BTCUSDT" in r.output and str(want[0][1]) in r.output
    r = run("query", "--root", root, sql, "--format", "csv")
    assert [tuple(int(x) if x.isdigit() else x for x in row) for row in list(csv.reader(io.StringIO(r.output)))[1:]] == want
    r = run("query", "--root", root, sql, "--format", "json")
    assert [tuple(json.loads(line).values()) for line in r.output.splitlines()] == want
    out = tmp_path / "q.parquet"
    r = run("query", "--root", root, "SELECT * FROM trades", "--format", "parquet", "--out", str(out))
    assert r.exit_code == 0, r.output
    assert pq.read_table(out).num_rows == read_table(root, "trades").num_rows
    # nanoseconds in text output
    t = read_table(root, "trades").column("ts_recv").cast("int64").to_pylist()
    r = run("query", "--root", root, "SELECT ts_recv FROM trades ORDER BY ts_recv LIMIT 1", "--format", "csv")
    # DuckDB prints the fraction without trailing zeros: compare the digits it keeps
    assert f".{t[0] % 1_000_000_000:09d}".rstrip("0") in r.output


def test_root_from_the_environment(recording, monkeypatch):
    monkeypatch.setenv("WRDATA_ROOT", str(recording.root))
    r = CliRunner().invoke(main, ["query", "SELECT count(*) FROM quotes", "--format", "csv"])
    assert r.exit_code == 0 and r.output.splitlines()[1] == str(read_table(str(recording.root), "quotes").num_rows)


def test_sql_errors_name_the_views(recording, run):
    r = run("query", "--root", str(recording.root), "SELECT * FROM trade")
    assert r.exit_code == 1
    assert "Table with name trade does not exist" in r.output
    assert "trades(ts_recv, ts_event, symbol" in r.output and "quotes(" in r.output and "wrdata_files(" in r.output
    r = run("query", "--root", str(recording.root), "SELEC 1")
    assert r.exit_code == 1 and "Parser Error" in r.output


def test_bad_arguments_exit_2(recording, run, tmp_path):
    root = str(recording.root)
    for args, msg in (
        (["query", "--root", str(tmp_path / "none"), "SELECT 1"], "no recording at"),
        (["query", "--root", root, "SELECT 1", "--format", "parquet"], "--format parquet needs --out"),
        (["query", "--root", root, "  "], "empty SQL"),
        (["ohlcv", "BTCUSDT", "--root", root, "--interval", "1 min"], "bad interval"),
        (["ohlcv", "BTCUSDT", "--root", root, "--start", "last week"], "bad start"),
        (["ls", "--root", root, "--date", "2026-02-30"], "not a calendar date"),
        (["ls", "--root", root, "--table", "ticks"], "unknown table 'ticks'"),
        (["verify", "--root", root, "--date", "x"], "expected YYYY-MM-DD"),
    ):
        r = run(*args)
        assert r.exit_code == 2, (args, r.output)
        assert msg in r.output, (args, r.output)
        assert "Traceback" not in r.output


def test_ls_counts_rows_from_footers(recording, run):
    root = str(recording.root)
    r = run("ls", "--root", root, "--json")
    assert r.exit_code == 0, r.output
    rows = {(d["table"], d["provider"]): d for d in map(json.loads, r.output.splitlines())}
    for t in ("trades", "quotes", "events", "raw"):
        files = list_sealed(root, t)
        d = rows[(t, "binance")]
        assert d["files"] == len(files)
        assert d["rows"] == read_table(root, t).num_rows
        assert d["bytes"] == sum(f.size for f in files)
        ts = read_table(root, t).column("ts_recv").cast("int64").to_pylist()
        assert d["first_ts"].endswith(f".{ts[0] % 1_000_000_000:09d}Z")
        assert d["date"] == files[0].date and d["writers"] == 1
    r = run("ls", "--root", root)
    assert r.exit_code == 0 and "trades" in r.output and "binance" in r.output
    r = run("ls", "--root", root, "--symbols", "--json")
    by_sym = {d["symbol"]: d for d in map(json.loads, r.output.splitlines())}
    assert by_sym["BTCUSDT"]["missing_ids"] == len(recording.withheld["BTCUSDT"])
    assert by_sym["BTCUSDT"]["gaps"] == 1 and by_sym["ETHUSDT"]["gaps"] == 0


def test_ohlcv_command(recording, run, tmp_path):
    root = str(recording.root)
    out = tmp_path / "bars.csv"
    r = run("ohlcv", "binance:BTCUSDT", "--interval", "1s", "--root", root, "--format", "csv", "--out", str(out))
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(open(out)))
    want = int_ts(ohlcv(connect(root), "1s", symbols="BTCUSDT"), "bar").to_pylist()
    assert len(rows) == len(want) > 0
    assert [float(x["open"]) for x in rows] == [w["open"] for w in want]
    assert [int(x["trades"]) for x in rows] == [w["trades"] for w in want]
    r = run("ohlcv", "BTCUSDT", "--interval", "1m", "--root", root)
    assert r.exit_code == 0 and "BTCUSDT" in r.output
