"""Kraken spot market data over WebSocket API v2, sans-IO.

Protocol facts this module relies on (``shared/providers/kraken.md``; checked against
Kraken's docs "Spot WebSocket" (endpoints, v1 vs v2), "Book (Level 2)", "Book checksum
(WebSocket v2)" (docs.kraken.com/exchange/guides/websockets/book-checksum-v2), "Trades",
"Ticker", "Candles (OHLC)", "Ping", "Status", "Heartbeat", and python-kraken-sdk 3.5.1):

- URL ``wss://ws.kraken.com/v2``: we take the base (``wss://ws.kraken.com``) and add
  ``/v2``, as python-kraken-sdk does. Symbols ``BASE/QUOTE`` with ``BTC`` and ``DOGE``
  (v1/REST names ``XBT``/``XDG`` are rejected by v2: we map them).
- Requests ``{"method":"subscribe","params":{"channel":..,"symbol":[..],...},"req_id":n}``;
  **one acknowledgement per symbol** ``{"method":"subscribe","result":{"channel",
  "symbol",...},"success":true,"req_id":n,...}``; failures ``{"success":false,
  "error":"Currency pair not supported XBT/USD","symbol":..}`` (``req_id`` may be absent).
  Unsubscribe repeats the subscribe params (``depth``, ``interval``, ``event_trigger``).
- Data ``{"channel","type":"snapshot"|"update","data":[...]}``; prices and quantities are
  JSON numbers printed with the pair's fixed decimals; times RFC 3339.
  ``trade``: ``symbol, side (taker), price, qty, ord_type, trade_id (per-symbol sequence),
  timestamp``; snapshot off by default (on: the last 50 trades).
  ``ticker`` with ``event_trigger:"bbo"``: an update on every best bid/offer change
  (``bid, bid_qty, ask, ask_qty``); the default trigger is trades.
  ``ohlc``: intervals 1 5 15 30 60 240 1440 10080 21600 minutes; ``interval_begin`` is
  the bar start; no closed flag (a later ``interval_begin`` closes a bar); the snapshot
  holds recent bars.
  ``book``: depth 10/25/100/500/1000; snapshot then updates with absolute ``qty``
  (``0`` deletes); apply all levels of a message, **truncate to the subscribed depth**
  (levels pushed out are not deleted explicitly), then check ``checksum``: CRC32 of the
  top 10 asks (low to high) then top 10 bids (high to low), each price and qty printed
  with the pair's ``price_precision``/``qty_precision``, ``.`` removed, leading zeros
  stripped. No sequence numbers: a mismatch means resubscribe for a fresh snapshot.
  ``status``: ``{"system":"online"|"maintenance"|"cancel_only"|"post_only",
  "api_version","connection_id" (uint64),"version"}`` right after connect and on changes.
  ``heartbeat``: about once a second when nothing else was sent, only while subscribed.
- Keepalive: the server closes an idle connection after about a minute; clients send
  ``{"method":"ping","req_id":n}`` (→ ``pong``), python-kraken-sdk every 10 s.
- Instruments and precisions: REST ``GET /0/public/AssetPairs`` ``{"error":[],"result":
  {"XXBTZUSD":{"wsname":"XBT/USD","pair_decimals":1,"lot_decimals":8,"status":
  "online",...}}}``; ``wsname`` uses the v1 names, mapped here to v2 spelling.

History (gap healing; ``shared/providers/rest-history.md`` §3, Kraken's "Get Recent
Trades"): ``GET /0/public/Trades?pair=<REST name>&since=<cursor>&count=<1..1000>`` answers
``{"error":[],"result":{<pair>:[[price, volume, time (float s), b|s, m|l, misc,
trade_id]...],"last":"<ns>"}}`` oldest first; ``since`` is a time cursor (not a trade id):
the next page asks ``since=<last>``. ``trade_id`` is the WebSocket's per-pair sequence
(believed the same space), so the window is proven by ids; rows from before about 2023
have no id (six elements). Public calls are limited per IP and pair (about one a second
stays safe); a refusal comes as HTTP 200 with ``EGeneral:Too many requests`` or
``EAPI:Rate limit exceeded`` in ``error``.

Choices: numbers are decoded straight to floats (msgspec, correctly rounded); the
checksum prints them back with the pair's decimals, which recovers the wire text for
any value of at most 15 significant digits (every Kraken pair's price and qty). Trade
ids are checked for holes and de-duplicated across connections; after a reconnect the
trade stream is resubscribed with ``snapshot:true`` so trades missed during the outage
(up to 50) come back, delivered with ``source="backfill"``. One book subscription per
symbol at the smallest venue depth that covers every consumer's depth.
"""

