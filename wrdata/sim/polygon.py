"""Polygon.io / Massive WebSocket clusters on loopback: ``/stocks`` and ``/crypto``.

Built from the documented protocol (``shared/providers/polygon.md``; Massive's docs
``websocket/quickstart``, ``websocket/stocks/*``, ``websocket/crypto/*`` and knowledge-base
answers on connection limits), not from wrdata's client. Facts relied on:

* Paths ``/stocks`` and ``/crypto`` (other clusters exist at the venue but are not
  simulated: HTTP 404, as for any unknown path). Every server frame is a JSON array of
  events; client frames are JSON objects.
* ``[{"ev":"status","status":"connected","message":"Connected Successfully"}]`` on
  connect; ``{"action":"auth","params":"<key>"}`` -> ``auth_success`` ``authenticated``,
  or ``auth_failed`` (``authentication failed`` for a wrong key; the plan message for a
  cluster the key lacks, ``clusters``) and close; no auth within ``auth_timeout`` s ->
  ``auth_timeout`` ``No authentication request received.`` and close.
* ``{"action":"subscribe","params":"T.AAPL,Q.AAPL,AM.*"}`` -> one ``success`` status per
  topic, ``subscribed to: T.AAPL``; ``unsubscribe`` -> ``unsubscribed to: ...`` (the text
  a third-party fixture shows; the docs print none). Prefixes: stocks ``T Q A AM`` (and
  ``LULD NOI FMV``, accepted, not generated), crypto ``XT XQ XA XAS`` (``XL2 FMV``
  accepted). ``*`` subscribes every ticker. Texts for requests before auth, unknown
  actions and unknown prefixes are not documented: ours are ``status`` ``error``.
* ``max_connections`` connections per key per cluster (1): a further authenticated
  connection makes the server send ``max_connections`` ``Maximum number of connections
  exceeded.`` to the *oldest* and close it.
* Events, many per frame when busy (at most ``batch``): ``T`` ``{sym,x,i,z,p,s,c,t,q}``
  (``i`` a string id counted per exchange, ``x`` exchange id, ``z`` tape 1/2/3, ``c``
  condition ints, absent for a plain regular sale: 12 Form T outside regular hours, 37 odd
  lot; ``t`` ms; ``q`` sequence, increasing per ticker with gaps; ``trfi``/``trft`` on
  off-exchange prints), ``Q`` NBBO ``{sym,bx,bp,bs,ax,ap,as,c,i,t,q,z}`` (sizes in round
  lots), ``A``/``AM`` second/minute aggregates ``{sym,v,av,op,vw,o,c,h,l,a,z,s,e}`` only
  for windows with trades; crypto ``XT`` ``{pair,p,t,s,c,i,x,r}`` (``c`` [1] sell, [2]
  buy), ``XQ`` ``{pair,bp,bs,ap,as,t,x,r}``, ``XA``/``XAS`` ``{pair,v,vw,z,o,c,h,l,s,e}``.
* No application heartbeat; WebSocket pings are answered. :meth:`slow_consumer` sends the
  ``slow_consumer`` status and closes, as the server does when a client reads too slowly.

Stocks follow US trading hours (``hours="us"``) or trade around the clock
(``hours="always"``); crypto always trades.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import logging
import re
import urllib.parse
import zlib
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from .faults import Faults
from .market import NS, MarketEvent, SymbolSpec, SyntheticMarket
from .server import Feed, MarketFeed, RecordedFrame, RestRequest, RestResponse, SimConnection, SimServer, json_response
from .stocks import (
    CRYPTO_PAIRS,
    Batcher,
    crypto_spec,
    listing_tape,
    session_of,
    start_round_the_clock,
    stock_market,
)

__all__ = ["PolygonSimulator"]

log = logging.getLogger(__name__)

CLUSTERS = ("stocks", "crypto")
PREFIXES = {"stocks": ("T", "Q", "A", "AM", "LULD", "NOI", "FMV"), "crypto": ("XT", "XQ", "XA", "XAS", "XL2", "FMV")}
_TICKER = re.compile(r"^(\*|[A-Z][A-Z0-9.]{0,15}|[A-Z0-9]{1,12}-[A-Z0-9]{1,12})$")
_PLAN_MESSAGE = "Your plan doesn't include websocket access. Visit https://polygon.io/pricing to upgrade."
_TAPE = {"A": 1, "B": 2, "C": 3}
# Massive exchange ids of prints, roughly by share (100 slots): 4 = FINRA TRF (off exchange)
_PRINT_EXCHANGES = [4] * 38 + [12] * 14 + [11] * 8 + [10] * 8 + [8] * 7 + [19] * 6 + [21] * 4 + [2] * 3 + [18] * 3 + [7] * 3 + [17] * 2 + [1, 3, 9, 5]
_QUOTE_EXCHANGES = (12, 11, 10, 8, 19, 21, 2, 18, 7)
_encode = msgspec.json.Encoder().encode


class _Head(msgspec.Struct):
    ev: str | None = None
    sym: str | None = None
    pair: str | None = None


_raw_list = msgspec.json.Decoder(list[msgspec.Raw]).decode
_head = msgspec.json.Decoder(_Head).decode


def pair_key(ticker: str) -> str:
    """REST tickers to the simulator's keys: ``X:BTCUSD`` -> ``BTC-USD``; stocks unchanged."""
    if ticker.startswith("X:"):
        body = ticker[2:]
        for q in ("USDT", "USDC", "USD", "EUR"):
            if body.endswith(q) and len(body) > len(q):
                return f"{body[: -len(q)]}-{q}"
    return ticker


