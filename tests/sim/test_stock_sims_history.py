"""REST trade history of the stock-venue simulators (for gap healing, per
``shared/providers/rest-history.md``): every print is in it, prints withheld from the
stream included, paged the venue's way."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from urllib.parse import quote

import websockets

from tests.sim.sim_helpers import http_get
from wrdata.sim.alpaca import AlpacaSimulator
from wrdata.sim.finnhub import FinnhubSimulator
from wrdata.sim.polygon import PolygonSimulator

ALPACA_KEYS = {"APCA-API-KEY-ID": "test", "APCA-API-SECRET-KEY": "test"}


async def _stream(url: str, login: list, pred, n: int, withhold) -> list[dict]:
    """Trades from a plain client until ``n`` have arrived; ``withhold()`` once 5 have."""
    got: list[dict] = []
    async with websockets.connect(url, compression=None) as ws:
        for m in login:
            await ws.send(json.dumps(m))
        async with asyncio.timeout(20):
            while len(got) < n:
                msg = json.loads(await ws.recv())
                items = msg if isinstance(msg, list) else msg.get("data") or []
                before = len(got)
                got += [i for i in items if pred(i)]
                if before < 5 <= len(got):
                    withhold()
    return got


async def test_alpaca_history_pages_and_holds_withheld_prints():
    async with AlpacaSimulator(seed=1, rate=800, hours="always", warmup=0.2, late_fraction=0) as sim:
        streamed = await _stream(sim.url + "/v2/sip", [{"action": "auth", "key": "test", "secret": "test"},
                                                       {"action": "subscribe", "trades": ["NVDA"]}], lambda i: i.get("T") == "t", 30,
                                 lambda: sim.faults.withhold_trades(3, "NVDA"))
        assert len(sim.faults.withheld["NVDA"]) == 3
        rows, token, pages = [], None, 0
        while True:
            q = "limit=7" + (f"&page_token={quote(token)}" if token else "")
            status, _, body = await http_get(f"{sim.rest_url}/v2/stocks/NVDA/trades?{q}", ALPACA_KEYS)
            assert status == 200 and body["symbol"] == "NVDA"
            rows += body["trades"]
            pages += 1
            token = body["next_page_token"]
            if token is None:
                break
        assert pages > 1 and [r["t"] for r in rows] == sorted(r["t"] for r in rows)
        key = lambda r: (r["t"], r["x"], r["i"])  # noqa: E731 (Alpaca's dedupe key: ids are per venue)
        got = {key(r) for r in rows}
        seen = {key(t) for t in streamed}
        assert seen <= got
        inside = {k for k in got - seen if streamed[0]["t"] <= k[0] <= streamed[-1]["t"]}
        assert len(inside) == 3, "exactly the withheld prints are missing from the stream"
        status, _, multi = await http_get(f"{sim.rest_url}/v2/stocks/trades?symbols=NVDA,AAPL&limit=10000", ALPACA_KEYS)
        assert {key(r) for r in multi["trades"]["NVDA"]} >= got and "AAPL" in multi["trades"]
        status, _, _ = await http_get(f"{sim.rest_url}/v2/stocks/NVDA/trades")
        assert status == 401
        status, _, crypto = await http_get(f"{sim.rest_url}/v1beta3/crypto/us/trades?symbols=BTC/USD&limit=3")
        assert status == 200 and set(crypto["trades"]["BTC/USD"][0]) == {"t", "p", "s", "i", "tks"}


async def test_polygon_history_cursor_and_withheld_prints():
    async with PolygonSimulator(seed=1, rate=800, hours="always", warmup=0.2) as sim:
        streamed = await _stream(sim.url + "/stocks", [{"action": "auth", "params": "test"},
                                                       {"action": "subscribe", "params": "T.NVDA"}], lambda e: e.get("ev") == "T", 30,
                                 lambda: sim.faults.withhold_trades(2, "NVDA"))
        rows, url = [], f"{sim.rest_url}/v3/trades/NVDA?order=asc&limit=9&apiKey=test"
        while url:
            status, _, body = await http_get(url if "apiKey" in url else url + "&apiKey=test")
            assert status == 200 and body["status"] == "OK"
            rows += body["results"]
            url = body.get("next_url")
        assert [r["sip_timestamp"] for r in rows] == sorted(r["sip_timestamp"] for r in rows)
        by_seq = {r["sequence_number"]: r for r in rows}  # REST sequence_number = WS q
        assert {t["q"] for t in streamed} <= set(by_seq)
        for t in streamed:
            r = by_seq[t["q"]]
            assert (r["id"], r["exchange"], r["price"], r["size"], r["sip_timestamp"] // 1_000_000) == (t["i"], t["x"], t["p"], t["s"], t["t"])
        missing = [q for q in by_seq if streamed[0]["q"] < q < streamed[-1]["q"] and q not in {t["q"] for t in streamed}]
        assert len(missing) == 2
        status, _, newest = await http_get(f"{sim.rest_url}/v3/trades/NVDA?limit=1", {"Authorization": "Bearer test"})
        assert newest["results"][0]["sip_timestamp"] >= rows[-1]["sip_timestamp"], "newest first by default"
        status, _, crypto = await http_get(f"{sim.rest_url}/v3/trades/X:BTCUSD?limit=2&apiKey=test")
        assert status == 200 and len(crypto["results"]) == 2 and "participant_timestamp" in crypto["results"][0]
        status, _, err = await http_get(f"{sim.rest_url}/v3/trades/NVDA?apiKey=nope")
        assert status == 401 and err["status"] == "ERROR"


async def test_finnhub_tick_history():
    async with FinnhubSimulator(seed=1, rate=800, hours="always", warmup=0.2) as sim:
        streamed = await _stream(sim.url + "/?token=test", [{"type": "subscribe", "symbol": "NVDA"}], lambda t: True, 25,
                                 lambda: sim.faults.withhold_trades(2, "NVDA"))
        today = datetime.now(tz=UTC).strftime("%Y-%m-%d")
        status, _, body = await http_get(f"{sim.rest_url}/api/v1/stock/tick?symbol=NVDA&date={today}&limit=100000&token=test")
        assert status == 200 and body["count"] == body["total"] == len(body["t"]) == len(body["x"])
        ticks = list(zip(body["t"], body["p"], body["v"], strict=True))
        streamed_ticks = [(t["t"], t["p"], t["v"]) for t in streamed]
        lo, hi = ticks.index(streamed_ticks[0]), ticks.index(streamed_ticks[-1])
        assert len(ticks[lo : hi + 1]) == len(streamed_ticks) + 2, "the two withheld prints are in the history"
        status, _, page = await http_get(f"{sim.rest_url}/api/v1/stock/tick?symbol=NVDA&date={today}&limit=5&skip=5&token=test")
        assert page["skip"] == 5 and page["count"] == 5 and page["t"] == body["t"][5:10]
