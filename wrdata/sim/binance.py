"""Binance spot market data on loopback: the WebSocket streams and the REST endpoints
a client needs, on one port.

Built from the venue's documented protocol (``shared/providers/binance.md`` sections
1-6, Binance's ``web-socket-streams.md``/``rest-api.md``), not from wrdata's own client,
so that it is an independent check of that client. Facts relied on:

* Paths ``/ws/<stream>`` (raw payloads), ``/ws`` (empty, then ``SUBSCRIBE``),
  ``/stream?streams=a/b`` and ``/stream`` (combined: ``{"stream":..,"data":..}``);
  ``timeUnit=MICROSECOND`` (any case) switches every time field to microseconds.
  Stream names are percent-decoded.
* Streams ``<sym>@trade``, ``@aggTrade``, ``@kline_<i>`` (``1s``..``1M``, and the
  ``@+08:00`` variant), ``@bookTicker``, ``@depth<5|10|20>[@100ms]`` (partial book, no
  symbol inside), ``@depth[@100ms]`` (diff depth, ``U``/``u`` in the same id space as the
  REST snapshot's ``lastUpdateId`` and bookTicker's ``u``). Klines are pushed every
  ``kline_push_interval`` s (Binance: 2 s; ``1s`` klines every
  ``kline_1s_push_interval``, Binance 1 s) and once more with ``x: true`` when the bar
  closes. Stream names carry lower-case symbols; an upper-case or unknown symbol is
  accepted and stays silent (the real server sends nothing, no error). A name that is
  not ``<symbol>@<known stream>`` is refused with ``{"code":2,"msg":"Invalid request:
  invalid stream"}`` (the text third-party fixtures show). ``@ticker``,
  ``@miniTicker``, ``@avgPrice`` are accepted but not generated.
* Control messages ``SUBSCRIBE``, ``UNSUBSCRIBE``, ``LIST_SUBSCRIPTIONS``,
  ``SET_PROPERTY``/``GET_PROPERTY`` (``combined``), replies ``{"result":..,"id":..}``
  echoing the id with its JSON type; errors ``{"error":{"code":..,"msg":..},"id":..}``
  with the documented codes 0-3 and texts (the ``line/column`` figures are ours).
  Ids: a signed 64-bit integer, a string of at most 36 characters, or null.
* Limits: 5 incoming messages per second (text, ping and pong frames alike) -> close
  1008 "Too many requests"; 1024 streams per connection (more in the URL: HTTP 400;
  more by ``SUBSCRIBE``: an error reply, text ours); a ping every 20 s, closed when no
  pong comes within 60 s; connections closed after 24 h. Every duration is a parameter.
* ``{"e":"serverShutdown","E":..}`` (combined: stream ``!serverShutdown``) on demand:
  :meth:`BinanceSimulator.server_shutdown`.
* REST: ``/api/v3/ping``, ``/time``, ``/exchangeInfo`` (``symbol``/``symbols``;
  PRICE_FILTER and LOT_SIZE), ``/depth`` (``limit`` default 100, capped at 5000),
  ``/trades``, ``/historicalTrades`` (``fromId``, ``limit`` <= 1000), ``/aggTrades``
  (``fromId``/``startTime``/``endTime``), ``/klines`` (``startTime``/``endTime``,
  ``timeZone``); errors ``{"code":-1121,"msg":"Invalid symbol."}`` etc. with HTTP 400;
  ``X-MBX-USED-WEIGHT-1M`` on every answer, 429 + ``Retry-After`` + code -1003 past
  ``weight_limit`` per ``weight_window`` (60 s), 418 for a ban (fault), ``X-MBX-TIME-UNIT: MICROSECOND``.
  History is what the market retains (``history`` trades per symbol), not all time.

Not modelled (documented, out of scope): 300 connections per 5 minutes per IP, the
rolling ticker streams, user data, the SBE stream host.
"""

from __future__ import annotations

import json
import logging
import re
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .faults import Faults
from .market import (
    DEFAULT_SYMBOLS,
    NS,
    AggTrade,
    Bar,
    BarBuilder,
    MarketEvent,
    SymbolSpec,
    SyntheticMarket,
    Trade,
    bar_open_ns,
)
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

__all__ = ["BinanceSimulator", "parse_stream", "KLINE_INTERVALS", "default_spec"]

log = logging.getLogger(__name__)

KLINE_INTERVALS = ("1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M")
_STREAM_RE = re.compile(
    r"^(?P<sym>[A-Za-z0-9_.\-]{1,30})@(?:"
    r"(?P<trade>trade)|(?P<agg>aggTrade)|(?P<bt>bookTicker)"
    r"|kline_(?P<kiv>1s|1m|3m|5m|15m|30m|1h|2h|4h|6h|8h|12h|1d|3d|1w|1M)(?P<ktz>@\+08:00)?"
    r"|depth(?P<plevels>5|10|20)(?P<pspeed>@100ms|@1000ms)?"
    r"|depth(?P<dspeed>@100ms|@1000ms)?"
    r"|(?P<other>ticker|miniTicker|ticker_(?:1h|4h|1d)|avgPrice|referencePrice|blockTrade)"
    r")$"
)
_GLOBAL_STREAMS = {"!miniTicker@arr", "!ticker_1h@arr", "!ticker_4h@arr", "!ticker_1d@arr"}
_METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
_ID_STR_RE = re.compile(r"^[A-Za-z0-9\-]{1,36}$")
_TZ_8H = 8 * 3600 * NS
_INT64 = (-(2**63), 2**63 - 1)
_DEC = 8  # Binance writes every price and quantity with 8 decimals


