"""Helper queries over a :func:`~wrdata.queries.connect` connection.

Every helper takes the connection (or a root path, for a one-off), optional
``providers``, ``symbols`` (``"BTCUSDT"`` or ``"binance:BTCUSDT"``) and a ``start``
(inclusive) / ``end`` (exclusive) on ``ts_recv`` (int ns, ``datetime``, or an ISO string;
naive means UTC; fractional seconds to the nanosecond), and returns the result as
``output="arrow"`` (default), ``"pandas"``, ``"polars"`` (optional imports) or
``"relation"`` (a DuckDB relation to refine with more SQL).

Where order matters (open and close of a bar, the duration of a quote, rows returned),
it is the recording's total order ``(ts_recv, provider, writer, conn, seq, idx)``, never
the order files happen to be read in. Ranges are pushed down to the files: a helper reads
only the sealed files whose names say they overlap ``[start, end)`` (plus the journal
tail), and DuckDB prunes row groups by their ``ts_recv``/``symbol`` statistics.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Any, Literal

import duckdb
import pyarrow as pa

from ..storage import TABLES
from .connection import _lit, _q, _select, connect, parquet_source, snapshot_of, state_of, view_columns

Output = Literal["arrow", "pandas", "polars", "relation"]
Time = int | datetime | date | str | None

_NS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000,
       "d": 86_400_000_000_000, "w": 7 * 86_400_000_000_000}
_INTERVAL_RE = re.compile(r"^\s*(\d+)\s*(ns|us|µs|ms|s|m|h|d|w|M)\s*$")
_WEEK_ORIGIN_NS = 4 * 86_400_000_000_000  # 1970-01-05, a Monday: weeks open on Monday 00:00 UTC


# ---------------------------------------------------------------------------------------
# arguments


def to_ns(t: Time, what: str = "time") -> int | None:
    """Nanoseconds since the epoch from an int (ns), a ``datetime`` (naive = UTC), a
    ``date`` (its midnight, UTC), or an ISO-8601 string (up to 9 fractional digits)."""
    if t is None:
        return None
    if isinstance(t, bool):
        raise ValueError(f"bad {what} {t!r}")
    if isinstance(t, int):
        return t
    if hasattr(t, "value") and hasattr(t, "tz_localize"):  # pandas.Timestamp: keeps ns
        ts = t if t.tzinfo is not None else t.tz_localize("UTC")
        return int(ts.tz_convert("UTC").value)
    if isinstance(t, datetime):
        return _dt_ns(t, 0)
    if isinstance(t, date):
        return _dt_ns(datetime(t.year, t.month, t.day), 0)
    if isinstance(t, str):
        s = t.strip()
        if re.fullmatch(r"-?\d+", s):
            return int(s)
        # fromisoformat keeps microseconds only: take the sub-microsecond digits apart
        extra = 0
        m = re.search(r"\.(\d+)", s)
        if m and len(m.group(1)) > 6:
            digits = m.group(1)
            extra = int(digits[6:9].ljust(3, "0"))
            s = s[: m.start(1) + 6] + s[m.end(1):]
        try:
            dt = datetime.fromisoformat(s.replace("Z", "+00:00") if s.endswith("Z") else s)
        except ValueError:
            raise ValueError(f"bad {what} {t!r}: expected ISO-8601 like 2026-11-23 or 2026-11-23T14:30:00.123456789Z, or ns since the epoch") from None
        return _dt_ns(dt, extra)
    raise ValueError(f"bad {what} {t!r}: expected an int (ns), a datetime, a date or an ISO-8601 string")


def _dt_ns(dt: datetime, extra_ns: int) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000 + extra_ns


def parse_interval(interval: str) -> tuple[int, str]:
    """``"1m"`` → ``(1, "m")``. Units: ns, us, ms, s, m (minutes), h, d, w (weeks from
    Monday 00:00 UTC), M (calendar months)."""
    m = _INTERVAL_RE.match(interval or "")
    if not m or int(m.group(1)) <= 0:
        raise ValueError(f"bad interval {interval!r}: expected a positive count and a unit (ns, us, ms, s, m, h, d, w, M), e.g. 1s, 5m, 1h, 1d, 1M")
    unit = "us" if m.group(2) == "µs" else m.group(2)
    return int(m.group(1)), unit


def ts_literal(ns: int) -> str:
    """A ``TIMESTAMPTZ_NS`` SQL literal for ``ns`` that does not depend on the session
    time zone (DuckDB prunes row groups with it, unlike a function of the column)."""
    sec, frac = divmod(ns, 1_000_000_000)
    dt = datetime.fromtimestamp(sec, UTC)
    return f"'{dt:%Y-%m-%d %H:%M:%S}.{frac:09d}+00'::TIMESTAMPTZ_NS"


def split_symbols(symbols: str | list[str] | tuple[str, ...] | None) -> list[tuple[str | None, str]]:
    """``["binance:BTCUSDT", "ETHUSDT"]`` → ``[("binance", "BTCUSDT"), (None, "ETHUSDT")]``."""
    if symbols is None:
        return []
    if isinstance(symbols, str):
        symbols = [s for s in symbols.split(",") if s.strip()] if "," in symbols else [symbols]
    from ..channels import split_target

    out = []
    for s in symbols:
        s = s.strip()
        if not s:
            continue
        out.append(split_target(s))
    return out


def _as_list(x: str | list[str] | tuple[str, ...] | None) -> list[str] | None:
    if x is None:
        return None
    if isinstance(x, str):
        return [p.strip() for p in x.split(",") if p.strip()]
    return list(x)


class Filter:
    """The rows a helper reads: providers, symbols and a ``ts_recv`` range."""

    def __init__(self, providers=None, symbols=None, start: Time = None, end: Time = None) -> None:
        self.providers = _as_list(providers)
        self.symbols = split_symbols(symbols)
        #: read every writer's trade rows, duplicates included (not the merged view)
        self.all_writers = False
        self.start = to_ns(start, "start")
        self.end = to_ns(end, "end")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError(f"empty time range: end ({end}) is not after start ({start})")
        # providers named in "provider:symbol" narrow the files too
        named = {p for p, _ in self.symbols if p is not None}
        if self.symbols and all(p is not None for p, _ in self.symbols):
            self.file_providers = sorted(named if self.providers is None else named & set(self.providers))
        else:
            self.file_providers = self.providers

    def where(self, table: str) -> str:
        conds = []
        if self.providers is not None:
            conds.append(f"provider IN ({', '.join(_lit(p) for p in self.providers)})" if self.providers else "FALSE")
        if self.symbols and table != "raw":
            ors = []
            plain = [s for p, s in self.symbols if p is None]
            if plain:
                ors.append(f"symbol IN ({', '.join(_lit(s) for s in plain)})")
            for p, s in self.symbols:
                if p is not None:
                    ors.append(f"(provider = {_lit(p)} AND symbol = {_lit(s)})")
            conds.append("(" + " OR ".join(ors) + ")")
        if self.start is not None:
            conds.append(f"ts_recv >= {ts_literal(self.start)}")
            conds.append(f"date >= DATE '{_date(self.start)}'")  # partition pruning
        if self.end is not None:
            conds.append(f"ts_recv < {ts_literal(self.end)}")
            conds.append(f"date <= DATE '{_date(self.end - 1)}'")
        return " AND ".join(conds) if conds else "TRUE"


def _date(ns: int) -> str:
    return datetime.fromtimestamp(ns // 1_000_000_000, UTC).date().isoformat()


# ---------------------------------------------------------------------------------------
# sources: the snapshot's files, pruned by name, and the journal tail

_counter = [0]


def source(con: duckdb.DuckDBPyConnection, table: str, flt: Filter, *, exclude: set[tuple[str, str]] | None = None) -> str:
    """A SQL subquery over ``table`` reading only the sealed files (of the connection's
    snapshot) whose provider and ``[first_ts, last_ts]`` can match ``flt``, plus the
    journal tail. Same columns as the view. ``exclude``: (provider, date) partitions
    whose sealed files are left out (their rows come from elsewhere: minute rollups)."""
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}: expected one of {', '.join(TABLES)}")
    state = state_of(con)
    if table not in state.snapshots:
        raise ValueError(f"the connection has no view {table!r} (connect(tables=...))")
    snap = snapshot_of(con, table)
    provs = set(flt.file_providers) if flt.file_providers is not None else None
    chosen = [
        f
        for f in snap.files
        if (provs is None or f.provider in provs)
        and (flt.start is None or f.last_ts >= flt.start)
        and (flt.end is None or f.first_ts < flt.end)
        and (exclude is None or (f.provider, f.date) not in exclude)
    ]
    files = [f.path for f in chosen]
    cols = view_columns(table)
    parts = []
    if files:
        if state.engine == "duckdb":
            src = parquet_source(files)
            # files of older schema versions may lack columns (footers are cached)
            present = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()}
            parts.append(_select(cols, present, src))
        else:
            from ..storage import dataset

            _counter[0] += 1
            name = f"_wrdata_scan_{table}_{_counter[0] % 8}"
            con.register(name, dataset(state.root, table, filesystem=state.filesystem, files=chosen))
            parts.append(_select(cols, None, name))
    if snap.tail is not None and snap.tail.num_rows:
        parts.append(_select(cols, None, f"_wrdata_tail_{table}"))
    if not parts:
        parts.append(f"SELECT * FROM {_q(table)} WHERE FALSE")
    if table == "trades" and state.drops is not None and not flt.all_writers:
        from .connection import anti_join

        return "(" + anti_join("(" + " UNION ALL ".join(parts) + ")") + ")"  # the merged view: each trade once
    return "(" + " UNION ALL ".join(parts) + ")"


def _con(con_or_root: Any) -> duckdb.DuckDBPyConnection:
    if isinstance(con_or_root, duckdb.DuckDBPyConnection):
        return con_or_root
    return connect(con_or_root)


def _out(rel: duckdb.DuckDBPyRelation, output: Output):
    if output == "relation":
        return rel
    if output == "arrow":
        return rel.to_arrow_table()
    if output == "pandas":
        try:
            import pandas  # noqa: F401
        except ImportError:
            raise ImportError("output='pandas' needs pandas: pip install pandas") from None
        # through Arrow: datetime64[ns, UTC] (DuckDB's own conversion drops the zone of
        # nanosecond timestamps)
        return rel.to_arrow_table().to_pandas()
    if output == "polars":
        try:
            import polars
        except ImportError:
            raise ImportError("output='polars' needs polars: pip install polars") from None
        return polars.from_arrow(rel.to_arrow_table())
    raise ValueError(f"bad output {output!r}: expected 'arrow', 'pandas', 'polars' or 'relation'")


def _check_output(output: str) -> None:
    if output not in ("arrow", "pandas", "polars", "relation"):
        raise ValueError(f"bad output {output!r}: expected 'arrow', 'pandas', 'polars' or 'relation'")


ORDER = "ts_recv, provider, writer, conn, seq, idx"


def order_by(table: str) -> str:
    """The total order as an ``ORDER BY`` list for ``table``'s view."""
    if table == "raw":
        return "ts_recv, provider, writer, conn, seq"
    if table == "book":
        return ORDER + ", pos"
    return ORDER


