"""Alpaca market data stream on loopback: stock feeds v2, crypto v1beta3, JSON and
MessagePack, and the Trading API's asset list, on one port.

Built from Alpaca's documented protocol (``shared/providers/alpaca.md``; the docs'
"WebSocket Stream", "Real-time Stock Data", "Real-time Crypto Data", "Working with
/assets"), not from wrdata's client. Facts relied on:

* Paths ``/v2/iex``, ``/v2/sip``, ``/v2/delayed_sip``, ``/v2/test`` (the always-on test
  stream with ``FAKEPACA``), ``/v1beta3/crypto/us``; others get HTTP 404.
* Framing by the upgrade's ``Content-Type``: ``application/msgpack`` -> binary
  MessagePack frames with ``t`` as a Timestamp extension (type -1, nanoseconds); anything
  else (or no header) -> JSON text frames with RFC 3339 nanosecond times (trailing zeros
  trimmed, Go's RFC3339Nano). Client frames may be text JSON or binary MessagePack,
  fragmented or not.
* ``[{"T":"success","msg":"connected"}]`` on connect; ``{"action":"auth","key","secret"}``
  within ``auth_timeout`` s (else 404 ``auth timeout`` and close) ->
  ``[{"T":"success","msg":"authenticated"}]``. Errors ``[{"T":"error","code","msg"}]``
  with the documented codes and texts: 400 invalid syntax, 401 not authenticated, 402 auth
  failed, 403 already authenticated, 404 auth timeout, 405 symbol limit exceeded, 406
  connection limit exceeded, 409 insufficient subscription, 410 invalid subscribe action
  for this feed. 402, 404, 406 and 409 close the connection after the error (the docs
  leave it open; the shared notes model it so). 406 comes in reply to auth when the key
  already has ``max_connections`` sessions on this endpoint (a session dropped without a
  close counts for ``reap_after`` s more, Alpaca's ~90 s); 409 when the plan (``feeds``)
  lacks the endpoint.
* ``subscribe``/``unsubscribe`` are deltas per channel (``"*"`` wildcard); the reply
  ``[{"T":"subscription",...}]`` lists the whole current set (stocks: trades, quotes,
  bars, updatedBars, dailyBars, statuses, lulds, corrections, cancelErrors, imbalances;
  crypto: trades, quotes, orderbooks, bars, updatedBars, dailyBars). Subscribing trades
  adds ``corrections`` and ``cancelErrors``. A channel the endpoint lacks -> 410; a
  malformed symbol -> 400; more trade+quote symbols than ``symbol_limit`` -> 405 and the
  previous set is kept.
* Data items, arrays of several per frame when busy: ``t`` ``{S,i,x,p,s,c,z,t}`` (``i``
  counted per exchange, ``c`` conditions: ``@`` regular, ``I`` odd lot, ``T`` extended
  hours, ``Z`` out of sequence; ``z`` tape), ``q`` ``{S,bx,bp,bs,ax,ap,as,c,z,t}`` (sizes
  in round lots), ``b`` minute bars just after each minute (stocks: only minutes with
  trades; crypto: every minute, from quote mids with ``v`` 0 when nothing traded),
  ``u`` updated bars at the next :30 after a late trade changed a past minute, ``d`` the
  running daily bar every minute, ``s`` trading status (:meth:`halt`/:meth:`resume`);
  crypto ``t`` ``{S,p,s,t,i,tks}`` and ``o`` order books (a full book with ``r`` true on
  subscribing, then changed levels, size 0 deletes).
* The IEX feed carries only IEX prints (exchange ``V``) and IEX quotes; SIP carries every
  exchange's; ``delayed_sip`` is SIP ``delay`` seconds late (15 minutes).
* Trading API ``GET /v2/assets?status=&asset_class=us_equity|crypto`` with
  ``APCA-API-KEY-ID``/``APCA-API-SECRET-KEY`` headers (401 ``request is not authorized``
  otherwise).

Markets: stocks follow US trading hours (``hours="us"``, see :mod:`wrdata.sim.stocks`)
or trade around the clock (``hours="always"``); crypto and the test stream are always
on. Late trades (``late_fraction`` of SIP prints, reported ``late_delay`` s after they
happened) make the updated bars real.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import struct
import time
import urllib.parse
import zlib
from collections import deque
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import msgspec

from .faults import Faults
from .market import NS, MarketEvent, SymbolSpec, SyntheticMarket, Trade
from .server import Feed, MarketFeed, RecordedFrame, RestRequest, RestResponse, SimConnection, SimServer, json_response
from .stocks import (
    CRYPTO_PAIRS,
    Batcher,
    crypto_spec,
    listing_tape,
    session_of,
    start_round_the_clock,
    stock_market,
    stock_spec,
)

__all__ = ["AlpacaSimulator", "rfc3339"]

log = logging.getLogger(__name__)

STOCK_PATHS = {"/v2/iex": "iex", "/v2/sip": "sip", "/v2/delayed_sip": "delayed_sip", "/v2/test": "test"}
CRYPTO_PATHS = {"/v1beta3/crypto/us": "crypto"}
STOCK_CHANNELS = ("trades", "quotes", "bars", "updatedBars", "dailyBars", "statuses", "lulds", "corrections",
                  "cancelErrors", "imbalances")
CRYPTO_CHANNELS = ("trades", "quotes", "orderbooks", "bars", "updatedBars", "dailyBars")
ERRORS = {
    400: "invalid syntax", 401: "not authenticated", 402: "auth failed", 403: "already authenticated",
    404: "auth timeout", 405: "symbol limit exceeded", 406: "connection limit exceeded", 407: "slow client",
    409: "insufficient subscription", 410: "invalid subscribe action for this feed", 500: "internal error",
}
_STOCK_SYMBOL = re.compile(r"^(\*|[A-Z][A-Z0-9.\-]{0,15})$")
_CRYPTO_SYMBOL = re.compile(r"^(\*|[A-Z0-9]{1,12}/[A-Z0-9]{1,12})$")
# SIP prints by exchange, roughly by market share (100 slots); D is the FINRA TRF (off-exchange)
_PRINT_VENUES = "D" * 38 + "Q" * 14 + "P" * 8 + "N" * 8 + "K" * 7 + "Z" * 6 + "U" * 4 + "V" * 3 + "Y" * 3 + "J" * 3 + "X" * 2 + "B" + "H" + "A" + "M"
_QUOTE_VENUES = "QPNKZVUYJ"
_MINUTE = 60 * NS


def rfc3339(ns: int) -> str:
    """Go's RFC3339Nano, as Alpaca writes times: ``2023-04-06T11:54:26.83915973Z``."""
    sec, frac = divmod(ns, NS)
    head = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    if frac:
        return f"{head}.{frac:09d}".rstrip("0") + "Z"
    return head + "Z"


