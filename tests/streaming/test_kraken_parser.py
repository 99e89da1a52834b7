"""The Kraken v2 parser and book on the frames in tests/data/kraken (see SOURCES.md)."""

import json

import msgspec

from tests.conftest import load_frames, ts_ns
from wrdata.channels import parse_channel
from wrdata.streaming.base import HttpResponse
from wrdata.streaming.book import BookView, OrderBook
from wrdata.streaming.driver import RawDriver
from wrdata.streaming.kraken import KrakenVenue, book_checksum, v2_symbol

BOOK = "kraken/v2_book10_btcusd_2023-07-30.jsonl"
HANDMADE = "kraken/v2_fixtures_handmade_nautilus.jsonl"
# REST AssetPairs for BTC/USD: pair_decimals 1, lot_decimals 8 (providers/kraken.md)
ASSET_PAIRS = {"error": [], "result": {
    "XXBTZUSD": {"altname": "XBTUSD", "wsname": "XBT/USD", "pair_decimals": 1, "lot_decimals": 8, "status": "online", "tick_size": "0.1"},
    "XDGUSD": {"altname": "XDGUSD", "wsname": "XDG/USD", "pair_decimals": 7, "lot_decimals": 8, "status": "online"},
    "MATICUSD": {"altname": "MATICUSD", "wsname": "MATIC/USD", "pair_decimals": 4, "lot_decimals": 8, "status": "online"},
}}


def venue() -> KrakenVenue:
    v = KrakenVenue()
    v.instruments = v.load_instruments(HttpResponse(200, msgspec.json.encode(ASSET_PAIRS)))
    return v


def drive(relpath: str, v: KrakenVenue | None = None, mutate=None):
    v = v or venue()
    driver = RawDriver(v)
    out = []
    for i, row in enumerate(load_frames(relpath)):
        frame = row["frame"] if mutate is None else mutate(i, row["frame"])
        out.extend(driver.feed(1, i, ts_ns(row, i), "in", row["url"], frame.encode()))
    return driver, out


def test_instruments_from_asset_pairs_use_v2_names():
    v = venue()
    assert v.instruments["BTC/USD"]["price_decimals"] == 1 and v.instruments["BTC/USD"]["qty_decimals"] == 8
    assert "DOGE/USD" in v.instruments and "XBT/USD" not in v.instruments
    assert v2_symbol("xbt/usd") == v.venue_symbol("XBT/USD") == "BTC/USD"
    assert v.rest_url == "https://api.kraken.com" and v.session(1, []).url() == "wss://ws.kraken.com/v2"


def test_every_real_v2_book_checksum_verifies():
    """510 recorded frames: a snapshot and 509 updates, every venue CRC32 matches our book."""
    rows = load_frames(BOOK)
    driver, msgs = drive(BOOK)
    assert not [m for m in msgs if m.kind == "status"], "no checksum mismatch on the real recording"
    assert len(msgs) == len(rows) == 510
    assert msgs[0].snapshot and not any(m.snapshot for m in msgs[1:])
    assert [m.checksum for m in msgs] == [json.loads(r["frame"])["data"][0]["checksum"] for r in rows]
    # the consumer-side book (BookView, fed the emitted deltas) is Kraken's book: same checksum
    view = BookView()
    got = []
    view.add(10, got.append)
    for m in msgs:
        view.on_message(m)
        assert book_checksum(view.book, 1, 8) == m.checksum
    assert len(got) == 510 and len(view.book.bids) <= 10 and len(view.book.asks) <= 10
    assert msgs[1].ts_event == 1690730998343415000  # 2023-07-30T15:29:58.343415Z


def test_docs_checksum_vectors():
    """The v2 docs' MATIC/USD example: 2439117997 after the snapshot, 2114181697 after the update."""
    bids = [(0.5666, 4831.75496356), (0.5665, 6658.22734739), (0.5664, 18724.91513344), (0.5663, 11563.92544914),
            (0.5662, 14006.65365711), (0.5661, 17454.85679807), (0.566, 18097.1547), (0.5659, 33644.89175666),
            (0.5658, 148.3464), (0.5657, 606.70854372)]
    asks = [(0.5668, 4410.79769741), (0.5669, 4655.40412487), (0.567, 49844.89424998), (0.5671, 24306.41678),
            (0.5672, 29783.25223475), (0.5673, 57234.71239278), (0.5674, 45065.04744), (0.5675, 5912.76380354),
            (0.5676, 42514.92434778), (0.5677, 36304.0847022)]
    book = OrderBook()
    book.apply(bids, asks)
    assert book_checksum(book, 4, 8) == 2439117997
    book.apply([(0.5657, 1098.3947558)], [])
    assert book_checksum(book, 4, 8) == 2114181697
    assert book_checksum(book, 5, 8) != 2114181697  # the pair's precision matters