def _bitlen(n: int) -> int:
    return max(0, int(n).bit_length())


def order_key(con: duckdb.DuckDBPyConnection, src: str, where: str, writers: list[str]) -> str:
    """A SQL expression ordering rows of ``src`` exactly by the total order, as cheaply as
    the data allows: one HUGEINT ``ts_recv`` ‖ writer rank ‖ conn ‖ seq ‖ idx, with each
    field as wide as its range in the data (measured first, cheaply), or, if they do not
    fit in 64 bits beside the timestamp, the struct of the columns (exact but slower).

    ``writers``: the writers that may appear (from the snapshot), for their rank."""
    lo_c, hi_c, lo_s, hi_s, lo_i, hi_i = con.execute(
        f"SELECT min(coalesce(conn, 0)), max(coalesce(conn, 0)), min(coalesce(seq, 0)), max(coalesce(seq, 0)), "
        f"min(coalesce(idx, 0)), max(coalesce(idx, 0)) FROM {src} WHERE {where}"
    ).fetchall()[0]
    if lo_c is None:
        return "epoch_ns(ts_recv)"
    ws = sorted(set(writers))
    bw = _bitlen(len(ws) - 1) if len(ws) > 1 else 0
    bc, bs, bi = _bitlen(hi_c - lo_c), _bitlen(hi_s - lo_s), _bitlen(hi_i - lo_i)
    low = bw + bc + bs + bi
    if low > 64:
        return "(ts_recv, writer, conn, seq, idx)"
    if low == 0:
        return "epoch_ns(ts_recv)"
    parts = [f"(epoch_ns(ts_recv)::HUGEINT << {low})"]
    shift = low
    for bits, expr in (
        (bw, f"(list_position([{', '.join(_lit(w) for w in ws)}], writer) - 1)"),
        (bc, f"(coalesce(conn, 0) - ({lo_c}))"),
        (bs, f"(coalesce(seq, 0) - ({lo_s}))"),
        (bi, f"(coalesce(idx, 0) - ({lo_i}))"),
    ):
        if bits:
            shift -= bits
            parts.append(f"({expr}::HUGEINT << {shift})")
    return " | ".join(parts)


