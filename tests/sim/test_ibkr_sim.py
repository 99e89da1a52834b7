"""The TWS simulator driven by plain, unmodified ``ib_async.IB`` (no wrdata code on the client side).

That is how we know the simulator speaks the TWS API: ib_async's own handshake, startup
requests, decoders and event handling accept everything it sends.
"""

from __future__ import annotations

import asyncio
import os
import signal
import struct
import subprocess
import sys

import pytest
from ib_async import IB, Forex, Future, StartupFetchNONE, Stock

from wrdata.sim.ibkr import SERVER_VERSION, IbkrSimulator

S = 1_000_000_000


@pytest.fixture
async def sim():
    async with IbkrSimulator(seed=5, rate=300, speed=20.0, warmup=1.0, no_permission=["SPY"]) as s:
        yield s


@pytest.fixture
async def ib(sim):
    client = IB()
    await client.connectAsync("127.0.0.1", sim.port, clientId=11, timeout=4, readonly=True, fetchFields=StartupFetchNONE)
    yield client
    client.disconnect()


async def wait(cond, timeout: float = 4.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)


def tape(sim: IbkrSimulator, key: str) -> list[tuple[float, float]]:
    spec = sim.market.spec(key)
    return [(spec.price(t.price), spec.qty(t.qty)) for t in sim.market.trades(key)]


def assert_run(full: list, got: list) -> None:
    starts = [i for i, x in enumerate(full) if x == got[0]]
    assert any(full[i: i + len(got)] == got for i in starts), got[:5]


async def test_default_connect_completes_every_startup_request(sim, caplog):
    ib = IB()
    errors = []
    ib.errorEvent += lambda *a: errors.append(a[:3])
    await ib.connectAsync("127.0.0.1", sim.port, clientId=0, timeout=4)  # StartupFetchALL, not read-only, clientId 0
    try:
        assert ib.isConnected() and ib.client.serverVersion() == SERVER_VERSION
        assert ib.managedAccounts() == ["DU1234567"]
        assert not [r for r in caplog.records if "timed out" in r.getMessage()], "every startup request was answered"
        assert [e[1] for e in errors] == [2104, 2106, 2158]
        conn = sim.history[0]
        assert conn.client_version_range == (157, 178) and conn.server_version == 178 and conn.client_id == 0
        sent = [f[0] for f in conn.received]
        assert sent[0] == "71" and {"61", "5", "99", "6", "76", "7", "15"} <= set(sent)
        assert (await ib.reqCurrentTimeAsync()).timestamp() > 0
    finally:
        ib.disconnect()


async def test_contract_details_and_qualification(sim, ib):
    errors = []
    ib.errorEvent += lambda req_id, code, text, contract: errors.append(code)
    aapl, eur, es, nosuch = await ib.qualifyContractsAsync(
        Stock("AAPL", "SMART", "USD"), Forex("EURUSD"), Future("ES", "202612", "CME"), Stock("NOSUCH", "SMART", "USD"))
    assert (aapl.conId, aapl.primaryExchange, aapl.localSymbol, aapl.tradingClass) == (265598, "NASDAQ", "AAPL", "NMS")
    assert (eur.conId, eur.secType, eur.localSymbol) == (12087792, "CASH", "EUR.USD")
    assert (es.conId, es.lastTradeDateOrContractMonth, es.multiplier, es.localSymbol) == (649180695, "20261218", "50", "ESZ6")
    assert nosuch is None and errors == [200]
    [d] = await ib.reqContractDetailsAsync(Stock("MSFT", "SMART", "USD"))
    assert (d.longName, d.minTick, d.timeZoneId, d.stockType, d.marketName) == ("MICROSOFT CORP", 0.01, "US/Eastern", "COMMON", "NMS")
    assert d.secIdList[0].tag == "ISIN" and d.sizeIncrement == 1.0 and d.contract.conId == 272093
    # conId alone is enough
    [d2] = await ib.reqContractDetailsAsync(Stock(conId=272093))
    assert d2.contract.symbol == "MSFT"


