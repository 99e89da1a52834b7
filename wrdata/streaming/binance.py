"""Binance spot market data (WebSocket streams), sans-IO.

Protocol facts this module relies on (``shared/providers/binance.md``, from Binance's
spot API docs ``web-socket-streams.md`` and ``rest-api.md``, CHANGELOG to 2026-07):

- Combined streams at ``<base>/stream?streams=a/b`` wrap every event as
  ``{"stream": name, "data": event}``; stream names use lower-case symbols (an
  upper-case name is silently never served, so we always lower-case).
- ``<s>@trade`` ``{"e","E","s","t","p","q","T","m"}`` (``m``: buyer is maker, so the
  aggressor sold); ``<s>@aggTrade`` (``a`` aggregate id, ``f``..``l`` trade ids);
  ``<s>@bookTicker`` ``{"u","s","b","B","a","A"}`` (no event time);
  ``<s>@kline_<i>`` (``k.t`` open time, ``k.x`` final update of a closed bar);
  ``<s>@depth<5|10|20>[@100ms]`` partial books ``{"lastUpdateId","bids","asks"}`` with
  no symbol inside; ``<s>@depth[@100ms]`` diff depth ``{"U","u","b","a"}`` with
  absolute quantities, ``0`` deletes. Prices and quantities are decimal strings.
- Local book: buffer diff events, fetch ``GET /api/v3/depth``; refetch if the
  snapshot's ``lastUpdateId`` < first buffered ``U``; drop events with ``u`` ≤
  ``lastUpdateId``; the first applied has ``U`` ≤ lastUpdateId+1 ≤ ``u``; afterwards
  ``U`` must be previous ``u`` + 1, else resynchronise (we emit a ``gap``).
- Control: ``{"method":"SUBSCRIBE","params":[...],"id":n}`` → ``{"result":null,"id":n}``;
  errors ``{"error":{"code","msg"},"id"}``. At most 5 incoming messages per second per
  connection (pings, pongs and control frames count; excess closes with 1008), 1024
  streams per connection, server pings every 20 s (pong within a minute), connections
  closed at 24 h, ``serverShutdown`` events ask clients to reconnect.
- Instruments: ``GET /api/v3/exchangeInfo`` (``symbols[].symbol``, ``status``,
  ``PRICE_FILTER.tickSize``, ``LOT_SIZE.stepSize``).

History (gap healing, ``shared/providers/rest-history.md`` §1, Binance's ``rest-api.md``):
``GET /api/v3/historicalTrades?symbol=&fromId=&limit=`` (``limit`` ≤ 1000, weight 25, no
key since 2023-07, not on data-api.binance.vision): rows ``{"id","price","qty","quoteQty",
"time","isBuyerMaker","isBestMatch"}`` oldest first, ``id`` the same counter as ``@trade``'s
``t``, so a gap heals exactly by id: from the first missing id, pages of at most the ids
still missing. Deep history is not served (``fromId=1`` answers from a recent id): a first
row past the asked id means the ids before it are gone. ``REQUEST_WEIGHT`` 6000 per minute
per IP; 429, then 418 (a ban) with ``Retry-After``.

Choices: streams named at connect go in the URL (they do not count against the
5 messages/s budget, so a reconnect of 1024 streams is one request); later changes are
``SUBSCRIBE``/``UNSUBSCRIBE`` frames, one per 250 ms (``control_interval``), which
client projects found reliable. Connections roll over after 23 h (``lifetime``). Trade,
aggregate-trade, book-ticker, kline and depth ids de-duplicate the overlap.
"""

from __future__ import annotations

import re
from collections.abc import Hashable
from typing import Any

import msgspec

from ..channels import Channel
from ..message import StreamMessage, status_message
from .base import (
    Finite,
    HttpRequest,
    HttpResponse,
    Session,
    UnsupportedChannelError,
    Venue,
)
from .heal import HealSpec, HistoryPager, Row