def _writers(con: duckdb.DuckDBPyConnection, table: str, flt: Filter) -> list[str]:
    snap = snapshot_of(con, table)
    provs = set(flt.file_providers) if flt.file_providers is not None else None
    ws = {
        f.writer
        for f in snap.files
        if (provs is None or f.provider in provs)
        and (flt.start is None or f.last_ts >= flt.start)
        and (flt.end is None or f.first_ts < flt.end)
    }
    if snap.tail is not None and snap.tail.num_rows:
        ws.update(str(w) for w in snap.tail.column("writer").unique().cast(pa.string()).to_pylist() if w is not None)
    # the view's writer column is the file's writer (a file never mixes writers)
    return sorted(ws)


def bucket_ns(interval: str, col: str) -> str:
    """SQL for the start (int ns) of the ``interval`` bucket holding ``col`` (a
    TIMESTAMPTZ_NS expression)."""
    return bucket_of_ns(interval, f"epoch_ns({col})")


def bucket_of_ns(interval: str, ns: str) -> str:
    """SQL for the start (int ns) of the ``interval`` bucket holding ``ns`` (an integer
    ns expression). A bucket of whole minutes holds a time iff it holds its minute's
    start: minute rollups bucket their ``minute`` with it."""
    n, unit = parse_interval(interval)
    if unit == "M":
        # the UTC date by integer division: no time zone, no rounding of nanoseconds
        d = f"(DATE '1970-01-01' + CAST({ns} // {_NS['d']} AS INTEGER))"
        mi = f"((year({d}) * 12 + month({d}) - 1) // {n} * {n})"
        return f"epoch_ns(make_timestamp(({mi}) // 12, ({mi}) % 12 + 1, 1, 0, 0, 0))"
    step = n * _NS[unit]
    if unit == "w":
        return f"(({ns} - {_WEEK_ORIGIN_NS}) // {step} * {step} + {_WEEK_ORIGIN_NS})"
    return f"({ns} // {step} * {step})"


