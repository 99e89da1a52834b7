"""The IBKR session, sans-IO: requests as ib_async encodes them in, TWS messages in, messages out.

Received messages are written field by field in the server-version-178 layouts of
``ib_async``'s decoder (see ``wrdata/streaming/ibkr.py``); requests come from
``ib_async``'s own encoder, so the session learns request ids exactly as it does live.
"""

from __future__ import annotations

from ib_async import Client, Wrapper

from wrdata.streaming.book import BookView
from wrdata.streaming.driver import RawDriver
from wrdata.streaming.ibkr import IbkrSession, IbkrVenue, parse_symbol, to_contract

S = 1_000_000_000


def m(*fields) -> bytes:
    return ("\0".join(str(f) for f in fields) + "\0").encode()


class Fixture:
    def __init__(self) -> None:
        self.venue = IbkrVenue()
        self.s: IbkrSession = self.venue.session(5, [])
        self.seq = 0
        self.client = Client(Wrapper(None))  # type: ignore[arg-type]
        self.client.isConnected = lambda: True  # type: ignore[method-assign]
        self.client.sendMsg = self._sent  # type: ignore[method-assign]

    def _sent(self, msg: str) -> None:
        self.s.on_sent(msg.encode(), 1, self.next())

    def next(self) -> int:
        self.seq += 1
        return self.seq

    def c(self, symbol: str, con_id: int = 265598):
        return to_contract(parse_symbol(symbol), con_id)

    def feed(self, *fields, ts: int = 1_000 * S):
        return self.s.feed(m(*fields), ts, self.next())


def test_tick_by_tick_trades_and_quotes():
    f = Fixture()
    f.client.reqTickByTickData(7, f.c("AAPL"), "AllLast", 0, False)
    f.client.reqTickByTickData(8, f.c("AAPL"), "BidAsk", 0, False)
    [t] = f.feed(99, 7, 2, 1_764_000_000, "227.41", "100", 0, "ISLAND", "@ F")
    assert (t.kind, t.symbol, t.channel, t.price, t.size) == ("trade", "AAPL", "trade", 227.41, 100.0)
    assert t.ts_event == 1_764_000_000 * S and t.exchange == "ISLAND" and t.conditions == "@ F"
    assert t.conn == 5 and t.ts_recv == 1_000 * S
    assert f.feed(99, 7, 2, 1_764_000_000, "-1", "0", 0, "", "") == [], "an empty last is not a trade"
    [q] = f.feed(99, 8, 3, 1_764_000_001, "227.40", "227.42", "300", "200", 0)
    assert (q.kind, q.channel, q.bid, q.ask, q.bid_size, q.ask_size) == ("quote", "quote", 227.40, 227.42, 300.0, 200.0)
    assert q.ts_event == 1_764_000_001 * S
    # data of an unknown or cancelled request is not attributed to anything
    assert f.feed(99, 99, 2, 1, "1", "1", 0, "", "") == []
    f.client.cancelTickByTickData(7)
    assert f.feed(99, 7, 2, 1_764_000_002, "227.43", "5", 0, "ISLAND", "") == []
    assert f.s.by_stream == {("AAPL", "quote"): 8}


def test_market_data_quotes_and_rtvolume_trades():
    f = Fixture()
    f.client.reqMktData(11, f.c("MSFT", 272093), "", False, False, [])
    f.client.reqMktData(12, f.c("MSFT", 272093), "233", False, False, [])
    assert f.s.reqs[11].route == "quote" and f.s.reqs[12].route == "trade"
    [q] = f.feed(1, 6, 11, 1, "415.10", "300", 0)
    assert (q.bid, q.bid_size, q.ask, q.ask_size, q.ts_event) == (415.10, 300.0, None, None, None)
    [q] = f.feed(1, 6, 11, 2, "415.12", "100", 0)
    assert (q.bid, q.ask, q.ask_size) == (415.10, 415.12, 100.0)
    assert f.feed(2, 6, 11, 0, "300") == [], "an unchanged size is no new quote"
    [q] = f.feed(2, 6, 11, 3, "150")
    assert (q.ask, q.ask_size) == (415.12, 150.0)
    [q] = f.feed(1, 6, 11, 1, "-1", "0", 0)
    assert q.bid is None and q.bid_size == 0.0, "an emptied side"
    assert f.feed(1, 6, 11, 4, "415.11", "5", 0) == [], "last prices are not quotes"
    assert f.feed(1, 6, 11, 1, "", "0", 0) == [], "TWS leaves the price empty: nothing"
    # the trade line: RTVolume only
    assert f.feed(1, 6, 12, 1, "415.10", "300", 0) == []
    [t] = f.feed(46, 6, 12, 48, "415.11;200;1764000000123;123456;415.05;true")
    assert (t.kind, t.channel, t.price, t.size, t.ts_event) == ("trade", "trade", 415.11, 200.0, 1_764_000_000_123_000_000)
    assert f.feed(46, 6, 12, 48, ";0;1764000000200;123456;415.05;false") == [], "a volume-only correction"
    assert f.feed(46, 6, 12, 45, "1764000000") == []


