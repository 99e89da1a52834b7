"""The Binance parser on real recorded frames (tests/data/binance, see SOURCES.md)."""

import json
from collections import Counter

import msgspec

from tests.conftest import load_frames, ts_ns
from wrdata.streaming.binance import BinanceVenue
from wrdata.streaming.book import OrderBook
from wrdata.streaming.driver import RawDriver

COMBINED = "binance/combined_depth_bookticker_kline_aggtrade.jsonl"
SPOT = "binance/spot_btcusdt_trade_bookticker_depth100ms_2024-08-08.jsonl"


def drive(relpath: str):
    venue = BinanceVenue()
    driver = RawDriver(venue)
    out = []
    for i, row in enumerate(load_frames(relpath)):
        direction = "rest" if row["url"].startswith("http") else "in"
        out.extend(driver.feed(1, i, ts_ns(row, i), direction, row["url"], row["frame"].encode()))
    return venue, driver, out


def test_every_recorded_spot_frame_parses():
    rows = load_frames(SPOT)
    _, driver, msgs = drive(SPOT)
    kinds = Counter((m.kind, m.channel) for m in msgs)
    assert not [m for m in msgs if m.kind == "status"], "no errors or gaps on a clean recording"
    trades = [m for m in msgs if m.kind == "trade"]
    frames = [json.loads(r["frame"]) for r in rows if "@trade" in r["frame"][:40]]
    assert len(trades) == len(frames) == 914
    # field by field against the frame text
    for t, f in zip(trades, frames):
        d = f["data"]
        assert t.symbol == "BTCUSDT" and t.provider == "binance"
        assert t.trade_id == d["t"]
        assert t.price == float(d["p"]) and t.size == float(d["q"])
        assert t.side == ("sell" if d["m"] else "buy")
        assert t.ts_event == d["T"] * 1_000_000
    ids = [t.trade_id for t in trades]
    assert ids == list(range(ids[0], ids[0] + len(ids))), "the recording's trade ids are consecutive"
    assert kinds[("quote", "quote")] == 3657
    # the book: synced from the recorded REST snapshot (line 8), then every diff applied
    books = [m for m in msgs if m.kind == "book"]
    assert books[0].snapshot and books[0].update_id == 50093239218
    assert all(not b.snapshot for b in books[1:])
    # every depthUpdate after the snapshot is applied exactly once, in id order
    ups = [b.update_id for b in books[1:]]
    assert ups == sorted(ups) and len(set(ups)) == len(ups)
    assert driver.pending.get(1) == [], "the one snapshot request was answered by the recording"



def test_book_from_snapshot_and_diffs_matches_book_ticker():
    """Where a bookTicker and a depth update end at the same update id, the local book's
    best levels equal the venue's best bid/ask (ids shared by both streams, binance.md §4)."""
    _, _, msgs = drive(SPOT)
    book = OrderBook()
    after: dict[int, tuple] = {}
    for m in msgs:
        if m.kind == "book":
            book.apply(m.bids, m.asks, m.snapshot)
            after[m.update_id] = (book.best_bid, book.best_ask)
    quotes = [m for m in msgs if m.kind == "quote" and m.update_id in after]
    assert len(quotes) > 50
    for q in quotes:
        assert after[q.update_id] == ((q.bid, q.bid_size), (q.ask, q.ask_size))


def test_combined_sample_all_stream_kinds():
    venue, driver, msgs = drive(COMBINED)
    rows = load_frames(COMBINED)
    by = Counter()
    for r in rows:
        by[json.loads(r["frame"])["stream"].split("@", 1)[1]] += 1
    kinds = Counter(m.channel for m in msgs if m.kind != "status")
    assert not [m for m in msgs if m.kind == "status"]
    assert kinds["aggtrade"] == by["aggTrade"] > 0
    assert kinds["quote"] == by["bookTicker"] > 0
    assert kinds["bar:1m"] == by["kline_1m"] > 0
    agg = next(m for m in msgs if m.channel == "aggtrade")
    assert agg.trade_id is None and agg.trade_ref.isdigit()
    bar = next(m for m in msgs if m.kind == "bar")
    assert bar.interval == "1m" and bar.derived is False and bar.closed in (True, False)
    assert bar.ts_event % 60_000_000_000 == 0, "a bar's ts_event is its open time"
    # no REST snapshot in this recording: diff events wait for one, one request per symbol
    symbols = {json.loads(r["frame"])["data"]["s"] for r in rows if "depth" in r["frame"][:40]}
    assert sorted(r.context for r in driver.pending[1]) == sorted(symbols)
    assert not [m for m in msgs if m.kind == "book"]


def test_combined_sample_depth_applies_continuously_from_a_snapshot():
    """Feed a snapshot at each symbol's first U: every buffered and later diff applies without a gap."""
    venue = BinanceVenue()
    driver = RawDriver(venue)
    rows = load_frames(COMBINED)
    first_u = {}
    for r in rows:
        d = json.loads(r["frame"])["data"]
        if d.get("e") == "depthUpdate":
            first_u.setdefault(d["s"], d["U"] - 1)
    out = []
    for i, r in enumerate(rows):
        out.extend(driver.feed(1, i, ts_ns(r, i), "in", r["url"], r["frame"].encode()))
    for req in list(driver.pending[1]):
        snap = {"lastUpdateId": first_u[req.context], "bids": [], "asks": []}
        out.extend(driver.feed(1, 10_000, 2 * 10**18, "rest", req.full_url, msgspec.json.encode(snap)))
    assert not [m for m in out if m.kind == "status"]
    n_depth = sum(1 for r in rows if '"depthUpdate"' in r["frame"])
    books = [m for m in out if m.kind == "book"]
    assert len([b for b in books if b.snapshot]) == len(first_u)
    assert len([b for b in books if not b.snapshot]) == n_depth


def test_malformed_frames_are_counted_not_fatal():
    venue = BinanceVenue()
    s = venue.session(1, ["btcusdt@trade"])
    bad = [
        b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT","t":"x"}}',
        b"not json",
        b'{"stream":"btcusdt@trade","data":',
        b"[]",
    ]
    for i, f in enumerate(bad):
        out = s.feed(f, 1000 + i, i)
        assert len(out) == 1 and out[0].kind == "status" and out[0].status == "error"
    assert s.bad_frames == len(bad)
    good = b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT","t":7,"p":"1.5","q":"2","T":1,"m":false,"M":true}}'
    (t,) = s.feed(good, 2000, 9)
    assert t.price == 1.5 and t.side == "buy" and t.trade_id == 7


def test_trade_id_gap_and_duplicate():
    venue = BinanceVenue()
    a, b = venue.session(1, []), venue.session(2, [])

    def frame(t):
        return ('{"stream":"ethusdt@trade","data":{"e":"trade","E":1,"s":"ETHUSDT","t":' + str(t)
                + ',"p":"1","q":"1","T":1,"m":true,"M":true}}').encode()

    assert [m.trade_id for m in a.feed(frame(10), 1, 0)] == [10]
    assert b.feed(frame(10), 2, 0) == [], "the same trade from a second connection is a duplicate"
    gap, t = a.feed(frame(14), 3, 1)
    assert gap.status == "gap" and (gap.first_missing_id, gap.last_missing_id) == (11, 13) and t.trade_id == 14
