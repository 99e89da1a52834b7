"""The Polygon (Massive) session on the documented example messages (tests/data/polygon,
see SOURCES.md): batched arrays, the handshake, status events and malformed input."""

from __future__ import annotations

import json

import pytest

from tests.conftest import load_frames
from wrdata.channels import Channel
from wrdata.streaming.base import UnsupportedChannelError
from wrdata.streaming.driver import RawDriver
from wrdata.streaming.polygon import (
    PolygonAuthError,
    PolygonConnectionLimitError,
    PolygonVenue,
    pair_from_symbol,
)

STOCKS = "polygon/stocks_docs_examples.jsonl"
CRYPTO = "polygon/crypto_docs_examples.jsonl"
KEY = {"key": "pk_SECRET_123"}


def drive(relpath: str):
    venue = PolygonVenue(credentials=KEY)
    driver = RawDriver(venue)
    out = [driver.feed(1, i, 100 + i, "in", r["url"], r["frame"].encode()) for i, r in enumerate(load_frames(relpath))]
    return driver.sessions[1], out


def test_stock_examples_field_by_field():
    s, out = drive(STOCKS)
    t, = out[3]
    assert (t.kind, t.symbol, t.channel, t.price, t.size) == ("trade", "MSFT", "trade", 114.125, 100)
    assert t.trade_ref == "12345" and t.trade_id is None, "stock trade ids are strings, unique per exchange only"
    assert (t.exchange, t.conditions, t.side) == ("4", "0,12", None)
    assert t.ts_event == 1536036818784 * 1_000_000 and (t.ts_recv, t.seq, t.idx) == (103, 3, 0)
    q, = out[4]
    assert (q.kind, q.symbol, q.bid, q.bid_size, q.ask, q.ask_size, q.update_id) == ("quote", "MSFT", 114.125, 100, 114.128, 160, 50385480)
    am, = out[5]
    assert (am.kind, am.symbol, am.channel, am.interval, am.closed, am.derived) == ("bar", "GTE", "bar:1m", "1m", True, False)
    assert (am.open, am.high, am.low, am.close, am.volume) == (0.4488, 0.4489, 0.4486, 0.4486, 4110)
    assert am.ts_event == 1610144640000 * 1_000_000, "window start"
    a, = out[6]
    assert (a.symbol, a.channel, a.interval, a.ts_event) == ("AAPL", "bar:1s", "1s", 1764000001000 * 1_000_000)
    assert s.bad_frames == 0


def test_crypto_examples():
    _, out = drive(CRYPTO)
    xt, = out[0]
    assert (xt.symbol, xt.price, xt.size, xt.side, xt.trade_id, xt.exchange) == ("BTC-USD", 33021.9, 0.01616617, "buy", 14272084, "3")
    xq, = out[1]
    assert (xq.symbol, xq.bid, xq.bid_size, xq.ask, xq.ask_size) == ("BTC-USD", 33052.79, 0.48, 33073.19, 0.601)
    xas, = out[2]
    assert (xas.symbol, xas.channel, xas.ts_event) == ("BCD-USD", "bar:1s", 1610463240000 * 1_000_000)
    xa, = out[3]
    assert (xa.symbol, xa.channel, xa.close) == ("BTC-USD", "bar:1m", 26688.7)


