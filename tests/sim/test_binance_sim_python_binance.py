"""The simulator is proven with the venue's own widely used Python client, python-binance,
changed only in its base URLs (binance.md section 8)."""

from __future__ import annotations

import asyncio

import pytest
from binance import AsyncClient
from binance.ws.depthcache import DepthCacheManager
from binance.ws.streams import BinanceSocketManager

from wrdata.sim.binance import BinanceSimulator

# python-binance still imports websockets' legacy API
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
async def client_and_bsm():
    sim = BinanceSimulator(seed=5, rate=400, warmup=1.0, kline_push_interval=0.2)
    async with sim:
        client = AsyncClient()  # the constructor makes no network call (create() would)
        client.API_URL = sim.rest_url + "/api"
        bsm = BinanceSocketManager(client)
        bsm.STREAM_URL = sim.url + "/"  # keep the trailing slash: it appends "ws/..." and "stream?streams=..."
        try:
            yield sim, client, bsm
        finally:
            await client.close_connection()


async def _first(socket, pred=lambda m: True, timeout: float = 3.0):
    async with socket as s:
        async with asyncio.timeout(timeout):
            while True:
                msg = await s.recv()
                if pred(msg):
                    return msg


async def test_python_binance_streams(client_and_bsm):
    sim, client, bsm = client_and_bsm
    trade = await _first(bsm.trade_socket("BTCUSDT"))
    assert trade["e"] == "trade" and trade["s"] == "BTCUSDT"
    assert any(t.trade_id == trade["t"] for t in sim.market.trades("BTCUSDT"))

    agg = await _first(bsm.aggtrade_socket("ETHUSDT"))
    assert agg["e"] == "aggTrade" and agg["f"] <= agg["l"]

    kline = await _first(bsm.kline_socket("BTCUSDT", interval=AsyncClient.KLINE_INTERVAL_1MINUTE))
    assert kline["e"] == "kline" and kline["k"]["i"] == "1m" and kline["k"]["x"] is False

    partial = await _first(bsm.depth_socket("BTCUSDT", depth=BinanceSocketManager.WEBSOCKET_DEPTH_5, interval=100))
    assert len(partial["bids"]) == 5 and len(partial["asks"]) == 5 and "lastUpdateId" in partial

    diff = await _first(bsm.depth_socket("SOLUSDT", interval=100))
    assert diff["e"] == "depthUpdate" and diff["U"] <= diff["u"]

    ticker = await _first(bsm.symbol_book_ticker_socket("BNBUSDT"))
    assert ticker["s"] == "BNBUSDT" and float(ticker["b"]) < float(ticker["a"])

    streams = ["btcusdt@trade", "ethusdt@bookTicker"]
    seen: set[str] = set()

    def both(m):
        seen.add(m["stream"])
        return seen == set(streams)

    await _first(bsm.multiplex_socket(streams), both)


async def test_python_binance_rest(client_and_bsm):
    sim, client, _ = client_and_bsm
    assert await client.ping() == {}
    assert abs((await client.get_server_time())["serverTime"] - sim.now_ns() // 10**6) < 2000
    info = await client.get_symbol_info("ETHUSDT")
    assert info["symbol"] == "ETHUSDT" and info["filters"][0]["tickSize"] == "0.01000000"
    book = await client.get_order_book(symbol="BTCUSDT", limit=10)
    assert len(book["bids"]) == 10 and book["lastUpdateId"] > 0
    first = sim.market.trades("BTCUSDT")[0].trade_id
    hist = await client.get_historical_trades(symbol="BTCUSDT", fromId=first, limit=20)
    assert [t["id"] for t in hist] == list(range(first, first + 20))
    aggs = await client.get_aggregate_trades(symbol="BTCUSDT", limit=5)
    assert len(aggs) == 5
    klines = await client.get_klines(symbol="BTCUSDT", interval=AsyncClient.KLINE_INTERVAL_1SECOND, limit=2)
    assert len(klines[0]) == 12
    from binance.exceptions import BinanceAPIException

    with pytest.raises(BinanceAPIException) as e:
        await client.get_order_book(symbol="NOPE")
    assert e.value.code == -1121


async def test_python_binance_depth_cache(client_and_bsm):
    """python-binance's own book keeping (REST snapshot + diff stream) agrees with the market."""
    sim, client, bsm = client_and_bsm
    async with DepthCacheManager(client, "BTCUSDT", bm=bsm, limit=5000, ws_interval=100) as dcm:
        for _ in range(5):
            dc = await asyncio.wait_for(dcm.recv(), 3)
    bids = dc.get_bids()
    asks = dc.get_asks()
    assert bids[0][0] < asks[0][0]
    spec = sim.market.spec("BTCUSDT")
    market_prices = {spec.price(p) for p, _ in sim.market.book("BTCUSDT").bids()}
    # the cache trails the market by at most a few updates: its top levels are market levels
    assert len({p for p, _ in bids[:5]} & market_prices) >= 3
