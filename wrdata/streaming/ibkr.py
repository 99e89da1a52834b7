"""Interactive Brokers market data over the TWS API (TWS or IB Gateway), through ``ib_async``.

Three parts, like every provider, except that the I/O is not the shared WebSocket runner:

- :class:`IbkrVenue` (sans-IO): symbols and contracts, which requests a subscription
  needs, timings and limits;
- :class:`IbkrSession` (sans-IO): one TWS API connection's protocol state. It learns
  which request id feeds which stream from the requests sent (``on_sent``) and turns
  every received TWS message (its fields, NUL-terminated, as ``ib_async`` decodes them)
  into :class:`StreamMessage` s (``feed``). The live client and
  :class:`~wrdata.streaming.driver.RawDriver` (rebuilding from ``raw``) call the same two
  methods with the same recorded payloads, so a rebuild reproduces the live messages.
- :class:`IbkrClient` (I/O): one ``ib_async.IB`` connection at a time, with the interface
  the :class:`~wrdata.streaming.manager.StreamManager` uses for every venue (``add``,
  ``remove``, ``close``, ``validate_symbol``, ``sink``/``raw_sink``); reconnects with
  backoff and jitter, restores every subscription and reports the outage as ``gap``
  events, exactly like the WebSocket runner. Nothing outside this module knows TWS is
  not a WebSocket.

Protocol facts relied on (``shared/providers/ibkr.md``, checked against the ``ib_async``
2.1.0 source: ``client.py``, ``decoder.py``, ``wrapper.py``, ``ib.py``)
----------------------------------------------------------------------------------------
- ``ib_async`` 2.1.0 offers client versions ``v157..178``; every field layout below is the
  one at server version 178 (no protobuf before 201). Messages are a 4-byte big-endian
  length and NUL-terminated text fields, the first being the message id.
- Requests (ids, then fields): reqMktData ``1,11,reqId,<contract 12>,dn,generic,snapshot,
  regSnapshot,options``; reqTickByTickData ``97,reqId,<contract 12>,tickType,n,ignoreSize``;
  reqRealTimeBars ``50,3,reqId,<contract 12>,5,whatToShow,useRTH,options``; reqMktDepth
  ``10,5,reqId,<contract 12>,numRows,isSmartDepth,options``; reqContractDetails
  ``9,8,reqId,<contract 12>,...``; cancels ``2,2,id`` / ``98,id`` / ``51,1,id`` / ``11,1,id,smart``.
  The contract block is conId, symbol, secType, lastTradeDateOrContractMonth, strike,
  right, multiplier, exchange, primaryExchange, currency, localSymbol, tradingClass.
- Responses: TICK_PRICE ``1,6,reqId,type,price,size,mask``; TICK_SIZE ``2,6,reqId,type,size``;
  TICK_STRING ``46,6,reqId,type,value`` (RTVolume, types 48/77: ``price;size;ms;totalVolume;
  vwap;single``); TICK_BY_TICK ``99,reqId,1|2,time,price,size,mask,exchange,conditions`` and
  ``99,reqId,3,time,bid,ask,bidSize,askSize,mask`` (time in Unix seconds); REAL_TIME_BARS
  ``50,3,reqId,time,o,h,l,c,volume,wap,count`` (time = bar start, a multiple of 5 s);
  UPDATE_MKT_DEPTH ``12,1,reqId,position,operation,side,price,size`` and the L2 variant
  ``13,1,reqId,position,marketMaker,operation,side,price,size,isSmartDepth`` (operation 0
  insert at the row, shifting later rows down, 1 update the row, 2 delete the row; side 0
  ask, 1 bid: rows, not prices, are addressed); MARKET_DATA_TYPE ``58,1,reqId,type``;
  ERR_MSG ``4,2,reqId,code,text,advancedOrderRejectJson`` (reqId -1 for connection notices).
- Codes: 1100 TWS lost its connection to IB (the socket stays open, data stops), 1101
  restored with data lost (subscriptions are gone: request again), 1102 restored with data
  maintained; 2103/2104 market data farm broken/OK, 2105/2106 and 2157/2158 the HMDS and
  sec-def farms (no live data rides on them); 200 no security definition; 354, 10089,
  10090, 10168 no market data permission; 10167 delayed data shown instead; 101 too many
  market data lines; 309 too many depth requests; 10189/10190 tick-by-tick refused / too
  many tick-by-tick requests; 420 real-time bar query refused (pacing or permissions,
  told apart only by its text); 317 depth book reset; 10225 bust event, bars must be
  requested again; 300 cancel of an unknown id; 326 client id in use (TWS then closes).
- ``ib_async`` stamps ticks with local time and drops the wire times; it keys tickers by
  ``hash(contract)``, which needs a conId. ``IB`` never reconnects by itself; after a drop
  the old socket closes asynchronously, so an immediate reconnect with the same client id
  can be refused (326): the first retry waits ``backoff_initial`` (2 s by default).

Choices
-------
- Symbols (``venue_symbol`` gives the canonical spelling every message carries):
  ``AAPL`` is a US stock on SMART in USD (``BRK.B`` → ``BRK B``, IB's spelling of class
  shares); ``EUR.USD``, ``EURUSD`` and ``EUR/USD`` are IDEALPRO forex (canonical
  ``EUR.USD``); anything else is written explicitly as
  ``SECTYPE:SYMBOL:EXCHANGE:CURRENCY[:EXPIRY[:STRIKE:RIGHT]][:key=value...]`` with secType
  STK, FUT, OPT, FOP, CASH, IND, CFD, CMDTY, BOND, CRYPTO, WAR, FUND: ``FUT:ES:CME:USD:202612``,
  ``STK:SAP:IBIS:EUR``, ``IND:SPX:CBOE:USD``, ``OPT:AAPL:SMART:USD:20261218:200:C``,
  ``FUT:ES:CME:USD:202612:multiplier=50``; keys ``multiplier``, ``localSymbol``,
  ``tradingClass``, ``primaryExchange``. Currency defaults to USD, the exchange to SMART
  for stocks and options, IDEALPRO for CASH, PAXOS for CRYPTO. Symbols are checked with a
  contract-details request (error 200: :class:`UnknownSymbolError`; several matches: an
  ambiguity error listing them) and the conId is cached.
- Requests carry the contract exactly as parsed from the symbol plus the conId, so the
  symbol every message carries can be recovered from the recorded request alone
  (:func:`spec_from_fields`), without the contract-details exchange.
- ``trade``: tick-by-tick ``AllLast``; ``quote``: tick-by-tick ``BidAsk``. TWS allows only a
  few tick-by-tick streams (10190, seen at 3–6): a refused stream falls back to market
  data ticks, ``trade`` from RTVolume (generic tick 233, one line per stream, ms times)
  and ``quote`` from bid/ask price and size ticks (no venue time), with an ``error`` event
  saying so. Indices use market data ticks from the start; forex has no trades. With
  ``market_data_type`` 3/4 (delayed data, for accounts without live permissions) market
  data ticks are used throughout; delayed trades are the delayed last ticks (type 68).
- ``bar:5s``: real-time bars (TRADES; MIDPOINT for forex and commodities). Longer
  intervals that are multiples of 5 s (``1m``, ``1h``, ``1d``...) are resampled from the
  5-second bars by the shared :class:`~wrdata.streaming.bars.BarResampler` (exact OHLCV,
  one real-time-bar line instead of a scarce tick-by-tick one); other intervals (``1s``)
  are built from trades.
- ``book``: market depth (``depth_rows`` rows per side, SMART depth for SMART contracts).
  TWS addresses rows; the session keeps the rows and emits price-level deltas (the
  aggregate size of each price touched, ``0`` deleting it), ``snapshot=True`` on the first
  update of each request and after a 317 reset.
- Errors: a request TWS refuses for good (no permission, no definition, line limits)
  ends the consumers of that symbol with :class:`IbkrSubscriptionError` (and an ``error``
  event); 1100 is a ``disconnected`` event, 1101/1102 a ``connected`` event plus a ``gap``
  per stream covering the outage (1101 also re-requests everything); a broken market
  data farm (2103) followed by 2104 is a gap too; pacing refusals are retried after
  ``pacing_delay``; warnings are logged.
- Connection: ``host``/``port``/``client_id`` come from ``DataStream(ibkr_host=...,
  ibkr_port=..., ibkr_client_id=...)``, ``endpoints={"ibkr": "host:port"}``, or the
  environment (``IBKR_HOST``, ``IBKR_PORT``, ``IBKR_CLIENT_ID``); default
  ``127.0.0.1:4002`` (a local paper IB Gateway). IBKR counts as configured for plain
  tickers when any of those three is given. The default client id is derived from the
  process id so two processes on one Gateway do not collide. A liveness probe
  (reqCurrentTime every ``keepalive_interval``) replaces a connection silent for
  ``silence_timeout``.
- Never recorded or logged: account ids. Messages that carry them (managed accounts,
  positions, account values and summaries, orders, executions) are recorded as
  ``<id>\\0<redacted>\\0``; a log filter masks them in ``ib_async``'s own debug log.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import re
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from ..channels import Channel, interval_ns
from ..clock import recv_ns
from ..message import StreamMessage, status_message
from .base import (
    ConfigurationError,
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

if TYPE_CHECKING:  # ib_async is imported only when a connection is made
    from ib_async import IB, Contract

log = logging.getLogger("wrdata.streaming.ibkr")

PROVIDER = "ibkr"
_NS = 1_000_000_000
_MS = 1_000_000

# -- symbols and contracts ---------------------------------------------------------------

SEC_TYPES = frozenset({"STK", "FUT", "OPT", "FOP", "CASH", "IND", "CFD", "CMDTY", "BOND", "CRYPTO", "WAR", "FUND"})
_DATED = frozenset({"FUT", "FOP", "OPT", "WAR"})  # positional expiry
_OPTIONS = frozenset({"OPT", "FOP", "WAR"})  # positional strike and right
_DEFAULT_EXCHANGE = {"STK": "SMART", "OPT": "SMART", "WAR": "SMART", "CASH": "IDEALPRO", "CRYPTO": "PAXOS", "FUND": "FUNDSERV"}
CURRENCIES = frozenset(
    "USD EUR GBP JPY CHF CAD AUD NZD HKD SGD SEK NOK DKK CNH MXN ZAR PLN CZK HUF ILS KRW TRY RUB INR".split()
)
_EXTRAS = {"multiplier": "multiplier", "localsymbol": "local_symbol", "tradingclass": "trading_class", "primaryexchange": "primary_exchange"}
_EXTRA_NAMES = (("multiplier", "multiplier"), ("local_symbol", "localSymbol"), ("trading_class", "tradingClass"), ("primary_exchange", "primaryExchange"))
_STOCK_RE = re.compile(r"^[A-Z0-9]{1,6}(?:[ .][A-Z0-9]{1,2})?$")
_FOREX_RE = re.compile(r"^([A-Z]{3})[./]?([A-Z]{3})$")
_FORMS = "AAPL, EUR.USD or SECTYPE:SYMBOL:EXCHANGE:CURRENCY[:EXPIRY[:STRIKE:RIGHT]] (e.g. FUT:ES:CME:USD:202612)"


@dataclass(frozen=True, slots=True)
class ContractSpec:
    """A contract as the user named it: the fields wrdata puts in every request."""

    sec_type: str
    symbol: str
    exchange: str
    currency: str
    expiry: str = ""
    strike: float = 0.0
    right: str = ""
    multiplier: str = ""
    local_symbol: str = ""
    trading_class: str = ""
    primary_exchange: str = ""


def _bad_symbol(text: str, why: str) -> UnknownSymbolError:
    return UnknownSymbolError(f"ibkr: cannot read symbol {text!r}: {why}; write {_FORMS}")


def _fmt_strike(x: float) -> str:
    s = format(x, "f").rstrip("0").rstrip(".")
    return s or "0"


def parse_symbol(text: str) -> ContractSpec:
    """``AAPL``, ``EUR.USD``/``EURUSD``, ``FUT:ES:CME:USD:202612`` → :class:`ContractSpec`."""
    t = text.strip()
    if not t:
        raise _bad_symbol(text, "empty")
    head = t.split(":", 1)[0].strip().upper()
    if ":" not in t or head not in SEC_TYPES:
        u = t.upper()
        m = _FOREX_RE.match(u)
        if m and m.group(1) in CURRENCIES and m.group(2) in CURRENCIES:
            return ContractSpec("CASH", m.group(1), "IDEALPRO", m.group(2))
        if _STOCK_RE.match(u):
            return ContractSpec("STK", u.replace(".", " "), "SMART", "USD")
        raise _bad_symbol(text, "not a ticker, a currency pair or an explicit contract")
    parts = [p.strip() for p in t.split(":")]
    sec = parts[0].upper()
    positional: list[str] = []
    extras: list[str] = []
    for p in parts[1:]:
        if "=" in p:
            extras.append(p)
        elif extras:
            raise _bad_symbol(text, "key=value options must come last")
        else:
            positional.append(p)
    want = 3 + (1 if sec in _DATED else 0) + (2 if sec in _OPTIONS else 0)
    if not positional or not positional[0]:
        raise _bad_symbol(text, "no symbol after the security type")
    if len(positional) > want:
        raise _bad_symbol(text, f"{sec} takes at most {want} fields after the security type")
    symbol = positional[0].upper()
    exchange = (positional[1].upper() if len(positional) > 1 and positional[1] else _DEFAULT_EXCHANGE.get(sec, ""))
    if not exchange:
        raise _bad_symbol(text, f"{sec} contracts need an exchange ({sec}:{symbol}:EXCHANGE:CURRENCY)")
    currency = positional[2].upper() if len(positional) > 2 and positional[2] else "USD"
    expiry = strike_s = right = ""
    if sec in _DATED:
        expiry = positional[3] if len(positional) > 3 else ""
        if sec in ("FUT", "FOP", "OPT") and not re.fullmatch(r"\d{6}(?:\d{2})?", expiry):
            raise _bad_symbol(text, f"{sec} needs an expiry YYYYMM or YYYYMMDD after the currency")
    strike = 0.0
    if sec in _OPTIONS:
        strike_s = positional[4] if len(positional) > 4 else ""
        right = (positional[5] if len(positional) > 5 else "").upper()
        right = {"CALL": "C", "PUT": "P"}.get(right, right)
        try:
            strike = float(strike_s)
        except ValueError:
            raise _bad_symbol(text, f"{sec} needs a strike and a right (C or P) after the expiry") from None
        if right not in ("C", "P"):
            raise _bad_symbol(text, f"{sec} needs a right C or P after the strike")
    kw: dict[str, str] = {}
    for e in extras:
        k, _, v = e.partition("=")
        name = _EXTRAS.get(k.strip().lower())
        if name is None:
            raise _bad_symbol(text, f"unknown option {k!r} (known: multiplier, localSymbol, tradingClass, primaryExchange)")
        kw[name] = v.strip()
    return ContractSpec(sec, symbol, exchange, currency, expiry, strike, right, **kw)


def format_symbol(spec: ContractSpec) -> str:
    """The canonical spelling of a contract (the inverse of :func:`parse_symbol`)."""
    plain = not (spec.multiplier or spec.local_symbol or spec.trading_class or spec.primary_exchange)
    if plain and spec.sec_type == "STK" and spec.exchange == "SMART" and spec.currency == "USD" and _STOCK_RE.match(spec.symbol):
        return spec.symbol
    if plain and spec.sec_type == "CASH" and spec.exchange == "IDEALPRO" and spec.symbol in CURRENCIES and spec.currency in CURRENCIES:
        return f"{spec.symbol}.{spec.currency}"
    parts = [spec.sec_type, spec.symbol, spec.exchange, spec.currency]
    if spec.sec_type in _DATED:
        parts.append(spec.expiry)
    if spec.sec_type in _OPTIONS:
        parts += [_fmt_strike(spec.strike), spec.right]
    for attr, key in _EXTRA_NAMES:
        v = getattr(spec, attr)
        if v:
            parts.append(f"{key}={v}")
    return ":".join(parts)


def canonical_symbol(text: str) -> str:
    return format_symbol(parse_symbol(text))


def spec_from_fields(f: list[str]) -> ContractSpec:
    """The 12-field contract block of a request (as ``ib_async`` sends it) → spec."""
    return ContractSpec(
        sec_type=f[2], symbol=f[1], exchange=f[7], currency=f[9], expiry=f[3], strike=float(f[4] or 0.0), right=f[5],
        multiplier=f[6], local_symbol=f[10], trading_class=f[11], primary_exchange=f[8],
    )


def to_contract(spec: ContractSpec, con_id: int = 0) -> Contract:
    from ib_async import Contract

    return Contract(
        conId=con_id, symbol=spec.symbol, secType=spec.sec_type, lastTradeDateOrContractMonth=spec.expiry,
        strike=spec.strike, right=spec.right, multiplier=spec.multiplier, exchange=spec.exchange,
        primaryExchange=spec.primary_exchange, currency=spec.currency, localSymbol=spec.local_symbol,
        tradingClass=spec.trading_class,
    )


# -- errors ---------------------------------------------------------------------------------


class IbkrSubscriptionError(SubscriptionError):
    """TWS refused a subscription for good; ends the consumers of ``symbol`` only."""

    def __init__(self, message: str, symbol: str | None = None, code: int | None = None) -> None:
        super().__init__(message)
        self.symbol = symbol
        self.code = code


#: request refusals that are retried after ``pacing_delay`` rather than reported as final
_PACING_CODES = frozenset({10225})
_NO_PERMISSION = frozenset({354, 10089, 10090, 10168, 10197})
_TBT_REFUSED = frozenset({10189, 10190})
_FARM_BROKEN = {2103: "market data", 2105: "HMDS", 2157: "sec-def"}
_FARM_OK = {2104: "market data", 2106: "HMDS", 2158: "sec-def"}
_IGNORED_NOTICES = frozenset({2107, 2108, 2119, 2100, 2150, 2109, 2110, 300})

# message ids whose payload names an account: recorded and parsed as "<id>\0<redacted>\0"
_ACCOUNT_IN = frozenset({"3", "5", "6", "7", "11", "15", "54", "61", "63", "71", "73", "101"})
_ACCOUNT_OUT = frozenset({"6", "7", "62", "64", "76", "73", "74", "17"})

# -- the sans-IO session ------------------------------------------------------------------------

# request kinds
TBT_TRADE, TBT_QUOTE, MKT_TRADE, MKT_QUOTE, BARS, DEPTH, DETAILS = "tbt_trade", "tbt_quote", "mkt_trade", "mkt_quote", "bars", "depth", "details"
_ROUTE = {TBT_TRADE: "trade", MKT_TRADE: "trade", TBT_QUOTE: "quote", MKT_QUOTE: "quote", BARS: "bar:5s", DEPTH: "book"}
_MD_TYPES = {1: "live", 2: "frozen", 3: "delayed", 4: "delayed frozen"}


class _Req:
    """One data request of one connection, as learned from what was sent."""

    __slots__ = ("req_id", "kind", "symbol", "route", "stream", "bid", "bid_size", "ask", "ask_size", "bids", "asks", "fresh", "md_type")

    def __init__(self, req_id: int, kind: str, symbol: str) -> None:
        self.req_id = req_id
        self.kind = kind
        self.symbol = symbol
        self.route = _ROUTE.get(kind)
        self.stream: tuple[str, str] | None = (symbol, self.route) if self.route else None
        self.bid: float | None = None
        self.ask: float | None = None
        self.bid_size: float | None = None
        self.ask_size: float | None = None
        self.bids: list[tuple[float, float]] = []  # depth rows, position order
        self.asks: list[tuple[float, float]] = []
        self.fresh = True  # the next depth update starts a new book (snapshot)
        self.md_type = 1


def _num(text: str | float) -> float:
    """A number field of a TWS message: finite, or ``ValueError`` (the message is bad; a
    price of ``inf`` or ``nan`` must not reach consumers or the recording)."""
    v = float(text)
    if not math.isfinite(v):
        raise ValueError(f"not a finite number: {str(text)[:40]!r}")
    return v


def _time(text: str, unit: int) -> int:
    """A TWS time field (seconds or milliseconds) in ns: within int64, or ``ValueError``."""
    v = int(text) * unit
    if not 0 <= v < 2**63:
        raise ValueError(f"time out of range: {text[:40]!r}")
    return v


def _split(payload: bytes) -> list[str]:
    fields = payload.decode(errors="backslashreplace").split("\0")
    if fields and fields[-1] == "":
        fields.pop()
    return fields


def _aggregate(rows: list[tuple[float, float]], prices) -> list[tuple[float, float]]:
    out = []
    for p in prices:
        total = 0.0
        for q, s in rows:
            if q == p:
                total += s
        out.append((p, total))
    return out


def _levels(rows: list[tuple[float, float]]) -> list[tuple[float, float]]:
    agg: dict[float, float] = {}
    for p, s in rows:
        agg[p] = agg.get(p, 0.0) + s
    return [(p, s) for p, s in agg.items() if s > 0]


class IbkrSession(Session):
    """One TWS API connection: request ids learned from requests, messages from fields.

    ``actions`` holds what the I/O side must do about what TWS said, as tuples:
    ``("fallback", stream)`` (tick-by-tick refused: use market data ticks),
    ``("failed", stream, code, text)`` (refused for good), ``("retry", stream)`` (ask again
    after ``pacing_delay``), ``("resubscribe",)`` (1101: every request is gone).
    """

    venue: IbkrVenue

    def __init__(self, venue: IbkrVenue, conn: int, streams=()) -> None:
        super().__init__(venue, conn, ())
        self.reqs: dict[int, _Req] = {}
        self.by_stream: dict[tuple[str, str], int] = {}
        self.actions: list[tuple] = []
        self.lost_at: int | None = None  # 1100 received, no 1101/1102 yet
        self.farm_down: dict[str, int] = {}  # market data farm -> when it broke
        self.ready = True  # TWS takes requests as soon as the API is started
        self.server_version: int | None = None

    # -- what we sent --------------------------------------------------------------------
    def on_sent(self, payload: bytes, ts_recv: int, seq: int) -> list[StreamMessage]:
        f = _split(payload)
        if not f:
            return []
        mid = f[0]
        try:
            if mid == "1":  # reqMktData
                spec = spec_from_fields(f[3:15])
                i = 15
                if spec.sec_type == "BAG":
                    i += 1 + 4 * int(f[i] or 0)
                if f[i] == "1":
                    i += 3
                i += 1
                generic = {g.strip() for g in f[i].split(",")}
                self._bind(int(f[2]), MKT_TRADE if generic & {"233", "375"} else MKT_QUOTE, spec)
            elif mid == "97":  # reqTickByTickData
                spec = spec_from_fields(f[2:14])
                kind = {"AllLast": TBT_TRADE, "Last": TBT_TRADE, "BidAsk": TBT_QUOTE}.get(f[14])
                if kind is not None:
                    self._bind(int(f[1]), kind, spec)
            elif mid == "50":  # reqRealTimeBars
                self._bind(int(f[2]), BARS, spec_from_fields(f[3:15]))
            elif mid == "10":  # reqMktDepth
                self._bind(int(f[2]), DEPTH, spec_from_fields(f[3:15]))
            elif mid == "9":  # reqContractDetails
                self._bind(int(f[2]), DETAILS, spec_from_fields(f[3:15]))
            elif mid in ("2", "51", "11"):
                self._unbind(int(f[2]))
            elif mid == "98":
                self._unbind(int(f[1]))
        except (IndexError, ValueError) as e:
            log.debug("ibkr conn %d: cannot read sent request %r: %s", self.conn, f[:3], e)
        return []

    def _bind(self, req_id: int, kind: str, spec: ContractSpec) -> None:
        self._unbind(req_id)
        req = self.reqs[req_id] = _Req(req_id, kind, format_symbol(spec))
        if req.stream is not None:
            old = self.by_stream.get(req.stream)
            if old is not None and old != req_id:
                self.reqs.pop(old, None)
            self.by_stream[req.stream] = req_id
            self.streams.add(req.stream)

    def _unbind(self, req_id: int) -> _Req | None:
        req = self.reqs.pop(req_id, None)
        if req is not None and req.stream is not None and self.by_stream.get(req.stream) == req_id:
            del self.by_stream[req.stream]
            self.streams.discard(req.stream)
        return req

    # -- what we received ------------------------------------------------------------------
    def feed(self, payload: bytes, ts_recv: int, seq: int) -> list[StreamMessage]:
        f = _split(payload)
        if not f:
            return []
        handler = self._handlers.get(f[0])
        if handler is None:
            return []
        try:
            return handler(self, f, ts_recv, seq)
        except (IndexError, ValueError) as e:
            return self.bad_frame(f"message {f[0]}", payload, ts_recv, seq, e)

    def _req(self, f: list[str], pos: int) -> _Req | None:
        return self.reqs.get(int(f[pos]))

    def _tick_price(self, f: list[str], ts: int, seq: int) -> list[StreamMessage]:
        req = self._req(f, 2)
        if req is None or not f[4]:
            return []
        tick, price, size = int(f[3]), _num(f[4]), _num(f[5] or 0.0)
        if req.kind == MKT_TRADE:
            # delayed data has no RTVolume: its trades are the delayed last ticks (no venue time)
            if tick != 68 or size <= 0:
                return []
            return [StreamMessage(
                provider=PROVIDER, symbol=req.symbol, kind="trade", ts_recv=ts, conn=self.conn, seq=seq, channel="trade",
                price=price, size=size,
            )]
        if req.kind != MKT_QUOTE:
            return []
        if tick in (1, 66):
            if size == 0:  # the side is empty (TWS sends price -1, size 0)
                price = None  # type: ignore[assignment]
            if req.bid == price and req.bid_size == size:
                return []
            req.bid, req.bid_size = price, size
        elif tick in (2, 67):
            if size == 0:
                price = None  # type: ignore[assignment]
            if req.ask == price and req.ask_size == size:
                return []
            req.ask, req.ask_size = price, size
        else:
            return []
        return [self._quote(req, ts, seq)]

    def _tick_size(self, f: list[str], ts: int, seq: int) -> list[StreamMessage]:
        req = self._req(f, 2)
        if req is None or req.kind != MKT_QUOTE:
            return []
        tick, size = int(f[3]), _num(f[4] or 0.0)
        if tick in (0, 69):
            if size == req.bid_size:
                return []
            req.bid_size = size
            if size == 0:
                req.bid = None
        elif tick in (3, 70):
            if size == req.ask_size:
                return []
            req.ask_size = size
            if size == 0:
                req.ask = None
        else:
            return []
        return [self._quote(req, ts, seq)]

    def _quote(self, req: _Req, ts: int, seq: int) -> StreamMessage:
        return StreamMessage(
            provider=PROVIDER, symbol=req.symbol, kind="quote", ts_recv=ts, conn=self.conn, seq=seq, channel="quote",
            bid=req.bid, ask=req.ask, bid_size=req.bid_size, ask_size=req.ask_size,
        )

    def _tick_string(self, f: list[str], ts: int, seq: int) -> list[StreamMessage]:
        req = self._req(f, 2)
        if req is None or req.kind != MKT_TRADE or int(f[3]) not in (48, 77):
            return []
        price, size, ms, _total, _vwap, _single = f[4].split(";")
        if not price:
            return []  # a volume-only correction
        return [StreamMessage(
            provider=PROVIDER, symbol=req.symbol, kind="trade", ts_recv=ts, ts_event=_time(ms, _MS) if ms else None,
            conn=self.conn, seq=seq, channel="trade", price=_num(price), size=_num(size or 0.0),
        )]

    def _tick_by_tick(self, f: list[str], ts: int, seq: int) -> list[StreamMessage]:
        req = self._req(f, 1)
        if req is None:
            return []
        tick, t = int(f[2]), _time(f[3], _NS)
        if tick in (1, 2) and req.kind == TBT_TRADE:
            price, size = _num(f[4]), _num(f[5])
            if price == -1 and size == 0:
                return []
            return [StreamMessage(
                provider=PROVIDER, symbol=req.symbol, kind="trade", ts_recv=ts, ts_event=t, conn=self.conn, seq=seq,
                channel="trade", price=price, size=size, exchange=f[7] or None, conditions=f[8] or None,
            )]
        if tick == 3 and req.kind == TBT_QUOTE:
            bid, ask, bs, as_ = _num(f[4]), _num(f[5]), _num(f[6]), _num(f[7])
            return [StreamMessage(
                provider=PROVIDER, symbol=req.symbol, kind="quote", ts_recv=ts, ts_event=t, conn=self.conn, seq=seq,
                channel="quote", bid=bid if bid > 0 or bs > 0 else None, ask=ask if ask > 0 or as_ > 0 else None,
                bid_size=bs, ask_size=as_,
            )]
        return []

    def _bar(self, f: list[str], ts: int, seq: int) -> list[StreamMessage]:
        req = self._req(f, 2)
        if req is None or req.kind != BARS:
            return []
        volume = _num(f[8] or 0.0)
        return [StreamMessage(
            provider=PROVIDER, symbol=req.symbol, kind="bar", ts_recv=ts, ts_event=_time(f[3], _NS), conn=self.conn, seq=seq,
            channel="bar:5s", open=_num(f[4]), high=_num(f[5]), low=_num(f[6]), close=_num(f[7]),
            size=volume if volume >= 0 else None,  # MIDPOINT/BID/ASK bars carry volume -1: none
            interval="5s", closed=True, derived=False,
        )]

    def _depth(self, f: list[str], ts: int, seq: int) -> list[StreamMessage]:
        req = self._req(f, 2)
        if req is None or req.kind != DEPTH:
            return []
        if f[0] == "13":
            position, op, side, price, size = int(f[3]), int(f[5]), int(f[6]), _num(f[7]), _num(f[8] or 0.0)
        else:
            position, op, side, price, size = int(f[3]), int(f[4]), int(f[5]), _num(f[6]), _num(f[7] or 0.0)
        rows = req.bids if side == 1 else req.asks
        if op == 0:
            rows.insert(min(position, len(rows)), (price, size))
            touched = [price]
        elif op == 1:
            if position < len(rows):
                old = rows[position][0]
                rows[position] = (price, size)
                touched = [old, price] if old != price else [price]
            else:
                rows.append((price, size))
                touched = [price]
        elif op == 2:
            if position >= len(rows):
                return []
            touched = [rows.pop(position)[0]]
        else:
            raise ValueError(f"unknown depth operation {op}")
        if req.fresh:
            req.fresh = False
            return [StreamMessage(
                provider=PROVIDER, symbol=req.symbol, kind="book", ts_recv=ts, conn=self.conn, seq=seq, channel="book",
                bids=_levels(req.bids), asks=_levels(req.asks), snapshot=True,
            )]
        delta = _aggregate(rows, dict.fromkeys(touched))
        return [StreamMessage(
            provider=PROVIDER, symbol=req.symbol, kind="book", ts_recv=ts, conn=self.conn, seq=seq, channel="book",
            bids=delta if side == 1 else [], asks=delta if side != 1 else [], snapshot=False,
        )]

    def _market_data_type(self, f: list[str], ts: int, seq: int) -> list[StreamMessage]:
        req = self._req(f, 2)
        md = int(f[3])
        if req is None or req.stream is None or md == req.md_type:
            return []
        req.md_type = md
        return [self._event("subscribed", ts, seq, f"{req.symbol} {req.route}: TWS sends {_MD_TYPES.get(md, md)} market data", req)]

    def _event(self, status: str, ts: int, seq: int, reason: str, req: _Req | None = None, idx: int = 0, **kw: Any) -> StreamMessage:
        m = status_message(
            PROVIDER, status, ts, reason, symbol=req.symbol if req else kw.pop("symbol", None),
            channel=req.route if req else kw.pop("channel", None), conn=self.conn, seq=seq, **kw,
        )
        m.idx = idx
        return m

    def _gaps(self, start: int | None, ts: int, seq: int, reason: str, first_idx: int = 1) -> list[StreamMessage]:
        out = []
        for i, stream in enumerate(sorted(self.by_stream)):
            symbol, route = stream
            out.append(self._event("gap", ts, seq, reason, idx=first_idx + i, symbol=symbol, channel=route,
                                   gap_start_ns=start, gap_end_ns=ts))
        return out

    def _error(self, f: list[str], ts: int, seq: int) -> list[StreamMessage]:
        req_id, code, text = int(f[2]), int(f[3]), f[4]
        req = self.reqs.get(req_id) if req_id >= 0 else None
        if req is None:
            return self._notice(code, text, ts, seq)
        what = f"{req.symbol} {req.route or 'contract details'}"
        if req.kind == DETAILS:
            self._unbind(req_id)
            return [self._event("error", ts, seq, f"{what}: TWS error {code}: {text}", symbol=req.symbol)]
        if code == 10167 or 2100 <= code < 2200:
            return [self._event("subscribed", ts, seq, f"{what}: TWS warning {code}: {text}", req)]
        if code == 300:
            return []
        if code == 317:  # depth reset: forget the rows; the next update is a new book
            req.bids.clear()
            req.asks.clear()
            req.fresh = True
            return [self._event("gap", ts, seq, f"{what}: TWS reset the depth book ({code})", req, gap_end_ns=ts)]
        self._unbind(req_id)
        stream = req.stream
        if code in _TBT_REFUSED and req.kind in (TBT_TRADE, TBT_QUOTE):
            self.actions.append(("fallback", stream))
            return [self._event("error", ts, seq, f"{what}: tick-by-tick refused (TWS error {code}: {text}); "
                                f"using market data ticks", req)]
        if code in _PACING_CODES or (code == 420 and "pacing" in text.lower()):
            self.actions.append(("retry", stream))
            return [self._event("error", ts, seq, f"{what}: TWS error {code}: {text}; requesting again", req)]
        self.actions.append(("failed", stream, code, text))
        hint = " (no market data permission for it)" if code in _NO_PERMISSION or code == 420 else ""
        return [self._event("error", ts, seq, f"{what}: TWS error {code}: {text}{hint}", req)]

    def _notice(self, code: int, text: str, ts: int, seq: int) -> list[StreamMessage]:
        if code == 1100:
            if self.lost_at is None:
                self.lost_at = ts
            return [self._event("disconnected", ts, seq, f"TWS lost its connection to IB ({code}: {text})")]
        if code in (1101, 1102):
            start, self.lost_at = self.lost_at, None
            kept = code == 1102
            out = [self._event("connected", ts, seq, f"TWS connection to IB restored, data {'maintained' if kept else 'lost'} ({code})")]
            out += self._gaps(start, ts, seq, f"TWS lost its connection to IB (1100 to {code})")
            if not kept:
                for req_id in [r for r, q in self.reqs.items() if q.kind != DETAILS]:
                    self._unbind(req_id)
                self.actions.append(("resubscribe",))
            return out
        if code in _FARM_BROKEN:
            if code == 2103:
                self.farm_down.setdefault(text.rsplit(":", 1)[-1], ts)
            return [self._event("error", ts, seq, f"{_FARM_BROKEN[code]} data farm connection broken ({code}: {text})")]
        if code in _FARM_OK:
            if code == 2104 and self.farm_down:
                farm = text.rsplit(":", 1)[-1]
                start = self.farm_down.pop(farm, None)
                if start is None:  # a differently spelled farm name: the oldest break ends
                    start = self.farm_down.pop(next(iter(self.farm_down)))
                return ([self._event("connected", ts, seq, f"market data farm connection restored ({code}: {text})")]
                        + self._gaps(start, ts, seq, f"market data farm connection broken (2103 to {code})"))
            return []
        if code in _IGNORED_NOTICES or 2100 <= code < 2200:
            return []
        return [self._event("error", ts, seq, f"TWS error {code}: {text}")]

    _handlers: dict[str, Callable[..., list[StreamMessage]]] = {
        "1": _tick_price,
        "2": _tick_size,
        "4": _error,
        "12": _depth,
        "13": _depth,
        "46": _tick_string,
        "50": _bar,
        "58": _market_data_type,
        "99": _tick_by_tick,
    }

    # the sans-IO interface the WebSocket runner would use; requests come from on_sent here
    def add(self, streams: list[Hashable]) -> None:  # pragma: no cover - the client sends requests
        raise NotImplementedError("IBKR requests are sent through ib_async; the session learns them in on_sent")

    def remove(self, streams: list[Hashable]) -> None:  # pragma: no cover
        raise NotImplementedError("IBKR cancels are sent through ib_async; the session learns them in on_sent")


# -- the venue ----------------------------------------------------------------------------


def _default_client_id() -> int:
    # distinct per process, so a capture daemon and a script can share one Gateway
    return 1000 + os.getpid() % 30000


def _host_port(text: str) -> tuple[str, int]:
    t = text.strip()
    for scheme in ("tws://", "tcp://", "ibkr://"):
        if t.startswith(scheme):
            t = t[len(scheme):]
    t = t.rstrip("/")
    host, sep, port = t.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigurationError(f"ibkr: endpoint {text!r} is not host:port (e.g. 127.0.0.1:4002)")
    return host.strip("[]") or "127.0.0.1", int(port)


class IbkrVenue(Venue):
    name = PROVIDER
    default_url = "127.0.0.1:4002"
    credential_env = {"host": ("IBKR_HOST",), "port": ("IBKR_PORT",), "client_id": ("IBKR_CLIENT_ID",)}
    stock = True
    native_bars = frozenset({"5s"})
    kinds = frozenset({"trade", "quote", "bar", "book"})

    # timings (seconds) and limits; ``DataStream(options={"ibkr": {...}})`` changes them
    connect_timeout: float = 10.0  # TCP connect + API handshake
    request_timeout: float = 10.0  # contract details
    keepalive_interval: float | None = 10.0  # reqCurrentTime probe
    ws_ping_interval = None
    silence_timeout: float = 30.0  # no message at all (probe answers count): reconnect
    backoff_initial: float = 2.0  # TWS may still hold the old client id for a moment (326)
    backoff_max: float = 60.0
    idle_linger: float = 2.0  # keep an unused connection this long before closing it
    pacing_delay: float = 5.0  # before requesting again after a pacing refusal
    depth_rows: int = 10  # market depth rows per side
    smart_depth: bool = True  # SMART depth (aggregated across exchanges) for SMART contracts
    use_tick_by_tick: bool = True  # False: trades and quotes from market data ticks only
    market_data_type: int = 1  # 1 live, 2 frozen, 3 delayed, 4 delayed frozen (reqMarketDataType)
    bar_what_to_show: str | None = None  # TRADES (MIDPOINT for forex/commodities) unless set
    # healing (reqHistoricalTicks): no trade ids, one-second times; IB's pacing allows 60
    # historical requests per 10 minutes and no identical one within 15 s
    trade_time_resolution = 1_000_000_000
    history_rate = 0.1
    history_burst = 5.0
    history_ticks: int = 1000  # ticks per reqHistoricalTicks (at most 1000)
    history_pacing_wait: float = 15.0  # after a pacing violation (162): IB's identical-request window

    def __init__(self, url: str | None = None, rest_url: str | None = None, credentials: dict[str, str] | None = None,
                 **options: Any) -> None:
        super().__init__(url, rest_url, credentials, **options)
        creds = self.credentials
        if url:
            self.host, self.port = _host_port(url)
        else:
            self.host = creds.get("host") or "127.0.0.1"
            try:
                self.port = int(creds.get("port") or 4002)
            except ValueError:
                raise ConfigurationError(f"ibkr: port {creds.get('port')!r} is not a number") from None
        try:
            self.client_id = int(creds["client_id"]) if creds.get("client_id") else _default_client_id()
        except ValueError:
            raise ConfigurationError(f"ibkr: client id {creds.get('client_id')!r} is not a number") from None
        self.url = f"{self.host}:{self.port}"
        self.contracts: dict[str, int] = {}  # canonical symbol -> conId

    @classmethod
    def has_credentials(cls, given: dict[str, str] | None = None) -> bool:
        """A Gateway needs no keys: IBKR is "configured" once host, port or client id is given."""
        have = cls.find_credentials(given or {})
        return any(have.get(k) for k in ("host", "port", "client_id"))

    def derive_rest_url(self, ws_url: str) -> str:
        return ""

    def describe(self) -> str:
        return f"ibkr at {self.host}:{self.port}"

    @classmethod
    def claims(cls, symbol: str) -> bool:
        try:
            parse_symbol(symbol)
        except UnknownSymbolError:
            return False
        return True

    def venue_symbol(self, symbol: str) -> str:
        return canonical_symbol(symbol)

    def check_channel(self, channel: Channel) -> None:
        if channel.kind not in ("trade", "quote", "bar", "book"):
            raise UnsupportedChannelError(f"ibkr has no {channel.kind} stream")

    def upstream(self, channel: Channel) -> Channel:
        """Bars longer than 5 s and a multiple of it come from the 5-second real-time bars."""
        if channel.kind == "bar" and channel.interval != "5s":
            iv = channel.interval or ""
            if iv.endswith("M") or interval_ns(iv) % (5 * _NS) == 0:
                return Channel("bar", "5s")
        return super().upstream(channel)

    def streams(self, symbol: str, channel: Channel) -> list[Hashable]:
        k = channel.kind
        spec = parse_symbol(symbol)
        if k == "trade":
            if spec.sec_type == "CASH":
                raise UnsupportedChannelError(f"ibkr: forex ({symbol}) has no trades on IDEALPRO; use quote, bar or book")
            return [(symbol, "trade")]
        if k == "quote":
            return [(symbol, "quote")]
        if k == "bar":
            if channel.interval == "5s":
                return [(symbol, "bar:5s")]
            if self.upstream(channel).kind == "bar":
                return [(symbol, "bar:5s")]
            return [(symbol, "trade")]
        if k == "book":
            if channel.partial:
                raise UnsupportedChannelError("ibkr books are kept locally from market depth; there is no partial book")
            if (channel.depth or 0) > self.depth_rows:
                raise UnsupportedChannelError(
                    f"ibkr: book:{channel.depth} is deeper than the {self.depth_rows} depth rows requested from TWS; "
                    f"set options={{'ibkr': {{'depth_rows': {channel.depth}}}}}"
                )
            return [(symbol, "book")]
        raise UnsupportedChannelError(f"ibkr has no {k} stream")

    def stream_target(self, stream: Hashable) -> tuple[str | None, str | None]:
        symbol, route = stream  # type: ignore[misc]
        return symbol, route

    def session(self, conn: int, streams: list[Hashable]) -> IbkrSession:
        return IbkrSession(self, conn, streams)

    def history_pager(self, spec: HealSpec) -> IbkrHistory | None:
        return IbkrHistory(self, spec) if spec.channel == "trade" else None

    def client(self, sink, raw_sink=None, on_fatal=None, transport: str | None = None) -> IbkrClient:
        return IbkrClient(self, sink, raw_sink, on_fatal)

    def what_to_show(self, spec: ContractSpec) -> str:
        if self.bar_what_to_show:
            return self.bar_what_to_show
        return "MIDPOINT" if spec.sec_type in ("CASH", "CMDTY") else "TRADES"


# -- the I/O side ---------------------------------------------------------------------------

_encode_event = msgspec.json.Encoder().encode
#: message ids ib_async's own wrapper never sees: wrdata's requests are not registered there
_OURS = frozenset({"1", "2", "12", "13", "45", "46", "50", "57", "58", "81", "99"})


class _AccountFilter(logging.Filter):
    """Masks account ids in ib_async's debug log of every message (``<<< 15,1,DU123...``)."""

    accounts: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == "<<< %s" and record.args and str(record.args[0]).startswith("15,"):
            # managed accounts, logged before the client hands them to anyone: learn them here
            self.accounts.update(a for a in str(record.args[0]).split(",")[2:] if a)
        if self.accounts:
            msg = record.getMessage()
            if any(a in msg for a in self.accounts):
                for a in self.accounts:
                    msg = msg.replace(a, "***")
                record.msg, record.args = msg, ()
        return True


