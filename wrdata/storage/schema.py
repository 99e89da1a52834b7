"""Arrow schemas of the recorded tables, and how each is written to Parquet.

Every table starts with the same identity columns, in this order::

    ts_recv   timestamp[ns, UTC]  not null   local receive time of the frame
    ts_event  timestamp[ns, UTC]             the venue's time (null where it sends none)
    symbol    dictionary<string>             the venue's own spelling
    writer    dictionary<string>             the process that recorded the row
    conn      int32                          connection id within that process
    seq       int64                          that connection's frame counter
    idx       int32                          position of the message within its frame
    source    dictionary<string>             ``stream`` or ``backfill``
    channel   dictionary<string>             the subscription (``trade``, ``bar:1m``, ``book``)

``provider`` and ``date`` are not columns of the files: they come from the Hive path
(``provider=binance/date=2024-08-09``), which every reader turns into columns.

Each schema carries ``wrdata.schema_version`` and ``wrdata.table`` in its metadata.
Readers call :func:`conform` so that files written by an older version (fewer columns)
read as the current schema, with the missing columns null.

The Parquet settings in :data:`PARQUET_DEFAULTS` were chosen by measuring on the
19,904-trade Binance tape (``bench/storage_size.py`` prints the table):

- DELTA_BINARY_PACKED for every integer and timestamp column: times and ids grow slowly,
  so their deltas pack into a few bits (ts_recv 2.2 B/row, trade_id 0.01 B/row).
- No dictionary and PLAIN for floats: dictionary pages on prices cost more than zstd
  gains (price 1.3 → 1.75 B/row); BYTE_STREAM_SPLIT was much worse on trade sizes
  (2.5 → 5.9 B/row) because sizes are few distinct decimals that zstd matches whole.
- Dictionary encoding for the low-cardinality strings (symbol, writer, side, ...).
- zstd level 9 everywhere: on the tape, 7.9 B/trade (level 6: 8.0; 3: 8.4) at ~1.7M
  trades/s per core, and raw payloads of 7.8 B per trade frame at ~0.5–0.7M frames/s;
  levels above 9 gain little until 19, which is far too slow for capture (15k frames/s).
- Statistics only on the columns readers prune with (times, symbol, ids, conn/seq):
  on prices, sizes and payloads they cost footer bytes and prune nothing.
"""

from __future__ import annotations

import pyarrow as pa

# 2: raw gained `status` (the HTTP status of a recorded REST response)
SCHEMA_VERSION = 2

TS = pa.timestamp("ns", tz="UTC")
DICT = pa.dictionary(pa.int32(), pa.string())

#: message kind → table name
KIND_TABLE = {"trade": "trades", "quote": "quotes", "bar": "bars", "book": "book", "status": "events"}
#: table name → message kind
TABLE_KIND = {v: k for k, v in KIND_TABLE.items()}
TABLES = ("trades", "quotes", "bars", "book", "events", "raw")

_COMMON = [
    pa.field("ts_recv", TS, nullable=False),
    pa.field("ts_event", TS),
    pa.field("symbol", DICT),
    pa.field("writer", DICT),
    pa.field("conn", pa.int32()),
    pa.field("seq", pa.int64()),
    pa.field("idx", pa.int32()),
    pa.field("source", DICT),
    pa.field("channel", DICT),
]

_SPECIFIC: dict[str, list[pa.Field]] = {
    "trades": [
        pa.field("price", pa.float64()),
        pa.field("size", pa.float64()),
        pa.field("side", DICT),
        pa.field("trade_id", pa.int64()),
        pa.field("trade_ref", pa.string()),
        pa.field("exchange", DICT),
        pa.field("conditions", pa.string()),
        pa.field("ts_fetched", TS),
    ],
    "quotes": [
        pa.field("bid", pa.float64()),
        pa.field("ask", pa.float64()),
        pa.field("bid_size", pa.float64()),
        pa.field("ask_size", pa.float64()),
        pa.field("update_id", pa.int64()),
    ],
    "bars": [
        pa.field("open", pa.float64()),
        pa.field("high", pa.float64()),
        pa.field("low", pa.float64()),
        pa.field("close", pa.float64()),
        pa.field("volume", pa.float64()),
        pa.field("interval", DICT),
        pa.field("closed", pa.bool_()),
        pa.field("derived", pa.bool_()),
    ],
    # One row per changed level. ``pos`` is the row's position within its message
    # (bids first, then asks), so a message's rows regroup in order; a message with no
    # levels (e.g. a reset to an empty book) still has one row, with side null.
    "book": [
        pa.field("side", DICT),
        pa.field("price", pa.float64()),
        pa.field("size", pa.float64()),
        pa.field("snapshot", pa.bool_()),
        pa.field("update_id", pa.int64()),
        pa.field("checksum", pa.int64()),
        pa.field("pos", pa.int32(), nullable=False),
    ],
    "events": [
        pa.field("status", DICT),
        pa.field("reason", pa.string()),
        pa.field("gap_start_ns", TS),
        pa.field("gap_end_ns", TS),
        pa.field("first_missing_id", pa.int64()),
        pa.field("last_missing_id", pa.int64()),
        pa.field("dropped", pa.int64()),
    ],
}

