"""Minute rollups: ``ohlcv`` through them returns the bars of the raw query, and uses them
only when it can prove that (valid rollup, whole partitions or receive minutes, intervals
of whole minutes); otherwise it reads the trades.

The recording is written with ``write_sealed`` (the sealing code): two providers, three
days across a week and a month boundary (Sat 2026-01-31, Sun 02-01, Mon 02-02), trades in
the first and last minutes of each day, frames of several trades sharing ``ts_recv``
(ties decided by idx, conn, writer), venue times up to 3 s before receipt (so trades
received just after midnight carry the previous day's event time: one event minute in
two partitions), and on provider ``binance`` a second writer that recorded a third of the
first one's trades again (some received earlier, some at the same instant, some later)
plus trades of its own at the first writer's instants: the merged view drops the later
receipts of each pair, and bars mix both writers' rows.
"""

from __future__ import annotations

import logging
import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from wrdata.cli import main
from wrdata.queries import connect, ohlcv, verify
from wrdata.queries import rollup as rollup_mod
from wrdata.queries.connection import state_of
from wrdata.queries.helpers import to_ns
from wrdata.queries.rollup import ROLLUP_NAME, build_rollups, rollup_path, rollup_status
from wrdata.storage import StorageFS, schema, write_sealed
from wrdata.storage.journal import SegmentWriter
from wrdata.storage.layout import DAY_NS, date_str, day_of, partition_dir, segment_name

DAY0 = day_of(to_ns("2026-01-31"))
DAYS = [DAY0, DAY0 + 1, DAY0 + 2]
DATES = [date_str(d) for d in DAYS]
MS = 1_000_000
S = 1_000 * MS
MIN = 60 * S
INTERVALS = ["1m", "5m", "1h", "1d", "1w", "1M"]
FLOAT_SUMS = ("volume", "vwap")


# ---------------------------------------------------------------------------------------
# the recording