def test_checksum_mismatch_reports_gap_resubscribes_and_waits_for_a_snapshot():
    v = venue()
    s = v.session(1, [("book", "BTC/USD", 10)])
    s.on_open(0)
    sub = json.loads(s.outbox.pop())
    assert sub["method"] == "subscribe" and sub["params"] == {"channel": "book", "symbol": ["BTC/USD"], "depth": 10, "snapshot": True}
    rows = load_frames(BOOK)
    assert s.feed(rows[0]["frame"].encode(), 1, 0)[0].snapshot
    bad = json.loads(rows[1]["frame"])
    bad["data"][0]["checksum"] += 1  # one corrupted update
    out = s.feed(json.dumps(bad).encode(), 2, 1)
    (gap,) = out
    assert gap.status == "gap" and gap.symbol == "BTC/USD" and gap.channel == "book" and "checksum" in gap.reason
    sent = [json.loads(f) for f in s.outbox]
    assert [(f["method"], f["params"]["depth"]) for f in sent] == [("unsubscribe", 10), ("subscribe", 10)]
    assert s.feed(rows[2]["frame"].encode(), 3, 2) == [], "updates after a mismatch wait for the fresh snapshot"
    again = s.feed(rows[0]["frame"].encode(), 4, 3)
    assert again[0].snapshot is True


def test_truncation_to_depth_emits_deletes():
    v = venue()
    s = v.session(1, [("book", "BTC/USD", 10)])
    s.on_open(0)
    snap = {"channel": "book", "type": "snapshot", "data": [{"symbol": "BTC/USD", "checksum": None,
            "bids": [{"price": 100.0 - i, "qty": 1.0} for i in range(10)], "asks": [{"price": 101.0 + i, "qty": 1.0} for i in range(10)]}]}
    s.feed(json.dumps(snap).encode(), 1, 0)
    upd = {"channel": "book", "type": "update", "data": [{"symbol": "BTC/USD", "bids": [{"price": 100.5, "qty": 2.0}], "asks": []}]}
    (m,) = s.feed(json.dumps(upd).encode(), 2, 1)
    assert m.bids == [(100.5, 2.0), (91.0, 0.0)]  # the 11th bid fell out of the subscribed depth


def test_handmade_trade_ticker_ohlc_and_control_frames():
    driver, msgs = drive(HANDMADE)
    frames = [json.loads(r["frame"]) for r in load_frames(HANDMADE)]
    trades = [m for m in msgs if m.kind == "trade"]
    src = next(f for f in frames if f.get("channel") == "trade")["data"]
    assert [(t.trade_id, t.price, t.size, t.side) for t in trades] == [(d["trade_id"], d["price"], d["qty"], d["side"]) for d in src]
    (q,) = [m for m in msgs if m.kind == "quote"]
    tick = next(f for f in frames if f.get("channel") == "ticker")["data"][0]
    assert (q.bid, q.bid_size, q.ask, q.ask_size) == (tick["bid"], tick["bid_qty"], tick["ask"], tick["ask_qty"])
    (bar,) = [m for m in msgs if m.kind == "bar"]
    assert bar.interval == "1m" and bar.channel == "bar:1m" and bar.closed is False
    # the hand-made book frames carry the docs' MATIC checksum, not this book's: caught
    gaps = [m for m in msgs if m.status == "gap"]
    assert gaps and all(g.channel == "book" for g in gaps)
    assert not [m for m in msgs if m.kind == "book"]
    assert driver.sessions[1].bad_frames == 0  # level3 and acks are understood, not malformed


def test_trade_ids_gap_and_dedupe_across_connections():
    v = venue()

    def frame(typ, ids):
        return json.dumps({"channel": "trade", "type": typ, "data": [
            {"symbol": "ETH/USD", "side": "sell", "price": 2000.0, "qty": 1.0, "ord_type": "limit", "trade_id": i,
             "timestamp": "2023-09-25T07:49:37.708706Z"} for i in ids]}).encode()
    s = v.session(1, [("trade", "ETH/USD")])
    s.on_open(0)
    assert json.loads(s.outbox[0])["params"]["snapshot"] is False
    out = s.feed(frame("update", [1, 2, 5]), 1, 0)
    assert [(m.kind, m.trade_id or m.first_missing_id) for m in out] == [("trade", 1), ("trade", 2), ("status", 3), ("trade", 5)]
    # reconnect: the new connection asks for a snapshot, which heals without repeating
    s2 = v.session(2, [("trade", "ETH/USD")])
    s2.on_open(0)
    assert json.loads(s2.outbox[0])["params"]["snapshot"] is True
    healed = s2.feed(frame("snapshot", [4, 5, 6, 7]), 2, 0)
    assert [(m.trade_id, m.source) for m in healed] == [(6, "backfill"), (7, "backfill")]


