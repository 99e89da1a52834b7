"""Messages ⇄ Arrow rows round-trip exactly, for every table."""

from __future__ import annotations

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from wrdata.message import StreamMessage
from wrdata.storage import SCHEMA_VERSION, conform, from_messages, raw_batch, schema, schema_version, to_messages, to_raw_frames

ts = st.integers(min_value=0, max_value=2**62)
opt_ts = st.none() | ts
f64 = st.floats(allow_nan=False) | st.none()
i64 = st.none() | st.integers(min_value=-(2**63), max_value=2**63 - 1)
i32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
s = st.none() | st.text(max_size=8)
b = st.none() | st.booleans()

common = dict(
    symbol=s,
    ts_recv=ts,
    ts_event=opt_ts,
    conn=i32,
    seq=st.integers(min_value=0, max_value=2**63 - 1),
    idx=i32,
    source=st.sampled_from(["stream", "backfill"]),
    channel=s,
)


def msgs(kind: str, **fields):
    return st.lists(st.builds(StreamMessage, provider=st.just("p"), kind=st.just(kind), **common, **fields), max_size=20)


trades = msgs(
    "trade",
    price=f64,
    size=f64,
    side=st.sampled_from([None, "buy", "sell"]),
    trade_id=i64,
    trade_ref=s,
    exchange=s,
    conditions=s,
    ts_fetched=opt_ts,
)
quotes = msgs("quote", bid=f64, ask=f64, bid_size=f64, ask_size=f64, update_id=i64)
bars = msgs("bar", open=f64, high=f64, low=f64, close=f64, size=f64, interval=s, closed=b, derived=b)
events = msgs(
    "status",
    status=st.sampled_from(["connected", "gap", "error"]),
    reason=s,
    gap_start_ns=opt_ts,
    gap_end_ns=opt_ts,
    first_missing_id=i64,
    last_missing_id=i64,
    dropped=i64,
)
levels = st.lists(st.tuples(st.floats(allow_nan=False), st.floats(allow_nan=False)), max_size=5)
books = msgs("book", bids=levels, asks=levels, snapshot=b, update_id=i64, checksum=i64)


def roundtrip(table: str, ms: list[StreamMessage]) -> list[StreamMessage]:
    batch = from_messages(table, ms, "w-1")
    assert batch.schema.equals(schema(table), check_metadata=True)
    return to_messages(table, batch, "p")


@settings(max_examples=60, deadline=None)
@given(trades)
def test_trades_roundtrip(ms):
    assert roundtrip("trades", ms) == ms


@settings(max_examples=40, deadline=None)
@given(quotes)
def test_quotes_roundtrip(ms):
    assert roundtrip("quotes", ms) == ms


@settings(max_examples=40, deadline=None)
@given(bars)
def test_bars_roundtrip(ms):
    assert roundtrip("bars", ms) == ms


@settings(max_examples=40, deadline=None)
@given(events)
def test_events_roundtrip(ms):
    assert roundtrip("events", ms) == ms


@settings(max_examples=60, deadline=None)
@given(books)
def test_book_deltas_regroup_into_their_messages(ms):
    assert roundtrip("book", ms) == ms


def test_book_rows_are_deltas_with_positions_and_an_empty_reset_keeps_a_row():
    ms = [
        StreamMessage(provider="p", kind="book", symbol="X", ts_recv=1, bids=[(10.0, 1.0), (9.0, 0.0)], asks=[(11.0, 2.0)], snapshot=True),
        StreamMessage(provider="p", kind="book", symbol="X", ts_recv=2, bids=[], asks=[], snapshot=True),  # reset to empty
        StreamMessage(provider="p", kind="book", symbol="X", ts_recv=3, bids=[], asks=[(11.0, 0.0)], update_id=5),
    ]
    batch = from_messages("book", ms, "w")
    assert batch.column("pos").to_pylist() == [0, 1, 2, 0, 0]
    assert batch.column("side").to_pylist() == ["bid", "bid", "ask", None, "ask"]
    assert batch.column("size").to_pylist() == [1.0, 0.0, 2.0, None, 0.0]
    assert batch.column("snapshot").to_pylist() == [True, True, True, True, None]
    assert to_messages("book", batch, "p") == ms


def test_bar_volume_column_is_message_size():
    m = StreamMessage(provider="p", kind="bar", ts_recv=1, open=1.0, high=2.0, low=0.5, close=1.5, size=42.0, interval="1m", closed=True)
    batch = from_messages("bars", [m], "w")
    assert batch.column("volume").to_pylist() == [42.0]
    assert to_messages("bars", batch, "p")[0].volume == 42.0


def test_raw_roundtrip_keeps_bytes_exactly():
    rows = [
        ("p", 1, 0, 5, "in", "wss://a/b", b"\x00\xffbinary"),
        ("p", 1, 1, 6, "out", "wss://a/b", b'{"op":"sub"}'),
        ("p", 0, 0, 7, "rest", None, b"", 429),  # REST rows keep their HTTP status
    ]
    batch = raw_batch(rows, "w")
    frames = to_raw_frames(batch, "p")
    assert [tuple(r)[:7] for r in frames] == [r[:7] for r in rows]
    assert [f.status for f in frames] == [None, None, 429]


def test_schema_version_and_conform_older_files():
    s = schema("trades")
    assert schema_version(s) == SCHEMA_VERSION
    # an "older" file without the later columns reads as the current schema, nulls filled
    old = pa.table({"ts_recv": pa.array([1], pa.timestamp("ns", "UTC")), "price": [1.5], "symbol": ["X"]})
    t = conform("trades", old)
    assert t.schema.names == s.names
    assert t.column("price").to_pylist() == [1.5]
    assert t.column("trade_id").to_pylist() == [None]
    assert to_messages("trades", t, "p")[0].symbol == "X"
