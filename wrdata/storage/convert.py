"""StreamMessages ⇄ Arrow record batches, batch-wise.

Both directions work a column at a time (one list comprehension per field, one
``pa.array`` per column) because that is several times faster than building rows:
about 1 µs per trade into Arrow and back on one core (``bench/storage_recorder.py``).

Round trip: for every message of a stored kind, ``to_messages(from_messages(msgs))``
equals ``msgs`` field for field, with two normalizations for books: ``bids``/``asks``
come back as lists of ``(price, size)`` tuples, and an absent side as ``[]``. Fields
that do not belong to a kind's table (a ``price`` on a status message, ``view`` on a
book) are not stored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from ..message import StreamMessage
from .schema import DICT, SCHEMAS, TABLE_KIND, TS

# table → list of (column, StreamMessage attribute); the common columns first
_COMMON = [
    ("ts_recv", "ts_recv"),
    ("ts_event", "ts_event"),
    ("symbol", "symbol"),
    ("conn", "conn"),
    ("seq", "seq"),
    ("idx", "idx"),
    ("source", "source"),
    ("channel", "channel"),
]
FIELDS: dict[str, list[tuple[str, str]]] = {
    "trades": _COMMON
    + [
        ("price", "price"),
        ("size", "size"),
        ("side", "side"),
        ("trade_id", "trade_id"),
        ("trade_ref", "trade_ref"),
        ("exchange", "exchange"),
        ("conditions", "conditions"),
        ("ts_fetched", "ts_fetched"),
    ],
    "quotes": _COMMON + [("bid", "bid"), ("ask", "ask"), ("bid_size", "bid_size"), ("ask_size", "ask_size"), ("update_id", "update_id")],
    "bars": _COMMON
    + [
        ("open", "open"),
        ("high", "high"),
        ("low", "low"),
        ("close", "close"),
        ("volume", "size"),
        ("interval", "interval"),
        ("closed", "closed"),
        ("derived", "derived"),
    ],
    # per-message fields of a book row; side/price/size/pos are per level
    "book": _COMMON + [("snapshot", "snapshot"), ("update_id", "update_id"), ("checksum", "checksum")],
    "events": _COMMON
    + [
        ("status", "status"),
        ("reason", "reason"),
        ("gap_start_ns", "gap_start_ns"),
        ("gap_end_ns", "gap_end_ns"),
        ("first_missing_id", "first_missing_id"),
        ("last_missing_id", "last_missing_id"),
        ("dropped", "dropped"),
    ],
}


def _compile_getter(attrs: list[str]) -> Callable[[list], tuple[list, ...]]:
    # A literal `[m.price for m in ms]` per field is ~2x faster than getattr(m, name).
    body = ", ".join(f"[m.{a} for m in ms]" for a in attrs)
    ns: dict = {}
    exec(f"def get(ms):\n    return ({body},)\n", ns)
    return ns["get"]


_GETTERS = {t: _compile_getter([a for _, a in f]) for t, f in FIELDS.items()}


def _array(values: list, typ: pa.DataType) -> pa.Array:
    n = len(values)
    first = values[0] if n else None
    if values.count(first) == n:  # constant column (all None, one symbol, ...): ~1 ns/row
        if first is None:
            return pa.nulls(n, typ)
        if typ == DICT:
            return _const_dict(first, n)
        if not isinstance(first, bool) or typ == pa.bool_():
            try:
                return pa.repeat(pa.scalar(first, typ), n)  # conn 0, idx 0, ...
            except (pa.ArrowException, TypeError, ValueError, OverflowError):
                pass  # let pa.array() below name the problem
    if typ == TS:
        # int64 then a zero-copy cast: building timestamps directly is ~3x slower
        return pa.array(values, pa.int64()).cast(TS)
    return pa.array(values, typ)


def _const_dict(value: str, n: int) -> pa.Array:
    return pa.DictionaryArray.from_arrays(pa.repeat(pa.scalar(0, pa.int32()), n), pa.array([value], pa.string()))


def from_messages(table: str, msgs: list[StreamMessage], writer: str) -> pa.RecordBatch:
    """A record batch of ``table``'s schema from messages of its kind (order kept)."""
    if table == "book":
        return _book_from_messages(msgs, writer)
    schema = SCHEMAS[table]
    cols = _GETTERS[table](msgs)
    arrays: list[pa.Array] = []
    names = [c for c, _ in FIELDS[table]]
    by_name = dict(zip(names, cols, strict=False))
    n = len(msgs)
    for f in schema:
        if f.name == "writer":
            arrays.append(_const_dict(writer, n))
        else:
            arrays.append(_array(by_name[f.name], f.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _book_from_messages(msgs: list[StreamMessage], writer: str) -> pa.RecordBatch:
    schema = SCHEMAS["book"]
    side: list[int | None] = []
    price: list = []
    size: list = []
    pos: list[int] = []
    owner: list[int] = []  # row → index of its message
    for i, m in enumerate(msgs):
        b = m.bids or ()
        a = m.asks or ()
        nb, na = len(b), len(a)
        k = nb + na
        if k == 0:
            side.append(None)
            price.append(None)
            size.append(None)
            pos.append(0)
            owner.append(i)
            continue
        if nb:
            price.extend([lv[0] for lv in b])
            size.extend([lv[1] for lv in b])
            side.extend([0] * nb)
        if na:
            price.extend([lv[0] for lv in a])
            size.extend([lv[1] for lv in a])
            side.extend([1] * na)
        pos.extend(range(k))
        owner.extend([i] * k)
    nrows = len(pos)
    cols = _GETTERS["book"](msgs)
    by_name = dict(zip([c for c, _ in FIELDS["book"]], cols, strict=False))
    take = pa.array(owner, pa.int32())
    arrays: list[pa.Array] = []
    for f in schema:
        name = f.name
        if name == "writer":
            arrays.append(_const_dict(writer, nrows))
        elif name == "side":
            arrays.append(pa.DictionaryArray.from_arrays(pa.array(side, pa.int32()), pa.array(["bid", "ask"])))
        elif name == "price":
            arrays.append(pa.array(price, pa.float64()))
        elif name == "size":
            arrays.append(pa.array(size, pa.float64()))
        elif name == "pos":
            arrays.append(pa.array(pos, pa.int32()))
        else:
            per_msg = _array(by_name[name], f.type)
            arrays.append(per_msg if nrows == len(msgs) and _identity(owner) else per_msg.take(take))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _identity(owner: list[int]) -> bool:
    return owner[-1] == len(owner) - 1 if owner else True


class RawFrame(NamedTuple):
    provider: str
    conn: int
    seq: int
    ts_recv: int
    direction: str
    url: str | None
    payload: bytes
    status: int | None = None  # REST rows: HTTP status (0: the request failed without a response)


def raw_batch(rows: list[tuple], writer: str) -> pa.RecordBatch:
    """A ``raw`` batch from ``(provider, conn, seq, ts_recv, direction, url, payload[, status])``
    tuples (the arguments of :meth:`DatasetWriter.on_raw`; provider is ignored: it is the
    path; only REST rows carry a status)."""
    n = len(rows)
    # one comprehension per column: zip(*rows) is ~4x slower on long lists
    payload = [r[6] for r in rows]
    return pa.RecordBatch.from_arrays(
        [
            pa.array([r[3] for r in rows], pa.int64()).cast(TS),
            pa.array([r[1] for r in rows], pa.int32()),
            pa.array([r[2] for r in rows], pa.int64()),
            _array([r[4] for r in rows], DICT),
            _array([r[5] for r in rows], DICT),
            _binary(payload),
            _const_dict(writer, n),
            pa.array([r[7] if len(r) > 7 else None for r in rows], pa.int16()),
        ],
        schema=SCHEMAS["raw"],
    )


def _binary(values: list[bytes]) -> pa.Array:
    """A binary array from bytes objects: one join and the offsets, ~5x faster than
    pa.array() (which grows its buffer value by value)."""
    n = len(values)
    if n == 0:
        return pa.array([], pa.binary())
    if None in values:
        return pa.array(values, pa.binary())
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, values), dtype=np.int64, count=n), out=offsets[1:])
    if offsets[-1] >= 2**31:
        raise ValueError(f"raw batch of {offsets[-1]} payload bytes: over the 2 GiB of one binary array, split it")
    data = b"".join(values)
    return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)])


