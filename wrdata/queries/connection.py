"""A DuckDB connection with one view per recorded table.

::

    con = connect("./data")          # or "s3://bucket/prefix", or root + filesystem=
    con.sql("SELECT symbol, count(*) FROM trades WHERE date = '2026-11-23' GROUP BY ALL").show()

Views ``trades``, ``quotes``, ``bars``, ``book``, ``events``, ``raw``: the table's columns
(:mod:`wrdata.storage.schema`) plus ``provider`` (VARCHAR) and ``date`` (DATE) from the Hive
path, so ``WHERE provider = ... AND date = ...`` prunes whole directories. Timestamps are
``TIMESTAMPTZ_NS``: nanoseconds survive (``epoch_ns(ts_recv)`` gives the stored integer).

What a view reads: a **snapshot** taken by :func:`connect` (and again by :func:`refresh`):
the sealed files listed at that moment and the journal rows not yet sealed (the tail, up
to the writers' last flush, read and checksum-verified into memory). Every row is in
exactly one of the two, even while capture daemons seal files meanwhile (see
:func:`wrdata.storage.snapshot`). A file sealed after the snapshot is not seen until
``refresh(con)``; a file removed by ``compact`` after the snapshot makes queries that
need it fail with a file-not-found error (never wrong rows): ``refresh(con)`` again.

How files are read:

- local roots: DuckDB's own Parquet reader on the snapshot's file list (``union_by_name``,
  so files of older schema versions read with their missing columns null), with
  row-group pruning on the statistics the sealed files carry (``ts_recv``, ``symbol``,
  ids) and Hive partition pruning on ``provider``/``date``;
- any other filesystem (``s3://``, ``gs://``, a ``pyarrow.fs.FileSystem``): a
  :func:`pyarrow.dataset.dataset` over the same file list handed to DuckDB, which pushes
  projections and partition filters into it. No DuckDB extension is needed (DuckDB
  extensions cannot be downloaded everywhere); ``engine="arrow"`` forces this path on a
  local root too.

The session time zone is set to UTC, so timestamps print and convert to Arrow in UTC;
the helpers in :mod:`.helpers` do not depend on it.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any, Literal

import duckdb
import pyarrow as pa
import pyarrow.fs as pafs

from ..storage import SCHEMAS, TABLES, Snapshot, dataset, snapshot
from ..storage.fs import resolve_root
from ..storage.schema import PARTITION_SCHEMA

log = logging.getLogger("wrdata.queries")

Engine = Literal["auto", "duckdb", "arrow"]

#: the views every connection has, in this order
VIEWS: tuple[str, ...] = TABLES

#: an extra view listing the snapshot's files (one row per sealed file, and one per
#: table with journal rows: path NULL)
FILES_VIEW = "wrdata_files"

#: every writer's trade rows, duplicates included; ``trades`` is the merged view (each
#: trade once: :mod:`wrdata.storage.merge`), ``trades_all WHERE writer = ...`` one writer's
ALL_TRADES_VIEW = "trades_all"


def default_root() -> str:
    """``$WRDATA_ROOT``, else ``./data`` (the default of every command)."""
    return os.environ.get("WRDATA_ROOT") or "./data"


@dataclass
class _State:
    root: str
    filesystem: pafs.FileSystem | str | None
    journal: bool | str
    engine: str
    tables: tuple[str, ...]
    snapshots: dict[str, Snapshot] = field(default_factory=dict)
    #: trade rows the merged ``trades`` view leaves out (None: none)
    drops: Any = None
    lock: threading.Lock = field(default_factory=threading.Lock)


_STATES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def connect(
    root: str | os.PathLike | None = None,
    *,
    filesystem: pafs.FileSystem | str | None = None,
    journal: bool | str = True,
    engine: Engine = "auto",
    database: str = ":memory:",
    con: duckdb.DuckDBPyConnection | None = None,
    threads: int | None = None,
    tables: tuple[str, ...] | list[str] = VIEWS,
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with views over the recording at ``root``.

    root: local path or URI (``s3://bucket/prefix``); default ``$WRDATA_ROOT``, else
        ``./data``. With ``filesystem`` (a pyarrow filesystem or a URI naming one),
        ``root`` is a path within it.
    journal: ``True`` reads the unsealed tail from ``<root>/_journal`` (local roots), a
        path reads it from there (the journal of a remote root lives on the capture
        host's disk), ``False`` reads sealed files only.
    engine: ``"duckdb"`` (DuckDB's Parquet reader, local roots only), ``"arrow"`` (a
        pyarrow dataset handed to DuckDB, any filesystem), ``"auto"`` (the first where
        it can).
    con: add the views to this connection instead of a new one (``database`` is then
        ignored).
    threads: DuckDB worker threads (default: all cores).
    """
    root = os.fspath(root) if root is not None else default_root()
    for t in tables:
        if t not in TABLES:
            raise ValueError(f"unknown table {t!r}: expected some of {', '.join(TABLES)}")
    if engine not in ("auto", "duckdb", "arrow"):
        raise ValueError(f"bad engine {engine!r}: expected 'auto', 'duckdb' or 'arrow'")
    fs, base, local = resolve_root(root, filesystem)
    if engine == "duckdb" and not local:
        raise ValueError(f"engine='duckdb' reads local files only; {root!r} is not local: use engine='arrow' or 'auto'")
    if local and filesystem is None and not os.path.isdir(base):
        raise FileNotFoundError(f"no recording at {root!r} (no such directory)")
    con = con if con is not None else duckdb.connect(database)
    con.execute("SET TimeZone = 'UTC'")
    # sealed files never change under their name (a re-seal writes the same bytes), so
    # their footers can be cached across queries
    con.execute("SET parquet_metadata_cache = true")
    # DuckDB draws its progress bar on stdout, even into a pipe: a library must not
    # (the CLI draws one on a terminal's stderr from query_progress(), which still works)
    con.execute("SET enable_progress_bar = true")
    con.execute("SET enable_progress_bar_print = false")
    if threads is not None:
        con.execute(f"SET threads = {int(threads)}")
    state = _State(root, filesystem, journal, "duckdb" if (engine == "auto" and local) else ("arrow" if engine == "auto" else engine), tuple(tables))
    _STATES[con] = state
    _build(con, state)
    return con