INTERVALS = ("1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M")
PARTIAL_DEPTHS = (5, 10, 20)
_QUOTES = ("USDT", "USDC", "FDUSD", "BUSD", "TUSD", "DAI", "BTC", "ETH", "BNB", "EUR", "TRY", "BRL", "JPY", "GBP", "AUD", "ZAR", "PLN", "RON", "UAH", "ARS", "MXN", "COP", "IDR", "XRP", "DOGE", "TRX", "DOT", "SOL")
_SHAPE = re.compile(r"^[A-Z0-9]{2,}(?:" + "|".join(_QUOTES) + r")$")
_MS = 1_000_000


# -- wire types (decoded in one pass, strings straight to floats) --------------------------

class _Trade(msgspec.Struct):
    E: int
    s: str
    t: int
    p: Finite
    q: Finite
    T: int
    m: bool


class _AggTrade(msgspec.Struct):
    E: int
    s: str
    a: int
    p: Finite
    q: Finite
    T: int
    m: bool
    f: int = -1
    l: int = -1  # noqa: E741 (the venue's field name)


class _BookTicker(msgspec.Struct):
    u: int
    s: str
    b: Finite
    B: Finite
    a: Finite
    A: Finite


class _Kline(msgspec.Struct):
    t: int
    T: int
    i: str
    o: Finite
    c: Finite
    h: Finite
    l: Finite  # noqa: E741
    v: Finite
    x: bool
    n: int = 0


class _KlineEvent(msgspec.Struct):
    E: int
    s: str
    k: _Kline


class _Partial(msgspec.Struct):
    lastUpdateId: int
    bids: list[tuple[Finite, Finite]]
    asks: list[tuple[Finite, Finite]]


class _DepthUpdate(msgspec.Struct):
    E: int
    s: str
    U: int
    u: int
    b: list[tuple[Finite, Finite]]
    a: list[tuple[Finite, Finite]]


def _frame(data_type: type) -> msgspec.json.Decoder:
    return msgspec.json.Decoder(msgspec.defstruct("Frame", [("stream", str), ("data", data_type)]), strict=False)


_DECODERS = {
    "trade": _frame(_Trade),
    "aggTrade": _frame(_AggTrade),
    "bookTicker": _frame(_BookTicker),
    "kline": _frame(_KlineEvent),
    "partial": _frame(_Partial),
    "depth": _frame(_DepthUpdate),
}


class _Envelope(msgspec.Struct):
    stream: str | None = None
    data: msgspec.Raw | None = None
    id: Any = None
    result: Any = None
    error: dict | None = None
    e: str | None = None  # a bare serverShutdown event


_envelope = msgspec.json.Decoder(_Envelope)
_snapshot = msgspec.json.Decoder(_Partial, strict=False)
_encode = msgspec.json.Encoder().encode
_PREFIX = b'{"stream":"'


def _stream_kind(name: str) -> tuple[str, str, str | None]:
    """``btcusdt@kline_1m`` → (``BTCUSDT``, decoder key, channel route)."""
    sym, _, tail = name.partition("@")
    symbol = sym.upper()
    if tail == "trade":
        return symbol, "trade", "trade"
    if tail == "aggTrade":
        return symbol, "aggTrade", "aggtrade"
    if tail == "bookTicker":
        return symbol, "bookTicker", "quote"
    if tail.startswith("kline_"):
        return symbol, "kline", "bar:" + tail[6:].split("@")[0]
    if tail in ("depth", "depth@100ms", "depth@1000ms"):
        return symbol, "depth", "book"
    if tail.startswith("depth"):
        return symbol, "partial", "book:partial"
    raise ValueError(f"unknown stream {name!r}")


