"""Views and helper queries on a recording made by the capture daemon, checked against
values computed from the simulator's seeded market."""

from __future__ import annotations

from collections import defaultdict

import pyarrow as pa
import pytest
from query_helpers import SYMBOLS, int_ts, recorded_ids, sim_trades

from wrdata.queries import connect, coverage, gaps, ohlcv, refresh, scan, spreads, vwap
from wrdata.queries.helpers import parse_interval, to_ns
from wrdata.sim.market import SyntheticMarket
from wrdata.storage import read_table


@pytest.fixture(scope="module")
def con(recording):
    return connect(recording.root)


def test_views_have_every_row_with_partition_columns(recording, con):
    for table in ("trades", "quotes", "events", "raw"):
        want = read_table(str(recording.root), table)
        got = con.sql(f"SELECT count(*), count(DISTINCT provider), min(date) FROM {table}").fetchall()[0]
        assert got[0] == want.num_rows > 0
        assert got[1] == 1
        assert str(got[2]) == want.column("date")[0].as_py().isoformat()
    # the two views that had nothing recorded still exist, empty, with their columns
    assert con.sql("SELECT count(*) FROM bars").fetchall() == [(0,)]
    assert "pos" in [r[0] for r in con.execute("DESCRIBE book").fetchall()]


def test_nanoseconds_survive_a_query(recording, con):
    want = read_table(str(recording.root), "trades", columns=["ts_recv", "trade_id"])
    ns = want.column("ts_recv").cast(pa.int64()).to_pylist()
    assert any(v % 1000 for v in ns)  # receive times have sub-microsecond digits to lose
    got = con.sql("SELECT epoch_ns(ts_recv) AS t, typeof(ts_recv) AS ty FROM trades ORDER BY ts_recv, conn, seq, idx").fetchall()
    assert [r[0] for r in got] == ns
    assert got[0][1] == "TIMESTAMPTZ_NS"
    # Arrow output keeps them too, and an equality filter on a nanosecond literal finds the row
    arrow = con.sql("SELECT ts_recv FROM trades ORDER BY ts_recv, conn, seq, idx").to_arrow_table()
    assert arrow.column(0).cast(pa.int64()).to_pylist() == ns
    t = next(v for v in ns if v % 1000)
    rows = scan(con, "trades", start=t, end=t + 1)
    assert rows.num_rows >= 1 and set(rows.column("ts_recv").cast(pa.int64()).to_pylist()) == {t}
    iso = con.sql(f"SELECT CAST(make_timestamp_ns({t}) AS VARCHAR)").fetchall()[0][0]
    assert to_ns(iso + "Z") == t