def refresh(con: duckdb.DuckDBPyConnection) -> None:
    """Take a new snapshot: files sealed, compacted or removed since, and the journal up
    to the last flush."""
    _build(con, state_of(con))


def state_of(con: duckdb.DuckDBPyConnection) -> _State:
    try:
        return _STATES[con]
    except (KeyError, TypeError):
        raise ValueError("not a connection made by wrdata.queries.connect()") from None


def snapshot_of(con: duckdb.DuckDBPyConnection, table: str) -> Snapshot:
    """The snapshot ``table``'s view reads (files and journal tail)."""
    return state_of(con).snapshots[table]


def root_of(con: duckdb.DuckDBPyConnection) -> str:
    return state_of(con).root


# ---------------------------------------------------------------------------------------


def duck_type(t: pa.DataType) -> str:
    """The DuckDB type a view gives an Arrow column of the recorded schemas."""
    if pa.types.is_dictionary(t):
        return duck_type(t.value_type)
    if pa.types.is_timestamp(t):
        unit = {"s": "TIMESTAMP_S", "ms": "TIMESTAMP_MS", "us": "TIMESTAMP", "ns": "TIMESTAMP_NS"}[t.unit]
        if t.tz is not None:
            return "TIMESTAMPTZ_NS" if t.unit == "ns" else "TIMESTAMPTZ"
        return unit
    simple = {
        pa.int8(): "TINYINT",
        pa.int16(): "SMALLINT",
        pa.int32(): "INTEGER",
        pa.int64(): "BIGINT",
        pa.uint32(): "UINTEGER",
        pa.uint64(): "UBIGINT",
        pa.float32(): "FLOAT",
        pa.float64(): "DOUBLE",
        pa.bool_(): "BOOLEAN",
        pa.string(): "VARCHAR",
        pa.large_string(): "VARCHAR",
        pa.binary(): "BLOB",
        pa.large_binary(): "BLOB",
        pa.date32(): "DATE",
    }
    try:
        return simple[t]
    except KeyError:
        raise TypeError(f"no DuckDB type for {t}") from None


def view_columns(table: str) -> list[tuple[str, str]]:
    """(name, DuckDB type) of a view's columns: the table's schema, then provider, date."""
    return [(f.name, duck_type(f.type)) for f in list(SCHEMAS[table]) + list(PARTITION_SCHEMA)]


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _select(cols: list[tuple[str, str]], present: set[str] | None, source: str) -> str:
    parts = []
    for name, typ in cols:
        if present is not None and name not in present:
            parts.append(f"CAST(NULL AS {typ}) AS {_q(name)}")
        else:
            parts.append(f"CAST({_q(name)} AS {typ}) AS {_q(name)}")
    return f"SELECT {', '.join(parts)} FROM {source}"