def ns_to_ts(expr: str) -> str:
    return f"timezone('UTC', make_timestamp_ns({expr}))"


def _clock(clock: str) -> str:
    if clock == "event":
        return "coalesce(ts_event, ts_recv)"
    if clock == "recv":
        return "ts_recv"
    raise ValueError(f"bad clock {clock!r}: expected 'event' (the venue's time, ts_recv where it sends none) or 'recv'")


# ---------------------------------------------------------------------------------------
# helpers


def scan(
    con,
    table: str = "trades",
    *,
    providers=None,
    symbols=None,
    start: Time = None,
    end: Time = None,
    columns: list[str] | None = None,
    ordered: bool = True,
    output: Output = "arrow",
):
    """Rows of ``table`` in ``[start, end)`` for the given providers/symbols, in total order
    (``ordered=False`` skips the sort). Reads only the files that can hold them."""
    _check_output(output)
    con = _con(con)
    flt = Filter(providers, symbols, start, end)
    src = source(con, table, flt)
    names = {n for n, _ in view_columns(table)}
    if columns is not None:
        bad = [c for c in columns if c not in names]
        if bad:
            raise ValueError(f"unknown column(s) {', '.join(bad)} of {table}: expected some of {', '.join(n for n, _ in view_columns(table))}")
        cols = ", ".join(_q(c) for c in columns)
    else:
        cols = "*"
    if ordered:
        # order on the full rows, then project (the key columns need not be selected)
        sql = f"SELECT {cols} FROM (SELECT * FROM {src} WHERE {flt.where(table)} ORDER BY {order_by(table)})"
    else:
        sql = f"SELECT {cols} FROM {src} WHERE {flt.where(table)}"
    return _out(con.sql(sql), output)