def test_batched_mixed_frame_in_one_pass():
    s = PolygonVenue(credentials=KEY).session(1, ["T.AAPL"])
    events = []
    for i in range(100):
        events.append({"ev": "T", "sym": f"S{i % 7}", "x": i % 20, "i": str(i), "z": 3, "p": 10 + i / 100, "s": i + 1,
                       "t": 1_700_000_000_000 + i, "q": i, **({"c": [12, 37]} if i % 3 else {})})
        if i % 10 == 0:
            events.append({"ev": "Q", "sym": "S0", "bx": 1, "bp": 9.99, "bs": 3, "ax": 2, "ap": 10.01, "as": 4, "t": 1, "q": i})
        if i % 25 == 0:
            events.append({"ev": "LULD", "T": "S1", "h": 11, "l": 9, "i": [], "z": 3, "t": 1, "q": 1})
    out = s.feed(json.dumps(events).encode(), 5, 7)
    assert len(out) == 110 and [m.idx for m in out] == list(range(110))
    trades = [m for m in out if m.kind == "trade"]
    assert [m.trade_ref for m in trades] == [str(i) for i in range(100)]
    assert [m.conditions for m in trades[:4]] == [None, "12,37", "12,37", None]
    assert all(m.seq == 7 and m.ts_recv == 5 and m.conn == 1 for m in out)


def test_handshake_and_subscriptions():
    venue = PolygonVenue(credentials=KEY)
    s = venue.session(3, ["T.AAPL", "Q.AAPL", "AM.MSFT"])
    assert s.url() == "wss://socket.massive.com/stocks"
    s.feed(b'[{"ev":"status","status":"connected","message":"Connected Successfully"}]', 1, 0)
    auth, = s.outbox
    assert json.loads(auth) == {"action": "auth", "params": "pk_SECRET_123"}
    assert b"pk_SECRET" not in s.redact(auth.encode()) and json.loads(s.redact(auth.encode()))["params"] == "***"
    s.outbox.clear()
    s.feed(b'[{"ev":"status","status":"auth_success","message":"authenticated"}]', 2, 1)
    sub, = s.outbox
    assert json.loads(sub) == {"action": "subscribe", "params": "AM.MSFT,Q.AAPL,T.AAPL"}
    for i, topic in enumerate(("T.AAPL", "AM.MSFT")):
        s.feed(json.dumps([{"ev": "status", "status": "success", "message": f"subscribed to: {topic}"}]).encode(), 3, 2 + i)
    assert not s.ready, "Q.AAPL is not acknowledged yet"
    s.feed(b'[{"ev":"status","status":"success","message":"subscribed to: Q.AAPL"}]', 4, 4)
    assert s.ready
    s.outbox.clear()
    s.add(["T.TSLA", "T.NVDA"])
    s.remove(["Q.AAPL"])
    assert [json.loads(f) for f in s.outbox] == [
        {"action": "subscribe", "params": "T.NVDA,T.TSLA"}, {"action": "unsubscribe", "params": "Q.AAPL"}]
    crypto = venue.session(4, ["XT.BTC-USD"])
    assert crypto.url() == "wss://socket.massive.com/crypto"


def test_status_events():
    def session():
        venue = PolygonVenue(credentials=KEY, max_connection_kicks=1)
        s = venue.session(1, ["T.AAPL"])
        s.feed(b'[{"ev":"status","status":"connected","message":"Connected Successfully"}]', 1, 0)
        return venue, s

    _, s = session()
    s.feed(b'[{"ev":"status","status":"auth_failed","message":"authentication failed"}]', 2, 1)
    assert isinstance(s.fatal, PolygonAuthError) and "authentication failed" in str(s.fatal) and "pk_SECRET" not in str(s.fatal)
    _, s = session()
    s.feed(b'[{"ev":"status","status":"auth_timeout","message":"No authentication request received."}]', 2, 1)
    assert s.fatal is None and "auth_timeout" in s.reconnect_requested
    venue, s = session()
    s.feed(b'[{"ev":"status","status":"max_connections","message":"Maximum number of connections exceeded."}]', 2, 1)
    assert s.fatal is None and "max_connections" in s.reconnect_requested
    s2 = venue.session(2, ["T.AAPL"])
    s2.feed(b'[{"ev":"status","status":"max_connections","message":"Maximum number of connections exceeded."}]', 3, 0)
    assert isinstance(s2.fatal, PolygonConnectionLimitError), "kicked again: someone else holds the key"
    _, s = session()
    out = s.feed(b'[{"ev":"status","status":"error","message":"something odd"}]', 2, 1)
    assert [(m.status, m.reason) for m in out] == [("error", "polygon error: something odd")]
    _, s = session()
    s.feed(b'[{"ev":"status","status":"slow_consumer","message":"x"}]', 2, 1)
    assert "slow_consumer" in s.reconnect_requested


