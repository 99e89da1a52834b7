"""Shared pieces the IBKR provider added: bars resampled from a venue's short bars
(``Venue.upstream`` + ``BarResampler``, wired by ``Source`` for live and replay alike),
``Session.on_sent`` driven from recorded ``out`` rows, and failures scoped to a symbol."""

from __future__ import annotations

import pytest

from wrdata.channels import Channel
from wrdata.message import StreamMessage
from wrdata.streaming.bars import BarResampler
from wrdata.streaming.base import Session, Venue
from wrdata.streaming.driver import RawDriver
from wrdata.streaming.hub import Consumer
from wrdata.streaming.manager import Source

S = 1_000_000_000
T0 = 1_800_000_000 * S  # a minute boundary (1_800_000_000 is a multiple of 60)


def bar5(i: int, o: float, h: float, lo: float, c: float, v: float, symbol: str = "AAPL") -> StreamMessage:
    """The 5-second bar starting at T0 + 5 s * i (received just after it ends)."""
    return StreamMessage(
        provider="v", symbol=symbol, kind="bar", ts_recv=T0 + (i + 1) * 5 * S + 1000, ts_event=T0 + i * 5 * S,
        channel="bar:5s", open=o, high=h, low=lo, close=c, size=v, interval="5s", closed=True, derived=False, seq=i,
    )


def test_twelve_five_second_bars_make_one_exact_minute_bar():
    r = BarResampler("1m", "5s")
    out: list[StreamMessage] = []
    r.consumers.append(out.append)
    bars = [bar5(i, 100 + i, 101 + i + (5 if i == 7 else 0), 99 - (3 if i == 4 else 0), 100.5 + i, 10.0 * (i + 1)) for i in range(12)]
    for b in bars:
        r.on_message(b)
    assert len(out) == 12
    assert [m.closed for m in out] == [False] * 11 + [True], "the sub-bar ending at the minute's end closes it"
    last = out[-1]
    assert (last.open, last.high, last.low, last.close) == (100, 113, 96, 111.5)
    assert last.size == sum(10.0 * (i + 1) for i in range(12))
    assert last.ts_event == T0 and last.interval == "1m" and last.channel == "bar:1m" and last.derived is True
    assert last.ts_recv == bars[-1].ts_recv, "emitted when the last sub-bar arrived"
    # an update carries the running values
    assert (out[4].open, out[4].high, out[4].low, out[4].close, out[4].size) == (100, 105, 96, 104.5, 150.0)


def test_missing_last_sub_bar_is_closed_by_a_later_bar_or_the_clock():
    r = BarResampler("1m", "5s")
    out: list[StreamMessage] = []
    r.consumers.append(out.append)
    for i in range(11):  # the 12th 5-second bar never comes
        r.on_message(bar5(i, 1, 2, 0.5, 1.5, 1))
    assert not any(m.closed for m in out)
    r.on_message(bar5(13, 7, 8, 6, 7.5, 2))  # a bar of the next minute
    closed = [m for m in out if m.closed]
    assert len(closed) == 1 and closed[0].ts_event == T0 and closed[0].size == 11
    assert out[-1].ts_event == T0 + 60 * S and out[-1].closed is False and out[-1].open == 7
    # the clock closes the open minute once it is over plus one source interval (the last bar's delivery)
    r.on_time(T0 + 120 * S)
    assert out[-1].closed is False
    r.on_time(T0 + 125 * S)
    assert out[-1].closed is True and out[-1].ts_event == T0 + 60 * S


def test_late_and_foreign_bars_change_nothing():
    r = BarResampler("1m", "5s")
    out: list[StreamMessage] = []
    r.consumers.append(out.append)
    for i in range(12):
        r.on_message(bar5(i, 1, 2, 0.5, 1.5, 1))
    n = len(out)
    r.on_message(bar5(3, 50, 60, 40, 55, 9))  # from the closed minute: cannot reopen it
    r.on_message(StreamMessage(provider="v", symbol="AAPL", kind="bar", ts_recv=T0, ts_event=T0 + 70 * S, channel="bar:1m",
                               open=1, high=1, low=1, close=1, size=1, interval="1m", closed=True))
    r.on_message(StreamMessage(provider="v", symbol="AAPL", kind="trade", ts_recv=T0, ts_event=T0 + 70 * S, price=1, size=1))
    assert len(out) == n


