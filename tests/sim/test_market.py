"""The synthetic market: determinism, book/trade consistency, bars, activity."""

from __future__ import annotations

from collections import defaultdict

import pytest

from wrdata.sim.market import (
    DEFAULT_SYMBOLS,
    NS,
    ActivityProfile,
    Bar,
    BarBuilder,
    SymbolSpec,
    SyntheticMarket,
    bar_open_ns,
)

T0 = 1_767_225_600 * NS  # 2026-01-01T00:00:00Z


def test_same_seed_same_tape_and_t0_only_shifts_time():
    a = SyntheticMarket(seed=7, t0_ns=T0)
    b = SyntheticMarket(seed=7, t0_ns=T0 + 123 * NS)
    ea, eb = a.take(5000), b.take(5000)
    assert [e.key() for e in ea] == [e.key() for e in eb]
    assert all(y.ts_ns - x.ts_ns == 123 * NS for x, y in zip(ea, eb, strict=True))
    c = SyntheticMarket(seed=8, t0_ns=T0)
    assert [e.key() for e in c.take(100)] != [e.key() for e in ea[:100]]


def test_advance_and_take_walk_the_same_tape():
    a = SyntheticMarket(seed=3, t0_ns=T0, rate=2000)
    got = []
    t = 0
    while len(got) < 3000:
        t += 7_000_000  # 7 ms of market time per tick, like a server clock
        batch = a.advance(t)
        assert all(e.offset_ns <= t for e in batch)
        got.extend(batch)
    assert a.peek_offset_ns() > t
    b = SyntheticMarket(seed=3, t0_ns=T0, rate=2000)
    assert [e.key() for e in got] == [e.key() for e in b.take(len(got))]
    offsets = [e.offset_ns for e in got]
    assert offsets == sorted(offsets)
    # the mean rate is the nominal one
    assert 1500 < len(got) / (offsets[-1] / NS) < 2500


def test_book_changes_rebuild_the_book_and_trades_match_it():
    m = SyntheticMarket(seed=11, t0_ns=T0)
    books = {s: ({p: q for p, q in m.book(s).bids()}, {p: q for p, q in m.book(s).asks()}) for s in m.symbols}
    next_id = {s.symbol: s.first_trade_id for s in DEFAULT_SYMBOLS}
    next_agg = {s.symbol: s.first_agg_id for s in DEFAULT_SYMBOLS}
    last_u = {s: m.book(s).update_id for s in m.symbols}
    n_trades = 0
    for e in m.take(20_000):
        bids, asks = books[e.symbol]
        assert e.update_id == last_u[e.symbol] + 1
        last_u[e.symbol] = e.update_id
        before = {("b", p): q for p, q in bids.items()} | {("a", p): q for p, q in asks.items()}
        bbo_before = (max(bids), bids[max(bids)], min(asks), asks[min(asks)])
        for side, changes in (("b", e.bids), ("a", e.asks)):
            book = bids if side == "b" else asks
            for p, q in changes:
                assert p > 0 and q >= 0
                if q == 0:
                    del book[p]
                else:
                    book[p] = q
        bb, ba = max(bids), min(asks)
        assert bb < ba, "crossed book"
        assert e.bbo == (bb, bids[bb], ba, asks[ba])
        assert e.bbo_changed == (e.bbo != bbo_before)
        # every trade happened at a level that existed and took exactly what it removed
        taken: dict[int, int] = defaultdict(int)
        for t in e.trades:
            assert t.trade_id == next_id[e.symbol]
            next_id[e.symbol] += 1
            assert t.qty > 0 and t.ts_ns == e.ts_ns
            taken[t.price] += t.qty
            n_trades += 1
        for p, q in taken.items():
            side = "a" if not e.trades[0].buyer_maker else "b"
            after = (asks if side == "a" else bids).get(p, 0)
            assert before[(side, p)] - after == q
        # aggregates: one per price of the taker order, consecutive ids and trade ranges
        for ag in e.aggs:
            assert ag.agg_id == next_agg[e.symbol]
            next_agg[e.symbol] += 1
            covered = [t for t in e.trades if ag.first_id <= t.trade_id <= ag.last_id]
            assert covered and all(t.price == ag.price and t.agg_id == ag.agg_id for t in covered)
            assert sum(t.qty for t in covered) == ag.qty
        assert sum(ag.last_id - ag.first_id + 1 for ag in e.aggs) == len(e.trades)
    assert n_trades > 2000
    for s in m.symbols:
        b, a = books[s]
        assert sorted(b.items(), reverse=True) == m.book(s).bids()
        assert sorted(a.items()) == m.book(s).asks()
        assert m.last_trade_id(s) == next_id[s] - 1
        assert m.trades(s)[-1].trade_id == next_id[s] - 1