class BinanceVenue(Venue):
    name = "binance"
    default_url = "wss://stream.binance.com:9443"
    native_bars = frozenset(INTERVALS)
    kinds = frozenset({"trade", "quote", "bar", "book"})

    max_streams_per_conn = 1024
    control_interval = 0.25
    lifetime = 23 * 3600.0
    rollover_overlap = 2.0
    ws_ping_interval = None  # the server pings every 20 s; our own pings would count against 5/s
    silence_timeout = 50.0
    depth_snapshot_limit = 1000  # REST weight 50; levels beyond it stay unknown until they change
    depth_speed = "@100ms"  # diff and partial depth update speed ("" for 1000 ms)
    # healing: trade ids are consecutive per symbol; stream times are milliseconds.
    # 6000 weight a minute per IP is shared with everything else on the host: heal with a
    # fifth of it (48 historicalTrades pages a minute), bursts of 4 pages
    history_ids = "dense"
    trade_time_resolution = 1_000_000
    history_rate = 20.0
    history_burst = 100.0

    def derive_rest_url(self, ws_url: str) -> str:
        if "stream.binance.com" in ws_url or "data-stream.binance.vision" in ws_url:
            return "https://api.binance.com"
        if "stream.testnet.binance.vision" in ws_url:
            return "https://testnet.binance.vision"
        return super().derive_rest_url(ws_url)

    @classmethod
    def claims(cls, symbol: str) -> bool:
        return bool(_SHAPE.match(symbol))

    def venue_symbol(self, symbol: str) -> str:
        return symbol.upper().replace("-", "").replace("/", "")

    def instruments_request(self) -> HttpRequest:
        return HttpRequest(f"{self.rest_url}/api/v3/exchangeInfo", purpose="instruments")

    def load_instruments(self, response: HttpResponse) -> dict[str, Any]:
        doc = msgspec.json.decode(response.body)
        out: dict[str, Any] = {}
        for s in doc.get("symbols", []):
            filters = {f.get("filterType"): f for f in s.get("filters", [])}
            out[s["symbol"]] = {
                "status": s.get("status"),
                "tick_size": filters.get("PRICE_FILTER", {}).get("tickSize"),
                "step_size": filters.get("LOT_SIZE", {}).get("stepSize"),
            }
        return out

    def streams(self, symbol: str, channel: Channel) -> list[Hashable]:
        s = symbol.lower()
        k = channel.kind
        if k == "trade":
            return [f"{s}@trade"]
        if k == "aggtrade":
            return [f"{s}@aggTrade"]
        if k == "quote":
            return [f"{s}@bookTicker"]
        if k == "bar":
            if channel.interval not in INTERVALS:
                return [f"{s}@trade"]  # derived from trades by the bar builder
            return [f"{s}@kline_{channel.interval}"]
        if k == "book":
            if channel.partial:
                if channel.depth not in PARTIAL_DEPTHS:
                    raise UnsupportedChannelError(f"binance partial books have depth 5, 10 or 20, not {channel.depth}")
                return [f"{s}@depth{channel.depth}{self.depth_speed}"]
            return [f"{s}@depth{self.depth_speed}"]
        raise UnsupportedChannelError(f"binance has no {k} stream")

    def check_channel(self, channel: Channel) -> None:
        if channel.kind not in ("trade", "aggtrade", "quote", "bar", "book"):
            raise UnsupportedChannelError(f"binance has no {channel.kind} stream")

    def stream_target(self, stream: Hashable) -> tuple[str | None, str | None]:
        symbol, _, route = _stream_kind(str(stream))
        return symbol, route

    def session(self, conn: int, streams: list[Hashable]) -> BinanceSession:
        return BinanceSession(self, conn, streams)

    def history_pager(self, spec: HealSpec) -> BinanceHistory | None:
        return BinanceHistory(self, spec) if spec.channel == "trade" else None


_URL_STREAM_CHARS = 2000  # of stream names in a connection URL (a request line stays well under 8 KiB)