class _Bars5Venue(Venue):
    name = "v"
    default_url = "ws://x"
    native_bars = frozenset({"5s"})

    def upstream(self, channel: Channel) -> Channel:
        if channel.kind == "bar" and channel.interval in ("1m", "1h"):
            return Channel("bar", "5s")
        return super().upstream(channel)


class _Source(Source):
    """The wiring every source shares, with a venue deciding the upstream channel."""

    def __init__(self) -> None:
        super().__init__()
        self.venue = _Bars5Venue()
        self.acquired: list[tuple[str, str, Channel]] = []

    async def prepare(self, provider, symbol, channel):
        return "v", symbol, self.venue.upstream(channel)

    async def acquire(self, provider, symbol, channel):
        self.acquired.append((provider, symbol, channel))

    async def release(self, provider, symbol, channel):
        self.acquired.remove((provider, symbol, channel))


async def test_source_wires_resampled_bars_and_base_venue_still_derives_from_trades():
    src = _Source()
    c = Consumer()
    sub = await src.subscribe("v", "AAPL", Channel("bar", "1m"), c)
    assert src.acquired == [("v", "AAPL", Channel("bar", "5s"))], "the venue is asked for its 5-second bars"
    for i in range(12):
        src.hub.publish([bar5(i, 1 + i, 2 + i, 0.5, 1.5 + i, 2)])
    src.hub.publish([bar5(0, 1, 1, 1, 1, 1, symbol="MSFT")])  # another symbol's bars do not leak in
    got = list(c.queue)
    assert len(got) == 12 and got[-1].closed and got[-1].size == 24 and got[-1].high == 13
    assert all(m.symbol == "AAPL" and m.channel == "bar:1m" for m in got)
    await src.unsubscribe(sub)
    assert not src.hub.routes and not src.hub.stages and not src.hub.timed
    # the default: intervals a venue lacks come from trades
    assert Venue.upstream(_Bars5Venue(), Channel("bar", "3m")) == Channel("trade")
    assert Venue.upstream(_Bars5Venue(), Channel("bar", "5s")) == Channel("bar", "5s")


class _Recording(Session):
    def feed(self, payload, ts_recv, seq):
        return [StreamMessage(provider="v", kind="trade", ts_recv=ts_recv, seq=seq, trade_ref=payload.decode())]

    def on_sent(self, payload, ts_recv, seq):
        self.sent = getattr(self, "sent", []) + [(payload, seq)]
        return []


class _RecVenue(_Bars5Venue):
    def session(self, conn, streams):
        return _Recording(self, conn, streams)


def test_raw_driver_hands_sent_frames_to_the_session():
    d = RawDriver(_RecVenue())
    assert d.feed(3, 0, 10, "out", "tws://h:1", b"1\x00req\x00") == []
    out = d.feed(3, 1, 11, "in", "tws://h:1", b"answer")
    assert d.sessions[3].sent == [(b"1\x00req\x00", 0)]
    assert [m.trade_ref for m in out] == ["answer"]


def test_a_failure_naming_a_symbol_ends_only_that_symbols_consumers():
    src = _Source()
    a, b, both = Consumer(), Consumer(), Consumer()
    for c, syms in ((a, ["AAPL"]), (b, ["MSFT"]), (both, ["AAPL", "MSFT"])):
        c.providers.add("v")
        c.symbols.update(("v", s) for s in syms)
        src.hub.register(c)
    err = ValueError("MSFT refused")
    src.hub.fail("v", err, "MSFT")
    assert a.error is None and not a.finished
    assert b.error is err and both.error is err
    src.hub.fail("v", KeyError("all"))
    assert isinstance(a.error, KeyError)


@pytest.mark.parametrize("interval,start", [("1h", T0 - T0 % (3600 * S)), ("1m", T0)])
def test_bucket_alignment(interval, start):
    r = BarResampler(interval, "5s")
    out: list[StreamMessage] = []
    r.consumers.append(out.append)
    r.on_message(bar5(0, 1, 1, 1, 1, 1))
    assert out[0].ts_event == start