def test_prices_stay_realistic():
    m = SyntheticMarket(seed=5, t0_ns=T0)
    m.take(50_000)
    for s in m.symbols:
        spec = m.spec(s)
        bb, _, ba, _ = m.book(s).best()
        mid = spec.price((bb + ba) // 2)
        assert 0.8 * spec.base_price < mid < 1.2 * spec.base_price
        assert len(m.book(s).bids()) >= spec.book_depth // 2


def test_history_queries():
    m = SyntheticMarket(seed=2, t0_ns=T0, history=500)
    m.take(20_000)
    s = "ETHUSDT"
    trades = m.trades(s)
    assert len(trades) == 500
    assert [t.trade_id for t in trades] == list(range(trades[0].trade_id, trades[0].trade_id + 500))
    mid = trades[200].trade_id
    page = m.trades_from(s, mid, 50)
    assert [t.trade_id for t in page] == list(range(mid, mid + 50))
    assert m.trades_from(s, None, 10) == trades[-10:]
    assert m.trades_from(s, trades[0].trade_id - 100, 3) == trades[:3]  # older than retained: oldest kept
    aggs = m.agg_trades(s)
    a0 = aggs[100]
    assert m.aggs_from(s, a0.agg_id, 5) == aggs[100:105]
    by_time = m.aggs_from(s, start_ns=a0.ts_ns, limit=5)
    assert by_time[0].ts_ns >= a0.ts_ns and by_time[0].agg_id <= a0.agg_id


def test_bars_match_trades():
    m = SyntheticMarket(seed=9, t0_ns=T0 + 17 * NS, rate=200)
    m.take(30_000)
    for s in m.symbols[:2]:
        trades = m.trades(s)
        expect: dict[int, Bar] = {}
        for t in trades:
            o = bar_open_ns(t.ts_ns, "1m")
            expect.setdefault(o, Bar(s, "1m", o, o + 60 * NS)).add(t)
        bars = m.bars(s, "1m", start_ns=trades[0].ts_ns, limit=1000)
        assert [b.open_ns for b in bars] == sorted(expect)  # no empty minutes at 200 events/s
        for b in bars:
            assert b.key() == expect[b.open_ns].key()
        # the running builder gives the same bars
        bb = BarBuilder(s, "1m")
        closed = []
        for t in trades:
            closed.extend(bb.add(t))
        assert [b.key() for b in closed] == [b.key() for b in bars[:-1]]
        assert bb.bar.key() == bars[-1].key()
        # bigger intervals aggregate the same trades
        hour = m.bars(s, "1h", start_ns=trades[0].ts_ns)
        assert sum(b.count for b in hour) == len(trades)
        assert sum(b.volume for b in hour) == sum(t.qty for t in trades)


def test_empty_intervals_are_flat():
    bb = BarBuilder("X", "1s")
    m = SyntheticMarket(seed=1, t0_ns=T0, rate=2, symbols=[SymbolSpec("X", 100.0)])
    trades = [t for e in m.take(200) for t in e.trades]
    closed = []
    for t in trades:
        closed.extend(bb.add(t))
    flat = [b for b in closed if b.count == 0]
    assert flat, "at 2 events/s some seconds have no trade"
    for b in flat:
        assert b.open == b.high == b.low == b.close is not None and b.volume == 0
    opens = [b.open_ns for b in closed]
    assert opens == list(range(opens[0], opens[-1] + 1, NS))


def test_week_and_month_alignment():
    ts = 1_767_571_200 * NS + 5  # 2026-01-05 (a Monday) 00:00:00 UTC, plus 5 ns
    assert bar_open_ns(ts, "1w") == 1_767_571_200 * NS
    assert bar_open_ns(ts, "1M") == 1_767_225_600 * NS  # 2026-01-01
    assert bar_open_ns(ts, "1d") == 1_767_571_200 * NS


def test_activity_profile_closes_the_market():
    # 2 s open, 8 s closed, repeating
    prof = ActivityProfile([(2.0, 1.0), (8.0, 0.0)])
    m = SyntheticMarket(seed=1, t0_ns=T0, rate=500, activity=prof)
    evs = m.take(3000)
    for e in evs:
        assert (e.offset_ns % (10 * NS)) < 2 * NS
    assert evs[-1].offset_ns > 20 * NS


def test_formatting_is_exact():
    spec = SymbolSpec("BTCUSDT", 65000.0, "0.01", "0.00001")
    assert spec.fmt_price(6_500_012, 8) == "65000.12000000"
    assert spec.fmt_price(6_500_012) == "65000.12"
    assert spec.fmt_qty(2_000, 8) == "0.02000000"
    assert spec.fmt_quote(6_500_012 * 2_000, 8) == "1300.00240000"
    odd = SymbolSpec("X", 1.0, "0.00500000", "10")
    assert odd.fmt_price(3) == "0.015" and odd.fmt_qty(3) == "30"
    assert spec.to_ticks("65000.12") == 6_500_012


def test_bad_specs_are_rejected():
    with pytest.raises(ValueError):
        SymbolSpec("X", -1.0)
    with pytest.raises(ValueError):
        SyntheticMarket(symbols=[SymbolSpec("X", 1.0), SymbolSpec("X", 2.0)])
    with pytest.raises(ValueError):
        SyntheticMarket(rate=0)
