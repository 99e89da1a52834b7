"""Alpaca market data stream v2 (stocks) and v1beta3 (crypto), sans-IO.

Protocol facts this module relies on (``shared/providers/alpaca.md``; Alpaca's docs
"WebSocket Stream", "Real-time Stock Data", "Real-time Crypto Data", "Working with
/assets"; the official SDK alpaca-py 0.44.0 ``alpaca/data/live/websocket.py``,
``stock.py``, ``crypto.py``, read, not copied):

- URLs: ``wss://stream.data.alpaca.markets/v2/{iex|sip|delayed_sip|test}`` (the test stream
  is always on and serves the symbol ``FAKEPACA``), crypto ``/v1beta3/crypto/us``. Stock
  and crypto feeds are different endpoints, hence different connections
  (:meth:`AlpacaVenue.connection_group`).
- Framing is chosen by the upgrade request's ``Content-Type``: ``application/json``
  (text frames; the default when the header is absent) or ``application/msgpack``
  (binary frames; what alpaca-py always sends). In MessagePack the timestamps ``t`` are
  Timestamp extensions (type -1); in JSON they are RFC 3339 strings with up to nine
  fractional digits (``2023-04-06T11:54:26.83915973Z``).
- Session: the server sends ``[{"T":"success","msg":"connected"}]``; the client sends
  ``{"action":"auth","key":..,"secret":..}`` within about 10 s and gets
  ``[{"T":"success","msg":"authenticated"}]``; then ``{"action":"subscribe",
  "trades":[..],"quotes":[..],"bars":[..],...}`` (deltas; ``"*"`` is the wildcard),
  answered by ``[{"T":"subscription",...}]`` listing the *whole* current set (the key
  set varies by feed: clients must not depend on it). ``unsubscribe`` likewise.
- Every server frame is an array. Items by ``T``: ``t`` trade ``{S,i,x,p,s,c,z,t}``
  (crypto ``{S,p,s,t,i,tks}``, ``tks`` taker side ``B``/``S``), ``q`` quote
  ``{S,bx,bp,bs,ax,ap,as,c,z,t}``, ``b`` minute bar / ``u`` updated bar / ``d`` daily bar
  ``{S,o,h,l,c,v,t,n,vw}`` (``t`` is the bar start), ``s`` trading status, ``l`` LULD,
  ``c`` correction, ``x`` cancel/error, ``i`` imbalance, ``o`` crypto order book
  ``{S,t,b:[{p,s}],a:[{p,s}],r}`` (``r`` true: a full book; size 0 deletes a level).
- Errors ``[{"T":"error","code":N,"msg":".."}]``: 400 invalid syntax, 401 not
  authenticated, 402 auth failed, 403 already authenticated, 404 auth timeout, 405
  symbol limit exceeded, 406 connection limit exceeded, 407 slow client, 408 v2 not
  enabled, 409 insufficient subscription, 410 invalid subscribe action for this feed,
  500 internal error. Whether the server closes after them is not documented.
- One session per key per endpoint on most plans: a second one gets 406 at auth; a
  session that vanished without a close is kept for about 90 s (reconnecting sooner
  gets 406). No application heartbeat (alpaca-py pings every 10 s).
- Trade ids ``i`` are assigned per venue: not unique across exchanges and not dense,
  so they neither de-duplicate nor reveal gaps. Quote sizes are in round lots (docs).
- Credentials: alpaca-py reads no environment; Alpaca's docs and its older SDKs use
  ``APCA_API_KEY_ID`` / ``APCA_API_SECRET_KEY``; ``ALPACA_API_KEY`` /
  ``ALPACA_SECRET_KEY`` are accepted too.
- Symbols: ``GET /v2/assets?status=active&asset_class=us_equity|crypto`` on the Trading
  API (``https://api.alpaca.markets``; paper keys, whose ids start with ``PK``, on
  ``https://paper-api.alpaca.markets``) with headers ``APCA-API-KEY-ID`` /
  ``APCA-API-SECRET-KEY``; without ``asset_class`` it lists US equities only.

History (gap healing; ``shared/providers/rest-history.md`` §4, Alpaca's "Historical
stock data"): ``GET /v2/stocks/trades?symbols=&start=&end=&limit=&feed=&sort=asc&page_token=``
(key headers; RFC 3339 bounds, inclusive; ``limit`` ≤ 10000 over all symbols; pages by
``next_page_token`` until it is null), crypto ``/v1beta3/crypto/us/trades`` (no key). Rows are
the stream's trade fields (``t``, ``x``, ``p``, ``s``, ``c``, ``i``, ``z``; crypto ``tks``).
``i`` repeats across exchanges, so a trade is known by (time, exchange, id) (:mod:`wrdata.dedupe`).
Free plans get 403 for SIP data of the last 15 minutes; 200 calls a minute (429 beyond).

Choices:

- ``bar:1m`` subscribes ``bars`` *and* ``updatedBars``: an updated bar (``u``) is a later,
  corrected version of a minute bar already delivered (late trades), emitted as a
  closed bar with the same ``ts_event``; a consumer keeping bars by start time keeps the
  last one. ``updated_bars=False`` turns this off. ``bar:1d`` is the running daily bar
  (``d``, sent every minute after the open), ``closed=False``. Other intervals are built
  from trades (``derived``).
- ``book`` (crypto only) carries the ``orderbooks`` deltas; the shared book module keeps
  the book.
- Trading statuses, LULD bands, corrections and cancels have no place in the event model
  yet: they are parsed, logged and kept in ``raw``; ``statuses=True`` also subscribes the
  trading statuses of every traded stock so that they are recorded.
- Errors: 402, 408, 409, and 405/410 before anything is subscribed, are fatal (a retry
  cannot help); 406 reconnects with backoff (a half-dead session of ours may hold the
  slot for 90 s) and is fatal after ``max_conn_limit_retries`` in a row; 401, 404, 407
  and 500 reconnect; 400, 403 and later 405/410 are ``error`` status events.
- Framing: ``framing="msgpack"`` by default (the official SDK's choice; binary
  timestamps cost less to read than RFC 3339 text); ``"json"`` is fully supported. A
  session reads the framing from each frame, so a recording rebuilds whatever it holds.
- One connection per endpoint (``max_streams_per_conn`` is unbounded): a second one
  would be refused with 406. No rollover (``lifetime`` None) for the same reason.
"""