def _frames(rng, day: int, n: int) -> list[tuple[int, int, int]]:
    """(ts_recv, conn, trades in the frame) of ``n`` frames in the first and last 12
    minutes of ``day``, on a 100 ms grid so that frames share instants, plus three
    frames in the first second (their trades' venue time is the day before)."""
    t0 = day * DAY_NS
    slots = rng.integers(0, 2 * 12 * 600, n)
    ts = [t0 + (int(s) if s < 12 * 600 else DAY_NS // (100 * MS) - 2 * 12 * 600 + int(s)) * 100 * MS for s in slots]
    ts += [t0 + 100 * MS, t0 + 500 * MS, t0 + 900 * MS]
    return [(t, int(rng.integers(1, 3)), int(rng.integers(1, 4))) for t in sorted(ts)]


def _rows(provider: str, day: int, seed: int) -> dict[str, list]:
    """One writer's trades of a (provider, day), columns as lists, not yet in total order."""
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {k: [] for k in ("ts_recv", "ts_event", "symbol", "conn", "seq", "idx", "price", "size", "trade_id")}
    price = {"X": 100.0, "Y": 7.0}
    seq = {1: 0, 2: 0}
    tid = {"X": day * 100_000, "Y": day * 100_000}
    for ts, conn, k in _frames(rng, day, 700):
        seq[conn] += 1
        for i in range(k):
            sym = "X" if rng.random() < 0.6 else "Y"
            price[sym] = round(max(0.01, price[sym] * (1 + rng.normal(0, 1e-3))), 2)
            tid[sym] += 1
            late = int(rng.integers(0, 3000)) * MS
            out["ts_recv"].append(ts)
            out["ts_event"].append(None if rng.random() < 0.05 else (ts - late) // MS * MS)
            out["symbol"].append(sym)
            out["conn"].append(conn)
            out["seq"].append(seq[conn])
            out["idx"].append(i)
            out["price"].append(None if rng.random() < 0.01 else price[sym])
            out["size"].append(None if rng.random() < 0.01 else round(float(rng.lognormal(-1, 1)), 3) + 0.001)
            out["trade_id"].append(tid[sym])
    return out


def _second_writer(a: dict[str, list], seed: int) -> dict[str, list]:
    """A third of ``a``'s trades again (same trade: same symbol, id and venue time),
    received 200 ms earlier, at the same instant or 200 ms later, and trades of its own
    at ``a``'s instants."""
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {k: [] for k in a}
    n = len(a["ts_recv"])
    seq = 0
    for j in range(n):
        r = rng.random()
        if r < 0.33:
            row = {k: a[k][j] for k in a}
            row["ts_recv"] += int(rng.choice([-200, 0, 200])) * MS
        elif r < 0.45:
            row = {k: a[k][j] for k in a}
            row["trade_id"] += 50_000  # a trade the first writer did not record
            row["price"] = None if row["price"] is None else round(row["price"] * 1.001, 2)
        else:
            continue
        seq += 1
        row["conn"], row["seq"], row["idx"] = 0, seq, 0  # conn below the first writer's: only the writer orders them first
        for k in out:
            out[k].append(row[k])
    return out


def _batch(rows: dict[str, list], writer: str) -> pa.Table:
    s = schema("trades")
    n = len(rows["ts_recv"])
    cols = {
        "ts_recv": pa.array(rows["ts_recv"], pa.int64()).cast(pa.timestamp("ns", "UTC")),
        "ts_event": pa.array(rows["ts_event"], pa.int64()).cast(pa.timestamp("ns", "UTC")),
        "symbol": pa.array(rows["symbol"]).dictionary_encode(),
        "writer": pa.array([writer] * n).dictionary_encode(),
        "conn": pa.array(rows["conn"], pa.int32()),
        "seq": pa.array(rows["seq"], pa.int64()),
        "idx": pa.array(rows["idx"], pa.int32()),
        "source": pa.array(["stream"] * n).dictionary_encode(),
        "channel": pa.array(["trade"] * n).dictionary_encode(),
        "price": pa.array(rows["price"], pa.float64()),
        "size": pa.array(rows["size"], pa.float64()),
        "trade_id": pa.array(rows["trade_id"], pa.int64()),
    }
    arrays = [cols[f.name].cast(f.type) if f.name in cols else pa.nulls(n, f.type) for f in s]
    t = pa.Table.from_arrays(arrays, schema=s)
    return t.sort_by([("ts_recv", "ascending"), ("conn", "ascending"), ("seq", "ascending"), ("idx", "ascending")])


def write_files(root, provider: str, writer: str, rows: dict[str, list], pieces: int = 3) -> list[str]:
    """Seal ``rows`` as files of ``writer``: per UTC day of ts_recv, ``pieces`` files
    cut between instants."""
    fs = StorageFS(root, fsync=False)
    t = _batch(rows, writer)
    ts = t.column("ts_recv").cast(pa.int64()).to_numpy()
    paths = []
    for day in sorted({int(x) for x in ts // DAY_NS}):
        lo, hi = np.searchsorted(ts, day * DAY_NS), np.searchsorted(ts, (day + 1) * DAY_NS)
        cuts = sorted({lo, hi, *(int(np.searchsorted(ts, ts[lo + (hi - lo) * k // pieces])) for k in range(1, pieces))})
        for a, b in zip(cuts, cuts[1:], strict=False):
            if b <= a:
                continue
            placeholder = f"{partition_dir(fs.root, 'trades', provider, day)}/{writer}-{a}.parquet"
            path, _, _ = write_sealed(fs, t.slice(a, b - a).to_batches(), "trades", provider, day, writer, placeholder=placeholder)
            paths.append(path)
    return paths


def make_recording(root) -> None:
    for p, provider in enumerate(("binance", "kraken")):
        for d in DAYS:
            a = _rows(provider, d, seed=1000 * p + d)
            write_files(root, provider, "w-a", a)
            if provider == "binance":
                write_files(root, provider, "w-b", _second_writer(a, seed=d))


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    root = tmp_path_factory.mktemp("rollups") / "data"
    make_recording(root)
    return root


@pytest.fixture(scope="module")
def built(rec, tmp_path_factory):
    root = tmp_path_factory.mktemp("built") / "data"
    shutil.copytree(rec, root)
    res = build_rollups(str(root))
    assert [(r.provider, r.date, r.status) for r in res] == [(p, d, "built") for p in ("binance", "kraken") for d in DATES]
    return root


@pytest.fixture
def copy(built, tmp_path):
    def make():
        dest = tmp_path / "data"
        shutil.copytree(built, dest)
        return dest
    return make


@pytest.fixture
def reads(monkeypatch):
    """The rollup files ohlcv reads rows from."""
    calls: list[str] = []
    real = rollup_mod._read_rows

    def spy(fs, path, clock):
        calls.append(path)
        return real(fs, path, clock)

    monkeypatch.setattr(rollup_mod, "_read_rows", spy)
    return calls


def assert_same(got: pa.Table, want: pa.Table) -> None:
    """Same columns, types and rows; every value identical, but for the sums of doubles,
    added in another grouping (see ohlcv's docstring): to 1e-12 relative."""
    assert got.schema == want.schema
    assert got.num_rows == want.num_rows > 0
    g, w = got.to_pydict(), want.to_pydict()
    for k in g:
        if k in FLOAT_SUMS:
            assert [x is None for x in g[k]] == [x is None for x in w[k]], k
            assert [x for x in g[k] if x is not None] == pytest.approx([x for x in w[k] if x is not None], rel=1e-12, abs=0), k
        else:
            assert g[k] == w[k], k


# ---------------------------------------------------------------------------------------


def test_the_recording_has_what_the_tests_rely_on(built):
    con = connect(built)
    drops = state_of(con).drops
    assert drops is not None and len(drops) > 50, "the merged view drops the second writer's later receipts"
    # both writers' rows survive in the merged view, and instants shared by frames of both
    assert con.sql("SELECT count(DISTINCT writer) FROM trades WHERE provider = 'binance'").fetchall() == [(2,)]
    assert con.sql("SELECT count(*) FROM (SELECT ts_recv FROM trades GROUP BY ts_recv, provider HAVING count(DISTINCT writer) > 1)"
                   ).fetchall()[0][0] > 10
    # event minutes with trades received on two dates (one rollup row in each)
    t = pq.read_table(rollup_path(str(built), "binance", DATES[1]), filters=[("clock", "=", "event")])
    prev = t.filter(pa.compute.less(t.column("minute"), DAYS[1] * DAY_NS))
    assert prev.num_rows > 0
    u = pq.read_table(rollup_path(str(built), "binance", DATES[0]), filters=[("clock", "=", "event")])
    both = set(prev.column("minute").to_pylist()) & set(u.column("minute").to_pylist())
    assert both, "an event-clock minute spans two partitions"
    assert {s.state for s in rollup_status(con)} == {"valid"}


@pytest.mark.parametrize("clock", ["event", "recv"])
@pytest.mark.parametrize("interval", INTERVALS)
def test_bars_from_rollups_are_the_raw_bars(built, reads, interval, clock):
    con = connect(built)
    cases = [
        dict(),
        dict(symbols="binance:X"),
        dict(providers=["kraken"]),
        dict(symbols=["Y"], start=DATES[1], end=DATES[2]),
        dict(start=DATES[1]),
        dict(end=DATES[1] + "T00:00:00Z"),
    ]
    for kw in cases:
        reads.clear()
        got = ohlcv(con, interval, clock=clock, **kw)
        assert reads, f"rollups not used for {kw}"
        assert_same(got, ohlcv(con, interval, clock=clock, rollups=False, **kw))
    # receive minutes: bounds on any minute select whole rollup rows
    kw = dict(start=f"{DATES[0]}T23:53:00Z", end=f"{DATES[1]}T00:07:00Z")
    reads.clear()
    got = ohlcv(con, interval, clock=clock, **kw)
    assert bool(reads) == (clock == "recv")
    assert_same(got, ohlcv(con, interval, clock=clock, rollups=False, **kw))


def test_the_two_clocks_differ_where_trades_cross_midnight(built):
    """The event clock really puts trades received after midnight into the day before
    (else the spanning-minute case would test nothing)."""
    con = connect(built)
    ev = ohlcv(con, "1d", symbols="binance:X").to_pydict()
    rv = ohlcv(con, "1d", symbols="binance:X", clock="recv").to_pydict()
    assert sum(ev["trades"]) == sum(rv["trades"]) and ev["trades"] != rv["trades"]
    assert len(ev["bar"]) == 4 and len(rv["bar"]) == 3


def _poison(path) -> None:
    """Rewrite a rollup with every high raised by 1000, its footer kept: whatever reads
    it shows the raise."""
    t = pq.read_table(path)
    md = pq.read_metadata(path).metadata
    t = t.set_column(t.schema.get_field_index("high"), "high", pa.compute.add(t.column("high"), 1000.0))
    with pq.ParquetWriter(path, t.schema) as w:
        w.write_table(t)
        w.add_key_value_metadata({k: v for k, v in md.items() if k.startswith(b"wrdata.")})


def test_unaligned_bounds_and_intervals_read_the_trades(copy, reads):
    root = copy()
    for d in DATES:
        _poison(rollup_path(str(root), "binance", d))
    con = connect(root)

    def poisoned(**kw) -> bool:
        got = ohlcv(con, **kw).to_pydict()
        want = ohlcv(con, rollups=False, **kw).to_pydict()
        assert got["bar"] == want["bar"]
        return got["high"] != want["high"]

    # the poisoned rollups are read when the bars can come from them ...
    assert poisoned(interval="1m", providers="binance")
    assert poisoned(interval="1h", providers="binance", start=DATES[1], end=DATES[2])
    assert poisoned(interval="1m", providers="binance", start=f"{DATES[1]}T00:01:00Z", clock="recv")
    # ... and not otherwise: the raw query, its rows and values
    reads.clear()
    assert not poisoned(interval="1m", providers="binance", start=f"{DATES[1]}T00:00:01Z")  # not on a minute
    assert not poisoned(interval="1m", providers="binance", end=f"{DATES[1]}T00:05:00Z")  # a minute, but the venue clock
    assert not poisoned(interval="1m", providers="binance", start=f"{DATES[1]}T00:00:00.5Z", clock="recv")
    assert not poisoned(interval="30s", providers="binance")
    assert not poisoned(interval="90s", providers="binance")
    assert reads == []
    assert poisoned(interval="120s", providers="binance")  # whole minutes, in seconds
    reads.clear()
    ohlcv(con, "1m", providers="binance", rollups=False)
    assert reads == []


def test_a_file_sealed_later_makes_its_rollup_stale(copy, reads):
    root = copy()
    extra = _rows("binance", DAYS[1], seed=99)
    # later trades of another writer, in the middle of day 2 (nothing of the others there)
    for k in extra:
        extra[k] = extra[k][:200]
    extra["ts_recv"] = [t + 6 * 3600 * S for t in extra["ts_recv"]]
    extra["ts_event"] = [None if t is None else t + 6 * 3600 * S for t in extra["ts_event"]]
    extra["trade_id"] = [i + 70_000 for i in extra["trade_id"]]
    write_files(root, "binance", "w-c", extra, pieces=1)
    con = connect(root)
    st = {(s.provider, s.date): s for s in rollup_status(con)}
    assert st[("binance", DATES[1])].state == "stale" and "trades files" in st[("binance", DATES[1])].reason
    assert {s.state for k, s in st.items() if k != ("binance", DATES[1])} == {"valid"}
    for clock in ("event", "recv"):
        for interval in ("1m", "1d"):
            reads.clear()
            got = ohlcv(con, interval, clock=clock)
            assert len(reads) == 5 and all(f"date={DATES[1]}" not in p or "provider=kraken" in p for p in reads)
            assert_same(got, ohlcv(con, interval, clock=clock, rollups=False))
    # the new trades are in the bars
    assert sum(ohlcv(con, "1d", providers="binance").column("trades").to_pylist()) == \
        con.sql("SELECT count(*) FROM trades WHERE provider = 'binance' AND price IS NOT NULL").fetchall()[0][0]
    # the CLI rebuilds what is stale, and only that
    r = CliRunner().invoke(main, ["rollup", "--root", str(root)])
    assert r.exit_code == 0, r.output
    assert f"ohlcv_1m/binance/{DATES[1]}: built from 7 trades files" in r.output and "was stale" in r.output
    assert r.output.count("up to date") == 5
    con = connect(root)
    assert {s.state for s in rollup_status(con)} == {"valid"}
    reads.clear()
    assert_same(ohlcv(con, "1m"), ohlcv(con, "1m", rollups=False))
    assert len(reads) == 6


def test_a_change_in_dropped_duplicates_makes_a_rollup_stale(copy, reads):
    """A writer's file on day 1 repeats trades that day 2's files hold, received earlier:
    the merged view now drops day 2's rows of them. Day 2's files did not change, its
    drop fingerprint did."""
    root = copy()
    con0 = connect(root)
    first = con0.sql(
        f"SELECT epoch_ns(ts_recv), epoch_ns(ts_event), symbol, trade_id, price, size FROM trades WHERE provider = 'kraken' "
        f"AND date = DATE '{DATES[1]}' AND ts_event IS NOT NULL AND price IS NOT NULL ORDER BY ts_recv LIMIT 5").fetchall()
    rows: dict[str, list] = {k: [] for k in ("ts_recv", "ts_event", "symbol", "conn", "seq", "idx", "price", "size", "trade_id")}
    for i, (_, ev, sym, tid, p, q) in enumerate(first):
        for k, v in (("ts_recv", DAYS[1] * DAY_NS - 5 * MS + i), ("ts_event", ev), ("symbol", sym), ("conn", 1), ("seq", i),
                     ("idx", 0), ("price", p), ("size", q), ("trade_id", tid)):
            rows[k].append(v)
    write_files(root, "kraken", "w-z", rows, pieces=1)
    con = connect(root)
    st = {(s.provider, s.date): s for s in rollup_status(con)}
    assert st[("kraken", DATES[1])].state == "stale" and "duplicates" in st[("kraken", DATES[1])].reason
    assert st[("kraken", DATES[0])].state == "stale"  # a new file there
    assert st[("binance", DATES[1])].state == "valid"
    reads.clear()
    assert_same(ohlcv(con, "1m", providers="kraken"), ohlcv(con, "1m", providers="kraken", rollups=False))
    assert len(reads) == 1  # kraken's third day only
    assert_same(ohlcv(con, "1d", clock="recv"), ohlcv(con, "1d", clock="recv", rollups=False))


def test_journal_rows_of_a_partition_are_included(copy, reads):
    root = copy()
    fs = StorageFS(root, fsync=False)
    day = DAYS[2]
    extra = _rows("binance", day, seed=5)
    for k in extra:
        extra[k] = extra[k][:300]
    extra["trade_id"] = [i + 90_000 for i in extra["trade_id"]]
    t = _batch(extra, "w-live")
    path = os.path.join(partition_dir(fs.journal_dir, "trades", "binance", day), segment_name("w-live", 0))
    w = SegmentWriter(fs, path, "trades", "binance", day, "w-live", 0)
    ts = t.column("ts_recv").cast(pa.int64())
    w.append(t.combine_chunks().to_batches()[0], ts[0].as_py(), ts[-1].as_py(), ())
    w.close()
    con = connect(root)
    assert con.sql("SELECT count(*) FROM wrdata_files WHERE NOT sealed").fetchall() == [(1,)]
    st = {(s.provider, s.date): s.state for s in rollup_status(con)}
    assert st[("binance", DATES[2])] == "open" and st[("binance", DATES[1])] == "valid"
    for clock in ("event", "recv"):
        reads.clear()
        got = ohlcv(con, "1h", clock=clock)
        assert len(reads) == 5 and not any("provider=binance/date=" + DATES[2] in p for p in reads)
        assert_same(got, ohlcv(con, "1h", clock=clock, rollups=False))
    n = con.sql("SELECT count(*) FROM trades WHERE price IS NOT NULL").fetchall()[0][0]
    assert sum(ohlcv(con, "1M").column("trades").to_pylist()) == n
    # a partition still being recorded gets no rollup
    res = {(r.provider, r.date): r for r in build_rollups(str(root))}
    assert res[("binance", DATES[2])].status == "skipped" and "journal" in res[("binance", DATES[2])].reason
    assert all(r.status == "valid" for k, r in res.items() if k != ("binance", DATES[2]))


def test_a_corrupt_rollup_is_ignored_and_reported(copy, reads, caplog):
    root = copy()
    bad = rollup_path(str(root), "kraken", DATES[0])
    with open(bad, "r+b") as f:
        f.seek(-40, os.SEEK_END)
        f.write(b"\0" * 40)
    con = connect(root)
    with caplog.at_level(logging.WARNING, logger="wrdata.queries"):
        got = ohlcv(con, "5m")
    assert any("unreadable rollup" in r.message and bad in r.message for r in caplog.records)
    assert len(reads) == 5
    assert_same(got, ohlcv(con, "5m", rollups=False))
    rep = verify(str(root), quarantine=False)
    probs = [f for f in rep.problems if f.kind == "rollup"]
    assert [f.path for f in probs] == [bad] and not rep.ok
    # a stale one is a note, not a problem
    write_files(root, "binance", "w-c", {k: v[:20] for k, v in _rows("binance", DAYS[0], seed=4).items()}, pieces=1)
    rep = verify(str(root), quarantine=False)
    notes = [f for f in rep.notes if f.kind == "rollup"]
    assert [f.path for f in notes] == [rollup_path(str(root), "binance", DATES[0])] and "stale" in notes[0].message
    r = CliRunner().invoke(main, ["verify", "--root", str(root), "--no-quarantine", "--table", "trades"])
    assert r.exit_code == 1 and f"PROBLEM rollup: {bad}" in r.output
    # a rebuild replaces both
    r = CliRunner().invoke(main, ["rollup", "--root", str(root)])
    assert r.exit_code == 0, r.output
    assert verify(str(root), quarantine=False).ok
    assert {s.state for s in rollup_status(connect(root))} == {"valid"}


def test_cli_rollup_and_compact_build_them(rec, tmp_path, reads):
    root = tmp_path / "data"
    shutil.copytree(rec, root)
    run = CliRunner().invoke
    r = run(main, ["rollup", "--root", str(root), "--date", DATES[0], "--provider", "binance"])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines() == [r.output.splitlines()[0]] and r.output.startswith(f"ohlcv_1m/binance/{DATES[0]}: built from 6")
    path = rollup_path(str(root), "binance", DATES[0])
    assert os.path.basename(path) == ROLLUP_NAME and os.path.exists(path)
    # nothing but the file: the temporary name is gone
    assert os.listdir(os.path.dirname(path)) == [ROLLUP_NAME]
    r = run(main, ["rollup", "--root", str(root), "--date", DATES[0], "--provider", "binance"])
    assert r.output.strip() == f"ohlcv_1m/binance/{DATES[0]}: up to date"
    # compact rewrites day 2 of binance (6 files into 2) and builds its rollup on the new files
    r = run(main, ["compact", "--root", str(root), "--date", DATES[1], "--table", "trades"])
    assert r.exit_code == 0, r.output
    assert f"trades/binance/{DATES[1]}: merged 6 files into 2" in r.output
    assert f"ohlcv_1m/binance/{DATES[1]}: built from 2 trades files" in r.output
    assert f"ohlcv_1m/kraken/{DATES[1]}: built from 1 trades files" in r.output
    con = connect(root)
    st = {(s.provider, s.date): s.state for s in rollup_status(con)}
    assert st == {("binance", DATES[0]): "valid", ("binance", DATES[1]): "valid", ("kraken", DATES[1]): "valid",
                  ("binance", DATES[2]): "missing", ("kraken", DATES[0]): "missing", ("kraken", DATES[2]): "missing"}
    reads.clear()
    assert_same(ohlcv(con, "1h"), ohlcv(con, "1h", rollups=False))
    assert len(reads) == 3
    # the rollups are no table's files: listings, verify and replay do not see them
    from wrdata.storage import list_sealed, read_table

    assert not any("ohlcv_1m" in f.path for f in list_sealed(str(root)))
    assert verify(str(root), quarantine=False).ok
    assert read_table(str(root), "trades").num_rows == con.sql("SELECT count(*) FROM trades_all").fetchall()[0][0]
    r = run(main, ["ohlcv", "X", "--root", str(root), "--interval", "1h", "--format", "csv", "--provider", "binance"])
    r2 = run(main, ["ohlcv", "X", "--root", str(root), "--interval", "1h", "--format", "csv", "--provider", "binance", "--no-rollups"])
    assert r.exit_code == 0 and r.output.splitlines()[0] == r2.output.splitlines()[0]
    assert len(r.output.splitlines()) == len(r2.output.splitlines()) > 3


def test_rollups_on_a_filesystem_that_is_not_local(built, tmp_path, reads):
    """A root on a pyarrow filesystem other than the local one (the path object stores
    take): written by upload-then-move, read through pyarrow."""
    import pyarrow.fs as pafs

    shutil.copytree(built, tmp_path / "data")
    for p in (tmp_path / "data" / "ohlcv_1m").rglob(ROLLUP_NAME):
        p.unlink()
    fs = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    res = build_rollups("data", filesystem=fs, providers=["kraken"])
    assert [r.status for r in res] == ["built"] * 3
    assert not [p for p in (tmp_path / "data" / "ohlcv_1m").rglob("*") if p.is_file() and p.name != ROLLUP_NAME]
    con = connect("data", filesystem=fs, journal=False)
    assert state_of(con).engine == "arrow"
    reads.clear()
    assert_same(ohlcv(con, "1d", providers="kraken"), ohlcv(con, "1d", providers="kraken", rollups=False))
    assert len(reads) == 3


def test_keys_too_wide_to_pack(tmp_path, reads):
    """Sequence numbers so far apart that the total-order key does not fit in a HUGEINT
    beside the timestamp: rollups are then built ordering by the key struct, and still
    give the raw bars."""
    from wrdata.queries.helpers import Filter, _writers, order_key, source

    root = tmp_path / "data"
    for d in DAYS[:2]:
        a = _rows("binance", d, seed=d)
        a["seq"] = [s << 50 for s in a["seq"]]
        b = _second_writer(a, seed=d)
        b["conn"] = [1 << 20] * len(b["conn"])
        write_files(root, "binance", "w-a", a)
        write_files(root, "binance", "w-b", b)
    con = connect(root)
    flt = Filter(None, None, None, None)
    src = source(con, "trades", flt)
    assert order_key(con, src, "TRUE", _writers(con, "trades", flt)).startswith("(ts_recv")
    assert all(r.status == "built" for r in build_rollups(str(root)))
    for clock in ("event", "recv"):
        reads.clear()
        got = ohlcv(con, "1m", clock=clock)
        assert len(reads) == 2
        assert_same(got, ohlcv(con, "1m", clock=clock, rollups=False))