async def test_market_data_ticker(sim, ib):
    [c] = await ib.qualifyContractsAsync(Stock("AAPL", "SMART", "USD"))
    t = ib.reqMktData(c, "233")
    await wait(lambda: t.volume > 0 and t.rtTime is not None and len(t.ticks) > 0)
    assert t.marketDataType == 1 and t.minTick == 0.01 and t.bboExchange == "9c0001"
    assert t.bid < t.ask and t.bidSize > 0 and t.askSize > 0 and t.last > 0 and t.vwap > 0
    assert t.close == 227.0, "yesterday's close: the contract's base price"
    assert t.halted == 0, "not halted (tick 49)"
    sim.freeze()
    spec = sim.market.spec("AAPL")
    bb, bq, ba, aq = sim.market.book("AAPL").best()
    await wait(lambda: (t.bid, t.bidSize, t.ask, t.askSize) == (spec.price(bb), bq, spec.price(ba), aq))
    assert t.volume == spec.qty(sum(x.qty for x in sim.market.trades("AAPL")))
    errors = []
    ib.errorEvent += lambda req_id, code, text, contract: errors.append(code)
    assert ib.cancelMktData(c)
    await wait(lambda: not sim.subscriptions())
    ib.client.cancelMktData(999)
    await wait(lambda: errors == [300])


async def test_snapshot_request(sim, ib):
    [c] = await ib.qualifyContractsAsync(Stock("MSFT", "SMART", "USD"))
    [t] = await ib.reqTickersAsync(c)
    assert t.bid < t.ask and t.last > 0
    assert sim.subscriptions() == [], "a snapshot holds no line"


async def test_tick_by_tick_trades_and_quotes(sim, ib):
    [c] = await ib.qualifyContractsAsync(Stock("AAPL", "SMART", "USD"))
    trades, quotes = [], []
    last = ib.reqTickByTickData(c, "AllLast")
    last.updateEvent += lambda tk: trades.extend(x for x in tk.tickByTicks if hasattr(x, "specialConditions"))
    await wait(lambda: len(trades) >= 20)
    assert_run(tape(sim, "AAPL"), [(x.price, x.size) for x in trades])
    assert all(x.exchange in ("ISLAND", "NYSE", "ARCA", "BATS", "IEX", "FINRA") for x in trades)
    [fx] = await ib.qualifyContractsAsync(Forex("EURUSD"))
    q = ib.reqTickByTickData(fx, "BidAsk")
    q.updateEvent += lambda tk: quotes.extend(x for x in tk.tickByTicks if hasattr(x, "bidPrice"))
    await wait(lambda: len(quotes) >= 5)
    assert all(x.bidPrice < x.askPrice and x.bidSize > 0 for x in quotes)
    ib.cancelTickByTickData(c, "AllLast")
    await wait(lambda: [s for _, _, _, s in sim.subscriptions()] == ["EUR.USD"])


async def test_real_time_bars(sim, ib):
    [c] = await ib.qualifyContractsAsync(Stock("AAPL", "SMART", "USD"))
    bars = ib.reqRealTimeBars(c, 5, "TRADES", False)
    await wait(lambda: len(bars) >= 3)
    spec = sim.market.spec("AAPL")
    trades = sim.market.trades("AAPL")
    for b in bars:
        start = int(b.time.timestamp()) * S
        assert start % (5 * S) == 0
        inside = [t for t in trades if start <= t.ts_ns < start + 5 * S]
        assert b.volume == spec.qty(sum(t.qty for t in inside)) and b.count == len(inside)
        assert (b.open_, b.close) == (spec.price(inside[0].price), spec.price(inside[-1].price))
    assert [(y.time - x.time).total_seconds() for x, y in zip(bars, bars[1:], strict=False)] == [5.0] * (len(bars) - 1)
    [fx] = await ib.qualifyContractsAsync(Forex("EURUSD"))
    mid = ib.reqRealTimeBars(fx, 5, "MIDPOINT", False)
    await wait(lambda: len(mid) >= 1)
    assert mid[0].low <= mid[0].open_ <= mid[0].high and mid[0].volume == -1
    ib.cancelRealTimeBars(bars)
    ib.cancelRealTimeBars(mid)
    await wait(lambda: not sim.subscriptions())


async def test_market_depth_matches_the_book_at_rest(sim, ib):
    [c] = await ib.qualifyContractsAsync(Stock("MSFT", "SMART", "USD"))
    t = ib.reqMktDepth(c, 5, isSmartDepth=True)
    await wait(lambda: len(t.domTicks) > 0 and len(t.domBids) == 5 and len(t.domAsks) == 5)
    await asyncio.sleep(0.2)  # let the book move a little first
    sim.freeze()
    spec = sim.market.spec("MSFT")
    book = sim.market.book("MSFT")
    want = ([(spec.price(p), spec.qty(q)) for p, q in book.bids(5)], [(spec.price(p), spec.qty(q)) for p, q in book.asks(5)])
    await wait(lambda: ([(x.price, x.size) for x in t.domBids], [(x.price, x.size) for x in t.domAsks]) == want)
    assert {x.marketMaker for x in t.domBids} == {"ISLAND"}
    ib.cancelMktDepth(c, isSmartDepth=True)
    await wait(lambda: not sim.subscriptions())