_OPS = {"gte": lambda a, b: a >= b, "gt": lambda a, b: a > b, "lte": lambda a, b: a <= b, "lt": lambda a, b: a < b}


def _ns(value: str, end: bool = False) -> int:
    if value.isdigit():
        return int(value)
    d = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)  # a date: the whole UTC day
    return int(d.timestamp()) * NS + (86_400 * NS - 1 if end else 0)


def _time_bounds(params: dict[str, str]) -> list[tuple[Any, int]]:
    out = []
    if params.get("timestamp"):
        v = params["timestamp"]
        out += [(_OPS["gte"], _ns(v)), (_OPS["lte"], _ns(v, end=True))]
    for op in _OPS:
        v = params.get(f"timestamp.{op}")
        if v:
            out.append((_OPS[op], _ns(v, end=op in ("lte", "lt") and not v.isdigit())))
    return out


def _status(status: str, message: str) -> bytes:
    return _encode([{"ev": "status", "status": status, "message": message}])


def _frame(variant: str, items: list[bytes]) -> bytes:
    return b"[" + b",".join(items) + b"]"


class _Agg:
    __slots__ = ("o", "h", "l", "c", "v", "pv", "n")

    def __init__(self) -> None:
        self.o = self.h = self.l = self.c = 0.0
        self.v = 0.0
        self.pv = 0.0
        self.n = 0

    def add(self, p: float, s: float) -> None:
        if self.n == 0:
            self.o = self.h = self.l = p
        elif p > self.h:
            self.h = p
        elif p < self.l:
            self.l = p
        self.c = p
        self.v += s
        self.pv += p * s
        self.n += 1


class _Windows:
    """The open one-second and one-minute windows of one market."""

    __slots__ = ("sec_start", "min_start", "second", "minute")

    def __init__(self) -> None:
        self.sec_start = 0
        self.min_start = 0
        self.second: dict[str, _Agg] = {}
        self.minute: dict[str, _Agg] = {}


class _Day:
    __slots__ = ("day", "op", "av", "pv")

    def __init__(self, day: int, op: float) -> None:
        self.day = day
        self.op = op
        self.av = 0.0
        self.pv = 0.0