def ohlcv(
    con,
    interval: str = "1m",
    *,
    providers=None,
    symbols=None,
    start: Time = None,
    end: Time = None,
    clock: Literal["event", "recv"] = "event",
    output: Output = "arrow",
    rollups: bool = True,
):
    """OHLCV bars from recorded trades, one row per (provider, symbol, bar) with trades.

    Columns: ``bar`` (start of the bar, TIMESTAMPTZ_NS), ``provider``, ``symbol``,
    ``open``, ``high``, ``low``, ``close``, ``volume`` (sum of sizes), ``trades`` (count),
    ``vwap``. ``interval``: any ``<n><unit>`` (``500ms``, ``1s``, ``1m``, ``15m``, ``1h``,
    ``1d``, ``1w`` from Monday, ``1M`` calendar months), in UTC. ``clock="event"`` buckets
    by the venue's trade time (``ts_recv`` where the venue sends none), ``"recv"`` by
    receive time. Open and close are the first and last trade of the bar in the total
    order. Bars without trades are absent (no forward fill). Sorted by provider, symbol,
    bar. ``start``/``end`` select trades by ``ts_recv``.

    ``rollups``: read the minute rollups (:mod:`.rollup`) of the partitions that have a
    valid one, and the trades of the others, when that gives the same bars: an
    ``interval`` of whole minutes (``m``, ``h``, ``d``, ``w``, ``M``), and ``start`` and
    ``end`` each absent, at midnight UTC, or (``clock="recv"``) on a minute. Otherwise,
    or with ``rollups=False``, the trades alone. Both give the same rows and the same
    open, high, low, close and trades; volume and vwap are sums of doubles added in
    another grouping, equal to about 1e-12 relative (as between two runs of one query:
    a parallel engine adds in no fixed order).
    """
    _check_output(output)
    con = _con(con)
    flt = Filter(providers, symbols, start, end)
    b = bucket_ns(interval, _clock(clock))
    if rollups:
        from .rollup import ohlcv_sql

        sql = ohlcv_sql(con, interval, flt, clock)
        if sql is not None:
            return _out(con.sql(sql), output)
    src = source(con, "trades", flt)
    where = flt.where("trades") + " AND price IS NOT NULL"
    key = order_key(con, src, where, _writers(con, "trades", flt))
    sql = f"""
        SELECT {ns_to_ts('b')} AS bar, provider, symbol, open, high, low, close, volume, trades, vwap
        FROM (
            SELECT {b} AS b, provider, symbol,
                   arg_min(price, k) AS open, max(price) AS high, min(price) AS low, arg_max(price, k) AS close,
                   sum(size) AS volume, count(*) AS trades, sum(price * size) / nullif(sum(size), 0) AS vwap
            FROM (SELECT *, {key} AS k FROM {src} WHERE {where})
            GROUP BY ALL
        )
        ORDER BY provider, symbol, b
    """
    return _out(con.sql(sql), output)


def vwap(
    con,
    interval: str | None = None,
    *,
    providers=None,
    symbols=None,
    start: Time = None,
    end: Time = None,
    clock: Literal["event", "recv"] = "event",
    output: Output = "arrow",
):
    """Volume-weighted average price per (provider, symbol), over the whole range or per
    ``interval`` bar. Columns: [``bar``,] ``provider``, ``symbol``, ``vwap``, ``volume``,
    ``notional`` (sum of price × size), ``trades``."""
    _check_output(output)
    con = _con(con)
    flt = Filter(providers, symbols, start, end)
    src = source(con, "trades", flt)
    where = flt.where("trades") + " AND price IS NOT NULL AND size IS NOT NULL"
    if interval is None:
        sql = f"""
            SELECT provider, symbol, sum(price * size) / nullif(sum(size), 0) AS vwap, sum(size) AS volume,
                   sum(price * size) AS notional, count(*) AS trades
            FROM {src} WHERE {where} GROUP BY ALL ORDER BY provider, symbol
        """
    else:
        b = bucket_ns(interval, _clock(clock))
        sql = f"""
            SELECT {ns_to_ts('b')} AS bar, provider, symbol, vwap, volume, notional, trades FROM (
                SELECT {b} AS b, provider, symbol, sum(price * size) / nullif(sum(size), 0) AS vwap, sum(size) AS volume,
                       sum(price * size) AS notional, count(*) AS trades
                FROM {src} WHERE {where} GROUP BY ALL
            ) ORDER BY provider, symbol, b
        """
    return _out(con.sql(sql), output)


def spreads(
    con,
    interval: str | None = None,
    *,
    providers=None,
    symbols=None,
    start: Time = None,
    end: Time = None,
    output: Output = "arrow",
):
    """Quoted spreads (``ask - bid``) per (provider, symbol), over the range or per
    ``interval`` bar of receive time.

    Columns: [``bar``,] ``provider``, ``symbol``, ``quotes``, ``mean_spread``,
    ``min_spread``, ``max_spread``, ``median_spread``, ``mean_spread_bps`` (spread over
    mid, in basis points), ``twa_spread`` (time-weighted: each quote weighs the time until
    the next quote of its symbol, cut at the end of its bar; the last quote of a symbol
    weighs nothing), ``crossed`` (quotes with ``bid >= ask``). Quotes missing a side are
    left out.
    """
    _check_output(output)
    con = _con(con)
    flt = Filter(providers, symbols, start, end)
    src = source(con, "quotes", flt)
    where = flt.where("quotes") + " AND bid IS NOT NULL AND ask IS NOT NULL"
    step_b = bucket_ns(interval, "ts_recv") if interval is not None else "0"
    n, unit = parse_interval(interval) if interval is not None else (0, "")
    if interval is None:
        end_expr = "NULL"
    elif unit == "M":
        end_expr = f"epoch_ns({ns_to_ts('b')} + INTERVAL {n} MONTH)"
    else:
        end_expr = f"(b + {n * _NS[unit]})"
    group = "b, provider, symbol" if interval is not None else "provider, symbol"
    order = "provider, symbol, b" if interval is not None else "provider, symbol"
    sql = f"""
        WITH q AS (
            SELECT {step_b} AS b, provider, symbol, epoch_ns(ts_recv) AS t, ask - bid AS spread, (ask + bid) / 2 AS mid,
                   lead(epoch_ns(ts_recv)) OVER (PARTITION BY provider, symbol ORDER BY {ORDER}) AS t_next
            FROM {src} WHERE {where}
        ), w AS (
            -- least() skips NULL: without bars, a quote lasts until the next one
            SELECT *, CASE WHEN t_next IS NULL THEN 0 ELSE least(t_next, {end_expr}) - t END AS dt FROM q
        )
        SELECT {(ns_to_ts('b') + ' AS bar, ') if interval is not None else ''}provider, symbol, count(*) AS quotes,
               avg(spread) AS mean_spread, min(spread) AS min_spread, max(spread) AS max_spread,
               median(spread) AS median_spread, avg(spread / nullif(mid, 0)) * 1e4 AS mean_spread_bps,
               sum(spread * dt) / nullif(sum(dt), 0) AS twa_spread, count(*) FILTER (WHERE spread <= 0) AS crossed
        FROM w GROUP BY {group} ORDER BY {order}
    """
    return _out(con.sql(sql), output)