async def test_request_errors_and_delayed_data(sim, ib):
    errors = []
    ib.errorEvent += lambda req_id, code, text, contract: errors.append(code)
    [spy] = await ib.qualifyContractsAsync(Stock("SPY", "SMART", "USD"))
    live = ib.reqMktData(spy)
    ib.reqTickByTickData(spy, "Last")
    ib.reqRealTimeBars(spy, 5, "TRADES", False)
    await wait(lambda: sorted(errors) == [354, 420, 10089])
    assert live.bid != live.bid, "no data (NaN)"
    ib.cancelMktData(spy)
    ib.reqMarketDataType(3)
    delayed = ib.reqMktData(spy)
    await wait(lambda: delayed.bid > 0 and delayed.marketDataType == 3)
    assert 10167 in errors
    [fx] = await ib.qualifyContractsAsync(Forex("EURUSD"))
    ib.reqTickByTickData(fx, "AllLast")
    await wait(lambda: 10189 in errors)


async def test_limits(ib):
    sim = IbkrSimulator(seed=1, rate=100, warmup=0.5, max_tick_by_tick=1, max_depth_requests=1, max_market_data_lines=1)
    async with sim:
        cl = IB()
        await cl.connectAsync("127.0.0.1", sim.port, clientId=3, timeout=4, readonly=True, fetchFields=StartupFetchNONE)
        try:
            errors = []
            cl.errorEvent += lambda req_id, code, text, contract: errors.append(code)
            aapl, msft = await cl.qualifyContractsAsync(Stock("AAPL", "SMART", "USD"), Stock("MSFT", "SMART", "USD"))
            cl.reqTickByTickData(aapl, "AllLast")
            cl.reqTickByTickData(msft, "AllLast")
            cl.reqMktDepth(aapl)
            cl.reqMktDepth(msft)
            cl.reqMktData(aapl)
            cl.reqMktData(msft)
            await wait(lambda: sorted(errors) == [101, 309, 10190])
            [live] = [r for _, r, k, _ in sim.subscriptions() if k == "mkt"]
            cl.client.reqMktData(live, msft, "", False, False, [])  # the id of a live request
            await wait(lambda: 322 in errors)
        finally:
            cl.disconnect()


async def test_connectivity_codes_drop_and_stall(sim, ib):
    errors, gone = [], []
    ib.errorEvent += lambda req_id, code, text, contract: errors.append((req_id, code))
    ib.disconnectedEvent += lambda: gone.append(True)
    [c] = await ib.qualifyContractsAsync(Stock("AAPL", "SMART", "USD"))
    t = ib.reqMktData(c)
    await wait(lambda: t.bid > 0)
    sim.connectivity_lost()
    await wait(lambda: (-1, 1100) in errors)
    sim.connectivity_restored()
    sim.farm_broken()
    sim.farm_restored()
    await wait(lambda: errors[-3:] == [(-1, 1102), (-1, 2103), (-1, 2104)])
    sim.stall_all()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ib.reqCurrentTimeAsync(), 0.3)
    sim.resume_all()
    assert (await ib.reqCurrentTimeAsync()).timestamp() > 0
    sim.drop_all()
    await wait(lambda: gone == [True])
    assert not ib.isConnected()


async def test_data_lost_forgets_subscriptions(sim, ib):
    errors = []
    ib.errorEvent += lambda req_id, code, text, contract: errors.append(code)
    [c] = await ib.qualifyContractsAsync(Stock("AAPL", "SMART", "USD"))
    ib.reqMktData(c)
    await wait(lambda: len(sim.subscriptions()) == 1)
    sim.connectivity_lost()
    sim.connectivity_restored(data_lost=True)
    await wait(lambda: 1101 in errors)
    assert sim.subscriptions() == []


async def test_a_client_id_in_use_is_refused(sim, ib):
    second = IB()
    errors = []
    second.errorEvent += lambda req_id, code, text, contract: errors.append(code)
    with pytest.raises((TimeoutError, ConnectionError)):
        await second.connectAsync("127.0.0.1", sim.port, clientId=11, timeout=1, readonly=True, fetchFields=StartupFetchNONE)
    assert errors == [326]
    assert ib.isConnected()


