"""The Finnhub session on the documented (and one real) example messages (tests/data/finnhub)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import load_frames
from wrdata.channels import Channel
from wrdata.streaming.base import UnsupportedChannelError
from wrdata.streaming.driver import RawDriver
from wrdata.streaming.finnhub import FinnhubAuthError, FinnhubVenue

DOCS = "finnhub/docs_examples.jsonl"
KEY = {"key": "fh-SECRET-token"}


def test_documented_frames():
    venue = FinnhubVenue(credentials=KEY)
    driver = RawDriver(venue)
    s = driver.session(1, ["TSLA", "AAPL", "BINANCE:BTCUSDT"])
    out = [driver.feed(1, i, 10 + i, "in", r["url"], r["frame"].encode()) for i, r in enumerate(load_frames(DOCS))]
    trades = out[0]
    assert [(m.symbol, m.price, m.size, m.conditions) for m in trades] == [
        ("TSLA", 122.1, 1, "1,8,24,12"), ("TSLA", 122.09, 4, "1,8,24,12"), ("AAPL", 129.58, 1, "1,24,12")]
    assert [m.ts_event for m in trades] == [1672348887195_000_000, 1672348887196_000_000, 1672348887666_000_000]
    assert [m.idx for m in trades] == [0, 1, 2] and all(m.trade_id is None and m.side is None for m in trades)
    crypto, = out[1]
    assert (crypto.symbol, crypto.price, crypto.size, crypto.conditions) == ("BINANCE:BTCUSDT", 7296.89, 0.011467, None)
    assert out[2] == [], "a ping is only proof of life"
    err, = out[3]
    assert (err.kind, err.status) == ("status", "error") and "Subscribing to too many symbols" in err.reason
    assert s.bad_frames == 0


def test_subscribe_per_symbol_and_too_many_symbols_names_the_last():
    s = FinnhubVenue(credentials=KEY).session(1, ["MSFT", "AAPL"])
    assert s.url() == "wss://ws.finnhub.io/?token=fh-SECRET-token"
    assert s.public_url() == "wss://ws.finnhub.io/?token=***"
    s.on_open(0)
    assert s.ready and [json.loads(f) for f in s.outbox] == [
        {"type": "subscribe", "symbol": "AAPL"}, {"type": "subscribe", "symbol": "MSFT"}]
    s.outbox.clear()
    s.add(["NVDA"])
    s.remove(["MSFT"])
    assert [json.loads(f) for f in s.outbox] == [{"type": "subscribe", "symbol": "NVDA"}, {"type": "unsubscribe", "symbol": "MSFT"}]
    err, = s.feed(b'{"msg":"Subscribing to too many symbols","type":"error"}', 1, 0)
    assert (err.symbol, err.channel) == ("NVDA", "trade")


def test_refused_upgrade_is_an_authentication_error():
    s = FinnhubVenue(credentials=KEY).session(1, ["AAPL"])
    assert isinstance(s.on_connect_error(401, Exception("401")), FinnhubAuthError)
    assert isinstance(s.on_connect_error(403, Exception("403")), FinnhubAuthError)
    assert s.on_connect_error(524, Exception("origin timeout")) is None
    assert s.on_connect_error(None, OSError("refused")) is None


def test_malformed_and_unknown():
    s = FinnhubVenue(credentials=KEY).session(1, ["AAPL"])
    assert [m.status for m in s.feed(b'{"data":[{"p":1', 1, 0)] == ["error"]
    assert [m.status for m in s.feed(b'{"data":[{"p":"x","s":"AAPL","t":1}],"type":"trade"}', 1, 1)] == ["error"]
    assert [m.status for m in s.feed(b'{"type":"surprise"}', 1, 2)] == ["error"]
    assert s.feed(b'{"data":[],"type":"news"}', 1, 3) == []
    assert s.bad_frames == 3
    t, = s.feed(b'{"data":[{"c":null,"p":227,"s":"AAPL","t":1,"v":0}],"type":"trade"}', 1, 4)
    assert (t.price, t.size, t.conditions) == (227.0, 0.0, None), "integer prices, forex v:0, null conditions"


def test_symbols_credentials_channels(monkeypatch):
    for n in ("FINNHUB_API_KEY", "FINNHUB_TOKEN", "FINNHUB_KEY"):
        monkeypatch.delenv(n, raising=False)
    assert not FinnhubVenue.has_credentials()
    monkeypatch.setenv("FINNHUB_API_KEY", "k")
    assert FinnhubVenue().credentials == {"key": "k"}
    assert FinnhubVenue(credentials={"token": "t"}).credentials == {"key": "t"}
    v = FinnhubVenue(credentials=KEY)
    assert v.venue_symbol("binance:btcusdt") == "BINANCE:BTCUSDT" and v.venue_symbol("aapl") == "AAPL"
    assert v.streams("AAPL", Channel("trade")) == ["AAPL"]
    assert v.derives_bars(Channel("bar", interval="1m"))
    with pytest.raises(UnsupportedChannelError):
        v.check_channel(Channel("quote"))
    assert v.rest_url == "https://finnhub.io"