#: the tables coverage() looks at by default (their rows carry a symbol)
COVERAGE_TABLES = ("trades", "quotes", "bars", "book")


def coverage(
    con,
    *,
    tables: tuple[str, ...] | list[str] = COVERAGE_TABLES,
    by_day: bool = True,
    providers=None,
    symbols=None,
    start: Time = None,
    end: Time = None,
    output: Output = "arrow",
):
    """What is recorded, per table, provider, symbol (and UTC day, with ``by_day``).

    Columns: ``table``, ``provider``, ``symbol``, [``date``,] ``rows``, ``first_ts``,
    ``last_ts`` (receive times), ``first_trade_id``, ``last_trade_id``,
    ``missing_ids`` (trades only, where the venue's ids are integers: ids in the
    first..last range that were not recorded, which is the count of missed trades on a
    venue whose ids are consecutive per symbol), ``gaps`` (``gap`` events recorded for
    that provider and symbol in the same period), ``backfilled`` (rows with source
    ``backfill``), and of the trade streams' gaps (:func:`gap_outcomes`) ``healed``,
    ``covered`` (by another writer) and ``unhealed``. Trades are the merged view (each
    trade once). Sorted by table, provider, symbol, date.
    """
    _check_output(output)
    con = _con(con)
    flt = Filter(providers, symbols, start, end)
    state = state_of(con)
    day = ", date" if by_day else ""
    selects = []
    for t in tables:
        if t not in COVERAGE_TABLES and t != "events":
            raise ValueError(f"coverage of {t!r}: expected some of {', '.join(COVERAGE_TABLES)}")
        if t not in state.snapshots:
            continue
        src = source(con, t, flt)
        if t == "trades":
            ids = ("min(trade_id) AS first_trade_id, max(trade_id) AS last_trade_id, "
                   "max(trade_id) - min(trade_id) + 1 - count(DISTINCT trade_id) AS missing_ids")
        else:
            ids = "NULL::BIGINT AS first_trade_id, NULL::BIGINT AS last_trade_id, NULL::BIGINT AS missing_ids"
        selects.append(
            f"SELECT '{t}' AS \"table\", provider, symbol{day}, count(*) AS rows, min(ts_recv) AS first_ts, max(ts_recv) AS last_ts, "
            f"{ids}, count(*) FILTER (WHERE source = 'backfill') AS backfilled "
            f"FROM {src} WHERE {flt.where(t)} GROUP BY provider, symbol{day}"
        )
    if not selects:
        empty = "SELECT NULL::VARCHAR AS \"table\" WHERE FALSE"
        return _out(con.sql(empty), output)
    gsrc = source(con, "events", flt) if "events" in state.snapshots else None
    if gsrc is not None:
        gaps = f"(SELECT provider, symbol{day}, count(*) AS gaps FROM {gsrc} WHERE status = 'gap' AND {flt.where('events')} GROUP BY ALL)"
        join_on = "c.provider = g.provider AND c.symbol IS NOT DISTINCT FROM g.symbol" + (" AND c.date = g.date" if by_day else "")
        # trade gaps by outcome (gap_outcomes): healed from history, covered by another writer, or not
        con.register("_wrdata_gap_outcomes", gap_outcomes(con, providers=providers, symbols=symbols, start=start, end=end))
        outcomes = (
            f"(SELECT provider, symbol{day}, count(*) FILTER (WHERE outcome = 'healed') AS healed, "
            f"count(*) FILTER (WHERE outcome = 'covered') AS covered, "
            f"count(*) FILTER (WHERE outcome NOT IN ('healed', 'covered')) AS unhealed FROM _wrdata_gap_outcomes GROUP BY ALL)"
        )
        o_on = "c.provider = o.provider AND c.symbol IS NOT DISTINCT FROM o.symbol" + (" AND c.date = o.date" if by_day else "")
        sql = (
            f"SELECT c.*, coalesce(g.gaps, 0) AS gaps, coalesce(o.healed, 0) AS healed, coalesce(o.covered, 0) AS covered, "
            f"coalesce(o.unhealed, 0) AS unhealed FROM ({' UNION ALL '.join(selects)}) c LEFT JOIN {gaps} g ON {join_on} "
            f"LEFT JOIN {outcomes} o ON {o_on} "
            f"ORDER BY c.\"table\", c.provider, c.symbol{', c.date' if by_day else ''}"
        )
    else:
        sql = (f"SELECT *, 0 AS gaps, 0 AS healed, 0 AS covered, 0 AS unhealed FROM ({' UNION ALL '.join(selects)}) "
               f"ORDER BY \"table\", provider, symbol{day}")
    return _out(con.sql(sql), output)