from __future__ import annotations

import asyncio
import calendar
import difflib
import logging
import re
import time
from collections.abc import Hashable
from typing import Any, Union

import msgspec

from ..channels import Channel
from ..message import StreamMessage, status_message
from .base import (
    AuthenticationError,
    ConfigurationError,
    Finite,
    HttpRequest,
    HttpResponse,
    ProviderError,
    Session,
    SubscriptionError,
    UnknownSymbolError,
    UnsupportedChannelError,
    Venue,
)
from .heal import HealSpec, HistoryError, HistoryPager, Row
from .runner import WsClient

log = logging.getLogger("wrdata.streaming.alpaca")

STOCK_FEEDS = ("iex", "sip", "delayed_sip", "test", "boats", "overnight")
_FEED_PATH = {"boats": "/v1beta1/boats", "overnight": "/v1beta1/overnight"}
#: subscribe key -> channel route of the messages it produces
ROUTES = {"trades": "trade", "quotes": "quote", "bars": "bar:1m", "dailyBars": "bar:1d", "orderbooks": "book"}
_STOCK_SHAPE = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,5}(?:\.[A-Za-z]{1,2})?$")
_NS = 1_000_000_000
_SIDE = {"B": "buy", "S": "sell"}
_MISSING_CREDENTIALS = (
    "alpaca: no API key: set APCA_API_KEY_ID and APCA_API_SECRET_KEY, or pass "
    "credentials={'alpaca': {'key': ..., 'secret': ...}} (or alpaca_key=..., alpaca_secret=...)"
)


