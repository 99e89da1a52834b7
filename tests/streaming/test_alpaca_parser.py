"""The Alpaca session on the documented example messages (tests/data/alpaca, see SOURCES.md),
in JSON and in MessagePack framing, its handshake, error mapping and malformed input."""

from __future__ import annotations

import calendar
import json
import struct
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import load_frames
from wrdata.channels import Channel
from wrdata.streaming.alpaca import (
    AlpacaAuthError,
    AlpacaConnectionLimitError,
    AlpacaSubscriptionError,
    AlpacaVenue,
    msgpack_ts_ns,
    rfc3339_ns,
)
from wrdata.streaming.base import UnsupportedChannelError
from wrdata.streaming.driver import RawDriver

STOCK = "alpaca/stock_v2_docs_examples.jsonl"
CRYPTO = "alpaca/crypto_v1beta3_docs_examples.jsonl"
CREDS = {"key": "PKTESTKEY", "secret": "s3cr3t-value"}


def ns(text: str) -> int:
    """Reference conversion via datetime (microseconds) plus the digits beyond them."""
    head, _, frac = text.rstrip("Z").partition(".")
    d = datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    return calendar.timegm(d.timetuple()) * 10**9 + int((frac or "0").ljust(9, "0"))


def to_msgpack(frame: str) -> bytes:
    """A documented JSON frame as Alpaca's MessagePack framing carries it: same maps, ``t``
    as a Timestamp extension (type -1, 96-bit form for nanoseconds)."""

    def conv(item):
        if isinstance(item, dict):
            out = {}
            for k, v in item.items():
                if k == "t" and isinstance(v, str):
                    n = rfc3339_ns(v)
                    v = msgspec.msgpack.Ext(-1, struct.pack(">IQ", n % 10**9, n // 10**9))
                out[k] = conv(v)
            return out
        if isinstance(item, list):
            return [conv(x) for x in item]
        return item

    return msgspec.msgpack.encode(conv(json.loads(frame)))


def drive(relpath: str, framing: str = "json", **options):
    venue = AlpacaVenue(credentials=CREDS, **options)
    driver = RawDriver(venue)
    out = []
    for i, row in enumerate(load_frames(relpath)):
        payload = row["frame"].encode() if framing == "json" else to_msgpack(row["frame"])
        out.append(driver.feed(1, i, 1_000 + i, "in", row["url"], payload))
    return venue, driver.sessions[1], out


def test_stock_examples_field_by_field():
    _, session, out = drive(STOCK)
    trade, = out[3]
    assert (trade.kind, trade.symbol, trade.channel) == ("trade", "AAPL", "trade")
    assert trade.price == 162.92 and trade.size == 3 and trade.trade_id == 628
    assert trade.exchange == "K" and trade.conditions == "@,F,T,I" and trade.side is None
    assert trade.ts_event == ns("2023-04-06T11:54:26.838232225Z") == 1680782066838232225
    assert trade.ts_recv == 1003 and trade.seq == 3 and trade.conn == 1 and trade.idx == 0
    quote, = out[4]
    assert (quote.kind, quote.symbol, quote.bid, quote.ask, quote.bid_size, quote.ask_size) == ("quote", "AMD", 91.95, 91.98, 2, 1)
    assert quote.ts_event == ns("2023-04-06T11:54:21.670905508Z")
    bar, = out[5]
    assert (bar.kind, bar.symbol, bar.channel, bar.interval, bar.closed, bar.derived) == ("bar", "FAKEPACA", "bar:1m", "1m", True, False)
    assert (bar.open, bar.high, bar.low, bar.close, bar.volume) == (132.65, 136, 132.12, 134.65, 205)
    assert bar.ts_event == ns("2024-07-24T07:56:00Z"), "a bar's time is its start"
    # trading status, LULD, correction, cancel, imbalance: parsed, no message, no error
    assert out[6:11] == [[], [], [], [], []]
    assert session.bad_frames == 0


@pytest.mark.parametrize("relpath", [STOCK, CRYPTO])
def test_msgpack_framing_gives_the_same_messages(relpath):
    _, _, as_json = drive(relpath, "json")
    _, s, as_msgpack = drive(relpath, "msgpack")
    assert as_msgpack == as_json
    assert s.bad_frames == 0


def test_crypto_examples():
    _, session, out = drive(CRYPTO)
    trade, = out[2]
    assert (trade.symbol, trade.price, trade.size, trade.side) == ("AVAX/USD", 47.299, 29.205707815, "sell")
    assert trade.trade_id == 3447222699101865076 and trade.exchange is None and trade.conditions is None
    quote, = out[3]
    assert (quote.symbol, quote.bid, quote.bid_size, quote.ask, quote.ask_size) == ("BAT/USD", 0.35718, 13445.46, 0.3581, 13561.902)
    bar, = out[4]
    assert bar.symbol == "BTC/USD" and bar.volume == 3.227759152 and bar.ts_event == ns("2023-03-17T12:28:00Z")
    book, = out[5]
    assert (book.kind, book.channel, book.snapshot) == ("book", "book", True)
    assert book.bids == [(71859.53, 0.27994)] and book.asks == [(71939.7, 0.83953)]
    assert book.ts_event == ns("2024-03-12T10:38:50.79613221Z")


# -- handshake ----------------------------------------------------------------------------------

@pytest.mark.parametrize("framing", ["json", "msgpack"])
def test_handshake_auth_subscribe_ack_and_deltas(framing):
    venue = AlpacaVenue(credentials=CREDS, framing=framing)
    enc = (lambda o: json.dumps(o).encode()) if framing == "json" else msgspec.msgpack.encode
    dec = (lambda b: json.loads(b)) if framing == "json" else msgspec.msgpack.decode
    s = venue.session(1, [("trades", "AAPL"), ("quotes", "AAPL"), ("bars", "MSFT"), ("dailyBars", "SPY")])
    assert s.url() == "wss://stream.data.alpaca.markets/v2/iex"
    assert s.headers() == {"Content-Type": f"application/{framing}"}
    assert s.feed(enc([{"T": "success", "msg": "connected"}]), 1, 0) == []
    auth, = s.outbox
    assert isinstance(auth, str if framing == "json" else bytes)
    raw = auth.encode() if isinstance(auth, str) else auth
    assert dec(raw) == {"action": "auth", "key": "PKTESTKEY", "secret": "s3cr3t-value"}
    redacted = s.redact(raw)
    assert b"PKTESTKEY" not in redacted and b"s3cr3t" not in redacted
    assert dec(redacted) == {"action": "auth", "key": "***", "secret": "***"}
    s.outbox.clear()
    s.feed(enc([{"T": "success", "msg": "authenticated"}]), 2, 1)
    sub, = s.outbox
    msg = dec(sub.encode() if isinstance(sub, str) else sub)
    assert msg == {"action": "subscribe", "trades": ["AAPL"], "quotes": ["AAPL"], "bars": ["MSFT"],
                   "updatedBars": ["MSFT"], "dailyBars": ["SPY"]}
    assert not s.ready
    s.feed(enc([{"T": "subscription", "trades": ["AAPL"], "quotes": ["AAPL"], "bars": ["MSFT"], "updatedBars": ["MSFT"],
                 "dailyBars": ["SPY"], "corrections": ["AAPL"], "cancelErrors": ["AAPL"]}]), 3, 2)
    assert s.ready
    s.outbox.clear()
    s.add([("trades", "TSLA")])
    s.remove([("quotes", "AAPL")])
    assert [dec(f.encode() if isinstance(f, str) else f) for f in s.outbox] == [
        {"action": "subscribe", "trades": ["TSLA"]},
        {"action": "unsubscribe", "quotes": ["AAPL"]},
    ]


def test_updated_bars_map_to_the_same_minute_and_daily_bars_are_open():
    venue = AlpacaVenue(credentials=CREDS, framing="json")
    s = venue.session(1, [("bars", "AAPL")])
    bar = {"S": "AAPL", "o": 1.0, "h": 2.0, "l": 0.5, "c": 1.5, "v": 100, "t": "2024-07-24T14:31:00Z", "n": 3, "vw": 1.2}
    first, = s.feed(json.dumps([{"T": "b", **bar}]).encode(), 1, 0)
    late, = s.feed(json.dumps([{"T": "u", **bar, "v": 130, "c": 1.6}]).encode(), 2, 1)
    assert (first.channel, late.channel) == ("bar:1m", "bar:1m")
    assert late.ts_event == first.ts_event and late.closed and late.volume == 130, "a correction of the same minute"
    daily, = s.feed(json.dumps([{"T": "d", **bar, "t": "2024-07-24T04:00:00Z"}]).encode(), 3, 2)
    assert (daily.channel, daily.interval, daily.closed) == ("bar:1d", "1d", False)


def test_channels_and_streams():
    v = AlpacaVenue(credentials=CREDS)
    assert v.streams("AAPL", Channel("trade")) == [("trades", "AAPL")]
    assert v.streams("AAPL", Channel("bar", interval="1m")) == [("bars", "AAPL")]
    assert v.streams("AAPL", Channel("bar", interval="1d")) == [("dailyBars", "AAPL")]
    assert v.streams("AAPL", Channel("bar", interval="5m")) == [("trades", "AAPL")] and v.derives_bars(Channel("bar", interval="5m"))
    assert v.streams("BTC/USD", Channel("book", depth=10)) == [("orderbooks", "BTC/USD")]
    with pytest.raises(UnsupportedChannelError):
        v.streams("AAPL", Channel("book", depth=10))
    assert v.connection_group(("trades", "BTC/USD")) == "crypto" and v.connection_group(("trades", "AAPL")) == "stocks"
    assert v.session(1, [("trades", "BTC/USD")]).url() == "wss://stream.data.alpaca.markets/v1beta3/crypto/us"
    assert AlpacaVenue(credentials=CREDS, feed="test").session(1, [("bars", "FAKEPACA")]).url().endswith("/v2/test")
    assert v.venue_symbol("btc-usd") == "BTC/USD" and v.venue_symbol("aapl") == "AAPL"
    assert v.stream_target(("bars", "AAPL")) == ("AAPL", "bar:1m")


def test_credentials_from_environment(monkeypatch):
    for n in ("APCA_API_KEY_ID", "APCA_API_SECRET_KEY", "ALPACA_API_KEY", "ALPACA_SECRET_KEY"):
        monkeypatch.delenv(n, raising=False)
    assert not AlpacaVenue.has_credentials()
    monkeypatch.setenv("APCA_API_KEY_ID", "k")
    assert not AlpacaVenue.has_credentials(), "a key without its secret is not enough"
    monkeypatch.setenv("APCA_API_SECRET_KEY", "s")
    assert AlpacaVenue.has_credentials() and AlpacaVenue().credentials == {"key": "k", "secret": "s"}
    assert AlpacaVenue(credentials={"api_key": "a", "secret_key": "b"}).credentials == {"key": "a", "secret": "b"}


# -- errors ---------------------------------------------------------------------------------------

def _ready_session(**options):
    venue = AlpacaVenue(credentials=CREDS, framing="json", **options)
    s = venue.session(1, [("trades", "AAPL")])
    for i, f in enumerate(([{"T": "success", "msg": "connected"}], [{"T": "success", "msg": "authenticated"}],
                           [{"T": "subscription", "trades": ["AAPL"]}])):
        s.feed(json.dumps(f).encode(), i, i)
    assert s.ready
    return venue, s


@pytest.mark.parametrize(
    "code, outcome",
    [
        (400, "event"), (401, "reconnect"), (402, AlpacaAuthError), (403, "nothing"), (404, "reconnect"),
        (405, "event"), (406, "reconnect"), (407, "reconnect"), (408, AlpacaAuthError), (409, AlpacaAuthError),
        (410, "event"), (500, "reconnect"), (499, "event"),
    ],
)
def test_every_documented_error_code_is_mapped(code, outcome):
    _, s = _ready_session()
    out = s.feed(json.dumps([{"T": "error", "code": code, "msg": "text"}]).encode(), 9, 9)
    if outcome == "event":
        assert [(m.kind, m.status) for m in out] == [("status", "error")] and str(code) in out[0].reason
        assert s.fatal is None and s.reconnect_requested is None
    elif outcome == "reconnect":
        assert out == [] and s.fatal is None and str(code) in s.reconnect_requested
    elif outcome == "nothing":
        assert out == [] and s.fatal is None and s.reconnect_requested is None
    else:
        assert isinstance(s.fatal, outcome) and s.fatal.code == code
        assert "s3cr3t" not in str(s.fatal) and "PKTESTKEY" not in str(s.fatal)


@pytest.mark.parametrize("code", [405, 410])
def test_refused_first_subscription_is_fatal(code):
    venue = AlpacaVenue(credentials=CREDS, framing="json")
    s = venue.session(1, [("trades", "AAPL")])
    s.feed(b'[{"T":"success","msg":"connected"}]', 1, 0)
    s.feed(b'[{"T":"success","msg":"authenticated"}]', 2, 1)
    s.feed(json.dumps([{"T": "error", "code": code, "msg": "x"}]).encode(), 3, 2)
    assert isinstance(s.fatal, AlpacaSubscriptionError) and "AAPL" in str(s.fatal)


def test_connection_limit_retries_then_gives_up():
    venue = AlpacaVenue(credentials=CREDS, framing="json", max_conn_limit_retries=2)
    for attempt in range(3):
        s = venue.session(attempt + 1, [("trades", "AAPL")])
        s.feed(b'[{"T":"success","msg":"connected"}]', 1, 0)
        s.feed(b'[{"T":"error","code":406,"msg":"connection limit exceeded"}]', 2, 1)
        if attempt < 2:
            assert s.fatal is None and s.reconnect_requested
    assert isinstance(s.fatal, AlpacaConnectionLimitError)
    ok = venue.session(9, [("trades", "AAPL")])
    ok.feed(b'[{"T":"success","msg":"connected"}]', 1, 0)
    ok.feed(b'[{"T":"success","msg":"authenticated"}]', 2, 1)
    assert venue.conn_limit_strikes == 0, "a successful auth resets the count"


def test_missing_credentials_are_fatal_at_connect(monkeypatch):
    for n in ("APCA_API_KEY_ID", "APCA_API_SECRET_KEY", "ALPACA_API_KEY", "ALPACA_SECRET_KEY"):
        monkeypatch.delenv(n, raising=False)
    s = AlpacaVenue(framing="json").session(1, [("trades", "AAPL")])
    s.feed(b'[{"T":"success","msg":"connected"}]', 1, 0)
    assert isinstance(s.fatal, AlpacaAuthError) and "APCA_API_KEY_ID" in str(s.fatal) and s.outbox == []


def test_ack_without_a_symbol_is_reported():
    venue = AlpacaVenue(credentials=CREDS, framing="json")
    s = venue.session(1, [("trades", "AAPL"), ("trades", "ZZZZ")])
    s.feed(b'[{"T":"success","msg":"connected"}]', 1, 0)
    s.feed(b'[{"T":"success","msg":"authenticated"}]', 2, 1)
    out = s.feed(b'[{"T":"subscription","trades":["AAPL"],"quotes":[]}]', 3, 2)
    assert [(m.status, m.symbol, m.channel) for m in out] == [("error", "ZZZZ", "trade")]
    assert s.feed(b'[{"T":"subscription","trades":["AAPL"]}]', 4, 3) == [], "reported once"


# -- malformed input -------------------------------------------------------------------------------

def test_malformed_frames_are_counted_and_good_items_kept():
    _, s = _ready_session()
    assert [m.status for m in s.feed(b'[{"T":"t","S":"AAPL"', 1, 10)] == ["error"]
    assert [m.status for m in s.feed(b"\x00\x01", 2, 11)] == ["error"]
    good = '{"T":"t","S":"AAPL","i":1,"x":"V","p":1.5,"s":2,"t":"2024-01-02T15:00:00.5Z"}'
    bad = '{"T":"t","S":"AAPL","p":"oops"}'
    bad_time = '{"T":"t","S":"AAPL","i":2,"p":1.5,"s":2,"t":"yesterday"}'
    news = '{"T":"n","headline":"not a stock item"}'
    out = s.feed(f"[{good},{bad},{news},{good},{bad_time}]".encode(), 3, 12)
    assert [m.kind for m in out] == ["trade", "trade", "status"]
    assert out[0].ts_event == ns("2024-01-02T15:00:00.5Z") and [m.idx for m in out] == [0, 1, 2]
    assert s.bad_frames == 3
    # a frame with only an item type we do not know is skipped without an error
    assert s.feed(f"[{news}]".encode(), 4, 13) == [] and s.bad_frames == 3


# -- timestamps -------------------------------------------------------------------------------------

@given(st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2090, 1, 1)), st.integers(0, 999), st.integers(0, 9))
def test_rfc3339_exact_to_the_nanosecond(dt, extra_ns, digits):
    total = (calendar.timegm(dt.timetuple()) * 10**9 + dt.microsecond * 1000 + extra_ns)
    frac = f"{total % 10**9:09d}"[:digits]
    text = dt.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if digits else "") + "Z"
    expect = total // 10**9 * 10**9 + (int(frac.ljust(9, "0")) if digits else 0)
    assert rfc3339_ns(text) == expect
    assert rfc3339_ns(text) == expect, "cached minute, same answer"
    shifted = (dt + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if digits else "") + "+02:00"
    assert rfc3339_ns(shifted) == expect


def test_rfc3339_rejects_junk():
    for bad in ("", "2024-01-02", "2024-01-02T15:00:00.Z", "2024-01-02T15:00:0x.1Z", "2024-01-02T15:00:00.1_2Z"):
        with pytest.raises(ValueError):
            rfc3339_ns(bad)


def test_msgpack_timestamps_all_widths():
    t = 1680782066838232225
    assert msgpack_ts_ns(b"\xd6\xff" + struct.pack(">I", t // 10**9)) == t // 10**9 * 10**9
    v = ((t % 10**9) << 34) | (t // 10**9)
    assert msgpack_ts_ns(b"\xd7\xff" + struct.pack(">Q", v)) == t
    assert msgpack_ts_ns(b"\xc7\x0c\xff" + struct.pack(">Iq", t % 10**9, t // 10**9)) == t
    assert msgpack_ts_ns(msgspec.msgpack.encode("2023-04-06T11:54:26.838232225Z")) == t
    with pytest.raises(ValueError):
        msgpack_ts_ns(b"\x01")
