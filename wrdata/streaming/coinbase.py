"""Coinbase market data: the Advanced Trade WebSocket, and the older Exchange feed, sans-IO.

Protocol facts this module relies on (``shared/providers/coinbase.md``; checked against
Coinbase's docs "Advanced Trade WebSocket Channels" and "WebSocket Overview"
(docs.cdp.coinbase.com/coinbase-app/advanced-trade-apis/websocket/...), the Advanced
Trade AsyncAPI file, "Exchange WebSocket Feed" (docs.cdp.coinbase.com/exchange/
websocket-feed), and coinbase-advanced-py 1.8.4's ``websocket`` and ``jwt_generator``):

Advanced Trade (``wss://advanced-trade-ws.coinbase.com``, bare host, no path)
- One channel per control message: ``{"type":"subscribe","product_ids":[...],
  "channel":"level2"}`` (``unsubscribe`` likewise; ``heartbeats`` takes no products);
  ``"jwt"`` is added when keys are configured. Subscribe within 5 s of connecting.
- Every subscribe/unsubscribe is answered by a ``subscriptions`` message listing the full
  current set ``{"events":[{"subscriptions":{"level2":["BTC-USD"],...}}]}``; unknown
  products are left out of it (observed, not documented); errors are flat
  ``{"type":"error","message":"..."}`` (``authentication failure``, ``failure to
  subscribe``, ``too many L2 streams requested in a single session``).
- Data envelope ``{"channel","client_id","timestamp","sequence_num","events":[...]}``;
  ``client_id`` is absent in production; ``sequence_num`` counts every message of the
  connection (all channels) from 0: a jump is a lost message.
- ``market_trades``: ``trades[{trade_id (str), product_id, price, size, side, time}]``,
  batched every 250 ms; the first message is a ``snapshot`` of recent (old) trades. The
  docs define ``side`` as the **maker's** side; several projects read it as the taker's.
  The mapping is one venue option, ``side_is_maker`` (default True: aggressor = opposite).
- ``ticker``: ``tickers[{product_id, price, best_bid, best_bid_quantity, best_ask,
  best_ask_quantity, ...}]``: sent on trades, **not** on every best bid/offer change, so
  a ``quote`` here is the top of book as of the last trade; ``book:1`` is the true BBO.
- ``candles``: 5-minute candles only, ``start`` in Unix seconds (string), an update about
  every second, **no closed flag**: a bar is final when a later ``start`` arrives.
- ``level2`` (messages say ``l2_data``): a full-depth ``snapshot`` (5 MB, 46k levels for
  BTC-USD), then ``update``s; ``side`` is ``bid``/``offer``, ``new_quantity`` absolute,
  ``"0"`` deletes. No per-book sequence or checksum: the connection's ``sequence_num`` is
  the only proof, so on a jump we unsubscribe and resubscribe ``level2`` for a fresh
  snapshot. About 16 ``level2`` products per connection worked, 32 did not (2026 report).
- ``heartbeats``: one per second per connection; subscribe on every connection, or
  quiet channels are closed after 60-90 s. Its ``current_time`` is a Go time string.
- Connections 8/s and unauthenticated messages 8/s per IP. JWTs (CDP keys): header
  ``{"alg":"ES256"|"EdDSA","kid":key name,"nonce":hex,"typ":"JWT"}``, claims ``{"sub":
  key name,"iss":"cdp","nbf":now,"exp":now+120}``, no ``uri`` claim on WebSocket; a fresh
  one per subscribe. Keys: ``COINBASE_API_KEY`` / ``COINBASE_API_SECRET`` (the SDK's names).
- Instruments: ``GET https://api.coinbase.com/api/v3/brokerage/market/products`` (public)
  ``{"products":[{"product_id","base_increment","quote_increment","price_increment",
  "status","trading_disabled",...}]}``.

Exchange feed (``wss://ws-feed.exchange.coinbase.com``; the recorded sample's protocol)
- ``{"type":"subscribe","product_ids":[...],"channels":[...]}`` → ``{"type":
  "subscriptions","channels":[{"name","product_ids"}]}``; flat messages by ``type``:
  ``match``/``last_match`` (``side`` = maker side, ``trade_id`` consecutive per product),
  ``ticker`` (``best_bid``, ``best_ask``, sizes in newer versions), ``snapshot``
  (``bids``/``asks`` ``[[price,size]]``) and ``l2update`` (``changes[[buy|sell,price,size]]``)
  on ``level2``/``level2_batch``, ``heartbeat`` per product, ``error``. Instruments:
  ``GET https://api.exchange.coinbase.com/products`` ``[{"id","quote_increment",...}]``.
  Chosen when the URL names ``ws-feed``/``ws-direct`` or ``feed="exchange"``.

History (gap healing; ``shared/providers/rest-history.md`` §2, Coinbase's "Get Public
Market Trades"): ``GET /api/v3/brokerage/market/products/{id}/ticker?limit=&start=&end=``
(public; ``limit`` required, ``start``/``end`` UNIX seconds) answers the last ``limit``
trades inside the window, newest first, ``{"trades":[{trade_id, product_id, price, size,
time, side, bid, ask}], "best_bid", "best_ask"}``; no cursor and no trade-id parameter.
A window whose page comes back full is split at its oldest trade's second and asked again;
trade ids match ``market_trades``' (the same digits; believed the same space). Public
endpoints allow about 10 requests a second per IP (429 beyond). The Exchange feed's own
``/products/{id}/trades`` is not used: Exchange-feed gaps are not healed.

Choices
- Old trades (the ``market_trades`` snapshot, Exchange ``last_match``) are not new data:
  on a first subscription they only mark where the stream starts; on a resubscription
  (after a reconnect) those newer than the last delivered trade are the trades missed
  during the outage and are delivered with ``source="backfill"``.
- A ``sequence_num`` jump emits one ``gap`` event per stream of the connection (we cannot
  know which channel lost the message) and resynchronises every ``level2`` book on it.
- ``level2_per_conn`` (default 10) caps books per connection, ``max_streams_per_conn`` the
  rest; ``control_interval`` 0.2 s keeps us under 8 messages/s.
- Bars built from trades (every interval but 5m) close ``bar_grace`` (0.5 s) after their
  end: ``market_trades`` batches hold up to 250 ms of trades, so the last trades of an
  interval arrive after it ended and would otherwise be left out of their bar.
"""