_account_filter = _AccountFilter()
for _name in ("ib_async.client", "ib_async.wrapper", "ib_async.ib"):
    logging.getLogger(_name).addFilter(_account_filter)


def _redact(payload: bytes, ids: frozenset[str]) -> bytes:
    end = payload.find(b"\0")
    mid = payload[:end].decode(errors="replace") if end >= 0 else ""
    if mid in ids:
        return payload[: end + 1] + b"<redacted>\0"
    return payload


class _Link:
    """One TWS API connection (one ``ib_async.IB``) and its session."""

    def __init__(self, client: IbkrClient, conn: int) -> None:
        self.client = client
        self.conn = conn
        self.session: IbkrSession = client.venue.session(conn, [])
        self.ib: IB | None = None
        self.url = f"tws://{client.venue.host}:{client.venue.port}"
        self.seq = 0
        self.last_rx = 0
        self.lost: str | None = None  # why TWS went away (set by ib_async's disconnect event)
        self.closing = False
        self.retry_at: dict[tuple[str, str], float] = {}

    def next_seq(self) -> int:
        s = self.seq
        self.seq = s + 1
        return s

    # hooks installed into ib_async.Client
    def on_fields(self, fields: list[str]) -> None:
        ts = recv_ns()
        self.last_rx = ts
        seq = self.next_seq()
        payload = _redact(("\0".join(fields) + "\0").encode(), _ACCOUNT_IN)
        c = self.client
        raw = c.raw_sink
        if raw is not None:
            raw(PROVIDER, self.conn, seq, ts, "in", self.url, payload)
        try:
            msgs = self.session.feed(payload, ts, seq)
        except Exception as e:  # a parser bug must not kill the connection; the message is in raw
            msgs = self.session.parser_failed(payload, ts, seq, e)
        if msgs:
            c.sink(msgs)
        if self.session.actions:
            c.changed.set()

    def on_send(self, msg: str | None) -> None:
        if not msg:
            return
        ts = recv_ns()
        seq = self.next_seq()
        payload = _redact(msg.encode(), _ACCOUNT_OUT)
        raw = self.client.raw_sink
        if raw is not None:
            raw(PROVIDER, self.conn, seq, ts, "out", self.url, payload)
        self.session.on_sent(payload, ts, seq)

    def on_disconnected(self) -> None:
        if not self.closing and self.lost is None:
            self.lost = "connection to TWS closed"
            self.client.changed.set()

    def event(self, status: str, reason: str | None = None, **fields: Any) -> None:
        self.client.event(status, reason, conn=self.conn, seq=self.next_seq(), url=self.url, **fields)


