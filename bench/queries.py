"""DuckDB queries over a large recording: 1-minute OHLCV over every trade, and one
symbol's trades over one hour, beside floors measured in the same run.

Run::

    python -m bench.queries                      # 100M trades (generated once, then reused)
    python -m bench.queries --rows 10_000_000    # a quick run
    python -m bench.queries --quick | --smoke    # the suite's sizes: 2M trades over 2 days | 20k over 1 day
    python -m bench.queries --days 1 --symbols 200   # one dense day of many symbols

The recording is generated once under ``bench/results/queries-<rows>-<days>d-<symbols>s``
(gitignored; ``--root`` to put it elsewhere, ``--regenerate`` to write it again) by
wrdata's own sealing code (:func:`wrdata.storage.write_sealed`, the function that seals
journal segments): synthetic trades, vectorised with numpy, one hourly file per
(provider, hour) as a capture daemon with the default hourly roll leaves them, sorted by
the total order and written with the storage layer's row groups, zstd level and
statistics. Symbols have Zipf-distributed activity (the busiest ~1/H(S) of all trades).

Figures printed (medians of ``--repeat`` runs after one warm-up, so the OS page cache is
warm: these are CPU figures, not disk figures):

- ``ohlcv``: ``wrdata.queries.ohlcv(con, interval="1m", rollups=False)`` over all trades:
  open/close by the total order key, high, low, volume, count, VWAP per (provider,
  symbol, minute);
- ``ohlcv`` from minute rollups: the same call reading the recording's minute rollups
  (:mod:`wrdata.queries.rollup`; built first if missing, and the build's time and bytes
  printed), checked to give the same bars; its floor is DuckDB aggregating the rollup
  files alone (no validity checks, no merge of the partitions' trades);
- ``range``: ``SELECT * FROM trades WHERE symbol = ? AND ts_recv >= ? AND ts_recv < ?``
  for one hour of the busiest symbol, through the ``trades`` view;
- floors: the same aggregation with ``arg_min/arg_max`` by ``ts_recv`` only (what the
  total-order tie-break costs), a bare ``pyarrow.dataset`` scan of the columns OHLCV
  reads, DuckDB's ``count(*)`` with the same filter as the range query, and the range
  query straight on ``read_parquet`` of the one file that holds the hour;
- how much the range query touched: row groups whose statistics admit the hour and
  the symbol, over all row groups (from the footers).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa

from .common import Report, add_mode_args, header, pick
from .storage_common import machine

HOUR_NS = 3_600_000_000_000
DAY_NS = 24 * HOUR_NS
T0 = 1_767_225_600_000_000_000  # 2026-01-01 00:00:00 UTC
RESULTS = Path(__file__).parent / "results"


# ---------------------------------------------------------------------------------------
# generation


def _symbols(n: int) -> list[str]:
    base = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "DOGEUSDT", "ADAUSDT", "AVAXUSDT", "LINKUSDT", "TRXUSDT"]
    return (base + [f"S{i:04d}USDT" for i in range(len(base), n)])[:n]


def _hour_batch(hour: int, rows: int, nsym: int, seed: int, writer: str) -> pa.RecordBatch:
    """One hour of trades of ``nsym`` symbols, sorted by (ts_recv, conn, seq, idx)."""
    from wrdata.storage import schema

    rng = np.random.default_rng([seed, hour])
    s = schema("trades")
    start = T0 + hour * HOUR_NS
    ts = np.sort(rng.integers(0, HOUR_NS, rows, dtype=np.int64)) + start
    w = 1.0 / np.arange(1, nsym + 1)
    sym = rng.choice(nsym, size=rows, p=w / w.sum()).astype(np.int32)
    # per-symbol random walks of log price, and consecutive trade ids per symbol
    steps = rng.normal(0.0, 2e-4, rows)
    order = np.argsort(sym, kind="stable")
    counts = np.bincount(sym, minlength=nsym)
    ends = np.cumsum(counts)
    cs = np.cumsum(steps[order])
    offs = np.repeat(np.concatenate([[0.0], cs[ends[:-1] - 1]]), counts)
    walk = np.empty(rows)
    walk[order] = cs - offs
    rank = np.empty(rows, dtype=np.int64)
    rank[order] = np.arange(rows) - np.repeat(ends - counts, counts)
    base = 10.0 ** rng.uniform(-1, 4.8, nsym)
    price = np.round(base[sym] * np.exp(walk + 0.01 * np.sin(hour)), 2)
    price = np.maximum(price, 0.01)
    size = np.round(rng.lognormal(-3.0, 1.5, rows), 3) + 0.001
    side = rng.integers(0, 2, rows).astype(np.int32)
    trade_id = 1_000_000_000 + hour * rows + rank  # stays increasing per symbol across hours
    lat = rng.integers(200_000, 5_000_000, rows)
    ts_event = (ts - lat) // 1_000_000 * 1_000_000  # venue time in ms, like Binance
    seq = hour * rows + np.arange(rows, dtype=np.int64)

    def dict_of(indices: np.ndarray, values: list[str]) -> pa.DictionaryArray:
        return pa.DictionaryArray.from_arrays(pa.array(indices, pa.int32()), pa.array(values, pa.string()))

    zeros = np.zeros(rows, dtype=np.int32)
    cols = {
        "ts_recv": pa.array(ts, pa.timestamp("ns", "UTC")),
        "ts_event": pa.array(ts_event, pa.timestamp("ns", "UTC")),
        "symbol": dict_of(sym, _symbols(nsym)),
        "writer": dict_of(zeros, [writer]),
        "conn": pa.array(zeros),
        "seq": pa.array(seq),
        "idx": pa.array(zeros),
        "source": dict_of(zeros, ["stream"]),
        "channel": dict_of(zeros, ["trade"]),
        "price": pa.array(price),
        "size": pa.array(size),
        "side": dict_of(side, ["buy", "sell"]),
        "trade_id": pa.array(trade_id),
    }
    arrays = [cols[f.name] if f.name in cols else pa.nulls(rows, f.type) for f in s]
    return pa.RecordBatch.from_arrays(arrays, schema=s)


def _write_hour(args: tuple) -> tuple[int, int]:
    root, provider, hour, rows, nsym, seed, rg_rows = args
    from wrdata.storage import StorageFS, write_sealed
    from wrdata.storage.layout import day_of, partition_dir

    writer = f"bench-{provider}"
    fs = StorageFS(root, fsync=False)
    batch = _hour_batch(hour, rows, nsym, seed, writer)
    day = day_of(T0 + hour * HOUR_NS)
    # the temporary file's name: unique per (writer, hour), in the partition directory
    placeholder = f"{partition_dir(fs.root, 'trades', provider, day)}/{writer}-{hour}.parquet"
    chunks = [batch.slice(i, 65536) for i in range(0, batch.num_rows, 65536)]  # as journal units come
    path, n, size = write_sealed(fs, chunks, "trades", provider, day, writer, placeholder=placeholder, row_group_rows=rg_rows)
    return n, size


def generate(root: Path, rows: int, days: int, nsym: int, providers: int, seed: int, rg_rows: int | None, jobs: int) -> float:
    hours = days * 24
    per = rows // (hours * providers)
    extra = rows - per * hours * providers
    tasks = []
    for p in range(providers):
        for h in range(hours):
            n = per + (1 if p * hours + h < extra else 0)
            tasks.append((str(root), f"venue{p}" if providers > 1 else "binance", h, n, nsym, seed + p, rg_rows))
    t0 = time.perf_counter()
    done = 0
    with ProcessPoolExecutor(jobs) as ex:
        for n, _ in ex.map(_write_hour, tasks):
            done += n
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------------------
# measuring


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(fn, repeat: int) -> tuple[float, float, object]:
    """(median wall s, median CPU s of this process, last result) after one warm-up run."""
    result = fn()
    walls, cpus = [], []
    for _ in range(repeat):
        c0, t0 = _cpu(), time.perf_counter()
        result = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(_cpu() - c0)
    return statistics.median(walls), statistics.median(cpus), result


def touched(files: list[str], lo: int, hi: int, symbol: str) -> tuple[int, int, int, int]:
    """(row groups, bytes) a reader must decode for the range query by the footers'
    statistics, and the totals."""
    import pyarrow.parquet as pq

    rg_hit = rg_all = b_hit = b_all = 0
    for path in files:
        md = pq.read_metadata(path)
        names = md.schema.to_arrow_schema().names
        it, isym = names.index("ts_recv"), names.index("symbol")
        for i in range(md.num_row_groups):
            rg = md.row_group(i)
            size = rg.total_byte_size
            rg_all += 1
            b_all += size
            st, ss = rg.column(it).statistics, rg.column(isym).statistics
            t_lo, t_hi = (st.min, st.max) if st is not None and st.has_min_max else (None, None)
            if t_lo is not None:
                t_lo, t_hi = _ns(t_lo), _ns(t_hi)
                if t_hi < lo or t_lo >= hi:
                    continue
            if ss is not None and ss.has_min_max and not (ss.min <= symbol <= ss.max):
                continue
            rg_hit += 1
            b_hit += size
    return rg_hit, rg_all, b_hit, b_all


def _ns(v) -> int:
    if isinstance(v, int):
        return v
    return int(pa.scalar(v, pa.timestamp("ns", "UTC")).value)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_mode_args(ap)
    ap.add_argument("--rows", type=lambda s: int(s.replace("_", "")), default=None, help="default 100M (quick 2M, smoke 20k)")
    ap.add_argument("--days", type=int, default=None, help="days the trades spread over (default 14; quick 2, smoke 1)")
    ap.add_argument("--all", action="store_true", help="every floor and variant (the suite runs the main ones)")
    ap.add_argument("--symbols", type=int, default=20)
    ap.add_argument("--providers", type=int, default=1)
    ap.add_argument("--row-group-rows", type=int, default=None, help="rows per row group (default: the storage layer's)")
    ap.add_argument("--root", help="where the recording is (default bench/results/queries-...)")
    ap.add_argument("--regenerate", action="store_true")
    ap.add_argument("--repeat", type=int, default=None, help="timed runs after a warm-up (default 3; suite: 2, smoke 1)")
    ap.add_argument("--threads", type=int, default=None, help="DuckDB threads (default: all cores)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--only", choices=["ohlcv", "range"], help="run one of the two queries")
    args = ap.parse_args(argv)
    args.rows = args.rows or pick(args.mode, 20_000, 2_000_000, 100_000_000)
    args.days = args.days or pick(args.mode, 1, 2, 14)
    args.repeat = args.repeat or pick(args.mode, 1, 2, 2 if args.json_out else 3)
    header("DuckDB queries over a generated recording", args.mode)

    import duckdb

    from wrdata.queries import connect
    from wrdata.storage import list_sealed
    from wrdata.storage.schema import PARQUET_DEFAULTS

    rg = args.row_group_rows or PARQUET_DEFAULTS["row_group_rows"]
    name = f"queries-{args.rows}-{args.days}d-{args.symbols}s-{args.providers}p-rg{rg}"
    root = Path(args.root) if args.root else RESULTS / name
    scratch = None
    if args.mode == "smoke" and not args.root:  # tests may run side by side: a private root
        import tempfile

        scratch = tempfile.mkdtemp(prefix="wrdata-bench-queries-")
        root = Path(scratch) / name
    print(f"# {machine()}")
    if args.regenerate and root.exists():
        shutil.rmtree(root)
    marker = root / "_complete"
    if not marker.exists():
        if root.exists():
            shutil.rmtree(root)
        print(f"generating {args.rows:,} trades ({args.days} days, {args.symbols} symbols, {args.providers} providers) "
              f"into {root} with wrdata.storage.write_sealed, {os.cpu_count()} processes ...", flush=True)
        took = generate(root, args.rows, args.days, args.symbols, args.providers, args.seed, args.row_group_rows, os.cpu_count() or 1)
        marker.write_text("ok\n")
        print(f"  generated in {took:.1f} s ({args.rows / took / 1e6:.2f} M trades/s)")
    files = [f.path for f in list_sealed(str(root), "trades")]
    size = sum(os.path.getsize(p) for p in files)
    t0 = time.perf_counter()
    con = connect(root, threads=args.threads)
    t_connect = time.perf_counter() - t0
    threads = con.execute("SELECT current_setting('threads')").fetchall()[0][0]
    n = con.sql("SELECT count(*) FROM trades").fetchall()[0][0]
    print(f"recording: {n:,} trades in {len(files)} files, {size / 1e9:.2f} GB ({size / n:.2f} B/trade), "
          f"row groups of {rg:,} rows, sorted by (ts_recv, conn, seq, idx); DuckDB {duckdb.__version__}, {threads} threads")
    print(f"connect(): {t_connect * 1e3:.0f} ms (lists the files, reads the journal, checks the footers' columns)")
    print()
    rows_out = []

    def report(label: str, wall: float, cpu: float, extra: str = "") -> None:
        rows_out.append((label, wall, cpu, extra))
        print(f"  {label:<58} {wall * 1e3:>9.1f} ms  cpu {cpu * 1e3:>9.1f} ms  {extra}", flush=True)

    if args.only != "range":
        _bench_ohlcv(con, args, report)
        built = _bench_rollups(con, root, args, report)
    if args.only != "ohlcv":
        _bench_range(con, root, files, n, args, report)
    rep = Report("queries", args.mode, f"{n:,} trades in {len(files)} files ({args.days} days, {args.symbols} symbols), "
                 f"DuckDB {duckdb.__version__} with {threads} threads, median of {args.repeat} after a warm-up")
    got = {label: (wall, cpu) for label, wall, cpu, _ in rows_out}
    at_scale = n >= 100_000_000
    scale = "" if at_scale else f" (targets are for 100M trades: this is {n / 1e6:g}M)"
    g = "queries"
    if RAW_OHLCV in got:
        w, c = got[RAW_OHLCV]
        fw, _ = got["floor: DuckDB scan of the same columns, no grouping"]
        rep.add(g, "1-minute OHLCV over all trades (wall)", "ms", w * 1e3, fw * 1e3,
                "DuckDB scan of the same columns, no grouping (max/sum), same connection", target="< 3 s at 100M",
                met=(w < 3.0) if at_scale else None, lower_is_better=True,
                note=f"CPU {c * 1e3:,.0f} ms; exact open/close by the total order{scale}")
    if ROLLUP_OHLCV in got:
        w, c = got[ROLLUP_OHLCV]
        fw, _ = got[ROLLUP_FLOOR]
        rw, _ = got[RAW_OHLCV]
        rep.add(g, "1-minute OHLCV over all trades, from minute rollups (wall)", "ms", w * 1e3, fw * 1e3,
                "DuckDB read_parquet of the rollup files, the same GROUP BY, no validity checks", target="< 3 s at 100M",
                met=(w < 3.0) if at_scale else None, lower_is_better=True,
                note=f"CPU {c * 1e3:,.0f} ms; same bars as the raw query ({rw / w:,.1f}x faster); every partition's rollup "
                     f"valid{scale}")
        secs, cpu, nbytes, nrows, nparts, when = built
        rep.add(g, "minute rollups: build, all days (wall)", "s", secs, None, target="",
                lower_is_better=True, note=f"CPU {cpu:,.1f} s; {nparts} partitions, {nrows:,} minute rows (both clocks); {when}")
        rep.add(g, "minute rollups: bytes", "MB", nbytes / 1e6, size / 1e6, "the trades' sealed files",
                lower_is_better=True, note=f"{nbytes / nrows:.1f} B per minute row")
    label = "wrdata.queries.scan(con, 'trades', symbols, start, end)"
    if label in got:
        w, c = got[label]
        fw = next(v[0] for k, v in got.items() if k.startswith("floor: read_parquet"))
        rep.add(g, "one symbol, one hour range query (scan, total order)", "ms", w * 1e3, fw * 1e3,
                "DuckDB read_parquet of the file(s) holding the hour, same filter, no ORDER BY", target="< 100 ms at 100M",
                met=(w < 0.1) if at_scale else None, lower_is_better=True, note=f"CPU {c * 1e3:,.0f} ms{scale}")
    rep.finish(args.json_out)
    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)


RAW_OHLCV = "wrdata.queries.ohlcv(con, '1m', rollups=False)"
ROLLUP_OHLCV = "wrdata.queries.ohlcv(con, '1m') from minute rollups"
ROLLUP_FLOOR = "floor: DuckDB GROUP BY of the rollup files alone"


def _bench_ohlcv(con, args, report) -> None:
    import pyarrow.dataset as pds

    from wrdata.queries import ohlcv
    from wrdata.storage import list_sealed

    files = [f.path for f in list_sealed(str(con_root(con)), "trades")]
    print("1-minute OHLCV over all trades (target < 3 s on 2 cores):")
    w, c, bars = timed(lambda: ohlcv(con, "1m", rollups=False), args.repeat)
    report(RAW_OHLCV, w, c, f"{bars.num_rows:,} bars")
    _raw_bars[0] = bars
    src = "trades"
    b = "epoch_ns(coalesce(ts_event, ts_recv)) // 60000000000"
    if args.all:
        w, c, _ = timed(lambda: ohlcv(con, "1m", clock="recv"), args.repeat)
        report("  same, clock='recv'", w, c)
        w, c, _ = timed(lambda: con.sql(
            f"SELECT {b} AS bar, provider, symbol, arg_min(price, epoch_ns(ts_recv)), max(price), min(price), "
            f"arg_max(price, epoch_ns(ts_recv)), sum(size), count(*), sum(price * size) / sum(size) FROM {src} GROUP BY ALL"
        ).to_arrow_table(), args.repeat)
        report("floor: same SQL, open/close by ts_recv only (no tie-break)", w, c)
    w, c, _ = timed(lambda: con.sql(
        f"SELECT {b} AS bar, provider, symbol, max(price), min(price), sum(size), count(*) FROM {src} GROUP BY ALL"
    ).to_arrow_table(), args.repeat)
    report("floor: high/low/volume/count only (no open/close)", w, c)
    w, c, _ = timed(lambda: con.sql(
        "SELECT max(ts_event), max(ts_recv), max(symbol), sum(price), sum(size) FROM trades").to_arrow_table(), args.repeat)
    report("floor: DuckDB scan of the same columns, no grouping", w, c)
    if args.all:
        dset = pds.dataset(files, format="parquet")
        cols = ["ts_recv", "ts_event", "symbol", "price", "size", "conn", "seq", "idx"]
        w, c, _ = timed(lambda: sum(b.num_rows for b in dset.to_batches(columns=cols)), args.repeat)
        report("floor: bare pyarrow.dataset scan of the columns OHLCV reads", w, c)
    print()


_raw_bars: list = [None]


def _bench_rollups(con, root: Path, args, report) -> tuple:
    """Build the minute rollups if the recording has none valid (timed, and the time
    kept beside the recording for later runs), then time ohlcv() through them and check
    that its bars are the raw query's."""
    import json

    from wrdata.queries import ohlcv
    from wrdata.queries.rollup import ROLLUP_DIR, ROLLUP_NAME, build_rollups, rollup_status

    stamp = root / "_rollups_built.json"
    todo = [s for s in rollup_status(con) if s.state != "valid"]
    if todo or not stamp.exists():
        # every partition (force): the time printed is that of a whole build
        print("building the minute rollups of every partition ...", flush=True)
        c0, t0 = _cpu(), time.perf_counter()
        build_rollups(str(root), con=con, force=True)
        secs, cpu = time.perf_counter() - t0, _cpu() - c0
        stamp.write_text(json.dumps({"seconds": secs, "cpu": cpu, "when": time.strftime("%Y-%m-%d %H:%M")}))
        when = "built in this run"
    else:
        saved = json.loads(stamp.read_text())
        secs, cpu, when = saved["seconds"], saved["cpu"], f"built {saved['when']} (kept with the recording)"
    paths = sorted(str(p) for p in (root / ROLLUP_DIR).rglob(ROLLUP_NAME))
    nbytes = sum(os.path.getsize(p) for p in paths)
    import pyarrow.parquet as pq

    nrows = sum(pq.read_metadata(p).num_rows for p in paths)
    print(f"  minute rollups: {len(paths)} files, {nrows:,} rows, {nbytes / 1e6:.1f} MB; build {secs:.1f} s wall, "
          f"{cpu:.1f} s CPU ({when})")
    assert all(s.state == "valid" for s in rollup_status(con)), "a rollup is not valid after building"
    w, c, bars = timed(lambda: ohlcv(con, "1m"), args.repeat)
    _check_same(bars, _raw_bars[0])
    report(ROLLUP_OHLCV, w, c, f"{bars.num_rows:,} bars, the same as the raw query's")
    lst = ", ".join(repr(p) for p in paths)
    w, c, _ = timed(lambda: con.sql(
        f"SELECT minute // 60000000000 AS b, provider, symbol, arg_min(open, open_key), max(high), min(low), "
        f"arg_max(close, close_key), sum(volume), sum(trades), sum(notional) / sum(volume) "
        f"FROM read_parquet([{lst}]) WHERE clock = 'event' GROUP BY ALL").to_arrow_table(), args.repeat)
    report(ROLLUP_FLOOR, w, c)
    print()
    return secs, cpu, nbytes, nrows, len(paths), when