def test_real_time_bars():
    f = Fixture()
    f.client.reqRealTimeBars(3, f.c("AAPL"), 5, "TRADES", False, [])
    f.client.reqRealTimeBars(4, f.c("EUR.USD", 12087792), 5, "MIDPOINT", False, [])
    [b] = f.feed(50, 3, 3, 1_764_000_005, "227.0", "227.5", "226.9", "227.4", "1200", "227.2", 14)
    assert (b.kind, b.channel, b.interval, b.closed, b.derived) == ("bar", "bar:5s", "5s", True, False)
    assert (b.open, b.high, b.low, b.close, b.size, b.ts_event) == (227.0, 227.5, 226.9, 227.4, 1200.0, 1_764_000_005 * S)
    [b] = f.feed(50, 3, 4, 1_764_000_005, "1.08500", "1.08510", "1.08495", "1.08505", "-1", "-1", "-1")
    assert b.symbol == "EUR.USD" and b.size is None, "midpoint bars have no volume"


class RowBook:
    """An independent model of TWS depth rows (IB's documented semantics) for comparison."""

    def __init__(self) -> None:
        self.rows = {0: [], 1: []}

    def apply(self, position, op, side, price, size):
        rows = self.rows[side]
        if op == 0:
            rows.insert(position, (price, size))
        elif op == 1:
            rows[position] = (price, size)
        else:
            del rows[position]

    def levels(self, side):
        agg: dict[float, float] = {}
        for p, s in self.rows[side]:
            agg[p] = agg.get(p, 0) + s
        return sorted(agg.items(), reverse=side == 1)


def test_depth_rows_become_price_level_deltas():
    f = Fixture()
    f.client.reqMktDepth(9, f.c("AAPL"), 10, True, [])
    view = BookView()
    out = []
    view.add(10, out.append)
    model = RowBook()
    ops = [
        (0, 0, 1, 10.0, 5), (1, 0, 1, 9.9, 3), (0, 0, 0, 10.1, 4), (1, 0, 0, 10.2, 6),
        (0, 0, 1, 10.05, 1),  # insert at the top shifts the other bids down
        (2, 1, 1, 9.95, 3),  # a row changes price: 9.9 disappears, 9.95 appears
        (1, 0, 1, 10.05, 2),  # a second market maker at 10.05: the level sums both rows
        (0, 2, 0, 10.1, 0),  # delete the best ask: 10.2 moves up to row 0
        (2, 1, 1, 10.0, 7),
    ]
    msgs = []
    for pos, op, side, price, size in ops:
        model.apply(pos, op, side, price, size)
        got = f.feed(13, 1, 9, pos, "NSDQ", op, side, price, size, 1)
        msgs += got
        for g in got:
            view.on_message(g)
        assert out[-1].bids == model.levels(1) and out[-1].asks == model.levels(0), (pos, op, side, price)
    assert msgs[0].snapshot is True and all(x.snapshot is False for x in msgs[1:])
    assert (msgs[5].bids) == [(9.9, 0.0), (9.95, 3.0)], "the old price is deleted, the new one set"
    assert msgs[6].bids == [(10.05, 3.0)]
    assert out[-1].bids == [(10.05, 3.0), (10.0, 7.0), (9.95, 3.0)] and out[-1].asks == [(10.2, 6.0)]


