"""Coinbase Advanced Trade market data on loopback: the WebSocket feed and the public
products REST endpoints, on one port.

Built from Coinbase's documented protocol (``shared/providers/coinbase.md`` sections 2-6:
"Advanced Trade WebSocket Channels", "WebSocket Overview", "Rate Limits", the AsyncAPI
file), not from wrdata's client. Facts relied on:

* One endpoint, the bare host (path ``/``); every channel on one connection. A client
  that has not subscribed within ``subscribe_timeout`` (5 s) is disconnected.
* Control: ``{"type":"subscribe"|"unsubscribe","product_ids":[...],"channel":...,
  "jwt"?:...}``, one channel per message; ``heartbeats`` needs no products. Each
  subscribe/unsubscribe is answered with a ``subscriptions`` message holding the whole
  current set per channel; unknown products are left out of it (observed behaviour, not
  documented). Errors are flat: ``{"type":"error","message":"authentication failure"}``
  (private channel without a valid JWT, unknown channel), ``"failure to subscribe"``
  (malformed request), ``"too many L2 streams requested in a single session"`` (more
  than ``max_level2`` ``level2`` products on one connection).
* JWT: optional on public channels. With ``jwt_keys={kid: public key PEM}`` every JWT is
  verified (ES256 or EdDSA, ``kid`` known, ``iss`` ``cdp``, ``sub`` = ``kid``, not
  expired); without, any JWT is accepted and public channels need none.
* Envelope ``{"channel","client_id":"","timestamp","sequence_num","events"}`` with
  ``sequence_num`` counting every message of the connection from 0 (all channels).
  ``client_id`` is sent (empty) because coinbase-advanced-py requires it, although
  production omits it (``client_id=False`` omits it too).
* ``heartbeats`` every ``heartbeat_interval`` (1 s) with an increasing counter and a Go
  time string; ``market_trades`` snapshot of the last ``trades_snapshot`` trades (newest
  first), then updates batched every ``trade_batch_interval`` (250 ms), ``side`` = the
  maker's side; ``ticker`` on every trade event (snapshot first) with best bid/ask;
  ``candles`` 5-minute bars, ``start`` as a Unix-seconds string, pushed every
  ``candle_push_interval`` (1 s); ``level2`` → ``l2_data`` full-depth snapshot then
  updates (``bid``/``offer``, absolute ``new_quantity``, ``"0"`` deletes), per product.
* REST: ``GET /api/v3/brokerage/market/products`` (``product_ids`` filter, ``limit``) and
  ``/api/v3/brokerage/market/products/<id>``; unknown product: 404
  ``{"error":"NOT_FOUND","message":"...","error_details":"..."}``. Trade history (gap
  healing): ``/api/v3/brokerage/market/products/<id>/ticker?limit=&start=&end=`` ("Get
  Public Market Trades"): the last ``limit`` retained trades inside the window (UNIX
  seconds), newest first, no cursor; withheld trades included; ``page_limit`` shortens it.

Faults beyond the shared ones: :meth:`CoinbaseSimulator.skip_sequence` loses messages
(the ``sequence_num`` jumps, as when Coinbase drops a message for a slow client).

Not modelled: ``status``/``ticker_batch``/``user`` data (accepted, acknowledged, silent),
the 8 connections and 8 messages per second per IP limits, 60-90 s idle closes.

Serving a recording (``wrdata replay serve coinbase``, a
:class:`~wrdata.sim.server.FrameFeed`): :meth:`CoinbaseSimulator.publish_recorded` sends
each recorded ``market_trades``, ``ticker``, ``ticker_batch``, ``candles`` and
``l2_data`` message to the connections subscribed to its channel and to any of its
products, byte for byte but for one field: ``sequence_num`` counts the messages of *one
connection*, so the recorded number (the recording connection's count) is replaced by the
serving connection's own next number, digits only, every other byte as recorded. Where
the recording's numbers jump (the venue lost messages for the recording connection), the
numbers of the serving connections that get the next message served from that recording
connection jump by as much, so their clients learn of the loss as the recording client
did (and resynchronise their books); the recording connection's id comes with each frame
(``RecordedFrame.conn``), and frames without one count as one connection. A message naming
several products goes whole to a connection subscribed to any of them. Recorded
``subscriptions`` acks, ``heartbeats`` and ``status`` messages are not served: the
simulator answers its own clients' subscriptions and sends them heartbeats (every
``heartbeat_interval`` on the wall clock).

Snapshots: Coinbase sends one per subscription, first. A recorded snapshot goes as
recorded to a subscription that has had none yet (one made before the recording reached
it). The recording also holds snapshots that answered the *recording* connection's later
subscriptions (after a reconnect, a book resync); a serving subscription that has had its
snapshot gets each of them as the update it amounts to, in the recorded envelope: for
``level2``, the levels that differ from the book as served so far (removed ones at
quantity zero); for ``market_trades``, the trades newer than those served (oldest first;
none: nothing is sent); for ``ticker`` and ``candles``, the same event with ``type``
``update``. So a client that keeps its own book from the updates stays right, as it would
have against the venue. A subscription made while the recording plays gets a ``level2``
snapshot of the book as recorded so far (levels, quantities and ``event_time`` as recorded,
``timestamp`` of the last recorded book message); no other snapshot is made up. Products
are those of the recorded products list (REST), or any product when none was recorded.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import msgspec

from .faults import Faults
from .market import NS, BarBuilder, MarketEvent, SymbolSpec, SyntheticMarket, Trade
from .server import (
    Feed,
    MarketFeed,
    RecordedFrame,
    RestError,
    RestRequest,
    RestResponse,
    SimConnection,
    SimServer,
    json_response,
)

__all__ = ["CoinbaseSimulator", "DEFAULT_PRODUCTS"]

log = logging.getLogger(__name__)

DEFAULT_PRODUCTS: tuple[SymbolSpec, ...] = (
    SymbolSpec(
        "BTC-USD",
        65000.0,
        "0.01",
        "0.00000001",
        first_trade_id=995_098_700,
        mean_qty=0.02,
        volatility=0.006,
        weight=4,
        base_asset="BTC",
        quote_asset="USD",
    ),
    SymbolSpec(
        "ETH-USD",
        3200.0,
        "0.01",
        "0.00000001",
        first_trade_id=846_149_798,
        mean_qty=0.5,
        volatility=0.008,
        weight=3,
        base_asset="ETH",
        quote_asset="USD",
    ),
    SymbolSpec(
        "SOL-USD",
        150.0,
        "0.01",
        "0.00000001",
        first_trade_id=210_000_000,
        mean_qty=5.0,
        volatility=0.01,
        weight=2,
        base_asset="SOL",
        quote_asset="USD",
    ),
)
CHANNELS = (
    "heartbeats",
    "candles",
    "status",
    "ticker",
    "ticker_batch",
    "level2",
    "market_trades",
    "user",
    "futures_balance_summary",
)
_PRIVATE = ("user", "futures_balance_summary")
_WIRE = {"level2": "l2_data"}  # channel subscribed -> channel name on data messages


# -- recorded messages (replay): what routing and the recorded book need ---------------------------

class _RecItem(msgspec.Struct):
    product_id: str | None = None
    trade_id: str | None = None


class _RecLevel(msgspec.Struct):
    side: str
    price_level: str
    new_quantity: str
    event_time: str = ""


class _RecEvent(msgspec.Struct):
    type: str | None = None
    product_id: str | None = None
    trades: list[_RecItem] = []
    tickers: list[_RecItem] = []
    candles: list[_RecItem] = []
    updates: list[_RecLevel] = []


class _RecMsg(msgspec.Struct):
    channel: str | None = None
    timestamp: str = ""
    sequence_num: int | None = None
    events: list[_RecEvent] = []


_recorded = msgspec.json.Decoder(_RecMsg).decode
#: channel on a recorded data message -> the channel its clients subscribed to
_SUBSCRIBED = {"market_trades": "market_trades", "ticker": "ticker", "ticker_batch": "ticker_batch", "candles": "candles",
               "l2_data": "level2"}
_SEQ_KEY = b'"sequence_num":'


def _zero_like(qty: str) -> str:
    """``0`` printed like ``qty`` (``0.00000000`` for ``0.01223614``)."""
    _, dot, frac = qty.partition(".")
    return "0" + dot + "0" * len(frac)


def _rfc3339(ns: int, digits: int = 6) -> str:
    s, frac = divmod(ns, NS)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s))
    return f"{base}.{frac // 10 ** (9 - digits):0{digits}d}Z"


def _go_time(ns: int, uptime_ns: int) -> str:
    s, frac = divmod(ns, NS)
    return f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(s))}.{frac:09d} +0000 UTC m=+{uptime_ns / NS:.9f}"


def default_product(product: str) -> SymbolSpec:
    for s in DEFAULT_PRODUCTS:
        if s.symbol == product:
            return s
    import zlib

    h = zlib.crc32(product.encode())
    base, _, quote = product.partition("-")
    return SymbolSpec(
        product,
        round(1.0 + (h % 50_000) / 100.0, 2),
        "0.01",
        "0.00000001",
        first_trade_id=1 + h % 10_000_000,
        mean_qty=5.0,
        base_asset=base,
        quote_asset=quote or "USD",
    )


class CoinbaseSimulator(SimServer):
    """Coinbase Advanced Trade market data (WebSocket + products REST) over a seeded market.

    Parameters (durations in seconds): ``seed``, ``symbols`` (product ids or
    :class:`SymbolSpec`; default BTC-USD ETH-USD SOL-USD), ``rate``, ``market``, ``feed``,
    ``tick``, ``warmup``, ``heartbeat_interval`` (1), ``trade_batch_interval`` (0.25),
    ``candle_push_interval`` (1), ``subscribe_timeout`` (5), ``max_level2`` (16 products
    per connection), ``trades_snapshot`` (50), ``jwt_keys``, ``client_id`` (True),
    ``ping_interval`` (None: Coinbase sends no protocol pings), ``faults``, ``host``, ``port``.
    """

    venue = "coinbase"
    #: rows per market-trades answer at most (the docs give no maximum; clients ask up to 1000)
    max_trades_page = 1000

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
        trade_batch_interval: float = 0.25,
        candle_push_interval: float = 1.0,
        subscribe_timeout: float | None = 5.0,
        max_level2: int = 16,
        trades_snapshot: int = 50,
        jwt_keys: dict[str, str] | None = None,
        client_id: bool = True,
        ping_interval: float | None = None,
        pong_timeout: float | None = None,
        faults: Faults | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        if market is None:
            specs = [
                s if isinstance(s, SymbolSpec) else default_product(s.upper())
                for s in (symbols or [s.symbol for s in DEFAULT_PRODUCTS])
            ]
            market = SyntheticMarket(seed, specs, rate)
        self.market = market
        if feed is None:
            feed = MarketFeed(market, tick=tick, warmup=warmup)
        super().__init__(
            host=host,
            port=port,
            feed=feed,
            faults=faults,
            ping_interval=ping_interval,
            pong_timeout=pong_timeout,
            max_size=1 << 20,
        )
        self.heartbeat_ns = int(heartbeat_interval * NS)
        self.trade_batch_ns = int(trade_batch_interval * NS)
        self.candle_push_ns = int(candle_push_interval * NS)
        self.subscribe_timeout = subscribe_timeout
        self.max_level2 = max_level2
        self.trades_snapshot = trades_snapshot
        self.client_id = client_id
        self._jwt_keys = {k: self._load_public_key(v) for k, v in (jwt_keys or {}).items()}
        self._trades: dict[str, list[Trade]] = {}  # product -> trades not yet pushed (a 250 ms batch)
        self._l2: dict[str, dict[tuple[str, int], int]] = {}  # product -> {(side, price): lots} changed
        self._candles: dict[str, BarBuilder] = {}
        self._stats: dict[str, list[int]] = {}  # product -> [low, high, volume lots] since start
        self._next_batch = 0
        self._next_candles = 0
        self._next_heartbeat = 0
        self._started = time.monotonic_ns()
        self.heartbeat_interval = heartbeat_interval
        # serving a recording: each recorded connection's last sequence_num, the books as
        # recorded (product -> (bids, offers) as {price text: (quantity text, event_time)},
        # last timestamp), the newest trade served per product, the recorded products
        self._rec_seq: dict[int | None, int] = {}
        self._rec_lost: dict[int | None, int] = {}  # messages lost, not yet shown to a client
        self._rec_books: dict[str, tuple[dict[str, tuple[str, str]], dict[str, tuple[str, str]], str]] = {}
        self._rec_last_trade: dict[str, int] = {}  # product -> the newest trade id served
        self._rec_products: set[str] | None = None
        self.route("/api/v3/brokerage/market/products", self._r_products)
        for p in market.symbols:
            self.route(f"/api/v3/brokerage/market/products/{p}", self._r_product)
            self.route(f"/api/v3/brokerage/market/products/{p}/ticker", self._r_market_trades)

    @staticmethod
    def cli_options() -> list:
        import click

        return [
            click.Option(
                ["--heartbeat-interval"], type=float, default=1.0, show_default=True, help="Seconds between heartbeats."
            ),
            click.Option(["--max-level2"], type=int, default=16, show_default=True, help="level2 products per connection."),
            click.Option(["--warmup"], type=float, default=2.0, show_default=True, help="Market seconds generated before start."),
        ]

    # -- faults -----------------------------------------------------------------------------------
    def skip_sequence(self, n: int = 1, conn: SimConnection | None = None) -> None:
        """Lose the next ``n`` messages of ``conn`` (every connection when None): a jump in ``sequence_num``."""
        for c in [conn] if conn is not None else list(self.connections):
            c.props["skip"] = c.props.get("skip", 0) + n

    # -- framing -----------------------------------------------------------------------------------
    @property
    def replaying(self) -> bool:
        """Serving a recording (a :class:`~wrdata.sim.server.FrameFeed`), not the synthetic market."""
        return not isinstance(self.feed, MarketFeed)

    def _head(self, channel: str, now_ns: int) -> bytes:
        return self._head_at(channel, _rfc3339(now_ns, 9))

    def _head_at(self, channel: str, timestamp: str) -> bytes:
        cid = '"client_id":"",' if self.client_id else ""
        return f'{{"channel":"{channel}",{cid}"timestamp":"{timestamp}","sequence_num":'.encode()

    @staticmethod
    def _next_seq(conn: SimConnection) -> int:
        """The connection's next ``sequence_num`` (after any lost messages: ``skip``)."""
        n = conn.props.get("seq", 0)
        skip = conn.props.get("skip", 0)
        if skip:
            # a lost message: numbered, never delivered
            conn.props["skip"] = 0
            n += skip
        conn.props["seq"] = n + 1
        return n

    def _send(self, conn: SimConnection, head: bytes, tail: bytes, stream: str | None = None) -> None:
        conn.send(head + str(self._next_seq(conn)).encode() + b',"events":' + tail + b"}", stream)

    #: every message carries the connection's own ``sequence_num`` (``publish`` → ``frame_for``)
    per_connection_framing = True

    def frame_for(self, conn: SimConnection, stream: str, body: bytes) -> bytes:
        """``body`` (a whole message, e.g. a recorded one) with its ``sequence_num`` digits
        replaced by this connection's next number; every other byte unchanged."""
        at = body.find(_SEQ_KEY, 0, 512)
        if at < 0:
            return body
        end = at + len(_SEQ_KEY)
        while body[end : end + 1] == b" ":
            end += 1
        start = end
        while body[end : end + 1].isdigit():
            end += 1
        return body[:start] + str(self._next_seq(conn)).encode() + body[end:]

    def _emit(self, stream: str, channel: str, events: Any, now_ns: int) -> None:
        subs = self.subscribers(stream)
        if not subs:
            return
        head = self._head(channel, now_ns)
        tail = json.dumps(events, separators=(",", ":")).encode()
        for conn in list(subs):
            self._send(conn, head, tail, stream)
        self.sent_by_stream[stream] += len(subs)

    # -- connections -------------------------------------------------------------------------------
    def ws_path_ok(self, path: str, params: dict[str, str]) -> int | None:
        return None if path in ("", "/") else 404

    async def serve_connection(self, conn: SimConnection) -> None:
        conn.props.update(seq=0, subs={}, hb=0)
        tasks = []
        if self.subscribe_timeout:
            tasks.append(asyncio.create_task(self._subscribe_deadline(conn)))
        if self.replaying and self.heartbeat_interval:
            tasks.append(asyncio.create_task(self._heartbeats(conn)))  # the market clock does it otherwise
        try:
            async for msg in conn:
                if conn.closing:
                    break
                self.control(conn, msg)
        finally:
            for t in tasks:
                t.cancel()

    async def _heartbeats(self, conn: SimConnection) -> None:
        """Heartbeats of one connection on the wall clock (while serving a recording)."""
        while not conn.closing:
            await asyncio.sleep(self.heartbeat_interval)
            if "heartbeats" in conn.subscriptions:
                now = time.time_ns()
                head = self._head("heartbeats", now)
                conn.props["hb"] = conn.props.get("hb", 0) + 1
                ev = [{"current_time": _go_time(now, time.monotonic_ns() - self._started), "heartbeat_counter": conn.props["hb"]}]
                self._send(conn, head, json.dumps(ev, separators=(",", ":")).encode(), "heartbeats")

    async def _subscribe_deadline(self, conn: SimConnection) -> None:
        await asyncio.sleep(self.subscribe_timeout)
        if not conn.props["subs"] and not conn.closing:
            conn.close(1008, "subscribe timeout")

    def _error(self, conn: SimConnection, message: str) -> None:
        conn.send(json.dumps({"type": "error", "message": message}, separators=(",", ":")).encode())

    def control(self, conn: SimConnection, msg: str | bytes) -> None:
        try:
            req = json.loads(msg)
        except (ValueError, UnicodeDecodeError):
            return self._error(conn, "failure to subscribe")
        if not isinstance(req, dict) or req.get("type") not in ("subscribe", "unsubscribe"):
            return self._error(conn, "failure to subscribe")
        channel = req.get("channel")
        products = req.get("product_ids", [])
        conn.props.setdefault("requests", []).append((req["type"], channel, products))  # for tests and logs
        if not isinstance(channel, str) or not isinstance(products, list) or not all(isinstance(p, str) for p in products):
            return self._error(conn, "failure to subscribe")
        if channel not in CHANNELS:
            return self._error(conn, "authentication failure")  # what an unknown channel gets (a client's capture)
        token = req.get("jwt")
        if (token is not None or channel in _PRIVATE) and not self._jwt_ok(token, channel):
            return self._error(conn, "authentication failure")
        subs: dict[str, set[str]] = conn.props["subs"]
        now = self.now_ns()
        if req["type"] == "subscribe":
            if channel == "heartbeats":
                subs.setdefault("heartbeats", set()).add("heartbeats")
                conn.subscribe("heartbeats")
                return self._ack(conn, now)
            known = [p for p in dict.fromkeys(products) if self._known(p)]
            have = subs.setdefault(channel, set())
            if channel == "level2" and len(have | set(known)) > self.max_level2:
                return self._error(conn, "too many L2 streams requested in a single session")
            new = [p for p in known if p not in have]
            have.update(new)
            for p in new:
                conn.subscribe(f"{channel}:{p}")
                conn.props.setdefault("snapshot_wanted", set()).add(f"{channel}:{p}")  # every subscription gets one
            self._ack(conn, now)
            for p in new:
                self._snapshot(conn, channel, p, now)
        else:
            have = subs.get(channel, set())
            for p in products if channel != "heartbeats" else ["heartbeats"]:
                if p in have:
                    have.discard(p)
                    conn.unsubscribe(f"{channel}:{p}" if channel != "heartbeats" else "heartbeats")
                    for marks in (conn.props.get("snapshot_wanted", set()), conn.props.get("snapshot_had", set())):
                        marks.discard(f"{channel}:{p}")
            if not have:
                subs.pop(channel, None)
            self._ack(conn, now)

    def _known(self, product: str) -> bool:
        if not self.replaying:
            return product in self.market.specs
        # a recording: the products it listed, else whatever is asked (the recording has what it has)
        return self._rec_products is None or product in self._rec_products

    def _ack(self, conn: SimConnection, now: int) -> None:
        subs = {ch: sorted(ps) for ch, ps in conn.props["subs"].items() if ps}
        self._send(conn, self._head("subscriptions", now), json.dumps([{"subscriptions": subs}], separators=(",", ":")).encode())

    # -- JWT ---------------------------------------------------------------------------------------------
    @staticmethod
    def _load_public_key(pem: str) -> Any:
        from cryptography.hazmat.primitives import serialization

        return serialization.load_pem_public_key(pem.encode())

    def _jwt_ok(self, token: Any, channel: str) -> bool:
        import base64

        if not isinstance(token, str) or token.count(".") != 2:
            return False

        def unb64(s: str) -> bytes:
            return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))

        try:
            h64, c64, s64 = token.split(".")
            header, claims, sig = json.loads(unb64(h64)), json.loads(unb64(c64)), unb64(s64)
        except Exception:
            return False
        if header.get("alg") not in ("ES256", "EdDSA") or not header.get("kid") or not header.get("nonce"):
            return False
        if claims.get("iss") != "cdp" or claims.get("sub") != header["kid"]:
            return False
        now = time.time()
        if not (claims.get("nbf", now) <= now + 5 and now < claims.get("exp", 0)):
            return False
        if not self._jwt_keys:
            return True
        key = self._jwt_keys.get(header["kid"])
        if key is None:
            return False
        try:
            from cryptography.hazmat.primitives import hashes
            from cryptography.hazmat.primitives.asymmetric import ec
            from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

            data = f"{h64}.{c64}".encode()
            if header["alg"] == "ES256":
                der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
                key.verify(der, data, ec.ECDSA(hashes.SHA256()))
            else:
                key.verify(sig, data)
        except Exception:
            return False
        return True

    # -- snapshots on subscribe ------------------------------------------------------------------------
    def _trade_row(self, spec: SymbolSpec, t: Trade) -> dict[str, str]:
        return {
            "trade_id": str(t.trade_id),
            "product_id": spec.symbol,
            "price": spec.fmt_price(t.price),
            "size": spec.fmt_qty(t.qty),
            "side": "BUY" if t.buyer_maker else "SELL",  # the maker's side
            "time": _rfc3339(t.ts_ns),
        }

    def _ticker_row(self, spec: SymbolSpec, now: int) -> dict[str, str] | None:
        book = self.market.book(spec.symbol)
        bid, bid_lots, ask, ask_lots = book.best()
        last = self.market.last_price(spec.symbol)
        st = self._stats.get(spec.symbol) or [last or bid, last or bid, 0]
        return {
            "type": "ticker",
            "product_id": spec.symbol,
            "price": spec.fmt_price(last if last is not None else bid),
            "volume_24_h": spec.fmt_qty(st[2]),
            "low_24_h": spec.fmt_price(st[0]),
            "high_24_h": spec.fmt_price(st[1]),
            "low_52_w": spec.fmt_price(st[0]),
            "high_52_w": spec.fmt_price(st[1]),
            "price_percent_chg_24_h": "0",
            "best_bid": spec.fmt_price(bid),
            "best_bid_quantity": spec.fmt_qty(bid_lots),
            "best_ask": spec.fmt_price(ask),
            "best_ask_quantity": spec.fmt_qty(ask_lots),
        }

    def _candle_row(self, spec: SymbolSpec, now: int) -> dict[str, str] | None:
        b = self._candles.get(spec.symbol)
        if b is None:
            b = self._candles[spec.symbol] = BarBuilder(spec.symbol, "5m", self.market.last_price(spec.symbol))
            bars = self.market.bars(spec.symbol, "5m", start_ns=now - 300 * NS, end_ns=now, limit=2)
            if bars and bars[-1].open_ns <= now < bars[-1].close_ns:
                b.bar = bars[-1]
        bar, _ = b.current(now)
        if bar.open is None:
            return None
        return {
            "start": str(bar.open_ns // NS),
            "high": spec.fmt_price(bar.high),
            "low": spec.fmt_price(bar.low),
            "open": spec.fmt_price(bar.open),
            "close": spec.fmt_price(bar.close),
            "volume": spec.fmt_qty(bar.volume),
            "product_id": spec.symbol,
        }

    def _snapshot(self, conn: SimConnection, channel: str, product: str, now: int) -> None:
        if self.replaying:
            return self._recorded_snapshot(conn, channel, product)
        spec = self.market.spec(product)
        if channel == "market_trades":
            rows = [self._trade_row(spec, t) for t in reversed(self.market.trades(product)[-self.trades_snapshot :])]
            events: Any = [{"type": "snapshot", "trades": rows}]
        elif channel == "ticker":
            events = [{"type": "snapshot", "tickers": [self._ticker_row(spec, now)]}]
        elif channel == "candles":
            row = self._candle_row(spec, now)
            events = [{"type": "snapshot", "candles": [row] if row else []}]
        elif channel == "level2":
            book = self.market.book(product)
            t = _rfc3339(now)
            ups = [
                {"side": "bid", "event_time": t, "price_level": spec.fmt_price(p), "new_quantity": spec.fmt_qty(q)}
                for p, q in book.bids()
            ]
            ups += [
                {"side": "offer", "event_time": t, "price_level": spec.fmt_price(p), "new_quantity": spec.fmt_qty(q)}
                for p, q in book.asks()
            ]
            events = [{"type": "snapshot", "product_id": product, "updates": ups}]
        else:
            return  # status, ticker_batch, user: acknowledged, not generated
        self._send(
            conn,
            self._head(_WIRE.get(channel, channel), now),
            json.dumps(events, separators=(",", ":")).encode(),
            f"{channel}:{product}",
        )

    # -- recorded messages (replay) --------------------------------------------------------------------
    def publish_recorded(self, frame: RecordedFrame) -> None:
        """Serve one recorded message (see the module docstring): to the subscribers of its
        channel and products, every byte as recorded but ``sequence_num`` (``frame_for``)."""
        payload = frame.payload
        try:
            msg = _recorded(payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("coinbase: recorded frame is not a message: skipped")
            return
        n = msg.sequence_num
        if n is not None and n >= 0:
            # every recorded message of a connection counts, served or not (acks, heartbeats)
            last = self._rec_seq.get(frame.conn)
            if last is not None and n > last + 1:
                # the venue lost messages for the recording connection: the next message served
                # from it (this one, or the next if this one is not served) carries the jump
                self._rec_lost[frame.conn] = self._rec_lost.get(frame.conn, 0) + n - last - 1
            self._rec_seq[frame.conn] = n
        sub = _SUBSCRIBED.get(msg.channel or "")
        if sub is None:
            return  # subscriptions, heartbeats, status, errors: the simulator's own business
        products: dict[str, None] = {}
        for ev in msg.events:
            if ev.product_id:
                products[ev.product_id] = None
            for item in (*ev.trades, *ev.tickers, *ev.candles):
                if item.product_id:
                    products[item.product_id] = None
        snapshot = any(ev.type == "snapshot" for ev in msg.events)
        streams = [f"{sub}:{p}" for p in products]
        conns: set[SimConnection] = set()
        for stream in streams:
            conns |= self.subscribers(stream)
        news: bytes | None = None
        if sub == "level2":
            news = self._record_book(msg, payload)
        elif snapshot and conns:
            news = self._as_update(sub, payload)
        if sub == "market_trades":
            for ev in msg.events:
                for t in ev.trades:
                    if t.product_id and t.trade_id and t.trade_id.isdigit():
                        tid = int(t.trade_id)
                        self._rec_last_trade[t.product_id] = max(tid, self._rec_last_trade.get(t.product_id, tid))
        if not conns:
            return
        stream = streams[0]
        jump = self._rec_lost.pop(frame.conn, 0)
        for conn in conns:
            if snapshot and not self._first_snapshot(conn, streams) and news is not payload:
                body = news  # the connection has had its snapshot: what is new, as an update
            else:
                body = payload
            if jump:  # (shown in this connection's next message, if not in this one)
                conn.props["skip"] = conn.props.get("skip", 0) + jump
            if body is not None:
                conn.send(self.frame_for(conn, stream, body), stream)
        self.sent_by_stream[stream] += len(conns)

    @staticmethod
    def _first_snapshot(conn: SimConnection, streams: list[str]) -> bool:
        """Does ``conn`` get a recorded snapshot as it is? Only for a subscription that has had
        none (Coinbase sends one per subscription); it has had one after this."""
        mine = [s for s in streams if s in conn.subscriptions]
        wanted = conn.props.get("snapshot_wanted", set())
        had = conn.props.setdefault("snapshot_had", set())
        if any(s in wanted and s not in had for s in mine):
            had.update(mine)
            return True
        return False

    @staticmethod
    def _with_events(payload: bytes, events: Any) -> bytes | None:
        """The recorded envelope (channel, client_id, timestamp, sequence_num as recorded) with other events."""
        at = payload.rfind(b'"events":')
        if at < 0:
            return None
        return payload[: at + 9] + json.dumps(events, separators=(",", ":")).encode() + b"}"

    def _as_update(self, sub: str, payload: bytes) -> bytes | None:
        """A recorded snapshot (``market_trades``, ``ticker``, ``candles``) as an update, for a
        connection that has had its snapshot: the trades newer than those served (oldest
        first, as updates come), the ticker or candle as it is."""
        if sub != "market_trades":
            return payload.replace(b'"type":"snapshot"', b'"type":"update"', 1)
        try:
            events = json.loads(payload)["events"]
        except (ValueError, KeyError, TypeError):
            return None
        fresh = []
        for ev in events:
            for t in ev.get("trades") or []:
                tid = t.get("trade_id")
                last = self._rec_last_trade.get(t.get("product_id"))
                if isinstance(tid, str) and tid.isdigit() and (last is None or int(tid) > last):
                    fresh.append(t)
        if not fresh:
            return None
        fresh.sort(key=lambda t: int(t["trade_id"]))
        return self._with_events(payload, [{"type": "update", "trades": fresh}])

    def _record_book(self, msg: _RecMsg, payload: bytes) -> bytes | None:
        """Keep the books as recorded. For a snapshot of a book already kept: the update that
        turns the kept book into the snapshot's (what a connection that has had its
        snapshot gets); the recorded bytes if there was none (everybody gets it as it is)."""
        out: list[dict[str, Any]] = []
        fresh = False
        for ev in msg.events:
            p = ev.product_id
            if not p:
                continue
            book = self._rec_books.get(p)
            if ev.type == "snapshot" or book is None:
                if ev.type != "snapshot":
                    continue  # updates before the recording's first snapshot: no book to apply them to
                before = book
                book = ({}, {}, "")
            else:
                before = None
            bids, offers, _ = book
            for u in ev.updates:
                side = bids if u.side == "bid" else offers
                try:
                    gone = float(u.new_quantity) == 0.0
                except ValueError:
                    continue
                if gone:
                    side.pop(u.price_level, None)
                else:
                    side[u.price_level] = (u.new_quantity, u.event_time)
            self._rec_books[p] = (bids, offers, msg.timestamp)
            if ev.type != "snapshot":
                continue
            if before is None:
                fresh = True
                continue
            when = next((u.event_time for u in ev.updates if u.event_time), msg.timestamp)
            ups = []
            for name, now, old in (("bid", bids, before[0]), ("offer", offers, before[1])):
                zero = _zero_like(next(iter(now.values()), ("0", ""))[0])
                ups += [{"side": name, "event_time": when, "price_level": q, "new_quantity": zero} for q in old if q not in now]
                ups += [{"side": name, "event_time": t or when, "price_level": q, "new_quantity": n}
                        for q, (n, t) in now.items() if old.get(q, (None,))[0] != n]
            out.append({"type": "update", "product_id": p, "updates": ups})
        if fresh:
            return payload
        return self._with_events(payload, out) if out else None

    def _recorded_snapshot(self, conn: SimConnection, channel: str, product: str) -> None:
        """A new ``level2`` subscriber gets the book as recorded so far (other channels: nothing made up)."""
        book = self._rec_books.get(product) if channel == "level2" else None
        if book is None:
            return
        bids, offers, ts = book

        def key(kv: tuple[str, Any]) -> float:
            return float(kv[0])

        ups = [{"side": "bid", "event_time": t or ts, "price_level": p, "new_quantity": q}
               for p, (q, t) in sorted(bids.items(), key=key, reverse=True)]
        ups += [{"side": "offer", "event_time": t or ts, "price_level": p, "new_quantity": q}
                for p, (q, t) in sorted(offers.items(), key=key)]
        events = [{"type": "snapshot", "product_id": product, "updates": ups}]
        stream = f"level2:{product}"
        conn.props.setdefault("snapshot_had", set()).add(stream)
        self._send(conn, self._head_at("l2_data", ts), json.dumps(events, separators=(",", ":")).encode(), stream)

    def set_rest_override(self, path: str, body: bytes | None, status: int = 200) -> None:
        """As the base class; a recorded products list also says which products exist."""
        super().set_rest_override(path, body, status)
        if body is not None and status == 200 and path.partition("?")[0] == "/api/v3/brokerage/market/products":
            try:
                doc = json.loads(body)
                listed = {p["product_id"] for p in doc.get("products", []) if isinstance(p, dict) and p.get("product_id")}
            except (ValueError, AttributeError, TypeError):
                return
            if "?" not in path:
                self._rec_products = listed
            elif self._rec_products is not None:
                self._rec_products |= listed

    # -- the market -------------------------------------------------------------------------------------
    def on_market_events(self, events: list[MarketEvent]) -> None:
        for e in events:
            p = e.symbol
            if e.trades:
                st = self._stats.get(p)
                for t in e.trades:
                    if st is None:
                        st = self._stats[p] = [t.price, t.price, 0]
                    st[0] = min(st[0], t.price)
                    st[1] = max(st[1], t.price)
                    st[2] += t.qty
                    b = self._candles.get(p)
                    if b is not None:
                        b.add(t)
                if self.has_subscribers(f"market_trades:{p}"):
                    batch = self._trades.setdefault(p, [])
                    for t in e.trades:
                        if not self.faults.take_withheld(p, t.trade_id):
                            batch.append(t)
                if self.has_subscribers(f"ticker:{p}"):
                    spec = self.market.spec(p)
                    self._emit(
                        f"ticker:{p}", "ticker", [{"type": "update", "tickers": [self._ticker_row(spec, e.ts_ns)]}], e.ts_ns
                    )
            if (e.bids or e.asks) and self.has_subscribers(f"level2:{p}"):
                acc = self._l2.setdefault(p, {})
                for price, lots in e.bids:
                    acc[("bid", price)] = lots
                for price, lots in e.asks:
                    acc[("offer", price)] = lots

    def on_clock(self, now_ns: int) -> None:
        # level2 updates: everything that changed during this tick, one message per product
        if self._l2:
            t = _rfc3339(now_ns)
            for p, acc in self._l2.items():
                spec = self.market.spec(p)
                ups = [
                    {"side": side, "event_time": t, "price_level": spec.fmt_price(price), "new_quantity": spec.fmt_qty(lots)}
                    for (side, price), lots in acc.items()
                ]
                self._emit(f"level2:{p}", "l2_data", [{"type": "update", "product_id": p, "updates": ups}], now_ns)
            self._l2 = {}
        if now_ns >= self._next_batch:
            self._next_batch = now_ns + self.trade_batch_ns
            for p, batch in self._trades.items():
                if batch:
                    spec = self.market.spec(p)
                    self._emit(
                        f"market_trades:{p}",
                        "market_trades",
                        [{"type": "update", "trades": [self._trade_row(spec, t) for t in batch]}],
                        now_ns,
                    )
            self._trades = {}
        if now_ns >= self._next_candles:
            self._next_candles = now_ns + self.candle_push_ns
            for p in self.market.symbols:
                if self.has_subscribers(f"candles:{p}"):
                    row = self._candle_row(self.market.spec(p), now_ns)
                    if row is not None:
                        self._emit(f"candles:{p}", "candles", [{"type": "update", "candles": [row]}], now_ns)
        if now_ns >= self._next_heartbeat:
            self._next_heartbeat = now_ns + self.heartbeat_ns
            subs = self.subscribers("heartbeats")
            if subs:
                head = self._head("heartbeats", now_ns)
                up = time.monotonic_ns() - self._started
                for conn in list(subs):
                    conn.props["hb"] = conn.props.get("hb", 0) + 1
                    ev = [{"current_time": _go_time(now_ns, up), "heartbeat_counter": conn.props["hb"]}]
                    self._send(conn, head, json.dumps(ev, separators=(",", ":")).encode(), "heartbeats")

    # -- REST -------------------------------------------------------------------------------------------
    def _product(self, spec: SymbolSpec) -> dict[str, Any]:
        last = self.market.last_price(spec.symbol)
        bid, _, ask, _ = self.market.book(spec.symbol).best()
        return {
            "product_id": spec.symbol,
            "price": spec.fmt_price(last if last is not None else bid),
            "price_percentage_change_24h": "0",
            "volume_24h": "0",
            "volume_percentage_change_24h": "0",
            "base_increment": spec.lot_size,
            "quote_increment": spec.tick_size,
            "quote_min_size": "1",
            "quote_max_size": "150000000",
            "base_min_size": spec.lot_size,
            "base_max_size": "3400",
            "base_name": spec.base_asset,
            "quote_name": spec.quote_asset,
            "watched": False,
            "is_disabled": False,
            "new": False,
            "status": "online",
            "cancel_only": False,
            "limit_only": False,
            "post_only": False,
            "trading_disabled": False,
            "auction_mode": False,
            "product_type": "SPOT",
            "quote_currency_id": spec.quote_asset,
            "base_currency_id": spec.base_asset,
            "mid_market_price": spec.fmt_price((bid + ask) // 2),
            "base_display_symbol": spec.base_asset,
            "quote_display_symbol": spec.quote_asset,
            "price_increment": spec.tick_size,
        }

    def _r_products(self, req: RestRequest) -> RestResponse:
        wanted = [v for k, v in _parse_multi(req.query) if k == "product_ids"]
        specs = [self.market.spec(p) for p in self.market.symbols if not wanted or p in wanted]
        limit = req.get("limit")
        if limit and limit.isdigit():
            specs = specs[: int(limit)]
        return json_response({"products": [self._product(s) for s in specs], "num_products": len(specs)})

    def _r_product(self, req: RestRequest) -> RestResponse:
        product = req.path.rsplit("/", 1)[-1]
        if product not in self.market.specs:
            raise RestError(
                404, {"error": "NOT_FOUND", "message": "ProductID is invalid", "error_details": "ProductID is invalid"}
            )
        return json_response(self._product(self.market.spec(product)))

    def _r_market_trades(self, req: RestRequest) -> RestResponse:
        """Get (Public) Market Trades: the last ``limit`` trades (required) inside ``start``..
        ``end`` (UNIX seconds, optional; ``end`` exclusive here: the docs do not say),
        newest first, with the best bid and ask. No cursor: a client pages by narrowing
        the window. At most ``max_trades_page`` rows, fewer with the ``page_limit`` fault."""
        product = req.path.split("/")[-2]
        spec = self.market.spec(product)
        limit = req.get("limit")
        if not limit or not limit.isdigit() or int(limit) <= 0:
            raise RestError(400, {"error": "INVALID_ARGUMENT", "message": "limit is required and must be positive",
                                  "error_details": "limit is required and must be positive"})
        bounds = []
        for name in ("start", "end"):
            v = req.get(name)
            if v in (None, ""):
                bounds.append(None)
            elif v.isdigit():
                bounds.append(int(v) * NS)
            else:
                raise RestError(400, {"error": "INVALID_ARGUMENT", "message": f"invalid {name}", "error_details": f"invalid {name}"})
        n = self.faults.clip_page(min(int(limit), self.max_trades_page))
        trades = self.market.trades_in(product, bounds[0], bounds[1])[-n:]
        bid, _, ask, _ = self.market.book(product).best()
        rows = []
        for t in reversed(trades):
            row = self._trade_row(spec, t)
            row.update(bid="", ask="", exchange="")  # present in answers, empty (ccxt's captured response)
            rows.append(row)
        return json_response({"trades": rows, "best_bid": spec.fmt_price(bid), "best_ask": spec.fmt_price(ask)})

    def rest_error(self, status: int, kind: str, retry_after: int | None = None) -> RestResponse:
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        body = {"error": {429: "RATE_LIMIT_EXCEEDED", 404: "NOT_FOUND"}.get(status, "INTERNAL"), "message": kind}
        return json_response(body, status, headers)


def _parse_multi(query: str) -> list[tuple[str, str]]:
    import urllib.parse

    return urllib.parse.parse_qsl(query, keep_blank_values=True)
