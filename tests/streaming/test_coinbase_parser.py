"""The Coinbase parser on the frames in tests/data/coinbase (see SOURCES.md) and on
hand-made frames in the documented Advanced Trade shapes (providers/coinbase.md)."""

import json
from collections import Counter, defaultdict

import msgspec
import pytest

from tests.conftest import load_frames, ts_ns
from wrdata.streaming.base import AuthenticationError, ConfigurationError
from wrdata.streaming.book import OrderBook
from wrdata.streaming.coinbase import CoinbaseExchangeSession, CoinbaseSession, CoinbaseVenue, JwtSigner
from wrdata.streaming.driver import RawDriver

ADVANCED = "coinbase/advanced_trade_fixtures_handmade_nautilus.jsonl"
EXCHANGE = "coinbase/exchange_feed_level2_ticker_matches.jsonl"


def drive(relpath: str, venue: CoinbaseVenue):
    driver = RawDriver(venue)
    out = []
    for i, row in enumerate(load_frames(relpath)):
        out.extend(driver.feed(1, i, ts_ns(row, i), "in", row["url"], row["frame"].encode()))
    return driver, out


def env(channel: str, n: int, events: list, ts: str = "2026-04-07T14:30:00.5Z") -> bytes:
    return json.dumps({"channel": channel, "timestamp": ts, "sequence_num": n, "events": events}).encode()


def l2(n, typ, product, updates):
    return env("l2_data", n, [{"type": typ, "product_id": product, "updates": [
        {"side": s, "event_time": "2026-04-07T14:30:00.25Z", "price_level": p, "new_quantity": q} for s, p, q in updates]}])


def trades(n, typ, rows):
    return env("market_trades", n, [{"type": typ, "trades": [
        {"trade_id": str(i), "product_id": pid, "price": p, "size": q, "side": side, "time": "2026-04-07T14:30:00.123456Z"}
        for i, pid, p, q, side in rows]}])


def test_advanced_trade_fixture_frames():
    driver, msgs = drive(ADVANCED, CoinbaseVenue())
    assert not [m for m in msgs if m.kind == "status"]
    t = [m for m in msgs if m.kind == "trade"]
    assert [(m.symbol, m.trade_id, m.price, m.size) for m in t] == [
        ("BTC-USD", 995098700, 68900.50, 0.0015), ("BTC-USD", 995098701, 68900.00, 0.05)]
    # the docs define side as the maker's: a BUY maker means the aggressor sold
    assert [m.side for m in t] == ["sell", "buy"]
    assert t[0].ts_event == 1775572202789012000 and t[0].channel == "trade"
    books = [m for m in msgs if m.kind == "book"]
    assert books[0].snapshot and books[0].bids[:2] == [(68900.0, 1.5), (68899.5, 0.75)]
    assert books[1].snapshot is False and books[1].bids == [(68900.0, 2.0)] and books[1].asks == [(68901.0, 0.0)]
    book = OrderBook()
    for b in books:
        book.apply(b.bids, b.asks, b.snapshot)
    assert book.best_bid == (68900.0, 2.0)
    (q,) = [m for m in msgs if m.kind == "quote"]
    assert (q.bid, q.bid_size, q.ask, q.ask_size) == (68900.0, 1.5, 68901.0, 0.5)
    (bar,) = [m for m in msgs if m.kind == "bar"]
    assert (bar.open, bar.high, bar.low, bar.close, bar.volume) == (68900.0, 68950.0, 68850.0, 68920.5, 42.15)
    assert bar.ts_event == 1775521800 * 10**9 and bar.interval == "5m" and bar.closed is False and bar.derived is False
    assert driver.sessions[1].bad_frames == 0