_RAW = [
    pa.field("ts_recv", TS, nullable=False),
    pa.field("conn", pa.int32()),
    pa.field("seq", pa.int64()),
    pa.field("direction", DICT),  # in, out, rest, event
    pa.field("url", DICT),
    pa.field("payload", pa.binary()),
    pa.field("writer", DICT),
    pa.field("status", pa.int16()),  # REST rows: the HTTP status (0: no response); null otherwise
]

DIRECTIONS = ("in", "out", "rest", "event")


def _meta(table: str) -> dict[bytes, bytes]:
    return {b"wrdata.schema_version": str(SCHEMA_VERSION).encode(), b"wrdata.table": table.encode()}


SCHEMAS: dict[str, pa.Schema] = {t: pa.schema(_COMMON + f, metadata=_meta(t)) for t, f in _SPECIFIC.items()}
SCHEMAS["raw"] = pa.schema(_RAW, metadata=_meta("raw"))

#: the total-order key within one file (provider and writer are constant per file)
SORT_KEYS: dict[str, tuple[str, ...]] = {t: ("ts_recv", "conn", "seq", "idx") for t in TABLES}
SORT_KEYS["book"] = ("ts_recv", "conn", "seq", "idx", "pos")
SORT_KEYS["raw"] = ("ts_recv", "conn", "seq")

#: Hive partition columns, as every reader sees them
PARTITION_SCHEMA = pa.schema([pa.field("provider", pa.string()), pa.field("date", pa.date32())])


def schema(table: str) -> pa.Schema:
    try:
        return SCHEMAS[table]
    except KeyError:
        raise ValueError(f"unknown table {table!r}: expected one of {', '.join(TABLES)}") from None


def schema_version(s: pa.Schema) -> int | None:
    md = s.metadata or {}
    v = md.get(b"wrdata.schema_version")
    return int(v) if v is not None else None


def conform(table: str, data: pa.Table | pa.RecordBatch) -> pa.Table | pa.RecordBatch:
    """Make ``data`` (possibly from an older schema version) match the current schema.

    Missing columns become null, extra columns are dropped, types are cast where they
    differ (e.g. a dictionary column stored as plain strings). Partition columns
    (``provider``, ``date``) are kept if present.
    """
    target = schema(table)
    if data.schema.equals(target, check_metadata=False):
        return data
    n = data.num_rows
    cols, fields = [], []
    names = set(data.schema.names)
    for f in target:
        if f.name in names:
            col = data.column(f.name)
            if col.type != f.type:
                col = col.cast(f.type)
        else:
            col = pa.nulls(n, f.type)
            if not f.nullable:
                raise ValueError(f"{table}: column {f.name!r} is missing and cannot be null")
        cols.append(col)
        fields.append(f)
    for extra in ("provider", "date"):
        if extra in names:
            cols.append(data.column(extra))
            fields.append(data.schema.field(extra))
    out_schema = pa.schema(fields, metadata=target.metadata)
    if isinstance(data, pa.RecordBatch):
        return pa.RecordBatch.from_arrays(cols, schema=out_schema)
    return pa.Table.from_arrays(cols, schema=out_schema)


# ---------------------------------------------------------------------------------------
# Parquet settings

_INT_TYPES = (pa.int32(), pa.int64(), TS)
# Statistics where readers prune with them (time ranges, symbols, id ranges, kinds of
# event); on prices, sizes and payloads they cost footer bytes and prune nothing.
_STATS_COLUMNS = frozenset(
    {"ts_recv", "ts_event", "symbol", "conn", "seq", "trade_id", "update_id", "status", "interval", "side", "direction", "first_missing_id", "last_missing_id",
     "source"}  # source: readers look for healed rows (wrdata.storage.merge) without decoding every file
)


def parquet_options(table: str, *, compression_level: int | None = None) -> dict:
    """Keyword arguments for :class:`pyarrow.parquet.ParquetWriter` for ``table``."""
    s = schema(table)
    level = compression_level if compression_level is not None else PARQUET_DEFAULTS["compression_level"][table]
    dict_cols = [f.name for f in s if pa.types.is_dictionary(f.type)]
    encodings = {f.name: "DELTA_BINARY_PACKED" for f in s if f.type in _INT_TYPES and f.name != "checksum"}
    stats = [f.name for f in s if f.name in _STATS_COLUMNS]
    return dict(
        compression="zstd",
        compression_level=level,
        use_dictionary=dict_cols,
        column_encoding=encodings,
        write_statistics=stats,
        sorting_columns=[_sorting_column(s, k) for k in SORT_KEYS[table]],
        store_schema=True,
    )


def _sorting_column(s: pa.Schema, name: str):
    import pyarrow.parquet as pq

    return pq.SortingColumn(s.get_field_index(name))


PARQUET_DEFAULTS: dict = {
    "compression_level": {"trades": 9, "quotes": 9, "bars": 9, "book": 9, "events": 9, "raw": 9},
    # rows per row group, measured (bench/storage_size.py, 600k trades, zstd 9): 128k
    # reads a 20k-row time range ~2x faster than 256k and ~4x faster than 1M (pruning
    # by ts_recv statistics) for +0.3% size; 64k gains little more and costs +1%
    "row_group_rows": 128 * 1024,
    # and a byte cap so that raw row groups (large payloads) stay bounded in memory
    "row_group_bytes": 64 * 1024 * 1024,
}