#: at most about this many UNION ALL branches of sealed files per view
MAX_BRANCHES = 32


def parquet_source(paths: list[str], union_by_name: bool = True) -> str:
    """DuckDB's reader over ``paths`` with the Hive columns typed (a provider called
    ``2024`` stays a string); ``union_by_name`` for files that may differ in columns
    (older schema versions)."""
    return (
        f"read_parquet([{', '.join(_lit(p) for p in paths)}], hive_partitioning = true, "
        f"hive_types = {{'provider': 'VARCHAR', 'date': 'DATE'}}, union_by_name = {'true' if union_by_name else 'false'})"
    )


def _branches(con: duckdb.DuckDBPyConnection, cols: list[tuple[str, str]], files: list) -> list[str]:
    """The sealed files as a few scans of consecutive files (about :data:`MAX_BRANCHES`),
    each with the ``ts_recv`` range its file names state (true of every row: sealing
    names a file by its first and last ``ts_recv``, and ``verify`` checks it). A query's
    own time filter then contradicts the range of most branches and DuckDB drops them
    without opening their files, so plain SQL on a view gets the pruning by file name
    that :func:`wrdata.storage.list_sealed` does (bench/queries.py measures it).

    Files are grouped by their column set (footers, read once and cached by DuckDB), so
    a branch needs ``union_by_name`` (costly to plan) only for mixed schema versions."""
    from ..queries.helpers import ts_literal

    files = sorted(files, key=lambda f: (f.first_ts, f.last_ts, f.path))
    rows = con.execute(
        f"SELECT file_name, list(name ORDER BY name) FROM parquet_schema([{', '.join(_lit(f.path) for f in files)}]) "
        "WHERE num_children IS NULL OR num_children = 0 GROUP BY file_name"
    ).fetchall()
    colsets = {fname: tuple(names) for fname, names in rows}
    by_set: dict[tuple, list] = {}
    for f in files:
        by_set.setdefault(colsets.get(f.path, ()), []).append(f)
    per = max(1, -(-len(files) // MAX_BRANCHES))
    out = []
    for colset, group_files in by_set.items():
        present = set(colset)
        for i in range(0, len(group_files), per):
            group = group_files[i : i + per]
            src = parquet_source([f.path for f in group], union_by_name=not colset)
            if not colset:  # footer not understood here: let DuckDB work the columns out
                present = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()}
            present |= {"provider", "date"}
            lo, hi = min(f.first_ts for f in group), max(f.last_ts for f in group)
            out.append(f"{_select(cols, present, src)} WHERE ts_recv BETWEEN {ts_literal(lo)} AND {ts_literal(hi)}")
    return out


def _arrow_branches(con: duckdb.DuckDBPyConnection, state: _State, table: str, cols: list[tuple[str, str]], files: list) -> list[str]:
    """The sealed files as pyarrow datasets registered in DuckDB, a few consecutive files
    each (about :data:`MAX_BRANCHES`), each branch stating the ``ts_recv`` range its file
    names give. DuckDB pushes projections and ``provider``/``date`` filters into a
    pyarrow scan but not filters on ``TIMESTAMPTZ_NS`` columns, so without the stated
    ranges a time-filtered query would open every file of an object store; with them it
    drops the branches its filter contradicts, unopened (``tests/objectstore``)."""
    from ..queries.helpers import ts_literal

    files = sorted(files, key=lambda f: (f.first_ts, f.last_ts, f.path))
    per = max(1, -(-len(files) // MAX_BRANCHES))
    out = []
    for n, i in enumerate(range(0, len(files), per)):
        group = files[i : i + per]
        name = f"_wrdata_sealed_{table}_{n}"
        # the listed files (sizes, name ranges): no HEAD per file, footers cached across queries
        con.register(name, dataset(state.root, table, filesystem=state.filesystem, files=group))
        lo, hi = min(f.first_ts for f in group), max(f.last_ts for f in group)
        out.append(f"{_select(cols, None, name)} WHERE ts_recv BETWEEN {ts_literal(lo)} AND {ts_literal(hi)}")
    for n in range(len(out), MAX_BRANCHES + 1):  # branches of an earlier snapshot
        _unregister(con, f"_wrdata_sealed_{table}_{n}")
    return out


def _build(con: duckdb.DuckDBPyConnection, state: _State) -> None:
    with state.lock:
        listing: list[dict] = []
        for table in state.tables:
            snap = snapshot(state.root, table, journal=state.journal, filesystem=state.filesystem)
            state.snapshots[table] = snap
            cols = view_columns(table)
            parts: list[str] = []
            if snap.files:
                if state.engine == "duckdb":
                    parts.extend(_branches(con, cols, snap.files))
                else:
                    parts.extend(_arrow_branches(con, state, table, cols, snap.files))
            else:
                _arrow_branches(con, state, table, cols, [])
            tail = snap.tail
            if tail is not None and tail.num_rows:
                name = f"_wrdata_tail_{table}"
                con.register(name, tail)
                parts.append(_select(cols, None, name))
            else:
                _unregister(con, f"_wrdata_tail_{table}")
            if not parts:
                name = f"_wrdata_empty_{table}"
                full = pa.schema(list(SCHEMAS[table]) + list(PARTITION_SCHEMA))
                con.register(name, full.empty_table())
                parts.append(_select(cols, None, name))
            body = " UNION ALL ".join(parts)
            if table == "trades":
                body = _merged_trades(con, state, body)
            con.execute(f"CREATE OR REPLACE VIEW {_q(table)} AS {body}")
            for f in snap.files:
                listing.append(dict(table=table, provider=f.provider, date=f.date, writer=f.writer, first_ts=f.first_ts,
                                    last_ts=f.last_ts, bytes=f.size, path=f.path, sealed=True))
            if tail is not None and tail.num_rows:
                for (prov, day, writer), (lo, hi) in _tail_groups(tail).items():
                    listing.append(dict(table=table, provider=prov, date=day, writer=writer, first_ts=lo, last_ts=hi,
                                        bytes=None, path=None, sealed=False))
        files = pa.Table.from_pylist(
            listing,
            schema=pa.schema([
                ("table", pa.string()), ("provider", pa.string()), ("date", pa.string()), ("writer", pa.string()),
                ("first_ts", pa.int64()), ("last_ts", pa.int64()), ("bytes", pa.int64()), ("path", pa.string()),
                ("sealed", pa.bool_()),
            ]),
        )
        con.register("_wrdata_files_arrow", files)
        con.execute(
            f"CREATE OR REPLACE VIEW {FILES_VIEW} AS SELECT \"table\", provider, CAST(date AS DATE) AS date, writer, "
            "timezone('UTC', make_timestamp_ns(first_ts)) AS first_ts, timezone('UTC', make_timestamp_ns(last_ts)) AS last_ts, "
            "bytes, path, sealed FROM _wrdata_files_arrow"
        )
        log.debug("queries: snapshot of %s: %d sealed files", state.root, sum(len(s.files) for s in state.snapshots.values()))


DROPPED = "_wrdata_trades_dropped"


def _merged_trades(con: duckdb.DuckDBPyConnection, state: _State, body: str) -> str:
    """``trades`` as the merged view over ``body`` (every writer's rows), and the
    ``trades_all`` view of ``body`` itself; the rows to leave out are computed once per
    snapshot (nothing to compute for one writer without healed rows)."""
    from ..storage.merge import drop_set

    con.execute(f"CREATE OR REPLACE VIEW {ALL_TRADES_VIEW} AS {body}")
    drops = drop_set(state.root, journal=state.journal, filesystem=state.filesystem)
    if not len(drops):
        state.drops = None
        _unregister(con, DROPPED)
        return body
    state.drops = drops
    con.register(DROPPED, drops.keys)
    return anti_join(f"({body})")


def anti_join(rel: str) -> str:
    """``rel`` (trades rows) without the rows the merged view leaves out."""
    return (
        f"SELECT t.* FROM {rel} t ANTI JOIN {DROPPED} d ON t.provider = d.provider AND epoch_ns(t.ts_recv) = d.ts_recv_ns "
        "AND t.writer = d.writer AND t.conn = d.conn AND t.seq = d.seq AND t.idx = d.idx"
    )


def _tail_groups(tail: pa.Table) -> dict[tuple[str, str, str], tuple[int, int]]:
    """(provider, date, writer) → (first, last ts_recv) of the journal rows."""
    t = pa.table({
        "provider": tail.column("provider"),
        "date": tail.column("date").cast(pa.string()),
        "writer": tail.column("writer").cast(pa.string()),
        "ts": tail.column("ts_recv").cast(pa.int64()),
    })
    g = t.group_by(["provider", "date", "writer"]).aggregate([("ts", "min"), ("ts", "max")])
    out = {}
    for r in g.to_pylist():
        out[(r["provider"], r["date"], r["writer"])] = (r["ts_min"], r["ts_max"])
    return out


def _unregister(con: duckdb.DuckDBPyConnection, name: str) -> None:
    try:
        con.unregister(name)
    except duckdb.Error:
        pass