class AlpacaError(ProviderError):
    """An error the stream reported that stops the provider (``code`` is Alpaca's)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class AlpacaAuthError(AlpacaError, AuthenticationError):
    """402 auth failed, 408 v2 not enabled, 409 insufficient subscription."""


class AlpacaSubscriptionError(AlpacaError, SubscriptionError):
    """405 symbol limit exceeded or 410 invalid subscribe action, on the first subscription."""


class AlpacaConnectionLimitError(AlpacaError):
    """406 connection limit exceeded, again and again: another session holds these keys."""


# -- time ---------------------------------------------------------------------------------------

_MINUTES: dict[str, int] = {}
_FRACTION_SCALE = tuple(10 ** (9 - k) for k in range(10))
_ISO = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|z|[+-]\d{2}:?\d{2})$")


def rfc3339_ns(text: str) -> int:
    """``2023-04-06T11:54:26.83915973Z`` -> ns since the epoch, exactly (no datetime).

    The minute prefix is cached, so a stream of timestamps costs a dict lookup and two
    small ``int()`` calls each. Offsets other than ``Z`` take the slow path.
    """
    base = _MINUTES.get(text[:16])
    n = len(text)
    if base is not None and n >= 20 and text[n - 1] == "Z" and text[16] == ":":
        sec = text[17:19]
        if sec.isdigit():
            if n == 20:
                return base + int(sec) * _NS
            frac = text[20 : n - 1]
            k = len(frac)
            if text[19] == "." and 0 < k <= 9 and frac.isdigit():
                return base + int(sec) * _NS + int(frac) * _FRACTION_SCALE[k]
    return _rfc3339_slow(text)


def _rfc3339_slow(text: str) -> int:
    m = _ISO.match(text)
    if m is None:
        raise ValueError(f"not an RFC 3339 timestamp: {text[:40]!r}")
    y, mo, d, h, mi, s, frac, tz = m.groups()
    minute = calendar.timegm((int(y), int(mo), int(d), int(h), int(mi), 0, 0, 0, 0)) * _NS
    if tz in ("Z", "z"):
        if len(_MINUTES) > 4096:
            _MINUTES.clear()
        _MINUTES[text[:16]] = minute
        offset = 0
    else:
        sign = -1 if tz[0] == "-" else 1
        digits = tz[1:].replace(":", "")
        offset = sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60) * _NS
    ns = minute + int(s) * _NS - offset
    if frac:
        ns += int(frac) * _FRACTION_SCALE[len(frac)]
    return ns


def msgpack_ts_ns(raw: msgspec.Raw | bytes) -> int:
    """A MessagePack Timestamp extension (type -1, all three widths) -> ns since the epoch."""
    ns = _msgpack_ts_ns(raw)
    if not -(2**63) <= ns < 2**63:  # 96-bit timestamps reach far beyond int64 nanoseconds
        raise ValueError("t is out of range")
    return ns


def _msgpack_ts_ns(raw: msgspec.Raw | bytes) -> int:
    b = bytes(raw)
    h = b[0]
    if h == 0xD7 and b[1] == 0xFF:  # timestamp 64: 30-bit ns, 34-bit seconds
        v = int.from_bytes(b[2:10], "big")
        return (v & 0x3FFFFFFFF) * _NS + (v >> 34)
    if h == 0xC7 and b[1] == 12 and b[2] == 0xFF:  # timestamp 96: 32-bit ns, signed 64-bit seconds
        return int.from_bytes(b[7:15], "big", signed=True) * _NS + int.from_bytes(b[3:7], "big")
    if h == 0xD6 and b[1] == 0xFF:  # timestamp 32: seconds
        return int.from_bytes(b[2:6], "big") * _NS
    if 0xA0 <= h <= 0xBF or h in (0xD9, 0xDA, 0xDB):  # text, as some encoders send it
        return rfc3339_ns(msgspec.msgpack.decode(b))
    raise ValueError("t is not a MessagePack timestamp")


# -- wire types -----------------------------------------------------------------------------
#
# One tagged union over every documented item, so a whole frame decodes in one pass. The
# timestamp type differs by framing (RFC 3339 text in JSON; a Timestamp extension in
# MessagePack, kept as raw bytes so that no datetime is built); the rest is shared.

_SUB_KEYS = (
    "trades", "quotes", "bars", "updatedBars", "dailyBars", "statuses", "lulds", "corrections", "cancelErrors",
    "orderbooks", "imbalances", "news",
)


class _Wire:
    """The item types and frame decoder of one framing."""

    def __init__(self, ts_type: Any, decoder_cls: Any) -> None:
        def item(name: str, tag: str, fields: list) -> type:
            return msgspec.defstruct(name, fields, tag_field="T", tag=tag, kw_only=True)

        opt_str = (str | None, None)
        t = ("t", ts_type)
        self.Trade = item("Trade", "t", [
            ("S", str), ("p", Finite), ("s", Finite), t, ("i", int | None, None), ("x", *opt_str),
            ("c", list[str] | None, None), ("z", *opt_str), ("tks", *opt_str),
        ])
        self.Quote = item("Quote", "q", [
            ("S", str), ("bp", Finite), ("bs", Finite), ("ap", Finite), ("as_", Finite, msgspec.field(name="as")), t,
            ("bx", *opt_str), ("ax", *opt_str), ("c", list[str] | None, None), ("z", *opt_str),
        ])
        bar_fields = [
            ("S", str), ("o", Finite), ("h", Finite), ("l", Finite), ("c", Finite), ("v", Finite), t,
            ("n", int | None, None), ("vw", Finite | None, None),
        ]
        self.Bar = item("Bar", "b", bar_fields)
        self.UpdatedBar = item("UpdatedBar", "u", bar_fields)
        self.DailyBar = item("DailyBar", "d", bar_fields)
        level = msgspec.defstruct("Level", [("p", Finite), ("s", Finite)])
        self.Orderbook = item("Orderbook", "o", [("S", str), t, ("b", list[level], []), ("a", list[level], []), ("r", bool, False)])
        self.Status = item("TradingStatus", "s", [
            ("S", str), ("sc", *opt_str), ("sm", *opt_str), ("rc", *opt_str), ("rm", *opt_str), ("z", *opt_str),
        ])
        self.Luld = item("Luld", "l", [("S", str)])
        self.Correction = item("Correction", "c", [("S", str)])
        self.Cancel = item("Cancel", "x", [("S", str), ("i", int | None, None), ("a", *opt_str)])
        self.Imbalance = item("Imbalance", "i", [("S", str)])
        self.Success = item("Success", "success", [("msg", str, "")])
        self.Error = item("Error", "error", [("code", int | None, None), ("msg", str, "")])
        self.Subscription = item("Subscription", "subscription", [(k, list[str] | None, None) for k in _SUB_KEYS])
        types = (
            self.Trade, self.Quote, self.Bar, self.UpdatedBar, self.DailyBar, self.Orderbook, self.Status, self.Luld,
            self.Correction, self.Cancel, self.Imbalance, self.Success, self.Error, self.Subscription,
        )
        self.tags = frozenset(("t", "q", "b", "u", "d", "o", "s", "l", "c", "x", "i", "success", "error", "subscription"))
        union = Union[types]  # noqa: UP007 (a runtime union of a tuple of types)
        self.frame = decoder_cls(list[union])
        self.item = decoder_cls(union)
        self.raw_items = decoder_cls(list[msgspec.Raw])
        self.tag = decoder_cls(_Tag)


class _Tag(msgspec.Struct):
    T: str | None = None


_JSON = _Wire(str, msgspec.json.Decoder)
_MSGPACK = _Wire(msgspec.Raw, msgspec.msgpack.Decoder)
_json_encode = msgspec.json.Encoder().encode
_msgpack_encode = msgspec.msgpack.Encoder().encode


# -- venue ----------------------------------------------------------------------------------------

class AlpacaVenue(Venue):
    name = "alpaca"
    default_url = "wss://stream.data.alpaca.markets"
    credential_env = {"key": ("APCA_API_KEY_ID", "ALPACA_API_KEY"), "secret": ("APCA_API_SECRET_KEY", "ALPACA_SECRET_KEY")}
    stock = True
    native_bars = frozenset({"1m", "1d"})
    kinds = frozenset({"trade", "quote", "bar", "book"})

    max_streams_per_conn = 1 << 30  # one session per key per endpoint: never split a feed
    control_interval = 0.05
    ws_ping_interval = 10.0  # the server sends nothing while a subscription is quiet; pongs prove life
    silence_timeout = 60.0
    ready_timeout = 15.0

    #: stock feed: iex, sip, delayed_sip, test (FAKEPACA), boats, overnight
    feed = "iex"
    #: crypto location: us (``/v1beta3/crypto/us``)
    crypto_feed = "us"
    #: msgpack (as alpaca-py) or json
    framing = "msgpack"
    #: bar:1m also subscribes updatedBars (late corrections of minute bars)
    updated_bars = True
    #: also subscribe trading statuses (halts) of traded stocks, for the recording
    statuses = False
    #: 406 "connection limit exceeded" this many times in a row stops the provider
    max_conn_limit_retries = 10
    #: Trading API base for the asset list (None: derived; see the module docstring)
    trading_url: str | None = None
    #: check symbols against the asset list before subscribing
    validate_symbols = True
    #: subscribe at most this many symbols per control frame (each gets its own ack)
    symbols_per_frame = 1000
    # healing: ids are per exchange (no order); times are ns; free plans: 200 calls a minute
    trade_time_resolution = 1
    history_rate = 2.0
    history_burst = 4.0
    #: the ``feed`` asked of the history endpoint (None: the stream's feed; ``test`` asks ``sip``)
    history_feed: str | None = None

    def __init__(self, url: str | None = None, rest_url: str | None = None, credentials: dict[str, str] | None = None,
                 **options: Any) -> None:
        super().__init__(url, rest_url, credentials, **options)
        if self.feed not in STOCK_FEEDS:
            raise ConfigurationError(f"alpaca: unknown feed {self.feed!r}: expected one of {', '.join(STOCK_FEEDS)}")
        if self.framing not in ("msgpack", "json"):
            raise ConfigurationError(f"alpaca: framing must be 'msgpack' or 'json', not {self.framing!r}")
        self.conn_limit_strikes = 0  # consecutive 406 answers, over all connections

    @classmethod
    def find_credentials(cls, given: dict[str, str]) -> dict[str, str]:
        aliases = {"key_id": "key", "api_key": "key", "secret_key": "secret", "api_secret": "secret"}
        norm = {aliases.get(k, k): v for k, v in given.items()}
        return super().find_credentials(norm)

    def derive_rest_url(self, ws_url: str) -> str:
        if "stream.data.sandbox.alpaca.markets" in ws_url:
            return "https://data.sandbox.alpaca.markets"
        if "stream.data.alpaca.markets" in ws_url:
            return "https://data.alpaca.markets"
        return Venue.derive_rest_url(self, ws_url)

    def trading_base(self) -> str | None:
        """Where ``/v2/assets`` lives (None: no asset list, e.g. the broker sandbox)."""
        if self.trading_url:
            return self.trading_url.rstrip("/")
        if self.rest_url == "https://data.alpaca.markets":
            paper = self.credentials.get("key", "").startswith("PK")
            return "https://paper-api.alpaca.markets" if paper else "https://api.alpaca.markets"
        if "alpaca.markets" in self.rest_url:
            return None
        return self.rest_url  # a simulator or proxy serves everything on one port

    def describe(self) -> str:
        return f"alpaca ({self.feed} feed) at {self.url}"

    # -- symbols -----------------------------------------------------------------------
    @classmethod
    def claims(cls, symbol: str) -> bool:
        return bool(_STOCK_SHAPE.match(symbol))

    def venue_symbol(self, symbol: str) -> str:
        s = symbol.strip().upper()
        if "-" in s and not s.startswith("-"):  # BTC-USD -> BTC/USD (crypto is BASE/QUOTE)
            s = s.replace("-", "/")
        return s

    def assets_request(self, asset_class: str) -> HttpRequest | None:
        base = self.trading_base()
        if base is None:
            return None
        return HttpRequest(
            f"{base}/v2/assets",
            {"status": "active", "asset_class": asset_class},
            headers={"APCA-API-KEY-ID": self.credentials.get("key", ""), "APCA-API-SECRET-KEY": self.credentials.get("secret", "")},
            purpose="instruments",
        )

    # -- subscriptions ----------------------------------------------------------------------
    def check_channel(self, channel: Channel) -> None:
        if channel.kind not in ("trade", "quote", "bar", "book"):
            raise UnsupportedChannelError(f"alpaca has no {channel.kind} stream")
        if channel.kind == "book" and channel.partial:
            raise UnsupportedChannelError("alpaca has no partial books; use book:N (crypto order book deltas)")

    def streams(self, symbol: str, channel: Channel) -> list[Hashable]:
        k = channel.kind
        crypto = "/" in symbol
        if k == "trade":
            return [("trades", symbol)]
        if k == "quote":
            return [("quotes", symbol)]
        if k == "bar":
            if channel.interval == "1m":
                return [("bars", symbol)]
            if channel.interval == "1d":
                return [("dailyBars", symbol)]
            return [("trades", symbol)]  # other intervals are built from trades
        if k == "book":
            if not crypto:
                raise UnsupportedChannelError(f"alpaca has order books for crypto only, not for {symbol!r}")
            return [("orderbooks", symbol)]
        raise UnsupportedChannelError(f"alpaca has no {k} stream")

    def stream_target(self, stream: Hashable) -> tuple[str | None, str | None]:
        key, symbol = stream  # type: ignore[misc]
        return symbol, ROUTES.get(key)

    def connection_group(self, stream: Hashable) -> Hashable:
        return "crypto" if "/" in stream[1] else "stocks"  # type: ignore[index]

    def path(self, group: Hashable) -> str:
        if group == "crypto":
            return f"/v1beta3/crypto/{self.crypto_feed}"
        return _FEED_PATH.get(self.feed, f"/v2/{self.feed}")

    def session(self, conn: int, streams: list[Hashable]) -> AlpacaSession:
        return AlpacaSession(self, conn, streams)

    def client(self, sink, raw_sink=None, on_fatal=None, transport: str | None = None) -> AlpacaClient:
        return AlpacaClient(self, sink, raw_sink, on_fatal, transport)

    def history_pager(self, spec: HealSpec) -> AlpacaHistory | None:
        return AlpacaHistory(self, spec) if spec.channel == "trade" else None


class AlpacaClient(WsClient):
    """The shared runner plus Alpaca's symbol check (two asset lists: equities and crypto)."""

    venue: AlpacaVenue

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.assets: dict[str, frozenset[str] | None] = {}
        self._asset_lock = asyncio.Lock()

    async def validate_symbol(self, symbol: str) -> None:
        venue = self.venue
        if not venue.has_credentials(venue.credentials):
            raise AuthenticationError(_MISSING_CREDENTIALS)
        if not venue.validate_symbols:
            return
        crypto = "/" in symbol
        if not crypto and not _STOCK_SHAPE.match(symbol):
            raise UnknownSymbolError(f"alpaca: {symbol!r} is neither a stock ticker (AAPL, BRK.B) nor a crypto pair (BTC/USD)")
        if venue.feed == "test" and not crypto:
            return  # the test stream serves FAKEPACA, which no asset list holds
        known = await self._asset_list("crypto" if crypto else "us_equity")
        if known is not None and symbol not in known:
            close = difflib.get_close_matches(symbol, sorted(known), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise UnknownSymbolError(f"alpaca: unknown symbol {symbol!r}: not an active asset{hint}")

    async def _asset_list(self, asset_class: str) -> frozenset[str] | None:
        async with self._asset_lock:
            if asset_class in self.assets:
                return self.assets[asset_class]
            known: frozenset[str] | None = None
            req = self.venue.assets_request(asset_class)
            if req is not None:
                try:
                    resp, _ts, _seq = await self.request(req)
                except OSError as e:
                    log.warning("alpaca: cannot fetch the asset list (%s); symbols are not validated", e)
                else:
                    if resp.status == 200:
                        try:
                            rows = msgspec.json.decode(resp.body)
                            known = frozenset(r["symbol"] for r in rows if isinstance(r, dict) and "symbol" in r)
                        except (msgspec.DecodeError, TypeError) as e:
                            log.warning("alpaca: unreadable asset list (%s); symbols are not validated", e)
                    else:
                        # paper keys on the live host (or the reverse) are refused here while the
                        # stream accepts them: never block streaming on the asset list
                        log.warning(
                            "alpaca: asset list refused (HTTP %d at %s); symbols are not validated "
                            "(set options={'alpaca': {'trading_url': ...}} to the Trading API your keys belong to)",
                            resp.status, req.url,
                        )
            self.assets[asset_class] = known
            return known


# -- session ----------------------------------------------------------------------------------------

class AlpacaSession(Session):
    venue: AlpacaVenue

    def __init__(self, venue: AlpacaVenue, conn: int, streams) -> None:
        super().__init__(venue, conn, streams)
        first = next(iter(self.streams), None)
        self.group = venue.connection_group(first) if first is not None else "stocks"
        self.msgpack = venue.framing == "msgpack"
        self.state = "connecting"  # connected, authenticated
        self.awaiting_acks = 0
        self.sent: set[Hashable] = set()  # streams asked for and not withdrawn
        self.missing: set[Hashable] = set()  # streams an ack left out (reported once)
        self.last_control = ""
        self._unknown_tags: set[str] = set()
        j, m = _JSON, _MSGPACK
        self._json_handlers = self._handlers(j)
        self._msgpack_handlers = self._handlers(m)

    def _handlers(self, w: _Wire) -> dict[type, Any]:
        return {
            w.Trade: self._trade, w.Quote: self._quote, w.Bar: self._bar, w.UpdatedBar: self._bar,
            w.DailyBar: self._daily, w.Orderbook: self._book, w.Status: self._status, w.Luld: self._ignore,
            w.Correction: self._ignore, w.Cancel: self._cancel, w.Imbalance: self._ignore,
            w.Success: self._success, w.Error: self._error, w.Subscription: self._subscription,
        }

    # -- connection ---------------------------------------------------------------------
    def url(self) -> str:
        return self.venue.url + self.venue.path(self.group)

    def headers(self) -> dict[str, str]:
        return {"Content-Type": "application/msgpack" if self.msgpack else "application/json"}

    def _encode(self, msg: dict[str, Any]) -> str | bytes:
        if self.msgpack:
            return _msgpack_encode(msg)
        return _json_encode(msg).decode()

    def redact(self, payload: bytes) -> bytes:
        if b"auth" not in payload:
            return payload
        try:
            binary = payload[:1] != b"{"
            msg = msgspec.msgpack.decode(payload) if binary else msgspec.json.decode(payload)
        except msgspec.DecodeError:
            return payload
        if isinstance(msg, dict) and msg.get("action") == "auth":
            msg = {k: ("***" if k in ("key", "secret") else v) for k, v in msg.items()}
            return _msgpack_encode(msg) if binary else _json_encode(msg)
        return payload

    def on_close(self, code: int | None, reason: str) -> Exception | None:
        return None

    # -- subscriptions --------------------------------------------------------------------
    def add(self, streams: list[Hashable]) -> None:
        self.streams.update(streams)
        if self.state == "authenticated":
            self._send("subscribe", streams)

    def remove(self, streams: list[Hashable]) -> None:
        for s in streams:
            self.streams.discard(s)
        if self.state == "authenticated":
            self._send("unsubscribe", [s for s in streams if s in self.sent])
        self.sent.difference_update(streams)
        self.missing.difference_update(streams)

    def _send(self, action: str, streams: list[Hashable]) -> None:
        venue = self.venue
        ordered = sorted(streams)
        step = max(1, venue.symbols_per_frame)
        for i in range(0, len(ordered), step):
            chunk = ordered[i : i + step]
            by: dict[str, list[str]] = {}
            for key, sym in chunk:
                by.setdefault(key, []).append(sym)
                if key == "bars" and venue.updated_bars:
                    by.setdefault("updatedBars", []).append(sym)
                if key == "trades" and venue.statuses and self.group == "stocks":
                    by.setdefault("statuses", []).append(sym)
            self.outbox.append(self._encode({"action": action, **by}))
            self.awaiting_acks += 1
            what = "; ".join(f"{k} {','.join(v[:5])}{'...' if len(v) > 5 else ''}" for k, v in by.items())
            self.last_control = f"{action} {what}"
        if action == "subscribe":
            self.sent.update(streams)

    # -- frames ----------------------------------------------------------------------------
    def feed(self, payload: bytes, ts_recv: int, seq: int) -> list[StreamMessage]:
        if not payload:
            return self.bad_frame("empty", payload, ts_recv, seq, "empty frame")
        first = payload[0]
        if first == 0x5B or first in b" \t\r\n":  # '[': JSON
            wire, handlers, ts_of = _JSON, self._json_handlers, rfc3339_ns
        elif 0x90 <= first <= 0x9F or first in (0xDC, 0xDD):  # a MessagePack array
            wire, handlers, ts_of = _MSGPACK, self._msgpack_handlers, msgpack_ts_ns
        else:
            return self.bad_frame("not an array", payload, ts_recv, seq, "neither a JSON nor a MessagePack array")
        try:
            items = wire.frame.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            return self._salvage(wire, handlers, ts_of, payload, ts_recv, seq, e)
        out: list[StreamMessage] = []
        bad: Exception | None = None
        for item in items:
            try:
                handlers[item.__class__](item, ts_of, ts_recv, seq, out)
            except (ValueError, IndexError) as e:  # a timestamp that does not parse: skip that item only
                bad = e
        if bad is not None:
            self._bad(out, "timestamp", payload, ts_recv, seq, bad)
        return out

    def _bad(self, out: list[StreamMessage], kind: str, payload: bytes, ts: int, seq: int, err: Exception) -> None:
        for m in self.bad_frame(kind, payload, ts, seq, err):
            m.idx = len(out)
            out.append(m)

    def _salvage(self, wire: _Wire, handlers, ts_of, payload: bytes, ts: int, seq: int, err: Exception) -> list[StreamMessage]:
        """A frame that does not decode as a whole: keep every item that does.

        Items of a type this module does not know (Alpaca adds some now and then) are
        skipped and logged once; a malformed item makes one error event for the frame.
        """
        try:
            raws = wire.raw_items.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return self.bad_frame("array", payload, ts, seq, err)
        out: list[StreamMessage] = []
        bad: Exception | None = None
        tag: str | None = None
        for raw in raws:
            try:
                tag = wire.tag.decode(raw).T
            except (msgspec.DecodeError, msgspec.ValidationError) as e:
                bad = e
                continue
            if tag not in wire.tags:
                if tag not in self._unknown_tags:
                    self._unknown_tags.add(str(tag))
                    log.info("alpaca conn %d: skipping items of unknown type T=%r", self.conn, tag)
                continue
            try:
                item = wire.item.decode(raw)
                handlers[item.__class__](item, ts_of, ts, seq, out)
            except (msgspec.DecodeError, msgspec.ValidationError, ValueError, IndexError) as e:
                bad = e
        if bad is not None:
            self._bad(out, f"item T={tag}" if tag else "item", payload, ts, seq, bad)
        return out

    # -- data items -----------------------------------------------------------------------------
    def _trade(self, d, ts_of, ts: int, seq: int, out: list) -> None:
        c = d.c
        out.append(StreamMessage(
            provider="alpaca", symbol=d.S, kind="trade", ts_recv=ts, ts_event=ts_of(d.t), conn=self.conn, seq=seq,
            idx=len(out), channel="trade", price=d.p, size=d.s, side=_SIDE.get(d.tks) if d.tks else None,
            trade_id=d.i, exchange=d.x, conditions=",".join(c) if c else None,
        ))

    def _quote(self, d, ts_of, ts: int, seq: int, out: list) -> None:
        out.append(StreamMessage(
            provider="alpaca", symbol=d.S, kind="quote", ts_recv=ts, ts_event=ts_of(d.t), conn=self.conn, seq=seq,
            idx=len(out), channel="quote", bid=d.bp, ask=d.ap, bid_size=d.bs, ask_size=d.as_,
        ))

    def _bar(self, d, ts_of, ts: int, seq: int, out: list) -> None:
        # b: the minute just ended; u: a later correction of a minute already sent
        out.append(StreamMessage(
            provider="alpaca", symbol=d.S, kind="bar", ts_recv=ts, ts_event=ts_of(d.t), conn=self.conn, seq=seq,
            idx=len(out), channel="bar:1m", open=d.o, high=d.h, low=d.l, close=d.c, size=d.v, interval="1m",
            closed=True, derived=False,
        ))

    def _daily(self, d, ts_of, ts: int, seq: int, out: list) -> None:
        out.append(StreamMessage(
            provider="alpaca", symbol=d.S, kind="bar", ts_recv=ts, ts_event=ts_of(d.t), conn=self.conn, seq=seq,
            idx=len(out), channel="bar:1d", open=d.o, high=d.h, low=d.l, close=d.c, size=d.v, interval="1d",
            closed=False, derived=False,
        ))

    def _book(self, d, ts_of, ts: int, seq: int, out: list) -> None:
        out.append(StreamMessage(
            provider="alpaca", symbol=d.S, kind="book", ts_recv=ts, ts_event=ts_of(d.t), conn=self.conn, seq=seq,
            idx=len(out), channel="book", bids=[(x.p, x.s) for x in d.b], asks=[(x.p, x.s) for x in d.a],
            snapshot=d.r,
        ))

    def _status(self, d, ts_of, ts: int, seq: int, out: list) -> None:
        log.info("alpaca: trading status %s: %s %s (%s %s)", d.S, d.sc, d.sm or "", d.rc or "", d.rm or "")

    def _cancel(self, d, ts_of, ts: int, seq: int, out: list) -> None:
        log.info("alpaca: trade %s of %s %s", d.i, d.S, "cancelled" if d.a == "C" else "in error")

    def _ignore(self, d, ts_of, ts: int, seq: int, out: list) -> None:
        pass

    # -- control items ------------------------------------------------------------------------
    def _success(self, d, ts_of, ts: int, seq: int, out: list) -> None:
        if d.msg == "connected" and self.state == "connecting":
            self.state = "connected"
            creds = self.venue.credentials
            if "key" not in creds or "secret" not in creds:
                self.fatal = AlpacaAuthError(_MISSING_CREDENTIALS)
                return
            self.outbox.append(self._encode({"action": "auth", "key": creds["key"], "secret": creds["secret"]}))
        elif d.msg == "authenticated" and self.state != "authenticated":
            self.state = "authenticated"
            self.venue.conn_limit_strikes = 0
            if self.streams:
                self._send("subscribe", list(self.streams))
            else:
                self.ready = True

    def _subscription(self, d, ts_of, ts: int, seq: int, out: list) -> None:
        self.awaiting_acks = max(0, self.awaiting_acks - 1)
        if self.awaiting_acks == 0:
            self.ready = True
        # the ack lists the whole current set; a key it carries without one of our symbols
        # means the venue dropped that subscription (keys it omits say nothing)
        for stream in sorted(self.sent - self.missing):
            key, sym = stream
            have = getattr(d, key, None)
            if have is not None and sym not in have and "*" not in have:
                self.missing.add(stream)
                out.append(status_message(
                    "alpaca", "error", ts, f"alpaca did not confirm the {key} subscription of {sym}",
                    symbol=sym, channel=ROUTES.get(key), conn=self.conn, seq=seq, idx=len(out),
                ))

    def _error(self, d, ts_of, ts: int, seq: int, out: list) -> None:
        code, text = d.code, d.msg
        what = f"{code} {text}".strip()
        feed = self.venue.feed if self.group == "stocks" else f"crypto/{self.venue.crypto_feed}"
        if code == 402:
            self.fatal = AlpacaAuthError(
                f"alpaca rejected the API key ({what}): check APCA_API_KEY_ID / APCA_API_SECRET_KEY", code)
        elif code == 408:
            self.fatal = AlpacaAuthError(f"alpaca: this account has no market data v2 access ({what})", code)
        elif code == 409:
            self.fatal = AlpacaAuthError(
                f"alpaca: the {feed} feed is not in this account's plan ({what}); the free plan has feed='iex'", code)
        elif code in (405, 410) and not self.ready:
            why = "more symbols than the plan allows" if code == 405 else "a channel this feed does not offer"
            self.fatal = AlpacaSubscriptionError(f"alpaca refused the subscription ({what}): {why}; sent: {self.last_control}", code)
        elif code == 406:
            venue = self.venue
            venue.conn_limit_strikes += 1
            if venue.conn_limit_strikes > venue.max_conn_limit_retries:
                self.fatal = AlpacaConnectionLimitError(
                    f"alpaca: connection limit exceeded {venue.conn_limit_strikes} times in a row ({what}): another "
                    f"session with these keys is open on the {feed} feed", code)
            else:
                # a session of ours that died without a close holds the slot for ~90 s
                self.reconnect_requested = f"alpaca {what}: another session holds the {feed} feed; retrying"
        elif code in (401, 404, 407, 500):
            self.reconnect_requested = f"alpaca {what}"
        elif code == 403:
            log.debug("alpaca conn %d: %s", self.conn, what)
        else:
            reason = f"alpaca {what}"
            if code in (400, 405, 410) and self.last_control:
                reason += f" (after: {self.last_control})"
            if self.awaiting_acks and code in (400, 405, 410):
                self.awaiting_acks -= 1  # the refused request will not be acknowledged
            out.append(status_message("alpaca", "error", ts, reason[:300], conn=self.conn, seq=seq, idx=len(out)))


__all__ = [
    "AlpacaAuthError",
    "AlpacaClient",
    "AlpacaConnectionLimitError",
    "AlpacaError",
    "AlpacaSession",
    "AlpacaSubscriptionError",
    "AlpacaVenue",
    "msgpack_ts_ns",
    "rfc3339_ns",
]


# -- history (gap healing) -----------------------------------------------------------------------

class _HistTrade(msgspec.Struct):
    t: str
    p: Finite
    s: Finite
    x: str | None = None
    i: int | None = None
    c: list[str] | None = None
    tks: str | None = None


class _HistPage(msgspec.Struct):
    trades: dict[str, list[_HistTrade]] | None = None
    next_page_token: str | None = None


_hist_page = msgspec.json.Decoder(_HistPage)


def _rfc3339(ns: int) -> str:
    s, frac = divmod(ns, 1_000_000_000)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(s))}.{frac:09d}Z"