from __future__ import annotations

import logging
import re
import zlib
from collections.abc import Hashable
from typing import Any

import msgspec

from ..channels import Channel, canonical_interval
from ..message import StreamMessage, status_message
from .base import HttpRequest, HttpResponse, Session, UnsupportedChannelError, Venue
from .book import OrderBook
from .heal import HealSpec, HistoryError, HistoryPager, HistoryRetry, Row
from .timeparse import rfc3339_ns

log = logging.getLogger("wrdata.streaming.kraken")

DEPTHS = (10, 25, 100, 500, 1000)
OHLC_MINUTES = (1, 5, 15, 30, 60, 240, 1440, 10080, 21600)
#: canonical interval -> minutes
INTERVALS = {canonical_interval(m * 60): m for m in OHLC_MINUTES}
_SHAPE = re.compile(r"^[A-Z0-9]{1,20}/[A-Z0-9]{1,20}$")
_V1_ASSETS = {"XBT": "BTC", "XDG": "DOGE"}
_ROUTES = {"trade": "trade", "ticker": "quote", "book": "book"}
_encode = msgspec.json.Encoder().encode


def v2_symbol(symbol: str) -> str:
    """``xbt/usd`` → ``BTC/USD`` (v2 uses BTC and DOGE where v1 and REST say XBT and XDG)."""
    base, sep, quote = symbol.strip().upper().partition("/")
    return f"{_V1_ASSETS.get(base, base)}{sep}{_V1_ASSETS.get(quote, quote)}"


def book_checksum(book: OrderBook, price_decimals: int, qty_decimals: int) -> int:
    """Kraken's CRC32 of the top 10 asks then the top 10 bids, printed to the pair's precision."""
    parts = []
    for p, q in book.top_asks(10):
        parts.append(f"{p:.{price_decimals}f}".replace(".", "").lstrip("0"))
        parts.append(f"{q:.{qty_decimals}f}".replace(".", "").lstrip("0"))
    for p, q in book.top_bids(10):
        parts.append(f"{p:.{price_decimals}f}".replace(".", "").lstrip("0"))
        parts.append(f"{q:.{qty_decimals}f}".replace(".", "").lstrip("0"))
    return zlib.crc32("".join(parts).encode())


# -- wire types -------------------------------------------------------------------------------------

class _Trade(msgspec.Struct):
    symbol: str
    side: str
    price: float
    qty: float
    trade_id: int
    timestamp: str
    ord_type: str = ""


class _Ticker(msgspec.Struct):
    symbol: str
    bid: float
    ask: float
    bid_qty: float | None = None
    ask_qty: float | None = None
    timestamp: str | None = None


class _Ohlc(msgspec.Struct):
    symbol: str
    open: float
    high: float
    low: float
    close: float
    volume: float
    interval_begin: str
    interval: int


class _Level(msgspec.Struct, array_like=False):
    price: float
    qty: float


class _Book(msgspec.Struct):
    symbol: str
    bids: list[_Level] = []
    asks: list[_Level] = []
    checksum: int | None = None
    timestamp: str | None = None


class _System(msgspec.Struct):
    system: str = ""
    api_version: str = ""
    version: str = ""
    connection_id: Any = None


class _Data(msgspec.Struct, tag_field="channel"):
    type: str = "update"


class _TradeMsg(_Data, tag="trade"):
    data: list[_Trade] = []


class _TickerMsg(_Data, tag="ticker"):
    data: list[_Ticker] = []


class _OhlcMsg(_Data, tag="ohlc"):
    data: list[_Ohlc] = []


class _BookMsg(_Data, tag="book"):
    data: list[_Book] = []


class _StatusMsg(_Data, tag="status"):
    data: list[_System] = []


class _HeartbeatMsg(_Data, tag="heartbeat"):
    pass


class _InstrumentMsg(_Data, tag="instrument"):
    pass


_data = msgspec.json.Decoder(_TradeMsg | _TickerMsg | _OhlcMsg | _BookMsg | _StatusMsg | _HeartbeatMsg | _InstrumentMsg)