def test_depth_reset_starts_a_new_book_and_l1_depth_parses():
    f = Fixture()
    f.client.reqMktDepth(9, f.c("EUR.USD", 12087792), 5, False, [])
    [a] = f.feed(12, 1, 9, 0, 0, 1, "1.0850", "1000000")
    [b] = f.feed(12, 1, 9, 0, 0, 0, "1.0851", "2000000")
    assert a.snapshot and a.bids == [(1.085, 1_000_000.0)] and not b.snapshot and b.asks == [(1.0851, 2_000_000.0)]
    [gap] = f.feed(4, 2, 9, 317, "Market depth data has been RESET. Please empty deep book contents before applying any new entries.", "")
    assert (gap.status, gap.symbol, gap.channel) == ("gap", "EUR.USD", "book")
    [c] = f.feed(12, 1, 9, 0, 0, 1, "1.0849", "500000")
    assert c.snapshot and c.bids == [(1.0849, 500_000.0)] and c.asks == []


def subscribed(f: Fixture) -> None:
    f.client.reqTickByTickData(1, f.c("AAPL"), "AllLast", 0, False)
    f.client.reqTickByTickData(2, f.c("MSFT", 272093), "BidAsk", 0, False)
    f.client.reqRealTimeBars(3, f.c("AAPL"), 5, "TRADES", False, [])


def test_connectivity_codes():
    f = Fixture()
    subscribed(f)
    [lost] = f.feed(4, 2, -1, 1100, "Connectivity between IB and Trader Workstation has been lost.", "", ts=10 * S)
    assert lost.status == "disconnected" and "1100" in lost.reason
    out = f.feed(4, 2, -1, 1102, "Connectivity between IB and Trader Workstation has been restored - data maintained.", "", ts=13 * S)
    assert [x.status for x in out] == ["connected", "gap", "gap", "gap"]
    gaps = {(g.symbol, g.channel): (g.gap_start_ns, g.gap_end_ns) for g in out[1:]}
    assert gaps == {("AAPL", "trade"): (10 * S, 13 * S), ("AAPL", "bar:5s"): (10 * S, 13 * S), ("MSFT", "quote"): (10 * S, 13 * S)}
    assert [x.idx for x in out] == [0, 1, 2, 3]
    assert f.s.actions == [] and len(f.s.by_stream) == 3, "data maintained: the requests stand"
    f.feed(4, 2, -1, 1100, "lost", "", ts=20 * S)
    out = f.feed(4, 2, -1, 1101, "Connectivity between IB and Trader Workstation has been restored - data lost.", "", ts=21 * S)
    assert [x.status for x in out] == ["connected", "gap", "gap", "gap"] and out[1].gap_start_ns == 20 * S
    assert f.s.actions == [("resubscribe",)] and f.s.by_stream == {}, "data lost: every request is gone"
    assert f.feed(99, 1, 2, 1, "1", "1", 0, "", "") == []


def test_farm_notices():
    f = Fixture()
    subscribed(f)
    for code, text in ((2104, "Market data farm connection is OK:usfarm"), (2106, "HMDS data farm connection is OK:ushmds"),
                       (2158, "Sec-def data farm connection is OK:secdefnj"), (2107, "HMDS data farm connection is inactive")):
        assert f.feed(4, 2, -1, code, text, "") == [], "the notices of every connect are not events"
    [broken] = f.feed(4, 2, -1, 2103, "Market data farm connection is broken:usfarm", "", ts=5 * S)
    assert broken.status == "error" and "2103" in broken.reason
    out = f.feed(4, 2, -1, 2104, "Market data farm connection is OK:usfarm", "", ts=8 * S)
    assert [x.status for x in out] == ["connected", "gap", "gap", "gap"]
    assert {(g.gap_start_ns, g.gap_end_ns) for g in out[1:]} == {(5 * S, 8 * S)}


