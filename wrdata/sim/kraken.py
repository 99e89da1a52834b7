"""Kraken spot market data over WebSocket API v2 on loopback, with REST AssetPairs, on one port.

Built from Kraken's documented protocol (``shared/providers/kraken.md`` sections 1-6:
"Spot WebSocket", "Book (Level 2)", "Book checksum (v2)", "Trades", "Ticker", "Candles
(OHLC)", "Ping", "Status", "Heartbeat"; REST "Get Tradable Asset Pairs"), not from
wrdata's client. Facts relied on:

* Path ``/v2`` (python-kraken-sdk appends it to its base URL). Right after connect a
  ``status`` update: ``{"channel":"status","data":[{"api_version":"v2","connection_id":
  <uint64>,"system":"online","version":"2.0.10"}],"type":"update"}``.
* Requests ``{"method":"subscribe"|"unsubscribe","params":{"channel","symbol":[...],..},
  "req_id"?}``; **one acknowledgement per symbol** with ``result`` (channel, symbol and
  the effective options), ``success``, ``time_in``/``time_out``, ``req_id`` echoed.
  Errors are flat with ``error``, ``success:false``, ``symbol``: ``Currency pair not
  supported <sym>`` (e.g. ``XBT/USD``), ``Already subscribed``, ``Subscription Not
  Found``; a bad request without ``method``/``params`` gets ``{"error":"...","success":
  false}``. ``{"method":"ping","req_id":n}`` → ``pong`` with ``time_in``/``time_out``.
* Data ``{"channel","type":"snapshot"|"update","data":[...]}``. Numbers are JSON numbers
  printed with the pair's fixed decimals, trailing zeros kept.
  ``trade``: taker ``side``, ``ord_type``, per-symbol consecutive ``trade_id``; snapshot
  only if asked (``snapshot:true``: the last 50). ``ticker``: ``event_trigger`` ``bbo``
  (every best bid/offer change) or ``trades`` (default), snapshot by default.
  ``ohlc``: intervals 1 5 15 30 60 240 1440 10080 21600, updates on trades only, a
  snapshot of recent bars, envelope ``timestamp`` in ns. ``book``: depth 10 25 100 500
  1000 (default 10); asks ascending, bids descending; updates carry absolute ``qty``,
  ``0`` for a level that was removed; levels pushed out of the subscribed depth are
  **not** deleted explicitly and levels that come into range are sent; every message has
  ``checksum`` (CRC32 of the top 10 asks then bids, formatted to precision, ``.`` and
  leading zeros removed) and a ``timestamp``.
* ``{"channel":"heartbeat"}`` about once a second when nothing else was sent, only while
  something is subscribed.
* REST ``GET /0/public/AssetPairs`` (``pair`` filter, comma-separated, in REST or
  ``wsname`` spelling): ``{"error":[],"result":{<name>:{"altname","wsname":"XBT/USD",
  "base","quote","pair_decimals","lot_decimals","cost_decimals","tick_size","status",
  "ordermin","costmin",...}}}``; the key is the REST name, or the pair as the request
  spelled it (python-kraken-sdk's order book reads ``result[<its pair>]``). Unknown:
  ``{"error":["EQuery:Unknown asset pair"]}``.
* REST ``GET /0/public/Trades?pair=&since=&count=`` ("Get Recent Trades", gap healing):
  ``{"error":[],"result":{<REST name>:[[price, volume, time (float s), "b"|"s", "m"|"l",
  misc, trade_id], ...],"last":"<ns>"}}``, oldest first after ``since`` (a cursor: the
  previous answer's ``last``), ``count`` ≤ 1000; withheld trades included.

Faults beyond the shared ones: :meth:`KrakenSimulator.corrupt_checksum` (the next book
messages carry a wrong checksum, as if the client had missed an update).

Not modelled: ``instrument``, ``level3`` and private channels (an error reply), Cloudflare
connection-rate bans, the ~1 minute idle close.

Serving a recording (``wrdata replay serve kraken``, a
:class:`~wrdata.sim.server.FrameFeed`): :meth:`KrakenSimulator.publish_recorded` sends
each recorded ``trade``, ``ticker``, ``ohlc`` and ``book`` message, byte for byte (the
envelope holds no per-connection state; snapshots below), to the connections subscribed to its channel
and to any of its symbols: ``ohlc`` to the subscribers of its ``interval``, ``ticker`` to
those of either ``event_trigger`` (a message does not say which one produced it), and
``book`` to the subscribers at the depth the recording was made at (learned from the
recorded subscription acknowledgement, else from the size of the snapshot): a book kept
at another depth would drift from the recorded checksums, so those get no book data.
Recorded ``status``, ``heartbeat`` and method replies (acks, pongs) are not served: the
simulator answers its own clients and sends them heartbeats on the wall clock.

Snapshots: Kraken sends one per subscription, first, and a trade snapshot only when asked
(``snapshot:true``). A recorded snapshot goes as recorded to a subscription that asked for
one and has had none yet (one made before the recording reached it). The recording also
holds snapshots that answered the *recording* connection's later subscriptions (after a
reconnect, a checksum resync); a serving subscription that has had its snapshot (or did
not ask for one) gets each as the update it amounts to: for ``book``, the levels that
differ from the book as served so far (removed ones at quantity zero, printed with the
pair's decimals) with the snapshot's checksum and timestamp, which the client's book then
matches; for ``trade``, the trades newer than those served (none: nothing is sent); for
``ohlc``, the bars from the latest one served on; for ``ticker``, the same data with
``type`` ``update``. A book subscription made while the recording plays gets a snapshot
of the book as recorded so far (prices and quantities as recorded, the checksum computed
on those texts, the last recorded book ``timestamp``): that is how a client resynchronises
after a recorded checksum failure. No other snapshot is made up. Pairs are those of the
recorded AssetPairs (which also answers the SDK's ``?pair=`` requests), or any pair when
none was recorded.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
import zlib
from collections.abc import Sequence
from typing import Any

import msgspec

from .faults import Faults
from .market import NS, BarBuilder, MarketEvent, SymbolSpec, SyntheticMarket, Trade
from .server import Feed, MarketFeed, RecordedFrame, RestRequest, RestResponse, SimConnection, SimServer, json_response

__all__ = ["KrakenSimulator", "DEFAULT_PAIRS"]

log = logging.getLogger(__name__)

DEFAULT_PAIRS: tuple[SymbolSpec, ...] = (
    SymbolSpec("BTC/USD", 65000.0, "0.1", "0.00000001", first_trade_id=75_000_000, mean_qty=0.02, volatility=0.006, weight=4,
               base_asset="XXBT", quote_asset="ZUSD"),
    SymbolSpec("ETH/USD", 3200.0, "0.01", "0.00000001", first_trade_id=42_000_000, mean_qty=0.5, volatility=0.008, weight=3,
               base_asset="XETH", quote_asset="ZUSD"),
    SymbolSpec("SOL/USD", 150.0, "0.01", "0.00000001", first_trade_id=9_000_000, mean_qty=5.0, volatility=0.01, weight=2,
               base_asset="SOL", quote_asset="ZUSD"),
    SymbolSpec("DOGE/USD", 0.12, "0.0000001", "0.00000001", first_trade_id=11_000_000, mean_qty=900.0, volatility=0.01,
               weight=1, base_asset="XXDG", quote_asset="ZUSD"),
)
DEPTHS = (10, 25, 100, 500, 1000)
OHLC = {1: "1m", 5: "5m", 15: "15m", 30: "30m", 60: "1h", 240: "4h", 1440: "1d", 10080: "1w", 21600: "15d"}
_V1 = {"BTC": "XBT", "DOGE": "XDG"}
_V2 = {v: k for k, v in _V1.items()}
_conn_ids = itertools.count(18266300427528990701)


# -- recorded messages (replay): what routing and the recorded book need ---------------------------

class _RecRow(msgspec.Struct):
    symbol: str | None = None
    interval: int | None = None
    trade_id: int | None = None
    interval_begin: str | None = None


class _RecResult(msgspec.Struct):
    channel: str | None = None
    symbol: str | None = None
    depth: int | None = None


class _RecMsg(msgspec.Struct):
    channel: str | None = None
    type: str | None = None
    method: str | None = None
    success: bool | None = None
    result: _RecResult | None = None
    timestamp: str | None = None
    data: list[_RecRow] = []


class _RecRaw(msgspec.Struct):
    data: list[msgspec.Raw] = []  # each row's exact bytes


class _RecLevel(msgspec.Struct):
    price: msgspec.Raw  # the number's exact text
    qty: msgspec.Raw


class _RecBook(msgspec.Struct):
    symbol: str
    bids: list[_RecLevel] = []
    asks: list[_RecLevel] = []
    checksum: int | None = None
    timestamp: str | None = None


class _RecBookMsg(msgspec.Struct):
    data: list[_RecBook] = []


_recorded = msgspec.json.Decoder(_RecMsg).decode
_recorded_rows = msgspec.json.Decoder(_RecRaw).decode
_recorded_book = msgspec.json.Decoder(_RecBookMsg).decode


class _RecordedBook:
    """A book as the recording tells it: {price text: qty text} per side, kept to ``depth``."""

    __slots__ = ("depth", "bids", "asks", "timestamp")

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.bids: dict[str, str] = {}
        self.asks: dict[str, str] = {}
        self.timestamp: str | None = None

    def apply(self, d: _RecBook, snapshot: bool) -> None:
        if snapshot:
            self.bids, self.asks = {}, {}
        for side, levels, best_first in ((self.bids, d.bids, True), (self.asks, d.asks, False)):
            for lv in levels:
                p, q = bytes(lv.price).decode(), bytes(lv.qty).decode()
                if float(q) == 0.0:
                    side.pop(p, None)
                else:
                    side[p] = q
            if len(side) > self.depth:  # pushed out of the subscribed depth: gone without a delete
                for p in sorted(side, key=float, reverse=best_first)[self.depth :]:
                    del side[p]
        if d.timestamp:
            self.timestamp = d.timestamp

    def top(self, n: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        bids = sorted(self.bids.items(), key=lambda kv: float(kv[0]), reverse=True)[:n]
        asks = sorted(self.asks.items(), key=lambda kv: float(kv[0]))[:n]
        return bids, asks

    def changes_from(self, bids: dict[str, str], asks: dict[str, str]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """What turns a book of ``bids``/``asks`` into this one: changed levels, and removed
        ones at quantity zero (printed with the quantities' decimals)."""
        out = []
        for now, before in ((self.bids, bids), (self.asks, asks)):
            zero = _zero_like(next(iter(now.values()), None) or next(iter(before.values()), "0"))
            out.append([(p, zero) for p in before if p not in now] + [(p, q) for p, q in now.items() if before.get(p) != q])
        return out[0], out[1]


def _zero_like(qty: str) -> str:
    """``0`` printed like ``qty`` (``0.00000000`` for ``0.01223614``)."""
    _, dot, frac = qty.partition(".")
    return "0" + dot + "0" * len(frac)


def _levels_json(side: list[tuple[str, str]]) -> str:
    return "[" + ",".join(f'{{"price":{p},"qty":{q}}}' for p, q in side) + "]"


def _text_checksum(asks: list[tuple[str, str]], bids: list[tuple[str, str]]) -> int:
    """Kraken's CRC32 on the printed numbers: top 10 asks then bids, ``.`` and leading zeros removed."""
    return zlib.crc32("".join(x.replace(".", "").lstrip("0") for lv in asks[:10] + bids[:10] for x in lv).encode())


def _rfc3339(ns: int, digits: int = 6) -> str:
    s, frac = divmod(ns, NS)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(s))}.{frac // 10 ** (9 - digits):0{digits}d}Z"


def _wsname(symbol: str) -> str:
    base, _, quote = symbol.partition("/")
    return f"{_V1.get(base, base)}/{_V1.get(quote, quote)}"


def default_pair(symbol: str) -> SymbolSpec:
    for s in DEFAULT_PAIRS:
        if s.symbol == symbol:
            return s
    h = zlib.crc32(symbol.encode())
    base, _, quote = symbol.partition("/")
    return SymbolSpec(symbol, round(1.0 + (h % 50_000) / 100.0, 2), "0.01", "0.00000001", first_trade_id=1 + h % 10_000_000,
                      mean_qty=5.0, base_asset=base, quote_asset=quote or "USD")


def checksum(spec: SymbolSpec, asks: list[tuple[int, int]], bids: list[tuple[int, int]]) -> int:
    """Kraken's v2 book CRC32 over the top 10 asks then bids, from ticks and lots (exact)."""
    parts = []
    for p, q in asks[:10] + bids[:10]:
        parts.append(spec.fmt_price(p).replace(".", "").lstrip("0"))
        parts.append(spec.fmt_qty(q).replace(".", "").lstrip("0"))
    return zlib.crc32("".join(parts).encode())


class _BookView:
    """What subscribers of one (symbol, depth) were last told: the top ``depth`` levels."""

    __slots__ = ("bids", "asks")

    def __init__(self) -> None:
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}