def _ts_ext(ns: int) -> msgspec.msgpack.Ext:
    sec, frac = divmod(ns, NS)
    return msgspec.msgpack.Ext(-1, struct.pack(">Iq", frac, sec))


_json = msgspec.json.Encoder().encode
_mp = msgspec.msgpack.Encoder().encode


def _encode(item: dict[str, Any], variant: str) -> bytes:
    """One item in a framing; ``t`` stays ns in the dict and is converted here."""
    t = item.get("t")
    if variant == "msgpack":
        return _mp({**item, "t": _ts_ext(t)} if t is not None else item)
    return _json({**item, "t": rfc3339(t)} if t is not None else item)


def _frame(variant: str, items: list[bytes]) -> bytes:
    if variant == "msgpack":
        n = len(items)
        head = bytes([0x90 | n]) if n < 16 else b"\xdc" + n.to_bytes(2, "big")
        return head + b"".join(items)
    return b"[" + b",".join(items) + b"]"


def _control(conn: SimConnection, item: dict[str, Any]) -> None:
    conn.send(_frame(conn.variant, [_encode(item, conn.variant)]))


class _Head(msgspec.Struct):
    T: str | None = None
    S: str | None = None


_RECORDED_JSON = (msgspec.json.Decoder(list[msgspec.Raw]), msgspec.json.Decoder(_Head))
_RECORDED_MSGPACK = (msgspec.msgpack.Decoder(list[msgspec.Raw]), msgspec.msgpack.Decoder(_Head))
_CHANNEL_OF = {"t": "trades", "q": "quotes", "b": "bars", "u": "updatedBars", "d": "dailyBars", "s": "statuses", "l": "lulds",
               "c": "corrections", "x": "cancelErrors", "i": "imbalances", "o": "orderbooks"}


_SINGLE_TRADES = re.compile(r"^/v2/stocks/([^/]+)/trades$")


def _token_encode(symbol: str, seq: int) -> str:
    return base64.b64encode(f"{symbol}|{seq}".encode()).decode()


def _token_decode(token: str | None) -> tuple[str, int] | None:
    if not token:
        return None
    try:
        sym, _, seq = base64.b64decode(token).decode().rpartition("|")
        return sym, int(seq)
    except (ValueError, UnicodeDecodeError):
        return None


def _reencode(payload: bytes, binary: bool) -> bytes:
    """A recorded frame in the other framing, times exact to the nanosecond."""
    from ..streaming.alpaca import msgpack_ts_ns, rfc3339_ns

    if binary:
        items = msgspec.msgpack.Decoder(list[dict[str, msgspec.Raw]]).decode(payload)
        plain = [{k: (msgpack_ts_ns(v) if k == "t" else msgspec.msgpack.decode(v)) for k, v in it.items()} for it in items]
        return _frame("json", [_encode(it, "json") for it in plain])
    items = msgspec.json.decode(payload)
    plain = [{**it, "t": rfc3339_ns(it["t"])} if isinstance(it.get("t"), str) else it for it in items]
    return _frame("msgpack", [_encode(it, "msgpack") for it in plain])