class AlpacaHistory(HistoryPager):
    """Trade history of one symbol over the heal window, page by page (module doc)."""

    page = 10_000

    def __init__(self, venue: AlpacaVenue, spec: HealSpec) -> None:
        super().__init__(venue, spec)
        self.token: str | None = None
        if self.lo is None or self.hi is None:
            self.exhausted = True
            self.notes.append("the gap has no start time to heal from")

    def _next(self) -> HttpRequest | None:
        v: AlpacaVenue = self.venue  # type: ignore[assignment]
        sym = self.spec.symbol
        params: dict[str, Any] = {"symbols": sym, "start": _rfc3339(self.lo), "end": _rfc3339(self.hi), "limit": self.page}
        if "/" in sym:
            url, headers = f"{v.rest_url}/v1beta3/crypto/{v.crypto_feed}/trades", None
        else:
            url = f"{v.rest_url}/v2/stocks/trades"
            params["feed"] = v.history_feed or ("sip" if v.feed == "test" else v.feed)
            headers = {"APCA-API-KEY-ID": v.credentials.get("key", ""), "APCA-API-SECRET-KEY": v.credentials.get("secret", "")}
        params["sort"] = "asc"
        if self.token:
            params["page_token"] = self.token
        return HttpRequest(url, params, headers=headers, purpose="history")

    def _page(self, request: HttpRequest, response: HttpResponse) -> list[Row]:
        try:
            page = _hist_page.decode(response.body)
            rows = (page.trades or {}).get(self.spec.symbol, [])
            out = [
                (rfc3339_ns(t.t), t.p, t.s, _SIDE.get(t.tks) if t.tks else None, t.i, None, t.x,
                 ",".join(t.c) if t.c else None)
                for t in rows
            ]
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as e:
            raise HistoryError(f"malformed trades page: {e}") from None
        self.token = page.next_page_token
        if not self.token:
            self.complete = True  # the last page of the window
        return out