def test_ohlc_snapshot_and_closing():
    s = venue().session(1, [("ohlc", "BTC/USD", 5)])

    def bar(begin, close):
        return {"symbol": "BTC/USD", "open": 1.0, "high": 2.0, "low": 0.5, "close": close, "trades": 3, "volume": 4.0,
                "vwap": 1.0, "interval_begin": begin, "interval": 5, "timestamp": begin}
    snap = {"channel": "ohlc", "type": "snapshot", "data": [bar("2023-10-04T16:20:00.000000000Z", 1.1), bar("2023-10-04T16:25:00.000000000Z", 1.2)]}
    out = s.feed(json.dumps(snap).encode(), 1, 0)
    assert [(m.close, m.closed) for m in out] == [(1.2, False)], "older bars of the snapshot were final before we came"
    upd = {"channel": "ohlc", "type": "update", "data": [bar("2023-10-04T16:30:00.000000000Z", 1.3)]}
    out = s.feed(json.dumps(upd).encode(), 2, 1)
    assert [(m.close, m.closed, m.interval) for m in out] == [(1.2, True, "5m"), (1.3, False, "5m")]
    assert out[1].ts_event == 1696437000 * 10**9


def test_acks_errors_status_and_ping():
    v = venue()
    s = v.session(1, [("trade", "BTC/USD"), ("ticker", "BTC/USD")])
    s.on_open(0)
    sent = [json.loads(f) for f in s.outbox]
    assert {f["params"]["channel"] for f in sent} == {"trade", "ticker"}
    assert next(f for f in sent if f["params"]["channel"] == "ticker")["params"]["event_trigger"] == "bbo"
    assert not s.ready
    for f in sent:
        ack = {"method": "subscribe", "result": {"channel": f["params"]["channel"], "symbol": "BTC/USD"}, "success": True,
               "time_in": "2023-10-06T17:35:55.219022Z", "time_out": "2023-10-06T17:35:55.219067Z", "req_id": f["req_id"]}
        assert s.feed(json.dumps(ack).encode(), 1, 0) == []
    assert s.ready
    err = b'{"error":"Currency pair not supported XBT/USD","method":"subscribe","success":false,"symbol":"XBT/USD","time_in":"x","time_out":"y"}'
    (e,) = s.feed(err, 2, 1)
    assert e.status == "error" and "Currency pair not supported" in e.reason and e.symbol == "XBT/USD"
    st = b'{"channel":"status","data":[{"api_version":"v2","connection_id":18266300427528990701,"system":"maintenance","version":"2.0.10"}],"type":"update"}'
    (m,) = s.feed(st, 3, 2)
    assert m.status == "error" and "maintenance" in m.reason
    assert json.loads(s.keepalive())["method"] == "ping"
    assert s.feed(b'{"method":"pong","req_id":42,"time_in":"a","time_out":"b"}', 4, 3) == []
    assert s.feed(b'{"channel":"heartbeat"}', 5, 4) == []
    out = s.feed(b'{"channel":"trade","type":"update","data":[{"symbol":', 6, 5)
    assert out[0].status == "error" and s.bad_frames == 1


def test_book_depth_follows_the_deepest_consumer():
    v = venue()
    assert v.streams("BTC/USD", parse_channel("book:20")) == [("book", "BTC/USD", 25)]
    assert v.streams("BTC/USD", parse_channel("bar:1h")) == [("ohlc", "BTC/USD", 60)]
    assert v.streams("BTC/USD", parse_channel("bar:15d")) == [("ohlc", "BTC/USD", 21600)]
    assert v.derives_bars(parse_channel("bar:1s")) and v.derives_bars(parse_channel("bar:2h"))
    assert v.stream_target(("ohlc", "BTC/USD", 60)) == ("BTC/USD", "bar:1h")
    s = v.session(1, [("book", "BTC/USD", 10)])
    s.on_open(0)
    s.outbox.clear()
    s.add([("book", "BTC/USD", 100)])
    assert [(json.loads(f)["method"], json.loads(f)["params"]["depth"]) for f in s.outbox] == [("unsubscribe", 10), ("subscribe", 100)]
    s.outbox.clear()
    s.remove([("book", "BTC/USD", 100)])
    assert [(json.loads(f)["method"], json.loads(f)["params"]["depth"]) for f in s.outbox] == [("unsubscribe", 100), ("subscribe", 10)]