def parse_stream(name: str) -> tuple[str, str, Any] | None:
    """``btcusdt@kline_1m`` -> ``("btcusdt", "kline", ("1m", 0))``; None if not a stream name.

    Kinds: ``trade``, ``aggTrade``, ``bookTicker``, ``kline`` (interval, tz offset ns),
    ``partial`` (levels, speed ms), ``diff`` (speed ms), ``other``.
    """
    if name in _GLOBAL_STREAMS:
        return ("!", "other", None)
    m = _STREAM_RE.match(name)
    if m is None:
        return None
    sym = m.group("sym")
    if m.group("trade"):
        return (sym, "trade", None)
    if m.group("agg"):
        return (sym, "aggTrade", None)
    if m.group("bt"):
        return (sym, "bookTicker", None)
    if m.group("kiv"):
        return (sym, "kline", (m.group("kiv"), _TZ_8H if m.group("ktz") else 0))
    if m.group("plevels"):
        return (sym, "partial", (int(m.group("plevels")), 100 if m.group("pspeed") == "@100ms" else 1000))
    if m.group("other"):
        return (sym, "other", m.group("other"))
    return (sym, "diff", 100 if m.group("dspeed") == "@100ms" else 1000)


def default_spec(symbol: str) -> SymbolSpec:
    """A default instrument for ``symbol``: the built-in ones, else a plausible made-up one."""
    for s in DEFAULT_SYMBOLS:
        if s.symbol == symbol:
            return s
    h = zlib.crc32(symbol.encode())
    quote = next(
        (q for q in ("USDT", "USDC", "FDUSD", "BTC", "ETH", "BNB", "EUR", "TRY") if symbol.endswith(q) and symbol != q), "USDT"
    )
    base = symbol[: -len(quote)] if symbol.endswith(quote) else symbol
    price = round(1.0 + (h % 50_000) / 100.0, 2)  # 1 .. 500
    return SymbolSpec(
        symbol,
        price,
        "0.01",
        "0.001",
        first_trade_id=1 + h % 10_000_000,
        first_agg_id=1 + h % 7_000_000,
        first_update_id=1 + h % 90_000_000,
        mean_qty=5.0,
        volatility=0.01,
        base_asset=base,
        quote_asset=quote,
    )


class _KlineState:
    __slots__ = ("symbol", "interval", "tz", "builder", "next_push_ns", "push_ns", "names")

    def __init__(self, symbol: str, interval: str, tz: int, builder: BarBuilder, next_push_ns: int, push_ns: int):
        self.symbol = symbol
        self.interval = interval
        self.tz = tz
        self.builder = builder
        self.next_push_ns = next_push_ns
        self.push_ns = push_ns


class _DiffAcc:
    __slots__ = ("first", "last", "bids", "asks")

    def __init__(self) -> None:
        self.first = 0
        self.last = 0
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}


def _err(code: int, msg: str, rid: Any) -> bytes:
    return json.dumps({"error": {"code": code, "msg": msg}, "id": rid}, separators=(",", ":")).encode()


def _result(result: Any, rid: Any) -> bytes:
    return json.dumps({"result": result, "id": rid}, separators=(",", ":")).encode()