class IbkrClient:
    """The IBKR provider's I/O: one TWS API connection kept open through ``ib_async``.

    Same interface as the WebSocket runner's client: ``add``/``remove`` (synchronous),
    ``close``, ``validate_symbol``, and ``sink``/``raw_sink`` read at every use (the
    manager swaps them when a recorder attaches).
    """

    def __init__(self, venue: IbkrVenue, sink, raw_sink=None, on_fatal=None) -> None:
        self.venue = venue
        self.sink = sink
        self.raw_sink = raw_sink
        self.on_fatal = on_fatal
        self.wanted: set[tuple[str, str]] = set()
        self.failed: dict[tuple[str, str], Exception] = {}
        self.tbt_refused: set[tuple[str, str]] = set()
        self.closed = False
        self.fatal: Exception | None = None
        self.provider_seq = 0
        self.changed = asyncio.Event()
        self.link: _Link | None = None
        self.link_ready = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._need_link = 0  # validations waiting for a connection
        self._idle_since: float | None = None
        self._retry_timer: asyncio.TimerHandle | None = None

    # -- events ------------------------------------------------------------------------------
    def event(self, status: str, reason: str | None = None, *, conn: int = 0, seq: int | None = None, url: str = "",
              **fields: Any) -> StreamMessage:
        if seq is None:
            seq = self.provider_seq
            self.provider_seq += 1
        msg = status_message(PROVIDER, status, recv_ns(), reason, conn=conn, seq=seq, **fields)
        if self.raw_sink is not None:
            self.raw_sink(PROVIDER, conn, seq, msg.ts_recv, "event", url or f"tws://{self.venue.host}:{self.venue.port}",
                          _encode_event(msg))
        self.sink([msg])
        return msg

    # -- the manager's interface -------------------------------------------------------------
    def add(self, streams: list[Hashable]) -> None:
        if self.closed:
            raise RuntimeError("ibkr client is closed")
        if self.fatal is not None:
            raise self.fatal
        for s in streams:
            self.wanted.add(s)  # type: ignore[arg-type]
        self._start()
        self.changed.set()

    def remove(self, streams: list[Hashable]) -> None:
        for s in streams:
            self.wanted.discard(s)  # type: ignore[arg-type]
            self.failed.pop(s, None)  # type: ignore[call-overload]
        self.changed.set()

    @property
    def streams(self) -> set[tuple[str, str]]:
        return set(self.wanted)

    async def close(self, grace: float = 1.0) -> None:
        self.closed = True
        self.changed.set()
        if self._retry_timer is not None:
            self._retry_timer.cancel()
        task, self._task = self._task, None
        if task is not None:
            done, _ = await asyncio.wait([task], timeout=grace)
            if not done:  # e.g. in the middle of a connect attempt: stop waiting for it
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def validate_symbol(self, symbol: str) -> None:
        """Look the contract up once (error 200 → :class:`UnknownSymbolError`) and cache its conId.

        When TWS cannot be reached within ``connect_timeout`` the symbol is not checked
        now; the subscription looks it up once connected and fails its consumers then.
        """
        venue = self.venue
        if symbol in venue.contracts:
            return
        spec = parse_symbol(symbol)
        self._need_link += 1
        self._start()
        self.changed.set()
        try:
            try:
                await asyncio.wait_for(self.link_ready.wait(), venue.connect_timeout + 1.0)
            except TimeoutError:
                log.warning("ibkr: TWS at %s:%s not reachable; %s is not checked before subscribing", venue.host, venue.port, symbol)
                return
            link = self.link
            if link is None or link.ib is None:
                return
            _con_id, err = await self._qualify(link, symbol, spec)
            if err is not None:
                raise err
        finally:
            self._need_link -= 1
            self.changed.set()

    # -- history (gap healing) -------------------------------------------------------------------
    async def hold_link(self) -> bool:
        """Keep a connection open without subscriptions (``wrdata heal``: history requests
        only) until :meth:`release_link`; True once it is up."""
        self._need_link += 1
        self._start()
        self.changed.set()
        try:
            await asyncio.wait_for(self.link_ready.wait(), self.venue.connect_timeout + 1.0)
        except TimeoutError:
            return False
        return True

    def release_link(self) -> None:
        self._need_link = max(0, self._need_link - 1)
        self.changed.set()

    async def history_fetch(self, req: HttpRequest) -> HttpResponse:
        """One ``reqHistoricalTicks`` (an :class:`IbkrHistory` request), answered as the REST
        answers of the other venues are, for the shared healer: 200 with the ticks as
        ``ib_async`` decoded them (``{"ticks": [[time s, mask, price, size, exchange,
        specialConditions], ...]}``), 429 (+ ``Retry-After``) for a pacing violation (162),
        403 for no permission or plan (162, 354, 10089, ...), 404 for an unknown contract,
        0 without a connection or an answer. The TWS messages themselves are in ``raw`` on
        the connection that carried them, like every other request."""
        link = self.link
        ib = link.ib if link is not None else None
        if ib is None or not ib.isConnected():
            return HttpResponse(0, b"not connected to TWS")
        p = req.params or {}
        symbol = str(p["symbol"])
        con_id, err = await self._qualify(link, symbol, parse_symbol(symbol))
        if con_id is None:
            return HttpResponse(404 if err is not None else 0, str(err or "no contract details from TWS").encode())
        errors: list[tuple[int, str]] = []

        def on_error(req_id: int, code: int, text: str, *_: Any) -> None:
            if code in (162, 165, 200, 321, 322, 354, 10089, 10090, 10168, 420):
                errors.append((code, text))

        ib.errorEvent += on_error
        try:
            start = datetime.fromtimestamp(int(p["start"]), UTC)
            ticks = await asyncio.wait_for(
                ib.reqHistoricalTicksAsync(to_contract(parse_symbol(symbol), con_id), start, "", int(p["numberOfTicks"]),
                                           str(p["whatToShow"]), str(p["useRth"]) == "1"),
                self.venue.request_timeout,
            )
        except (TimeoutError, ConnectionError) as e:
            return HttpResponse(0, f"no answer from TWS ({type(e).__name__})".encode())
        finally:
            ib.errorEvent -= on_error
        if errors and not ticks:
            code, text = errors[-1]
            body = _encode_event({"code": code, "message": text})
            if "pacing" in text.lower():
                return HttpResponse(429, body, {"retry-after": str(self.venue.history_pacing_wait)})
            if "returned no data" in text.lower():
                return HttpResponse(200, b'{"ticks":[]}')
            return HttpResponse(404 if code == 200 else 403, body)
        rows = [[int(t.time.timestamp()), int(t.tickAttribLast.pastLimit) | int(t.tickAttribLast.unreported) << 1, t.price, t.size,
                 t.exchange, t.specialConditions] for t in ticks]
        return HttpResponse(200, _encode_event({"ticks": rows}))

    # -- the supervisor -------------------------------------------------------------------------
    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._supervise(), name="wrdata-ibkr")

    def _busy(self) -> bool:
        return bool(self.wanted) or self._need_link > 0

    async def _supervise(self) -> None:
        venue = self.venue
        attempt = 0
        outage_start: int | None = None
        outage_reason = ""
        try:
            while not self.closed:
                if not self._busy():
                    outage_start, attempt = None, 0  # nothing was wanted meanwhile: no gap to report
                    self.changed.clear()
                    await self.changed.wait()
                    continue
                link = await self._open()
                if link is None:
                    attempt += 1
                    if outage_start is None:
                        outage_start, outage_reason = recv_ns(), "connect failed"
                    delay = min(venue.backoff_max, venue.backoff_initial * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
                    self.event("reconnecting", f"attempt {attempt + 1} in {delay:.2f}s")
                    await self._sleep(delay)
                    continue
                attempt = 0
                outcome = await self._serve(link, outage_start, outage_reason)
                outage_start, outage_reason = None, ""
                if outcome in ("stop", "idle"):
                    await self._close_link(link, "closed" if outcome == "stop" else "unsubscribed")
                    continue
                outage_start, outage_reason = link.last_rx or recv_ns(), outcome
                await self._close_link(link, outcome)
                # the first retry waits too: TWS may still hold the client id (326)
                attempt = 1
                delay = venue.backoff_initial * random.uniform(0.5, 1.0)
                self.event("reconnecting", f"attempt 2 in {delay:.2f}s")
                await self._sleep(delay)
        except Exception as e:  # a bug here must not leave consumers waiting forever
            log.exception("ibkr: connection supervisor failed")
            self.fatal = ProviderError(f"ibkr: connection supervisor failed: {e!r}")
            if self.on_fatal is not None:
                self.on_fatal(PROVIDER, self.fatal)
        finally:
            if self.link is not None:
                await self._close_link(self.link, "closed")

    async def _sleep(self, delay: float) -> None:
        """Sleep, but wake early when closed."""
        end = time.monotonic() + delay
        while not self.closed:
            left = end - time.monotonic()
            if left <= 0:
                return
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except TimeoutError:
                return

    async def _open(self) -> _Link | None:
        from ib_async import IB, StartupFetchNONE

        from .runner import next_conn_id

        venue = self.venue
        link = _Link(self, next_conn_id())
        ib = IB()
        link.ib = ib
        client = ib.client
        # every message ib_async decodes passes through the link first (recorded, parsed);
        # market data messages stop there, everything else also goes to ib_async's wrapper
        interpret = client.decoder.interpret

        def on_fields(fields: list[str], _link=link, _interpret=interpret) -> None:
            _link.on_fields(fields)
            if fields and fields[0] not in _OURS:
                _interpret(fields)

        client.decoder.interpret = on_fields  # type: ignore[method-assign]
        send = client.sendMsg

        def on_send(msg: str | None, _link=link, _send=send) -> None:
            _link.on_send(msg)
            _send(msg)

        client.sendMsg = on_send  # type: ignore[method-assign]
        ib.disconnectedEvent += link.on_disconnected
        try:
            await ib.connectAsync(venue.host, venue.port, clientId=venue.client_id, timeout=venue.connect_timeout,
                                  readonly=True, fetchFields=StartupFetchNONE)
        except BaseException as e:
            link.closing = True
            ib.disconnect()
            if isinstance(e, asyncio.CancelledError):
                raise
            why = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            log.warning("%s: connect failed: %s", venue.describe(), why)
            link.event("error", f"connect failed: {why}")
            return None
        _AccountFilter.accounts.update(client.getAccounts())
        link.session.server_version = client.serverVersion()
        link.last_rx = recv_ns()
        self.link = link
        link.event("connected", f"{link.url} (server version {client.serverVersion()})")
        if venue.market_data_type != 1:
            client.reqMarketDataType(venue.market_data_type)
        self.link_ready.set()
        return link

    async def _close_link(self, link: _Link, reason: str) -> None:
        if link.closing and self.link is not link:
            return
        link.closing = True
        self.link_ready.clear()
        if self.link is link:
            self.link = None
        ib = link.ib
        if ib is not None and ib.client.isConnected():
            ib.disconnect()
        link.event("disconnected", reason)

    async def _serve(self, link: _Link, outage_start: int | None, outage_reason: str) -> str:
        """Keep one connection's subscriptions in line with ``wanted``; say why it ended."""
        venue = self.venue
        await self._reconcile(link)
        if link.lost is None:
            link.event("subscribed", f"{len(link.session.by_stream)} streams")
        if outage_start is not None:
            end = recv_ns()
            for stream in sorted(self.wanted - set(self.failed)):
                symbol, route = stream
                link.event("gap", f"disconnected: {outage_reason}", symbol=symbol, channel=route,
                           gap_start_ns=outage_start, gap_end_ns=end)
        tick = min(1.0, venue.silence_timeout / 4, *(x / 2 for x in (venue.keepalive_interval,) if x))
        last_probe = time.monotonic()
        self._idle_since = None
        while True:
            if self.closed:
                return "stop"
            if link.lost is not None:
                return link.lost
            if not self._busy():
                now = time.monotonic()
                if self._idle_since is None:
                    self._idle_since = now
                elif now - self._idle_since >= venue.idle_linger:
                    return "idle"
            else:
                self._idle_since = None
            self.changed.clear()
            self._actions(link)
            await self._reconcile(link)
            if link.lost is not None:
                return link.lost
            now = time.monotonic()
            if (recv_ns() - link.last_rx) / 1e9 > venue.silence_timeout:
                log.warning("ibkr conn %d: nothing from TWS for %.1fs, reconnecting", link.conn, venue.silence_timeout)
                return f"silent for {venue.silence_timeout}s"
            if venue.keepalive_interval and now - last_probe >= venue.keepalive_interval:
                try:
                    link.ib.client.reqCurrentTime()  # type: ignore[union-attr]
                except ConnectionError:
                    pass
                last_probe = now
            try:
                await asyncio.wait_for(self.changed.wait(), tick)
            except TimeoutError:
                pass

    def _actions(self, link: _Link) -> None:
        s = link.session
        while s.actions:
            action = s.actions.pop(0)
            kind = action[0]
            if kind == "fallback":
                self.tbt_refused.add(action[1])
            elif kind == "retry":
                link.retry_at[action[1]] = time.monotonic() + self.venue.pacing_delay
            elif kind == "failed":
                stream, code, text = action[1], action[2], action[3]
                if stream in self.wanted and stream not in self.failed:
                    symbol, route = stream
                    self._fail(stream, IbkrSubscriptionError(f"ibkr: {symbol} {route}: TWS error {code}: {text}", symbol, code))
            elif kind == "resubscribe":
                link.retry_at.clear()

    def _fail(self, stream: tuple[str, str], err: IbkrSubscriptionError) -> None:
        self.failed[stream] = err
        log.error("%s", err)
        if self.on_fatal is not None:
            self.on_fatal(PROVIDER, err)

    async def _reconcile(self, link: _Link) -> None:
        venue = self.venue
        s = link.session
        now = time.monotonic()
        for stream in sorted(self.wanted - set(s.by_stream) - set(self.failed)):
            due = link.retry_at.get(stream)
            if due is not None:
                if now < due:
                    continue
                del link.retry_at[stream]
            symbol, _route = stream
            con_id = venue.contracts.get(symbol)
            if con_id is None:
                con_id, err = await self._qualify(link, symbol, parse_symbol(symbol))
                if link.lost is not None or link.closing:
                    return
                if err is not None:
                    for other in sorted(self.wanted - set(self.failed)):
                        if other[0] == symbol:
                            self._fail(other, IbkrSubscriptionError(str(err), symbol, 200))
                    continue
                if con_id is None:
                    link.retry_at[stream] = time.monotonic() + venue.pacing_delay
                    continue
            if stream in self.wanted and stream not in s.by_stream and stream not in self.failed:
                self._request(link, stream, con_id)
        for stream, req_id in list(s.by_stream.items()):
            if stream not in self.wanted:
                self._cancel(link, req_id)
        for stream in list(link.retry_at):
            if stream not in self.wanted:
                del link.retry_at[stream]
        if link.retry_at:  # wake up for the next retry (one timer at a time)
            if self._retry_timer is not None:
                self._retry_timer.cancel()
            delay = max(0.0, min(link.retry_at.values()) - time.monotonic())
            self._retry_timer = asyncio.get_running_loop().call_later(delay, self.changed.set)

    async def _qualify(self, link: _Link, symbol: str, spec: ContractSpec) -> tuple[int | None, Exception | None]:
        """(conId, None), (None, UnknownSymbolError), or (None, None) when TWS did not answer."""
        venue = self.venue
        if symbol in venue.contracts:
            return venue.contracts[symbol], None
        ib = link.ib
        assert ib is not None
        try:
            details = await asyncio.wait_for(ib.reqContractDetailsAsync(to_contract(spec)), venue.request_timeout)
        except (TimeoutError, ConnectionError) as e:
            log.warning("ibkr: contract details for %s: no answer (%s)", symbol, type(e).__name__)
            return None, None
        if not details:
            return None, UnknownSymbolError(f"ibkr: unknown symbol {symbol!r}: TWS has no security definition for it (error 200)")
        if len(details) > 1:
            found = []
            for d in details[:6]:
                c = d.contract
                found.append(f"{c.localSymbol or c.symbol} {c.secType} {c.lastTradeDateOrContractMonth} "
                             f"{c.primaryExchange or c.exchange} {c.currency} (conId {c.conId})".replace("  ", " "))
            return None, UnknownSymbolError(
                f"ibkr: {symbol!r} is ambiguous ({len(details)} contracts: {'; '.join(found)}); "
                f"name it explicitly, e.g. with :primaryExchange=, :localSymbol= or an expiry"
            )
        con_id = details[0].contract.conId
        venue.contracts[symbol] = con_id
        return con_id, None

    def _request(self, link: _Link, stream: tuple[str, str], con_id: int) -> None:
        venue = self.venue
        symbol, route = stream
        spec = parse_symbol(symbol)
        contract = to_contract(spec, con_id)
        ib = link.ib
        assert ib is not None
        c = ib.client
        try:
            req_id = c.getReqId()
            # tick-by-tick has no delayed form, and indices have none at all
            tbt = (venue.use_tick_by_tick and venue.market_data_type == 1 and stream not in self.tbt_refused
                   and spec.sec_type != "IND")
            if route == "trade":
                if tbt:
                    c.reqTickByTickData(req_id, contract, "AllLast", 0, False)
                else:
                    c.reqMktData(req_id, contract, "233", False, False, [])
            elif route == "quote":
                if tbt:
                    c.reqTickByTickData(req_id, contract, "BidAsk", 0, False)
                else:
                    c.reqMktData(req_id, contract, "", False, False, [])
            elif route == "bar:5s":
                c.reqRealTimeBars(req_id, contract, 5, venue.what_to_show(spec), False, [])
            elif route == "book":
                smart = venue.smart_depth and spec.exchange == "SMART"
                c.reqMktDepth(req_id, contract, venue.depth_rows, smart, [])
        except ConnectionError:
            link.lost = link.lost or "connection to TWS closed"

    def _cancel(self, link: _Link, req_id: int) -> None:
        req = link.session.reqs.get(req_id)
        ib = link.ib
        if req is None or ib is None:
            return
        c = ib.client
        try:
            if req.kind in (TBT_TRADE, TBT_QUOTE):
                c.cancelTickByTickData(req_id)
            elif req.kind in (MKT_TRADE, MKT_QUOTE):
                c.cancelMktData(req_id)
            elif req.kind == BARS:
                c.cancelRealTimeBars(req_id)
            elif req.kind == DEPTH:
                c.cancelMktDepth(req_id, self.venue.smart_depth and parse_symbol(req.symbol).exchange == "SMART")
        except ConnectionError:
            link.session._unbind(req_id)


__all__ = [
    "ContractSpec",
    "IbkrClient",
    "IbkrSession",
    "IbkrSubscriptionError",
    "IbkrVenue",
    "canonical_symbol",
    "format_symbol",
    "parse_symbol",
    "spec_from_fields",
    "to_contract",
]


# -- history (gap healing) -----------------------------------------------------------------------

class _HistTicks(msgspec.Struct):
    ticks: list[tuple[int, int, float, float, str, str]] = []


_hist_ticks = msgspec.json.Decoder(_HistTicks)


class IbkrHistory(HistoryPager):
    """``reqHistoricalTicks`` (TRADES) forward from the window's first second, through the
    live connection (:meth:`IbkrClient.history_fetch`). TWS answers ``numberOfTicks`` and the
    rest of the last second, so each page ends on a whole second and the next starts at the
    one after; no trade ids: the window's edge seconds are reconciled with the stream by
    (time, price, size) multiset (:mod:`wrdata.streaming.heal`)."""

    def __init__(self, venue: IbkrVenue, spec: HealSpec) -> None:
        super().__init__(venue, spec)
        if self.lo is None or self.hi is None:
            self.exhausted = True
            self.notes.append("the gap has no start time to heal from")
            return
        self.next_s = self.lo // 1_000_000_000

    def _next(self) -> HttpRequest | None:
        return HttpRequest(
            "tws://reqHistoricalTicks",
            {"symbol": self.spec.symbol, "start": self.next_s, "numberOfTicks": min(1000, self.venue.history_ticks),
             "whatToShow": "TRADES", "useRth": 0},
            purpose="history",
        )

    def _error(self, response: HttpResponse) -> Exception:
        text = response.body[:200].decode(errors="replace")
        if response.status == 403:
            return HistoryError(f"historical ticks refused (TWS: {text}): no market data permissions or plan for them")
        return HistoryError(f"historical ticks request failed ({response.status}: {text})")

    def _page(self, request: HttpRequest, response: HttpResponse) -> list[Row]:
        try:
            ticks = _hist_ticks.decode(response.body).ticks
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise HistoryError(f"malformed historical ticks: {e}") from None
        if not ticks or ticks[-1][0] * 1_000_000_000 > self.hi or len(ticks) < int(request.params["numberOfTicks"]):
            self.complete = True  # past the window's end, or the history holds nothing more
        elif ticks[-1][0] + 1 <= self.next_s:
            self.exhausted = True
            self.notes.append("historical ticks did not advance")
        else:
            self.next_s = ticks[-1][0] + 1  # the page finished its last second
        return [(t * 1_000_000_000, price, size, None, None, None, exchange or None, cond or None)
                for t, _mask, price, size, exchange, cond in ticks]
