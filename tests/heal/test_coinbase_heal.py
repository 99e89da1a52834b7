"""Gap healing against the Coinbase simulator (Advanced Trade): a disconnect window longer
than the resubscription snapshot is filled from the public market-trades endpoint by time
window, matched on trade_id, exactly."""

from __future__ import annotations

import asyncio
import json

import pytest

from wrdata.capture.rebuild import rebuild
from wrdata.sim.coinbase import CoinbaseSimulator
from wrdata.storage import DatasetWriter, read_messages, read_table
from wrdata.streaming.base import HttpResponse
from wrdata.streaming.coinbase import CoinbaseVenue
from wrdata.streaming.heal import HealSpec

from .helpers import check_tape, consume, drain, heal_stream, outage, statuses, trades_of, wait_for

SYM = "BTC-USD"
NS = 1_000_000_000


@pytest.fixture
async def sim():
    s = CoinbaseSimulator(seed=4, symbols=["BTC-USD", "ETH-USD"], rate=300, warmup=1.0, trades_snapshot=2)
    async with s:
        yield s



async def test_disconnect_window_is_healed_exactly(sim, tmp_path):
    ds = heal_stream("coinbase", sim.url)
    w = DatasetWriter(tmp_path, writer_id="w1", flush_interval=0.1).start()
    ds.add_tap(w)
    c, _ = await consume(ds, "coinbase", SYM)
    try:
        await wait_for(lambda: len(trades_of(list(c.queue), SYM)) > 10)
        await outage(sim, 1.5)
        await wait_for(lambda: any(m.kind == "status" and m.status in ("healed", "error") and m.symbol == SYM for m in c.queue))
        assert await ds.manager.healer.idle(10)
        await asyncio.sleep(0.3)
    finally:
        await ds.close()
        w.close()
    msgs = drain(c)
    trades = trades_of(msgs, SYM)
    check_tape(sim, SYM, trades, 1_000)
    (gap,) = [g for g in statuses(msgs, "gap") if g.symbol == SYM]
    (h,) = [h for h in statuses(msgs, "healed") if h.symbol == SYM]
    assert (h.gap_start_ns, h.gap_end_ns) == (gap.gap_start_ns, gap.gap_end_ns)
    healed = [t for t in trades if t.source == "backfill" and t.conn == h.conn]
    assert h.dropped == len(healed) > 5, "the outage lost more than the two-trade snapshot gave back"
    # the recording: every trade of the range once (streamed, snapshot and healed rows)
    rec = read_messages(str(tmp_path), "trades", "coinbase", symbols=SYM)
    by_id = {}
    for t in rec:
        by_id.setdefault(t.trade_id, []).append(t)
    lo, hi = min(by_id), max(by_id)
    assert sorted(by_id) == list(range(lo, hi + 1))
    # trade ids bound the window, so the job records only trades between the ones streamed
    assert all(len(v) == 1 for v in by_id.values())
    before = {t: read_table(str(tmp_path), t) for t in ("trades", "events")}
    rebuild(str(tmp_path))
    for t, tab in before.items():
        assert read_table(str(tmp_path), t).equals(tab), t


async def test_history_outage_and_rate_limits(sim):
    ds = heal_stream("coinbase", sim.url, heal_attempts=2)
    c, _ = await consume(ds, "coinbase", SYM)
    try:
        await wait_for(lambda: len(trades_of(list(c.queue), SYM)) > 5)
        sim.faults.outage(seconds=60)
        await outage(sim, 1.0)
        await wait_for(lambda: any(m.kind == "status" and m.status == "error" and m.symbol == SYM for m in c.queue))
        n = len(trades_of(list(c.queue), SYM))
        await wait_for(lambda: len(trades_of(list(c.queue), SYM)) > n + 10)  # the stream is unaffected
        sim.faults.clear()
        sim.faults.rate_limit(2, retry_after=1)
        await outage(sim, 1.0)
        await wait_for(lambda: any(m.kind == "status" and m.status == "healed" and m.symbol == SYM for m in c.queue))
    finally:
        await ds.close()
    msgs = drain(c)
    err, = [e for e in statuses(msgs, "error") if e.symbol == SYM]
    assert err.reason.startswith("unhealable: history API unavailable (HTTP 503")
    (h,) = [h for h in statuses(msgs, "healed") if h.symbol == SYM]
    hist = [s for p, _, s in sim.rest_log if p.endswith("/ticker")]
    assert hist[:2] == [503, 503] and hist[2:4] == [429, 429] and hist[4:] and set(hist[4:]) == {200}
    # trades after the healed outage are complete; before it the unhealed gap stays open
    trades = trades_of(msgs, SYM)
    after = [t for t in trades if t.ts_recv >= err.ts_recv]
    ids = sorted(t.trade_id for t in after)
    assert ids == list(range(ids[0], ids[-1] + 1))
    all_ids = {t.trade_id for t in trades}
    assert set(range(min(all_ids), max(all_ids) + 1)) - all_ids, "the unhealable gap stays a gap"


def _page(trades) -> HttpResponse:
    rows = [{"trade_id": str(i), "product_id": SYM, "price": "1.5", "size": "2", "side": "BUY",
             "time": f"2026-11-25T12:00:{s:02d}.{us:06d}Z"} for i, s, us in trades]
    return HttpResponse(200, json.dumps({"trades": rows}).encode())


def test_full_pages_split_the_window_at_their_oldest_second():
    """Short pages (a server answering fewer rows than a window holds) and full ones: the
    window narrows to the oldest second seen until the trades reach what was streamed."""
    v = CoinbaseVenue(url="ws://127.0.0.1:1")
    base = 1795608000 * NS  # 2026-11-25T12:00:00Z
    spec = HealSpec(symbol=SYM, start_ns=base + 1 * NS, end_ns=base + 9 * NS + 5000, after_id=100, before_id=120)
    p = v.history_pager(spec)
    p.page = 4
    # 19 missing ids 101..119, three a second from second 2 to 8 (ids 100 and 120 were streamed)
    tape = [(100, 1, 0)] + [(101 + k, 2 + k // 3, 10 + k) for k in range(19)] + [(120, 9, 5000)]
    got, asked = [], []
    while (req := p.next_request()) is not None:
        asked.append((req.params["start"], req.params["end"]))
        lo, hi = int(req.params["start"]), int(req.params["end"])
        inside = [t for t in tape if lo * NS <= base + t[1] * NS < hi * NS]
        page = sorted(inside, key=lambda t: (t[1], t[2]))[-4:][::-1]  # newest first, four at most
        got += p.on_response(req, _page(page), 1, len(asked))
    assert p.outcome()[0] == "healed"
    assert sorted(m.trade_id for m in got) == list(range(101, 120)), "each missing trade once, no streamed one"
    assert asked[0] == (str(1795608001), str(1795608010)) and len(asked) > 6
    assert all(int(b) <= int(a[1]) for (_, b), a in zip(asked[1:], asked, strict=False)), "the window only narrows"