class PolygonSimulator(SimServer):
    """Massive (Polygon) ``/stocks`` and ``/crypto`` clusters over seeded markets.

    Parameters (durations in seconds): ``key`` (accepted API key, default ``test``),
    ``clusters`` (the clusters the key's plan includes), ``seed``, ``symbols`` (stock
    tickers), ``rate`` (stock events per second in regular hours), ``crypto_rate``,
    ``hours`` (``us`` or ``always``), ``start_et``, ``max_connections`` (per key per
    cluster, 1), ``auth_timeout`` (10), ``batch`` (events per frame, 100), ``tick``,
    ``warmup``, ``faults``, ``host``, ``port``.
    """

    venue = "polygon"

    def __init__(
        self,
        *,
        key: str = "test",
        secret: str | None = None,  # the CLI's common --secret; Polygon has a key only
        clusters: Iterable[str] = CLUSTERS,
        seed: int = 0,
        symbols: Sequence[str | SymbolSpec] | None = None,
        rate: float = 200.0,
        crypto_rate: float = 50.0,
        hours: str = "us",
        start_et: datetime | str | None = None,
        max_connections: int = 1,
        auth_timeout: float = 10.0,
        batch: int = 100,
        tick: float = 0.005,
        warmup: float = 2.0,
        history: int = 20_000,
        feed: Feed | None = None,
        faults: Faults | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        self.key = key
        self.clusters = frozenset(clusters)
        self.market = stock_market(seed, symbols, rate, hours=hours, start_et=start_et, history=history)
        pairs = [crypto_spec(f"{b}-{q}", p, tk, lt, w, b, q) for b, q, p, tk, lt, w in CRYPTO_PAIRS]
        self.crypto = SyntheticMarket(seed + 1, pairs, crypto_rate, history=history)
        super().__init__(host=host, port=port, feed=feed or MarketFeed(self.market, tick=tick, warmup=warmup),
                         faults=faults or Faults(), ping_interval=None, pong_timeout=None)
        self.max_connections = max_connections
        self.auth_timeout = auth_timeout
        self.batcher = Batcher(_frame, batch)
        self._seq = 0
        self._exch_ids: dict[tuple[str, int], int] = {}
        self._windows = {"stocks": _Windows(), "crypto": _Windows()}  # per market: its clock order
        self.history_size = history  # trades kept per symbol for REST (self.history lists connections)
        self._tapes: dict[str, collections.deque] = {}  # ticker or pair -> REST trade rows
        self.route("/v3/trades", self._r_trades)
        self._days: dict[str, _Day] = {}

    @staticmethod
    def cli_options() -> list:
        import click

        return [
            click.Option(["--key"], default="test", show_default=True, help="API key the simulator accepts."),
            click.Option(["--secret"], default=None, hidden=True, help="Unused (Polygon has a key only)."),
            click.Option(["--hours"], type=click.Choice(["us", "always"]), default="us", show_default=True,
                         help="Stocks trade in US hours (Eastern) or around the clock."),
            click.Option(["--max-connections"], type=int, default=1, show_default=True, help="Connections per key per cluster."),
        ]

    async def start(self) -> str:
        url = await super().start()
        if not isinstance(self.feed, MarketFeed):
            return url  # serving a recording
        start_round_the_clock(self.crypto, self.market.t0_ns, self.now_ns())
        now = self.now_ns()
        for w in self._windows.values():
            w.sec_start = now // NS * NS
            w.min_start = now // (60 * NS) * (60 * NS)
        return url

    # -- connections --------------------------------------------------------------------------
    def ws_path_ok(self, path: str, params: dict[str, str]) -> int | None:
        return None if path.strip("/") in CLUSTERS else 404

    async def serve_connection(self, conn: SimConnection) -> None:
        cluster = conn.path.strip("/")
        conn.props.update(cluster=cluster, key=None, authed_at=0.0)
        conn.send(_status("connected", "Connected Successfully"))
        timer = asyncio.get_running_loop().call_later(self.auth_timeout, self._auth_timeout, conn)
        try:
            async for raw in conn:
                if conn.closing:
                    break
                self._on_message(conn, raw)
        finally:
            timer.cancel()

    def _auth_timeout(self, conn: SimConnection) -> None:
        if conn.props.get("key") is None and not conn.closing:
            conn.send(_status("auth_timeout", "No authentication request received."))
            conn.close(1000, "auth timeout")

    def _on_message(self, conn: SimConnection, raw: str | bytes) -> None:
        try:
            msg = json.loads(raw)
        except ValueError:
            conn.send(_status("error", "invalid message"))
            return
        if not isinstance(msg, dict) or not isinstance(msg.get("params"), str):
            conn.send(_status("error", "invalid message"))
            return
        action, params = msg.get("action"), msg["params"]
        if action == "auth":
            self._auth(conn, params)
        elif action in ("subscribe", "unsubscribe"):
            if conn.props.get("key") is None:
                conn.send(_status("error", "not authorized"))
                return
            self._subscribe(conn, params, action == "subscribe")
        else:
            conn.send(_status("error", f"unknown action: {action}"))

    def _auth(self, conn: SimConnection, key: str) -> None:
        if conn.props.get("key") is not None:
            conn.send(_status("auth_success", "authenticated"))
            return
        if key != self.key:
            conn.send(_status("auth_failed", "authentication failed"))
            conn.close(1000, "auth failed")
            return
        cluster = conn.props["cluster"]
        if cluster not in self.clusters:
            conn.send(_status("auth_failed", _PLAN_MESSAGE))
            conn.close(1000, "auth failed")
            return
        conn.props["key"] = key
        conn.send(_status("auth_success", "authenticated"))
        same = sorted((c for c in self.connections if c.props.get("key") == key and c.props.get("cluster") == cluster
                       and not c.closing), key=lambda c: c.id)
        for old in same[: max(0, len(same) - self.max_connections)]:  # the oldest go first
            old.send(_status("max_connections", "Maximum number of connections exceeded."))
            old.close(1008, "max_connections")

    def _subscribe(self, conn: SimConnection, params: str, add: bool) -> None:
        cluster = conn.props["cluster"]
        for topic in (t.strip() for t in params.split(",")):
            if not topic:
                continue
            prefix, dot, ticker = topic.partition(".")
            if not dot or prefix not in PREFIXES[cluster] or not _TICKER.match(ticker):
                conn.send(_status("error", f"invalid subscription: {topic}"))
                continue
            if add:
                conn.subscribe(topic)
                conn.send(_status("success", f"subscribed to: {topic}"))
            else:
                conn.unsubscribe(topic)
                conn.send(_status("success", f"unsubscribed to: {topic}"))

    def publish_recorded(self, frame: RecordedFrame) -> None:
        """Serve a recorded data frame, exact bytes, to connections subscribed to any of its
        events (clients dispatch by ticker); status frames are the simulator's own."""
        try:
            heads = [_head(r) for r in _raw_list(frame.payload)]
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("polygon: recorded frame is not an array of events: skipped")
            return
        conns: set[SimConnection] = set()
        for h in heads:
            ticker = h.sym or h.pair
            if h.ev and h.ev != "status" and ticker:
                conns |= self._targets(h.ev, ticker)
        for conn in conns:
            conn.send(frame.payload)

    def slow_consumer(self, conn: SimConnection | None = None) -> None:
        """Fault: tell a connection (default: every one) it reads too slowly, then close it."""
        for c in [conn] if conn is not None else list(self.connections):
            c.send(_status("slow_consumer", "Slow consumer: disconnecting"))
            c.close(1008, "slow consumer")

    # -- market -> events -----------------------------------------------------------------------
    def _targets(self, prefix: str, ticker: str) -> set[SimConnection]:
        out: set[SimConnection] = set()
        for s in (f"{prefix}.{ticker}", f"{prefix}.*"):
            if self.has_subscribers(s):
                out |= self.subscribers(s)
        return out

    def _add(self, prefix: str, ticker: str, event: dict[str, Any]) -> None:
        conns = self._targets(prefix, ticker)
        if conns:
            body = _encode(event)
            self.batcher.add(conns, lambda v, body=body: body)

    def _next_q(self) -> int:
        self._seq += 1 + (self._seq * 7 + 3) % 5  # increasing, with gaps, as the SIP sequence looks per ticker
        return self._seq

    def on_market_events(self, events: list[MarketEvent]) -> None:
        faults = self.faults
        for e in events:
            sym = e.symbol
            spec = self.market.specs[sym]
            tape = _TAPE[listing_tape(sym)]
            for t in e.trades:
                withheld = faults.withholding and faults.take_withheld(sym, t.trade_id)
                h = zlib.crc32(f"{sym}{t.trade_id}".encode())
                x = _PRINT_EXCHANGES[h % 100]
                n = self._exch_ids.get((sym, x), 0) + 1
                self._exch_ids[(sym, x)] = n
                p, s = spec.price(t.price), int(spec.qty(t.qty))
                ev: dict[str, Any] = {"ev": "T", "sym": sym, "x": x, "i": str(n), "z": tape, "p": p, "s": s}
                c = []
                if session_of(t.ts_ns) in ("pre", "post"):
                    c.append(12)
                if s < 100:
                    c.append(37)
                if c:
                    ev["c"] = c
                ev["t"] = t.ts_ns // 1_000_000
                ev["q"] = self._next_q()
                if x == 4:
                    ev["trfi"] = 201
                    ev["trft"] = ev["t"]
                self._history(sym, {"conditions": c, "exchange": x, "id": ev["i"], "participant_timestamp": t.ts_ns - 150_000,
                                    "price": p, "sequence_number": ev["q"], "sip_timestamp": t.ts_ns, "size": s, "tape": tape,
                                    **({"trf_id": 201, "trf_timestamp": t.ts_ns} if x == 4 else {})})
                if not withheld:  # a lost print: missing from the stream, still in aggregates and history
                    self._add("T", sym, ev)
                self._aggregate(sym, p, s, t.ts_ns)
            if e.bbo_changed:
                bid, bl, ask, al = e.bbo
                h = zlib.crc32(f"{sym}{e.update_id}".encode())
                self._add("Q", sym, {
                    "ev": "Q", "sym": sym, "bx": _QUOTE_EXCHANGES[h % 9], "bp": spec.price(bid), "bs": max(1, bl // 100),
                    "ax": _QUOTE_EXCHANGES[(h >> 8) % 9], "ap": spec.price(ask), "as": max(1, al // 100), "c": 1, "i": [],
                    "t": e.ts_ns // 1_000_000, "q": self._next_q(), "z": tape,
                })

    def _crypto_events(self, events: list[MarketEvent]) -> None:
        for e in events:
            pair = e.symbol
            spec = self.crypto.specs[pair]
            x = 1 + zlib.crc32(pair.encode()) % 6
            for t in e.trades:
                withheld = self.faults.withholding and self.faults.take_withheld(pair, t.trade_id)
                ms = t.ts_ns // 1_000_000
                p, s = spec.price(t.price), spec.qty(t.qty)
                side = 1 if t.buyer_maker else 2
                self._history(pair, {"conditions": [side], "exchange": x, "id": str(t.trade_id), "participant_timestamp": t.ts_ns,
                                     "price": p, "size": s})
                if not withheld:
                    self._add("XT", pair, {"ev": "XT", "pair": pair, "p": p, "t": ms, "s": s, "c": [side], "i": t.trade_id, "x": x,
                                           "r": ms + 3})
                self._aggregate(pair, p, s, t.ts_ns)
            if e.bbo_changed:
                bid, bl, ask, al = e.bbo
                ms = e.ts_ns // 1_000_000
                self._add("XQ", pair, {"ev": "XQ", "pair": pair, "bp": spec.price(bid), "bs": spec.qty(bl), "ap": spec.price(ask),
                                       "as": spec.qty(al), "t": ms, "x": x, "r": ms + 3})

    def _history(self, ticker: str, row: dict[str, Any]) -> None:
        tape = self._tapes.get(ticker)
        if tape is None:
            tape = self._tapes[ticker] = collections.deque(maxlen=self.history_size)
        tape.append(row)

    # -- REST: trade history -------------------------------------------------------------------
    def _rest(self, path: str, query: str, request: Any) -> RestResponse:
        if path.startswith("/v3/trades/") and path.count("/") == 3:  # a path parameter: exact routes cannot say it
            ticker = path.rsplit("/", 1)[1]
            return super()._rest("/v3/trades", f"{query}&_ticker={ticker}", request)
        return super()._rest(path, query, request)

    def rest_error(self, status: int, kind: str, retry_after: int | None = None) -> RestResponse:
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        text = {429: "You've exceeded the maximum requests per minute, please wait or upgrade your subscription to continue.",
                404: "Not found"}.get(status, "Internal error")
        return json_response({"status": "ERROR", "request_id": "sim", "error": text}, status, headers)

    def _r_trades(self, req: RestRequest) -> RestResponse:
        """``/v3/trades/{ticker}`` (``AAPL``, ``X:BTCUSD``): ``timestamp`` (ns or a date) and
        ``timestamp.gte|gt|lte|lt``, ``order`` (default desc), ``limit`` (1000, at most
        50000), ``next_url`` with a cursor; the key as ``apiKey`` or a Bearer token."""
        auth = req.headers.get("Authorization", "")
        if (req.get("apiKey") or (auth[7:] if auth.startswith("Bearer ") else None)) != self.key:
            return json_response({"status": "ERROR", "request_id": "sim", "error": "Unknown API Key"}, 401)
        ticker = urllib.parse.unquote(req.get("_ticker") or "")
        key = pair_key(ticker)
        cursor = req.get("cursor")
        params = dict(req.params)
        if cursor:
            try:
                params = json.loads(base64.urlsafe_b64decode(cursor))
            except ValueError:
                return json_response({"status": "ERROR", "request_id": "sim", "error": "invalid cursor"}, 400)
        try:
            bounds = _time_bounds(params)
            limit = int(params.get("limit", 1000))
        except ValueError as e:
            return json_response({"status": "ERROR", "request_id": "sim", "error": str(e)}, 400)
        if not 1 <= limit <= 50_000:
            return json_response({"status": "ERROR", "request_id": "sim", "error": "limit must be between 1 and 50000"}, 400)
        limit = self.faults.clip_page(limit)
        desc = params.get("order", "desc") == "desc"
        ts = "sip_timestamp" if key in self.market.specs else "participant_timestamp"
        rows = [r for r in self._tapes.get(key, ()) if all(op(r[ts], v) for op, v in bounds)]
        rows.sort(key=lambda r: r[ts], reverse=desc)
        skip = int(params.get("_skip", 0))
        page = rows[skip : skip + limit]
        body: dict[str, Any] = {"results": page, "status": "OK", "request_id": "sim"}
        if skip + limit < len(rows):
            nxt = {**{k: v for k, v in params.items() if k not in ("apiKey", "cursor", "_ticker")}, "_skip": skip + limit}
            token = base64.urlsafe_b64encode(json.dumps(nxt).encode()).decode()
            body["next_url"] = f"{self.rest_url}/v3/trades/{ticker}?cursor={token}"
        return json_response(body)

    def _aggregate(self, sym: str, p: float, s: float, ts_ns: int) -> None:
        w = self._windows["crypto" if "-" in sym else "stocks"]
        self._roll(w, ts_ns)
        for table in (w.second, w.minute):
            agg = table.get(sym)
            if agg is None:
                agg = table[sym] = _Agg()
            agg.add(p, s)
        day = ts_ns // (86_400 * NS)
        d = self._days.get(sym)
        if d is None or d.day != day:
            d = self._days[sym] = _Day(day, p)
        d.av += s
        d.pv += p * s

    def _roll(self, w: _Windows, now_ns: int) -> None:
        """Close the windows ``now_ns`` is past (windows without trades emit nothing)."""
        if now_ns >= w.sec_start + NS:
            self._flush_aggs(w.second, w.sec_start, NS, "A", "XAS")
            w.sec_start = now_ns // NS * NS
        if now_ns >= w.min_start + 60 * NS:
            self._flush_aggs(w.minute, w.min_start, 60 * NS, "AM", "XA")
            w.min_start = now_ns // (60 * NS) * (60 * NS)

    def _flush_aggs(self, table: dict[str, _Agg], start: int, length: int, stock: str, crypto: str) -> None:
        s_ms, e_ms = start // 1_000_000, (start + length) // 1_000_000
        for sym, a in table.items():
            decimals = 4 if "-" not in sym else self.crypto.specs[sym].price_decimals + 2
            vw = round(a.pv / a.v, decimals) if a.v else 0
            if "-" in sym:
                self._add(crypto, sym, {"ev": crypto, "pair": sym, "v": round(a.v, 8), "vw": vw, "z": round(a.v / a.n, 8), "o": a.o,
                                        "c": a.c, "h": a.h, "l": a.l, "s": s_ms, "e": e_ms})
            else:
                d = self._days[sym]
                self._add(stock, sym, {"ev": stock, "sym": sym, "v": int(a.v), "av": int(d.av), "op": d.op, "vw": vw,
                                       "o": a.o, "c": a.c, "h": a.h, "l": a.l, "a": round(d.pv / d.av, 4),
                                       "z": int(a.v / a.n), "s": s_ms, "e": e_ms})
        table.clear()

    def on_clock(self, now_ns: int) -> None:
        self._crypto_events(self.crypto.advance(now_ns - self.crypto.t0_ns))
        for w in self._windows.values():
            self._roll(w, now_ns)
        self.batcher.flush()