def test_exchange_feed_recording_every_frame():
    """The real 2021 Exchange-feed session: every frame parses, trades are consecutive per product."""
    rows = load_frames(EXCHANGE)
    venue = CoinbaseVenue(url="wss://ws-feed.pro.coinbase.com")
    assert venue.feed == "exchange" and venue.native_bars == frozenset()
    driver, msgs = drive(EXCHANGE, venue)
    assert not [m for m in msgs if m.kind == "status"], "a clean recording has no gaps or errors"
    frames = [json.loads(r["frame"]) for r in rows]
    kinds = Counter(f["type"] for f in frames)
    trades_ = [m for m in msgs if m.kind == "trade"]
    matches = [f for f in frames if f["type"] == "match"]
    assert len(trades_) == len(matches) == kinds["match"] == 97  # last_match is history, not new data
    for t, f in zip(trades_, matches, strict=True):
        assert (t.symbol, t.trade_id, t.price, t.size) == (f["product_id"], f["trade_id"], float(f["price"]), float(f["size"]))
        assert t.side == ("buy" if f["side"] == "sell" else "sell")  # side is the maker's in the Exchange feed
    by = defaultdict(list)
    for f in frames:
        if f["type"] in ("last_match", "match"):
            by[f["product_id"]].append(f["trade_id"])
    for ids in by.values():
        assert ids == list(range(ids[0], ids[0] + len(ids)))
    assert Counter(m.kind for m in msgs)["quote"] == kinds["ticker"] == 107
    books = [m for m in msgs if m.kind == "book"]
    assert sum(1 for b in books if b.snapshot) == kinds["snapshot"] == 10
    # every l2update after its product's snapshot is applied: all of them in this recording
    assert len(books) == kinds["snapshot"] + kinds["l2update"]
    local = defaultdict(OrderBook)
    for b in books:
        local[b.symbol].apply(b.bids, b.asks, b.snapshot)
    for sym, book in local.items():
        assert book.best_bid[0] < book.best_ask[0], f"{sym} book crossed"
    assert driver.sessions[1].bad_frames == 0


def test_sequence_gap_emits_gaps_and_resyncs_level2():
    venue = CoinbaseVenue()
    s = venue.session(1, [("level2", "BTC-USD"), ("market_trades", "BTC-USD")])
    s.on_open(0)
    sent = [json.loads(f) for f in s.outbox]
    assert sent[0] == {"type": "subscribe", "channel": "heartbeats"}
    assert {(f["channel"], tuple(f.get("product_ids", ()))) for f in sent[1:]} == {
        ("level2", ("BTC-USD",)), ("market_trades", ("BTC-USD",))}
    s.outbox.clear()
    assert s.feed(l2(0, "snapshot", "BTC-USD", [("bid", "100.0", "1"), ("offer", "101.0", "2")]), 1, 0)[0].snapshot
    assert s.feed(l2(1, "update", "BTC-USD", [("bid", "100.5", "3")]), 2, 1)[0].bids == [(100.5, 3.0)]
    out = s.feed(l2(4, "update", "BTC-USD", [("bid", "100.6", "3")]), 3, 2)
    gaps = [m for m in out if m.status == "gap"]
    assert {(g.symbol, g.channel) for g in gaps} == {("BTC-USD", "book"), ("BTC-USD", "trade")}
    assert all((g.first_missing_id, g.last_missing_id) == (2, 3) for g in gaps)
    assert not [m for m in out if m.kind == "book"], "no update is applied across a hole"
    assert [json.loads(f)["type"] for f in s.outbox] == ["unsubscribe", "subscribe"]
    assert all(json.loads(f)["channel"] == "level2" for f in s.outbox)
    assert s.feed(l2(5, "update", "BTC-USD", [("bid", "100.7", "3")]), 4, 3) == []  # still waiting for the snapshot
    snap = s.feed(l2(6, "snapshot", "BTC-USD", [("bid", "100.0", "1")]), 5, 4)
    assert snap[0].snapshot is True
    assert s.feed(env("heartbeats", 3, [{"current_time": "x", "heartbeat_counter": 1}]), 6, 5) == []  # older: ignored


