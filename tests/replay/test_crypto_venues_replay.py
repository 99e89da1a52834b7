"""Coinbase and Kraken are captured and replayed like every venue: a recording made from
each simulator (trades, quotes, native and derived bars, books; an outage; a lost
Coinbase message / a wrong Kraken book checksum, so gap events and book resyncs are in
it) replays what live consumers saw, its ``raw`` rows rebuild every venue message, and
``wrdata rebuild`` leaves every table as it was."""

from __future__ import annotations

import asyncio
import shutil

import pytest

from wrdata import DataStream
from wrdata.capture.rebuild import rebuild
from wrdata.sim.coinbase import CoinbaseSimulator
from wrdata.sim.kraken import KrakenSimulator
from wrdata.storage import DatasetWriter, read_table
from wrdata.streaming.coinbase import CoinbaseVenue
from wrdata.streaming.driver import RawDriver
from wrdata.streaming.kraken import KrakenVenue

FAST = {"backoff_initial": 0.05, "backoff_max": 0.2, "control_interval": 0.01}
CASES = {
    # simulator, its options, venue, symbols, kinds (a native bar interval and a derived one)
    "coinbase": (CoinbaseSimulator, {"heartbeat_interval": 0.2, "candle_push_interval": 0.3}, CoinbaseVenue,
                 ["BTC-USD", "ETH-USD"], ["trade", "quote", "bar:5m", "bar:2s", "book:5"]),
    "kraken": (KrakenSimulator, {"heartbeat_interval": 0.2}, KrakenVenue,
               ["BTC/USD", "ETH/USD"], ["trade", "quote", "bar:1m", "bar:2s", "book:10"]),
}
TABLES = ("trades", "quotes", "bars", "book", "events", "raw")


class _Raw:
    def __init__(self) -> None:
        self.rows: list[tuple] = []
        self.msgs: list = []

    def on_raw(self, *row) -> None:
        self.rows.append(row)

    def on_messages(self, msgs) -> None:
        self.msgs.extend(msgs)


async def _record(root, case: str):
    sim_cls, sim_opts, _venue, symbols, kinds = CASES[case]
    sim = sim_cls(seed=4, rate=400, **sim_opts)
    await sim.start()
    writer = DatasetWriter(str(root), flush_interval=0.2).start()
    raw = _Raw()
    seen: dict[str, list] = {k: [] for k in kinds}
    try:
        async with DataStream(endpoints={case: sim.url}, options={case: FAST}, include_status=True) as ds:
            ds.add_tap(writer)
            ds.add_tap(raw)

            async def collect(kind):
                async for m in ds.stream_many(symbols, stream_type=kind):
                    seen[kind].append(m)

            tasks = [asyncio.create_task(collect(k)) for k in kinds]
            await asyncio.sleep(1.2)
            if case == "coinbase":
                sim.skip_sequence(2)  # two messages lost: a gap on every stream, the books resynchronised
            else:
                sim.corrupt_checksum(1, "BTC/USD")  # a wrong checksum: a gap, the book resubscribed
            await asyncio.sleep(0.8)
            sim.drop_all()  # and an outage
            await asyncio.sleep(1.0)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await sim.stop()
        writer.close()
    return seen, raw


@pytest.fixture(scope="module", params=list(CASES))
def recording(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    seen, raw = asyncio.run(_record(root, request.param))
    return request.param, root, seen, raw


async def _replay(root, symbols, kind):
    async with DataStream.replay(str(root), include_status=True) as ds:
        return [m async for m in ds.stream_many(symbols, stream_type=kind)]


async def test_replay_yields_what_live_consumers_saw(recording):
    case, root, seen, _ = recording
    symbols, kinds = CASES[case][3], CASES[case][4]
    for kind in kinds:
        live = seen[kind]
        assert sum(m.kind != "status" for m in live) > 5, kind
        replayed = await _replay(root, symbols, kind)
        if kind == "bar:2s":
            # built from trades: updates follow the trades exactly; closes follow each clock
            assert all(m.derived for m in live if m.kind == "bar")
            live = [m for m in live if not m.closed]
            replayed = [m for m in replayed if not m.closed]
        # the live consumers stopped a moment before the recorder closed: replay may hold more
        assert replayed[: len(live)] == live, kind
        for sym in symbols:
            a = [m for m in live if m.symbol == sym]
            b = [m for m in replayed if m.symbol == sym][: len(a)]
            assert a == b, f"per-symbol order of {sym} ({kind})"


async def test_gaps_and_book_resyncs_are_in_the_recording(recording):
    case, root, seen, _ = recording
    symbols = CASES[case][3]
    book_kind = CASES[case][4][-1]
    books = await _replay(root, symbols, book_kind)
    reason = "sequence_num skipped" if case == "coinbase" else "checksum mismatch"
    gaps = [i for i, m in enumerate(books) if m.status == "gap" and reason in m.reason]
    assert gaps, f"the {reason} gap is recorded"
    assert [m.status for m in books if m.status == "gap" and reason in m.reason] == [
        m.status for m in seen[book_kind] if m.status == "gap" and reason in m.reason]
    sym = books[gaps[0]].symbol
    after = [m for m in books[gaps[0] + 1:] if m.kind == "book" and m.symbol == sym]
    assert after and after[0].snapshot, "the first view after the gap comes from a fresh snapshot"
    outage = [m for m in books if m.status == "gap" and m.reason.startswith("disconnected")]
    assert outage, "the outage is recorded"
    assert any(m.status == "disconnected" for m in books)


def test_raw_rows_rebuild_every_message(recording):
    case, _, _, raw = recording
    driver = RawDriver(CASES[case][2]())
    rebuilt = []
    for _provider, conn, seq, ts, direction, url, payload, *status in raw.rows:  # REST rows carry their HTTP status
        rebuilt += driver.feed(conn, seq, ts, direction, url, payload, *status)
    assert rebuilt == raw.msgs
    assert {m.kind for m in rebuilt} == {"trade", "quote", "bar", "book", "status"}
    assert {m.status for m in rebuilt if m.kind == "status"} >= {"connected", "subscribed", "disconnected", "gap"}


def test_rebuild_leaves_every_table_as_it_was(recording, tmp_path):
    case, root, _, _ = recording
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    before = {t: read_table(str(copy), t) for t in TABLES[:-1]}
    assert all(before[t].num_rows for t in before)
    results = rebuild(str(copy))
    assert [r.provider for r in results] == [case] and results[0].frames > 0 and results[0].written
    for t in before:
        assert read_table(str(copy), t).equals(before[t]), t
