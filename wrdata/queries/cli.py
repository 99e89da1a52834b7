"""``wrdata query``, ``ls``, ``verify``, ``compact``, ``rollup`` and ``ohlcv``.

Every command takes ``--root`` (default ``$WRDATA_ROOT``, else ``./data``; a local path or
a URI such as ``s3://bucket/prefix``, with ``--s3-endpoint`` for S3-compatible stores). Bad arguments are one line on stderr and exit
status 2; ``verify`` exits 1 when it finds problems, ``query`` exits 1 on an SQL error
(DuckDB's message, then the views there are). Long commands show a progress bar when
stderr is a terminal.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator

import click

from ..cliopts import check_providers, check_symbols, check_writable, open_root, require_recording, s3_endpoint_option
from .connection import FILES_VIEW, VIEWS, default_root

FORMATS = ("table", "csv", "json", "parquet")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _root(root: str | None) -> str:
    return root or default_root()


def _usage(msg: str) -> click.UsageError:
    return click.UsageError(msg)  # one line, exit status 2


@contextlib.contextmanager
def _progress(label: str) -> Iterator:
    """A ``(what, done, total)`` callback drawing a rich progress bar on a terminal, or a
    no-op elsewhere (logs and pipes get no bars)."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as p:
        task = p.add_task(label, total=None)

        def update(what: str, done: int, total: int) -> None:
            p.update(task, description=f"{label}: {what}", completed=done, total=total)

        yield update