#: outcome reasons a heal job gives (wrdata.streaming.heal)
_OUTCOMES = (("healed:", "healed"), ("partly healed:", "partly"), ("unhealable:", "unhealable"))


def gap_outcomes(
    con,
    *,
    providers=None,
    symbols=None,
    start: Time = None,
    end: Time = None,
    output: Output = "arrow",
):
    """Every gap of a trade stream and what became of it, in total order.

    Columns: ``ts_recv``, ``provider``, ``symbol``, ``channel``, ``date``, ``writer``,
    ``gap_start``/``gap_end`` (ns), ``first_missing_id``/``last_missing_id``, ``outcome``,
    ``reason`` (the outcome event's). ``outcome`` is ``healed`` (a heal job proved the
    window complete: live, or ``wrdata heal`` later), ``covered`` (not healed, but the
    merged view has it: every missing id is in another writer's rows, or, without ids,
    another writer recorded the symbol across the window with no gap of its own there),
    ``partly`` or ``unhealable`` (the heal job's word), or ``open`` (no outcome yet).
    """
    _check_output(output)
    con = _con(con)
    flt = Filter(providers, symbols, start, end)
    ev = source(con, "events", flt)
    gaps = con.sql(
        f"SELECT epoch_ns(ts_recv) AS ts_recv, provider, symbol, channel, date, writer, epoch_ns(gap_start_ns) AS gap_start, "
        f"epoch_ns(gap_end_ns) AS gap_end, first_missing_id, last_missing_id FROM {ev} WHERE status = 'gap' "
        f"AND channel = 'trade' AND symbol IS NOT NULL AND {flt.where('events')} ORDER BY {ORDER}"
    ).fetchall()
    outcome: dict[tuple, tuple[str, str]] = {}
    if gaps:
        # outcomes may come much later than their gap (wrdata heal): any time, same providers
        provs = sorted({g[1] for g in gaps})
        allev = source(con, "events", Filter(provs, None, None, None))
        rows = con.sql(
            f"SELECT provider, symbol, channel, epoch_ns(gap_start_ns), epoch_ns(gap_end_ns), first_missing_id, last_missing_id, "
            f"reason FROM {allev} WHERE status IN ('healed', 'error') AND channel = 'trade' AND provider IN "
            f"({', '.join(_lit(p) for p in provs)}) ORDER BY {ORDER}"
        ).fetchall()
        rank = {"healed": 3, "partly": 2, "unhealable": 1}
        for *key, reason in rows:
            kind = next((k for prefix, k in _OUTCOMES if (reason or "").startswith(prefix)), None)
            if kind is None:
                continue
            prev = outcome.get(tuple(key))
            if prev is None or rank[kind] > rank[prev[0]]:
                outcome[tuple(key)] = (kind, reason)
    out = []
    for ts, prov, sym, ch, day, writer, g0, g1, fid, lid in gaps:
        kind, reason = outcome.get((prov, sym, ch, g0, g1, fid, lid), ("open", None))
        if kind != "healed" and _covered(con, prov, sym, ch, writer, g0, g1, fid, lid):
            kind = "covered"
        out.append(dict(ts_recv=ts, provider=prov, symbol=sym, channel=ch, date=day, writer=writer, gap_start=g0, gap_end=g1,
                        first_missing_id=fid, last_missing_id=lid, outcome=kind, reason=reason))
    schema = pa.schema([
        ("ts_recv", pa.int64()), ("provider", pa.string()), ("symbol", pa.string()), ("channel", pa.string()),
        ("date", pa.date32()), ("writer", pa.string()), ("gap_start", pa.int64()), ("gap_end", pa.int64()),
        ("first_missing_id", pa.int64()), ("last_missing_id", pa.int64()), ("outcome", pa.string()), ("reason", pa.string()),
    ])
    t = pa.Table.from_pylist(out, schema=schema)
    if output == "arrow":
        return t
    return _out(con.from_arrow(t), output)