class _Response(msgspec.Struct):
    method: str | None = None
    success: bool | None = None
    result: dict | None = None
    error: str | None = None
    symbol: str | None = None
    req_id: int | None = None
    channel: str | None = None


_response = msgspec.json.Decoder(_Response)


# -- the venue ----------------------------------------------------------------------------------------

class KrakenVenue(Venue):
    name = "kraken"
    default_url = "wss://ws.kraken.com"
    native_bars = frozenset(INTERVALS)
    kinds = frozenset({"trade", "quote", "bar", "book"})

    max_streams_per_conn = 200
    control_interval = 0.1  # no public number; one request carries many symbols anyway
    keepalive_interval = 10.0  # JSON ping (the server drops connections idle for about a minute)
    ws_ping_interval = 30.0
    silence_timeout = 15.0  # heartbeats arrive every second while subscribed
    ready_timeout = 15.0
    max_symbols_per_request = 100
    #: seconds to wait before resubscribing a book whose checksum failed (python-kraken-sdk waits 3 s)
    checksum_retry_delay = 0.0
    # healing: trade ids are consecutive per pair; stream times are µs (RFC 3339)
    history_ids = "dense"
    trade_time_resolution = 1_000
    history_rate = 1.0
    history_burst = 2.0

    def derive_rest_url(self, ws_url: str) -> str:
        if "ws.kraken.com" in ws_url or "ws-auth.kraken.com" in ws_url:
            return "https://api.kraken.com"
        return Venue.derive_rest_url(self, ws_url)

    @classmethod
    def claims(cls, symbol: str) -> bool:
        return bool(_SHAPE.match(symbol))

    def venue_symbol(self, symbol: str) -> str:
        return v2_symbol(symbol)

    def instruments_request(self) -> HttpRequest:
        return HttpRequest(f"{self.rest_url}/0/public/AssetPairs", purpose="instruments")

    def load_instruments(self, response: HttpResponse) -> dict[str, Any]:
        doc = msgspec.json.decode(response.body)
        if doc.get("error"):
            raise ValueError(f"kraken AssetPairs error: {doc['error']}")
        out: dict[str, Any] = {}
        for key, p in (doc.get("result") or {}).items():
            ws = p.get("wsname")
            if not ws:
                continue
            out[v2_symbol(ws)] = {
                "rest_name": key,
                "status": p.get("status"),
                "price_decimals": int(p["pair_decimals"]),
                "qty_decimals": int(p["lot_decimals"]),
                "tick_size": p.get("tick_size"),
            }
        return out

    def check_channel(self, channel: Channel) -> None:
        if channel.kind not in ("trade", "quote", "bar", "book"):
            raise UnsupportedChannelError(f"kraken has no {channel.kind} stream")
        if channel.kind == "book":
            if channel.partial:
                raise UnsupportedChannelError("kraken has no partial books: use book:N (a checksummed local book)")
            if channel.depth > DEPTHS[-1]:
                raise UnsupportedChannelError(f"kraken books go {DEPTHS[-1]} levels deep at most, not {channel.depth}")

    def streams(self, symbol: str, channel: Channel) -> list[Hashable]:
        k = channel.kind
        if k == "trade":
            return [("trade", symbol)]
        if k == "quote":
            return [("ticker", symbol)]
        if k == "bar":
            if channel.interval in INTERVALS:
                return [("ohlc", symbol, INTERVALS[channel.interval])]
            return [("trade", symbol)]  # derived from trades by the bar builder
        if k == "book" and not channel.partial:
            depth = next((d for d in DEPTHS if d >= (channel.depth or 10)), None)
            if depth is None:
                raise UnsupportedChannelError(f"kraken books go {DEPTHS[-1]} levels deep at most")
            return [("book", symbol, depth)]
        raise UnsupportedChannelError(f"kraken has no {channel} stream")

    def stream_target(self, stream: Hashable) -> tuple[str | None, str | None]:
        ch, symbol = stream[0], stream[1]  # type: ignore[index]
        if ch == "ohlc":
            return symbol, f"bar:{canonical_interval(stream[2] * 60)}"  # type: ignore[index]
        return symbol, _ROUTES.get(ch)

    def session(self, conn: int, streams: list[Hashable]) -> KrakenSession:
        return KrakenSession(self, conn, streams)

    def history_pager(self, spec: HealSpec) -> KrakenHistory | None:
        return KrakenHistory(self, spec) if spec.channel == "trade" else None