def test_trade_snapshot_is_history_then_backfill_after_reconnect():
    venue = CoinbaseVenue()
    s1 = venue.session(1, [("market_trades", "ETH-USD")])
    hist = trades(1, "snapshot", [(10, "ETH-USD", "1.0", "1", "BUY"), (9, "ETH-USD", "1.0", "1", "SELL")])
    assert s1.feed(hist, 1, 0) == [], "old trades from before the subscription are not new data"
    got = s1.feed(trades(2, "update", [(12, "ETH-USD", "2.0", "1", "SELL"), (11, "ETH-USD", "2.0", "1", "SELL")]), 2, 1)
    assert [m.trade_id for m in got] == [11, 12] and {m.source for m in got} == {"stream"}
    # a new connection (reconnect): its snapshot heals the outage, without repeating what was delivered
    s2 = venue.session(2, [("market_trades", "ETH-USD")])
    healed = s2.feed(trades(1, "snapshot", [(14, "ETH-USD", "3", "1", "BUY"), (13, "ETH-USD", "3", "1", "BUY"),
                                            (12, "ETH-USD", "2", "1", "SELL")]), 3, 0)
    assert [(m.trade_id, m.source) for m in healed] == [(13, "backfill"), (14, "backfill")]
    assert s2.feed(trades(2, "update", [(14, "ETH-USD", "3", "1", "BUY")]), 4, 1) == []


def test_candles_close_when_a_later_start_arrives():
    s = CoinbaseVenue().session(1, [("candles", "BTC-USD")])

    def candle(n, start, close):
        return env("candles", n, [{"type": "update", "candles": [{"start": str(start), "high": "2", "low": "1", "open": "1",
                                                                   "close": close, "volume": "5", "product_id": "BTC-USD"}]}])
    a = s.feed(candle(0, 1_700_000_100, "1.5"), 1, 0)
    b = s.feed(candle(1, 1_700_000_100, "1.6"), 2, 1)
    c = s.feed(candle(2, 1_700_000_400, "1.7"), 3, 2)
    assert [(m.close, m.closed) for m in a + b + c] == [(1.5, False), (1.6, False), (1.6, True), (1.7, False)]
    assert c[0].ts_event == 1_700_000_100 * 10**9 and c[1].ts_event == 1_700_000_400 * 10**9
    assert s.feed(candle(3, 1_700_000_100, "9"), 4, 3) == []  # an older bar cannot reopen


def test_subscriptions_ack_makes_ready_and_reports_unconfirmed_products():
    s = CoinbaseVenue().session(1, [("market_trades", "BTC-USD"), ("market_trades", "NOPE-USD")])
    s.on_open(0)
    assert s.pending == 2 and not s.ready
    ack1 = env("subscriptions", 0, [{"subscriptions": {"heartbeats": ["heartbeats"]}}])
    assert s.feed(ack1, 1, 0) == [] and not s.ready
    ack2 = env("subscriptions", 1, [{"subscriptions": {"heartbeats": ["heartbeats"], "market_trades": ["BTC-USD"]}}])
    out = s.feed(ack2, 2, 1)
    assert s.ready
    (err,) = out
    assert err.status == "error" and err.symbol == "NOPE-USD" and "did not confirm" in err.reason


def test_malformed_and_unknown_frames_are_counted_not_fatal():
    s = CoinbaseVenue().session(1, [])
    out = s.feed(b'{"channel":"market_trades","events":[{"trades":[{"trade_id":', 1, 0)
    out += s.feed(b'{"something":"else"}', 2, 1)
    out += s.feed(b'{"type":"error","message":"failure to subscribe"}', 3, 2)
    assert [m.status for m in out] == ["error", "error", "error"]
    assert s.bad_frames == 2 and s.fatal is None
    assert "failure to subscribe" in out[2].reason


# -- credentials -------------------------------------------------------------------------------------

def _ec_pem():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return key, pem.decode()


