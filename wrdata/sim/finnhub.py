"""Finnhub WebSocket trades on loopback, with the REST symbol lists a client checks.

Built from the documented protocol (``shared/providers/finnhub.md``; Finnhub's
"WebSocket Trades" docs and sample frames, the issues in finnhubio/Finnhub-API cited
there), not from wrdata's client. Facts relied on:

* One path, ``/``, with the key in ``?token=``; a wrong or missing token is refused at
  the upgrade with HTTP 401 (issue #465). No welcome message.
* ``{"type":"subscribe","symbol":"AAPL"}`` / ``"unsubscribe"`` (and ``-news``/``-pr``),
  one symbol per message, never acknowledged; an unknown symbol is accepted and stays
  silent. More than ``symbol_limit`` symbols (50 on the free plan) ->
  ``{"msg":"Subscribing to too many symbols","type":"error"}`` and that symbol is not
  subscribed.
* Trades ``{"data":[{"c":[..],"p":..,"s":..,"t":<ms>,"v":..}],"type":"trade"}``, keys in
  alphabetical order as the venue writes them, several trades and several symbols per
  frame when busy; stock conditions as strings (``"1"`` regular, ``"12"`` outside
  regular hours, ``"24"`` odd lot: synthetic codes, Finnhub's table is not public),
  crypto trades (``BINANCE:BTCUSDT``) without ``c``.
* ``{"type":"ping"}`` every ``ping_every`` s (about a minute) to a connection that got
  nothing else in that time.
* One connection per token (``conn_policy``: a second connection drops ``both``, as
  field reports say, or the ``oldest``/``newest``; ``allow`` keeps both).
* REST ``/api/v1/stock/symbol?exchange=US``, ``/api/v1/crypto/symbol?exchange=binance``,
  ``/api/v1/forex/symbol?exchange=...`` with the key in ``?token=`` or the
  ``X-Finnhub-Token`` header (401 otherwise).

Stocks follow US trading hours (``hours="us"``) or trade around the clock
(``hours="always"``); crypto always trades.
"""

from __future__ import annotations

import collections
import json
import logging
import time
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from .faults import Faults
from .market import MarketEvent, SymbolSpec, SyntheticMarket
from .server import Feed, MarketFeed, RecordedFrame, RestRequest, RestResponse, SimConnection, SimServer, json_response
from .stocks import (
    CRYPTO_PAIRS,
    Batcher,
    crypto_spec,
    session_of,
    start_round_the_clock,
    stock_market,
)

__all__ = ["FinnhubSimulator"]

log = logging.getLogger(__name__)

_encode = msgspec.json.Encoder().encode
_TOO_MANY = b'{"msg":"Subscribing to too many symbols","type":"error"}'
_PING = b'{"type":"ping"}'


class _RecordedTrade(msgspec.Struct):
    s: str


class _RecordedMessage(msgspec.Struct):
    type: str = ""
    data: list[_RecordedTrade] | None = None


_recorded = msgspec.json.Decoder(_RecordedMessage).decode


def _frame(variant: str, items: list[bytes]) -> bytes:
    return b'{"data":[' + b",".join(items) + b'],"type":"trade"}'