def test_missing_key_is_fatal(monkeypatch):
    monkeypatch.delenv("POLYGON_API_KEY", raising=False)
    monkeypatch.delenv("MASSIVE_API_KEY", raising=False)
    s = PolygonVenue().session(1, ["T.AAPL"])
    s.feed(b'[{"ev":"status","status":"connected","message":"Connected Successfully"}]', 1, 0)
    assert isinstance(s.fatal, PolygonAuthError) and "POLYGON_API_KEY" in str(s.fatal) and not s.outbox
    monkeypatch.setenv("MASSIVE_API_KEY", "m")
    assert PolygonVenue.has_credentials() and PolygonVenue().credentials == {"key": "m"}


def test_malformed_frames():
    s = PolygonVenue(credentials=KEY).session(1, ["T.AAPL"])
    assert [m.status for m in s.feed(b'[{"ev":"T","sym":"AAPL"', 1, 0)] == ["error"]
    assert [m.status for m in s.feed(b'{"ev":"T"}', 1, 1)] == ["error"], "not an array"
    good = '{"ev":"T","sym":"AAPL","x":4,"i":"1","p":1.5,"s":10,"t":1700000000000}'
    out = s.feed(f'[{good},{{"ev":"T","sym":"AAPL","p":"x"}},{{"ev":"NEW","foo":1}},{good}]'.encode(), 1, 2)
    assert [m.kind for m in out] == ["trade", "trade", "status"] and [m.idx for m in out] == [0, 1, 2]
    assert s.bad_frames == 3
    assert s.feed(b'[{"ev":"NEW","foo":1}]', 1, 3) == [] and s.bad_frames == 3, "unknown event types are skipped"
    numeric_id = '{"ev":"T","sym":"AAPL","x":4,"i":123,"p":1.5,"s":10,"t":1700000000000}'
    t, = s.feed(f"[{numeric_id}]".encode(), 1, 4)
    assert t.trade_ref == "123"
    for c in ('null', '[]', '[ 0 , 12 ]'):
        t, = s.feed(b'[{"ev":"T","sym":"AAPL","p":1.5,"s":10,"t":1700000000000,"c":' + c.encode() + b"}]", 1, 5)
        assert t.conditions == {"null": None, "[]": None, "[ 0 , 12 ]": "0,12"}[c]


def test_symbols_and_streams():
    v = PolygonVenue(credentials=KEY)
    assert pair_from_symbol("X:BTCUSD") == "BTC-USD" and pair_from_symbol("X:ETHUSDT") == "ETH-USDT"
    assert v.venue_symbol("btc/usd") == "BTC-USD" and v.venue_symbol("aapl") == "AAPL" and v.venue_symbol("X:SOLUSD") == "SOL-USD"
    assert v.streams("AAPL", Channel("trade")) == ["T.AAPL"]
    assert v.streams("AAPL", Channel("bar", interval="1s")) == ["A.AAPL"]
    assert v.streams("BTC-USD", Channel("bar", interval="1m")) == ["XA.BTC-USD"]
    assert v.streams("BTC-USD", Channel("bar", interval="15m")) == ["XT.BTC-USD"]
    assert v.connection_group("XQ.BTC-USD") == "crypto" and v.connection_group("AM.AAPL") == "stocks"
    assert v.stream_target("XAS.BTC-USD") == ("BTC-USD", "bar:1s")
    with pytest.raises(UnsupportedChannelError):
        v.check_channel(Channel("book", depth=10))
    with pytest.raises(ValueError):
        pair_from_symbol("X:FOO")