# ---------------------------------------------------------------------------------------
# Arrow → messages


def _pylist(col: pa.Array | pa.ChunkedArray) -> list:
    t = col.type
    if t == TS or pa.types.is_timestamp(t):
        return col.cast(pa.int64()).to_pylist()
    if pa.types.is_dictionary(t):
        # decode via the (small) dictionary: much faster than to_pylist on the column
        if isinstance(col, pa.ChunkedArray):
            out: list = []
            for ch in col.chunks:
                out.extend(_pylist(ch))
            return out
        d = col.dictionary.to_pylist()
        return [None if i is None else d[i] for i in col.indices.to_pylist()]
    return col.to_pylist()


def _compile_builder(kind: str, attrs: list[str]) -> Callable:
    args = ", ".join(f"a{i}" for i in range(len(attrs)))
    kw = ", ".join(f"{a}=a{i}" for i, a in enumerate(attrs))
    src = f"def build(SM, provider, cols):\n    return [SM(provider=provider, kind={kind!r}, {kw}) for {args} in zip(*cols)]\n"
    ns: dict = {}
    exec(src, ns)
    return ns["build"]


_BUILDERS: dict[tuple[str, tuple[str, ...]], Callable] = {}
# StreamMessage's defaults: a column holding only its field's default is not passed at
# all (msgspec's keyword matching costs ~0.1 µs per keyword: skipping the usual 4-8
# all-null columns halves the cost of building a message)
_DEFAULTS = {"conn": 0, "seq": 0, "idx": 0, "source": "stream"}