def test_request_errors():
    f = Fixture()
    subscribed(f)
    f.client.reqMktData(4, f.c("SPY", 756733), "", False, False, [])
    f.client.reqMktDepth(5, f.c("SPY", 756733), 10, True, [])
    # tick-by-tick refused: fall back, with an event saying so
    [e] = f.feed(4, 2, 1, 10190, "Max number of tick-by-tick requests has been reached.", "")
    assert e.status == "error" and (e.symbol, e.channel) == ("AAPL", "trade") and "market data ticks" in e.reason
    # no permission: final
    [e] = f.feed(4, 2, 4, 354, "Requested market data is not subscribed.", "")
    assert (e.status, e.symbol, e.channel) == ("error", "SPY", "quote") and "permission" in e.reason
    # real-time bars: pacing is retried, permissions are final (420 covers both, told apart by the text)
    [e] = f.feed(4, 2, 3, 420, "Invalid Real-time Query:Historical data request pacing violation", "")
    assert "requesting again" in e.reason
    f.client.reqRealTimeBars(6, f.c("AAPL"), 5, "TRADES", False, [])
    [e] = f.feed(4, 2, 6, 420, "Invalid Real-time Query:No market data permissions for NASDAQ STK", "")
    assert "permission" in e.reason
    [w] = f.feed(4, 2, 5, 10167, "Requested market data is not subscribed. Displaying delayed market data.", "")
    assert w.status == "subscribed" and "10167" in w.reason
    assert f.s.actions == [
        ("fallback", ("AAPL", "trade")),
        ("failed", ("SPY", "quote"), 354, "Requested market data is not subscribed."),
        ("retry", ("AAPL", "bar:5s")),
        ("failed", ("AAPL", "bar:5s"), 420, "Invalid Real-time Query:No market data permissions for NASDAQ STK"),
    ]
    assert set(f.s.by_stream) == {("MSFT", "quote"), ("SPY", "book")}, "refused requests are forgotten; a warning keeps its request"
    assert f.feed(4, 2, 77, 300, "Can't find EId with tickerId:77", "") == []
    [e] = f.feed(4, 2, -1, 504, "Not connected", "")
    assert e.status == "error" and e.symbol is None
    # contract details: error 200 names the symbol
    f.client.reqContractDetails(20, to_contract(parse_symbol("NOSUCH")))
    [e] = f.feed(4, 2, 20, 200, "No security definition has been found for the request", "")
    assert (e.status, e.symbol) == ("error", "NOSUCH") and "200" in e.reason


def test_market_data_type_and_bad_messages():
    f = Fixture()
    f.client.reqMktData(4, f.c("SPY", 756733), "", False, False, [])
    assert f.feed(58, 1, 4, 1) == []
    [e] = f.feed(58, 1, 4, 3)
    assert e.status == "subscribed" and "delayed" in e.reason
    # a message cut short or garbled is an error event, never an exception
    [e] = f.feed(1, 6)
    assert e.status == "error" and "message 1" in e.reason
    [e] = f.feed(1, 6, 4, 1, "abc", "100", 0)
    assert e.status == "error"
    [q] = f.feed(1, 6, 4, 1, "580.10", "100", 0)
    assert q.bid == 580.10, "and parsing goes on"
    assert f.s.bad_frames == 2


def test_rebuild_from_raw_rows_reproduces_the_session():
    """The rebuild driver, fed out and in rows, gives what the live session gave."""
    f = Fixture()
    rows: list[tuple[str, bytes]] = []
    f.client.sendMsg = lambda msg: rows.append(("out", msg.encode()))  # type: ignore[method-assign]
    subscribed(f)
    ins = [m(99, 1, 2, 5, "227.41", "100", 0, "ISLAND", ""), m(99, 2, 3, 6, "415.1", "415.2", "1", "2", 0),
           m(50, 3, 3, 5, "1", "2", "0.5", "1.5", "10", "1.2", 3), m(4, 2, -1, 1100, "lost", ""),
           m(4, 2, -1, 1102, "restored", "")]
    rows += [("in", p) for p in ins]
    live_venue = IbkrVenue()
    live = live_venue.session(9, [])
    d = RawDriver(IbkrVenue())
    a, b = [], []
    for i, (direction, payload) in enumerate(rows):
        if direction == "out":
            live.on_sent(payload, i, i)
        else:
            a += live.feed(payload, i, i)
        b += d.feed(9, i, i, direction, "tws://127.0.0.1:4002", payload)
    assert a == b and len(a) == 3 + 1 + 1 + 3