async def test_handshake_versions():
    async with IbkrSimulator(seed=1, rate=10, warmup=0.1) as sim:
        async def hello(prefix: bytes, text: bytes) -> bytes:
            r, w = await asyncio.open_connection("127.0.0.1", sim.port)
            w.write(prefix + struct.pack(">I", len(text)) + text)
            try:
                (n,) = struct.unpack(">I", await asyncio.wait_for(r.readexactly(4), 2))
                return await r.readexactly(n)
            except asyncio.IncompleteReadError:
                return b""
            finally:
                w.close()

        reply = await hello(b"API\0", b"v100..150")
        assert reply.split(b"\0")[0] == b"150" and reply.count(b"\0") == 2, "min(client max, 178), then the time"
        assert (await hello(b"API\0", b"v157..178 +PACEAPI")).split(b"\0")[0] == b"178"
        assert await hello(b"API\0", b"v190..200") == b"", "a client needing protobuf versions is refused"
        assert await hello(b"GET ", b"/ HTTP/1.1") == b""


def test_unknown_symbols_are_refused_up_front():
    with pytest.raises(ValueError, match="unknown symbol"):
        IbkrSimulator(symbols=["BTC-USD"])
    assert set(IbkrSimulator(symbols=["aapl", "IBM"]).contracts) == {"AAPL", "IBM"}


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
async def test_cli_prints_its_address_first_and_serves_ib_async():
    help_text = subprocess.run([sys.executable, "-m", "wrdata.cli", "sim", "ibkr", "--help"], capture_output=True, text=True,
                               check=True).stdout
    assert "4002" in help_text, "a paper Gateway's port by default"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wrdata.cli", "sim", "ibkr", "--port", "0", "--seed", "4", "--symbols", "AAPL,IBM",
        "--speed", "10", "--warmup", "0.5", stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().strip()
        host, _, port = line.rpartition(":")
        assert host == "127.0.0.1" and port.isdigit()
        ib = IB()
        await ib.connectAsync(host, int(port), clientId=5, timeout=4, readonly=True, fetchFields=StartupFetchNONE)
        [ibm] = await ib.qualifyContractsAsync(Stock("IBM", "SMART", "USD"))
        bars = ib.reqRealTimeBars(ibm, 5, "TRADES", False)
        await wait(lambda: len(bars) >= 1, 5)
        ib.disconnect()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_recorded_messages_are_served_to_a_new_client():
    """A recording's raw rows (made through wrdata's provider) served to an unmodified ib_async client."""
    from wrdata import DataStream
    from wrdata.sim.server import FrameFeed, RecordedFrame

    rows: list[tuple] = []

    class Tap:
        def on_raw(self, *row) -> None:
            rows.append(row)

        def on_messages(self, msgs) -> None:
            pass

    async with IbkrSimulator(seed=9, rate=300, speed=20.0, warmup=0.5) as live:
        opts = {"ibkr": {"backoff_initial": 0.05, "keepalive_interval": 0.2, "connect_timeout": 2.0}}
        async with DataStream(endpoints={"ibkr": live.url}, options=opts) as ds:
            ds.add_tap(Tap())
            trades = ds.stream("ibkr:AAPL", "trade")
            bars = ds.stream("ibkr:AAPL", "bar:5s")
            recorded_trades = [await anext(trades) for _ in range(30)]
            recorded_bars = [await anext(bars) for _ in range(2)]
    frames = [RecordedFrame(ts, payload, url, "out" if direction == "out" else None)
              for _p, _c, _s, ts, direction, url, payload in rows if direction in ("in", "out")]
    go = asyncio.Event()

    async def gated():
        await go.wait()
        for f in frames:
            yield f

    async with IbkrSimulator(seed=1, rate=1, warmup=0.0, feed=FrameFeed(gated(), speed=None)) as sim:
        ib = IB()
        await ib.connectAsync("127.0.0.1", sim.port, clientId=4, timeout=4, readonly=True, fetchFields=StartupFetchNONE)
        try:
            [c] = await ib.qualifyContractsAsync(Stock("AAPL", "SMART", "USD"))
            got_trades: list = []
            t = ib.reqTickByTickData(c, "AllLast")
            t.updateEvent += lambda tk: got_trades.extend(x for x in tk.tickByTicks if hasattr(x, "specialConditions"))
            got_bars = ib.reqRealTimeBars(c, 5, "TRADES", False)
            await wait(lambda: len(sim.subscriptions()) == 2)
            go.set()
            await wait(lambda: len(got_trades) >= 30 and len(got_bars) >= 2)
            assert [(x.price, x.size, x.exchange) for x in got_trades[:30]] == [(m.price, m.size, m.exchange) for m in recorded_trades]
            assert [(int(b.time.timestamp()) * S, b.open_, b.close, b.volume) for b in got_bars[:2]] == [
                (m.ts_event, m.open, m.close, m.size) for m in recorded_bars]
        finally:
            ib.disconnect()