def _check_same(got, want) -> None:
    """The rollup bars are the raw bars: every value, sums of doubles to 1e-12."""
    if want is None:
        return
    assert got.schema == want.schema and got.num_rows == want.num_rows, "rollup bars differ from the raw query's"
    for name in got.column_names:
        a, b = got.column(name).to_numpy(), want.column(name).to_numpy()
        if name in ("volume", "vwap"):
            assert np.allclose(a, b, rtol=1e-12, atol=0, equal_nan=True), f"rollup {name} differs from the raw query's"
        else:
            assert (a == b).all(), f"rollup {name} differs from the raw query's"


def con_root(con):
    from wrdata.queries.connection import root_of

    return root_of(con)


def _bench_range(con, root, files, n, args, report) -> None:
    from wrdata.queries import scan
    from wrdata.queries.helpers import ts_literal
    from wrdata.storage import list_sealed

    # one hour, the busiest symbol, mid-recording
    sym = _symbols(args.symbols)[0]
    hour = args.days * 24 // 2 + 13 if args.days > 1 else 13
    lo = T0 + hour * HOUR_NS
    hi = lo + HOUR_NS
    prov = "binance" if args.providers == 1 else "venue0"
    print(f"one symbol ({prov}:{sym}), one hour ({ts_literal(lo)[1:20]}..+1h) (target < 100 ms):")
    sql = (f"SELECT * FROM trades WHERE provider = '{prov}' AND symbol = '{sym}' "
           f"AND ts_recv >= {ts_literal(lo)} AND ts_recv < {ts_literal(hi)} ORDER BY ts_recv, provider, writer, conn, seq, idx")
    w, c, t = timed(lambda: scan(con, "trades", symbols=f"{prov}:{sym}", start=lo, end=hi), args.repeat)
    report("wrdata.queries.scan(con, 'trades', symbols, start, end)", w, c, f"{t.num_rows:,} rows, all columns, total order")
    w, c, t2 = timed(lambda: con.sql(sql).to_arrow_table(), args.repeat)
    assert t2.num_rows == t.num_rows
    report("SQL on the trades view (same rows)", w, c)
    w, c, _ = timed(lambda: con.sql(sql.replace("ORDER BY ts_recv, provider, writer, conn, seq, idx", "")).to_arrow_table(), args.repeat)
    report("  same, no ORDER BY", w, c)
    hour_files = [f.path for f in list_sealed(str(root), "trades", prov, lo, hi)]
    one = f"read_parquet([{', '.join(repr(p) for p in hour_files)}])"
    w, c, _ = timed(lambda: con.sql(
        f"SELECT * FROM {one} WHERE symbol = '{sym}' AND ts_recv >= {ts_literal(lo)} AND ts_recv < {ts_literal(hi)}").to_arrow_table(),
        args.repeat)
    report(f"floor: read_parquet of the {len(hour_files)} file(s) holding the hour, no ORDER BY", w, c)
    w, c, _ = timed(lambda: con.sql(
        f"SELECT count(*) FROM {one} WHERE symbol = '{sym}' AND ts_recv >= {ts_literal(lo)} AND ts_recv < {ts_literal(hi)}").to_arrow_table(),
        args.repeat)
    report("floor: count(*) of the same (filter columns only)", w, c)
    rg_hit, rg_all, b_hit, b_all = touched(files, lo, hi, sym)
    print(f"  touched by statistics: {rg_hit} of {rg_all} row groups, {b_hit / 1e6:.1f} of {b_all / 1e6:.0f} MB uncompressed "
          f"({100 * b_hit / b_all:.2f}%); the symbol's rows are {100 * t.num_rows / max(1, n):.3f}% of all trades")


if __name__ == "__main__":
    main()