class KrakenSimulator(SimServer):
    """Kraken spot WebSocket v2 (public market data) plus REST AssetPairs over a seeded market.

    Parameters (durations in seconds): ``seed``, ``symbols`` (v2 names or
    :class:`SymbolSpec`; default BTC/USD ETH/USD SOL/USD DOGE/USD), ``rate``, ``market``,
    ``feed``, ``tick``, ``warmup``, ``heartbeat_interval`` (1), ``ohlc_snapshot`` (bars in
    an ohlc snapshot, 10), ``ping_interval`` (None: Kraken relies on the client's pings),
    ``faults``, ``host``, ``port``.
    """

    venue = "kraken"

    def __init__(
        self,
        *,
        seed: int = 0,
        symbols: Sequence[str | SymbolSpec] | None = None,
        rate: float = 200.0,
        market: SyntheticMarket | None = None,
        feed: Feed | None = None,
        tick: float = 0.005,
        warmup: float = 2.0,
        heartbeat_interval: float = 1.0,
        ohlc_snapshot: int = 10,
        ping_interval: float | None = None,
        pong_timeout: float | None = None,
        faults: Faults | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        if market is None:
            specs = [s if isinstance(s, SymbolSpec) else default_pair(s.upper()) for s in (symbols or [s.symbol for s in DEFAULT_PAIRS])]
            market = SyntheticMarket(seed, specs, rate)
        self.market = market
        if feed is None:
            feed = MarketFeed(market, tick=tick, warmup=warmup)
        super().__init__(host=host, port=port, feed=feed, faults=faults, ping_interval=ping_interval, pong_timeout=pong_timeout)
        self.heartbeat_ns = int(heartbeat_interval * NS)
        self.ohlc_snapshot = ohlc_snapshot
        self._views: dict[tuple[str, int], _BookView] = {}
        self._bars: dict[tuple[str, int], BarBuilder] = {}
        self._corrupt: dict[str | None, int] = {}
        self._next_heartbeat = 0
        self.heartbeat_interval = heartbeat_interval
        # serving a recording: the recorded book depth and book per symbol, the recorded AssetPairs
        self._rec_depth: dict[str, int] = {}
        self._rec_books: dict[str, _RecordedBook] = {}
        self._rec_last: dict[str, Any] = {}  # symbol -> last trade id served; "symbol:interval" -> last bar start
        self._rec_pairs: dict[str, Any] | None = None
        self._rec_pairs_body: tuple[bytes, int] | None = None
        self.route("/0/public/AssetPairs", self._r_asset_pairs)
        self.route("/0/public/Trades", self._r_trades)

    @staticmethod
    def cli_options() -> list:
        import click

        return [
            click.Option(["--heartbeat-interval"], type=float, default=1.0, show_default=True, help="Seconds between heartbeats."),
            click.Option(["--warmup"], type=float, default=2.0, show_default=True, help="Market seconds generated before start."),
        ]

    # -- faults -----------------------------------------------------------------------------------------
    def corrupt_checksum(self, n: int = 1, symbol: str | None = None) -> None:
        """The next ``n`` book messages (of ``symbol``, or of any symbol) carry a wrong checksum."""
        self._corrupt[symbol] = self._corrupt.get(symbol, 0) + n

    def _take_corrupt(self, symbol: str) -> bool:
        for key in (symbol, None):
            left = self._corrupt.get(key)
            if left:
                if left == 1:
                    del self._corrupt[key]
                else:
                    self._corrupt[key] = left - 1
                return True
        return False

    # -- connections and requests ------------------------------------------------------------------------
    def ws_path_ok(self, path: str, params: dict[str, str]) -> int | None:
        return None if path in ("/v2", "/v2/") else 404

    @property
    def replaying(self) -> bool:
        """Serving a recording (a :class:`~wrdata.sim.server.FrameFeed`), not the synthetic market."""
        return not isinstance(self.feed, MarketFeed)

    async def serve_connection(self, conn: SimConnection) -> None:
        conn.props["last_sent"] = 0
        status = {"channel": "status", "data": [{"api_version": "v2", "connection_id": next(_conn_ids), "system": "online",
                                                 "version": "2.0.10"}], "type": "update"}
        conn.send(json.dumps(status, separators=(",", ":")).encode())
        beat = asyncio.create_task(self._heartbeats(conn)) if self.replaying and self.heartbeat_ns else None
        try:
            async for msg in conn:
                if conn.closing:
                    break
                self.control(conn, msg)
        finally:
            if beat is not None:
                beat.cancel()

    async def _heartbeats(self, conn: SimConnection) -> None:
        """While serving a recording: a heartbeat when nothing else was sent for a while (wall clock)."""
        while not conn.closing:
            last = conn.sent
            await asyncio.sleep(self.heartbeat_interval)
            if conn.subscriptions and conn.sent == last:
                conn.send(b'{"channel":"heartbeat"}')

    def _known(self, sym: str) -> bool:
        if not self.replaying:
            return sym in self.market.specs
        # a recording: the pairs it listed, else whatever is asked (the recording has what it has)
        return self._rec_pairs is None or sym in self._rec_pairs

    def _reply(self, conn: SimConnection, obj: dict[str, Any]) -> None:
        conn.send(json.dumps(obj, separators=(",", ":")).encode())

    def control(self, conn: SimConnection, msg: str | bytes) -> None:
        t_in = _rfc3339(time.time_ns())
        try:
            req = json.loads(msg)
        except (ValueError, UnicodeDecodeError):
            return self._reply(conn, {"error": "Malformed request", "success": False, "time_in": t_in, "time_out": t_in})
        if not isinstance(req, dict) or not isinstance(req.get("method"), str):
            return self._reply(conn, {"error": "Malformed request", "success": False, "time_in": t_in, "time_out": t_in})
        method, rid = req["method"], req.get("req_id")
        base: dict[str, Any] = {"method": method}

        def done(obj: dict[str, Any]) -> None:
            obj.setdefault("time_in", t_in)
            obj["time_out"] = _rfc3339(time.time_ns())
            if rid is not None:
                obj["req_id"] = rid
            self._reply(conn, obj)

        if method == "ping":
            conn.props["pings"] = conn.props.get("pings", 0) + 1
            return done({"method": "pong"})
        if method not in ("subscribe", "unsubscribe"):
            return done({**base, "error": f"Method not found: {method}", "success": False})
        params = req.get("params")
        if not isinstance(params, dict) or not isinstance(params.get("channel"), str):
            return done({**base, "error": "Invalid params", "success": False})
        channel = params["channel"]
        if channel not in ("trade", "ticker", "ohlc", "book"):
            return done({**base, "error": f"Channel not supported: {channel}", "success": False})
        symbols = params.get("symbol")
        if not isinstance(symbols, list) or not symbols or not all(isinstance(s, str) for s in symbols):
            return done({**base, "error": "Invalid params: symbol", "success": False})
        opts, stream_opt, err = self._options(channel, params)
        if err:
            return done({**base, "error": err, "success": False})
        for sym in symbols:
            if not self._known(sym):
                done({**base, "error": f"Currency pair not supported {sym}", "success": False, "symbol": sym})
                continue
            stream = f"{channel}:{sym}:{stream_opt}"
            if method == "subscribe":
                # one subscription per channel and symbol; ohlc intervals are separate subscriptions
                taken = stream in conn.subscriptions if channel == "ohlc" else any(
                    s.startswith(f"{channel}:{sym}:") for s in conn.subscriptions)
                if taken:
                    done({**base, "error": "Already subscribed", "success": False, "symbol": sym})
                    continue
                conn.subscribe(stream)
                if opts.get("snapshot"):
                    conn.props.setdefault("snapshot_wanted", set()).add(stream)
                done({**base, "result": {"channel": channel, **opts, "symbol": sym}, "success": True})
                self._snapshot(conn, channel, sym, stream_opt, params)
            else:
                if stream not in conn.subscriptions:
                    done({**base, "error": "Subscription Not Found", "success": False, "symbol": sym})
                    continue
                conn.unsubscribe(stream)
                conn.props.get("snapshot_wanted", set()).discard(stream)
                conn.props.get("snapshot_had", set()).discard(stream)
                done({**base, "result": {"channel": channel, **opts, "symbol": sym}, "success": True})

    def _options(self, channel: str, params: dict[str, Any]) -> tuple[dict[str, Any], Any, str | None]:
        if channel == "book":
            depth = params.get("depth", 10)
            if depth not in DEPTHS:
                return {}, None, f"Invalid depth: {depth} (10, 25, 100, 500, 1000)"
            return {"depth": depth, "snapshot": params.get("snapshot", True)}, depth, None
        if channel == "ohlc":
            iv = params.get("interval")
            if iv not in OHLC:
                return {}, None, f"Invalid interval: {iv}"
            return {"interval": iv, "snapshot": params.get("snapshot", True),
                    "warnings": ["timestamp is deprecated, use interval_begin"]}, iv, None
        if channel == "ticker":
            trig = params.get("event_trigger", "trades")
            if trig not in ("trades", "bbo"):
                return {}, None, f"Invalid event_trigger: {trig}"
            return {"event_trigger": trig, "snapshot": params.get("snapshot", True)}, trig, None
        return {"snapshot": params.get("snapshot", False)}, "", None

    # -- encoding (exact decimals) -------------------------------------------------------------------------
    @staticmethod
    def _levels(spec: SymbolSpec, levels: list[tuple[int, int]]) -> str:
        return "[" + ",".join(f'{{"price":{spec.fmt_price(p)},"qty":{spec.fmt_qty(q)}}}' for p, q in levels) + "]"

    def _trade_json(self, spec: SymbolSpec, t: Trade) -> str:
        return (f'{{"symbol":"{spec.symbol}","side":"{t.side}","price":{spec.fmt_price(t.price)},"qty":{spec.fmt_qty(t.qty)},'
                f'"ord_type":"{"market" if t.qty % 2 else "limit"}","trade_id":{t.trade_id},"timestamp":"{_rfc3339(t.ts_ns)}"}}')

    def _ticker_json(self, spec: SymbolSpec, now: int) -> str:
        bid, bq, ask, aq = self.market.book(spec.symbol).best()
        last = self.market.last_price(spec.symbol) or bid
        return (f'{{"symbol":"{spec.symbol}","bid":{spec.fmt_price(bid)},"bid_qty":{spec.fmt_qty(bq)},'
                f'"ask":{spec.fmt_price(ask)},"ask_qty":{spec.fmt_qty(aq)},"last":{spec.fmt_price(last)},'
                f'"volume":0.0,"vwap":{spec.fmt_price(last)},"low":{spec.fmt_price(last)},"high":{spec.fmt_price(last)},'
                f'"change":0.0,"change_pct":0.00,"timestamp":"{_rfc3339(now)}"}}')

    def _ohlc_json(self, spec: SymbolSpec, bar: Any, minutes: int) -> str:
        vwap = bar.quote_volume // bar.volume if bar.volume else bar.close
        return (f'{{"symbol":"{spec.symbol}","open":{spec.fmt_price(bar.open)},"high":{spec.fmt_price(bar.high)},'
                f'"low":{spec.fmt_price(bar.low)},"close":{spec.fmt_price(bar.close)},"trades":{bar.count},'
                f'"volume":{spec.fmt_qty(bar.volume)},"vwap":{spec.fmt_price(vwap)},'
                f'"interval_begin":"{_rfc3339(bar.open_ns, 9)}","interval":{minutes},"timestamp":"{_rfc3339(bar.close_ns)}"}}')

    def _book_json(self, spec: SymbolSpec, typ: str, bids: list, asks: list, view: _BookView, depth: int, now: int) -> bytes:
        top_a = sorted(view.asks.items())[:10]
        top_b = sorted(view.bids.items(), reverse=True)[:10]
        crc = checksum(spec, top_a, top_b)
        if self._take_corrupt(spec.symbol):
            crc ^= 0x5A5A5A5A
        ts = f',"timestamp":"{_rfc3339(now)}"'
        return (f'{{"channel":"book","type":"{typ}","data":[{{"symbol":"{spec.symbol}","bids":{self._levels(spec, bids)},'
                f'"asks":{self._levels(spec, asks)},"checksum":{crc}{ts}}}]}}').encode()

    def _send(self, conn: SimConnection, payload: bytes, stream: str | None = None) -> None:
        conn.send(payload, stream)

    # -- snapshots ------------------------------------------------------------------------------------------
    def _snapshot(self, conn: SimConnection, channel: str, sym: str, opt: Any, params: dict[str, Any]) -> None:
        if self.replaying:
            if channel == "book" and params.get("snapshot", True):
                self._recorded_snapshot(conn, sym, opt)
            return
        spec = self.market.spec(sym)
        now = self.now_ns()
        stream = f"{channel}:{sym}:{opt}"
        if channel == "book":
            book = self.market.book(sym)
            bids, asks = book.bids(opt), book.asks(opt)
            view = self._views.get((sym, opt))
            if view is None:
                view = self._views[(sym, opt)] = _BookView()
                view.bids, view.asks = dict(bids), dict(asks)
            if params.get("snapshot", True):
                conn.send(self._book_json(spec, "snapshot", bids, asks, view, opt, now), stream)
        elif channel == "trade":
            if params.get("snapshot", False):
                rows = ",".join(self._trade_json(spec, t) for t in self.market.trades(sym)[-50:])
                conn.send(f'{{"channel":"trade","type":"snapshot","data":[{rows}]}}'.encode(), stream)
        elif channel == "ticker":
            if params.get("snapshot", True):
                conn.send(f'{{"channel":"ticker","type":"snapshot","data":[{self._ticker_json(spec, now)}]}}'.encode(), stream)
        elif channel == "ohlc":
            b = self._builder(sym, opt, now)
            if params.get("snapshot", True):
                iv = OHLC[opt]
                size = b.bar.close_ns - b.bar.open_ns
                bars = self.market.bars(sym, iv, start_ns=b.bar.open_ns - size * (self.ohlc_snapshot - 1), end_ns=b.bar.open_ns - 1,
                                        limit=self.ohlc_snapshot)
                rows = [self._ohlc_json(spec, x, opt) for x in bars if x.open is not None]
                if b.bar.open is not None:
                    rows.append(self._ohlc_json(spec, b.bar, opt))
                conn.send(f'{{"channel":"ohlc","type":"snapshot","timestamp":"{_rfc3339(now, 9)}","data":[{",".join(rows)}]}}'.encode(),
                          stream)

    def _builder(self, sym: str, minutes: int, now: int) -> BarBuilder:
        b = self._bars.get((sym, minutes))
        if b is None:
            iv = OHLC[minutes]
            b = self._bars[(sym, minutes)] = BarBuilder(sym, iv, self.market.last_price(sym))
            b.current(now)
            bars = self.market.bars(sym, iv, start_ns=b.bar.open_ns, end_ns=now, limit=1)
            if bars and bars[-1].open_ns == b.bar.open_ns:
                b.bar = bars[-1]
        return b

    # -- recorded messages (replay) ---------------------------------------------------------------------------
    def publish_recorded(self, frame: RecordedFrame) -> None:
        """Serve one recorded message to the subscribers of its channel and symbols (see the
        module docstring): exact bytes, but a snapshot for a connection that has had one."""
        payload = frame.payload
        try:
            msg = _recorded(payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("kraken: recorded frame is not a message: skipped")
            return
        ch = msg.channel
        if ch is None:
            r = msg.result
            if msg.method == "subscribe" and msg.success and r is not None and r.channel == "book" and r.symbol and r.depth:
                self._rec_depth[r.symbol] = r.depth  # the depth the recorded book messages are kept at
            return  # acks, pongs, errors: the simulator answers its own clients
        if ch == "book":
            return self._publish_book(payload, msg.type == "snapshot")
        streams: list[str] = []
        if ch == "trade":
            streams = [f"trade:{s}:" for s in dict.fromkeys(d.symbol for d in msg.data if d.symbol)]
        elif ch == "ticker":
            for s in dict.fromkeys(d.symbol for d in msg.data if d.symbol):
                streams += [f"ticker:{s}:bbo", f"ticker:{s}:trades"]
        elif ch == "ohlc":
            streams = list(dict.fromkeys(f"ohlc:{d.symbol}:{d.interval}" for d in msg.data if d.symbol))
        else:
            return  # status, heartbeat: the simulator's own
        conns: set[SimConnection] = set()
        for stream in streams:
            conns |= self.subscribers(stream)
        news: bytes | None = None
        if msg.type == "snapshot" and conns:
            news = self._as_update(ch, msg, payload)
        # what has been served, for the next snapshot's news
        for d in msg.data:
            if ch == "trade" and d.symbol and d.trade_id is not None:
                self._rec_last[d.symbol] = max(d.trade_id, self._rec_last.get(d.symbol, d.trade_id))
            elif ch == "ohlc" and d.symbol and d.interval_begin:
                key = f"{d.symbol}:{d.interval}"
                self._rec_last[key] = max(d.interval_begin, self._rec_last.get(key, ""))
        for conn in conns:
            if msg.type != "snapshot" or self._first_snapshot(conn, streams):
                conn.send(payload, streams[0])
            elif news is not None:
                conn.send(news, streams[0])
        self.sent_by_stream[streams[0]] += len(conns)

    @staticmethod
    def _first_snapshot(conn: SimConnection, streams: list[str]) -> bool:
        """Does ``conn`` get a recorded snapshot as it is? Only for a subscription that asked
        for one and has had none; it has had one after this."""
        mine = [s for s in streams if s in conn.subscriptions]
        wanted = conn.props.get("snapshot_wanted", set())
        had = conn.props.setdefault("snapshot_had", set())
        if any(s in wanted and s not in had for s in mine):
            had.update(mine)
            return True
        return False

    def _as_update(self, ch: str, msg: _RecMsg, payload: bytes) -> bytes | None:
        """A recorded snapshot as an update, for a connection that has had its snapshot: the
        trades newer than those served, the bars from the latest served on, the ticker as is."""
        if ch == "ticker":
            return payload.replace(b'"type":"snapshot"', b'"type":"update"', 1)
        try:
            rows = _recorded_rows(payload).data
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        keep = []
        for d, raw in zip(msg.data, rows, strict=False):
            if ch == "trade":
                last = self._rec_last.get(d.symbol or "")
                if last is None or (d.trade_id is not None and d.trade_id > last):
                    keep.append((d.trade_id or 0, bytes(raw)))
            elif d.interval_begin is not None and d.interval_begin >= self._rec_last.get(f"{d.symbol}:{d.interval}", ""):
                keep.append((0, bytes(raw)))
        if not keep:
            return None
        if ch == "trade":
            keep.sort(key=lambda x: x[0])  # oldest first, as updates come
        body = b",".join(r for _, r in keep)
        ts = f',"timestamp":"{msg.timestamp}"'.encode() if msg.timestamp else b""
        return b'{"channel":"' + ch.encode() + b'","type":"update"' + ts + b',"data":[' + body + b"]}"

    def _publish_book(self, payload: bytes, snapshot: bool) -> None:
        """Keep the recorded book and serve its message to the subscribers at the recorded depth;
        a snapshot goes as the update from the book they have to the snapshot's book to a
        connection that has had its snapshot (a subscription gets one snapshot from Kraken)."""
        try:
            books = _recorded_book(payload).data
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("kraken: recorded book message not understood: skipped")
            return
        for d in books:
            sym = d.symbol
            depth = self._rec_depth.get(sym)
            if depth is None and snapshot:
                # no acknowledgement recorded: the snapshot's size tells the depth
                n = max(len(d.bids), len(d.asks))
                depth = self._rec_depth[sym] = next((x for x in DEPTHS if x >= n), DEPTHS[-1])
            if depth is None:
                continue
            book = self._rec_books.get(sym)
            before: tuple[dict[str, str], dict[str, str]] | None = None
            if book is None or book.depth != depth:
                if not snapshot:
                    continue  # updates before the recording's first snapshot: no book to apply them to
                book = self._rec_books[sym] = _RecordedBook(depth)
            elif snapshot:
                before = (book.bids, book.asks)
            book.apply(d, snapshot)
            stream = f"book:{sym}:{depth}"
            conns = self.subscribers(stream)
            if not conns:
                continue
            news: bytes | None = None
            if before is not None:
                bids, asks = book.changes_from(*before)
                ts = f',"timestamp":"{d.timestamp}"' if d.timestamp else ""
                crc = d.checksum if d.checksum is not None else _text_checksum(*reversed(book.top(10)))
                news = (f'{{"channel":"book","type":"update","data":[{{"symbol":"{sym}","bids":{_levels_json(bids)},'
                        f'"asks":{_levels_json(asks)},"checksum":{crc}{ts}}}]}}').encode()
            own = payload if len(books) == 1 else self._book_entry(d, snapshot)
            for conn in list(conns):
                if not snapshot or self._first_snapshot(conn, [stream]) or before is None:
                    conn.send(own, stream)
                elif news is not None:
                    conn.send(news, stream)
            self.sent_by_stream[stream] += len(conns)

    def _book_entry(self, d: _RecBook, snapshot: bool) -> bytes:
        """One symbol's entry of a recorded book message that held several, as its own message."""
        levels = {side: [(bytes(lv.price).decode(), bytes(lv.qty).decode()) for lv in getattr(d, side)] for side in ("bids", "asks")}
        ts = f',"timestamp":"{d.timestamp}"' if d.timestamp else ""
        crc = f',"checksum":{d.checksum}' if d.checksum is not None else ""
        return (f'{{"channel":"book","type":"{"snapshot" if snapshot else "update"}","data":[{{"symbol":"{d.symbol}",'
                f'"bids":{_levels_json(levels["bids"])},"asks":{_levels_json(levels["asks"])}{crc}{ts}}}]}}').encode()

    def _recorded_snapshot(self, conn: SimConnection, sym: str, depth: int) -> None:
        book = self._rec_books.get(sym)
        if book is None:
            return
        if depth != book.depth:
            log.warning("kraken: %s was recorded at depth %d: a depth %d subscriber gets no book", sym, book.depth, depth)
            return
        bids, asks = book.top(depth)
        crc = _text_checksum(asks, bids)
        if self._take_corrupt(sym):
            crc ^= 0x5A5A5A5A
        ts = f',"timestamp":"{book.timestamp}"' if book.timestamp else ""
        stream = f"book:{sym}:{depth}"
        conn.props.setdefault("snapshot_had", set()).add(stream)
        conn.send((f'{{"channel":"book","type":"snapshot","data":[{{"symbol":"{sym}","bids":{_levels_json(bids)},'
                   f'"asks":{_levels_json(asks)},"checksum":{crc}{ts}}}]}}').encode(), stream)

    def set_rest_override(self, path: str, body: bytes | None, status: int = 200) -> None:
        """As the base class, but a recorded full AssetPairs list answers ``/0/public/AssetPairs``
        itself (as recorded), and ``?pair=`` requests from it (keyed as the request spells the pair)."""
        if path != "/0/public/AssetPairs":
            return super().set_rest_override(path, body, status)
        if body is None:
            self._rec_pairs = self._rec_pairs_body = None
            return
        self._rec_pairs_body = (body, status)
        try:
            result = json.loads(body).get("result") or {}
        except (ValueError, AttributeError):
            result = {}
        pairs: dict[str, Any] = {}
        for key, info in result.items():
            ws = info.get("wsname") if isinstance(info, dict) else None
            if ws:
                base, _, quote = ws.partition("/")
                v2 = f"{_V2.get(base, base)}/{_V2.get(quote, quote)}"
                pairs[v2] = (key, info)
        self._rec_pairs = pairs

    def _recorded_asset_pairs(self, req: RestRequest) -> RestResponse:
        assert self._rec_pairs_body is not None and self._rec_pairs is not None
        wanted = req.get("pair")
        if not wanted:
            body, status = self._rec_pairs_body
            return RestResponse(status, body)
        by_name: dict[str, Any] = {}
        for v2, (key, info) in self._rec_pairs.items():
            for name in (key, v2, info.get("wsname"), info.get("altname")):
                if name:
                    by_name[name] = info
        result = {}
        for name in wanted.split(","):
            info = by_name.get(name.strip())
            if info is None:
                return json_response({"error": ["EQuery:Unknown asset pair"]}, 400)
            result[name.strip()] = info
        return json_response({"error": [], "result": result})

    # -- the market -----------------------------------------------------------------------------------------
    def on_market_events(self, events: list[MarketEvent]) -> None:
        for e in events:
            sym = e.symbol
            spec = self.market.spec(sym)
            if e.trades:
                stream = f"trade:{sym}:"
                if self.has_subscribers(stream):
                    rows = [self._trade_json(spec, t) for t in e.trades if not self.faults.take_withheld(sym, t.trade_id)]
                    if rows:
                        self.publish(stream, f'{{"channel":"trade","type":"update","data":[{",".join(rows)}]}}'.encode())
                if self.has_subscribers(f"ticker:{sym}:trades"):
                    self.publish(f"ticker:{sym}:trades",
                                 f'{{"channel":"ticker","type":"update","data":[{self._ticker_json(spec, e.ts_ns)}]}}'.encode())
                for minutes in OHLC:
                    b = self._bars.get((sym, minutes))
                    if b is None:
                        continue
                    for t in e.trades:
                        b.add(t)
                    stream = f"ohlc:{sym}:{minutes}"
                    if self.has_subscribers(stream):
                        self.publish(stream, (f'{{"channel":"ohlc","type":"update","timestamp":"{_rfc3339(e.ts_ns, 9)}",'
                                              f'"data":[{self._ohlc_json(spec, b.bar, minutes)}]}}').encode())
            if e.bbo_changed and self.has_subscribers(f"ticker:{sym}:bbo"):
                self.publish(f"ticker:{sym}:bbo", f'{{"channel":"ticker","type":"update","data":[{self._ticker_json(spec, e.ts_ns)}]}}'.encode())
            if e.bids or e.asks:
                for depth in DEPTHS:
                    stream = f"book:{sym}:{depth}"
                    view = self._views.get((sym, depth))
                    if view is None:
                        continue
                    if not self.has_subscribers(stream):
                        del self._views[(sym, depth)]
                        continue
                    self._book_update(spec, view, depth, e, stream)

    def _book_update(self, spec: SymbolSpec, view: _BookView, depth: int, e: MarketEvent, stream: str) -> None:
        """Send what changed within the subscribed depth, as Kraken does."""
        book = self.market.book(spec.symbol)
        out = []
        for side, new_levels, old in (("bids", book.bids(depth), view.bids), ("asks", book.asks(depth), view.asks)):
            new = dict(new_levels)
            changed = [(p, q) for p, q in new_levels if old.get(p) != q]
            full = book.bids() if side == "bids" else book.asks()
            alive = {p for p, _ in full}
            # levels that left the top: deleted at the venue -> qty 0; pushed out of range -> nothing
            removed = [(p, 0) for p in old if p not in new and p not in alive]
            if side == "bids":
                view.bids = new
            else:
                view.asks = new
            out.append(removed + changed)
        if out[0] or out[1]:
            self.publish(stream, self._book_json(spec, "update", out[0], out[1], view, depth, e.ts_ns))

    def on_clock(self, now_ns: int) -> None:
        if now_ns < self._next_heartbeat:
            return
        self._next_heartbeat = now_ns + self.heartbeat_ns
        for conn in list(self.connections):
            if conn.subscriptions and conn.sent == conn.props.get("last_sent", -1):
                conn.send(b'{"channel":"heartbeat"}')
            conn.props["last_sent"] = conn.sent

    # -- REST -----------------------------------------------------------------------------------------------
    def _pair_info(self, spec: SymbolSpec) -> dict[str, Any]:
        ws = _wsname(spec.symbol)
        return {
            "altname": ws.replace("/", ""), "wsname": ws, "aclass_base": "currency", "base": spec.base_asset,
            "aclass_quote": "currency", "quote": spec.quote_asset, "lot": "unit", "cost_decimals": 5,
            "pair_decimals": spec.price_decimals, "lot_decimals": spec.qty_decimals, "lot_multiplier": 1,
            "leverage_buy": [], "leverage_sell": [], "fees": [], "fees_maker": [], "fee_volume_currency": "ZUSD",
            "margin_call": 80, "margin_stop": 40, "ordermin": spec.lot_size, "costmin": "0.5", "tick_size": spec.tick_size,
            "status": "online",
        }

    def _r_asset_pairs(self, req: RestRequest) -> RestResponse:
        if self._rec_pairs_body is not None:
            return self._recorded_asset_pairs(req)
        by_name: dict[str, SymbolSpec] = {}
        for spec in self.market.specs.values():
            ws = _wsname(spec.symbol)
            for name in (spec.symbol, ws, ws.replace("/", ""), spec.base_asset + spec.quote_asset):
                by_name[name] = spec
        wanted = req.get("pair")
        if not wanted:
            return json_response({"error": [], "result": {s.base_asset + s.quote_asset: self._pair_info(s) for s in self.market.specs.values()}})
        result = {}
        for name in wanted.split(","):
            spec = by_name.get(name.strip())
            if spec is None:
                return json_response({"error": ["EQuery:Unknown asset pair"]}, 400)
            result[name.strip()] = self._pair_info(spec)
        return json_response({"error": [], "result": result})

    def _r_trades(self, req: RestRequest) -> RestResponse:
        """Get Recent Trades: retained trades after ``since`` (a ns timestamp, or seconds;
        exclusive), at most ``count`` (1..1000, default 1000; ``page_limit`` shortens it),
        oldest first, rows ``[price, volume, time (float s), b|s, m|l, misc, trade_id]``
        under the pair's REST name, and ``last`` (ns, string) to pass as the next ``since``."""
        spec = self._pair(req.get("pair"))
        if spec is None:
            return json_response({"error": ["EQuery:Unknown asset pair"]}, 400)
        since, count = req.get("since"), req.get("count")
        try:
            after = None if not since else (int(since) if since.isdigit() and len(since) > 12 else int(float(since) * NS))
            n = 1000 if not count else int(count)
        except ValueError:
            return json_response({"error": ["EGeneral:Invalid arguments"]}, 400)
        if not 1 <= n <= 1000:
            return json_response({"error": ["EGeneral:Invalid arguments:count"]}, 400)
        trades = self.market.trades_in(spec.symbol, None if after is None else after + 1)[: self.faults.clip_page(n)]
        rows = [
            f'["{spec.fmt_price(t.price)}","{spec.fmt_qty(t.qty)}",{t.ts_ns // 1000 / 1e6!r},"{"s" if t.buyer_maker else "b"}",'
            f'"{"m" if t.qty % 2 else "l"}","",{t.trade_id}]'
            for t in trades
        ]
        last = trades[-1].ts_ns if trades else (after or 0)
        body = f'{{"error":[],"result":{{"{spec.base_asset}{spec.quote_asset}":[{",".join(rows)}],"last":"{last}"}}}}'
        return RestResponse(200, body.encode())

    def _pair(self, name: str | None) -> SymbolSpec | None:
        for spec in self.market.specs.values():
            ws = _wsname(spec.symbol)
            if name in (spec.symbol, ws, ws.replace("/", ""), spec.base_asset + spec.quote_asset):
                return spec
        return None

    def rest_error(self, status: int, kind: str, retry_after: int | None = None) -> RestResponse:
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        text = {429: "EAPI:Rate limit exceeded", 404: "EGeneral:Unknown method"}.get(status, "EService:Unavailable")
        return json_response({"error": [text]}, status, headers)
