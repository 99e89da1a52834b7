"""Finnhub WebSocket trades, sans-IO.

Protocol facts this module relies on (``shared/providers/finnhub.md``; Finnhub's docs
"WebSocket Trades" (``finnhub.io/docs/api/websocket-trades``) and its sample frames;
finnhub-python 2.4.29 ``finnhub/client.py`` (REST only: the SDK has no WebSocket
client); issues in finnhubio/Finnhub-API #109, #137, #252, #465, #517, #520):

- URL ``wss://ws.finnhub.io?token=<key>`` (request line ``GET /?token=...``). The key is
  the only credential; there is no auth message. A wrong key is refused at the upgrade
  with HTTP 401 (#465).
- No welcome message; ``{"type":"subscribe","symbol":"AAPL"}`` and ``"unsubscribe"``, one
  symbol per message, are never acknowledged: an unknown symbol is accepted silently
  and never delivers. Symbols: US stocks plain (``AAPL``), crypto ``BINANCE:BTCUSDT``,
  forex ``OANDA:EUR_USD``.
- Server messages: ``{"data":[{"c":[..],"p":..,"s":..,"t":<ms>,"v":..}],"type":"trade"}``
  (several symbols may share a frame; ``c`` condition codes as strings, ``null`` or
  absent for crypto; ``v`` is 0 for forex price updates), ``{"type":"ping"}`` about once a
  minute while idle (no reply needed), ``{"msg":"..","type":"error"}``; the one error text
  confirmed is ``Subscribing to too many symbols`` (it does not say which symbol: the
  last one subscribed, per field reports).
- Trades carry no id and no sequence number, so neither duplicates nor gaps can be
  detected by id; several prints share one millisecond.
- One connection per key (a second one drops the first or both); 50 symbols on the free
  plan.
- REST (symbol lists): ``GET /api/v1/stock/symbol?exchange=US``,
  ``/api/v1/crypto/symbol?exchange=binance``, ``/api/v1/forex/symbol?exchange=oanda``,
  with the key in the ``X-Finnhub-Token`` header (or ``?token=``); rows carry ``symbol``.

History (gap healing; ``shared/providers/rest-history.md`` §6): ``GET /api/v1/stock/tick?
symbol=&date=YYYY-MM-DD&limit=&skip=`` (premium plans; key in ``X-Finnhub-Token``) answers
one UTC day's trades as parallel arrays ``{"s","skip","count","total","v","p","t" (ms),
"x","c"}``, paged by ``skip``. No trade ids: a window is reconciled with the stream by
(time, price, size) multiset, and an edge millisecond whose streamed trades are not all in
the history stays unhealed (:mod:`wrdata.streaming.heal`). Crypto symbols have no tick
history. A plan without it gets 401/403: such gaps are unhealable. Free plans: 60 calls a
minute, 30 a second.

Choices: the token travels only in the connection URL, which every log line and
recording shows redacted (:func:`~wrdata.streaming.base.redact_url`), and in a REST
header, which is never recorded. A refused upgrade (401/403) is fatal. Trades are the
only kind; bars of any interval are built from them. Symbols are checked against the
symbol list of their exchange before subscribing (plain tickers against ``US``; a
dotted ticker absent from it, e.g. ``VOD.L``, is let through since other exchanges'
lists are not fetched). ``silence_timeout`` is 150 s: two missed pings.
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import re
import time
from collections.abc import Hashable
from typing import Any

import msgspec

from ..channels import Channel
from ..message import StreamMessage, status_message
from .base import AuthenticationError, HttpRequest, HttpResponse, Session, UnknownSymbolError, UnsupportedChannelError, Venue
from .heal import HealSpec, HistoryError, HistoryPager, Row
from .runner import WsClient

log = logging.getLogger("wrdata.streaming.finnhub")

_STOCK_SHAPE = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,5}(?:\.[A-Za-z]{1,2})?$")
_MS = 1_000_000
_MISSING_KEY = (
    "finnhub: no API key: set FINNHUB_API_KEY, or pass credentials={'finnhub': {'key': ...}} (or finnhub_key=...)"
)
_FOREX_BROKERS = frozenset({"OANDA", "FXCM", "FOREX.COM", "IC MARKETS", "FXPRO", "OCTAFX", "PEPPERSTONE", "FHFX"})


class FinnhubAuthError(AuthenticationError):
    """The upgrade was refused (HTTP 401/403): a wrong or sandbox key."""


class _Trade(msgspec.Struct, gc=False):
    s: str
    p: float
    t: int
    v: float = 0.0
    c: list[str] | None = None


class _Message(msgspec.Struct, gc=False):
    type: str = ""
    data: list[_Trade] | None = None
    msg: str | None = None


class _Envelope(msgspec.Struct):
    type: str = ""
    msg: str | None = None


_decode = msgspec.json.Decoder(_Message).decode
_decode_envelope = msgspec.json.Decoder(_Envelope).decode
_encode = msgspec.json.Encoder().encode


class FinnhubVenue(Venue):
    name = "finnhub"
    default_url = "wss://ws.finnhub.io"
    credential_env = {"key": ("FINNHUB_API_KEY", "FINNHUB_TOKEN", "FINNHUB_KEY")}
    stock = True
    native_bars = frozenset()
    kinds = frozenset({"trade"})

    max_streams_per_conn = 1 << 30  # one connection per key: a second one kills the first
    control_interval = 0.02  # a burst of 50 subscribes is fine (field reports)
    ws_ping_interval = 20.0
    silence_timeout = 150.0  # the server pings about once a minute while idle
    #: check symbols against Finnhub's symbol lists before subscribing
    validate_symbols = True
    # healing: no ids; times are ms; 60 calls a minute
    trade_time_resolution = 1_000_000
    history_rate = 0.5
    history_burst = 5.0

    @classmethod
    def find_credentials(cls, given: dict[str, str]) -> dict[str, str]:
        norm = {("key" if k in ("token", "api_key", "apikey") else k): v for k, v in given.items()}
        return super().find_credentials(norm)

    def derive_rest_url(self, ws_url: str) -> str:
        if "ws.finnhub.io" in ws_url:
            return "https://finnhub.io"
        return Venue.derive_rest_url(self, ws_url)

    @classmethod
    def claims(cls, symbol: str) -> bool:
        return bool(_STOCK_SHAPE.match(symbol))

    def venue_symbol(self, symbol: str) -> str:
        s = symbol.strip()
        exchange, sep, rest = s.partition(":")
        if sep:
            return f"{exchange.upper()}:{rest.upper()}"
        return s.upper()

    def symbols_request(self, exchange: str, kind: str) -> HttpRequest:
        return HttpRequest(
            f"{self.rest_url}/api/v1/{kind}/symbol", {"exchange": exchange},
            headers={"X-Finnhub-Token": self.credentials.get("key", "")}, purpose="instruments",
        )

    def check_channel(self, channel: Channel) -> None:
        if channel.kind == "bar":
            return  # built from trades
        if channel.kind != "trade":
            raise UnsupportedChannelError(f"finnhub streams trades only (and bars built from them), not {channel.kind}")

    def streams(self, symbol: str, channel: Channel) -> list[Hashable]:
        if channel.kind not in ("trade", "bar"):
            raise UnsupportedChannelError(f"finnhub streams trades only, not {channel.kind}")
        return [symbol]

    def stream_target(self, stream: Hashable) -> tuple[str | None, str | None]:
        return str(stream), "trade"

    def session(self, conn: int, streams: list[Hashable]) -> FinnhubSession:
        return FinnhubSession(self, conn, streams)

    def history_pager(self, spec: HealSpec) -> FinnhubHistory | None:
        if spec.channel != "trade" or ":" in spec.symbol:
            return None  # crypto (BINANCE:BTCUSDT) has candles, not ticks
        return FinnhubHistory(self, spec)

    def client(self, sink, raw_sink=None, on_fatal=None, transport: str | None = None) -> FinnhubClient:
        return FinnhubClient(self, sink, raw_sink, on_fatal, transport)


class FinnhubClient(WsClient):
    """The shared runner plus Finnhub's symbol check (one list per exchange, fetched once)."""

    venue: FinnhubVenue

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lists: dict[tuple[str, str], frozenset[str] | None] = {}
        self._lock = asyncio.Lock()

    async def validate_symbol(self, symbol: str) -> None:
        venue = self.venue
        if not venue.has_credentials(venue.credentials):
            raise FinnhubAuthError(_MISSING_KEY)
        if not venue.validate_symbols:
            return
        exchange, sep, _ = symbol.partition(":")
        if not sep:
            known = await self._list("US", "stock")
            if known is None or symbol in known:
                return
            if "." in symbol:
                log.debug("finnhub: %s is not a US listing; other exchanges are not validated", symbol)
                return
            self._unknown(symbol, known)
        kinds = ("forex", "crypto") if exchange in _FOREX_BROKERS else ("crypto", "forex")
        lists = []
        for kind in kinds:
            known = await self._list(exchange.lower(), kind)
            if known is None:
                return  # cannot tell
            if symbol in known:
                return
            lists.append(known)
        self._unknown(symbol, frozenset().union(*lists))

    def _unknown(self, symbol: str, known: frozenset[str]) -> None:
        close = difflib.get_close_matches(symbol, sorted(known), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UnknownSymbolError(f"finnhub: unknown symbol {symbol!r}{hint}")

    async def _list(self, exchange: str, kind: str) -> frozenset[str] | None:
        async with self._lock:
            key = (exchange, kind)
            if key in self.lists:
                return self.lists[key]
            req = self.venue.symbols_request(exchange.upper() if kind == "stock" else exchange, kind)
            known: frozenset[str] | None = None
            try:
                resp, _ts, _seq = await self.request(req)
            except OSError as e:
                log.warning("finnhub: cannot fetch the %s symbol list (%s); symbols are not validated", exchange, e)
                resp = None
            if resp is not None:
                if resp.status in (401, 403):
                    raise FinnhubAuthError(f"finnhub refused the API key (HTTP {resp.status}): check FINNHUB_API_KEY")
                if resp.status == 200:
                    try:
                        rows = msgspec.json.decode(resp.body)
                        known = frozenset(r["symbol"] for r in rows if isinstance(r, dict) and "symbol" in r)
                    except (msgspec.DecodeError, TypeError) as e:
                        log.warning("finnhub: unreadable symbol list (%s); symbols are not validated", e)
                else:
                    log.warning("finnhub: symbol list request failed (HTTP %d); symbols are not validated", resp.status)
            self.lists[key] = known
            return known


class FinnhubSession(Session):
    venue: FinnhubVenue

    def __init__(self, venue: FinnhubVenue, conn: int, streams) -> None:
        super().__init__(venue, conn, streams)
        self.last_subscribed: str | None = None

    def url(self) -> str:
        from urllib.parse import quote

        return f"{self.venue.url}/?token={quote(self.venue.credentials.get('key', ''), safe='')}"

    def on_connect_error(self, status: int | None, error: Exception) -> Exception | None:
        if status in (401, 403):
            return FinnhubAuthError(f"finnhub refused the API key (HTTP {status} on connect): check FINNHUB_API_KEY")
        return None  # 429, 5xx, 524 origin time-outs: retry with backoff

    def on_open(self, ts_recv: int) -> list[StreamMessage]:
        for s in sorted(self.streams):
            self._send("subscribe", str(s))
        self.ready = True  # nothing is ever acknowledged
        return []

    def add(self, streams: list[Hashable]) -> None:
        for s in sorted(streams, key=str):
            self._send("subscribe", str(s))
        self.streams.update(streams)

    def remove(self, streams: list[Hashable]) -> None:
        for s in sorted(streams, key=str):
            self._send("unsubscribe", str(s))
            self.streams.discard(s)

    def _send(self, action: str, symbol: str) -> None:
        self.outbox.append(_encode({"type": action, "symbol": symbol}).decode())
        if action == "subscribe":
            self.last_subscribed = symbol

    def feed(self, payload: bytes, ts_recv: int, seq: int) -> list[StreamMessage]:
        try:
            m = _decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            try:
                env = _decode_envelope(payload)
            except (msgspec.DecodeError, msgspec.ValidationError):
                return self.bad_frame("json", payload, ts_recv, seq, e)
            return self.bad_frame(env.type or "message", payload, ts_recv, seq, e)
        t = m.type
        if t == "trade":
            conn = self.conn
            new = StreamMessage
            return [
                new(provider="finnhub", symbol=d.s, kind="trade", ts_recv=ts_recv, ts_event=d.t * _MS, conn=conn, seq=seq,
                    idx=i, channel="trade", price=d.p, size=d.v, conditions=",".join(d.c) if d.c else None)
                for i, d in enumerate(m.data or ())
            ]
        if t == "ping":
            return []  # proof of life; no reply needed
        if t == "error":
            text = m.msg or ""
            symbol = self.last_subscribed if "symbol" in text.lower() else None
            reason = f"finnhub error: {text}" + (f" (last subscribed: {symbol})" if symbol else "")
            return [status_message("finnhub", "error", ts_recv, reason[:300], symbol=symbol, channel="trade" if symbol else None,
                                   conn=self.conn, seq=seq)]
        if t in ("news", "pr"):
            return []
        return self.bad_frame(f"type {t!r}", payload, ts_recv, seq, "unknown message type")


__all__ = ["FinnhubAuthError", "FinnhubClient", "FinnhubSession", "FinnhubVenue"]


# -- history (gap healing) -----------------------------------------------------------------------

class _TickPage(msgspec.Struct):
    total: int = 0
    count: int = 0
    skip: int = 0
    t: list[int] = []
    p: list[float] = []
    v: list[float] = []
    c: list[list[str] | None] | None = None


_tick_page = msgspec.json.Decoder(_TickPage)
_DAY_MS = 86_400_000


class FinnhubHistory(HistoryPager):
    """``/stock/tick`` for each UTC day the window touches, by ``skip`` (module doc)."""

    page = 25_000

    def __init__(self, venue: FinnhubVenue, spec: HealSpec) -> None:
        super().__init__(venue, spec)
        if self.lo is None or self.hi is None:
            self.exhausted = True
            self.notes.append("the gap has no start time to heal from")
            return
        self.day = self.lo // 1_000_000 // _DAY_MS
        self.last_day = self.hi // 1_000_000 // _DAY_MS
        self.skip = 0

    def _next(self) -> HttpRequest | None:
        date = time.strftime("%Y-%m-%d", time.gmtime(self.day * 86_400))
        return HttpRequest(
            f"{self.venue.rest_url}/api/v1/stock/tick",
            {"symbol": self.spec.symbol, "date": date, "limit": self.page, "skip": self.skip},
            headers={"X-Finnhub-Token": self.venue.credentials.get("key", "")},
            purpose="history",
        )

    def _page(self, request: HttpRequest, response: HttpResponse) -> list[Row]:
        try:
            pg = _tick_page.decode(response.body)
            n = len(pg.t)
            if not (len(pg.p) == len(pg.v) == n) or (pg.c is not None and len(pg.c) != n):
                raise ValueError("arrays of different lengths")
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as e:
            raise HistoryError(f"malformed tick page: {e}") from None
        ms = 1_000_000
        conds = pg.c or [None] * n
        rows = [(pg.t[i] * ms, pg.p[i], float(pg.v[i]), None, None, None, None, ",".join(conds[i]) if conds[i] else None)
                for i in range(n)]
        self.skip += n
        past = n and pg.t[-1] * ms > self.hi  # ticks come in time order: the window is behind us
        if past or n == 0 or self.skip >= pg.total:
            if past or self.day >= self.last_day:
                self.complete = True
            else:
                self.day, self.skip = self.day + 1, 0
        return rows