class BinanceSimulator(SimServer):
    """Binance spot market data (streams + REST) over a seeded market or a recording.

    Parameters (all durations in seconds): ``seed``, ``symbols`` (names or
    :class:`SymbolSpec`, default BTCUSDT ETHUSDT BNBUSDT SOLUSDT), ``rate`` (market events
    per second), ``market`` (bring your own), ``feed`` (default: a :class:`MarketFeed`;
    pass a :class:`~wrdata.sim.server.FrameFeed` to serve a recording), ``tick`` (clock
    step), ``warmup`` (market seconds generated before start), ``history`` (trades kept
    per symbol for REST), ``kline_push_interval`` (2.0), ``kline_1s_push_interval`` (1.0),
    ``ping_interval`` (20), ``pong_timeout`` (60), ``lifetime`` (86400; None = forever),
    ``msg_limit`` (5 per second), ``max_streams`` (1024), ``weight_limit`` (6000 per
    ``weight_window`` s, default 60), ``faults``, ``host``, ``port``.
    """

    venue = "binance"
    msg_limit_close = (1008, "Too many requests")
    lifetime_close = (1000, "")

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
        history: int = 100_000,
        kline_push_interval: float = 2.0,
        kline_1s_push_interval: float = 1.0,
        ping_interval: float | None = 20.0,
        pong_timeout: float | None = 60.0,
        lifetime: float | None = 86_400.0,
        msg_limit: int | None = 5,
        max_streams: int = 1024,
        weight_limit: int = 6000,
        weight_window: float = 60.0,
        faults: Faults | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        faults = faults or Faults()
        if faults.lifetime is None:
            faults.lifetime = lifetime
        if market is None:
            specs = [
                s if isinstance(s, SymbolSpec) else default_spec(s.upper())
                for s in (symbols or [s.symbol for s in DEFAULT_SYMBOLS])
            ]
            market = SyntheticMarket(seed, specs, rate, history=history)
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
            msg_limit=msg_limit,
            msg_window=1.0,
        )
        self.kline_push_ns = int(kline_push_interval * NS)
        self.kline_1s_push_ns = int(kline_1s_push_interval * NS)
        self.max_streams = max_streams
        self.weight_limit = weight_limit
        self.weight_window = weight_window
        self._lower = {s.lower(): s for s in market.symbols}  # stream symbol -> market symbol
        self._klines: dict[str, _KlineState] = {}  # stream name -> state
        self._klines_by_symbol: dict[str, list[_KlineState]] = {}
        self._diff: dict[tuple[str, int], _DiffAcc] = {}  # (symbol, speed ms) -> accumulator
        self._diff_by_symbol: dict[str, list[tuple[int, _DiffAcc]]] = {}
        self._partial: dict[str, tuple[str, int, int]] = {}  # stream -> (symbol, levels, speed)
        self._next_100ms = 0
        self._next_1000ms = 0
        self._weight_minute = 0
        self._weight_used = 0
        for path, handler in (
            ("/api/v3/ping", self._r_ping),
            ("/api/v3/time", self._r_time),
            ("/api/v3/exchangeInfo", self._r_exchange_info),
            ("/api/v3/depth", self._r_depth),
            ("/api/v3/trades", self._r_trades),
            ("/api/v3/historicalTrades", self._r_historical_trades),
            ("/api/v3/aggTrades", self._r_agg_trades),
            ("/api/v3/klines", self._r_klines),
            ("/api/v3/uiKlines", self._r_klines),
        ):
            self.route(path, handler)

    @staticmethod
    def cli_options() -> list:
        """Extra options of ``wrdata sim binance`` (passed to the constructor by name)."""
        import click

        return [
            click.Option(
                ["--kline-push-interval"], type=float, default=2.0, show_default=True, help="Seconds between kline pushes."
            ),
            click.Option(["--ping-interval"], type=float, default=20.0, show_default=True, help="Seconds between server pings."),
            click.Option(["--pong-timeout"], type=float, default=60.0, show_default=True, help="Close when no pong within this."),
            click.Option(
                ["--msg-limit"], type=int, default=5, show_default=True, help="Incoming messages per second before 1008."
            ),
            click.Option(["--max-streams"], type=int, default=1024, show_default=True, help="Streams per connection."),
            click.Option(["--warmup"], type=float, default=2.0, show_default=True, help="Market seconds generated before start."),
        ]

    # =========================================================================================
    # connections and control messages

    def ws_path_ok(self, path: str, params: dict[str, str]) -> int | None:
        if path in ("/ws", "/ws/", "/stream", "/stream/"):
            streams = [s for s in params.get("streams", "").split("/") if s] if path.startswith("/stream") else []
        elif path.startswith("/ws/"):
            streams = [s for s in path[4:].split("/") if s]
        else:
            return 404
        if len(streams) > self.max_streams:
            return 400
        return None

    async def serve_connection(self, conn: SimConnection) -> None:
        path, params = conn.path, conn.params
        tu = params.get("timeUnit", "").upper()
        conn.props["us"] = tu == "MICROSECOND"
        if path.startswith("/stream"):
            conn.props["combined"] = True
            streams = params.get("streams", "").split("/")
        else:
            conn.props["combined"] = False
            streams = path[4:].split("/") if path.startswith("/ws/") else []
        self._set_variant(conn)
        for s in streams:
            if s and parse_stream(s) is not None:  # invalid names in a URL: nothing arrives
                conn.subscribe(s)
        async for msg in conn:
            if conn.closing:
                break
            reply = self.control(conn, msg)
            if reply is not None:
                conn.send(reply)

    @staticmethod
    def _set_variant(conn: SimConnection) -> None:
        conn.variant = ("c" if conn.props.get("combined") else "r") + ("u" if conn.props.get("us") else "m")

    def control(self, conn: SimConnection, msg: str | bytes) -> bytes | None:
        """Answer one control message (exact Binance replies and errors)."""
        text = msg.decode("utf-8", "replace") if isinstance(msg, bytes) else msg
        try:
            req = json.loads(text)
        except json.JSONDecodeError as e:
            return _err(3, f"Invalid JSON: expected value at line {e.lineno} column {e.colno}", None)
        if not isinstance(req, dict):
            return _err(3, f"Invalid JSON: invalid type: expected struct Request at line 1 column {len(text)}", None)
        rid = req.get("id")
        if not (
            rid is None
            or (type(rid) is int and _INT64[0] <= rid <= _INT64[1])
            or (isinstance(rid, str) and _ID_STR_RE.match(rid))
        ):
            return _err(2, "Invalid request: request ID must be an unsigned integer", None)
        if "method" not in req:
            return _err(2, f"Invalid request: missing field `method` at line 1 column {len(text)}", rid)
        method = req["method"]
        if method not in _METHODS:
            col = text.find(json.dumps(method)) + len(json.dumps(method)) if isinstance(method, str) else len(text)
            expected = ", ".join(f"`{m}`" for m in _METHODS)
            return _err(2, f"Invalid request: unknown variant `{method}`, expected one of {expected} at line 1 column {col}", rid)
        params = req.get("params")
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
                return (
                    _err(2, "Invalid request: invalid stream", rid)
                    if isinstance(params, list)
                    else _err(2, f"Invalid request: missing field `params` at line 1 column {len(text)}", rid)
                )
            if any(parse_stream(p) is None for p in params):
                return _err(2, "Invalid request: invalid stream", rid)
            if method == "SUBSCRIBE":
                new = [p for p in dict.fromkeys(params) if p not in conn.subscriptions]
                if len(conn.subscriptions) + len(new) > self.max_streams:
                    return _err(2, f"Invalid request: too many streams (at most {self.max_streams} per connection)", rid)
                for p in new:
                    conn.subscribe(p)
            else:
                for p in params:
                    conn.unsubscribe(p)
            return _result(None, rid)
        if method == "LIST_SUBSCRIPTIONS":
            return _result(list(conn.subscriptions), rid)
        # properties
        if not isinstance(params, list) or not params:
            return _err(2, f"Invalid request: missing field `params` at line 1 column {len(text)}", rid)
        name = params[0]
        if not isinstance(name, str):
            return _err(2, "Invalid request: property name must be a string", rid)
        if method == "GET_PROPERTY":
            if len(params) > 1:
                return _err(2, "Invalid request: too many parameters", rid)
            if name != "combined":
                return _err(0, "Unknown property", rid)
            return _result(bool(conn.props.get("combined")), rid)
        if len(params) > 2:
            return _err(2, "Invalid request: too many parameters", rid)
        if name != "combined":
            return _err(0, "Unknown property", rid)
        if len(params) < 2 or not isinstance(params[1], bool):
            return _err(1, "Invalid value type: expected Boolean", rid)
        conn.props["combined"] = params[1]
        self._set_variant(conn)
        return _result(None, rid)

    def server_shutdown(self) -> None:
        """Send the ``serverShutdown`` notice to every connection."""
        now = self.now_ns()

        def frame(conn: SimConnection) -> bytes:
            e = now // 1000 if conn.props.get("us") else now // 1_000_000
            data = f'{{"e":"serverShutdown","E":{e}}}'
            return (f'{{"stream":"!serverShutdown","data":{data}}}' if conn.props.get("combined") else data).encode()

        self.broadcast(frame)

    # =========================================================================================
    # stream state, created lazily when a stream gets its first subscriber

    def on_subscribe(self, stream: str) -> None:
        parsed = parse_stream(stream)
        if parsed is None:
            return
        sym_l, kind, arg = parsed
        symbol = self._lower.get(sym_l)
        if symbol is None or not isinstance(self.feed, MarketFeed):
            return
        now = self.now_ns()
        if kind == "kline" and stream not in self._klines:
            interval, tz = arg
            bars = self.market.bars(
                symbol, interval, start_ns=bar_open_ns(now, interval, tz), end_ns=now, limit=1, tz_offset_ns=tz
            )
            builder = BarBuilder(symbol, interval, self.market.last_price(symbol), tz_offset_ns=tz)
            if bars and bars[-1].open_ns == bar_open_ns(now, interval, tz):
                builder.bar = bars[-1]  # the current bar so far, from the market's history
            push = self.kline_1s_push_ns if interval == "1s" else self.kline_push_ns
            st = _KlineState(symbol, interval, tz, builder, now + push, push)
            self._klines[stream] = st
            self._klines_by_symbol.setdefault(symbol, []).append(st)
        elif kind == "diff" and (symbol, arg) not in self._diff:
            acc = _DiffAcc()
            self._diff[(symbol, arg)] = acc
            self._diff_by_symbol.setdefault(symbol, []).append((arg, acc))
        elif kind == "partial":
            self._partial[stream] = (symbol, arg[0], arg[1])

    # =========================================================================================
    # encoding (once per stream and framing variant)

    @staticmethod
    def _wrap(stream: str, raw: Callable[[bool], bytes]) -> Callable[[str], bytes]:
        cache: dict[bool, bytes] = {}

        def encode(variant: str) -> bytes:
            us = variant[1] == "u"
            data = cache.get(us)
            if data is None:
                data = cache[us] = raw(us)
            if variant[0] == "c":
                return b'{"stream":"' + stream.encode() + b'","data":' + data + b"}"
            return data

        return encode

    def _trade_raw(self, spec: SymbolSpec, t: Trade) -> Callable[[bool], bytes]:
        def raw(us: bool) -> bytes:
            ts = t.ts_ns // 1000 if us else t.ts_ns // 1_000_000
            return (
                f'{{"e":"trade","E":{ts},"s":"{t.symbol}","t":{t.trade_id},"p":"{spec.fmt_price(t.price, _DEC)}",'
                f'"q":"{spec.fmt_qty(t.qty, _DEC)}","T":{ts},"m":{"true" if t.buyer_maker else "false"},"M":true}}'
            ).encode()

        return raw

    def _agg_raw(self, spec: SymbolSpec, a: AggTrade) -> Callable[[bool], bytes]:
        def raw(us: bool) -> bytes:
            ts = a.ts_ns // 1000 if us else a.ts_ns // 1_000_000
            return (
                f'{{"e":"aggTrade","E":{ts},"s":"{a.symbol}","a":{a.agg_id},"p":"{spec.fmt_price(a.price, _DEC)}",'
                f'"q":"{spec.fmt_qty(a.qty, _DEC)}","f":{a.first_id},"l":{a.last_id},"T":{ts},'
                f'"m":{"true" if a.buyer_maker else "false"},"M":true}}'
            ).encode()

        return raw

    def _book_ticker_raw(self, spec: SymbolSpec, e: MarketEvent) -> Callable[[bool], bytes]:
        bb, bq, ba, aq = e.bbo
        data = (
            f'{{"u":{e.update_id},"s":"{e.symbol}","b":"{spec.fmt_price(bb, _DEC)}","B":"{spec.fmt_qty(bq, _DEC)}",'
            f'"a":"{spec.fmt_price(ba, _DEC)}","A":"{spec.fmt_qty(aq, _DEC)}"}}'
        ).encode()
        return lambda us: data

    @staticmethod
    def _levels(spec: SymbolSpec, levels: Iterable[tuple[int, int]]) -> str:
        fp, fq = spec.fmt_price, spec.fmt_qty
        return ",".join(f'["{fp(p, _DEC)}","{fq(q, _DEC)}"]' for p, q in levels)

    def _kline_raw(self, spec: SymbolSpec, bar: Bar, closed: bool, now_ns: int) -> Callable[[bool], bytes]:
        def raw(us: bool) -> bytes:
            div = 1000 if us else 1_000_000
            one = 1  # close time is the last unit inside the bar: open + interval - 1 (ms or µs)
            o = bar.open if bar.open is not None else 0
            c = bar.close if bar.close is not None else 0
            h = bar.high if bar.high is not None else 0
            lo = bar.low if bar.low is not None else 0
            k = (
                f'{{"t":{bar.open_ns // div},"T":{bar.close_ns // div - one},"s":"{bar.symbol}","i":"{bar.interval}",'
                f'"f":{bar.first_id},"L":{bar.last_id},"o":"{spec.fmt_price(o, _DEC)}","c":"{spec.fmt_price(c, _DEC)}",'
                f'"h":"{spec.fmt_price(h, _DEC)}","l":"{spec.fmt_price(lo, _DEC)}","v":"{spec.fmt_qty(bar.volume, _DEC)}",'
                f'"n":{bar.count},"x":{"true" if closed else "false"},"q":"{spec.fmt_quote(bar.quote_volume, _DEC)}",'
                f'"V":"{spec.fmt_qty(bar.taker_buy_volume, _DEC)}","Q":"{spec.fmt_quote(bar.taker_buy_quote, _DEC)}","B":"0"}}'
            )
            return f'{{"e":"kline","E":{now_ns // div},"s":"{bar.symbol}","k":{k}}}'.encode()

        return raw

    # =========================================================================================
    # the market clock

    def on_market_events(self, events: list[MarketEvent]) -> None:
        specs = self.market.specs
        has = self._subs.__contains__
        publish = self.publish
        faults = self.faults
        for e in events:
            sym = e.symbol
            low = sym.lower()
            spec = specs[sym]
            if e.trades:
                withheld: set[int] = set()
                if faults.withholding:
                    withheld = {t.trade_id for t in e.trades if faults.take_withheld(sym, t.trade_id)}
                name = low + "@trade"
                if has(name):
                    for t in e.trades:
                        if t.trade_id not in withheld:
                            publish(name, self._wrap(name, self._trade_raw(spec, t)))
                name = low + "@aggTrade"
                if has(name):
                    for a in e.aggs:
                        if not withheld or not any(a.first_id <= i <= a.last_id for i in withheld):
                            publish(name, self._wrap(name, self._agg_raw(spec, a)))
                for st in self._klines_by_symbol.get(sym, ()):
                    for t in e.trades:
                        for bar in st.builder.add(t):
                            self._push_kline(st, bar, True, t.ts_ns)
            if e.bbo_changed:
                name = low + "@bookTicker"
                if has(name):
                    publish(name, self._wrap(name, self._book_ticker_raw(spec, e)))
            for _speed, acc in self._diff_by_symbol.get(sym, ()):
                if not acc.first:
                    acc.first = e.update_id
                acc.last = e.update_id
                for p, q in e.bids:
                    acc.bids[p] = q
                for p, q in e.asks:
                    acc.asks[p] = q

    def _kline_stream(self, st: _KlineState) -> str:
        return f"{st.symbol.lower()}@kline_{st.interval}" + ("@+08:00" if st.tz else "")

    def _push_kline(self, st: _KlineState, bar: Bar, closed: bool, now_ns: int) -> None:
        name = self._kline_stream(st)
        self.publish(name, self._wrap(name, self._kline_raw(self.market.specs[st.symbol], bar, closed, now_ns)))

    def on_clock(self, now_ns: int) -> None:
        # klines: the final update of each bar as it closes, and the open bar periodically
        for name, st in list(self._klines.items()):
            if not self.has_subscribers(name):
                del self._klines[name]
                self._klines_by_symbol[st.symbol].remove(st)
                continue
            bar, closed = st.builder.current(now_ns)
            for b in closed[-3:]:  # after a long pause, only the last few empty bars
                self._push_kline(st, b, True, now_ns)
            if now_ns >= st.next_push_ns:
                self._push_kline(st, bar, False, now_ns)
                st.next_push_ns = now_ns + st.push_ns
        if now_ns >= self._next_100ms:
            self._push_depth(100, now_ns)
            self._next_100ms = (now_ns // 100_000_000 + 1) * 100_000_000
        if now_ns >= self._next_1000ms:
            self._push_depth(1000, now_ns)
            self._next_1000ms = (now_ns // NS + 1) * NS

    def _push_depth(self, speed: int, now_ns: int) -> None:
        specs = self.market.specs
        for (symbol, spd), acc in list(self._diff.items()):
            if spd != speed:
                continue
            name = symbol.lower() + ("@depth@100ms" if speed == 100 else "@depth")
            alt = name + "@1000ms" if speed == 1000 else None
            if not self.has_subscribers(name) and not (alt and self.has_subscribers(alt)):
                del self._diff[(symbol, spd)]
                self._diff_by_symbol[symbol].remove((spd, acc))
                continue
            if not acc.first:
                continue
            spec = specs[symbol]
            bids = self._levels(spec, sorted(acc.bids.items(), reverse=True))
            asks = self._levels(spec, sorted(acc.asks.items()))
            first, last = acc.first, acc.last

            def raw(us: bool, bids=bids, asks=asks, first=first, last=last, symbol=symbol) -> bytes:
                e = now_ns // 1000 if us else now_ns // 1_000_000
                return f'{{"e":"depthUpdate","E":{e},"s":"{symbol}","U":{first},"u":{last},"b":[{bids}],"a":[{asks}]}}'.encode()

            self.publish(name, self._wrap(name, raw))
            if alt:
                self.publish(alt, self._wrap(alt, raw))
            acc.first = acc.last = 0
            acc.bids = {}
            acc.asks = {}
        for name, (symbol, levels, spd) in list(self._partial.items()):
            if spd != speed:
                continue
            if not self.has_subscribers(name):
                del self._partial[name]
                continue
            book = self.market.book(symbol)
            spec = specs[symbol]
            data = (
                f'{{"lastUpdateId":{book.update_id},"bids":[{self._levels(spec, book.bids(levels))}],'
                f'"asks":[{self._levels(spec, book.asks(levels))}]}}'
            ).encode()
            self.publish(name, self._wrap(name, lambda us, data=data: data))

    # =========================================================================================
    # recorded frames (replay)

    def publish_recorded(self, frame: RecordedFrame) -> None:
        """Serve a recorded frame: the combined envelope as recorded to combined
        connections, and the exact bytes of its ``data`` value to raw ones."""
        payload = frame.payload
        stream = frame.stream
        data: bytes | None = None
        if payload.startswith(b'{"stream":"'):  # Binance's own spelling: slice without parsing
            end = payload.index(b'"', 11)
            stream = stream or payload[11:end].decode()
            marker = b',"data":'
            at = payload.find(marker, end)
            if at != -1 and payload.endswith(b"}"):
                data = payload[at + len(marker) : -1]
        elif payload.lstrip().startswith(b"{") and b'"stream"' in payload:
            try:
                obj = json.loads(payload)
            except ValueError:
                obj = None
            if isinstance(obj, dict) and isinstance(obj.get("stream"), str) and "data" in obj:
                stream = stream or obj["stream"]
                body = payload.rstrip()
                at = body.rfind(b'"data"')
                tail = body[at + 6 :].lstrip()
                if tail.startswith(b":") and body.endswith(b"}"):
                    data = tail[1:-1].strip()  # "data" is the last key: its exact bytes
                    try:
                        if json.loads(data) != obj["data"]:
                            data = None
                    except ValueError:
                        data = None
                if data is None:
                    data = json.dumps(obj["data"], separators=(",", ":")).encode()
        if stream is None:
            log.warning("recorded frame without a stream name: skipped")
            return
        combined = payload if data is not None else None
        if data is None:
            data = payload
            combined = b'{"stream":"' + stream.encode() + b'","data":' + data + b"}"

        def encode(variant: str) -> bytes:
            return combined if variant[0] == "c" else data  # type: ignore[return-value]

        self.publish(stream, encode)

    # =========================================================================================
    # REST

    def rest_error(self, status: int, kind: str, retry_after: int | None = None) -> RestResponse:
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        if kind == "rate_limit":
            body = {
                "code": -1003,
                "msg": f"Too much request weight used; current limit is {self.weight_limit} request weight "
                "per 1 MINUTE. Please use WebSocket Streams for live updates to avoid polling the API.",
            }
        elif kind == "ban":
            until = time.time_ns() // 1_000_000 + (retry_after or 120) * 1000
            body = {
                "code": -1003,
                "msg": f"Way too much request weight used; IP banned until {until}. "
                "Please use WebSocket Streams for live updates to avoid bans.",
            }
        elif kind == "not_found":
            return RestResponse(404, b"", {}, "text/html")
        else:
            body = {"code": -1001, "msg": "Internal error; unable to process your request. Please try again."}
        return json_response(body, status, headers)

    def _rest(self, path: str, query: str, request: Any) -> RestResponse:
        resp = super()._rest(path, query, request)
        headers = resp.headers if resp.headers is not None else {}
        resp.headers = headers
        headers.setdefault("X-MBX-USED-WEIGHT-1M", str(self._weight_used))
        return resp

    def _charge(self, weight: int) -> None:
        # a fixed window aligned on the clock (Binance: the wall-clock minute)
        now = time.time()
        window = int(now // self.weight_window)
        if window != self._weight_minute:
            self._weight_minute, self._weight_used = window, 0
        self._weight_used += weight
        if self._weight_used > self.weight_limit:
            resp = self.rest_error(429, "rate_limit", max(1, int(self.weight_window - now % self.weight_window)))
            raise RestError(429, json.loads(resp.body), resp.headers)

    @staticmethod
    def _unit(req: RestRequest) -> int:
        return 1000 if req.headers.get("X-MBX-TIME-UNIT", "").upper() == "MICROSECOND" else 1_000_000

    def _symbol(self, req: RestRequest) -> str:
        s = req.get("symbol")
        if not s:
            raise RestError(
                400, {"code": -1102, "msg": "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."}
            )
        if s not in self.market.specs:
            raise RestError(400, {"code": -1121, "msg": "Invalid symbol."})
        return s

    @staticmethod
    def _int(req: RestRequest, name: str, default: int | None = None) -> int | None:
        v = req.get(name)
        if v is None or v == "":
            return default
        try:
            return int(v)
        except ValueError:
            raise RestError(
                400,
                {"code": -1100, "msg": f"Illegal characters found in parameter '{name}'; legal range is '^-?[0-9]{{1,20}}$'."},
            ) from None

    def _limit(self, req: RestRequest, default: int, maximum: int) -> int:
        n = self._int(req, "limit", default)
        assert n is not None
        if n <= 0:
            n = default
        return self.faults.clip_page(min(n, maximum))

    def _time_in(self, req: RestRequest, name: str) -> int | None:
        """startTime/endTime in ms (or µs: 16 digits), as ns."""
        v = self._int(req, name)
        if v is None:
            return None
        return v * 1000 if v >= 10**15 else v * 1_000_000

    def _r_ping(self, req: RestRequest) -> RestResponse:
        self._charge(1)
        return json_response({})

    def _r_time(self, req: RestRequest) -> RestResponse:
        self._charge(1)
        return json_response({"serverTime": time.time_ns() // self._unit(req)})

    def _symbol_info(self, spec: SymbolSpec) -> dict[str, Any]:
        tick = spec.fmt_price(1, _DEC)
        step = spec.fmt_qty(1, _DEC)
        return {
            "symbol": spec.symbol,
            "status": "TRADING",
            "baseAsset": spec.base_asset or spec.symbol[:-4],
            "baseAssetPrecision": 8,
            "quoteAsset": spec.quote_asset or spec.symbol[-4:],
            "quotePrecision": 8,
            "quoteAssetPrecision": 8,
            "baseCommissionPrecision": 8,
            "quoteCommissionPrecision": 8,
            "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
            "icebergAllowed": True,
            "ocoAllowed": True,
            "otoAllowed": True,
            "quoteOrderQtyMarketAllowed": True,
            "allowTrailingStop": True,
            "cancelReplaceAllowed": True,
            "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": False,
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": "1000000.00000000", "tickSize": tick},
                {"filterType": "LOT_SIZE", "minQty": step, "maxQty": "9000.00000000", "stepSize": step},
            ],
            "permissions": [],
            "permissionSets": [["SPOT"]],
            "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
            "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
        }

    def _r_exchange_info(self, req: RestRequest) -> RestResponse:
        self._charge(20)
        one, many = req.get("symbol"), req.get("symbols")
        if one and many:
            raise RestError(400, {"code": -1128, "msg": "Combination of optional parameters invalid."})
        names: list[str]
        if one:
            names = [one]
        elif many:
            try:
                names = json.loads(many)
                if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                    raise ValueError
            except ValueError:
                raise RestError(
                    400,
                    {
                        "code": -1100,
                        "msg": "Illegal characters found in parameter 'symbols'; legal range is "
                        '\'^\\[("[A-Z0-9-_.]{1,20}"(,"[A-Z0-9-_.]{1,20}"){0,}){0,1}\\]$\'.',
                    },
                ) from None
        else:
            names = list(self.market.specs)
        for n in names:
            if n not in self.market.specs:
                raise RestError(400, {"code": -1121, "msg": "Invalid symbol."})
        return json_response(
            {
                "timezone": "UTC",
                "serverTime": time.time_ns() // 1_000_000,
                "rateLimits": [
                    {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": self.weight_limit},
                    {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
                    {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 300000},
                ],
                "exchangeFilters": [],
                "symbols": [self._symbol_info(self.market.specs[n]) for n in names],
            }
        )

    def _r_depth(self, req: RestRequest) -> RestResponse:
        symbol = self._symbol(req)
        limit = self._int(req, "limit", 100) or 100
        limit = min(max(limit, 1), 5000)
        self._charge(5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250)
        book = self.market.book(symbol)
        spec = self.market.specs[symbol]
        body = (
            f'{{"lastUpdateId":{book.update_id},"bids":[{self._levels(spec, book.bids(limit))}],'
            f'"asks":[{self._levels(spec, book.asks(limit))}]}}'
        ).encode()
        return RestResponse(200, body, {})

    def _trade_rows(self, spec: SymbolSpec, trades: list[Trade], div: int) -> list[dict[str, Any]]:
        return [
            {
                "id": t.trade_id,
                "price": spec.fmt_price(t.price, _DEC),
                "qty": spec.fmt_qty(t.qty, _DEC),
                "quoteQty": spec.fmt_quote(t.price * t.qty, _DEC),
                "time": t.ts_ns // div,
                "isBuyerMaker": t.buyer_maker,
                "isBestMatch": True,
            }
            for t in trades
        ]

    def _r_trades(self, req: RestRequest) -> RestResponse:
        symbol = self._symbol(req)
        limit = self._limit(req, 500, 1000)
        self._charge(25)
        return json_response(
            self._trade_rows(self.market.specs[symbol], self.market.trades_from(symbol, None, limit), self._unit(req))
        )

    def _r_historical_trades(self, req: RestRequest) -> RestResponse:
        symbol = self._symbol(req)
        limit = self._limit(req, 500, 1000)
        from_id = self._int(req, "fromId")
        self._charge(25)
        trades = self.market.trades_from(symbol, from_id, limit)
        return json_response(self._trade_rows(self.market.specs[symbol], trades, self._unit(req)))

    def _r_agg_trades(self, req: RestRequest) -> RestResponse:
        symbol = self._symbol(req)
        limit = self._limit(req, 500, 1000)
        from_id = self._int(req, "fromId")
        start, end = self._time_in(req, "startTime"), self._time_in(req, "endTime")
        if start is not None and end is not None and end < start:
            raise RestError(400, {"code": -1127, "msg": "More than 1 hours between startTime and endTime."})
        self._charge(4)
        spec = self.market.specs[symbol]
        div = self._unit(req)
        aggs = self.market.aggs_from(symbol, from_id, limit, start_ns=start, end_ns=end)
        return json_response(
            [
                {
                    "a": a.agg_id,
                    "p": spec.fmt_price(a.price, _DEC),
                    "q": spec.fmt_qty(a.qty, _DEC),
                    "f": a.first_id,
                    "l": a.last_id,
                    "T": a.ts_ns // div,
                    "m": a.buyer_maker,
                    "M": True,
                }
                for a in aggs
            ]
        )

    def _r_klines(self, req: RestRequest) -> RestResponse:
        symbol = self._symbol(req)
        interval = req.get("interval")
        if not interval:
            raise RestError(
                400, {"code": -1102, "msg": "Mandatory parameter 'interval' was not sent, was empty/null, or malformed."}
            )
        if interval not in KLINE_INTERVALS:
            raise RestError(400, {"code": -1120, "msg": "Invalid interval."})
        limit = self._limit(req, 500, 1000)
        tz = self._tz(req.get("timeZone"))
        self._charge(2)
        start, end = self._time_in(req, "startTime"), self._time_in(req, "endTime")
        bars = self.market.bars(symbol, interval, start, end, limit, tz_offset_ns=tz)
        spec = self.market.specs[symbol]
        div = self._unit(req)
        return json_response(
            [
                [
                    b.open_ns // div,
                    spec.fmt_price(b.open, _DEC),
                    spec.fmt_price(b.high, _DEC),
                    spec.fmt_price(b.low, _DEC),
                    spec.fmt_price(b.close, _DEC),
                    spec.fmt_qty(b.volume, _DEC),
                    b.close_ns // div - 1,
                    spec.fmt_quote(b.quote_volume, _DEC),
                    b.count,
                    spec.fmt_qty(b.taker_buy_volume, _DEC),
                    spec.fmt_quote(b.taker_buy_quote, _DEC),
                    "0",
                ]
                for b in bars
            ]
        )

    @staticmethod
    def _tz(value: str | None) -> int:
        """``timeZone``: hours[:minutes], e.g. ``8``, ``-1:00``, ``+05:45`` (range -12..+14)."""
        if not value:
            return 0
        m = re.match(r"^([+-]?)(\d{1,2})(?::(\d{2}))?$", value)
        if not m or not -12 <= int(m.group(2)) <= 14:
            raise RestError(
                400, {"code": -1100, "msg": f"Illegal characters found in parameter 'timeZone'; legal range is '{value}'."}
            )
        sign = -1 if m.group(1) == "-" else 1
        return sign * (int(m.group(2)) * 3600 + int(m.group(3) or 0) * 60) * NS