from __future__ import annotations

import base64
import logging
import re
import secrets
import time
from collections.abc import Hashable
from typing import Any

import msgspec

from ..channels import Channel
from ..message import StreamMessage, status_message
from .base import (
    AuthenticationError,
    ConfigurationError,
    Finite,
    HttpRequest,
    HttpResponse,
    Session,
    UnsupportedChannelError,
    Venue,
)
from .heal import HealSpec, HistoryError, HistoryPager, Row
from .timeparse import rfc3339_ns

log = logging.getLogger("wrdata.streaming.coinbase")

_SHAPE = re.compile(r"^[A-Z0-9]{1,20}-[A-Z0-9]{2,20}(?:-[A-Z0-9]{2,20})?$")
_NS = 1_000_000_000
_encode = msgspec.json.Encoder().encode

#: our channel names (the stream keys) -> route of the messages they carry
_ROUTES = {"market_trades": "trade", "ticker": "quote", "candles": "bar:5m", "level2": "book"}
#: the Exchange feed's channel for each of ours
_EXCHANGE_CHANNELS = {"market_trades": "matches", "ticker": "ticker", "level2": "level2_batch"}


# -- JWT (CDP keys), as coinbase-advanced-py builds it -----------------------------------------

def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class JwtSigner:
    """Signs WebSocket JWTs with a CDP key (EC P-256 → ES256, Ed25519 → EdDSA).

    The secret is loaded once; it never appears in an exception, a log line or a
    recording (``CoinbaseSession.redact`` removes the JWT from recorded frames).
    """

    def __init__(self, key_name: str, secret: str) -> None:
        try:
            from cryptography.hazmat.primitives import serialization
            from cryptography.hazmat.primitives.asymmetric import ec, ed25519
        except ImportError:  # pragma: no cover - cryptography is a test dependency
            raise ConfigurationError(
                "coinbase: signing with API keys needs the 'cryptography' package (pip install cryptography)"
            ) from None
        text = secret.replace("\\n", "\n").strip()
        key: Any
        try:
            if text.startswith("-----BEGIN"):
                key = serialization.load_pem_private_key(text.encode(), password=None)
            else:
                raw = base64.b64decode("".join(text.split()), validate=True)
                if len(raw) not in (32, 64):
                    raise ValueError("wrong length")
                key = ed25519.Ed25519PrivateKey.from_private_bytes(raw[:32])
        except Exception:
            # never echo the secret, not even in the chained exception
            raise ConfigurationError(
                "coinbase: COINBASE_API_SECRET is neither a PEM EC private key nor a base64 Ed25519 key"
            ) from None
        if isinstance(key, ed25519.Ed25519PrivateKey):
            self.alg = "EdDSA"
        elif isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1":
            self.alg = "ES256"
        else:
            raise ConfigurationError("coinbase: the API secret must be an EC P-256 (ES256) or an Ed25519 key")
        self._key = key
        self.key_name = key_name

    def __repr__(self) -> str:
        return f"JwtSigner({self.alg}, kid=***)"

    def sign(self, now: int | None = None) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        now = int(time.time()) if now is None else now
        header = {"alg": self.alg, "kid": self.key_name, "nonce": secrets.token_hex(), "typ": "JWT"}
        claims = {"sub": self.key_name, "iss": "cdp", "nbf": now, "exp": now + 120}
        signing_input = f"{_b64(_encode(header))}.{_b64(_encode(claims))}".encode()
        if self.alg == "ES256":
            r, s = decode_dss_signature(self._key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
            sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")  # JOSE wants raw r||s, not DER
        else:
            sig = self._key.sign(signing_input)
        return f"{signing_input.decode()}.{_b64(sig)}"


_JWT_FIELD = re.compile(rb'("jwt"\s*:\s*")[^"]*(")')


# -- Advanced Trade wire types ------------------------------------------------------------------

class _Trade(msgspec.Struct):
    trade_id: str
    product_id: str
    price: Finite
    size: Finite
    side: str
    time: str


class _TradesEvent(msgspec.Struct):
    type: str = "update"
    trades: list[_Trade] = []


class _Ticker(msgspec.Struct):
    product_id: str
    best_bid: Finite | None = None
    best_bid_quantity: Finite | None = None
    best_ask: Finite | None = None
    best_ask_quantity: Finite | None = None
    price: Finite | None = None


class _TickerEvent(msgspec.Struct):
    type: str = "update"
    tickers: list[_Ticker] = []


class _Candle(msgspec.Struct):
    start: int
    open: Finite
    high: Finite
    low: Finite
    close: Finite
    volume: Finite
    product_id: str


class _CandlesEvent(msgspec.Struct):
    type: str = "update"
    candles: list[_Candle] = []


class _L2Update(msgspec.Struct):
    side: str
    price_level: Finite
    new_quantity: Finite
    event_time: str = ""


class _L2Event(msgspec.Struct):
    type: str
    product_id: str
    updates: list[_L2Update] = []


class _SubsEvent(msgspec.Struct):
    subscriptions: dict[str, list[str]] = {}


class _Env(msgspec.Struct, tag_field="channel"):
    timestamp: str = ""
    sequence_num: int = -1


class _TradesMsg(_Env, tag="market_trades"):
    events: list[_TradesEvent] = []


class _TickerMsg(_Env, tag="ticker"):
    events: list[_TickerEvent] = []


class _TickerBatchMsg(_Env, tag="ticker_batch"):
    events: list[_TickerEvent] = []


class _CandlesMsg(_Env, tag="candles"):
    events: list[_CandlesEvent] = []


class _L2Msg(_Env, tag="l2_data"):
    events: list[_L2Event] = []


class _SubsMsg(_Env, tag="subscriptions"):
    events: list[_SubsEvent] = []


class _HeartbeatsMsg(_Env, tag="heartbeats"):
    pass


class _StatusMsg(_Env, tag="status"):
    pass


_advanced = msgspec.json.Decoder(
    _TradesMsg | _TickerMsg | _TickerBatchMsg | _CandlesMsg | _L2Msg | _SubsMsg | _HeartbeatsMsg | _StatusMsg,
    strict=False,  # decimal strings straight to floats, "start" string to int
)


class _Error(msgspec.Struct):
    type: str = ""
    message: str = ""
    reason: str = ""
    channel: str | None = None
    sequence_num: int | None = None


_error = msgspec.json.Decoder(_Error)


# -- Exchange feed wire types -------------------------------------------------------------------

class _XMatch(msgspec.Struct, tag_field="type", tag="match"):
    trade_id: int
    product_id: str
    price: Finite
    size: Finite
    side: str
    time: str
    sequence: int | None = None


class _XLastMatch(_XMatch, tag="last_match"):
    pass


class _XTicker(msgspec.Struct, tag_field="type", tag="ticker"):
    product_id: str
    best_bid: Finite | None = None
    best_ask: Finite | None = None
    best_bid_size: Finite | None = None
    best_ask_size: Finite | None = None
    time: str | None = None
    sequence: int | None = None


class _XSnapshot(msgspec.Struct, tag_field="type", tag="snapshot"):
    product_id: str
    bids: list[tuple[Finite, Finite]]
    asks: list[tuple[Finite, Finite]]
    time: str | None = None


class _XL2Update(msgspec.Struct, tag_field="type", tag="l2update"):
    product_id: str
    changes: list[tuple[str, Finite, Finite]]
    time: str | None = None


class _XChannel(msgspec.Struct):
    name: str
    product_ids: list[str] = []


class _XSubscriptions(msgspec.Struct, tag_field="type", tag="subscriptions"):
    channels: list[_XChannel] = []


class _XHeartbeat(msgspec.Struct, tag_field="type", tag="heartbeat"):
    product_id: str = ""
    last_trade_id: int | None = None
    sequence: int | None = None


class _XError(msgspec.Struct, tag_field="type", tag="error"):
    message: str = ""
    reason: str = ""


_exchange = msgspec.json.Decoder(
    _XMatch | _XLastMatch | _XTicker | _XSnapshot | _XL2Update | _XSubscriptions | _XHeartbeat | _XError,
    strict=False,
)


# -- the venue ----------------------------------------------------------------------------------

class CoinbaseVenue(Venue):
    name = "coinbase"
    default_url = "wss://advanced-trade-ws.coinbase.com"
    credential_env = {
        "key": ("COINBASE_API_KEY", "COINBASE_KEY_NAME"),
        "secret": ("COINBASE_API_SECRET", "COINBASE_PRIVATE_KEY"),
    }
    native_bars = frozenset({"5m"})
    kinds = frozenset({"trade", "quote", "bar", "book"})

    max_streams_per_conn = 200
    level2_per_conn = 10  # 16 worked and 32 failed in a 2026 report: stay well below
    control_interval = 0.2  # unauthenticated messages: 8 per second per IP
    ws_ping_interval = 20.0
    silence_timeout = 10.0  # heartbeats arrive every second on every connection
    ready_timeout = 15.0
    max_frame_size = 64 * 1024 * 1024  # level2 snapshots are 5 MB and growing
    max_products_per_message = 100
    #: market_trades ``side`` is the maker's side (the docs); False reads it as the taker's
    side_is_maker = True
    #: trades come in 250 ms batches: the last ones of an interval arrive after its end, so a
    #: bar built from trades waits this long before it closes (they would be left out otherwise)
    bar_grace = 0.5
    #: "advanced", "exchange", or "auto" (from the URL)
    feed = "auto"
    # healing: Advanced Trade's trade ids increase but are not promised consecutive, so they
    # bound the window and completeness comes from paging through it; times are µs
    history_ids = "monotonic"
    trade_time_resolution = 1_000
    history_rate = 5.0  # half the public 10 requests/s
    history_burst = 5.0

    def __init__(self, url: str | None = None, rest_url: str | None = None, credentials: dict[str, str] | None = None,
                 **options: Any) -> None:
        super().__init__(url, rest_url, credentials, **options)
        if self.feed == "auto":
            self.feed = "exchange" if re.search(r"//ws-(feed|direct)", self.url) else "advanced"
        if self.feed not in ("advanced", "exchange"):
            raise ConfigurationError(f"coinbase: feed must be 'advanced' or 'exchange', not {self.feed!r}")
        if self.feed == "exchange":
            self.native_bars = frozenset()  # the Exchange feed has no candles: every bar is derived
        if rest_url is None:
            self.rest_url = self.derive_rest_url(self.url)
        self._signer: JwtSigner | None = None
        if self.credentials.get("key") and self.credentials.get("secret") and self.feed == "advanced":
            self._signer = JwtSigner(self.credentials["key"], self.credentials["secret"])

    @classmethod
    def find_credentials(cls, given: dict[str, str]) -> dict[str, str]:
        aliases = {"api_key": "key", "key_name": "key", "api_secret": "secret", "private_key": "secret"}
        return super().find_credentials({aliases.get(k, k): v for k, v in given.items()})

    def derive_rest_url(self, ws_url: str) -> str:
        if "advanced-trade-ws" in ws_url and "coinbase.com" in ws_url:
            return "https://api.coinbase.com"
        if "sandbox.exchange.coinbase.com" in ws_url:
            return "https://api-public.sandbox.exchange.coinbase.com"
        if "exchange.coinbase.com" in ws_url or "pro.coinbase.com" in ws_url:
            return "https://api.exchange.coinbase.com"
        return Venue.derive_rest_url(self, ws_url)

    def describe(self) -> str:
        return f"coinbase ({self.feed}) at {self.url}"

    def jwt(self) -> str | None:
        return self._signer.sign() if self._signer is not None else None

    # -- symbols --
    @classmethod
    def claims(cls, symbol: str) -> bool:
        return bool(_SHAPE.match(symbol))

    def venue_symbol(self, symbol: str) -> str:
        return symbol.strip().upper().replace("/", "-")

    def instruments_request(self) -> HttpRequest:
        if self.feed == "exchange":
            return HttpRequest(f"{self.rest_url}/products", purpose="instruments")
        return HttpRequest(f"{self.rest_url}/api/v3/brokerage/market/products", purpose="instruments")

    def load_instruments(self, response: HttpResponse) -> dict[str, Any]:
        doc = msgspec.json.decode(response.body)
        rows = doc.get("products", []) if isinstance(doc, dict) else doc
        out: dict[str, Any] = {}
        for p in rows:
            pid = p.get("product_id") or p.get("id")
            if not pid:
                continue
            out[pid] = {
                "status": p.get("status"),
                "tick_size": p.get("price_increment") or p.get("quote_increment"),
                "step_size": p.get("base_increment"),
                "trading_disabled": p.get("trading_disabled", p.get("trading_disabled", False)),
            }
        return out

    # -- subscriptions --
    def check_channel(self, channel: Channel) -> None:
        if channel.kind not in ("trade", "quote", "bar", "book"):
            raise UnsupportedChannelError(f"coinbase has no {channel.kind} stream")
        if channel.kind == "book" and channel.partial:
            raise UnsupportedChannelError("coinbase has no partial books: use book:N (a local full-depth book)")

    def streams(self, symbol: str, channel: Channel) -> list[Hashable]:
        k = channel.kind
        if k == "trade":
            return [("market_trades", symbol)]
        if k == "quote":
            return [("ticker", symbol)]
        if k == "bar":
            if channel.interval in self.native_bars:
                return [("candles", symbol)]
            return [("market_trades", symbol)]  # derived from trades by the bar builder
        if k == "book" and not channel.partial:
            return [("level2", symbol)]
        raise UnsupportedChannelError(f"coinbase has no {channel} stream")

    def stream_target(self, stream: Hashable) -> tuple[str | None, str | None]:
        ch, product = stream  # type: ignore[misc]
        return product, _ROUTES.get(ch)

    def admit(self, have: set[Hashable], new: list[Hashable]) -> tuple[list[Hashable], list[Hashable]]:
        """At most ``max_streams_per_conn`` streams and ``level2_per_conn`` books per connection."""
        room = self.max_streams_per_conn - len(have)
        books = self.level2_per_conn - sum(1 for s in have if s[0] == "level2")  # type: ignore[index]
        take: list[Hashable] = []
        rest: list[Hashable] = []
        for s in new:
            if room > 0 and (s[0] != "level2" or books > 0):  # type: ignore[index]
                take.append(s)
                room -= 1
                if s[0] == "level2":  # type: ignore[index]
                    books -= 1
            else:
                rest.append(s)
        return take, rest

    def session(self, conn: int, streams: list[Hashable]) -> Session:
        if self.feed == "exchange":
            return CoinbaseExchangeSession(self, conn, streams)
        return CoinbaseSession(self, conn, streams)

    def history_pager(self, spec: HealSpec) -> CoinbaseHistory | None:
        if self.feed != "advanced" or spec.channel != "trade":
            return None
        return CoinbaseHistory(self, spec)


# -- shared by both feeds -------------------------------------------------------------------------

class _CoinbaseBase(Session):
    venue: CoinbaseVenue

    def __init__(self, venue: CoinbaseVenue, conn: int, streams) -> None:
        super().__init__(venue, conn, streams)
        self.seqr = venue.sequencer
        self.pending = 0  # control frames sent and not yet answered (ack or error)
        self.wanted: set[Hashable] = set()  # streams we asked for and have not dropped
        self.confirmed: set[Hashable] = set()
        self.reported: set[Hashable] = set()  # unconfirmed streams already reported
        self.books: dict[str, bool] = {}  # product -> synced (a snapshot arrived since (re)subscribing)
        self._time_cache: tuple[str, int] = ("", 0)
        self.maker_side = venue.side_is_maker

    def _ts(self, text: str | None) -> int | None:
        if not text:
            return None
        last, ns = self._time_cache
        if text == last:  # trades of one batch share their time
            return ns
        try:
            ns = rfc3339_ns(text)
        except ValueError:
            return None
        self._time_cache = (text, ns)
        return ns

    def _group(self, streams) -> dict[str, list[str]]:
        by: dict[str, list[str]] = {}
        for ch, product in sorted(streams):
            by.setdefault(ch, []).append(product)
        return by

    def on_open(self, ts_recv: int) -> list[StreamMessage]:
        self._subscribe(sorted(self.streams), initial=True)
        return []

    def add(self, streams: list[Hashable]) -> None:
        self.streams.update(streams)
        self._subscribe(streams)

    def remove(self, streams: list[Hashable]) -> None:
        for s in streams:
            self.streams.discard(s)
            self.wanted.discard(s)
            self.confirmed.discard(s)
            if s[0] == "level2":  # type: ignore[index]
                self.books.pop(s[1], None)  # type: ignore[index]
        self._control("unsubscribe", self._group(streams))

    def _subscribe(self, streams, initial: bool = False) -> None:
        raise NotImplementedError

    def on_sent(self, payload: bytes, ts_recv: int, seq: int) -> list[StreamMessage]:
        """A control frame we sent, replayed from ``raw`` (rebuild): the session learns its
        streams from it, as the live session was given them, so a ``sequence_num`` gap
        names the same streams and resynchronises the same books."""
        try:
            req = msgspec.json.decode(payload)
        except msgspec.DecodeError:
            return []
        if not isinstance(req, dict) or req.get("type") not in ("subscribe", "unsubscribe"):
            return []
        channels = req.get("channels") or [req.get("channel")]  # Exchange feed: a list; Advanced Trade: one
        back = {v: k for k, v in _EXCHANGE_CHANNELS.items()} if isinstance(self, CoinbaseExchangeSession) else {}
        learned = {(back.get(ch, ch), p) for ch in channels if isinstance(ch, str) and ch not in ("heartbeats", "heartbeat")
                   for p in req.get("product_ids") or [] if isinstance(p, str)}
        if req["type"] == "subscribe":
            self.streams.update(learned)
            self.wanted.update(learned)
        else:
            self.streams.difference_update(learned)
        return []

    def _control(self, kind: str, groups: dict[str, list[str]]) -> None:
        raise NotImplementedError

    def _trades(self, stream: tuple[str, str], trades: list, snapshot: bool, ts: int, seq: int, idx: int,
                route: str = "trade") -> list[StreamMessage]:
        """Deliver trades newer than the last delivered; old (snapshot) trades only to heal a gap."""
        key = stream
        prev = self.seqr.last.get(key)
        if snapshot and prev is None:
            # history from before the first subscription: it only marks where the stream starts
            top = max((t[0] for t in trades), default=None)
            if top is not None:
                self.seqr.last[key] = top
            return []
        out: list[StreamMessage] = []
        rows = trades if all(trades[i][0] < trades[i + 1][0] for i in range(len(trades) - 1)) else sorted(trades)
        for tid, product, price, size, side, ts_event in rows:
            if prev is not None and tid <= prev:
                continue  # delivered already (rollover overlap, resubscription snapshot)
            if prev is not None and not snapshot and tid > prev + 1 and self._ids_dense:
                out.append(status_message(
                    "coinbase", "gap", ts, "trade ids skipped", symbol=product, channel=route, conn=self.conn, seq=seq,
                    first_missing_id=prev + 1, last_missing_id=tid - 1, gap_end_ns=ts,
                ))
            prev = tid
            out.append(StreamMessage(
                provider="coinbase", symbol=product, kind="trade", ts_recv=ts, ts_event=ts_event, conn=self.conn,
                seq=seq, idx=idx + len(out), channel=route, price=price, size=size, side=side, trade_id=tid,
                source="backfill" if snapshot else "stream",
            ))
        if prev is not None:
            self.seqr.last[key] = prev
        return out

    _ids_dense = False  # Advanced Trade does not promise consecutive trade ids; the Exchange feed does

    def _aggressor(self, side: str) -> str | None:
        s = side.lower()
        if s in ("buy", "sell"):
            if self.maker_side:
                return "sell" if s == "buy" else "buy"
            return s
        return None

    def _error(self, text: str, ts: int, seq: int) -> list[StreamMessage]:
        return [status_message("coinbase", "error", ts, text[:300], conn=self.conn, seq=seq)]

    def redact(self, payload: bytes) -> bytes:
        if b'"jwt"' in payload:
            return _JWT_FIELD.sub(rb"\1***\2", payload)
        return payload

    def _unconfirmed(self, ts: int, seq: int) -> list[StreamMessage]:
        """Streams the venue's subscription list leaves out once every request is answered."""
        if self.pending > 0:
            return []
        out = []
        for s in sorted(self.wanted - self.confirmed - self.reported):
            self.reported.add(s)
            ch, product = s
            out.append(status_message(
                "coinbase", "error", ts, f"coinbase did not confirm {ch} for {product} (unknown or unavailable product?)",
                symbol=product, channel=_ROUTES.get(ch), conn=self.conn, seq=seq,
            ))
        return out


# -- Advanced Trade -------------------------------------------------------------------------------

class CoinbaseSession(_CoinbaseBase):
    """One Advanced Trade connection."""

    def __init__(self, venue: CoinbaseVenue, conn: int, streams) -> None:
        super().__init__(venue, conn, streams)
        self.last_seq: int | None = None
        self.candles: dict[str, _Candle] = {}

    def _subscribe(self, streams, initial: bool = False) -> None:
        if initial:
            self._control("subscribe", {"heartbeats": []})
        self.wanted.update(streams)
        self._control("subscribe", self._group(streams))

    def _control(self, kind: str, groups: dict[str, list[str]]) -> None:
        step = self.venue.max_products_per_message
        for ch, products in groups.items():
            chunks = [products[i : i + step] for i in range(0, len(products), step)] if products else [[]]
            for chunk in chunks:
                msg: dict[str, Any] = {"type": kind}
                if ch != "heartbeats":
                    msg["product_ids"] = chunk
                msg["channel"] = ch
                token = self.venue.jwt()
                if token is not None:
                    msg["jwt"] = token
                self.outbox.append(_encode(msg))
                self.pending += 1

    # -- frames --
    def feed(self, payload: bytes, ts_recv: int, seq: int) -> list[StreamMessage]:
        try:
            msg = _advanced.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            return self._other(payload, ts_recv, seq, e)
        out: list[StreamMessage] = []
        n = msg.sequence_num
        last = self.last_seq
        if n >= 0:
            if last is not None and n > last + 1:
                out = self._seq_gap(last + 1, n - 1, ts_recv, seq)
            if last is None or n > last:
                self.last_seq = n
        t = type(msg)
        if t is _TradesMsg:
            out += self._market_trades(msg, ts_recv, seq, len(out))
        elif t is _L2Msg:
            out += self._l2(msg, ts_recv, seq, len(out))
        elif t is _TickerMsg:
            out += self._ticker(msg, ts_recv, seq, len(out))
        elif t is _CandlesMsg:
            out += self._candles(msg, ts_recv, seq, len(out))
        elif t is _SubsMsg:
            out += self._subscriptions(msg, ts_recv, seq)
        return out

    def _market_trades(self, msg: _TradesMsg, ts: int, seq: int, idx: int) -> list[StreamMessage]:
        out: list[StreamMessage] = []
        for ev in msg.events:
            by: dict[str, list] = {}
            for t in ev.trades:
                try:
                    tid = int(t.trade_id)
                except ValueError:
                    out += self.bad_frame("market_trades", _encode(t), ts, seq, f"non-numeric trade_id {t.trade_id!r}")
                    continue
                by.setdefault(t.product_id, []).append((tid, t.product_id, t.price, t.size, self._aggressor(t.side), self._ts(t.time)))
            for product, rows in by.items():
                out += self._trades(("market_trades", product), rows, ev.type == "snapshot", ts, seq, idx + len(out))
        return out

    def _ticker(self, msg: _TickerMsg, ts: int, seq: int, idx: int) -> list[StreamMessage]:
        ts_event = self._ts(msg.timestamp)
        out = []
        for ev in msg.events:
            for t in ev.tickers:
                if t.best_bid is None or t.best_ask is None:
                    continue
                out.append(StreamMessage(
                    provider="coinbase", symbol=t.product_id, kind="quote", ts_recv=ts, ts_event=ts_event, conn=self.conn,
                    seq=seq, idx=idx + len(out), channel="quote", bid=t.best_bid, bid_size=t.best_bid_quantity,
                    ask=t.best_ask, ask_size=t.best_ask_quantity,
                ))
        return out

    def _candles(self, msg: _CandlesMsg, ts: int, seq: int, idx: int) -> list[StreamMessage]:
        out = []
        for ev in msg.events:
            for c in sorted(ev.candles, key=lambda c: c.start):
                prev = self.candles.get(c.product_id)
                if prev is not None:
                    if c.start < prev.start:
                        continue  # an older bar than the one open: it was final already
                    if c.start > prev.start:
                        out.append(self._bar(prev, True, ts, seq, idx + len(out)))  # a later start proves it final
                self.candles[c.product_id] = c
                out.append(self._bar(c, False, ts, seq, idx + len(out)))
        return out

    def _bar(self, c: _Candle, closed: bool, ts: int, seq: int, idx: int) -> StreamMessage:
        return StreamMessage(
            provider="coinbase", symbol=c.product_id, kind="bar", ts_recv=ts, ts_event=c.start * _NS, conn=self.conn,
            seq=seq, idx=idx, channel="bar:5m", open=c.open, high=c.high, low=c.low, close=c.close, size=c.volume,
            interval="5m", closed=closed, derived=False,
        )

    def _l2(self, msg: _L2Msg, ts: int, seq: int, idx: int) -> list[StreamMessage]:
        out = []
        for ev in msg.events:
            product = ev.product_id
            snapshot = ev.type == "snapshot"
            if not snapshot and not self.books.get(product):
                continue  # before the first snapshot, or waiting for a resync's snapshot
            bids = []
            asks = []
            for u in ev.updates:
                if u.side == "bid":
                    bids.append((u.price_level, u.new_quantity))
                else:  # "offer" ("ask" accepted too)
                    asks.append((u.price_level, u.new_quantity))
            if snapshot:
                self.books[product] = True
                ts_event = self._ts(msg.timestamp)
            else:
                ts_event = self._ts(ev.updates[-1].event_time) if ev.updates else self._ts(msg.timestamp)
            out.append(StreamMessage(
                provider="coinbase", symbol=product, kind="book", ts_recv=ts, ts_event=ts_event, conn=self.conn, seq=seq,
                idx=idx + len(out), channel="book", bids=bids, asks=asks, snapshot=snapshot, update_id=msg.sequence_num,
            ))
        return out

    def _subscriptions(self, msg: _SubsMsg, ts: int, seq: int) -> list[StreamMessage]:
        if self.pending > 0:
            self.pending -= 1
        have: set[Hashable] = set()
        for ev in msg.events:
            for ch, products in ev.subscriptions.items():
                for p in products:
                    have.add((ch, p))
        self.confirmed = {s for s in self.wanted if s in have}
        if self.pending == 0:
            self.ready = True
        return self._unconfirmed(ts, seq)

    def _seq_gap(self, first: int, last: int, ts: int, seq: int) -> list[StreamMessage]:
        """Messages were lost: every stream may have lost data; books need a fresh snapshot."""
        out = []
        reason = f"sequence_num skipped {first}..{last}"
        for stream in sorted(self.streams):
            ch, product = stream
            out.append(status_message(
                "coinbase", "gap", ts, reason + ("; resynchronising the book" if ch == "level2" else ""),
                symbol=product, channel=_ROUTES.get(ch), conn=self.conn, seq=seq, first_missing_id=first,
                last_missing_id=last, gap_end_ns=ts,
            ))
        books = sorted(p for ch, p in self.streams if ch == "level2")
        if books:
            for p in books:
                self.books[p] = False
            # a fresh snapshot: unsubscribe and subscribe again (the venue has no snapshot request)
            self._control("unsubscribe", {"level2": books})
            self._control("subscribe", {"level2": books})
        return out

    def _other(self, payload: bytes, ts: int, seq: int, err: Exception) -> list[StreamMessage]:
        try:
            e = _error.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return self.bad_frame("json", payload, ts, seq, err)
        if e.type == "error":
            if self.pending > 0:
                self.pending -= 1
            text = e.message or e.reason or "error"
            if "authentication" in text.lower() and self.venue._signer is not None:
                self.fatal = AuthenticationError(f"coinbase rejected the API key: {text}")
            out = self._error(f"venue error: {text}", ts, seq)
            if self.pending == 0 and not self.ready:
                self.ready = True  # everything was answered; what failed is reported
                out += self._unconfirmed(ts, seq)
            return out
        if e.channel is not None:
            # a channel we do not read (user, futures_balance_summary): it still counts in the sequence
            n = e.sequence_num
            if n is not None and n >= 0:
                last = self.last_seq
                self.last_seq = n if last is None or n > last else last
                if last is not None and n > last + 1:
                    return self._seq_gap(last + 1, n - 1, ts, seq)
            return []
        return self.bad_frame("unknown", payload, ts, seq, err)


# -- Exchange feed ------------------------------------------------------------------------------

class CoinbaseExchangeSession(_CoinbaseBase):
    """One connection to the older Exchange feed (``ws-feed``)."""

    _ids_dense = True  # match trade_ids are consecutive per product

    def _subscribe(self, streams, initial: bool = False) -> None:
        self.wanted.update(streams)
        groups = self._group(streams)
        products = sorted({p for _, p in streams})
        if products:
            groups["heartbeat"] = products  # per-product heartbeats keep quiet products' connections alive
        self._control("subscribe", groups)

    def remove(self, streams: list[Hashable]) -> None:
        super().remove(streams)
        gone = {p for _, p in streams} - {p for _, p in self.streams}
        if gone:
            self._control("unsubscribe", {"heartbeat": sorted(gone)})

    def _control(self, kind: str, groups: dict[str, list[str]]) -> None:
        for ch, products in groups.items():
            name = _EXCHANGE_CHANNELS.get(ch, ch)
            if ch == "candles":
                continue  # no candles here; the venue says native_bars is empty, so never asked
            self.outbox.append(_encode({"type": kind, "product_ids": products, "channels": [name]}))
            self.pending += 1

    def feed(self, payload: bytes, ts_recv: int, seq: int) -> list[StreamMessage]:
        try:
            m = _exchange.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            try:
                kind = msgspec.json.decode(payload).get("type")
            except Exception:
                return self.bad_frame("json", payload, ts_recv, seq, e)
            if kind in ("received", "open", "done", "change", "activate", "status", "auction"):
                return []  # full-channel and status messages we do not read
            return self.bad_frame(str(kind), payload, ts_recv, seq, e)
        t = type(m)
        if t is _XL2Update:
            if not self.books.get(m.product_id):
                return []
            bids, asks = [], []
            for side, price, size in m.changes:
                (bids if side == "buy" else asks).append((price, size))
            return [StreamMessage(
                provider="coinbase", symbol=m.product_id, kind="book", ts_recv=ts_recv, ts_event=self._ts(m.time),
                conn=self.conn, seq=seq, channel="book", bids=bids, asks=asks, snapshot=False,
            )]
        if t is _XMatch or t is _XLastMatch:
            row = (m.trade_id, m.product_id, m.price, m.size, self._aggressor(m.side), self._ts(m.time))
            return self._trades(("market_trades", m.product_id), [row], t is _XLastMatch, ts_recv, seq, 0)
        if t is _XTicker:
            if m.best_bid is None or m.best_ask is None:
                return []
            return [StreamMessage(
                provider="coinbase", symbol=m.product_id, kind="quote", ts_recv=ts_recv, ts_event=self._ts(m.time),
                conn=self.conn, seq=seq, channel="quote", bid=m.best_bid, ask=m.best_ask, bid_size=m.best_bid_size,
                ask_size=m.best_ask_size, update_id=m.sequence,
            )]
        if t is _XSnapshot:
            self.books[m.product_id] = True
            return [StreamMessage(
                provider="coinbase", symbol=m.product_id, kind="book", ts_recv=ts_recv, ts_event=self._ts(m.time),
                conn=self.conn, seq=seq, channel="book", bids=m.bids, asks=m.asks, snapshot=True,
            )]
        if t is _XSubscriptions:
            if self.pending > 0:
                self.pending -= 1
            back = {v: k for k, v in _EXCHANGE_CHANNELS.items()}
            have = {(back.get(c.name, c.name), p) for c in m.channels for p in c.product_ids}
            self.confirmed = {s for s in self.wanted if s in have}
            if self.pending == 0:
                self.ready = True
            return self._unconfirmed(ts_recv, seq)
        if t is _XError:
            if self.pending > 0:
                self.pending -= 1
            if self.pending == 0:
                self.ready = True
            return self._error(f"venue error: {m.message} {m.reason}".strip(), ts_recv, seq)
        return []  # heartbeat


# -- history (gap healing) -----------------------------------------------------------------------

class _MarketTrades(msgspec.Struct):
    trades: list[_Trade] = []


_market_trades = msgspec.json.Decoder(_MarketTrades, strict=False)


class CoinbaseHistory(HistoryPager):
    """Public market trades by time window, split where a page comes back full (module doc)."""

    page = 1000

    def __init__(self, venue: CoinbaseVenue, spec: HealSpec) -> None:
        super().__init__(venue, spec)
        self.have: set[int] = set()
        if self.lo is None or self.hi is None:
            self.exhausted = True
            self.notes.append("the gap has no start time to heal from")
            return
        self.start_s = self.lo // _NS
        self.end_s = self.hi // _NS + 1  # exclusive: the window's last second is asked whole

    def _next(self) -> HttpRequest | None:
        return HttpRequest(
            f"{self.venue.rest_url}/api/v3/brokerage/market/products/{self.spec.symbol}/ticker",
            {"limit": self.page, "start": str(self.start_s), "end": str(self.end_s)},
            purpose="history",
        )

    def _page(self, request: HttpRequest, response: HttpResponse) -> list[Row]:
        try:
            doc = _market_trades.decode(response.body)
            rows = [(rfc3339_ns(t.time), t.price, t.size, t.side, int(t.trade_id)) for t in doc.trades]
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as e:
            raise HistoryError(f"malformed market trades page: {e}") from None
        maker = self.venue.side_is_maker
        new = [r for r in rows if r[4] not in self.have]
        self.have.update(r[4] for r in rows)
        sp = self.spec
        if not new:
            self.complete = True  # the narrowed window holds nothing more: the window is read
        else:
            oldest = min(r[0] for r in rows)
            if oldest < self.lo or (sp.after_id is not None and min(r[4] for r in rows) <= sp.after_id):
                self.complete = True  # the page reaches back to what was streamed before the gap
            elif oldest // _NS + 1 < self.end_s:
                self.end_s = oldest // _NS + 1  # older trades may exist: ask up to (and with) that second
            elif len(rows) >= int(request.params["limit"]):
                # a full page inside one second: seconds are the API's finest window
                self.exhausted = True
                self.notes.append(f"more than {len(rows)} trades in the second at {oldest // _NS}: the API cannot page inside a second")
        return [(ts, price, size, _side(side, maker), tid, None, None, None) for ts, price, size, side, tid in rows]


def _side(side: str, maker: bool) -> str | None:
    """The aggressor from a BUY/SELL ``side`` (the maker's side unless ``side_is_maker`` is off)."""
    s = side.lower()
    if s not in ("buy", "sell"):
        return None
    return ("sell" if s == "buy" else "buy") if maker else s