class _BookSync:
    """Diff-depth synchronisation state of one symbol on one connection."""

    __slots__ = ("stream", "buffer", "last_u", "pending")

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self.buffer: list[tuple[_DepthUpdate, int, int]] | None = []  # None once synced
        self.last_u = 0
        self.pending = False  # a snapshot request is in flight


class BinanceSession(Session):
    venue: BinanceVenue

    def __init__(self, venue: BinanceVenue, conn: int, streams) -> None:
        super().__init__(venue, conn, streams)
        # streams named in the URL are live from the first frame; a long list does not fit
        # in one (servers answer 414 URI Too Long, and every reconnect would too), so the
        # rest are subscribed with SUBSCRIBE frames as soon as the connection is open
        names = sorted(self.streams)
        cut, size = 0, 0
        while cut < len(names) and size + len(str(names[cut])) + 1 <= _URL_STREAM_CHARS:
            size += len(str(names[cut])) + 1
            cut += 1
        self.initial, self.later = names[:cut], names[cut:]
        self.next_id = 1
        self.pending_ids: dict[int, tuple[str, list[str]]] = {}
        self.kinds: dict[bytes, tuple] = {}
        self.books: dict[str, _BookSync] = {}
        self.seqr = venue.sequencer
        self.seq_last = venue.sequencer.last

    def url(self) -> str:
        base = self.venue.url
        if self.initial:
            return f"{base}/stream?streams={'/'.join(self.initial)}"
        return f"{base}/stream"

    def on_open(self, ts_recv: int) -> list[StreamMessage]:
        self.ready = True  # streams named in the URL are live from the first frame
        if self.later:
            self._control("SUBSCRIBE", [str(x) for x in self.later])
        return []

    def add(self, streams: list[Hashable]) -> None:
        self._control("SUBSCRIBE", [str(s) for s in streams])
        self.streams.update(streams)

    def remove(self, streams: list[Hashable]) -> None:
        self._control("UNSUBSCRIBE", [str(s) for s in streams])
        for s in streams:
            self.streams.discard(s)
            self.books.pop(str(s).split("@")[0].upper(), None)

    def _control(self, method: str, params: list[str]) -> None:
        for i in range(0, len(params), 200):  # keep frames small; each still costs one of 5/s
            chunk = params[i : i + 200]
            rid = self.next_id
            self.next_id += 1
            self.pending_ids[rid] = (method, chunk)
            self.outbox.append(_encode({"method": method, "params": chunk, "id": rid}))

    def on_close(self, code: int | None, reason: str) -> Exception | None:
        return None  # 1008 "Too many requests", 24 h cut, shutdowns: all worth a reconnect

    # -- frames ------------------------------------------------------------------------
    def feed(self, payload: bytes, ts_recv: int, seq: int) -> list[StreamMessage]:
        if payload.startswith(_PREFIX):
            key = payload[11 : payload.find(b'"', 11)]
            entry = self.kinds.get(key)
            if entry is None:
                entry = self._learn(key)
            if entry is not None:
                handler, decode, name, symbol, route = entry
                try:
                    frame = decode(payload)
                except (msgspec.DecodeError, msgspec.ValidationError) as e:
                    return self.bad_frame(name.partition("@")[2], payload, ts_recv, seq, e)
                return handler(frame.data, name, symbol, route, ts_recv, seq)
        return self._other(payload, ts_recv, seq)

    def _learn(self, key: bytes):
        """First frame of a stream: pick its decoder and handler once (cached by name bytes)."""
        name = key.decode(errors="replace")
        try:
            symbol, dkey, route = _stream_kind(name)
        except ValueError:
            return None
        entry = self.kinds[key] = (getattr(self, "_" + dkey), _DECODERS[dkey].decode, name, symbol, route)
        return entry

    def _trade(self, d: _Trade, name: str, symbol: str, route: str, ts: int, seq: int) -> list[StreamMessage]:
        # the Sequencer's accept(), inlined: this runs for every trade
        last = self.seq_last
        prev = last.get(name)
        t = d.t
        if prev is not None and t <= prev:
            return []  # already delivered by another connection (rollover overlap)
        last[name] = t
        msg = StreamMessage(
            provider="binance", symbol=d.s, kind="trade", ts_recv=ts, ts_event=d.T * _MS, conn=self.conn, seq=seq,
            channel="trade", price=d.p, size=d.q, side="sell" if d.m else "buy", trade_id=t,
        )
        if prev is None or t == prev + 1:
            return [msg]
        return [self._id_gap(d.s, "trade", (prev + 1, t - 1), ts, seq, "trade ids skipped"), msg]

    def _aggTrade(self, d: _AggTrade, name: str, symbol: str, route: str, ts: int, seq: int) -> list[StreamMessage]:
        ok, gap = self.seqr.accept(name, d.a, d.a)
        if not ok:
            return []
        msg = StreamMessage(
            provider="binance", symbol=d.s, kind="trade", ts_recv=ts, ts_event=d.T * _MS, conn=self.conn, seq=seq,
            channel="aggtrade", price=d.p, size=d.q, side="sell" if d.m else "buy", trade_ref=str(d.a),
        )
        if gap is None:
            return [msg]
        return [self._id_gap(d.s, "aggtrade", gap, ts, seq, "aggregate trade ids skipped"), msg]

    def _bookTicker(self, d: _BookTicker, name: str, symbol: str, route: str, ts: int, seq: int) -> list[StreamMessage]:
        if not self.seqr.accept(name, d.u, d.u, False)[0]:
            return []
        return [StreamMessage(
            provider="binance", symbol=d.s, kind="quote", ts_recv=ts, conn=self.conn, seq=seq, channel="quote",
            bid=d.b, bid_size=d.B, ask=d.a, ask_size=d.A, update_id=d.u,
        )]

    def _kline(self, d: _KlineEvent, name: str, symbol: str, route: str, ts: int, seq: int) -> list[StreamMessage]:
        if not self.seqr.accept(name, d.E, d.E, False)[0]:
            return []
        k = d.k
        return [StreamMessage(
            provider="binance", symbol=d.s, kind="bar", ts_recv=ts, ts_event=k.t * _MS, conn=self.conn, seq=seq,
            channel=route, open=k.o, high=k.h, low=k.l, close=k.c, size=k.v, interval=k.i, closed=k.x, derived=False,
        )]

    def _partial(self, d: _Partial, name: str, symbol: str, route: str, ts: int, seq: int) -> list[StreamMessage]:
        if not self.seqr.accept(name, d.lastUpdateId, d.lastUpdateId, False)[0]:
            return []
        return [StreamMessage(
            provider="binance", symbol=symbol, kind="book", ts_recv=ts, conn=self.conn, seq=seq, channel=route,
            bids=d.bids, asks=d.asks, snapshot=True, update_id=d.lastUpdateId,
        )]

    def _depth(self, d: _DepthUpdate, name: str, symbol: str, route: str, ts: int, seq: int) -> list[StreamMessage]:
        sync = self.books.get(d.s)
        if sync is None:
            sync = self.books[d.s] = _BookSync(name)
        if sync.buffer is not None:  # not synced yet: buffer until the REST snapshot arrives
            sync.buffer.append((d, ts, seq))
            if not sync.pending:
                self._request_snapshot(d.s, sync)
            return []
        if d.u <= sync.last_u:
            return []
        if d.U > sync.last_u + 1:
            gap = (sync.last_u + 1, d.U - 1)
            self._resync(d.s, sync)
            sync.buffer.append((d, ts, seq))
            return [self._id_gap(d.s, "book", gap, ts, seq, "depth update ids skipped; resynchronising")]
        sync.last_u = d.u
        return self._delta(d, name, ts, seq)

    def _delta(self, d: _DepthUpdate, name: str, ts: int, seq: int, idx: int = 0) -> list[StreamMessage]:
        ok, gap = self.seqr.accept(name, d.U, d.u)
        if not ok:
            return []
        msg = StreamMessage(
            provider="binance", symbol=d.s, kind="book", ts_recv=ts, ts_event=d.E * _MS, conn=self.conn, seq=seq, idx=idx,
            channel="book", bids=d.b, asks=d.a, snapshot=False, update_id=d.u,
        )
        if gap is None:
            return [msg]
        # another connection delivered up to an id this one cannot continue from
        return [self._id_gap(d.s, "book", gap, ts, seq, "depth update ids skipped across connections"), msg]

    def _request_snapshot(self, symbol: str, sync: _BookSync) -> None:
        sync.pending = True
        self.requests.append(HttpRequest(
            f"{self.venue.rest_url}/api/v3/depth",
            {"symbol": symbol, "limit": self.venue.depth_snapshot_limit},
            purpose="depth_snapshot",
            context=symbol,
        ))

    def _resync(self, symbol: str, sync: _BookSync) -> None:
        sync.buffer = []
        sync.last_u = 0
        if not sync.pending:
            self._request_snapshot(symbol, sync)

    def on_response(self, request: HttpRequest, response: HttpResponse, ts_recv: int, seq: int) -> list[StreamMessage]:
        if request.purpose != "depth_snapshot":
            return []
        symbol = request.context
        sync = self.books.get(symbol)
        if sync is None or sync.buffer is None:
            return []
        sync.pending = False
        if response.status != 200:
            text = response.body[:200].decode(errors="replace")
            self._request_snapshot(symbol, sync)  # the runner's REST pacing applies; try again
            return [status_message("binance", "error", ts_recv, f"depth snapshot failed (HTTP {response.status}): {text}",
                                   symbol=symbol, channel="book", conn=self.conn, seq=seq)]
        try:
            snap = _snapshot.decode(response.body)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            self._request_snapshot(symbol, sync)
            return self.bad_frame("depth snapshot", response.body, ts_recv, seq, e)
        buf = sync.buffer
        L = snap.lastUpdateId
        # The docs say refetch when lastUpdateId < first buffered U; lastUpdateId == U - 1
        # leaves no hole (the first event continues it), so only a real hole refetches.
        if buf and L + 1 < buf[0][0].U:
            self._request_snapshot(symbol, sync)
            return []
        kept = [b for b in buf if b[0].u > L]
        if kept and kept[0][0].U > L + 1:  # events between the snapshot and the buffer were lost
            sync.buffer = []
            self._request_snapshot(symbol, sync)
            return []
        out: list[StreamMessage] = []
        if self.seqr.accept(sync.stream, L, L, False)[0]:
            out.append(StreamMessage(
                provider="binance", symbol=symbol, kind="book", ts_recv=ts_recv, conn=self.conn, seq=seq, channel="book",
                bids=snap.bids, asks=snap.asks, snapshot=True, update_id=L,
            ))
        sync.buffer = None
        sync.last_u = L
        for d, _ts, _seq in kept:
            if d.U > sync.last_u + 1:  # cannot happen after the checks above, but never apply across a hole
                self._resync(symbol, sync)
                break
            sync.last_u = d.u
            # buffered events are released now, in their original order, stamped with this moment
            out.extend(self._delta(d, sync.stream, ts_recv, seq, idx=len(out)))
        return out

    def _id_gap(self, symbol: str, channel: str, gap: tuple[int, int], ts: int, seq: int, reason: str) -> StreamMessage:
        return status_message(
            "binance", "gap", ts, reason, symbol=symbol, channel=channel, conn=self.conn, seq=seq,
            first_missing_id=gap[0], last_missing_id=gap[1], gap_end_ns=ts,
        )

    def _other(self, payload: bytes, ts: int, seq: int) -> list[StreamMessage]:
        try:
            env = _envelope.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            return self.bad_frame("json", payload, ts, seq, e)
        if env.error is not None:
            pending = self.pending_ids.pop(env.id, None) if isinstance(env.id, int) else None
            what = f" to {pending[0]} {','.join(pending[1][:5])}" if pending else ""
            return [status_message("binance", "error", ts, f"venue error{what}: {env.error.get('code')} {env.error.get('msg')}",
                                   conn=self.conn, seq=seq)]
        if env.id is not None and env.stream is None:  # {"result": null, "id": n}: request accepted
            if isinstance(env.id, int):
                self.pending_ids.pop(env.id, None)
            return []
        data = env.data
        if env.e == "serverShutdown" or (env.stream == "!serverShutdown"):
            self.replace_requested = "server shutdown announced"
            return []
        if env.stream is not None and data is not None:
            try:
                inner = msgspec.json.decode(data)
            except msgspec.DecodeError as e:
                return self.bad_frame("json", payload, ts, seq, e)
            if isinstance(inner, dict) and inner.get("e") == "serverShutdown":
                self.replace_requested = "server shutdown announced"
                return []
            return self.bad_frame(f"stream {env.stream}", payload, ts, seq, "unknown or malformed stream payload")
        return self.bad_frame("unknown", payload, ts, seq, "not a stream event or a control reply")