def _expected_bars(rec, interval_ns: int) -> dict[tuple[str, int], tuple]:
    out = {}
    for sym in SYMBOLS:
        trades = sim_trades(rec, sym, recorded_ids(rec.root, sym))  # in venue order (trade id)
        by_bar: dict[int, list] = defaultdict(list)
        for _tid, ts, p, q in trades:
            by_bar[ts // interval_ns * interval_ns].append((p, q))
        for b, pq in by_bar.items():
            prices = [p for p, _ in pq]
            vol = sum(q for _, q in pq)
            out[(sym, b)] = (prices[0], max(prices), min(prices), prices[-1], vol, len(pq), sum(p * q for p, q in pq) / vol)
    return out


@pytest.mark.parametrize("interval", ["1s", "250ms", "1m"])
def test_ohlcv_matches_the_market(recording, con, interval):
    n, unit = parse_interval(interval)
    step = n * {"ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000}[unit]
    want = _expected_bars(recording, step)
    got = int_ts(ohlcv(con, interval), "bar")
    assert got.column_names == ["bar", "provider", "symbol", "open", "high", "low", "close", "volume", "trades", "vwap"]
    rows = got.to_pylist()
    assert {(r["symbol"], r["bar"]) for r in rows} == set(want)
    for r in rows:
        o, h, lo, c, v, n_, vw = want[(r["symbol"], r["bar"])]
        assert (r["open"], r["high"], r["low"], r["close"]) == pytest.approx((o, h, lo, c), rel=1e-12)
        assert r["volume"] == pytest.approx(v, rel=1e-9)
        assert r["trades"] == n_
        assert r["vwap"] == pytest.approx(vw, rel=1e-9)
    # sorted by provider, symbol, bar
    assert [(r["symbol"], r["bar"]) for r in rows] == sorted((r["symbol"], r["bar"]) for r in rows)


def test_ohlcv_filters_and_receive_clock(recording, con):
    all_bars = ohlcv(con, "1s", symbols="binance:ETHUSDT", clock="recv").to_pylist()
    assert {r["symbol"] for r in all_bars} == {"ETHUSDT"}
    trades = read_table(str(recording.root), "trades", symbols="ETHUSDT")
    ts = trades.column("ts_recv").cast(pa.int64()).to_pylist()
    mid = ts[len(ts) // 2]
    part = ohlcv(con, "1s", symbols=["ETHUSDT"], start=mid, clock="recv").to_pylist()
    assert sum(r["trades"] for r in part) == sum(1 for t in ts if t >= mid)
    assert ohlcv(con, "1s", providers=["kraken"]).num_rows == 0


def test_open_and_close_follow_the_total_order_on_ties(tmp_path):
    """Trades of one frame share ts_recv: open/close are decided by idx (then conn, seq,
    writer), whatever order the rows are stored or scanned in."""
    from wrdata.message import StreamMessage
    from wrdata.storage import DatasetWriter

    t0 = 1_790_000_000_000_000_000
    msgs = []
    # frame 0 of conn 2 and frame 5 of conn 1 arrive in the same nanosecond
    for conn, seq, prices in ((2, 0, [10.0, 11.0, 12.0]), (1, 5, [20.0, 21.0])):
        for i, p in enumerate(prices):
            msgs.append(StreamMessage(provider="sim", symbol="X", kind="trade", ts_recv=t0, ts_event=t0, conn=conn, seq=seq,
                                      idx=i, channel="trade", price=p, size=1.0, trade_id=None))
    w = DatasetWriter(tmp_path / "d", writer_id="w1", fsync="never")
    w.start()
    w.on_messages(list(reversed(msgs)))
    w.close()
    bars = ohlcv(connect(tmp_path / "d"), "1s").to_pylist()
    assert len(bars) == 1
    # total order: conn 1 before conn 2; within a frame by idx
    assert (bars[0]["open"], bars[0]["close"], bars[0]["high"], bars[0]["low"]) == (20.0, 12.0, 21.0, 10.0)


def test_vwap_matches_the_market(recording, con):
    got = {r["symbol"]: r for r in vwap(con).to_pylist()}
    for sym in SYMBOLS:
        trades = sim_trades(recording, sym, recorded_ids(recording.root, sym))
        notional = sum(p * q for _, _, p, q in trades)
        volume = sum(q for _, _, _, q in trades)
        assert got[sym]["vwap"] == pytest.approx(notional / volume, rel=1e-9)
        assert got[sym]["volume"] == pytest.approx(volume, rel=1e-9)
        assert got[sym]["trades"] == len(trades)
    per_bar = vwap(con, "1s", symbols="BTCUSDT").to_pylist()
    assert sum(r["trades"] for r in per_bar) == got["BTCUSDT"]["trades"]
    assert sum(r["notional"] for r in per_bar) == pytest.approx(got["BTCUSDT"]["notional"], rel=1e-9)


def _market_bbo(rec) -> dict[tuple[str, int], tuple[float, float]]:
    """(symbol, update_id) → (bid, ask) after each event, from a second market with the
    simulator's seed: the tape does not depend on time."""
    m = SyntheticMarket(rec.market.seed, list(rec.market.specs.values()), rec.market.rate)
    out = {}
    for e in m.take(rec.market.seq):
        spec = m.spec(e.symbol)
        bb, _, ba, _ = e.bbo
        out[(e.symbol, e.update_id)] = (spec.price(bb), spec.price(ba))
    return out


def test_spreads_match_the_market(recording, con):
    bbo = _market_bbo(recording)
    quotes = int_ts(read_table(str(recording.root), "quotes", columns=["ts_recv", "symbol", "update_id"]), "ts_recv")
    per_sym: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r in quotes.to_pylist():  # total order
        bid, ask = bbo[(r["symbol"], r["update_id"])]
        per_sym[r["symbol"]].append((r["ts_recv"], ask - bid, (ask + bid) / 2))
    got = {r["symbol"]: r for r in spreads(con).to_pylist()}
    for sym, qs in per_sym.items():
        s = [x[1] for x in qs]
        g = got[sym]
        assert g["quotes"] == len(qs)
        assert g["mean_spread"] == pytest.approx(sum(s) / len(s), rel=1e-9)
        assert (g["min_spread"], g["max_spread"]) == pytest.approx((min(s), max(s)), rel=1e-9)
        assert g["mean_spread_bps"] == pytest.approx(sum(x[1] / x[2] for x in qs) / len(qs) * 1e4, rel=1e-9)
        dts = [qs[i + 1][0] - qs[i][0] for i in range(len(qs) - 1)]
        assert g["twa_spread"] == pytest.approx(sum(a * b for a, b in zip(s, dts, strict=False)) / sum(dts), rel=1e-9)
        assert g["crossed"] == sum(1 for x in s if x <= 0)


def test_coverage_counts_recorded_trades_and_the_missing_ids(recording, con):
    cov = {(r["table"], r["symbol"]): r for r in int_ts(coverage(con), "first_ts", "last_ts").to_pylist()}
    assert {t for t, _ in cov} == {"trades", "quotes"}
    for sym in SYMBOLS:
        ids = recorded_ids(recording.root, sym)
        r = cov[("trades", sym)]
        assert r["rows"] == len(ids)
        assert (r["first_trade_id"], r["last_trade_id"]) == (min(ids), max(ids))
        withheld = [i for i in recording.withheld.get(sym, []) if min(ids) <= i <= max(ids)]
        assert r["missing_ids"] == len(withheld)
        # ids the market produced in that range and the recording lacks are exactly those
        market_ids = {t.trade_id for t in recording.market.trades(sym) if min(ids) <= t.trade_id <= max(ids)}
        assert market_ids - ids == set(withheld)
        assert r["gaps"] == (1 if withheld else 0)
        assert r["backfilled"] == 0
    assert cov[("trades", "BTCUSDT")]["missing_ids"] == len(recording.withheld["BTCUSDT"]) > 0


def test_gaps_are_the_withheld_trades(recording, con):
    g = int_ts(gaps(con), "ts_recv", "gap_start", "gap_end").to_pylist()
    withheld = recording.withheld["BTCUSDT"]
    assert len(g) == 1
    assert (g[0]["symbol"], g[0]["first_missing_id"], g[0]["last_missing_id"]) == ("BTCUSDT", min(withheld), max(withheld))
    assert g[0]["missing_ids"] == len(withheld)
    assert g[0]["storage"] is False
    assert gaps(con, symbols="ETHUSDT").num_rows == 0
    assert gaps(con, symbols="BTCUSDT").num_rows == 1
    # connection events (no symbol) are there with statuses=...
    more = gaps(con, statuses=("gap", "connected"))
    assert more.num_rows > 1


def test_scan_is_in_total_order_and_pruned(recording, con):
    full = read_table(str(recording.root), "trades")
    ts = full.column("ts_recv").cast(pa.int64()).to_pylist()
    lo, hi = ts[len(ts) // 4], ts[3 * len(ts) // 4]
    got = scan(con, "trades", symbols=["binance:BTCUSDT"], start=lo, end=hi, columns=["ts_recv", "trade_id", "conn", "seq"])
    want = read_table(str(recording.root), "trades", start=lo, end=hi, symbols="BTCUSDT").select(["ts_recv", "trade_id", "conn", "seq"])
    assert got.num_rows > 0
    assert int_ts(got, "ts_recv").to_pydict() == int_ts(want, "ts_recv").to_pydict()
    with pytest.raises(ValueError, match="unknown column"):
        scan(con, "trades", columns=["nope"])


def test_outputs_and_bad_arguments(recording, con):
    rel = ohlcv(con, "1s", output="relation")
    assert rel.to_arrow_table().num_rows == ohlcv(con, "1s").num_rows
    with pytest.raises(ValueError, match="bad interval"):
        ohlcv(con, "1 minute")
    with pytest.raises(ValueError, match="bad output"):
        vwap(con, output="excel")
    with pytest.raises(ValueError, match="bad start"):
        ohlcv(con, start="yesterday")
    with pytest.raises(ValueError, match="empty time range"):
        ohlcv(con, start="2026-01-02", end="2026-01-01")
    with pytest.raises(ValueError, match="bad clock"):
        ohlcv(con, clock="wall")


def test_interval_and_time_parsing():
    assert parse_interval("15m") == (15, "m")
    assert parse_interval("1M") == (1, "M")
    assert to_ns("1970-01-01T00:00:01.000000001Z") == 1_000_000_001
    assert to_ns("1970-01-02") == 86_400_000_000_000
    assert to_ns("2026-11-23T14:30:00.123456789+01:00") - to_ns("2026-11-23T13:30:00Z") == 123_456_789


def test_calendar_buckets(tmp_path):
    """Weeks open on Monday 00:00 UTC, months on the 1st, whatever the session time zone."""
    from wrdata.message import StreamMessage
    from wrdata.storage import DatasetWriter

    times = ["2026-03-01T00:00:00Z", "2026-03-31T23:59:59.999999999Z", "2026-04-01T00:00:00Z", "2026-04-05T12:00:00Z",
             "2026-04-06T00:00:00Z"]
    w = DatasetWriter(tmp_path / "d", writer_id="w1", fsync="never")
    w.start()
    for i, t in enumerate(times):
        ns = to_ns(t)
        w.on_messages([StreamMessage(provider="sim", symbol="X", kind="trade", ts_recv=ns, ts_event=ns, conn=1, seq=i, idx=0,
                                     channel="trade", price=float(i + 1), size=1.0)])
    w.close()
    c = connect(tmp_path / "d")
    c.execute("SET TimeZone = 'America/New_York'")
    months = int_ts(ohlcv(c, "1M"), "bar").to_pylist()
    assert [(r["bar"], r["trades"]) for r in months] == [(to_ns("2026-03-01"), 2), (to_ns("2026-04-01"), 3)]
    weeks = int_ts(ohlcv(c, "1w"), "bar").to_pylist()
    # 2026-03-01 is a Sunday (week of Mon 02-23); 03-31 and 04-01/04-05 are in the weeks of 03-30; 04-06 is a Monday
    assert [(r["bar"], r["trades"]) for r in weeks] == [(to_ns("2026-02-23"), 1), (to_ns("2026-03-30"), 3), (to_ns("2026-04-06"), 1)]


def test_refresh_sees_new_files(recording, tmp_path):
    root = recording.copy(tmp_path / "d")
    c = connect(root)
    before = c.sql("SELECT count(*) FROM trades").fetchall()[0][0]
    files = sorted(root.glob("trades/*/*/*.parquet"))
    moved = files[-1].rename(tmp_path / "aside.parquet")
    refresh(c)
    fewer = c.sql("SELECT count(*) FROM trades").fetchall()[0][0]
    moved.rename(files[-1])
    refresh(c)
    assert fewer < before == c.sql("SELECT count(*) FROM trades").fetchall()[0][0]


def test_pandas_and_polars_outputs_keep_nanoseconds(recording, con):
    want = read_table(str(recording.root), "trades").column("ts_recv").cast(pa.int64()).to_pylist()
    df = scan(con, "trades", columns=["ts_recv", "price"], output="pandas")
    assert df["ts_recv"].astype("int64").tolist() == want
    assert str(df["ts_recv"].dt.tz) == "UTC"
    pl_df = scan(con, "trades", columns=["ts_recv", "price"], output="polars")
    assert pl_df["ts_recv"].dt.epoch("ns").to_list() == want
    bars = ohlcv(con, "1s", output="pandas")
    assert list(bars.columns) == ["bar", "provider", "symbol", "open", "high", "low", "close", "volume", "trades", "vwap"]
    assert len(bars) == ohlcv(con, "1s").num_rows