class _BookState:
    __slots__ = ("book", "depth", "synced", "warned")

    def __init__(self, depth: int) -> None:
        self.book = OrderBook()
        self.depth = depth
        self.synced = False
        self.warned = False


class KrakenSession(Session):
    venue: KrakenVenue

    def __init__(self, venue: KrakenVenue, conn: int, streams) -> None:
        super().__init__(venue, conn, streams)
        self.seqr = venue.sequencer
        self.next_id = 1
        self.pending: dict[tuple[str, str], int] = {}  # (method, symbol) -> answers outstanding
        self.requests_by_id: dict[int, tuple[str, dict]] = {}
        self.book_depth: dict[str, int] = {}  # symbol -> depth we are subscribed at
        self.books: dict[str, _BookState] = {}
        self.bars: dict[tuple[str, int], _Ohlc] = {}  # (symbol, minutes) -> the open bar
        self._time_cache: tuple[str, int] = ("", 0)

    def url(self) -> str:
        return f"{self.venue.url}/v2"

    # -- subscriptions ------------------------------------------------------------------------------
    def on_open(self, ts_recv: int) -> list[StreamMessage]:
        self._subscribe(sorted(self.streams, key=repr))
        if not self.pending:
            self.ready = True
        return []

    def add(self, streams: list[Hashable]) -> None:
        self.streams.update(streams)
        self._subscribe(streams)

    def remove(self, streams: list[Hashable]) -> None:
        for s in streams:
            self.streams.discard(s)
        by: dict[tuple, list[str]] = {}
        for s in streams:
            ch, sym = s[0], s[1]  # type: ignore[index]
            if ch == "book":
                continue
            by.setdefault((ch,) + tuple(s[2:]), []).append(sym)  # type: ignore[index]
        for key, symbols in by.items():
            self._request("unsubscribe", self._params(key, symbols, False))
        self._books_changed({s[1] for s in streams if s[0] == "book"})  # type: ignore[index]

    def _subscribe(self, streams) -> None:
        by: dict[tuple, list[str]] = {}
        books: set[str] = set()
        for s in streams:
            ch, sym = s[0], s[1]
            if ch == "book":
                books.add(sym)
                continue
            snap = False
            if ch == "trade":
                # after a reconnect, ask for the last trades so the outage heals (dedupe drops the rest)
                snap = s in self.seqr.last
            by.setdefault((ch,) + tuple(s[2:]) + (snap,), []).append(sym)
        for key, symbols in by.items():
            self._request("subscribe", self._params(key[:-1], symbols, key[-1]))
        self._books_changed(books)

    def _params(self, key: tuple, symbols: list[str], snapshot: bool) -> dict[str, Any]:
        ch = key[0]
        params: dict[str, Any] = {"channel": ch, "symbol": symbols}
        if ch == "trade":
            params["snapshot"] = snapshot
        elif ch == "ticker":
            params["event_trigger"] = "bbo"
        elif ch == "ohlc":
            params["interval"] = key[1]
        elif ch == "book":
            params["depth"] = key[1]
        return params

    def _books_changed(self, symbols: set[str]) -> None:
        """Keep one book subscription per symbol, deep enough for every consumer."""
        for sym in sorted(symbols):
            want = max((s[2] for s in self.streams if s[0] == "book" and s[1] == sym), default=None)  # type: ignore[index]
            have = self.book_depth.get(sym)
            if want == have:
                continue
            if have is not None:
                self._request("unsubscribe", {"channel": "book", "symbol": [sym], "depth": have})
                self.book_depth.pop(sym, None)
                self.books.pop(sym, None)
            if want is not None:
                self._book_subscribe(sym, want)

    def _book_subscribe(self, sym: str, depth: int) -> None:
        self.book_depth[sym] = depth
        self.books[sym] = _BookState(depth)
        self._request("subscribe", {"channel": "book", "symbol": [sym], "depth": depth, "snapshot": True})

    def _request(self, method: str, params: dict[str, Any]) -> None:
        symbols = params["symbol"]
        step = self.venue.max_symbols_per_request
        for i in range(0, len(symbols), step):
            chunk = dict(params, symbol=symbols[i : i + step])
            rid = self.next_id
            self.next_id += 1
            self.requests_by_id[rid] = (method, chunk)
            for sym in chunk["symbol"]:
                k = (method, sym)
                self.pending[k] = self.pending.get(k, 0) + 1
            self.outbox.append(_encode({"method": method, "params": chunk, "req_id": rid}))

    def keepalive(self) -> str | bytes | None:
        rid = self.next_id
        self.next_id += 1
        return _encode({"method": "ping", "req_id": rid})

    # -- frames -------------------------------------------------------------------------------------
    def _ts(self, text: str | None) -> int | None:
        if not text:
            return None
        last, ns = self._time_cache
        if text == last:
            return ns
        try:
            ns = rfc3339_ns(text)
        except ValueError:
            return None
        self._time_cache = (text, ns)
        return ns

    def feed(self, payload: bytes, ts_recv: int, seq: int) -> list[StreamMessage]:
        try:
            m = _data.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            return self._response(payload, ts_recv, seq, e)
        t = type(m)
        if t is _BookMsg:
            out: list[StreamMessage] = []
            for d in m.data:
                out += self._book(d, m.type == "snapshot", ts_recv, seq, len(out))
            return out
        if t is _TradeMsg:
            return self._trades(m, ts_recv, seq)
        if t is _TickerMsg:
            return [StreamMessage(
                provider="kraken", symbol=d.symbol, kind="quote", ts_recv=ts_recv, ts_event=self._ts(d.timestamp),
                conn=self.conn, seq=seq, idx=i, channel="quote", bid=d.bid, bid_size=d.bid_qty, ask=d.ask, ask_size=d.ask_qty,
            ) for i, d in enumerate(m.data)]
        if t is _OhlcMsg:
            return self._ohlc(m, ts_recv, seq)
        if t is _StatusMsg:
            out = []
            for d in m.data:
                up = d.system == "online"
                out.append(status_message(
                    "kraken", "connected" if up else "error", ts_recv,
                    f"venue status: {d.system} (api {d.api_version}, version {d.version})", conn=self.conn, seq=seq,
                ))
            return out
        return []  # heartbeat, instrument

    def _trades(self, m: _TradeMsg, ts: int, seq: int) -> list[StreamMessage]:
        snapshot = m.type == "snapshot"
        out: list[StreamMessage] = []
        for d in m.data:
            key = ("trade", d.symbol)
            ok, gap = self.seqr.accept(key, d.trade_id, d.trade_id)
            if not ok:
                continue
            if gap is not None:
                out.append(status_message(
                    "kraken", "gap", ts, "trade ids skipped", symbol=d.symbol, channel="trade", conn=self.conn, seq=seq,
                    first_missing_id=gap[0], last_missing_id=gap[1], gap_end_ns=ts,
                ))
            out.append(StreamMessage(
                provider="kraken", symbol=d.symbol, kind="trade", ts_recv=ts, ts_event=self._ts(d.timestamp), conn=self.conn,
                seq=seq, idx=len(out), channel="trade", price=d.price, size=d.qty,
                side=d.side if d.side in ("buy", "sell") else None, trade_id=d.trade_id,
                source="backfill" if snapshot else "stream",
            ))
        return out

    def _ohlc(self, m: _OhlcMsg, ts: int, seq: int) -> list[StreamMessage]:
        out: list[StreamMessage] = []
        rows = m.data
        if m.type == "snapshot":
            # recent history: the open bar is current state; older bars were final before we came
            latest: dict[tuple[str, int], _Ohlc] = {}
            for d in rows:
                k = (d.symbol, d.interval)
                if k not in latest or d.interval_begin > latest[k].interval_begin:
                    latest[k] = d
            rows = [d for d in rows if latest[(d.symbol, d.interval)] is d or self._newer_than_open(d)]
            rows.sort(key=lambda d: d.interval_begin)
        for d in rows:
            k = (d.symbol, d.interval)
            prev = self.bars.get(k)
            if prev is not None:
                if d.interval_begin < prev.interval_begin:
                    continue
                if d.interval_begin > prev.interval_begin:
                    out.append(self._bar(prev, True, ts, seq, len(out)))
            self.bars[k] = d
            out.append(self._bar(d, False, ts, seq, len(out)))
        return out

    def _newer_than_open(self, d: _Ohlc) -> bool:
        prev = self.bars.get((d.symbol, d.interval))
        return prev is not None and d.interval_begin >= prev.interval_begin

    def _bar(self, d: _Ohlc, closed: bool, ts: int, seq: int, idx: int) -> StreamMessage:
        iv = canonical_interval(d.interval * 60)
        return StreamMessage(
            provider="kraken", symbol=d.symbol, kind="bar", ts_recv=ts, ts_event=self._ts(d.interval_begin), conn=self.conn,
            seq=seq, idx=idx, channel=f"bar:{iv}", open=d.open, high=d.high, low=d.low, close=d.close, size=d.volume,
            interval=iv, closed=closed, derived=False,
        )

    def _book(self, d: _Book, snapshot: bool, ts: int, seq: int, idx: int) -> list[StreamMessage]:
        sym = d.symbol
        st = self.books.get(sym)
        if st is None:
            # frames we did not ask for on this session (a recording driven without its requests):
            # the depth is what the snapshot shows, rounded up to a depth Kraken offers
            if not snapshot:
                return []
            n = max(len(d.bids), len(d.asks))
            st = self.books[sym] = _BookState(next((x for x in DEPTHS if x >= n), DEPTHS[-1]))
        if not snapshot and not st.synced:
            return []  # waiting for the snapshot of a (re)subscription
        book = st.book
        bids = [(lv.price, lv.qty) for lv in d.bids]
        asks = [(lv.price, lv.qty) for lv in d.asks]
        if snapshot:
            book.clear()
            st.synced = True
        for p, q in bids:
            book.set_bid(p, q)
        for p, q in asks:
            book.set_ask(p, q)
        # levels pushed beyond the subscribed depth are gone at the venue without a delete:
        # emit the deletes, so every consumer's book (and replay) drops them too
        depth = st.depth
        if len(book.bids) > depth:
            for p, _ in book.top_bids(len(book.bids))[depth:]:
                bids.append((p, 0.0))
        if len(book.asks) > depth:
            for p, _ in book.top_asks(len(book.asks))[depth:]:
                asks.append((p, 0.0))
        book.truncate(depth)
        if d.checksum is not None:
            info = (self.venue.instruments or {}).get(sym)
            if info is None:
                if not st.warned:
                    st.warned = True
                    log.warning("kraken: no precision known for %s (instrument list unavailable): checksums not verified", sym)
            elif book_checksum(book, info["price_decimals"], info["qty_decimals"]) != d.checksum:
                return self._mismatch(sym, st, ts, seq)
        return [StreamMessage(
            provider="kraken", symbol=sym, kind="book", ts_recv=ts, ts_event=self._ts(d.timestamp), conn=self.conn, seq=seq,
            idx=idx, channel="book", bids=bids, asks=asks, snapshot=snapshot, checksum=d.checksum,
        )]

    def _mismatch(self, sym: str, st: _BookState, ts: int, seq: int) -> list[StreamMessage]:
        """The local book differs from Kraken's: report a gap and resubscribe for a fresh snapshot."""
        st.synced = False
        st.book.clear()
        depth = self.book_depth.get(sym, st.depth)
        if (("book", sym, depth) in self.streams) or sym in self.book_depth:
            self._request("unsubscribe", {"channel": "book", "symbol": [sym], "depth": depth})
            self._request("subscribe", {"channel": "book", "symbol": [sym], "depth": depth, "snapshot": True})
        return [status_message(
            "kraken", "gap", ts, "book checksum mismatch; resubscribing for a fresh snapshot", symbol=sym, channel="book",
            conn=self.conn, seq=seq, gap_end_ns=ts,
        )]

    def _response(self, payload: bytes, ts: int, seq: int, err: Exception) -> list[StreamMessage]:
        try:
            r = _response.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return self.bad_frame("json", payload, ts, seq, err)
        method = r.method
        if method in ("pong", "ping"):
            return []
        if method in ("subscribe", "unsubscribe"):
            sym = r.symbol or (r.result or {}).get("symbol")
            k = (method, sym)
            n = self.pending.get(k, 0)
            if n > 1:
                self.pending[k] = n - 1
            else:
                self.pending.pop(k, None)
            out: list[StreamMessage] = []
            if r.success is False:
                channel = (r.result or {}).get("channel")
                if channel is None and r.req_id in self.requests_by_id:
                    channel = self.requests_by_id[r.req_id][1].get("channel")
                out.append(status_message(
                    "kraken", "error", ts, f"{method} {channel or ''} {sym or ''} failed: {r.error}".replace("  ", " ")[:300],
                    symbol=sym, channel=_ROUTES.get(channel or ""), conn=self.conn, seq=seq,
                ))
            elif method == "subscribe" and r.result and r.result.get("channel") == "book" and sym is not None:
                depth = r.result.get("depth")
                st = self.books.get(sym)
                if st is None:
                    self.books[sym] = _BookState(int(depth or 10))
                elif depth:
                    st.depth = int(depth)
            if not self.pending:
                self.ready = True
            return out
        if r.error is not None:
            return [status_message("kraken", "error", ts, f"venue error: {r.error}"[:300], conn=self.conn, seq=seq)]
        if r.channel is not None:
            return []  # a channel we do not read
        return self.bad_frame("unknown", payload, ts, seq, err)