class FinnhubSimulator(SimServer):
    """Finnhub trades over WebSocket (``/?token=``) and its symbol lists, over seeded markets.

    Parameters (durations in seconds): ``key`` (the accepted token, default ``test``),
    ``seed``, ``symbols`` (US tickers), ``rate`` (stock events per second in regular
    hours), ``crypto_rate``, ``hours`` (``us`` or ``always``), ``start_et``,
    ``symbol_limit`` (50; None = unlimited), ``conn_policy`` (``both``, ``oldest``,
    ``newest``, ``allow``), ``ping_every`` (60), ``batch`` (trades per frame), ``tick``,
    ``warmup``, ``faults``, ``host``, ``port``.
    """

    venue = "finnhub"

    #: the key's plan includes ``/stock/tick`` (premium); False answers 403 as Finnhub does
    tick_history = True

    def __init__(
        self,
        *,
        key: str = "test",
        secret: str | None = None,  # the CLI's common --secret; Finnhub has a token only
        seed: int = 0,
        symbols: Sequence[str | SymbolSpec] | None = None,
        rate: float = 200.0,
        crypto_rate: float = 50.0,
        hours: str = "us",
        start_et: datetime | str | None = None,
        symbol_limit: int | None = 50,
        conn_policy: str = "both",
        ping_every: float = 60.0,
        batch: int = 100,
        tick: float = 0.005,
        warmup: float = 2.0,
        history: int = 20_000,
        feed: Feed | None = None,
        faults: Faults | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        if conn_policy not in ("both", "oldest", "newest", "allow"):
            raise ValueError(f"conn_policy must be both, oldest, newest or allow, not {conn_policy!r}")
        self.key = key
        self.market = stock_market(seed, symbols, rate, hours=hours, start_et=start_et, history=history)
        pairs = [crypto_spec(f"BINANCE:{b}{q}", p, tk, lt, w, b, q) for b, q, p, tk, lt, w in CRYPTO_PAIRS if q == "USDT"]
        self.crypto = SyntheticMarket(seed + 1, pairs, crypto_rate, history=history)
        super().__init__(host=host, port=port, feed=feed or MarketFeed(self.market, tick=tick, warmup=warmup),
                         faults=faults or Faults(), ping_interval=None, pong_timeout=None)
        self.symbol_limit = symbol_limit
        self.conn_policy = conn_policy
        self.ping_every = ping_every
        self.batcher = Batcher(_frame, batch)
        self.pings_sent = 0
        self.refused_tokens = 0  # upgrades refused with 401
        self.route("/api/v1/stock/symbol", self._r_stock_symbols)
        self.route("/api/v1/crypto/symbol", self._r_crypto_symbols)
        self.route("/api/v1/forex/symbol", self._r_forex_symbols)
        self.route("/api/v1/stock/tick", self._r_tick)
        self.history_size = history  # trades kept per symbol for REST (self.history lists connections)
        self._tapes: dict[str, collections.deque] = {}  # US ticker -> (trade, venue) for /stock/tick

    @staticmethod
    def cli_options() -> list:
        import click

        return [
            click.Option(["--key"], default="test", show_default=True, help="API token the simulator accepts."),
            click.Option(["--secret"], default=None, hidden=True, help="Unused (Finnhub has a token only)."),
            click.Option(["--hours"], type=click.Choice(["us", "always"]), default="us", show_default=True,
                         help="Stocks trade in US hours (Eastern) or around the clock."),
            click.Option(["--symbol-limit"], type=int, default=50, show_default=True, help="Symbols per connection."),
            click.Option(["--ping-every"], type=float, default=60.0, show_default=True, help="Seconds between pings when idle."),
        ]

    async def start(self) -> str:
        url = await super().start()
        if not isinstance(self.feed, MarketFeed):
            return url  # serving a recording
        start_round_the_clock(self.crypto, self.market.t0_ns, self.now_ns())
        return url

    # -- connections --------------------------------------------------------------------------
    def ws_path_ok(self, path: str, params: dict[str, str]) -> int | None:
        if path not in ("", "/"):
            return 404
        if params.get("token") != self.key:
            return 401
        return None

    def http_reject(self, status: int):
        if status == 401:
            self.refused_tokens += 1
            return self._http_response(RestResponse(401, b"Unauthorized", None, "text/plain"))
        return super().http_reject(status)

    async def serve_connection(self, conn: SimConnection) -> None:
        conn.props.update(symbols=set(), last=time.monotonic())
        others = sorted((c for c in self.connections if c is not conn and not c.closing), key=lambda c: c.id)
        if others and self.conn_policy != "allow":
            if self.conn_policy in ("both", "oldest"):
                for c in others:
                    c.close(1000, "another connection with this key")
            if self.conn_policy in ("both", "newest"):
                conn.close(1000, "another connection with this key")
                return
        async for raw in conn:
            if conn.closing:
                break
            self._on_message(conn, raw)

    def _on_message(self, conn: SimConnection, raw: str | bytes) -> None:
        try:
            msg = json.loads(raw)
        except ValueError:
            return  # the venue does not answer malformed requests
        if not isinstance(msg, dict) or not isinstance(msg.get("symbol"), str):
            return
        kind, symbol = msg.get("type"), msg["symbol"]
        symbols: set[str] = conn.props["symbols"]
        if kind == "subscribe":
            if symbol in symbols:
                return
            if self.symbol_limit is not None and len(symbols) >= self.symbol_limit:
                conn.send(_TOO_MANY)
                return
            symbols.add(symbol)
            conn.subscribe(symbol)
        elif kind == "unsubscribe":
            symbols.discard(symbol)
            conn.unsubscribe(symbol)
        # subscribe-news, subscribe-pr and their unsubscribes: accepted, nothing is generated

    # -- market -> trades -----------------------------------------------------------------------
    def _add(self, symbol: str, trade: dict[str, Any]) -> None:
        if self.has_subscribers(symbol):
            body = _encode(trade)
            self.batcher.add(self.subscribers(symbol), lambda v, body=body: body)

    def on_market_events(self, events: list[MarketEvent]) -> None:
        faults = self.faults
        for e in events:
            sym = e.symbol
            if not e.trades:
                continue
            spec = self.market.specs[sym]
            for t in e.trades:
                withheld = faults.withholding and faults.take_withheld(sym, t.trade_id)
                v = int(spec.qty(t.qty))
                c = ["1"]
                if session_of(t.ts_ns) != "regular":
                    c.append("12")
                if v < 100:
                    c.append("24")
                trade = {"c": c, "p": spec.price(t.price), "s": sym, "t": t.ts_ns // 1_000_000, "v": v}
                self._history(sym, trade, "QNPKZDV"[zlib.crc32(f"{sym}{t.trade_id}".encode()) % 7])
                if not withheld:  # lost on the stream only: still in the tick history
                    self._add(sym, trade)

    def _history(self, sym: str, trade: dict[str, Any], venue: str) -> None:
        tape = self._tapes.get(sym)
        if tape is None:
            tape = self._tapes[sym] = collections.deque(maxlen=self.history_size)
        tape.append((trade, venue))

    def on_clock(self, now_ns: int) -> None:
        for e in self.crypto.advance(now_ns - self.crypto.t0_ns):
            if not e.trades or not self.has_subscribers(e.symbol):
                continue
            spec = self.crypto.specs[e.symbol]
            for t in e.trades:
                if self.faults.withholding and self.faults.take_withheld(e.symbol, t.trade_id):
                    continue
                self._add(e.symbol, {"p": spec.price(t.price), "s": e.symbol, "t": t.ts_ns // 1_000_000, "v": spec.qty(t.qty)})
        now = time.monotonic()
        for conn in self.batcher.pending:
            conn.props["last"] = now
        self.batcher.flush()
        if self.ping_every:
            for conn in list(self.connections):
                last = conn.props.get("last")
                if last is not None and now - last >= self.ping_every and not conn.closing:
                    conn.send(_PING)
                    conn.props["last"] = now
                    self.pings_sent += 1

    def publish_recorded(self, frame: RecordedFrame) -> None:
        """Serve a recorded trade frame, exact bytes, to connections subscribed to any of its
        symbols (clients dispatch by symbol); pings and errors are per connection, not replayed."""
        try:
            msg = _recorded(frame.payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("finnhub: recorded frame is not a message: skipped")
            return
        if msg.type != "trade" or not msg.data:
            return
        conns: set[SimConnection] = set()
        for t in msg.data:
            if self.has_subscribers(t.s):
                conns |= self.subscribers(t.s)
        for conn in conns:
            conn.send(frame.payload)
            conn.props["last"] = time.monotonic()

    # -- REST ------------------------------------------------------------------------------------
    def rest_error(self, status: int, kind: str, retry_after: int | None = None) -> RestResponse:
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        text = "API limit reached. Please try again later." if status == 429 else kind
        return json_response({"error": text}, status, headers)

    def _authorized(self, req: RestRequest) -> bool:
        return (req.get("token") or req.headers.get("X-Finnhub-Token")) == self.key

    def _r_stock_symbols(self, req: RestRequest) -> RestResponse:
        if not self._authorized(req):
            return json_response({"error": "Invalid API key"}, 401)
        if (req.get("exchange") or "").upper() != "US":
            return json_response([])
        rows = [{"currency": "USD", "description": f"{s} (simulated)", "displaySymbol": s, "figi": "", "mic": "XNAS",
                 "symbol": s, "type": "Common Stock"} for s in self.market.symbols]
        return json_response(rows)

    def _r_crypto_symbols(self, req: RestRequest) -> RestResponse:
        if not self._authorized(req):
            return json_response({"error": "Invalid API key"}, 401)
        ex = (req.get("exchange") or "").upper()
        rows = [{"description": f"Binance {s.split(':')[1]}", "displaySymbol": s.split(":")[1], "symbol": s}
                for s in self.crypto.symbols if s.startswith(ex + ":")]
        return json_response(rows)

    def _r_tick(self, req: RestRequest) -> RestResponse:
        """``/stock/tick?symbol=&date=YYYY-MM-DD&limit=&skip=`` (premium): parallel arrays, no
        trade ids; the trades of that UTC date the simulator still holds."""
        if not self._authorized(req):
            return json_response({"error": "Invalid API key"}, 401)
        if not self.tick_history:  # a plan without tick data: Finnhub's answer to premium endpoints
            return json_response({"error": "You don't have access to this resource."}, 403)
        sym, date = req.get("symbol") or "", req.get("date") or ""
        try:
            day = datetime.strptime(date, "%Y-%m-%d").replace(tzinfo=UTC)
            limit, skip = int(req.get("limit") or 25_000), int(req.get("skip") or 0)
        except ValueError:
            return json_response({"error": "Wrong date or number format."}, 422)
        start = int(day.timestamp()) * 1000
        rows = [(t, x) for t, x in self._tapes.get(sym, ()) if start <= t["t"] < start + 86_400_000]
        page = rows[skip : skip + self.faults.clip_page(limit)]
        return json_response({
            "s": sym, "skip": skip, "count": len(page), "total": len(rows), "v": [t["v"] for t, _ in page],
            "p": [t["p"] for t, _ in page], "t": [t["t"] for t, _ in page], "x": [x for _, x in page],
            "c": [t["c"] for t, _ in page],
        })

    def _r_forex_symbols(self, req: RestRequest) -> RestResponse:
        if not self._authorized(req):
            return json_response({"error": "Invalid API key"}, 401)
        return json_response([])