def _covered(con, provider, symbol, channel, writer, g0, g1, fid, lid) -> bool:
    """Does the merged view hold what this writer's gap lost?"""
    if fid is not None and lid is not None:
        src = source(con, "trades", Filter([provider], [f"{provider}:{symbol}"], None, None))
        n = con.sql(
            f"SELECT count(DISTINCT trade_id) FROM {src} WHERE provider = {_lit(provider)} AND symbol = {_lit(symbol)} "
            f"AND channel = {_lit(channel)} AND trade_id BETWEEN {int(fid)} AND {int(lid)}"
        ).fetchall()[0][0]
        return n == lid - fid + 1
    if g0 is None or g1 is None:
        return False
    # another writer streamed the symbol before and after the window, with no gap of its own in it
    flt = Filter([provider], [f"{provider}:{symbol}"], None, None)
    flt.all_writers = True
    tr = source(con, "trades", flt)
    ev = source(con, "events", Filter([provider], None, None, None))
    lo, hi = ts_literal(g0), ts_literal(g1)
    rows = con.sql(
        f"SELECT writer FROM {tr} WHERE provider = {_lit(provider)} AND symbol = {_lit(symbol)} AND channel = {_lit(channel)} "
        f"AND source = 'stream' AND writer <> {_lit(writer)} GROUP BY writer "
        f"HAVING min(ts_recv) <= {lo} AND max(ts_recv) >= {hi}"
    ).fetchall()
    for (w,) in rows:
        hole = con.sql(
            f"SELECT count(*) FROM {ev} WHERE provider = {_lit(provider)} AND writer = {_lit(w)} AND status = 'gap' "
            f"AND (symbol IS NULL OR symbol = {_lit(symbol)}) AND coalesce(gap_start_ns, ts_recv) <= {hi} "
            f"AND coalesce(gap_end_ns, ts_recv) >= {lo}"
        ).fetchall()[0][0]
        if not hole:
            return True
    return False


GAP_STATUSES = ("gap",)


def gaps(
    con,
    *,
    providers=None,
    symbols=None,
    start: Time = None,
    end: Time = None,
    statuses: tuple[str, ...] | list[str] = GAP_STATUSES,
    output: Output = "arrow",
):
    """The gaps recorded in ``events`` (status ``gap``; add ``"healed"``, ``"overflow"``,
    ``"disconnected"`` ... with ``statuses``), in total order.

    Columns: ``ts_recv``, ``provider``, ``symbol``, ``channel``, ``status``, ``reason``,
    ``gap_start``, ``gap_end``, ``duration_s`` (where both ends are known),
    ``first_missing_id``, ``last_missing_id``, ``missing_ids`` (where both are known),
    ``dropped``, ``writer``, ``conn``, ``storage`` (raised by the recorder itself, e.g. a
    memory-budget drop or a crashed writer's recovery, rather than the feed).
    Events with no symbol (a connection's) match any ``symbols`` filter of their provider.
    """
    _check_output(output)
    con = _con(con)
    flt = Filter(providers, symbols, start, end)
    src = source(con, "events", flt)
    where = flt.where("events")
    if flt.symbols:
        # an event without a symbol concerns every symbol of its connection
        plain = Filter(providers, None, start, end)
        provs = sorted({p for p, _ in flt.symbols if p is not None})
        extra = f" AND provider IN ({', '.join(_lit(p) for p in provs)})" if provs and all(p for p, _ in flt.symbols) else ""
        where = f"(({where}) OR ({plain.where('events')} AND symbol IS NULL{extra}))"
    st = ", ".join(_lit(s) for s in statuses)
    sql = f"""
        SELECT ts_recv, provider, symbol, channel, status, reason, gap_start_ns AS gap_start, gap_end_ns AS gap_end,
               (epoch_ns(gap_end_ns) - epoch_ns(gap_start_ns)) / 1e9 AS duration_s,
               first_missing_id, last_missing_id, last_missing_id - first_missing_id + 1 AS missing_ids,
               dropped, writer, conn, coalesce(starts_with(reason, 'storage:'), false) AS storage
        FROM {src} WHERE {where} AND status IN ({st})
        ORDER BY {ORDER}
    """
    return _out(con.sql(sql), output)