class _BarAcc:
    __slots__ = ("o", "h", "l", "c", "v", "n", "pv")

    def __init__(self, price: float) -> None:
        self.o = self.h = self.l = self.c = price
        self.v = 0.0
        self.n = 0
        self.pv = 0.0

    def add(self, price: float, size: float) -> None:
        if self.n == 0 and self.v == 0:
            self.o = self.h = self.l = price
        self.h = max(self.h, price)
        self.l = min(self.l, price)
        self.c = price
        self.v += size
        self.n += 1
        self.pv += price * size

    def item(self, tag: str, symbol: str, start_ns: int, decimals: int) -> dict[str, Any]:
        vw = round(self.pv / self.v, decimals + 4) if self.v else 0
        v = int(self.v) if float(self.v).is_integer() else round(self.v, 9)
        return {"T": tag, "S": symbol, "o": self.o, "h": self.h, "l": self.l, "c": self.c, "v": v, "t": start_ns,
                "n": self.n, "vw": vw}


class AlpacaSimulator(SimServer):
    """Alpaca market data (stock v2 + crypto v1beta3 streams, asset list) over seeded markets.

    Parameters (durations in seconds): ``key``/``secret`` (accepted credentials, default
    ``test``/``test``), ``seed``, ``symbols`` (stock tickers; default a set of liquid US
    names plus ``FAKEPACA``), ``rate`` (stock events per second in regular hours),
    ``crypto_rate``, ``hours`` (``us`` or ``always``), ``start_et`` (the Eastern wall time
    market time 0 stands for; default now), ``feeds`` (endpoints the plan includes: iex,
    sip, delayed_sip, test, crypto), ``max_connections`` per key per endpoint (1),
    ``reap_after`` (a dropped session's slot stays taken this long; Alpaca ~90),
    ``symbol_limit`` (trade+quote symbols per session; None = unlimited, free plans 30),
    ``auth_timeout`` (10), ``delay`` (``delayed_sip``, 900), ``late_fraction`` (0.002),
    ``late_delay`` (20), ``batch`` (items per frame), ``tick``, ``warmup``, ``faults``,
    ``host``, ``port``.
    """

    venue = "alpaca"

    def __init__(
        self,
        *,
        key: str = "test",
        secret: str = "test",
        seed: int = 0,
        symbols: Sequence[str | SymbolSpec] | None = None,
        rate: float = 200.0,
        crypto_rate: float = 50.0,
        hours: str = "us",
        start_et: datetime | str | None = None,
        feeds: Iterable[str] = ("iex", "sip", "delayed_sip", "test", "crypto"),
        max_connections: int = 1,
        reap_after: float = 0.0,
        symbol_limit: int | None = None,
        auth_timeout: float = 10.0,
        delay: float = 900.0,
        late_fraction: float = 0.002,
        late_delay: float = 20.0,
        batch: int = 100,
        tick: float = 0.005,
        warmup: float = 2.0,
        history: int = 20_000,
        feed: Feed | None = None,
        faults: Faults | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        self.key, self.secret = key, secret
        self.market = stock_market(seed, symbols, rate, hours=hours, start_et=start_et, history=history)
        always = [crypto_spec(f"{b}/{q}", p, tk, lt, w, b, q) for b, q, p, tk, lt, w in CRYPTO_PAIRS]
        always.append(stock_spec("FAKEPACA", 132.65, 1.0))
        self.always = SyntheticMarket(seed + 1, always, crypto_rate, history=history)
        super().__init__(host=host, port=port, feed=feed or MarketFeed(self.market, tick=tick, warmup=warmup),
                         faults=faults or Faults(), ping_interval=None, pong_timeout=None)
        self.feeds = frozenset(feeds)
        self.max_connections = max_connections
        self.reap_after = reap_after
        self.symbol_limit = symbol_limit
        self.auth_timeout = auth_timeout
        self.delay_ns = int(delay * NS)
        self.late_fraction = late_fraction
        self.late_delay_ns = int(late_delay * NS)
        self.batcher = Batcher(_frame, batch)
        self.halted: set[str] = set()
        self._reaping: list[tuple[float, str, str]] = []  # (until, key, path) of dropped sessions
        self._exch_ids: dict[tuple[str, str], int] = {}
        self._bars: dict[tuple[str, str, int], _BarAcc] = {}  # (feed, symbol, minute start) -> bar
        self._daily: dict[tuple[str, str], tuple[int, _BarAcc]] = {}  # (feed, symbol) -> (day start, bar)
        self._late: deque[tuple[int, str, dict[str, Any], str]] = deque()  # (release ns, symbol, item, feed)
        self._updated: set[tuple[str, str, int]] = set()  # minutes changed by late trades since the last :30
        self._delayed: deque[tuple[int, str, tuple[str, ...], dict[str, Any]]] = deque()
        self._next_minute = 0
        self._next_half = 0
        self.history_size = history  # trades kept per symbol for REST (self.history lists connections)
        self._tapes: dict[str, deque[tuple[int, dict[str, Any]]]] = {}  # symbol -> (seq, trade item) for REST
        self._tape_seq = 0
        self.route("/v2/assets", self._r_assets)
        self.route("/v2/stocks/trades", self._r_stock_trades)
        self.route("/v1beta3/crypto/us/trades", self._r_crypto_trades)

    @staticmethod
    def cli_options() -> list:
        import click

        return [
            click.Option(["--key"], default="test", show_default=True, help="API key id the simulator accepts."),
            click.Option(["--secret"], default="test", show_default=True, help="API secret the simulator accepts."),
            click.Option(["--hours"], type=click.Choice(["us", "always"]), default="us", show_default=True,
                         help="Stocks trade in US hours (Eastern) or around the clock."),
            click.Option(["--max-connections"], type=int, default=1, show_default=True, help="Sessions per key per endpoint."),
            click.Option(["--symbol-limit"], type=int, default=None, help="Trade+quote symbols per session (free plan: 30)."),
            click.Option(["--reap-after"], type=float, default=0.0, show_default=True,
                         help="Seconds a dropped session keeps its slot (Alpaca: ~90)."),
        ]

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> str:
        url = await super().start()
        if not isinstance(self.feed, MarketFeed):
            return url  # serving a recording
        start_round_the_clock(self.always, self.market.t0_ns, self.now_ns())
        now = self.now_ns()
        self._next_minute = (now // _MINUTE + 1) * _MINUTE
        self._next_half = (now - 30 * NS) // _MINUTE * _MINUTE + _MINUTE + 30 * NS
        return url

    # -- connections -----------------------------------------------------------------------
    def ws_path_ok(self, path: str, params: dict[str, str]) -> int | None:
        return None if path in STOCK_PATHS or path in CRYPTO_PATHS else 404

    def _feed_of(self, path: str) -> str:
        return STOCK_PATHS.get(path) or CRYPTO_PATHS[path]

    def _sessions(self, key: str, path: str) -> int:
        now = time.monotonic()
        self._reaping = [r for r in self._reaping if r[0] > now]
        live = sum(1 for c in self.connections if c.props.get("key") == key and c.path == path and not c.closing)
        return live + sum(1 for _, k, p in self._reaping if k == key and p == path)

    async def serve_connection(self, conn: SimConnection) -> None:
        ctype = conn.ws.request.headers.get("Content-Type", "") if conn.ws.request else ""
        msgpack = "msgpack" in ctype.lower()
        conn.variant = "msgpack" if msgpack else "json"
        conn.binary = msgpack
        conn.props.update(feed=self._feed_of(conn.path), key=None, subs={})
        _control(conn, {"T": "success", "msg": "connected"})
        timer = asyncio.get_running_loop().call_later(self.auth_timeout, self._auth_timeout, conn)
        try:
            async for raw in conn:
                if conn.closing:
                    break
                self._on_message(conn, raw)
        finally:
            timer.cancel()
            code = conn.close_code or conn.ws.close_code
            if conn.props.get("key") is not None and code == 1006 and self.reap_after > 0:
                # a session that vanished without a close keeps its slot for a while
                self._reaping.append((time.monotonic() + self.reap_after, conn.props["key"], conn.path))

    def _auth_timeout(self, conn: SimConnection) -> None:
        if conn.props.get("key") is None and not conn.closing:
            self._error(conn, 404)
            conn.close(1000, "auth timeout")

    def _error(self, conn: SimConnection, code: int) -> None:
        _control(conn, {"T": "error", "code": code, "msg": ERRORS[code]})

    def _on_message(self, conn: SimConnection, raw: str | bytes) -> None:
        try:
            msg = msgspec.msgpack.decode(raw) if isinstance(raw, bytes) else json.loads(raw)
        except (msgspec.DecodeError, ValueError):
            self._error(conn, 400)
            return
        if not isinstance(msg, dict) or not isinstance(msg.get("action"), str):
            self._error(conn, 400)
            return
        action = msg["action"]
        if action == "auth":
            self._auth(conn, msg)
        elif action in ("subscribe", "unsubscribe"):
            if conn.props.get("key") is None:
                self._error(conn, 401)
            else:
                self._subscribe(conn, msg, action == "subscribe")
        else:
            self._error(conn, 400)

    def _auth(self, conn: SimConnection, msg: dict[str, Any]) -> None:
        if conn.props.get("key") is not None:
            self._error(conn, 403)
            return
        key, secret = msg.get("key"), msg.get("secret")
        if not isinstance(key, str) or not isinstance(secret, str):
            self._error(conn, 400)
            return
        if key != self.key or secret != self.secret:
            self._error(conn, 402)
            conn.close(1000, "auth failed")
            return
        if conn.props["feed"] not in self.feeds:
            self._error(conn, 409)
            conn.close(1000, "insufficient subscription")
            return
        if self._sessions(key, conn.path) >= self.max_connections:
            self._error(conn, 406)
            conn.close(1000, "connection limit exceeded")
            return
        conn.props["key"] = key
        _control(conn, {"T": "success", "msg": "authenticated"})

    def _subscribe(self, conn: SimConnection, msg: dict[str, Any], add: bool) -> None:
        crypto = conn.props["feed"] == "crypto"
        channels = CRYPTO_CHANNELS if crypto else STOCK_CHANNELS
        pattern = _CRYPTO_SYMBOL if crypto else _STOCK_SYMBOL
        delta: dict[str, list[str]] = {}
        for k, v in msg.items():
            if k == "action":
                continue
            if k not in channels:
                self._error(conn, 410)
                return
            if not isinstance(v, list) or not all(isinstance(s, str) and pattern.match(s) for s in v):
                self._error(conn, 400)
                return
            delta[k] = v
        subs: dict[str, set[str]] = conn.props["subs"]
        if add:
            if self.symbol_limit is not None:
                wanted = set().union(subs.get("trades", ()), subs.get("quotes", ()), delta.get("trades", ()), delta.get("quotes", ()))
                if len(wanted) > self.symbol_limit:
                    self._error(conn, 405)
                    return
            if "trades" in delta and not crypto:
                delta.setdefault("corrections", []).extend(delta["trades"])
                delta.setdefault("cancelErrors", []).extend(delta["trades"])
            new_books = []
            for ch, syms in delta.items():
                have = subs.setdefault(ch, set())
                for s in syms:
                    if s not in have:
                        have.add(s)
                        conn.subscribe(f"{conn.path}|{ch}|{s}")
                        if ch == "orderbooks":
                            new_books.append(s)
        else:
            if "trades" in delta and not crypto:
                delta.setdefault("corrections", []).extend(delta["trades"])
                delta.setdefault("cancelErrors", []).extend(delta["trades"])
            new_books = []
            for ch, syms in delta.items():
                have = subs.get(ch, set())
                for s in syms:
                    have.discard(s)
                    conn.unsubscribe(f"{conn.path}|{ch}|{s}")
        ack: dict[str, Any] = {"T": "subscription"}
        for ch in channels:
            ack[ch] = sorted(subs.get(ch, ()))
        _control(conn, ack)
        for s in new_books:
            self._book_snapshot(conn, s)

    def _book_snapshot(self, conn: SimConnection, symbol: str) -> None:
        names = [symbol] if symbol != "*" else [s for s in self.always.symbols if "/" in s]
        for name in names:
            if name not in self.always.specs or "/" not in name:
                continue
            spec = self.always.specs[name]
            book = self.always.book(name)
            item = {"T": "o", "S": name, "t": self.now_ns(),
                    "b": [{"p": spec.price(p), "s": spec.qty(q)} for p, q in book.bids(100)],
                    "a": [{"p": spec.price(p), "s": spec.qty(q)} for p, q in book.asks(100)], "r": True}
            _control(conn, item)

    # -- status ---------------------------------------------------------------------------------
    def halt(self, symbol: str, reason: str = "T12", text: str = "Trading Halted; For information requested by NASDAQ") -> None:
        """Halt a stock: a trading status item now, and no trades until :meth:`resume`."""
        self.halted.add(symbol)
        self._status(symbol, "H", "Trading Halt", reason, text)

    def resume(self, symbol: str) -> None:
        self.halted.discard(symbol)
        self._status(symbol, "T", "Trading Resumption", "", "")

    def _status(self, symbol: str, sc: str, sm: str, rc: str, rm: str) -> None:
        item = {"T": "s", "S": symbol, "sc": sc, "sm": sm, "rc": rc, "rm": rm, "t": self.now_ns(), "z": listing_tape(symbol)}
        for path in ("/v2/iex", "/v2/sip", "/v2/delayed_sip", "/v2/test"):
            self._emit(path, "statuses", symbol, item)
        self.batcher.flush()

    # -- market -> items -----------------------------------------------------------------------
    def _targets(self, path: str, channel: str, symbol: str) -> set[SimConnection]:
        base = f"{path}|{channel}|"
        out: set[SimConnection] = set()
        for s in (base + symbol, base + "*"):
            if self.has_subscribers(s):
                out |= self.subscribers(s)
        return out

    def _emit(self, path: str, channel: str, symbol: str, item: dict[str, Any]) -> None:
        if path == "/v2/delayed_sip" and self.delay_ns:
            if self._targets(path, channel, symbol):
                self._delayed.append((self.now_ns() + self.delay_ns, channel, (path, symbol), item))
            return
        conns = self._targets(path, channel, symbol)
        if conns:
            self.batcher.add(conns, lambda v, item=item: _encode(item, v))

    def _exchange_id(self, symbol: str, exchange: str) -> int:
        k = (symbol, exchange)
        n = self._exch_ids.get(k, 0) + 1
        self._exch_ids[k] = n
        return n

    def on_market_events(self, events: list[MarketEvent]) -> None:
        for e in events:
            self._stock_event(e)

    def _stock_event(self, e: MarketEvent) -> None:
        sym = e.symbol
        spec = self.market.specs[sym]
        tape = listing_tape(sym)
        faults = self.faults
        halted = sym in self.halted
        if e.trades and not halted:
            hours = session_of(e.trades[0].ts_ns)
            for t in e.trades:
                withheld = faults.withholding and faults.take_withheld(sym, t.trade_id)
                self._stock_trade(spec, t, tape, hours, withheld)
        if e.bbo_changed and not halted:
            bid, bid_lots, ask, ask_lots = e.bbo
            h = zlib.crc32(f"{sym}{e.update_id}".encode())
            q = {"T": "q", "S": sym, "bx": _QUOTE_VENUES[h % len(_QUOTE_VENUES)], "bp": spec.price(bid),
                 "bs": max(1, bid_lots // 100), "ax": _QUOTE_VENUES[(h >> 8) % len(_QUOTE_VENUES)], "ap": spec.price(ask),
                 "as": max(1, ask_lots // 100), "c": ["R"], "z": tape, "t": e.ts_ns}
            self._emit("/v2/sip", "quotes", sym, q)
            self._emit("/v2/delayed_sip", "quotes", sym, q)
            self._emit("/v2/iex", "quotes", sym, {**q, "bx": "V", "ax": "V"})

    def _stock_trade(self, spec: SymbolSpec, t: Trade, tape: str, hours: str, withheld: bool = False) -> None:
        sym = spec.symbol
        h = zlib.crc32(f"{sym}{t.trade_id}".encode())
        venue = _PRINT_VENUES[h % 100]
        size = spec.qty(t.qty)
        cond = ["@"]
        if hours in ("pre", "post"):
            cond.append("T")
        if size < 100:
            cond.append("I")
        item = {"T": "t", "S": sym, "i": self._exchange_id(sym, venue), "x": venue, "p": spec.price(t.price), "s": int(size),
                "c": cond, "z": tape, "t": t.ts_ns}
        late = self.late_fraction > 0 and (h >> 8) % 100_000 < self.late_fraction * 100_000
        if late:
            item["c"] = [*cond, "Z"]
        self._history(sym, item)  # REST history holds every print, withheld ones included (gap healing)
        if withheld:  # lost on the stream only: the venue's bars still count it
            self._bar_add("sip", sym, item)
            return
        if late:  # reported later, out of sequence: in no minute bar until it is
            self._late.append((t.ts_ns + self.late_delay_ns, sym, item, venue))
            return
        self._publish_trade(sym, item, venue)

    def _history(self, sym: str, item: dict[str, Any]) -> None:
        tape = self._tapes.get(sym)
        if tape is None:
            tape = self._tapes[sym] = deque(maxlen=self.history_size)
        self._tape_seq += 1
        tape.append((self._tape_seq, item))

    def _publish_trade(self, sym: str, item: dict[str, Any], venue: str) -> None:
        self._emit("/v2/sip", "trades", sym, item)
        self._emit("/v2/delayed_sip", "trades", sym, item)
        self._bar_add("sip", sym, item)
        if venue == "V":
            self._emit("/v2/iex", "trades", sym, item)
            self._bar_add("iex", sym, item)

    def _bar_add(self, feed: str, sym: str, item: dict[str, Any]) -> None:
        minute = item["t"] // _MINUTE * _MINUTE
        key = (feed, sym, minute)
        acc = self._bars.get(key)
        if acc is None:
            acc = self._bars[key] = _BarAcc(item["p"])
        acc.add(item["p"], item["s"])
        if minute < self._next_minute - _MINUTE:  # a minute already sent: an updated bar is due
            self._updated.add(key)
        dk = (feed, sym)
        day = self._day_start(item["t"])
        cur = self._daily.get(dk)
        if cur is None or cur[0] != day:
            cur = self._daily[dk] = (day, _BarAcc(item["p"]))
        cur[1].add(item["p"], item["s"])

    @staticmethod
    def _day_start(ts_ns: int) -> int:
        return ts_ns // (86_400 * NS) * (86_400 * NS)  # UTC day (a simplification of the trading day)

    def _crypto_event(self, e: MarketEvent) -> None:
        sym = e.symbol
        spec = self.always.specs[sym]
        path = "/v1beta3/crypto/us" if "/" in sym else "/v2/test"
        for t in e.trades:
            if "/" in sym:
                item = {"T": "t", "S": sym, "p": spec.price(t.price), "s": spec.qty(t.qty), "t": t.ts_ns, "i": t.trade_id,
                        "tks": "S" if t.buyer_maker else "B"}
            else:  # FAKEPACA on the test stream
                item = {"T": "t", "S": sym, "i": t.trade_id, "x": "V", "p": spec.price(t.price), "s": int(spec.qty(t.qty)),
                        "c": ["@"], "z": "C", "t": t.ts_ns}
            self._history(sym, item)
            if self.faults.withholding and self.faults.take_withheld(sym, t.trade_id):
                continue
            self._emit(path, "trades", sym, item)
            self._bar_add("crypto" if "/" in sym else "test", sym, item)
        if e.bbo_changed:
            bid, bid_lots, ask, ask_lots = e.bbo
            if "/" in sym:
                q = {"T": "q", "S": sym, "bp": spec.price(bid), "bs": spec.qty(bid_lots), "ap": spec.price(ask),
                     "as": spec.qty(ask_lots), "t": e.ts_ns}
            else:
                q = {"T": "q", "S": sym, "bx": "V", "bp": spec.price(bid), "bs": max(1, bid_lots // 100), "ax": "V",
                     "ap": spec.price(ask), "as": max(1, ask_lots // 100), "c": ["R"], "z": "C", "t": e.ts_ns}
            self._emit(path, "quotes", sym, q)
        if "/" in sym and (e.bids or e.asks):
            conns = self._targets(path, "orderbooks", sym)
            if conns:
                o = {"T": "o", "S": sym, "t": e.ts_ns, "b": [{"p": spec.price(p), "s": spec.qty(q)} for p, q in e.bids],
                     "a": [{"p": spec.price(p), "s": spec.qty(q)} for p, q in e.asks]}
                self.batcher.add(conns, lambda v, o=o: _encode(o, v))

    def on_clock(self, now_ns: int) -> None:
        # the always-on market (crypto, FAKEPACA) follows the same clock
        for e in self.always.advance(now_ns - self.always.t0_ns):
            self._crypto_event(e)
        while self._late and self._late[0][0] <= now_ns:
            _, sym, item, venue = self._late.popleft()
            self._publish_trade(sym, item, venue)
        if now_ns >= self._next_minute:
            self._minute_bars(self._next_minute - _MINUTE, now_ns)
            self._next_minute = (now_ns // _MINUTE + 1) * _MINUTE
        if now_ns >= self._next_half:
            self._updated_bars()
            self._next_half = (now_ns - 30 * NS) // _MINUTE * _MINUTE + _MINUTE + 30 * NS
        while self._delayed and self._delayed[0][0] <= now_ns:
            _, channel, (path, sym), item = self._delayed.popleft()
            conns = self._targets(path, channel, sym)
            if conns:
                self.batcher.add(conns, lambda v, item=item: _encode(item, v))
        self.batcher.flush()

    def _minute_bars(self, minute: int, now_ns: int) -> None:
        paths = {"sip": ("/v2/sip", "/v2/delayed_sip"), "iex": ("/v2/iex",), "test": ("/v2/test",), "crypto": ("/v1beta3/crypto/us",)}
        for (feed, sym, start), acc in list(self._bars.items()):
            if start == minute:
                decimals = 2 if feed != "crypto" else self.always.specs[sym].price_decimals
                bar = acc.item("b", sym, start, decimals)
                for p in paths[feed]:
                    self._emit(p, "bars", sym, bar)
        # crypto: every minute has a bar, from quote mids when nothing traded
        for sym in self.always.symbols:
            if "/" in sym and ("crypto", sym, minute) not in self._bars:
                spec = self.always.specs[sym]
                bid, _, ask, _ = self.always.book(sym).best()
                mid = round((spec.price(bid) + spec.price(ask)) / 2, spec.price_decimals + 1)
                acc = _BarAcc(mid)
                self._emit("/v1beta3/crypto/us", "bars", sym, acc.item("b", sym, minute, spec.price_decimals))
        for (feed, sym), (_day, acc) in self._daily.items():
            decimals = 2 if feed != "crypto" else self.always.specs[sym].price_decimals
            daily = acc.item("d", sym, _day, decimals)
            for p in paths[feed]:
                self._emit(p, "dailyBars", sym, daily)
        cutoff = minute - 10 * _MINUTE
        for key in [k for k in self._bars if k[2] < cutoff]:
            del self._bars[key]

    def _updated_bars(self) -> None:
        paths = {"sip": ("/v2/sip", "/v2/delayed_sip"), "iex": ("/v2/iex",), "test": ("/v2/test",), "crypto": ("/v1beta3/crypto/us",)}
        for key in sorted(self._updated):
            acc = self._bars.get(key)
            if acc is None:
                continue
            feed, sym, start = key
            item = acc.item("u", sym, start, 2)
            for p in paths[feed]:
                self._emit(p, "updatedBars", sym, item)
        self._updated.clear()

    # -- recorded frames (replay) -------------------------------------------------------------------
    def publish_recorded(self, frame: RecordedFrame) -> None:
        """Serve a recorded data frame, exact bytes, to connections subscribed to any of its
        items (clients dispatch by symbol, as they must for Alpaca's buffered leftovers);
        connections of the other framing get the same items re-encoded. Control frames
        (success, error, subscription) are the simulator's own business and are skipped."""
        payload = frame.payload
        binary = payload[:1] not in (b"[", b" ", b"\n")
        wire = _RECORDED_MSGPACK if binary else _RECORDED_JSON
        try:
            heads = [wire[1].decode(r) for r in wire[0].decode(payload)]
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("alpaca: recorded frame is not an array of items: skipped")
            return
        path = urllib.parse.urlsplit(frame.url).path if frame.url else ""
        conns: set[SimConnection] = set()
        for h in heads:
            channel = _CHANNEL_OF.get(h.T)
            if channel is None or h.S is None:
                continue
            paths = [path] if path in STOCK_PATHS or path in CRYPTO_PATHS else (
                ["/v1beta3/crypto/us"] if "/" in h.S else list(STOCK_PATHS))
            for p in paths:
                conns |= self._targets(p, channel, h.S)
        if not conns:
            return
        same = "msgpack" if binary else "json"
        other: bytes | None = None
        for conn in conns:
            if conn.variant == same:
                conn.send(payload)
            else:
                if other is None:
                    other = _reencode(payload, binary)
                conn.send(other)

    # -- REST ------------------------------------------------------------------------------------
    def rest_error(self, status: int, kind: str, retry_after: int | None = None) -> RestResponse:
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        text = {429: "rate limit exceeded", 404: "endpoint not found"}.get(status, "internal server error")
        return json_response({"message": text}, status, headers)

    def _authorized(self, req: RestRequest) -> bool:
        return req.headers.get("APCA-API-KEY-ID") == self.key and req.headers.get("APCA-API-SECRET-KEY") == self.secret

    def _r_assets(self, req: RestRequest) -> RestResponse:
        if not self._authorized(req):
            return json_response({"code": 40110000, "message": "request is not authorized"}, 401)
        cls = req.get("asset_class", "us_equity")
        status = req.get("status")
        rows = []
        if cls == "us_equity":
            for sym in self.market.symbols:
                rows.append(self._asset(sym, "us_equity", {"A": "NYSE", "B": "ARCA", "C": "NASDAQ"}[listing_tape(sym)]))
        elif cls == "crypto":
            for sym in self.always.symbols:
                if "/" in sym:
                    rows.append(self._asset(sym, "crypto", "CRYPTO"))
        else:
            return json_response({"code": 42210000, "message": f"invalid asset_class: {cls}"}, 422)
        if status:
            rows = [r for r in rows if r["status"] == status]
        return json_response(rows)

    def _rest(self, path: str, query: str, request: Any) -> RestResponse:
        # /v2/stocks/{symbol}/trades: a path parameter, which exact routes cannot express
        m = _SINGLE_TRADES.match(path)
        if m is not None:
            return super()._rest("/v2/stocks/trades", f"{query}&symbols={m.group(1)}&_single=1", request)
        return super()._rest(path, query, request)

    def _r_stock_trades(self, req: RestRequest) -> RestResponse:
        if not self._authorized(req):
            return json_response({"code": 40110000, "message": "request is not authorized"}, 401)
        feed = req.get("feed", "sip")
        if feed not in ("sip", "iex", "delayed_sip", "otc"):
            return json_response({"code": 42210000, "message": f"invalid feed: {feed}"}, 422)
        return self._trades(req, lambda item: feed != "iex" or item.get("x") == "V")

    def _r_crypto_trades(self, req: RestRequest) -> RestResponse:
        return self._trades(req, lambda item: True)  # crypto history needs no key

    def _trades(self, req: RestRequest, keep) -> RestResponse:
        """History pages: ``symbols``, RFC 3339 ``start``/``end`` (inclusive), ``limit``
        (1-10000, default 1000, over all symbols), ``sort`` asc|desc, ``page_token``."""
        from ..streaming.alpaca import rfc3339_ns

        symbols = [s for s in (req.get("symbols") or "").split(",") if s]
        if not symbols:
            return json_response({"code": 42210000, "message": "missing symbols"}, 422)
        try:
            start = rfc3339_ns(req.get("start")) if req.get("start") else None
            end = rfc3339_ns(req.get("end")) if req.get("end") else None
            limit = int(req.get("limit") or 1000)
        except ValueError as e:
            return json_response({"code": 42210000, "message": f"invalid parameter: {e}"}, 422)
        if not 1 <= limit <= 10_000:
            return json_response({"code": 42210000, "message": "invalid limit: must be between 1 and 10000"}, 422)
        limit = self.faults.clip_page(limit)
        desc = req.get("sort") == "desc"
        after = _token_decode(req.get("page_token"))
        rows: list[tuple[str, int, dict[str, Any]]] = []
        for sym in sorted(set(symbols)):
            items = [(seq, it) for seq, it in self._tapes.get(sym, ()) if keep(it)
                     and (start is None or it["t"] >= start) and (end is None or it["t"] <= end)]
            items.sort(key=lambda x: (x[1]["t"], x[0]), reverse=desc)
            rows.extend((sym, seq, it) for seq, it in items)
        if after is not None:
            at = next((i for i, (sym, seq, _) in enumerate(rows) if (sym, seq) == after), None)
            rows = rows[at + 1 :] if at is not None else []
        page, more = rows[:limit], len(rows) > limit
        token = _token_encode(page[-1][0], page[-1][1]) if more and page else None
        out: dict[str, list[dict[str, Any]]] = {}
        for sym, _seq, it in page:
            row = {k: v for k, v in it.items() if k not in ("T", "S")}
            row["t"] = rfc3339(row["t"])
            out.setdefault(sym, []).append(row)
        if req.get("_single"):
            return json_response({"trades": out.get(symbols[0], []), "symbol": symbols[0], "next_page_token": token})
        return json_response({"trades": out, "next_page_token": token})

    @staticmethod
    def _asset(symbol: str, cls: str, exchange: str) -> dict[str, Any]:
        h = zlib.crc32(symbol.encode())
        return {
            "id": f"{h:08x}-0000-4000-8000-{h:012x}", "class": cls, "exchange": exchange, "symbol": symbol,
            "name": f"{symbol} (simulated)", "status": "active", "tradable": True, "marginable": cls == "us_equity",
            "maintenance_margin_requirement": 30 if cls == "us_equity" else 100, "shortable": cls == "us_equity",
            "easy_to_borrow": cls == "us_equity", "fractionable": True, "attributes": [],
        }
