"""Polygon.io (branded Massive since 2025-10-30) WebSocket clusters, sans-IO.

Protocol facts this module relies on (``shared/providers/polygon.md``; Massive's docs
``websocket/quickstart``, ``websocket/stocks/{trades,quotes,aggregates-per-second,
aggregates-per-minute}``, ``websocket/crypto/{trades,quotes,aggregates-per-second,
aggregates-per-minute}``, knowledge-base "How many WebSocket connections can I use";
the official SDK massive 2.9.1 ``massive/websocket/__init__.py`` and
``models/{common,models}.py`` (same protocol code as polygon-api-client 1.16.3), read,
not copied):

- Hosts: ``wss://socket.massive.com`` (real time; legacy ``socket.polygon.io``),
  ``wss://delayed.massive.com`` (15-minute delayed); one path per asset class
  ("cluster"): ``/stocks``, ``/crypto`` (also ``/options``, ``/forex``, ... not served
  here). Different clusters are different connections (:meth:`connection_group`).
- Every server frame is a JSON array of events; client frames are single objects.
  ``[{"ev":"status","status":"connected","message":"Connected Successfully"}]`` on
  connect; ``{"action":"auth","params":"<key>"}`` -> ``status`` ``auth_success`` or
  ``auth_failed`` (the message says why, e.g. the plan lacks this cluster);
  ``auth_timeout`` when no auth comes; ``{"action":"subscribe","params":"T.AAPL,Q.AAPL"}``
  (comma list of ``<PREFIX>.<ticker>``, ``*`` for all) -> one ``success`` status per
  topic, ``"subscribed to: T.AAPL"``; ``unsubscribe`` likewise.
- ``max_connections``: one connection per cluster per key unless the plan allows more;
  the server sends ``max_connections`` to the *oldest* connection and closes it. The
  SDK also names ``error``, ``slow_consumer`` and ``force_disconnect`` statuses.
- Stocks: ``T`` ``{sym,x,i,z,p,s,c,t,q,trfi,trft}`` (``i`` trade id is a *string*,
  unique per exchange only; ``x`` exchange id int; ``c`` condition ints, absent when
  none; ``t`` SIP time in ms; ``q`` sequence, increasing per ticker with gaps allowed);
  ``Q`` NBBO ``{sym,bx,bp,bs,ax,ap,as,c,i,t,q,z}`` (sizes in round lots); ``A``
  (second) / ``AM`` (minute) aggregates ``{sym,v,av,op,vw,o,c,h,l,a,z,s,e}`` with ``s``/
  ``e`` the window start/end in ms and no event for a window without trades. ``LULD``,
  ``NOI``, ``FMV``, ``LV`` also exist (the ticker in ``T`` for the first two).
- Crypto: ``XT`` ``{pair,p,t,s,c,i,x,r}`` (``pair`` ``BTC-USD``; ``c`` 1 = sell side,
  2 = buy side; ``i`` an int per the docs, a string per the SDK), ``XQ``
  ``{pair,bp,bs,ap,as,t,x,r}``, ``XA`` (minute) / ``XAS`` (second) ``{pair,o,c,h,l,v,vw,s,e,z}``,
  ``XL2`` book snapshots.
- No application heartbeat; the SDK relies on WebSocket pings (every 20 s).
- Credentials: massive reads ``MASSIVE_API_KEY``, polygon-api-client ``POLYGON_API_KEY``.

Choices:

- Symbols are the stream's spelling: tickers (``AAPL``) and crypto pairs ``BTC-USD``
  (``X:BTCUSD``, the REST spelling, and ``BTC/USD`` are accepted and converted).
- ``trade`` -> ``T``/``XT``; ``quote`` -> ``Q``/``XQ``; ``bar:1s`` -> ``A``/``XAS``;
  ``bar:1m`` -> ``AM``/``XA`` (closed bars, ``ts_event`` = window start); other intervals
  are built from trades. Trades keep the string id in ``trade_ref`` (stocks) or the
  integer id in ``trade_id`` (crypto, when an int arrives), the exchange id as text in
  ``exchange`` and the condition codes as ``"0,12"`` in ``conditions``; ``XT`` sides come
  from its conditions. ``q`` is not dense, so it reveals no gaps; one connection per
  cluster means no rollover overlap to de-duplicate.
- A frame decodes in one typed pass into per-event structs (one union over every event
  type) and becomes messages in one loop with no per-event dict or datetime;
  ``bench/polygon_parse.py`` measures it. A frame that does not decode as a whole is
  salvaged event by event; unknown event types are skipped and logged once.
- ``auth_failed`` is fatal; ``auth_timeout``, ``slow_consumer`` and ``force_disconnect``
  reconnect; ``max_connections`` reconnects (the other connection may be a dead one of
  ours) and is fatal after ``max_connection_kicks`` in a row.
- History (gap healing; ``shared/providers/rest-history.md`` §5, Massive's "Trades"):
  ``GET /v3/trades/{ticker}?timestamp.gte=<ns>&timestamp.lte=<ns>&order=asc&limit=`` (key
  as a Bearer token; stocks ``AAPL``, crypto ``X:BTCUSD``; ``limit`` ≤ 50000; default order
  is newest first, so ``order=asc`` is always sent), then ``next_url`` (its path and query
  on our REST base, as the SDK does) until it is absent. Rows ``{conditions, exchange
  (int), id (string, per exchange), price, size, sip_timestamp (ns), sequence_number}``;
  crypto ``participant_timestamp``. ``id`` is the stream's ``i`` and ``exchange`` its ``x``,
  so a trade is known by (exchange, id) (:mod:`wrdata.dedupe`); REST times are ns where the
  stream's are ms. Free plans: 5 requests a minute (429 beyond).
- Symbols are not validated up front: the ticker list is paged (1000 per page, tens of
  thousands of tickers) and free keys get 5 REST calls a minute.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Hashable
from typing import Any, Union

import msgspec

from ..channels import Channel
from ..message import StreamMessage, status_message
from .base import AuthenticationError, HttpRequest, HttpResponse, ProviderError, Session, UnsupportedChannelError, Venue
from .heal import HealSpec, HistoryError, HistoryPager, Row

log = logging.getLogger("wrdata.streaming.polygon")

_STOCK_SHAPE = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,5}(?:\.[A-Za-z]{1,2})?$")
_CRYPTO_QUOTES = ("USDT", "USDC", "USD", "EUR", "GBP", "JPY", "CAD", "AUD", "CHF", "BTC", "ETH")
_MS = 1_000_000
#: topic prefix -> (channel route, cluster)
PREFIXES = {
    "T": ("trade", "stocks"), "Q": ("quote", "stocks"), "A": ("bar:1s", "stocks"), "AM": ("bar:1m", "stocks"),
    "XT": ("trade", "crypto"), "XQ": ("quote", "crypto"), "XAS": ("bar:1s", "crypto"), "XA": ("bar:1m", "crypto"),
}
_MISSING_KEY = (
    "polygon: no API key: set POLYGON_API_KEY (or MASSIVE_API_KEY), or pass "
    "credentials={'polygon': {'key': ...}} (or polygon_key=...)"
)
_EXCHANGE = tuple(str(i) for i in range(256))  # exchange ids as text without a str() per event


class PolygonAuthError(AuthenticationError):
    """``auth_failed``: a wrong key, or a plan without this cluster."""


class PolygonConnectionLimitError(ProviderError):
    """``max_connections`` again and again: another client uses this key on this cluster."""


# -- wire types -------------------------------------------------------------------------------
# Only the fields wrdata uses are declared: msgspec skips the others without building them.

_NO_CONDITIONS = msgspec.Raw(b"")
_JSON_SPACE = b" \t\r\n"
_MISS = object()
#: JSON text of a condition list -> "0,12" (None for none); bounded: cleared if it ever fills
_CONDITIONS: dict[bytes, str | None] = {}
#: the same for crypto trades, with the aggressor side (conditions 1 = sell, 2 = buy)
_CRYPTO_CONDITIONS: dict[bytes, tuple[str | None, str | None]] = {}


def _conditions(text: bytes) -> str | None:
    """``b"[0, 12]"`` -> ``"0,12"``; ``b""``/``b"null"``/``b"[]"`` -> None. Cached."""
    value = (text[1:-1].translate(None, _JSON_SPACE).decode() or None) if text[:1] == b"[" else None
    if len(_CONDITIONS) >= 4096:
        _CONDITIONS.clear()
    _CONDITIONS[text] = value
    return value


def _crypto_conditions(text: bytes) -> tuple[str | None, str | None]:
    value = (text[1:-1].translate(None, _JSON_SPACE).decode() or None) if text[:1] == b"[" else None
    codes = value.split(",") if value else ()
    side = "sell" if "1" in codes else "buy" if "2" in codes else None
    if len(_CRYPTO_CONDITIONS) >= 4096:
        _CRYPTO_CONDITIONS.clear()
    _CRYPTO_CONDITIONS[text] = (value, side)
    return value, side


class _T(msgspec.Struct, tag_field="ev", tag="T", gc=False):
    sym: str
    p: float
    s: float
    t: int
    x: int = 0
    i: str | int | None = None  # a string per the docs and the SDK; tolerate a number
    c: msgspec.Raw = _NO_CONDITIONS  # the JSON text of the int list: "[0,12]" -> "0,12" costs one slice


class _Q(msgspec.Struct, tag_field="ev", tag="Q", gc=False):
    sym: str
    bp: float
    bs: float
    ap: float
    as_: float = msgspec.field(name="as")
    t: int = 0
    q: int | None = None


class _A(msgspec.Struct, tag_field="ev", tag="A", gc=False):
    sym: str
    o: float
    h: float
    l: float  # noqa: E741 (the venue's field name)
    c: float
    v: float
    s: int


class _AM(_A, tag="AM"):
    pass


class _XT(msgspec.Struct, tag_field="ev", tag="XT", gc=False):
    pair: str
    p: float
    s: float
    t: int
    x: int = 0
    i: int | str | None = None
    c: msgspec.Raw = _NO_CONDITIONS


class _XQ(msgspec.Struct, tag_field="ev", tag="XQ", gc=False):
    pair: str
    bp: float
    bs: float
    ap: float
    as_: float = msgspec.field(name="as")
    t: int = 0


class _XA(msgspec.Struct, tag_field="ev", tag="XA", gc=False):
    pair: str
    o: float
    h: float
    l: float  # noqa: E741
    c: float
    v: float
    s: int


class _XAS(_XA, tag="XAS"):
    pass


class _Status(msgspec.Struct, tag_field="ev", tag="status", gc=False):
    status: str = ""
    message: str = ""


def _ignored(tag: str) -> type:
    return msgspec.defstruct(f"_Ignored{tag}", [], tag_field="ev", tag=tag, gc=False)


_IGNORED = tuple(_ignored(t) for t in ("LULD", "NOI", "FMV", "LV", "XL2", "V"))
_EVENTS = (_T, _Q, _A, _AM, _XT, _XQ, _XA, _XAS, _Status, *_IGNORED)
_TAGS = frozenset(("T", "Q", "A", "AM", "XT", "XQ", "XA", "XAS", "status", "LULD", "NOI", "FMV", "LV", "XL2", "V"))
_frame = msgspec.json.Decoder(list[Union[_EVENTS]])  # noqa: UP007
_event = msgspec.json.Decoder(Union[_EVENTS])  # noqa: UP007
_raw_events = msgspec.json.Decoder(list[msgspec.Raw])


class _Tag(msgspec.Struct):
    ev: str | None = None


_tag = msgspec.json.Decoder(_Tag)
_encode = msgspec.json.Encoder().encode


def pair_from_symbol(symbol: str) -> str:
    """``X:BTCUSD`` / ``BTC/USD`` / ``btc-usd`` -> ``BTC-USD`` (the stream's spelling)."""
    s = symbol.strip().upper()
    if s.startswith("X:"):
        body = s[2:]
        for q in _CRYPTO_QUOTES:
            if body.endswith(q) and len(body) > len(q):
                return f"{body[: -len(q)]}-{q}"
        raise ValueError(f"polygon: cannot split {symbol!r} into base and quote: write it as BASE-QUOTE (BTC-USD)")
    return s.replace("/", "-")


# -- venue ---------------------------------------------------------------------------------------

class PolygonVenue(Venue):
    name = "polygon"
    default_url = "wss://socket.massive.com"
    credential_env = {"key": ("POLYGON_API_KEY", "MASSIVE_API_KEY")}
    stock = True
    native_bars = frozenset({"1s", "1m"})
    kinds = frozenset({"trade", "quote", "bar"})

    max_streams_per_conn = 1 << 30  # one connection per cluster per key: never split a cluster
    control_interval = 0.05
    ws_ping_interval = 20.0
    silence_timeout = 60.0
    #: topics per subscribe frame
    topics_per_frame = 1000
    #: ``max_connections`` this many times in a row stops the provider
    max_connection_kicks = 3
    # healing: ids are per exchange (no order); the stream's times are ms; the free plan
    # allows 5 REST calls a minute
    trade_time_resolution = 1_000_000
    history_rate = 5 / 60
    history_burst = 5.0

    def __init__(self, url: str | None = None, rest_url: str | None = None, credentials: dict[str, str] | None = None,
                 **options: Any) -> None:
        super().__init__(url, rest_url, credentials, **options)
        self.kicks = 0  # consecutive max_connections, over all connections

    @classmethod
    def find_credentials(cls, given: dict[str, str]) -> dict[str, str]:
        norm = {("key" if k in ("api_key", "apikey", "token") else k): v for k, v in given.items()}
        return super().find_credentials(norm)

    def derive_rest_url(self, ws_url: str) -> str:
        if ws_url.endswith(".massive.com") or ".massive.com/" in ws_url:
            return "https://api.massive.com"
        if ".polygon.io" in ws_url:
            return "https://api.polygon.io"
        return Venue.derive_rest_url(self, ws_url)

    @classmethod
    def claims(cls, symbol: str) -> bool:
        return bool(_STOCK_SHAPE.match(symbol))

    def venue_symbol(self, symbol: str) -> str:
        s = symbol.strip()
        if s.upper().startswith("X:") or "/" in s or "-" in s:
            return pair_from_symbol(s)
        return s.upper()

    def check_channel(self, channel: Channel) -> None:
        if channel.kind not in ("trade", "quote", "bar"):
            raise UnsupportedChannelError(f"polygon has no {channel.kind} stream here (trade, quote and bar are supported)")

    def streams(self, symbol: str, channel: Channel) -> list[Hashable]:
        crypto = "-" in symbol
        k = channel.kind
        if k == "trade":
            prefix = "XT" if crypto else "T"
        elif k == "quote":
            prefix = "XQ" if crypto else "Q"
        elif k == "bar":
            if channel.interval == "1s":
                prefix = "XAS" if crypto else "A"
            elif channel.interval == "1m":
                prefix = "XA" if crypto else "AM"
            else:
                prefix = "XT" if crypto else "T"  # built from trades
        else:
            raise UnsupportedChannelError(f"polygon has no {k} stream")
        return [f"{prefix}.{symbol}"]

    def stream_target(self, stream: Hashable) -> tuple[str | None, str | None]:
        prefix, _, symbol = str(stream).partition(".")
        return symbol, PREFIXES[prefix][0]

    def connection_group(self, stream: Hashable) -> Hashable:
        return PREFIXES[str(stream).partition(".")[0]][1]

    def session(self, conn: int, streams: list[Hashable]) -> PolygonSession:
        return PolygonSession(self, conn, streams)

    def history_pager(self, spec: HealSpec) -> PolygonHistory | None:
        return PolygonHistory(self, spec) if spec.channel == "trade" else None


# -- session ------------------------------------------------------------------------------------

class PolygonSession(Session):
    venue: PolygonVenue

    def __init__(self, venue: PolygonVenue, conn: int, streams) -> None:
        super().__init__(venue, conn, streams)
        first = next(iter(self.streams), None)
        self.cluster = venue.connection_group(first) if first is not None else "stocks"
        self.state = "connecting"  # connected, authenticated
        self.pending: set[str] = set()  # topics sent and not acknowledged yet
        self._unknown: set[str] = set()

    def url(self) -> str:
        return f"{self.venue.url}/{self.cluster}"

    def redact(self, payload: bytes) -> bytes:
        if b'"auth"' not in payload:
            return payload
        try:
            msg = msgspec.json.decode(payload)
        except msgspec.DecodeError:
            return payload
        if isinstance(msg, dict) and msg.get("action") == "auth":
            return _encode({**msg, "params": "***"})
        return payload

    # -- subscriptions -------------------------------------------------------------------------
    def add(self, streams: list[Hashable]) -> None:
        self.streams.update(streams)
        if self.state == "authenticated":
            self._control("subscribe", [str(s) for s in streams])

    def remove(self, streams: list[Hashable]) -> None:
        for s in streams:
            self.streams.discard(s)
            self.pending.discard(str(s))
        if self.state == "authenticated":
            self._control("unsubscribe", [str(s) for s in streams])

    def _control(self, action: str, topics: list[str]) -> None:
        topics = sorted(topics)
        step = max(1, self.venue.topics_per_frame)
        for i in range(0, len(topics), step):
            self.outbox.append(_encode({"action": action, "params": ",".join(topics[i : i + step])}).decode())
        if action == "subscribe":
            self.pending.update(topics)

    # -- frames --------------------------------------------------------------------------------
    def feed(self, payload: bytes, ts_recv: int, seq: int) -> list[StreamMessage]:
        try:
            events = _frame.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            return self._salvage(payload, ts_recv, seq, e)
        return self._messages(events, ts_recv, seq)

    def _messages(self, events: list, ts: int, seq: int) -> list[StreamMessage]:
        # The hot loop: one class test and one constructor call per event; condition
        # lists are looked up by their JSON text (a few hundred distinct ones a day).
        out: list[StreamMessage] = []
        append = out.append
        conn = self.conn
        new = StreamMessage
        xs = _EXCHANGE
        ms = _MS
        conditions = _CONDITIONS
        idx = 0
        for e in events:
            cls = e.__class__
            if cls is _T:
                c = bytes(e.c)
                cond = conditions.get(c, _MISS)
                if cond is _MISS:
                    cond = _conditions(c)
                x = e.x
                i = e.i
                append(new(
                    provider="polygon", symbol=e.sym, kind="trade", ts_recv=ts, ts_event=e.t * ms, conn=conn, seq=seq,
                    idx=idx, channel="trade", price=e.p, size=e.s, trade_ref=i if i.__class__ is str or i is None else str(i),
                    exchange=xs[x] if 0 <= x < 256 else str(x), conditions=cond,
                ))
            elif cls is _Q:
                append(new(
                    provider="polygon", symbol=e.sym, kind="quote", ts_recv=ts, ts_event=e.t * ms, conn=conn, seq=seq,
                    idx=idx, channel="quote", bid=e.bp, ask=e.ap, bid_size=e.bs, ask_size=e.as_, update_id=e.q,
                ))
            elif cls is _XT:
                c = bytes(e.c)
                both = _CRYPTO_CONDITIONS.get(c)
                if both is None:
                    both = _crypto_conditions(c)
                x = e.x
                i = e.i
                if i.__class__ is int:  # the docs' type; the SDK's is str
                    append(new(
                        provider="polygon", symbol=e.pair, kind="trade", ts_recv=ts, ts_event=e.t * ms, conn=conn, seq=seq,
                        idx=idx, channel="trade", price=e.p, size=e.s, side=both[1], trade_id=i,
                        exchange=xs[x] if 0 <= x < 256 else str(x), conditions=both[0],
                    ))
                else:
                    append(new(
                        provider="polygon", symbol=e.pair, kind="trade", ts_recv=ts, ts_event=e.t * ms, conn=conn, seq=seq,
                        idx=idx, channel="trade", price=e.p, size=e.s, side=both[1], trade_ref=i,
                        exchange=xs[x] if 0 <= x < 256 else str(x), conditions=both[0],
                    ))
            elif cls is _XQ:
                append(new(
                    provider="polygon", symbol=e.pair, kind="quote", ts_recv=ts, ts_event=e.t * ms, conn=conn, seq=seq,
                    idx=idx, channel="quote", bid=e.bp, ask=e.ap, bid_size=e.bs, ask_size=e.as_,
                ))
            elif cls is _AM or cls is _A:
                append(self._bar(e.sym, e, "1m" if cls is _AM else "1s", ts, seq, idx))
            elif cls is _XA or cls is _XAS:
                append(self._bar(e.pair, e, "1m" if cls is _XA else "1s", ts, seq, idx))
            elif cls is _Status:
                idx = self._status(e, ts, seq, out)
                continue
            else:
                continue  # LULD, NOI, FMV, ...: not in the event model; kept in raw
            idx += 1
        return out

    def _bar(self, symbol: str, e: Any, interval: str, ts: int, seq: int, idx: int) -> StreamMessage:
        return StreamMessage(
            provider="polygon", symbol=symbol, kind="bar", ts_recv=ts, ts_event=e.s * _MS, conn=self.conn, seq=seq,
            idx=idx, channel=f"bar:{interval}", open=e.o, high=e.h, low=e.l, close=e.c, size=e.v, interval=interval,
            closed=True, derived=False,
        )

    def _salvage(self, payload: bytes, ts: int, seq: int, err: Exception) -> list[StreamMessage]:
        """Keep every event of a frame that does not decode as a whole."""
        try:
            raws = _raw_events.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return self.bad_frame("array", payload, ts, seq, err)
        events = []
        bad: Exception | None = None
        for raw in raws:
            try:
                tag = _tag.decode(raw).ev
            except (msgspec.DecodeError, msgspec.ValidationError) as e:
                bad = e
                continue
            if tag not in _TAGS:
                if tag not in self._unknown:
                    self._unknown.add(str(tag))
                    log.info("polygon conn %d: skipping events of unknown type ev=%r", self.conn, tag)
                continue
            try:
                events.append(_event.decode(raw))
            except (msgspec.DecodeError, msgspec.ValidationError) as e:
                bad = e
        out = self._messages(events, ts, seq)
        if bad is not None:
            for m in self.bad_frame("event", payload, ts, seq, bad):
                m.idx = len(out)
                out.append(m)
        return out

    # -- status events -------------------------------------------------------------------------
    def _status(self, e: _Status, ts: int, seq: int, out: list[StreamMessage]) -> int:
        st, text = e.status, e.message
        venue = self.venue
        if st == "connected":
            if self.state == "connecting":
                self.state = "connected"
                key = venue.credentials.get("key")
                if not key:
                    self.fatal = PolygonAuthError(_MISSING_KEY)
                else:
                    self.outbox.append(_encode({"action": "auth", "params": key}).decode())
        elif st == "auth_success":
            self.state = "authenticated"
            if self.streams:
                self._control("subscribe", [str(s) for s in self.streams])
            else:
                self.ready = True
        elif st == "success":
            if text.startswith("subscribed to:"):
                self.pending.discard(text[14:].strip())
                if not self.pending and self.state == "authenticated":
                    self.ready = True
                    venue.kicks = 0
        elif st == "auth_failed":
            self.fatal = PolygonAuthError(f"polygon rejected the API key on /{self.cluster}: {text or 'authentication failed'}")
        elif st == "auth_timeout":
            self.reconnect_requested = f"polygon auth_timeout: {text}"
        elif st == "max_connections":
            venue.kicks += 1
            if venue.kicks > venue.max_connection_kicks:
                self.fatal = PolygonConnectionLimitError(
                    f"polygon: max_connections {venue.kicks} times in a row on /{self.cluster} ({text}): another "
                    "client is using this key on this cluster")
            else:
                self.reconnect_requested = f"polygon max_connections: {text}"
        elif st in ("slow_consumer", "force_disconnect"):
            self.reconnect_requested = f"polygon {st}: {text}"
        else:
            if self.pending and self.state == "authenticated" and not self.ready:
                # a refused topic is never acknowledged: do not wait for it
                self.ready = True
            out.append(status_message("polygon", "error", ts, f"polygon {st}: {text}"[:300], conn=self.conn, seq=seq, idx=len(out)))
        return len(out)


__all__ = ["PolygonAuthError", "PolygonConnectionLimitError", "PolygonSession", "PolygonVenue", "pair_from_symbol"]


# -- history (gap healing) -----------------------------------------------------------------------

class _HistTrade(msgspec.Struct):
    price: float
    size: float
    exchange: int = 0
    id: str | int | None = None
    conditions: list[int] | None = None
    sip_timestamp: int | None = None
    participant_timestamp: int | None = None


class _HistPage(msgspec.Struct):
    results: list[_HistTrade] = []
    next_url: str | None = None
    status: str | None = None
    error: str | None = None


_hist_page = msgspec.json.Decoder(_HistPage)


class PolygonHistory(HistoryPager):
    """``/v3/trades/{ticker}`` over the heal window, oldest first, by ``next_url`` (module doc)."""

    page = 50_000

    def __init__(self, venue: PolygonVenue, spec: HealSpec) -> None:
        super().__init__(venue, spec)
        self.next_path: str | None = None
        sym = spec.symbol
        self.crypto = "-" in sym
        self.ticker = "X:" + sym.replace("-", "") if self.crypto else sym
        if self.lo is None or self.hi is None:
            self.exhausted = True
            self.notes.append("the gap has no start time to heal from")

    def _next(self) -> HttpRequest | None:
        v = self.venue
        headers = {"Authorization": f"Bearer {v.credentials.get('key', '')}"}
        if self.next_path is not None:
            return HttpRequest(f"{v.rest_url}{self.next_path}", headers=headers, purpose="history")
        params = {"timestamp.gte": self.lo, "timestamp.lte": self.hi, "order": "asc", "limit": self.page}
        return HttpRequest(f"{v.rest_url}/v3/trades/{self.ticker}", params, headers=headers, purpose="history")

    def _page(self, request: HttpRequest, response: HttpResponse) -> list[Row]:
        from urllib.parse import urlsplit

        try:
            page = _hist_page.decode(response.body)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise HistoryError(f"malformed trades page: {e}") from None
        if page.status == "ERROR":
            raise HistoryError(f"trades refused: {page.error}")
        if page.next_url:
            u = urlsplit(page.next_url)
            self.next_path = f"{u.path}?{u.query}" if u.query else u.path
        else:
            self.complete = True
        out: list[Row] = []
        xs = _EXCHANGE
        for r in page.results:
            ts = r.sip_timestamp if r.sip_timestamp is not None else r.participant_timestamp
            x = xs[r.exchange] if 0 <= r.exchange < 256 else str(r.exchange)
            codes = r.conditions or []
            if self.crypto:
                # as the stream says it: an integer id, the side from conditions 1 (sell) / 2 (buy)
                i = r.id
                tid, ref = (int(i), None) if isinstance(i, int) or (isinstance(i, str) and i.isdigit()) else (None, i)
                side = "sell" if 1 in codes else "buy" if 2 in codes else None
                out.append((ts, r.price, r.size, side, tid, ref, x, ",".join(map(str, codes)) or None))
            else:
                ref = r.id if r.id is None or isinstance(r.id, str) else str(r.id)
                out.append((ts, r.price, r.size, None, None, ref, x, ",".join(map(str, codes)) or None))
        return out
