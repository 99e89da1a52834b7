"""Bars built from trades: which trades make a bar depends on the trades' own times, never
on when a clock tick ran (live ticks on the wall clock, replay on recorded times)."""

from __future__ import annotations

from wrdata.channels import Channel
from wrdata.message import StreamMessage
from wrdata.streaming import registry
from wrdata.streaming.bars import BarBuilder
from wrdata.streaming.coinbase import CoinbaseVenue
from wrdata.streaming.hub import Consumer
from wrdata.streaming.manager import Source

S = 1_000_000_000
MS = 1_000_000
T0 = 1_800_000_000 * S  # a multiple of 2 s


def trade(event_ms: int, recv_ms: int, price: float, size: float = 1.0) -> StreamMessage:
    return StreamMessage(provider="v", symbol="X", kind="trade", ts_recv=T0 + recv_ms * MS, ts_event=T0 + event_ms * MS,
                         channel="trade", price=price, size=size)


# trades of a venue that batches them (every 250 ms): the last ones of [0, 2 s) arrive after 2 s
TAPE = [trade(100, 250, 10.0), trade(1700, 1750, 11.0), trade(1900, 2050, 12.0), trade(1950, 2050, 9.0),
        trade(2100, 2300, 13.0)]


def build(grace: float, ticks_ms: list[int]) -> list[StreamMessage]:
    b = BarBuilder("2s", grace=grace)
    out: list[StreamMessage] = []
    b.consumers.append(out.append)
    ticks = sorted(ticks_ms)
    for t in TAPE:
        while ticks and T0 + ticks[0] * MS <= t.ts_recv:  # clock ticks that ran before this trade came in
            b.on_time(T0 + ticks.pop(0) * MS)
        b.on_message(t)
    return out


def updates(msgs: list[StreamMessage]) -> list[tuple]:
    return [(m.ts_event, m.close, m.high, m.low, m.size) for m in msgs if not m.closed]


def test_updates_do_not_depend_on_clock_ticks():
    # without grace, trades received after the bar's end are out of it, whether or not a tick ran
    no_tick = build(0.0, [])
    for ticks in ([2000], [2010], [2040], [250, 1000, 2049], [2050]):
        assert updates(build(0.0, ticks)) == updates(no_tick), ticks
    assert updates(no_tick) == [(T0, 10.0, 10.0, 10.0, 1.0), (T0, 11.0, 11.0, 10.0, 2.0), (T0 + 2 * S, 13.0, 13.0, 13.0, 1.0)]
    closes = [m for m in no_tick if m.closed]
    assert len(closes) == 1 and closes[0].ts_event == T0 and closes[0].ts_recv == T0 + 2050 * MS


def test_grace_keeps_late_trades_of_a_batch_in_their_bar():
    with_grace = build(0.5, [])
    for ticks in ([2000], [2100], [2299]):
        assert updates(build(0.5, ticks)) == updates(with_grace), ticks
    first = [u for u in updates(with_grace) if u[0] == T0]
    assert first[-1] == (T0, 9.0, 12.0, 9.0, 4.0), "both late trades are in the bar they belong to"
    closes = [m for m in with_grace if m.closed]
    assert closes[0].ts_event == T0 and closes[0].close == 9.0, "the next interval's trade closes it"


class _Source(Source):
    """The wiring live and replay sources share, without any venue I/O."""

    async def prepare(self, provider, symbol, channel):
        return provider, symbol, registry.venue_class(provider)().upstream(channel)

    async def acquire(self, provider, symbol, channel):
        pass

    async def release(self, provider, symbol, channel):
        pass


async def test_sources_build_bars_with_the_venues_grace():
    src = _Source()
    c = Consumer()
    await src.subscribe("coinbase", "BTC-USD", Channel("bar", "1m"), c)
    await src.subscribe("kraken", "BTC/USD", Channel("bar", "2m"), c)
    grace = {key[1]: stage.grace_ns for key, stage in src.hub.stages.items()}
    assert grace == {"coinbase": int(CoinbaseVenue.bar_grace * S), "kraken": 0}
    assert CoinbaseVenue.bar_grace >= 0.25, "a Coinbase trade batch (250 ms) fits in the grace"