def test_jwt_es256_and_eddsa_verify_as_coinbase_would():
    import base64

    import jwt as pyjwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key, pem = _ec_pem()
    name = "organizations/org/apiKeys/key1"
    token = JwtSigner(name, pem).sign(now=1_700_000_000)
    claims = pyjwt.decode(token, key.public_key(), algorithms=["ES256"], options={"verify_nbf": False, "verify_exp": False})
    assert claims == {"sub": name, "iss": "cdp", "nbf": 1_700_000_000, "exp": 1_700_000_120}
    header = pyjwt.get_unverified_header(token)
    assert header["alg"] == "ES256" and header["kid"] == name and header["typ"] == "JWT" and len(header["nonce"]) == 64
    ed = ed25519.Ed25519PrivateKey.generate()
    raw = ed.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    token = JwtSigner(name, base64.b64encode(raw).decode()).sign(now=1_700_000_000)
    assert pyjwt.get_unverified_header(token)["alg"] == "EdDSA"
    assert pyjwt.decode(token, ed.public_key(), algorithms=["EdDSA"], options={"verify_nbf": False, "verify_exp": False})["sub"] == name


def test_signed_subscriptions_are_redacted_and_secrets_never_leak(monkeypatch):
    _, pem = _ec_pem()
    monkeypatch.setenv("COINBASE_API_KEY", "organizations/o/apiKeys/k")
    monkeypatch.setenv("COINBASE_API_SECRET", pem.replace("\n", "\\n"))  # as .env files often hold it
    venue = CoinbaseVenue()
    s = venue.session(1, [("level2", "BTC-USD")])
    s.on_open(0)
    frames = [json.loads(f) for f in s.outbox]
    assert all(f["jwt"].count(".") == 2 for f in frames), "every subscribe is signed, heartbeats included"
    for f in s.outbox:
        red = s.redact(f.encode() if isinstance(f, str) else f)
        assert b'"jwt":"***"' in red and frames[0]["jwt"].encode() not in red
    assert "BEGIN" not in repr(venue._signer) and "apiKeys" not in repr(venue._signer)
    with pytest.raises(ConfigurationError) as e:
        CoinbaseVenue(credentials={"key": "k", "secret": "not-a-key-SECRETTEXT"})
    assert "SECRETTEXT" not in str(e.value) and e.value.__cause__ is None
    # the venue refusing the key is fatal: retrying cannot help
    s.feed(b'{"type":"error","message":"authentication failure"}', 1, 0)
    assert isinstance(s.fatal, AuthenticationError)


def test_shapes_routing_and_streams():
    from wrdata.channels import parse_channel
    from wrdata.streaming.registry import resolve

    assert resolve("BTC-USD") == "coinbase" and resolve("BTC-PERP-INTX") == "coinbase"
    v = CoinbaseVenue()
    assert v.venue_symbol("btc/usd") == "BTC-USD"
    assert v.rest_url == "https://api.coinbase.com"
    assert CoinbaseVenue(url="ws://127.0.0.1:9").rest_url == "http://127.0.0.1:9"
    assert v.streams("BTC-USD", parse_channel("bar:5m")) == [("candles", "BTC-USD")]
    assert v.derives_bars(parse_channel("bar:1m")) and v.streams("BTC-USD", parse_channel("trade")) == [("market_trades", "BTC-USD")]
    assert v.stream_target(("level2", "BTC-USD")) == ("BTC-USD", "book")
    # at most level2_per_conn books on one connection, other streams fill it up
    have = {("level2", f"P{i}-USD") for i in range(v.level2_per_conn - 1)}
    take, rest = v.admit(have, [("level2", "A-USD"), ("level2", "B-USD"), ("market_trades", "B-USD")])
    assert take == [("level2", "A-USD"), ("market_trades", "B-USD")] and rest == [("level2", "B-USD")]
    products = {"products": [{"product_id": "BTC-USD", "quote_increment": "0.01", "base_increment": "0.00000001", "status": "online"}]}
    from wrdata.streaming.base import HttpResponse

    assert v.load_instruments(HttpResponse(200, msgspec.json.encode(products)))["BTC-USD"]["tick_size"] == "0.01"
    assert isinstance(v.session(1, []), CoinbaseSession)
    assert isinstance(CoinbaseVenue(url="wss://ws-feed.exchange.coinbase.com").session(1, []), CoinbaseExchangeSession)