def _with_progress(con, fn):
    """Run ``fn`` (which runs a query on ``con``); on a terminal, draw DuckDB's progress
    of it on stderr meanwhile."""
    if not sys.stderr.isatty():
        return fn()
    import threading

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    box: dict = {}

    def work() -> None:
        try:
            box["result"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = e

    th = threading.Thread(target=work, daemon=True)
    th.start()
    th.join(1.0)  # short queries draw nothing
    if th.is_alive():
        with Progress(TextColumn("query"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
                      console=Console(stderr=True), transient=True) as p:
            task = p.add_task("query", total=100)
            while th.is_alive():
                try:
                    pct = con.query_progress()
                except Exception:  # noqa: BLE001 - progress is cosmetic
                    pct = -1
                if pct >= 0:
                    p.update(task, completed=pct)
                th.join(0.2)
    th.join()
    if "error" in box:
        raise box["error"]
    return box.get("result")


def _connect(root: str, **kw):
    from .connection import connect

    try:
        return connect(root, **kw)
    except FileNotFoundError as e:
        raise _usage(str(e)) from None
    except ValueError as e:
        raise _usage(str(e)) from None


def _views_hint(con) -> str:
    lines = []
    for v in (*VIEWS, FILES_VIEW):
        try:
            cols = [r[0] for r in con.execute(f'DESCRIBE "{v}"').fetchall()]
        except Exception:  # noqa: BLE001 - a hint only
            continue
        lines.append(f"  {v}({', '.join(cols)})")
    return "views:\n" + "\n".join(lines)


def _emit(con, rel, fmt: str, out: str | None, max_rows: int) -> None:
    """Write a relation's rows as a table, CSV, JSON lines or Parquet, to ``out`` or stdout."""
    if rel is None:
        return
    if fmt == "table":
        buf = io.StringIO()
        width = shutil.get_terminal_size((160, 40)).columns if out is None else 10_000
        with contextlib.redirect_stdout(buf):
            rel.show(max_rows=max_rows, max_width=width)
        text = buf.getvalue()
        if out:
            with open(out, "w") as f:
                f.write(text)
        else:
            click.echo(text, nl=False)
        return
    if fmt == "parquet" and not out:
        raise _usage("--format parquet needs --out FILE")
    name = "_wrdata_result"
    rel.create_view(name, replace=True)
    options = {"csv": "FORMAT csv, HEADER", "json": "FORMAT json", "parquet": "FORMAT parquet, COMPRESSION zstd"}[fmt]
    if out:
        con.execute(f"COPY (SELECT * FROM {name}) TO '{out.replace(chr(39), chr(39) * 2)}' ({options})")
        return
    with tempfile.TemporaryDirectory(prefix="wrdata-query-") as d:
        path = os.path.join(d, f"out.{fmt}")
        con.execute(f"COPY (SELECT * FROM {name}) TO '{path}' ({options})")
        with open(path, "rb") as f:
            stream = getattr(sys.stdout, "buffer", None)
            if stream is None:  # a text-only stdout
                click.echo(f.read().decode(), nl=False)
                return
            sys.stdout.flush()
            shutil.copyfileobj(f, stream)
            stream.flush()


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _print_table(headers: list[str], rows: list[list[str]], right: set[int]) -> None:
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        t = Table(*headers, show_edge=False, pad_edge=False)
        for i, c in enumerate(t.columns):
            c.justify = "right" if i in right else "left"
        for r in rows:
            t.add_row(*r)
        Console().print(t)
        return
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    fmt = lambda r: "  ".join((c.rjust(w) if i in right else c.ljust(w)) for i, (c, w) in enumerate(zip(r, widths, strict=True)))  # noqa: E731
    click.echo(fmt(headers).rstrip())
    for r in rows:
        click.echo(fmt(r).rstrip())


def _check_date(d: str, opt: str = "--date") -> str:
    from datetime import date

    if not _DATE_RE.match(d):
        raise _usage(f"bad {opt} {d!r}: expected YYYY-MM-DD")
    try:
        date.fromisoformat(d)
    except ValueError:
        raise _usage(f"bad {opt} {d!r}: not a calendar date") from None
    return d


def _check_tables(tables: tuple[str, ...]) -> list[str] | None:
    from ..storage import TABLES

    out = []
    for t in tables:
        for x in t.split(","):
            x = x.strip()
            if x and x not in TABLES:
                raise _usage(f"unknown table {x!r}: expected some of {', '.join(TABLES)}")
            if x:
                out.append(x)
    return out or None


def _split(values: tuple[str, ...]) -> list[str] | None:
    out = [x.strip() for v in values for x in v.split(",") if x.strip()]
    return out or None


# ---------------------------------------------------------------------------------------


@click.command()
@click.argument("sql")
@click.option("--root", help="Dataset root (default $WRDATA_ROOT, else ./data).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), help="Write the result here instead of stdout.")
@click.option("--max-rows", type=int, default=40, show_default=True, help="Rows shown by --format table (first and last).")
@click.option("--no-journal", is_flag=True, help="Sealed files only, not the unsealed tail.")
@click.option("--journal-dir", help="Journal of a remote root (a local directory).")
@s3_endpoint_option
def query(sql: str, root: str | None, fmt: str, out: str | None, max_rows: int, no_journal: bool, journal_dir: str | None,
          s3_endpoint: str | None) -> None:
    """Run DuckDB SQL over a recording (views: trades, quotes, bars, book, events, raw,
    wrdata_files). SQL "-" reads it from stdin.

    \b
    wrdata query "SELECT symbol, count(*) FROM trades WHERE date = '2026-11-23' GROUP BY ALL"
    wrdata query "SELECT * FROM quotes WHERE symbol = 'BTCUSDT'" --format parquet --out q.parquet
    """
    import duckdb

    if sql == "-":
        sql = sys.stdin.read()
    if not sql.strip():
        raise _usage("empty SQL")
    root = _root(root)
    con = _connect(root, journal=journal_dir or not no_journal, filesystem=open_root(root, s3_endpoint))
    try:
        rel = con.sql(sql)
        _with_progress(con, lambda: _emit(con, rel, fmt, out, max_rows))
    except duckdb.Error as e:
        click.echo(f"error: {e}", err=True)
        click.echo(_views_hint(con), err=True)
        raise SystemExit(1) from None


@click.command("ls")
@click.option("--root", help="Dataset root (default $WRDATA_ROOT, else ./data).")
@click.option("--table", "tables", multiple=True, help="Only these tables (repeatable or comma-separated).")
@click.option("--provider", "providers", multiple=True, help="Only these providers.")
@click.option("--date", "dates", multiple=True, help="Only these dates (YYYY-MM-DD).")
@click.option("--symbols", "by_symbol", is_flag=True,
              help="Per provider/symbol/day: trades (each once), trade-id holes, gaps found, healed, covered by another "
              "writer, unhealed (reads the data: slower).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@s3_endpoint_option
def ls(root: str | None, tables, providers, dates, by_symbol: bool, as_json: bool, s3_endpoint: str | None) -> None:
    """What a recording holds, per table, provider and date: sealed files, rows, bytes,
    first and last receive time, writers, and the unsealed journal tail. From directory
    listings, file names and Parquet footers only (no data is read), unless --symbols."""
    from .inspect import fmt_ns, summarize

    root = _root(root)
    tl = _check_tables(tables)
    dl = [_check_date(d) for d in _split(dates) or []] or None
    pl = check_providers(_split(providers))
    fs = open_root(root, s3_endpoint)
    require_recording(root, fs)
    if by_symbol:
        _ls_symbols(root, pl, dl, as_json, fs)
        return
    try:
        with _progress("reading footers") as prog:
            rows = summarize(root, tables=tl, providers=pl, dates=dl, progress=prog, filesystem=fs)
    except FileNotFoundError as e:
        raise _usage(str(e)) from None
    if as_json:
        for s in rows:
            click.echo(json.dumps(s.as_dict()))
        return
    if not rows:
        click.echo(f"no recorded data under {root}")
        return
    headers = ["table", "provider", "date", "files", "rows", "bytes", "first ts_recv", "last ts_recv", "writers", "journal rows"]
    out = []
    for s in rows:
        out.append([s.table, s.provider, s.date, str(s.files) + (f" ({s.unreadable} unreadable)" if s.unreadable else ""),
                    f"{s.rows:,}", _fmt_bytes(s.bytes), fmt_ns(s.first_ts), fmt_ns(s.last_ts), str(s.writers),
                    f"{s.journal_rows:,}" if s.journal_segments else ""])
    _print_table(headers, out, {3, 4, 5, 8, 9})


def _ls_symbols(root: str, providers, dates, as_json: bool, filesystem=None) -> None:
    from .helpers import coverage
    from .inspect import fmt_ns

    con = _connect(root, tables=("trades", "events"), filesystem=filesystem)
    start = end = None
    if dates:
        start, end = min(dates), _next_day(max(dates))
    t = coverage(con, tables=("trades",), providers=providers, start=start, end=end)
    for name in ("first_ts", "last_ts"):  # datetime cannot hold nanoseconds
        t = t.set_column(t.schema.get_field_index(name), name, t.column(name).cast("int64"))
    rows = t.to_pylist()
    if dates:
        rows = [r for r in rows if r["date"].isoformat() in dates]
    if as_json:
        for r in rows:
            r = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in r.items()}
            click.echo(json.dumps(r))
        return
    headers = ["provider", "symbol", "date", "trades", "first ts_recv", "last ts_recv", "missing ids", "gaps", "healed",
               "covered", "unhealed", "backfilled"]
    out = [[r["provider"], r["symbol"] or "", r["date"].isoformat(), f"{r['rows']:,}", fmt_ns(r["first_ts"]),
            fmt_ns(r["last_ts"]), "" if r["missing_ids"] is None else f"{r['missing_ids']:,}", str(r["gaps"]),
            str(r["healed"]), str(r["covered"]), str(r["unhealed"]), str(r["backfilled"])] for r in rows]
    _print_table(headers, out, {3, 6, 7, 8, 9, 10, 11})


def _next_day(d: str) -> str:
    from datetime import date, timedelta

    return (date.fromisoformat(d) + timedelta(days=1)).isoformat()


@click.command()
@click.option("--root", help="Dataset root (default $WRDATA_ROOT, else ./data).")
@click.option("--table", "tables", multiple=True, help="Only these tables.")
@click.option("--provider", "providers", multiple=True, help="Only these providers.")
@click.option("--date", "dates", multiple=True, help="Only these dates (YYYY-MM-DD).")
@click.option("--no-quarantine", is_flag=True, help="Report damaged and foreign files but leave them where they are.")
@click.option("--notes", "show_notes", is_flag=True, help="Also list notes (interleaved files, torn journal tails, temp files).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per finding.")
@s3_endpoint_option
def verify(root: str | None, tables, providers, dates, no_quarantine: bool, show_notes: bool, as_json: bool,
           s3_endpoint: str | None) -> None:
    """Read every sealed file of a recording and check it: readable, a known schema
    version, rows in total order with no duplicates, name and folder matching the rows,
    no row in two files of one writer. Damaged and foreign files are moved to
    <root>/_quarantine/ (never deleted). Exit status 1 if anything is wrong. Also
    reports, per provider/symbol/day, the trade streams' gaps: found, healed, covered by
    another writer, unhealed (notes: not damage)."""
    from .inspect import verify as run

    root = _root(root)
    tl = _check_tables(tables)
    dl = [_check_date(d) for d in _split(dates) or []] or None
    pl = check_providers(_split(providers))
    fs = open_root(root, s3_endpoint)
    require_recording(root, fs)
    with _progress("verifying") as prog:
        rep = run(root, tables=tl, providers=pl, dates=dl, quarantine=not no_quarantine, progress=prog,
                  filesystem=fs)
    shown = rep.findings if show_notes else rep.problems
    if as_json:
        for f in shown:
            click.echo(json.dumps({"path": f.path, "kind": f.kind, "problem": f.problem, "message": f.message,
                                   "quarantined_to": f.quarantined_to}))
    else:
        for f in shown:
            tag = "PROBLEM" if f.problem else "note"
            click.echo(f"{tag} {f.kind}: {f.path}: {f.message}")
            if f.quarantined_to:
                click.echo(f"  moved to {f.quarantined_to}")
        for g in rep.gaps:
            if g["gaps"]:
                click.echo(f"gaps {g['provider']} {g['symbol']} {g['date']}: {g['trades']:,} trades, {g['gaps']} gaps found, "
                           f"{g['healed']} healed, {g['covered']} covered by another writer, {g['unhealed']} unhealed")
        click.echo(f"{rep.files} files, {rep.rows:,} rows, {_fmt_bytes(rep.bytes)}, {rep.segments} journal segments: "
                   f"{len(rep.problems)} problems ({len(rep.quarantined)} files quarantined), {len(rep.notes)} notes",
                   err=as_json)
    if not rep.ok:
        raise SystemExit(1)


@click.command()
@click.option("--root", help="Dataset root (default $WRDATA_ROOT, else ./data).")
@click.option("--date", "date_", required=True, help="The UTC day to compact (YYYY-MM-DD).")
@click.option("--provider", "providers", multiple=True, help="Only these providers (default: all with data that day).")
@click.option("--table", "tables", multiple=True, help="Only these tables (default: all).")
@click.option("--max-rows", type=int, help="At most this many rows per output file (split between input files).")
@click.option("--grace", type=float, default=0.0, show_default=True,
              help="Seconds to keep the replaced files after the new ones are in place, for readers that listed them before.")
@click.option("--dry-run", is_flag=True, help="Say what would be merged; write nothing.")
@s3_endpoint_option
def compact(root: str | None, date_: str, providers, tables, max_rows: int | None, grace: float, dry_run: bool,
            s3_endpoint: str | None) -> None:
    """Merge a day's small sealed files into one file per writer (or a few, --max-rows),
    without changing what queries and replay return.

    New files are written first (temporary name, then renamed) and name the files they
    replace in their footer, so a reader listing the folder meanwhile sees each row once;
    the old files are removed after --grace seconds. Rows keep the total order, row
    groups and statistics of a freshly sealed file.
    """
    from ..storage import TABLES
    from ..storage.compact import compact_partition
    from .inspect import list_all_sealed

    root = _root(root)
    _check_date(date_)
    if max_rows is not None and max_rows <= 0:
        raise _usage("--max-rows must be positive")
    if grace < 0:
        raise _usage("--grace must not be negative")
    tl = _check_tables(tables) or list(TABLES)
    pl = check_providers(_split(providers))
    fs = open_root(root, s3_endpoint)
    check_writable(root, fs) if not dry_run else require_recording(root, fs)
    try:
        present = list_all_sealed(root, fs, tables=tl, providers=pl, dates=[date_])
    except FileNotFoundError as e:
        raise _usage(str(e)) from None
    parts = sorted({(f.table, f.provider) for f in present}, key=lambda x: (TABLES.index(x[0]), x[1]))
    if not parts:
        click.echo(f"nothing sealed on {date_} under {root}")
        return
    with _progress("compacting") as prog:
        for table, provider in parts:
            res = compact_partition(root, table, provider, date_, max_rows=max_rows, grace=grace, dry_run=dry_run, progress=prog,
                                    filesystem=fs)
            verb = "would merge" if dry_run else "merged"
            if res.files_after == res.files_before:
                line = f"{table}/{provider}/{date_}: {res.files_before} files, nothing to merge"
            else:
                line = (f"{table}/{provider}/{date_}: {verb} {res.files_before} files into {res.files_after} "
                        f"({res.rows:,} rows" + (f", {_fmt_bytes(res.bytes_before)} -> {_fmt_bytes(res.bytes_after)})" if not dry_run else ")"))
            click.echo(line)
            for path, why in res.skipped:
                click.echo(f"  {os.path.basename(path)}: {why}")
    trade_provs = sorted(p for t, p in parts if t == "trades")
    if trade_provs and not dry_run:
        # the rewrite made the partitions' minute rollups stale: build them on the new files
        _echo_rollups(_build_rollups(root, [date_], trade_provs, fs))


def _build_rollups(root: str, dates, providers, fs, force: bool = False):
    from .rollup import build_rollups

    try:
        return build_rollups(root, dates, providers, filesystem=fs, force=force)
    except FileNotFoundError as e:
        raise _usage(str(e)) from None


def _echo_rollups(results) -> None:
    for r in results:
        where = f"ohlcv_1m/{r.provider}/{r.date}"
        if r.status == "built":
            click.echo(f"{where}: built from {r.files} trades files ({r.rows:,} minute rows, {_fmt_bytes(r.bytes)}) in {r.seconds:.2f} s"
                       + (f"; was stale: {r.reason}" if r.reason and r.reason != "no rollup" else ""))
        elif r.status == "valid":
            click.echo(f"{where}: up to date")
        else:
            click.echo(f"{where}: skipped: {r.reason}")


@click.command()
@click.option("--root", help="Dataset root (default $WRDATA_ROOT, else ./data).")
@click.option("--date", "dates", multiple=True, help="Only these UTC days (YYYY-MM-DD; default: every sealed day).")
@click.option("--provider", "providers", multiple=True, help="Only these providers.")
@click.option("--force", is_flag=True, help="Rebuild rollups that are up to date too.")
@s3_endpoint_option
def rollup(root: str | None, dates, providers, force: bool, s3_endpoint: str | None) -> None:
    """Build the 1-minute OHLCV rollups that `ohlcv` reads instead of the trades, for
    every sealed (provider, day) of trades without an up-to-date one.

    One small Parquet file per provider and day under <root>/ohlcv_1m/, written under a
    temporary name and moved into place. A rollup is used only while it matches the
    day's files exactly (a later file, a compaction or a change in which duplicates the
    merged view drops makes it stale: queries then read that day's trades, and the next
    run rebuilds it). Days with journal rows (still being recorded) are skipped.
    """
    root = _root(root)
    dl = [_check_date(d) for d in _split(dates) or []] or None
    pl = check_providers(_split(providers))
    fs = open_root(root, s3_endpoint)
    check_writable(root, fs)
    results = _build_rollups(root, dl, pl, fs, force=force)
    if not results:
        click.echo(f"no sealed trades under {root}" + (" for the given days/providers" if dl or pl else ""))
        return
    _echo_rollups(results)


@click.command()
@click.argument("symbols", nargs=-1, required=True)
@click.option("--interval", default="1m", show_default=True, help="Bar length: 1s, 1m, 5m, 1h, 1d, 1w, 1M, 500ms, ...")
@click.option("--provider", "providers", multiple=True, help="Only these providers.")
@click.option("--start", help="First receive time (inclusive): 2026-11-23, 2026-11-23T14:30:00Z, or ns.")
@click.option("--end", help="Last receive time (exclusive).")
@click.option("--clock", type=click.Choice(["event", "recv"]), default="event", show_default=True,
              help="Bucket by the venue's trade time or by receive time.")
@click.option("--root", help="Dataset root (default $WRDATA_ROOT, else ./data).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), help="Write the bars here instead of stdout.")
@click.option("--max-rows", type=int, default=40, show_default=True, help="Rows shown by --format table.")
@click.option("--no-rollups", is_flag=True, help="Read the trades even where minute rollups could serve (same bars, slower).")
@s3_endpoint_option
def ohlcv(symbols, interval: str, providers, start, end, clock: str, root: str | None, fmt: str, out: str | None, max_rows: int,
          no_rollups: bool, s3_endpoint: str | None) -> None:
    """OHLCV bars built from recorded trades (open/close in the recording's total order).

    \b
    wrdata ohlcv BTCUSDT --interval 1m
    wrdata ohlcv binance:BTCUSDT kraken:BTC/USD --interval 5m --start 2026-11-23 --end 2026-11-24 --format csv
    """
    from .helpers import Filter, parse_interval
    from .helpers import ohlcv as run

    check_providers(_split(providers))
    check_symbols(list(symbols), "SYMBOLS")
    try:
        parse_interval(interval)
        Filter(_split(providers), list(symbols), start, end)
    except ValueError as e:
        raise _usage(str(e)) from None
    root = _root(root)
    con = _connect(root, tables=("trades",), filesystem=open_root(root, s3_endpoint))
    rel = run(con, interval, providers=_split(providers), symbols=list(symbols), start=start, end=end, clock=clock, output="relation",
              rollups=not no_rollups)
    _with_progress(con, lambda: _emit(con, rel, fmt, out, max_rows))


COMMANDS = (query, ls, verify, compact, rollup, ohlcv)
