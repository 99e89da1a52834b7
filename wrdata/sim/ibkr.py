"""A local TWS / IB Gateway: the TWS API socket protocol, fed by the seeded synthetic market.

An unmodified ``ib_async`` (2.1.0) client connects to it as to a paper IB Gateway
(``wrdata sim ibkr`` listens on 127.0.0.1:4002 by default) and receives market data,
tick-by-tick data, 5-second real-time bars, market depth and contract details for a
small static contract table, with the errors and connectivity codes a real TWS sends.

The protocol, as this server speaks it (taken from ``ib_async``'s ``client.py`` and
``decoder.py``; ``shared/providers/ibkr.md``):

- **Server version 178.** The client sends ``API\\0`` and a length-prefixed version range
  (``v157..178``); we answer ``min(client max, 178)`` with the connection time, as one
  message of exactly two fields. 178 is the highest version ``ib_async`` 2.1.0 offers and
  lies below every protobuf cut-over (201 and later), so every message is the classic
  NUL-separated text; a client whose minimum is above 178 is refused (closed).
- Framing: 4-byte big-endian length, then NUL-terminated text fields, the first being the
  message id.
- START_API (71) → MANAGED_ACCTS (15, exactly 3 fields, non-empty), NEXT_VALID_ID (9,
  exactly 3 fields), then the farm notices 2104/2106/2158 as ERR_MSG with reqId -1. Every
  ERR_MSG carries the trailing ``advancedOrderRejectJson`` field (``ib_async`` drops the
  error without it). A client id already in use gets 326 and the socket is closed.
- Startup requests answered with their end markers: positions (61→62), open orders
  (5→53), completed orders (99→102, no version field), account updates (6→54), account
  updates multi (76→74), executions (7→55), account summary (62→64), managed accounts
  (17→15), ids (8→9), current time (49→49), market data type (59).
- Contract details (9): CONTRACT_DATA (10, no version field at ≥164, the 178 layout) then
  CONTRACT_DATA_END (52); no match → 200. Contracts match by conId, else by symbol or
  local symbol, security type, currency, exchange (SMART for stocks) and expiry prefix.
- Market data (1): TICK_REQ_PARAMS (81), MARKET_DATA_TYPE (58), the current bid/ask/
  last/high/low/close/open/volume/last time, then bid/ask price ticks (1/2 with size) or
  size ticks (0/3) on every change, last (4), volume (8), last time (45) and, with
  generic tick 233, RTVolume (48 ``price;size;ms;totalVolume;vwap;single``) per trade.
  Snapshots end with 57. Cancel (2) of an unknown id → 300. Delayed data (after
  reqMarketDataType 3/4 for a symbol without permission): 10167, then the delayed tick
  types (66–76, 88).
- Tick-by-tick (97): AllLast/Last per trade, BidAsk and MidPoint per quote change (the
  current quote first); forex has no Last/AllLast (10189); more than
  ``max_tick_by_tick`` streams → 10190. Cancel: 98.
- Real-time bars (50): one bar per 5 seconds of market time, ``time`` = bar start (a
  multiple of 5); TRADES (not for forex), MIDPOINT, BID, ASK; empty intervals come flat at
  the previous close with volume 0. Cancel: 51.
- Market depth (10): UPDATE_MKT_DEPTH_L2 (13) for SMART depth, UPDATE_MKT_DEPTH (12)
  otherwise; rows are addressed by position: the first rows arrive as inserts, then rows
  are updated in place, appended (insert at the end) or removed from the end (see
  :func:`_depth_ops`). More than ``max_depth_requests`` → 309. Cancel: 11.
- Errors: 200 unknown contract, 354 no market data permission (10089 for tick-by-tick,
  420 for real-time bars), 101 market data lines exhausted, 322 duplicate request id.
- Historical ticks (96, gap healing): ``reqId, <contract 12>, includeExpired,
  startDateTime, endDateTime, numberOfTicks, whatToShow, useRth, ignoreSize, miscOptions``
  → HISTORICAL_TICKS_LAST (98) ``reqId, n, {time (s), mask, price, size, exchange,
  specialConditions}×n, done``: the retained trades from ``startDateTime`` (``yyyymmdd
  hh:mm:ss UTC`` or ``yyyymmdd-hh:mm:ss``), ``numberOfTicks`` (≤ 1000) and the rest of the
  last second, with the exchange and conditions the tick-by-tick stream gives them. TRADES
  only (else 162). Error 162 "Historical data request pacing violation" for the same request
  again within ``hist_identical_s`` (IB: 15 s), or when ``historical_ticks`` is off (a
  market-data plan without history: "No market data permissions").

Faults, for tests: :meth:`IbkrSimulator.drop_all` (abort every connection),
:meth:`stall_all`/:meth:`resume_all` (send nothing, keep the socket),
:meth:`connectivity_lost` (1100, data stops) and :meth:`connectivity_restored` (1102, or
1101 with every subscription forgotten), :meth:`farm_broken`/:meth:`farm_restored`
(2103/2104, data stops meanwhile), :meth:`freeze`/:meth:`unfreeze` (the market clock
stops), :meth:`send_error`, :meth:`refuse_next` (the next
requests of a kind get an error code: pacing, line limits), ``no_permission`` symbols, and
the shared :class:`~wrdata.sim.faults.Faults` ``drop_after``, ``malformed_every`` and
``lifetime``. ``speed`` runs the market clock faster than the wall clock (a 5-second bar
every 0.25 s at ``speed=20``).

Replay: with a :class:`~wrdata.sim.server.FrameFeed` of a recording's ``raw`` rows (its
requests marked ``stream="out"``), :meth:`IbkrSimulator.publish_recorded` serves the
recorded messages to whoever subscribes to the same contracts now.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import struct
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .faults import Faults
from .market import MarketEvent, SymbolSpec, SyntheticMarket
from .server import Feed, MarketFeed, RecordedFrame

__all__ = ["IbkrSimulator", "SimContract", "DEFAULT_CONTRACTS", "SERVER_VERSION"]

log = logging.getLogger(__name__)

SERVER_VERSION = 178
MIN_CLIENT_VERSION = 100  # TWS 9.72+ accepts clients from here; ib_async asks for 157..178
NS = 1_000_000_000
BAR_NS = 5 * NS


@dataclass
class SimContract:
    """One instrument the simulated TWS knows: its contract details and market parameters."""

    key: str  # the market's symbol (what ``symbols=`` names)
    con_id: int
    symbol: str
    sec_type: str
    exchange: str
    currency: str
    spec: SymbolSpec
    primary_exchange: str = ""
    local_symbol: str = ""
    trading_class: str = ""
    expiry: str = ""
    multiplier: str = ""
    long_name: str = ""
    market_name: str = ""
    valid_exchanges: str = "SMART"
    industry: str = ""
    category: str = ""
    subcategory: str = ""
    time_zone: str = "US/Eastern"
    stock_type: str = ""
    market_rule_ids: str = "26"
    depth_maker: str = "ISLAND"  # market maker / exchange named in L2 rows
    trade_exchanges: tuple[str, ...] = ("ISLAND", "NYSE", "ARCA", "BATS", "IEX", "FINRA")

    @property
    def min_tick(self) -> str:
        return self.spec.tick_size


def _stock(key: str, con_id: int, price: float, primary: str, long_name: str, industry: str = "Technology",
           weight: float = 1.0) -> SimContract:
    spec = SymbolSpec(key, price, "0.01", "1", mean_qty=100.0, volatility=0.01, weight=weight, book_depth=20,
                      first_trade_id=1, first_update_id=1)
    return SimContract(
        key, con_id, key, "STK", "SMART", "USD", spec, primary_exchange=primary,
        local_symbol=key, trading_class="NMS" if primary == "NASDAQ" else key, long_name=long_name, market_name="NMS",
        valid_exchanges="SMART,AMEX,NYSE,CBOE,PHLX,ISE,CHX,ARCA,ISLAND,DRCTEDGE,BEX,BATS,EDGEA,BYX,IEX,EDGX,MEMX,PEARL,LTSE",
        industry=industry, category="Computers", subcategory="Computers", stock_type="COMMON",
    )


def default_contracts() -> list[SimContract]:
    """AAPL, MSFT, SPY (stocks on SMART), EUR.USD (IDEALPRO forex), ES Dec 2026 (CME future)."""
    eur = SimContract(
        "EUR.USD", 12087792, "EUR", "CASH", "IDEALPRO", "USD",
        SymbolSpec("EUR.USD", 1.085, "0.00005", "1", mean_qty=200_000.0, volatility=0.004, weight=1.0, book_depth=20),
        local_symbol="EUR.USD", trading_class="EUR.USD", long_name="European Monetary Union Euro", market_name="EUR.USD",
        valid_exchanges="IDEALPRO", time_zone="US/Eastern", market_rule_ids="239", depth_maker="IDEALPRO", trade_exchanges=(),
    )
    es = SimContract(
        "ES 202612", 649180695, "ES", "FUT", "CME", "USD",
        SymbolSpec("ES 202612", 6000.0, "0.25", "1", mean_qty=3.0, volatility=0.008, weight=1.0, book_depth=20),
        local_symbol="ESZ6", trading_class="ES", expiry="20261218", multiplier="50", long_name="E-mini S&P 500",
        market_name="ES", valid_exchanges="CME,QBALGO", time_zone="US/Central", market_rule_ids="67", depth_maker="CME",
        trade_exchanges=("CME",),
    )
    return [
        _stock("AAPL", 265598, 227.0, "NASDAQ", "APPLE INC", weight=3.0),
        _stock("MSFT", 272093, 415.0, "NASDAQ", "MICROSOFT CORP", weight=2.0),
        _stock("SPY", 756733, 580.0, "ARCA", "SPDR S&P 500 ETF TRUST", industry="Funds", weight=2.0),
        eur,
        es,
    ]


DEFAULT_CONTRACTS = tuple(c.key for c in default_contracts())


def _generic_stock(ticker: str) -> SimContract:
    """Any other plain ticker: a stock with a stable made-up conId and price."""
    h = zlib.crc32(ticker.encode())
    return _stock(ticker, 100_000 + h % 900_000, 20.0 + h % 500, "NYSE", f"{ticker} INC", industry="Industrial")


def _msg(fields: Sequence[Any]) -> bytes:
    parts = []
    for x in fields:
        if x is None:
            parts.append("")
        elif isinstance(x, bool):
            parts.append("1" if x else "0")
        else:
            parts.append(str(x))
    body = ("\0".join(parts) + "\0").encode()
    return struct.pack(">I", len(body)) + body


def _now_text() -> str:
    return datetime.now(UTC).strftime("%Y%m%d %H:%M:%S UTC")


# -- subscriptions --------------------------------------------------------------------------------

MKT, TBT, BARS, DEPTH = "mkt", "tbt", "bars", "depth"
#: tick type ids of delayed data (after reqMarketDataType 3/4) by their live id
_DELAYED = {1: 66, 2: 67, 4: 68, 0: 69, 3: 70, 5: 71, 6: 72, 7: 73, 8: 74, 9: 75, 14: 76, 45: 88}


class _Sub:
    __slots__ = ("conn", "req_id", "kind", "contract", "generic", "snapshot", "tbt_type", "ignore_size", "what", "rows",
                 "smart", "delayed", "bids", "asks", "last_quote")

    def __init__(self, conn: SimTwsConnection, req_id: int, kind: str, contract: SimContract) -> None:
        self.conn = conn
        self.req_id = req_id
        self.kind = kind
        self.contract = contract
        self.generic: set[str] = set()
        self.snapshot = False
        self.tbt_type = ""
        self.ignore_size = False
        self.what = "TRADES"
        self.rows = 10
        self.smart = False
        self.delayed = False
        self.bids: list[tuple[int, int]] = []
        self.asks: list[tuple[int, int]] = []
        self.last_quote: tuple[int, int, int, int] | None = None


class _SymState:
    """Per-symbol day statistics and the open 5-second bar (trades, mid, bid, ask)."""

    def __init__(self, c: SimContract, start_ns: int) -> None:
        self.c = c
        self.volume = 0  # lots since the simulator started
        self.notional = 0
        self.open: int | None = None
        self.high: int | None = None
        self.low: int | None = None
        self.last: int | None = None
        self.last_lots = 0
        self.last_ts = 0
        self.close = c.spec.to_ticks(c.spec.base_price)  # "yesterday's" close
        self.bbo: tuple[int, int, int, int] = (0, 0, 0, 0)
        self.bar_start = start_ns // BAR_NS * BAR_NS
        self.t: list[int] | None = None  # TRADES o h l c of the open bar
        self.t_vol = 0
        self.t_notional = 0
        self.t_count = 0
        self.q: dict[str, list[float]] = {}  # MIDPOINT/BID/ASK o h l c (prices in ticks, mid may be .5)

    def add_trade(self, t: Any, in_bar: bool = True) -> None:
        self.volume += t.qty
        self.notional += t.price * t.qty
        self.last, self.last_lots, self.last_ts = t.price, t.qty, t.ts_ns
        self.open = t.price if self.open is None else self.open
        self.high = t.price if self.high is None else max(self.high, t.price)
        self.low = t.price if self.low is None else min(self.low, t.price)
        if not in_bar:
            return
        if self.t is None:
            self.t = [t.price, t.price, t.price, t.price]
        else:
            b = self.t
            b[1], b[2], b[3] = max(b[1], t.price), min(b[2], t.price), t.price
        self.t_vol += t.qty
        self.t_notional += t.price * t.qty
        self.t_count += 1

    def quote_values(self) -> dict[str, float]:
        bb, _, ba, _ = self.bbo
        if not bb or not ba:
            return {}
        return {"BID": float(bb), "ASK": float(ba), "MIDPOINT": (bb + ba) / 2}

    def start_quote_bar(self) -> None:
        self.q = {k: [v, v, v, v] for k, v in self.quote_values().items()}

    def update_quote_bar(self) -> None:
        for k, v in self.quote_values().items():
            b = self.q.get(k)
            if b is None:
                self.q[k] = [v, v, v, v]
            else:
                b[1] = max(b[1], v)
                b[2] = min(b[2], v)
                b[3] = v


# -- connections ----------------------------------------------------------------------------------


class SimTwsConnection:
    """One client socket: the handshake state, its subscriptions, accounting and faults."""

    _ids = itertools.count(1)

    def __init__(self, server: IbkrSimulator, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.id = next(self._ids)
        self.reader = reader
        self.writer = writer
        self.server_version = 0
        self.client_version_range: tuple[int, int] = (0, 0)
        self.client_id: int | None = None
        self.api_started = False
        self.subs: dict[int, _Sub] = {}
        self.md_type = 1
        self.stalled = False
        self.closed = False
        self.sent = 0
        self.dropped_while_stalled = 0
        self.malformed_sent = 0
        self.received: list[list[str]] = []  # every message the client sent, as fields
        self.opened_at = time.monotonic()
        self._tasks: list[asyncio.Task] = []

    def __repr__(self) -> str:
        return f"<SimTwsConnection #{self.id} client {self.client_id} v{self.server_version}>"

    @property
    def _queue(self) -> int:
        """Bytes written but not yet sent (``replay serve`` waits for every client's to drain)."""
        return 0 if self.closed else self.writer.transport.get_write_buffer_size()

    def send(self, *fields: Any) -> bool:
        if self.closed:
            return False
        if self.stalled:
            self.dropped_while_stalled += 1
            return False
        self.writer.write(_msg(fields))
        self.sent += 1
        faults = self.server.faults
        if faults.malformed_every and self.api_started and self.sent % faults.malformed_every == 0:
            self.send_malformed()
        if faults.drop_after is not None and self.sent >= faults.drop_after:
            self.drop()
            return False
        return True

    def error(self, req_id: int, code: int, text: str) -> None:
        self.send(4, 2, req_id, code, text, "")

    def send_malformed(self) -> None:
        """A TICK_PRICE cut short (a client must survive it and lose nothing else)."""
        if not self.closed and not self.stalled:
            self.writer.write(_msg([1, 6]))
            self.malformed_sent += 1

    def drop(self) -> None:
        """Abort the TCP connection (no FIN handshake, like a crashed Gateway)."""
        if not self.closed:
            self.closed = True
            self.writer.transport.abort()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(Exception):
                self.writer.close()

    def stall(self) -> None:
        """Stop sending anything (the socket stays open): what a hung Gateway looks like."""
        self.stalled = True

    def resume(self) -> None:
        self.stalled = False


# -- the server -----------------------------------------------------------------------------------


class _ScaledFeed(MarketFeed):
    """The synthetic market on a clock ``speed`` times faster than the wall clock."""

    def __init__(self, market: SyntheticMarket, tick: float, warmup: float, speed: float) -> None:
        super().__init__(market, tick=tick, warmup=warmup)
        self.speed = speed
        self._off0 = 0

    def prepare(self) -> None:
        if self.market.t0_ns is None or self.market.seq == 0:
            self.market.start(time.time_ns() - int(self.warmup * 1e9))
        self._mono0 = time.monotonic()
        self._off0 = time.time_ns() - self.market.t0_ns  # type: ignore[operator]
        self.market.advance(self._off0)

    def now_offset_ns(self) -> int:
        return self._off0 + int((time.monotonic() - self._mono0) * 1e9 * self.speed)


class IbkrSimulator:
    """A simulated TWS / IB Gateway (TWS API server version 178) on loopback."""

    venue = "ibkr"
    default_port = 4002  # an IB Gateway in paper mode
    serves_sent_frames = True  # replay: recorded requests map recorded request ids (publish_recorded)

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
        symbols: Iterable[str | SimContract] | None = None,
        rate: float = 100.0,
        market: SyntheticMarket | None = None,
        feed: Feed | None = None,
        tick: float = 0.01,
        warmup: float = 2.0,
        speed: float = 1.0,
        faults: Faults | None = None,
        accounts: Sequence[str] = ("DU1234567",),
        next_valid_id: int = 1,
        no_permission: Iterable[str] = (),
        max_market_data_lines: int = 100,
        max_tick_by_tick: int = 5,
        max_depth_requests: int = 3,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        known = {c.key: c for c in default_contracts()}
        chosen: list[SimContract] = []
        for s in symbols if symbols is not None else known:
            if isinstance(s, SimContract):
                chosen.append(s)
                continue
            name = s.strip().upper()
            if name in known:
                chosen.append(known[name])
            elif name.isalnum() and len(name) <= 6:
                chosen.append(_generic_stock(name))
            else:
                raise ValueError(f"ibkr simulator: unknown symbol {s!r} (known: {', '.join(known)}, or any plain stock ticker)")
        if not chosen:
            raise ValueError("ibkr simulator: no symbols")
        self.host = host
        self.port = port
        self.contracts: dict[str, SimContract] = {c.key: c for c in chosen}
        self.by_con_id: dict[int, SimContract] = {c.con_id: c for c in chosen}
        self.market = market or SyntheticMarket(seed=seed, symbols=[c.spec for c in chosen], rate=rate)
        self._hist_asked: dict[tuple, float] = {}  # historical requests by their parameters: pacing
        self.feed = feed or _ScaledFeed(self.market, tick=tick, warmup=warmup, speed=speed)
        self.faults = faults or Faults()
        if not accounts:
            raise ValueError("ibkr simulator: at least one account (ib_async waits for a non-empty list)")
        self.accounts = list(accounts)
        self.next_valid_id = next_valid_id
        if isinstance(no_permission, str):  # the CLI's comma-separated list
            no_permission = no_permission.split(",")
        self.no_permission: set[str] = {s.strip().upper() for s in no_permission if s.strip()}
        self.max_market_data_lines = max_market_data_lines
        self.max_tick_by_tick = max_tick_by_tick
        self.max_depth_requests = max_depth_requests
        self.ib_connected = True  # False between connectivity_lost() and connectivity_restored()
        self.farm_ok = True
        self.connections: set[SimTwsConnection] = set()
        self.history: list[SimTwsConnection] = []
        self._subs: dict[str, set[_Sub]] = {}
        self._state: dict[str, _SymState] = {}
        self._refuse: dict[str, list[tuple[int, str]]] = {}
        self._server: asyncio.AbstractServer | None = None
        self._feed_task: asyncio.Task | None = None
        self._conn_waiters: list[asyncio.Future] = []
        self._recorded_reqs: dict[int, tuple[str, str, str]] = {}  # recorded request id -> (contract key, kind, detail)

    # -- lifecycle ----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """``host:port``, what ``DataStream(endpoints={"ibkr": ...})`` takes."""
        return f"{self.host}:{self.port}"

    address = url

    def now_ns(self) -> int:
        feed = self.feed
        return feed.now_ns() if isinstance(feed, MarketFeed) else time.time_ns()

    async def start(self) -> str:
        if self._server is not None:
            return self.url
        if isinstance(self.feed, MarketFeed):
            self.feed.prepare()
        now = self.now_ns()
        for key, c in self.contracts.items():
            st = self._state[key] = _SymState(c, now)
            if key in self.market.specs:
                st.bbo = self.market.book(key).best()
                st.start_quote_bar()
                for t in self.market.trades(key):  # the warmup's trades: day statistics, the open bar
                    st.add_trade(t, in_bar=t.ts_ns >= st.bar_start)
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        if self.feed is not None:
            self._feed_task = asyncio.create_task(self.feed.run(self), name="ibkr-sim-feed")  # type: ignore[arg-type]
        log.info("ibkr simulator (TWS API server version %d) on %s", SERVER_VERSION, self.url)
        return self.url

    async def stop(self) -> None:
        if self._feed_task is not None:
            self._feed_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._feed_task
            self._feed_task = None
        if self._server is not None:
            self._server.close()
            for conn in list(self.connections):
                conn.drop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    async def __aenter__(self) -> IbkrSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait_for_connections(self, n: int = 1, timeout: float = 5.0) -> list[SimTwsConnection]:
        """Wait until ``n`` connections have started the API in total (tests)."""
        async with asyncio.timeout(timeout):
            while sum(1 for c in self.history if c.api_started) < n:
                fut = asyncio.get_running_loop().create_future()
                self._conn_waiters.append(fut)
                await fut
        return [c for c in self.history if c.api_started][:n]

    @staticmethod
    def cli_options() -> list:
        import click

        return [
            click.Option(["--speed"], type=float, default=1.0, show_default=True, help="Market clock speed (x wall clock)."),
            click.Option(["--warmup"], type=float, default=2.0, show_default=True, help="Market seconds generated before start."),
            click.Option(["--no-permission"], "no_permission", default="", help="Comma-separated symbols without data permission."),
            click.Option(["--max-tick-by-tick"], type=int, default=5, show_default=True, help="Tick-by-tick streams before 10190."),
        ]

    # -- faults ----------------------------------------------------------------------------------
    def broadcast_error(self, req_id: int, code: int, text: str) -> None:
        for conn in list(self.connections):
            if conn.api_started:
                conn.error(req_id, code, text)

    def send_error(self, code: int, text: str, req_id: int = -1) -> None:
        """Send any error or notice code to every connection."""
        self.broadcast_error(req_id, code, text)

    def connectivity_lost(self) -> None:
        """1100: TWS lost its connection to IB; sockets stay open, market data stops."""
        self.ib_connected = False
        self.broadcast_error(-1, 1100, "Connectivity between IB and Trader Workstation has been lost.")

    def connectivity_restored(self, data_lost: bool = False) -> None:
        """1102 (subscriptions kept, data resumes) or 1101 (every subscription forgotten)."""
        self.ib_connected = True
        if data_lost:
            for conn in list(self.connections):
                for req_id in list(conn.subs):
                    self._remove_sub(conn, req_id)
            self.broadcast_error(-1, 1101, "Connectivity between IB and Trader Workstation has been restored - data lost.")
        else:
            self.broadcast_error(-1, 1102, "Connectivity between IB and Trader Workstation has been restored - data maintained.")

    def farm_broken(self, farm: str = "usfarm") -> None:
        self.farm_ok = False
        self.broadcast_error(-1, 2103, f"Market data farm connection is broken:{farm}")

    def farm_restored(self, farm: str = "usfarm") -> None:
        self.farm_ok = True
        self.broadcast_error(-1, 2104, f"Market data farm connection is OK:{farm}")

    def set_rest_override(self, path: str, body: bytes | None, status: int = 200) -> None:
        """TWS has no REST side: recorded REST answers (none for IBKR) are ignored."""

    def freeze(self) -> None:
        """Stop the market clock: no events, no bars (a halted market; tests compare books at rest)."""
        if self._feed_task is not None:
            self._feed_task.cancel()
            self._feed_task = None

    def unfreeze(self) -> None:
        """Restart the market clock (the events of the frozen time come in one burst)."""
        if self._feed_task is None and self._server is not None and self.feed is not None:
            self._feed_task = asyncio.create_task(self.feed.run(self), name="ibkr-sim-feed")  # type: ignore[arg-type]

    def refuse_next(self, kind: str, code: int, text: str, n: int = 1) -> None:
        """The next ``n`` requests of ``kind`` (``mkt``, ``tbt``, ``bars``, ``depth``, ``details``) get this error."""
        if kind not in (MKT, TBT, BARS, DEPTH, "details"):
            raise ValueError(f"unknown request kind {kind!r}")
        self._refuse.setdefault(kind, []).extend([(code, text)] * n)

    def drop_all(self) -> None:
        for conn in list(self.connections):
            conn.drop()

    def stall_all(self) -> None:
        for conn in list(self.connections):
            conn.stall()

    def resume_all(self) -> None:
        for conn in list(self.connections):
            conn.resume()

    def subscriptions(self) -> list[tuple[int, int, str, str]]:
        """(connection id, request id, kind, symbol) of every live subscription (tests)."""
        return sorted((s.conn.id, s.req_id, s.kind, s.contract.key) for subs in self._subs.values() for s in subs)

    # -- the socket ------------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = SimTwsConnection(self, reader, writer)
        self.connections.add(conn)
        self.history.append(conn)
        if self.faults.lifetime:
            conn._tasks.append(asyncio.create_task(self._lifetime(conn, self.faults.lifetime)))
        try:
            if await reader.readexactly(4) != b"API\0":
                log.info("ibkr sim: connection %d did not start with API\\0; closing", conn.id)
                return
            (n,) = struct.unpack(">I", await reader.readexactly(4))
            text = (await reader.readexactly(n)).decode(errors="replace")
            lo, hi = self._version_range(text)
            conn.client_version_range = (lo, hi)
            if lo > SERVER_VERSION or hi < MIN_CLIENT_VERSION:
                log.info("ibkr sim: client versions %s not served (server version %d); closing", text, SERVER_VERSION)
                return
            conn.server_version = min(hi, SERVER_VERSION)
            conn.send(conn.server_version, _now_text())
            while not conn.closed:
                (n,) = struct.unpack(">I", await reader.readexactly(4))
                body = await reader.readexactly(n)
                fields = body.decode(errors="backslashreplace").split("\0")
                if fields and fields[-1] == "":
                    fields.pop()
                if not fields:
                    continue
                conn.received.append(fields)
                try:
                    self._dispatch(conn, fields)
                except (IndexError, ValueError) as e:
                    log.warning("ibkr sim: connection %d: bad request %r: %s", conn.id, fields[:4], e)
                    conn.error(-1, 320, f"Error reading request. {e}")
                with contextlib.suppress(ConnectionError):
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, struct.error):
            pass
        except ValueError as e:  # not the TWS API handshake
            log.info("ibkr sim: connection %d: %s; closing", conn.id, e)
        finally:
            for t in conn._tasks:
                t.cancel()
            for req_id in list(conn.subs):
                self._remove_sub(conn, req_id)
            self.connections.discard(conn)
            conn.close()

    @staticmethod
    def _version_range(text: str) -> tuple[int, int]:
        v = text.split(" ", 1)[0]
        if not v.startswith("v"):
            raise ValueError(f"bad version range {text!r}")
        lo, _, hi = v[1:].partition("..")
        return int(lo), int(hi or lo)

    async def _lifetime(self, conn: SimTwsConnection, seconds: float) -> None:
        await asyncio.sleep(seconds)
        conn.close()

    # -- requests --------------------------------------------------------------------------------
    def _dispatch(self, conn: SimTwsConnection, f: list[str]) -> None:
        mid = int(f[0])
        if mid == 71:  # START_API: version, clientId, optCapab
            self._start_api(conn, int(f[2]))
            return
        if not conn.api_started:
            return  # TWS ignores requests before START_API
        handler = self._handlers.get(mid)
        if handler is not None:
            handler(self, conn, f)
        else:
            log.debug("ibkr sim: connection %d: message %d not simulated: %r", conn.id, mid, f[:6])

    def _start_api(self, conn: SimTwsConnection, client_id: int) -> None:
        conn.client_id = client_id
        if any(c is not conn and c.api_started and not c.closed and c.client_id == client_id for c in self.connections):
            conn.error(-1, 326, "Unable to connect as the client id is already in use. Retry with a unique client id.")
            conn.close()
            return
        conn.api_started = True
        conn.send(15, 1, ",".join(self.accounts))
        conn.send(9, 1, self.next_valid_id)
        conn.error(-1, 2104, "Market data farm connection is OK:usfarm")
        conn.error(-1, 2106, "HMDS data farm connection is OK:ushmds")
        conn.error(-1, 2158, "Sec-def data farm connection is OK:secdefnj")
        for fut in self._conn_waiters:
            if not fut.done():
                fut.set_result(None)
        self._conn_waiters.clear()

    def _refused(self, conn: SimTwsConnection, kind: str, req_id: int) -> bool:
        queue = self._refuse.get(kind)
        if queue:
            code, text = queue.pop(0)
            conn.error(req_id, code, text)
            return True
        return False

    def _match(self, f: list[str]) -> list[SimContract]:
        """The contracts a 12-field contract block names."""
        con_id = int(f[0] or 0)
        if con_id:
            c = self.by_con_id.get(con_id)
            return [c] if c is not None else []
        symbol, sec, expiry, exchange, currency, local = f[1].upper(), f[2].upper(), f[3], f[7].upper(), f[9].upper(), f[10].upper()
        primary, trading_class, multiplier = f[8].upper(), f[11].upper(), f[6]
        out = []
        for c in self.contracts.values():
            if symbol and c.symbol != symbol and c.local_symbol.upper() != symbol:
                continue
            if not symbol and (not local or c.local_symbol.upper() != local):
                continue
            if local and c.local_symbol.upper() != local:
                continue
            if sec and c.sec_type != sec:
                continue
            if currency and c.currency != currency:
                continue
            if exchange and exchange not in (c.exchange, c.primary_exchange) and exchange not in c.valid_exchanges.split(","):
                continue
            if expiry and not c.expiry.startswith(expiry):
                continue
            if primary and c.primary_exchange != primary:
                continue
            if trading_class and c.trading_class.upper() != trading_class:
                continue
            if multiplier and c.multiplier != multiplier:
                continue
            out.append(c)
        return out

    def _one(self, conn: SimTwsConnection, req_id: int, f: list[str]) -> SimContract | None:
        found = self._match(f)
        if len(found) != 1:
            conn.error(req_id, 200, "No security definition has been found for the request")
            return None
        return found[0]

    def _permitted(self, c: SimContract) -> bool:
        return c.key not in self.no_permission and c.symbol not in self.no_permission

    def _add_sub(self, sub: _Sub) -> None:
        sub.conn.subs[sub.req_id] = sub
        self._subs.setdefault(sub.contract.key, set()).add(sub)

    def _remove_sub(self, conn: SimTwsConnection, req_id: int) -> _Sub | None:
        sub = conn.subs.pop(req_id, None)
        if sub is not None:
            subs = self._subs.get(sub.contract.key)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[sub.contract.key]
        return sub

    def _count(self, kind: str) -> int:
        return sum(1 for subs in self._subs.values() for s in subs if s.kind == kind)

    def _duplicate(self, conn: SimTwsConnection, req_id: int) -> bool:
        if req_id in conn.subs:
            conn.error(req_id, 322, f"Error processing request.-'bX' : cause - Duplicate ticker id:{req_id}")
            return True
        return False

    # market data
    def _req_mkt_data(self, conn: SimTwsConnection, f: list[str]) -> None:
        req_id = int(f[2])
        cf = f[3:15]
        i = 15
        if cf[2].upper() == "BAG":
            i += 1 + 4 * int(f[i] or 0)
        if f[i] == "1":
            i += 3
        generic, snapshot = f[i + 1], f[i + 2] == "1"
        if self._duplicate(conn, req_id) or self._refused(conn, MKT, req_id):
            return
        c = self._one(conn, req_id, cf)
        if c is None:
            return
        delayed = False
        if not self._permitted(c):
            if conn.md_type in (3, 4):
                delayed = True
                conn.error(req_id, 10167, "Requested market data is not subscribed. Displaying delayed market data.")
            else:
                conn.error(req_id, 354, "Requested market data is not subscribed. Check API status by selecting the Account "
                                        "menu then under Management choose Market Data Subscription Manager and/or "
                                        "Delayed Market Data Subscription Manager.")
                return
        if not snapshot and self._count(MKT) >= self.max_market_data_lines:
            conn.error(req_id, 101, "Max number of tickers has been reached.")
            return
        sub = _Sub(conn, req_id, MKT, c)
        sub.generic = {g.strip() for g in generic.split(",") if g.strip()}
        sub.snapshot = snapshot
        sub.delayed = delayed
        conn.send(81, req_id, c.min_tick, "9c0001", 3)
        conn.send(58, 1, req_id, 3 if delayed else 1)
        self._mkt_initial(sub)
        if snapshot:
            conn.send(57, 1, req_id)
        else:
            self._add_sub(sub)

    def _cancel_mkt_data(self, conn: SimTwsConnection, f: list[str]) -> None:
        req_id = int(f[2])
        sub = conn.subs.get(req_id)
        if sub is None or sub.kind != MKT:
            conn.error(req_id, 300, f"Can't find EId with tickerId:{req_id}")
            return
        self._remove_sub(conn, req_id)

    def _req_tick_by_tick(self, conn: SimTwsConnection, f: list[str]) -> None:
        req_id = int(f[1])
        cf, tick_type, ignore_size = f[2:14], f[14], f[16] == "1"
        if self._duplicate(conn, req_id) or self._refused(conn, TBT, req_id):
            return
        c = self._one(conn, req_id, cf)
        if c is None:
            return
        if tick_type not in ("Last", "AllLast", "BidAsk", "MidPoint"):
            conn.error(req_id, 10189, f"Failed to request tick-by-tick data.Invalid tick type {tick_type}")
            return
        if c.sec_type == "CASH" and tick_type in ("Last", "AllLast"):
            conn.error(req_id, 10189, "Failed to request tick-by-tick data.No trades for this contract")
            return
        if not self._permitted(c):
            conn.error(req_id, 10089, "Requested market data requires additional subscription for API. See link in "
                                      "'Market Data Connections' dialog for more details.")
            return
        if self._count(TBT) >= self.max_tick_by_tick:
            conn.error(req_id, 10190, "Max number of tick-by-tick requests has been reached.")
            return
        sub = _Sub(conn, req_id, TBT, c)
        sub.tbt_type = tick_type
        sub.ignore_size = ignore_size
        self._add_sub(sub)
        if tick_type in ("BidAsk", "MidPoint") and self._flowing():
            self._tbt_quote(sub, self._state[c.key], self.now_ns(), initial=True)

    def _cancel_tick_by_tick(self, conn: SimTwsConnection, f: list[str]) -> None:
        self._remove_sub(conn, int(f[1]))

    def _req_real_time_bars(self, conn: SimTwsConnection, f: list[str]) -> None:
        req_id = int(f[2])
        cf, bar_size, what = f[3:15], f[15], f[16].upper()
        if self._duplicate(conn, req_id) or self._refused(conn, BARS, req_id):
            return
        c = self._one(conn, req_id, cf)
        if c is None:
            return
        if bar_size != "5":
            conn.error(req_id, 420, f"Invalid Real-time Query:Only 5 second bars are supported, not {bar_size}")
            return
        if what not in ("TRADES", "MIDPOINT", "BID", "ASK") or (what == "TRADES" and c.sec_type == "CASH"):
            conn.error(req_id, 420, f"Invalid Real-time Query:Invalid whatToShow {what} for {c.sec_type}")
            return
        if not self._permitted(c):
            conn.error(req_id, 420, f"Invalid Real-time Query:No market data permissions for {c.primary_exchange or c.exchange} {c.sec_type}")
            return
        sub = _Sub(conn, req_id, BARS, c)
        sub.what = what
        self._add_sub(sub)

    def _cancel_real_time_bars(self, conn: SimTwsConnection, f: list[str]) -> None:
        self._remove_sub(conn, int(f[2]))

    def _req_mkt_depth(self, conn: SimTwsConnection, f: list[str]) -> None:
        req_id = int(f[2])
        cf, rows, smart = f[3:15], int(f[15] or 5), f[16] == "1"
        if self._duplicate(conn, req_id) or self._refused(conn, DEPTH, req_id):
            return
        c = self._one(conn, req_id, cf)
        if c is None:
            return
        if not self._permitted(c):
            conn.error(req_id, 354, "Requested market data is not subscribed.")
            return
        if self._count(DEPTH) >= self.max_depth_requests:
            conn.error(req_id, 309, "Max number of market depth requests has been reached.")
            return
        sub = _Sub(conn, req_id, DEPTH, c)
        sub.rows = max(1, min(rows, c.spec.book_depth))
        sub.smart = smart
        self._add_sub(sub)
        if self._flowing():
            self._depth_update(sub)

    def _cancel_mkt_depth(self, conn: SimTwsConnection, f: list[str]) -> None:
        self._remove_sub(conn, int(f[2]))

    def _req_contract_details(self, conn: SimTwsConnection, f: list[str]) -> None:
        req_id = int(f[2])
        if self._refused(conn, "details", req_id):
            return
        found = self._match(f[3:15])
        if not found:
            conn.error(req_id, 200, "No security definition has been found for the request")
            return
        for c in found:
            conn.send(*self._contract_data(req_id, c))
        conn.send(52, 1, req_id)

    def _contract_data(self, req_id: int, c: SimContract) -> list[Any]:
        # CONTRACT_DATA at server version 178 (>= 164: no version field; see ib_async decoder.contractDetails)
        return [
            10, req_id, c.symbol, c.sec_type, c.expiry, "0", "", c.exchange, c.currency, c.local_symbol, c.market_name,
            c.trading_class, c.con_id, c.min_tick, c.multiplier,
            "ACTIVETIM,AD,ADJUST,ALERT,ALGO,ALLOC,AVGCOST,BASKET,DAY,GAT,GTC,GTD,IOC,LIT,LMT,MIT,MKT,MOC,MOO,REL,STP,STPLMT,TRAIL",
            c.valid_exchanges, 1, 0, c.long_name, c.primary_exchange, c.expiry[:6], c.industry, c.category, c.subcategory,
            c.time_zone, "", "", "", "",
            1, "ISIN", f"XX{c.con_id:010d}",
            1, "", "", ",".join([c.market_rule_ids] * len(c.valid_exchanges.split(","))), c.expiry, c.stock_type,
            "1" if c.sec_type != "CASH" else "0.01", "1" if c.sec_type != "CASH" else "0.01", "100" if c.sec_type == "STK" else "1",
        ]

    # the rest of the startup handshake and small requests
    def _simple(self, conn: SimTwsConnection, f: list[str]) -> None:
        mid = int(f[0])
        if mid == 61:
            conn.send(62, 1)  # positionEnd: no positions
        elif mid == 5 or mid == 16:
            conn.send(53, 1)  # openOrderEnd
        elif mid == 99:
            conn.send(102)  # completedOrdersEnd (no version field)
        elif mid == 6:
            if f[2] == "1":
                conn.send(54, 1, f[3] or self.accounts[0])  # accountDownloadEnd
        elif mid == 76:
            conn.send(74, 1, f[2])  # accountUpdateMultiEnd
        elif mid == 7:
            conn.send(55, 1, f[2])  # execDetailsEnd
        elif mid == 62:
            conn.send(64, 1, f[2])  # accountSummaryEnd
        elif mid == 17:
            conn.send(15, 1, ",".join(self.accounts))
        elif mid == 8:
            conn.send(9, 1, self.next_valid_id)
        elif mid == 49:
            conn.send(49, 1, self.now_ns() // NS)
        elif mid == 59:
            conn.md_type = int(f[2])

    # historical ticks
    #: the plan includes historical data (False: every request gets 162, no permissions)
    historical_ticks = True
    #: the same historical request again within this many seconds is a pacing violation (IB: 15)
    hist_identical_s = 15.0

    def _req_historical_ticks(self, conn: SimTwsConnection, f: list[str]) -> None:
        from datetime import UTC, datetime

        req_id = int(f[1])
        cf = f[2:14]
        start, end, what = f[15], f[16], f[18]
        c = self._one(conn, req_id, cf)
        if c is None:
            return
        if not self.historical_ticks or not self._permitted(c):
            conn.error(req_id, 162, f"Historical Market Data Service error message:No market data permissions for "
                                    f"{c.primary_exchange or c.exchange} {c.sec_type}")
            return
        if what != "TRADES" or c.sec_type == "CASH":
            conn.error(req_id, 162, "Historical Market Data Service error message:No data of type TRADES is available")
            return
        key = (c.key, start, end, f[17], what, f[19])
        now = time.monotonic()
        seen = self._hist_asked.get(key)
        self._hist_asked[key] = now
        if seen is not None and now - seen < self.hist_identical_s:
            conn.error(req_id, 162, "Historical Market Data Service error message:Historical data request pacing violation")
            return
        try:
            n = max(1, min(1000, int(f[17] or 0)))
            text = (start or end).replace(" UTC", "").strip()
            at = datetime.strptime(text, "%Y%m%d-%H:%M:%S" if "-" in text else "%Y%m%d %H:%M:%S").replace(tzinfo=UTC)
        except ValueError:
            conn.error(req_id, 321, f"Error validating request.-'bP' : cause - Invalid date format {start or end!r}")
            return
        at_ns = int(at.timestamp()) * NS
        if start:
            trades = self.market.trades_in(c.key, at_ns)
            picked = trades[:n]
            if picked:  # the rest of the last second too (TWS: "to finish the last second")
                last = picked[-1].ts_ns // NS
                picked += [t for t in trades[n:] if t.ts_ns // NS == last]
        else:
            trades = self.market.trades_in(c.key, None, at_ns + NS)
            picked = trades[-n:]
            if picked:
                first = picked[0].ts_ns // NS
                picked = [t for t in trades[: len(trades) - len(picked)] if t.ts_ns // NS == first] + picked
        exchanges = c.trade_exchanges or (c.exchange,)
        rows: list[Any] = []
        for t in picked:
            rows += [t.ts_ns // NS, 0, c.spec.fmt_price(t.price), c.spec.fmt_qty(t.qty), exchanges[t.trade_id % len(exchanges)], ""]
        conn.send(98, req_id, len(picked), *rows, 1)

    _handlers = {
        96: _req_historical_ticks,
        1: _req_mkt_data,
        2: _cancel_mkt_data,
        9: _req_contract_details,
        10: _req_mkt_depth,
        11: _cancel_mkt_depth,
        50: _req_real_time_bars,
        51: _cancel_real_time_bars,
        97: _req_tick_by_tick,
        98: _cancel_tick_by_tick,
        5: _simple, 6: _simple, 7: _simple, 8: _simple, 16: _simple, 17: _simple, 49: _simple, 59: _simple, 61: _simple,
        62: _simple, 76: _simple, 99: _simple,
    }

    # -- recorded messages (replay) -------------------------------------------------------------------
    #: position of the request id in the server messages a recording replays
    _RECORDED_REQ_POS = {"1": 2, "2": 2, "45": 2, "46": 2, "50": 2, "12": 2, "13": 2, "57": 2, "58": 2, "81": 1, "99": 1, "4": 2}
    _TBT_FAMILY = {"Last": "trades", "AllLast": "trades", "BidAsk": "BidAsk", "MidPoint": "MidPoint"}

    def publish_recorded(self, frame: RecordedFrame) -> None:
        """Serve one recorded TWS message (a ``raw`` row's fields) to today's subscribers.

        Request ids differ between the recording and the client being served, so the
        recording's own requests are passed too, with ``frame.stream == "out"``: they are
        learned (which contract and kind each recorded id stood for), never sent. A
        recorded market data, tick-by-tick, bar or depth message then goes to every
        subscription of the same contract and kind with the subscriber's request id in
        place of the recorded one; connection-level notices (1100, 1102, farms) go to
        every client; account and handshake messages are the simulator's own business.
        """
        fields = frame.payload.decode(errors="backslashreplace").split("\0")
        if fields and fields[-1] == "":
            fields.pop()
        if not fields:
            return
        if frame.stream == "out":
            self._learn_recorded(fields)
            return
        pos = self._RECORDED_REQ_POS.get(fields[0])
        if pos is None or len(fields) <= pos:
            return
        try:
            rid = int(fields[pos])
        except ValueError:
            return
        if fields[0] == "4" and rid < 0:
            for conn in list(self.connections):
                if conn.api_started:
                    conn.send(*fields)
            return
        target = self._recorded_reqs.get(rid)
        if target is None:
            return
        key, kind, detail = target
        if kind == TBT and fields[0] == "99":  # the message's own tick type decides the family
            detail = {"1": "trades", "2": "trades", "3": "BidAsk", "4": "MidPoint"}.get(fields[2], detail)
        for sub in list(self._subs.get(key, ())):
            if sub.kind != kind or sub.conn.closed:
                continue
            if kind == TBT and self._TBT_FAMILY.get(sub.tbt_type) != detail:
                continue
            if kind == BARS and sub.what != detail:
                continue
            out = list(fields)
            out[pos] = str(sub.req_id)
            sub.conn.send(*out)

    def _learn_recorded(self, f: list[str]) -> None:
        try:
            mid = f[0]
            if mid in ("1", "50", "10"):
                rid, cf = int(f[2]), f[3:15]
            elif mid == "97":
                rid, cf = int(f[1]), f[2:14]
            else:
                if mid in ("2", "51", "11"):
                    self._recorded_reqs.pop(int(f[2]), None)
                elif mid == "98":
                    self._recorded_reqs.pop(int(f[1]), None)
                return
            found = self._match(cf)
            if len(found) != 1:
                log.info("ibkr sim: recorded request %s for an unknown contract %r: its messages are skipped", rid, cf[:3])
                return
            kind, detail = {"1": (MKT, ""), "50": (BARS, f[16].upper() if len(f) > 16 else "TRADES"), "10": (DEPTH, ""),
                            "97": (TBT, self._TBT_FAMILY.get(f[14], f[14]) if len(f) > 14 else "")}[mid]
            self._recorded_reqs[rid] = (found[0].key, kind, detail)
        except (IndexError, ValueError) as e:
            log.info("ibkr sim: cannot read recorded request %r: %s", f[:3], e)

    # -- market data out ---------------------------------------------------------------------------
    def _flowing(self) -> bool:
        return self.ib_connected and self.farm_ok

    def _mkt_initial(self, sub: _Sub) -> None:
        st = self._state[sub.contract.key]
        spec = sub.contract.spec
        send, rid = sub.conn.send, sub.req_id
        tt = _DELAYED.__getitem__ if sub.delayed else int
        sub.last_quote = st.bbo
        if not self._flowing():
            return
        bb, bq, ba, aq = st.bbo
        if bb:
            send(1, 6, rid, tt(1), spec.fmt_price(bb), spec.fmt_qty(bq), 0)
        if ba:
            send(1, 6, rid, tt(2), spec.fmt_price(ba), spec.fmt_qty(aq), 0)
        if sub.contract.sec_type != "CASH" and st.last is not None:
            send(1, 6, rid, tt(4), spec.fmt_price(st.last), spec.fmt_qty(st.last_lots), 0)
            send(2, 6, rid, tt(8), spec.fmt_qty(st.volume))
            send(46, 6, rid, tt(45), st.last_ts // NS)
        for tick, value in ((6, st.high), (7, st.low), (9, st.close), (14, st.open)):
            if value is not None:
                send(1, 6, rid, tt(tick), spec.fmt_price(value), 0, 0)
        send(45, 6, rid, 49, 0)  # not halted

    def on_clock(self, now_ns: int) -> None:
        for st in self._state.values():
            self._roll_bars(st, now_ns)

    def on_market_events(self, events: list[MarketEvent]) -> None:
        flowing = self._flowing()
        for e in events:
            st = self._state.get(e.symbol)
            if st is None:
                continue
            self._roll_bars(st, e.ts_ns)
            for t in e.trades:
                st.add_trade(t)
            if e.bbo_changed:
                st.bbo = e.bbo
                st.update_quote_bar()
            subs = self._subs.get(e.symbol)
            if not subs or not flowing:
                continue
            for sub in list(subs):
                if sub.conn.closed:
                    continue
                if sub.kind == MKT:
                    self._mkt_event(sub, st, e)
                elif sub.kind == TBT:
                    if sub.tbt_type in ("Last", "AllLast"):
                        for t in e.trades:
                            self._tbt_trade(sub, t)
                    elif e.bbo_changed:
                        self._tbt_quote(sub, st, e.ts_ns)
                elif sub.kind == DEPTH and (e.bids or e.asks):
                    self._depth_update(sub)

    def _mkt_event(self, sub: _Sub, st: _SymState, e: MarketEvent) -> None:
        spec = sub.contract.spec
        send, rid = sub.conn.send, sub.req_id
        tt = _DELAYED.__getitem__ if sub.delayed else int
        if e.bbo_changed and sub.last_quote != st.bbo:
            ob, obq, oa, oaq = sub.last_quote or (0, 0, 0, 0)
            bb, bq, ba, aq = st.bbo
            if bb != ob:  # price and size together; an emptied side is price -1, size 0
                send(1, 6, rid, tt(1), spec.fmt_price(bb) if bb else "-1", spec.fmt_qty(bq) if bb else 0, 0)
            elif bq != obq:
                send(2, 6, rid, tt(0), spec.fmt_qty(bq))
            if ba != oa:
                send(1, 6, rid, tt(2), spec.fmt_price(ba) if ba else "-1", spec.fmt_qty(aq) if ba else 0, 0)
            elif aq != oaq:
                send(2, 6, rid, tt(3), spec.fmt_qty(aq))
            sub.last_quote = st.bbo
        if not e.trades or sub.contract.sec_type == "CASH":
            return
        for t in e.trades:
            if "233" in sub.generic and not sub.delayed:
                vwap = st.notional / st.volume * spec.price(1) if st.volume else 0.0
                send(46, 6, rid, 48, f"{spec.fmt_price(t.price)};{spec.fmt_qty(t.qty)};{t.ts_ns // 1_000_000};"
                                     f"{spec.fmt_qty(st.volume)};{vwap:.{spec.price_decimals + 4}f};true")
            send(1, 6, rid, tt(4), spec.fmt_price(t.price), spec.fmt_qty(t.qty), 0)
        send(2, 6, rid, tt(8), spec.fmt_qty(st.volume))
        send(46, 6, rid, tt(45), st.last_ts // NS)

    def _tbt_trade(self, sub: _Sub, t: Any) -> None:
        c = sub.contract
        exchanges = c.trade_exchanges or (c.exchange,)
        sub.conn.send(99, sub.req_id, 2 if sub.tbt_type == "AllLast" else 1, t.ts_ns // NS, c.spec.fmt_price(t.price),
                      c.spec.fmt_qty(t.qty), 0, exchanges[t.trade_id % len(exchanges)], "")

    def _tbt_quote(self, sub: _Sub, st: _SymState, ts_ns: int, initial: bool = False) -> None:
        bb, bq, ba, aq = st.bbo
        if not bb or not ba:
            return
        last = sub.last_quote
        spec = sub.contract.spec
        if sub.tbt_type == "BidAsk":
            if not initial and last is not None and sub.ignore_size and (last[0], last[2]) == (bb, ba):
                return
            sub.conn.send(99, sub.req_id, 3, ts_ns // NS, spec.fmt_price(bb), spec.fmt_price(ba), spec.fmt_qty(bq),
                          spec.fmt_qty(aq), 0)
        else:  # MidPoint
            if not initial and last is not None and last[0] + last[2] == bb + ba:
                return
            mid = (spec.price(bb) + spec.price(ba)) / 2
            sub.conn.send(99, sub.req_id, 4, ts_ns // NS, f"{mid:.{spec.price_decimals + 1}f}")
        sub.last_quote = st.bbo

    def _roll_bars(self, st: _SymState, ts_ns: int) -> None:
        while ts_ns >= st.bar_start + BAR_NS:
            subs = self._subs.get(st.c.key)
            if subs and self._flowing():
                for sub in subs:
                    if sub.kind == BARS and not sub.conn.closed:
                        self._send_bar(sub, st)
            st.bar_start += BAR_NS
            st.t = None
            st.t_vol = st.t_notional = st.t_count = 0
            st.start_quote_bar()

    def _send_bar(self, sub: _Sub, st: _SymState) -> None:
        spec = sub.contract.spec
        if sub.what == "TRADES":
            if st.t is not None:
                o, h, lo, c = st.t
            elif st.last is not None:
                o = h = lo = c = st.last  # no trade in the interval: flat at the last price
            else:
                return
            vol, count = st.t_vol, st.t_count
            wap = spec.fmt_price(round(st.t_notional / vol)) if vol else spec.fmt_price(c)
            sub.conn.send(50, 3, sub.req_id, st.bar_start // NS, spec.fmt_price(o), spec.fmt_price(h), spec.fmt_price(lo),
                          spec.fmt_price(c), spec.fmt_qty(vol), wap, count)
            return
        b = st.q.get(sub.what)
        if b is None:
            return
        dec = spec.price_decimals + (1 if sub.what == "MIDPOINT" else 0)
        o, h, lo, c = (f"{spec.price(1) * v:.{dec}f}" for v in b)
        sub.conn.send(50, 3, sub.req_id, st.bar_start // NS, o, h, lo, c, -1, -1, -1)

    def _depth_update(self, sub: _Sub) -> None:
        book = self.market.book(sub.contract.key)
        spec = sub.contract.spec
        for side, old, new in ((1, sub.bids, book.bids(sub.rows)), (0, sub.asks, book.asks(sub.rows))):
            for position, op, (price, lots) in _depth_ops(old, new):
                if sub.smart:
                    sub.conn.send(13, 1, sub.req_id, position, sub.contract.depth_maker, op, side, spec.fmt_price(price),
                                  spec.fmt_qty(lots if op != 2 else 0), 1)
                else:
                    sub.conn.send(12, 1, sub.req_id, position, op, side, spec.fmt_price(price), spec.fmt_qty(lots if op != 2 else 0))
            if side == 1:
                sub.bids = new
            else:
                sub.asks = new


def _depth_ops(old: list[tuple[int, int]], new: list[tuple[int, int]]) -> list[tuple[int, int, tuple[int, int]]]:
    """Row operations (position, 0 insert / 1 update / 2 delete, level) turning ``old`` into ``new``.

    Rows are rewritten in place (update), added at the end (insert) and removed from the
    end (delete, last row first). That is what TWS is seen to send for SMART depth once
    the book is populated (ib-api-reloaded/ib_async#33), and it reads the same whether a
    client shifts rows on insert/delete (IB's documentation, wrdata's provider) or
    overwrites rows by position (ib_async 2.1's ``domBidsDict``).
    """
    ops: list[tuple[int, int, tuple[int, int]]] = []
    for j, level in enumerate(new):
        if j >= len(old):
            ops.append((j, 0, level))
        elif old[j] != level:
            ops.append((j, 1, level))
    for j in range(len(old) - 1, len(new) - 1, -1):
        ops.append((j, 2, old[j]))
    return ops