# -- history (gap healing) -----------------------------------------------------------------------

class _TradesAnswer(msgspec.Struct):
    error: list[str] = []
    result: dict[str, msgspec.Raw] = {}


_trades_answer = msgspec.json.Decoder(_TradesAnswer)
_trade_rows = msgspec.json.Decoder(list[list[Any]])
_RATE_LIMITED = ("EGeneral:Too many requests", "EAPI:Rate limit exceeded")


class KrakenHistory(HistoryPager):
    """``/0/public/Trades`` from the window's start, by the ``last`` cursor (module doc)."""

    page = 1000

    def __init__(self, venue: KrakenVenue, spec: HealSpec) -> None:
        super().__init__(venue, spec)
        self.seen_ids: set[int] = set()
        info = (venue.instruments or {}).get(spec.symbol) or {}
        self.pair = info.get("rest_name") or spec.symbol.replace("/", "")
        if self.lo is None:
            self.exhausted = True
            self.notes.append("the gap has no start time to heal from")
        else:
            self.since = self.lo - 1  # a cursor after which trades come: the window's first µs included

    def _next(self) -> HttpRequest | None:
        return HttpRequest(
            f"{self.venue.rest_url}/0/public/Trades",
            {"pair": self.pair, "since": str(self.since), "count": self.page},
            purpose="history",
        )

    def _page(self, request: HttpRequest, response: HttpResponse) -> list[Row]:
        try:
            doc = _trades_answer.decode(response.body)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise HistoryError(f"malformed Trades answer: {e}") from None
        if doc.error:
            text = "; ".join(doc.error)
            if any(e.startswith(_RATE_LIMITED) for e in doc.error):
                raise HistoryRetry(f"Trades: {text}")
            raise HistoryError(f"Trades refused: {text}")
        last = doc.result.get("last")
        data = [v for k, v in doc.result.items() if k != "last"]
        try:
            cursor = int(msgspec.json.decode(last)) if last is not None else None
            raw = _trade_rows.decode(data[0]) if data else []
            rows = [
                (int(round(float(r[2]) * 1e6)) * 1000, float(r[0]), float(r[1]), {"b": "buy", "s": "sell"}.get(r[3]),
                 int(r[6]) if len(r) > 6 else None)
                for r in raw
            ]
        except (msgspec.DecodeError, ValueError, TypeError, IndexError) as e:
            raise HistoryError(f"malformed Trades rows: {e}") from None
        sp = self.spec
        ids = [r[4] for r in rows if r[4] is not None]
        fresh = [i for i in ids if i not in self.seen_ids]
        self.seen_ids.update(ids)
        if not rows or (ids and not fresh):
            self.exhausted = True
            self.notes.append("the history has no more trades after the cursor")
        elif (sp.before_id is not None and ids and max(ids) >= sp.before_id - 1) or (self.hi is not None and rows[-1][0] > self.hi):
            self.complete = True
        elif cursor is None or cursor < self.since:
            self.exhausted = True
            self.notes.append("the Trades cursor did not advance")
        else:
            # one instant back: trades sharing the last row's time but cut off by the page
            # come again (ids de-duplicate them) rather than being skipped
            self.since = cursor - 1
        return [(ts, price, size, side, tid, None, None, None) for ts, price, size, side, tid in rows]