# -- history (gap healing) -----------------------------------------------------------------------

class _HistTrade(msgspec.Struct):
    id: int
    price: Finite
    qty: Finite
    time: int
    isBuyerMaker: bool


_hist_trades = msgspec.json.Decoder(list[_HistTrade], strict=False)


class BinanceHistory(HistoryPager):
    """``historicalTrades`` by id from the first missing one (see the module doc)."""

    weight = 25.0
    page = 1000

    def __init__(self, venue: BinanceVenue, spec: HealSpec) -> None:
        super().__init__(venue, spec)
        self.next_id = spec.after_id + 1 if spec.after_id is not None else None
        if self.next_id is None:
            # the ids start where the stream last delivered: without a trade before the gap
            # there is no id to start from (historicalTrades has no time parameter)
            self.exhausted = True
            self.notes.append("no trade was delivered before the gap, so there is no trade id to heal from")

    def _next(self) -> HttpRequest | None:
        sp = self.spec
        limit = self.page
        if sp.before_id is not None:
            left = sp.before_id - self.next_id
            if left <= 0:
                self.complete = True
                return None
            limit = min(limit, left)
        return HttpRequest(
            f"{self.venue.rest_url}/api/v3/historicalTrades",
            {"symbol": sp.symbol, "fromId": self.next_id, "limit": limit},
            purpose="history",
        )

    def _error(self, response: HttpResponse) -> Exception:
        from .heal import HistoryError

        try:
            doc = msgspec.json.decode(response.body)
            text = f"{doc.get('code')} {doc.get('msg')}"
        except (msgspec.DecodeError, AttributeError):
            text = response.body[:200].decode(errors="replace")
        return HistoryError(f"historicalTrades refused (HTTP {response.status}: {text})")

    def _page(self, request: HttpRequest, response: HttpResponse) -> list[Row]:
        from .heal import HistoryError

        try:
            rows = _hist_trades.decode(response.body)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise HistoryError(f"malformed historicalTrades page: {e}") from None
        sp = self.spec
        asked = self.next_id
        if not rows:
            self.exhausted = True
            self.notes.append(f"the history has no trades from id {asked} on")
            return []
        if rows[0].id > asked:
            self.notes.append(f"the history starts at id {rows[0].id}: ids from {asked} are no longer served")
        self.next_id = rows[-1].id + 1
        if sp.before_id is not None:
            if self.next_id >= sp.before_id:
                self.complete = True
        elif self.hi is not None and rows[-1].time * 1_000_000 > self.hi:
            self.complete = True  # paged past the end of the window
        ms = 1_000_000
        return [(r.time * ms, r.price, r.qty, "sell" if r.isBuyerMaker else "buy", r.id, None, None, None) for r in rows]