def _build(table: str, provider: str, attrs: list[str], cols: list[list]) -> list[StreamMessage]:
    n = len(cols[0]) if cols else 0
    keep = [i for i, (a, c) in enumerate(zip(attrs, cols, strict=True)) if c.count(_DEFAULTS.get(a)) != n]
    key = (table, tuple(attrs[i] for i in keep))
    b = _BUILDERS.get(key)
    if b is None:
        b = _BUILDERS[key] = _compile_builder(TABLE_KIND[table], list(key[1]))
    if not keep:
        return [StreamMessage(provider=provider, kind=TABLE_KIND[table]) for _ in range(n)]  # pragma: no cover - ts_recv is never null
    return b(StreamMessage, provider, [cols[i] for i in keep])


def to_messages(table: str, data: pa.RecordBatch | pa.Table, provider: str | None = None) -> list[StreamMessage]:
    """Messages from rows of ``table`` (in row order).

    ``provider`` is taken from a ``provider`` column if the data has one (a dataset
    read), else from the argument (a file or journal segment of one provider).
    """
    if table == "raw":
        raise ValueError("raw rows are frames, not messages: use to_raw_frames()")
    if table not in FIELDS:
        raise ValueError(f"unknown table {table!r}")
    if data.num_rows == 0:
        return []
    names = set(data.schema.names)
    if "provider" in names:
        provs = _pylist(data.column("provider"))
        if len(set(provs)) > 1:
            out: list[StreamMessage] = []
            # keep row order: convert runs of one provider
            start = 0
            for i in range(1, len(provs) + 1):
                if i == len(provs) or provs[i] != provs[start]:
                    out.extend(to_messages(table, data.slice(start, i - start).drop_columns(["provider"]), provs[start]))
                    start = i
            return out
        provider = provs[0]
    if provider is None:
        raise ValueError("to_messages needs a provider: the data has no provider column")
    if table == "book":
        return _book_to_messages(data, provider)
    cols = [_pylist(data.column(c)) if c in names else [None] * data.num_rows for c, _ in FIELDS[table]]
    return _build(table, provider, [a for _, a in FIELDS[table]], cols)


def _book_to_messages(data: pa.RecordBatch | pa.Table, provider: str) -> list[StreamMessage]:
    fields = FIELDS["book"]
    names = set(data.schema.names)
    per_row = [_pylist(data.column(c)) if c in names else [None] * data.num_rows for c, _ in fields]
    side = _pylist(data.column("side"))
    price = _pylist(data.column("price"))
    size = _pylist(data.column("size"))
    pos = _pylist(data.column("pos"))
    n = len(pos)
    starts = [i for i, p in enumerate(pos) if p == 0]
    starts.append(n)
    attrs = [a for _, a in fields]
    # columns holding only their field's default are not passed (see _build)
    keep = [(a, col) for a, col in zip(attrs, per_row, strict=True) if col.count(_DEFAULTS.get(a)) != n]
    out: list[StreamMessage] = []
    SM = StreamMessage
    for j in range(len(starts) - 1):
        s, e = starts[j], starts[j + 1]
        kw = {a: col[s] for a, col in keep}
        bids = [(price[r], size[r]) for r in range(s, e) if side[r] == "bid"]
        asks = [(price[r], size[r]) for r in range(s, e) if side[r] == "ask"]
        out.append(SM(provider=provider, kind="book", bids=bids, asks=asks, **kw))
    return out


def to_raw_frames(data: pa.RecordBatch | pa.Table, provider: str | None = None) -> list[RawFrame]:
    """``raw`` rows as :class:`RawFrame` tuples (the arguments ``on_raw`` was called with)."""
    n = data.num_rows
    if "provider" in data.schema.names:
        provs = _pylist(data.column("provider"))
    elif provider is None:
        raise ValueError("to_raw_frames needs a provider: the data has no provider column")
    else:
        provs = [provider] * n
    return [
        RawFrame(*r)
        for r in zip(
            provs,
            _pylist(data.column("conn")),
            _pylist(data.column("seq")),
            _pylist(data.column("ts_recv")),
            _pylist(data.column("direction")),
            _pylist(data.column("url")),
            data.column("payload").to_pylist(),
            _pylist(data.column("status")) if "status" in data.schema.names else [None] * n,
            strict=False,
        )
    ]


def table_of(msg: StreamMessage) -> str | None:
    from .schema import KIND_TABLE

    return KIND_TABLE.get(msg.kind)


def split_by_table(msgs: Iterable[StreamMessage]) -> dict[tuple[str, str], list[StreamMessage]]:
    """Group messages by (table, provider), keeping order within each group."""
    from .schema import KIND_TABLE

    groups: dict[tuple[str, str], list[StreamMessage]] = {}
    kt = KIND_TABLE
    for m in msgs:
        key = (kt.get(m.kind, ""), m.provider)
        g = groups.get(key)
        if g is None:
            groups[key] = [m]
        else:
            g.append(m)
    return groups
