"""Hostile frames for every provider parser, derived from the real and documented frames in
tests/data: the fuzz targets and mutations shared by tests/reliability/test_fuzz_parsers.py
(a few hundred cases per venue) and the soak run (many thousands).

A target is a venue's session fed the way the runner and the rebuild feed it: one frame at
a time, through :class:`~wrdata.streaming.driver.RawDriver` (the code path ``wrdata rebuild``
shares with live parsing). Each target can also make a *probe*: a valid trade frame with a
fresh id, which a healthy session must turn into a trade whatever came before it.
"""

from __future__ import annotations

import json
import logging
import math
import re
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec
from hypothesis import strategies as st

from tests.conftest import load_frames
from wrdata.message import StreamMessage
from wrdata.storage import DatasetWriter
from wrdata.storage.convert import from_messages
from wrdata.storage.schema import KIND_TABLE
from wrdata.streaming.base import HttpResponse
from wrdata.streaming.driver import RawDriver

T0_MS = 1_764_000_000_000


def _compact(doc) -> str:
    """JSON as venues send it: no insignificant whitespace."""
    return json.dumps(doc, separators=(",", ":"))


@dataclass
class Target:
    name: str
    driver: RawDriver
    corpus: list[bytes]
    probe: Callable[[int], bytes]  # a valid trade frame with id (and sequence number) ``i``
    probe_symbol: str
    next_id: int  # the probe's next id
    text: bool = True  # JSON frames (else TWS fields)
    ids: bool = True  # the venue de-duplicates by id (the probe's ids must keep ahead)
    conn: int = 1
    fed: int = 0
    cases: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def session(self):
        return self.driver.session(self.conn)

    def feed(self, payload: bytes) -> list[StreamMessage]:
        self.fed += 1
        return self.driver.feed(self.conn, self.fed, 1_000_000_000 * (1_764_000_000 + self.fed), "in", "", payload)


def _frames(relpath: str, limit: int | None = None) -> list[bytes]:
    rows = load_frames(relpath)
    return [r["frame"].encode() for r in rows[:limit]]


def binance() -> Target:
    from wrdata.streaming.binance import BinanceVenue

    corpus = _frames("binance/spot_btcusdt_trade_bookticker_depth100ms_2024-08-08.jsonl", 300)
    corpus += _frames("binance/combined_depth_bookticker_kline_aggtrade.jsonl", 60)
    corpus = [f for f in corpus if f.startswith(b"{\"stream\"")]
    t = Target("binance", RawDriver(BinanceVenue()), corpus, lambda n: _compact({"stream": "btcusdt@trade", "data": {
        "e": "trade", "E": T0_MS, "s": "BTCUSDT", "t": n, "p": "60000.10", "q": "0.5", "T": T0_MS,
        "m": n % 2 == 0, "M": True}}).encode(), "BTCUSDT", 5_000_000_000)
    return t


def coinbase() -> Target:
    from wrdata.streaming.coinbase import CoinbaseVenue

    corpus = _frames("coinbase/advanced_trade_fixtures_handmade_nautilus.jsonl")

    def probe(n: int) -> bytes:
        return _compact({"channel": "market_trades", "client_id": "", "timestamp": "2026-04-07T14:30:02.789012Z",
                           "sequence_num": n, "events": [{"type": "update", "trades": [
                               {"trade_id": str(n), "product_id": "BTC-USD", "price": "68900.50",
                                "size": "0.0015", "side": "BUY", "time": "2026-04-07T14:30:02.789012Z"}]}]}).encode()

    return Target("coinbase", RawDriver(CoinbaseVenue()), corpus, probe, "BTC-USD", 1000)


_KRAKEN_PAIRS = {"error": [], "result": {
    "XXBTZUSD": {"altname": "XBTUSD", "wsname": "XBT/USD", "pair_decimals": 1, "lot_decimals": 8, "status": "online"},
}}


def kraken() -> Target:
    from wrdata.streaming.kraken import KrakenVenue

    v = KrakenVenue()
    v.instruments = v.load_instruments(HttpResponse(200, msgspec.json.encode(_KRAKEN_PAIRS)))
    corpus = _frames("kraken/v2_fixtures_handmade_nautilus.jsonl") + _frames("kraken/v2_book10_btcusd_2023-07-30.jsonl", 60)

    def probe(n: int) -> bytes:
        return _compact({"channel": "trade", "type": "update", "data": [{
            "symbol": "BTC/USD", "side": "buy", "price": 105944.2, "qty": 0.01, "ord_type": "market",
            "trade_id": n, "timestamp": "2023-10-06T17:35:55.440295Z"}]}).encode()

    return Target("kraken", RawDriver(v), corpus, probe, "BTC/USD", 900_000_000)


def alpaca() -> Target:
    from wrdata.streaming.alpaca import AlpacaVenue

    corpus = _frames("alpaca/stock_v2_docs_examples.jsonl") + _frames("alpaca/crypto_v1beta3_docs_examples.jsonl")
    v = AlpacaVenue(credentials={"key": "k", "secret": "s"}, framing="json")

    def probe(n: int) -> bytes:
        return _compact([{"T": "t", "S": "AAPL", "i": n, "x": "V", "p": 189.5, "s": 100, "c": ["@"], "z": "C",
                            "t": "2024-07-24T14:30:00.123456789Z"}]).encode()

    return Target("alpaca", RawDriver(v), corpus, probe, "AAPL", 70_000)


def alpaca_msgpack() -> Target:
    """Alpaca's MessagePack framing (what its SDK uses): the documented frames, re-encoded
    with ``t`` as the MessagePack timestamp extension, as the venue sends them."""
    from wrdata.streaming.alpaca import AlpacaVenue, rfc3339_ns

    def conv(item):
        if isinstance(item, dict):
            out = {}
            for k, v in item.items():
                if k == "t" and isinstance(v, str):
                    n = rfc3339_ns(v)
                    v = msgspec.msgpack.Ext(-1, struct.pack(">IQ", n % 10**9, n // 10**9))
                out[k] = conv(v)
            return out
        if isinstance(item, list):
            return [conv(x) for x in item]
        return item

    corpus = [msgspec.msgpack.encode(conv(json.loads(f))) for f in
              _frames("alpaca/stock_v2_docs_examples.jsonl") + _frames("alpaca/crypto_v1beta3_docs_examples.jsonl")]
    v = AlpacaVenue(credentials={"key": "k", "secret": "s"}, framing="msgpack")

    def probe(n: int) -> bytes:
        return msgspec.msgpack.encode([{"T": "t", "S": "AAPL", "i": n, "x": "V", "p": 189.5, "s": 100, "c": ["@"], "z": "C",
                                        "t": msgspec.msgpack.Ext(-1, struct.pack(">IQ", 123456789, 1_764_000_000))}])

    return Target("alpaca-msgpack", RawDriver(v), corpus, probe, "AAPL", 70_000, text=False)


def polygon() -> Target:
    from wrdata.streaming.polygon import PolygonVenue

    corpus = _frames("polygon/stocks_docs_examples.jsonl") + _frames("polygon/crypto_docs_examples.jsonl")

    def probe(n: int) -> bytes:
        return _compact([{"ev": "T", "sym": "AAPL", "x": 4, "i": str(n), "z": 3, "p": 189.5, "s": 100, "c": [0],
                            "t": T0_MS, "q": n}]).encode()

    return Target("polygon", RawDriver(PolygonVenue(credentials={"key": "k"})), corpus, probe, "AAPL", 80_000)


def finnhub() -> Target:
    from wrdata.streaming.finnhub import FinnhubVenue

    corpus = _frames("finnhub/docs_examples.jsonl")
    d = RawDriver(FinnhubVenue(credentials={"key": "k"}))
    d.session(1, ["AAPL", "TSLA", "BINANCE:BTCUSDT"])

    def probe(n: int) -> bytes:
        return _compact({"type": "trade", "data": [{"p": 189.5, "s": "AAPL", "t": T0_MS, "v": 100, "c": ["1"]}]}).encode()

    return Target("finnhub", d, corpus, probe, "AAPL", 0, ids=False)


def _tws(*fields) -> bytes:
    return ("\0".join(str(f) for f in fields) + "\0").encode()


def ibkr() -> Target:
    """TWS messages in the layouts of ib_async's decoder (server version 178); the session
    learns its request ids from requests encoded by ib_async itself, as live."""
    from ib_async import Client, Wrapper

    from wrdata.streaming.ibkr import IbkrVenue, parse_symbol, to_contract

    venue = IbkrVenue()
    d = RawDriver(venue)
    s = d.session(1, [])
    client = Client(Wrapper(None))  # type: ignore[arg-type]
    client.isConnected = lambda: True  # type: ignore[method-assign]
    sent = [0]

    def send(msg: str) -> None:
        sent[0] += 1
        s.on_sent(msg.encode(), 1, 10_000_000 + sent[0])

    client.sendMsg = send  # type: ignore[method-assign]
    aapl = to_contract(parse_symbol("AAPL"), 265598)
    msft = to_contract(parse_symbol("MSFT"), 272093)
    client.reqTickByTickData(7, aapl, "AllLast", 0, False)
    client.reqTickByTickData(8, aapl, "BidAsk", 0, False)
    client.reqMktData(11, msft, "", False, False, [])
    client.reqMktData(12, msft, "233", False, False, [])
    client.reqRealTimeBars(13, aapl, 5, "TRADES", False, [])
    client.reqMktDepth(14, aapl, 10, True, [])
    corpus = [
        _tws(99, 7, 2, 1_764_000_000, "227.41", "100", 0, "ISLAND", "@ F"),
        _tws(99, 8, 3, 1_764_000_001, "227.40", "227.42", "300", "200", 0),
        _tws(1, 6, 11, 1, "415.10", "300", 0),
        _tws(2, 6, 11, 3, "150"),
        _tws(46, 6, 12, 48, "415.11;100;1764000000123;5000;415.3;true"),
        _tws(50, 3, 13, 1_764_000_000, "227.0", "227.5", "226.9", "227.4", "1200", "227.2", 40),
        _tws(12, 1, 14, 0, 0, 1, "227.40", "300"),
        _tws(13, 1, 14, 0, "ISLAND", 0, 0, "227.42", "200", 1),
        _tws(4, 2, -1, 2104, "Market data farm connection is OK:usfarm", ""),
        _tws(4, 2, -1, 1102, "Connectivity between IB and TWS has been restored - data maintained.", ""),
        _tws(58, 1, 11, 1),
    ]
    t = Target("ibkr", d, corpus, lambda n: _tws(99, 7, 2, 1_764_000_000 + n % 10**6, "227.41", n % 1000 + 1, 0, "ISLAND", ""),
               "AAPL", 0, text=False, ids=False)
    return t


TARGETS: dict[str, Callable[[], Target]] = {
    "binance": binance, "coinbase": coinbase, "kraken": kraken, "alpaca": alpaca, "alpaca-msgpack": alpaca_msgpack, "polygon": polygon,
    "finnhub": finnhub, "ibkr": ibkr,
}

# -- mutations -------------------------------------------------------------------------------------

HOSTILE = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.sampled_from(["NaN", "nan", "Infinity", "-inf", "1e999", "-0", "", "0x10", "1_000", "١٢٣"]),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.just("x" * 100_000), st.just([[[[[[[[[[[]]]]]]]]]]]),
)
UNKNOWN_TYPES = ["", "zzz", "trade2", "TRADE", "t ", "unknown", "subscriptions", "error", "ping", "status", "snapshot"]
TYPE_KEYS = ("e", "ev", "T", "type", "channel", "stream", "method", "event")


def _paths(doc, prefix=()):
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:20]):
            yield from _paths(v, (*prefix, i))


def _set(doc, path, value):
    if not path:
        return value
    cur = doc
    for p in path[:-1]:
        cur = cur[p]
    cur[path[-1]] = value
    return doc


def _delete(doc, path):
    if not path:
        return doc
    cur = doc
    for p in path[:-1]:
        cur = cur[p]
    del cur[path[-1]]
    return doc


def _dumps(doc) -> bytes:
    return json.dumps(doc, allow_nan=True, ensure_ascii=False, separators=(",", ":")).encode()


def mutate_json(data, frame: bytes) -> tuple[str, bytes, bool]:
    """A hostile variant of one JSON frame: (mutation, payload, certainly_invalid)."""
    how = data.draw(st.sampled_from([
        "truncate", "bytes", "garbage", "replace", "replace", "drop_key", "unknown_type", "deep", "huge", "splice", "empty",
    ]), label="mutation")
    if how == "truncate":
        k = data.draw(st.integers(0, max(0, len(frame.rstrip()) - 1)))
        return how, frame[:k], True
    if how == "bytes":
        b = bytearray(frame)
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(b) - 1))
            b[i] = data.draw(st.integers(0, 255))
        return how, bytes(b), False
    if how == "garbage":
        return how, data.draw(st.binary(min_size=1, max_size=64)), False
    if how == "empty":
        return how, data.draw(st.sampled_from([b"", b" ", b"null", b"[]", b"{}", b"0", b"\"\"", b"true"])), False
    if how == "splice":
        k = data.draw(st.integers(1, max(1, len(frame) - 1)))
        return how, frame[:k] + frame, True
    doc = json.loads(frame)
    if how == "deep":
        depth = data.draw(st.sampled_from([64, 1000, 100_000]))
        return how, b"[" * depth + frame + b"]" * depth, False
    if how == "huge":
        # the same payload many times over (a venue batching far more than usual)
        if isinstance(doc, list):
            return how, _dumps(doc * 5000), False
        for key in ("data", "events", "trades"):
            if isinstance(doc.get(key), list) and doc[key]:
                doc[key] = doc[key] * 5000
                return how, _dumps(doc), False
        return how, _dumps({**doc, "padding": "y" * 2_000_000}), False
    paths = list(_paths(doc))
    if how == "unknown_type":
        typed = [p for p in paths if p and p[-1] in TYPE_KEYS]
        if typed:
            path = data.draw(st.sampled_from(typed))
            return how, _dumps(_set(doc, path, data.draw(st.sampled_from(UNKNOWN_TYPES)))), False
        how = "replace"
    path = data.draw(st.sampled_from(paths))
    if how == "drop_key" and path:
        return how, _dumps(_delete(doc, path)), False
    return "replace", _dumps(_set(doc, path, data.draw(HOSTILE, label="value"))), False


def mutate_msgpack(data, frame: bytes) -> tuple[str, bytes, bool]:
    """A hostile variant of one MessagePack frame."""
    how = data.draw(st.sampled_from(["truncate", "bytes", "garbage", "replace", "replace", "drop_key", "unknown_type", "deep", "huge"]),
                    label="mutation")
    if how == "truncate":
        return how, frame[: data.draw(st.integers(0, len(frame) - 1))], True
    if how == "bytes":
        b = bytearray(frame)
        for _ in range(data.draw(st.integers(1, 4))):
            b[data.draw(st.integers(0, len(b) - 1))] = data.draw(st.integers(0, 255))
        return how, bytes(b), False
    if how == "garbage":
        return how, data.draw(st.binary(min_size=1, max_size=64)), False
    if how == "deep":
        depth = data.draw(st.sampled_from([64, 1000, 100_000]))
        return how, b"\x91" * depth + frame, False
    doc = msgspec.msgpack.decode(frame)
    if how == "huge":
        return how, msgspec.msgpack.encode(doc * 5000), False
    paths = list(_paths(doc))
    if how == "unknown_type":
        typed = [p for p in paths if p and p[-1] in TYPE_KEYS]
        if typed:
            return how, msgspec.msgpack.encode(_set(doc, data.draw(st.sampled_from(typed)), data.draw(st.sampled_from(UNKNOWN_TYPES)))), False
    path = data.draw(st.sampled_from(paths))
    if how == "drop_key" and path:
        return how, msgspec.msgpack.encode(_delete(doc, path)), False
    value = data.draw(st.one_of(HOSTILE, st.binary(max_size=8)), label="value")
    try:
        return "replace", msgspec.msgpack.encode(_set(doc, path, value)), False
    except OverflowError:  # an int MessagePack cannot carry
        return "replace", msgspec.msgpack.encode(_set(doc, path, str(value))), False


def mutate_fields(data, frame: bytes) -> tuple[str, bytes, bool]:
    """A hostile variant of one TWS message (NUL-terminated text fields)."""
    fields = frame.split(b"\0")[:-1]
    how = data.draw(st.sampled_from(["truncate", "replace", "replace", "drop", "extra", "bytes", "garbage", "huge"]), label="mutation")
    if how == "truncate":
        return how, frame[: data.draw(st.integers(0, len(frame) - 1))], False
    if how == "bytes":
        b = bytearray(frame)
        i = data.draw(st.integers(0, len(b) - 1))
        b[i] = data.draw(st.integers(0, 255))
        return how, bytes(b), False
    if how == "garbage":
        return how, data.draw(st.binary(max_size=64)), False
    i = data.draw(st.integers(0, len(fields) - 1))
    if how == "drop":
        del fields[i]
    elif how == "extra":
        fields.insert(i, data.draw(st.text(max_size=8)).encode())
    elif how == "huge":
        fields[i] = b"9" * 5000
    else:
        v = data.draw(st.one_of(st.sampled_from(["", "nan", "NaN", "inf", "-inf", "1e999", "-1", "0", "1.5", "abc", "9" * 40,
                                                 "2147483648", "-9223372036854775809", "\u00e9"]), st.text(max_size=6)))
        fields[i] = v.encode("utf-8", "surrogatepass")
    return how, b"\0".join(fields) + b"\0", False


# -- what must hold ---------------------------------------------------------------------------------------

_FLOATS = ("price", "size", "bid", "ask", "bid_size", "ask_size", "open", "high", "low", "close")


def check_messages(msgs, where: str) -> None:
    """Messages a parser emits are fit to record and to hand to a strategy."""
    assert isinstance(msgs, list), where
    for m in msgs:
        assert isinstance(m, StreamMessage), where
        assert m.kind in KIND_TABLE, (where, m.kind)
        if m.kind != "status":
            for f in _FLOATS:
                v = getattr(m, f)
                assert v is None or (isinstance(v, (int, float)) and math.isfinite(v)), (where, f, v)
            for side in (m.bids or ()), (m.asks or ()):
                for lv in side:
                    assert all(isinstance(x, (int, float)) and math.isfinite(x) for x in lv), (where, lv)
        # storage takes it: converted, or (an id or a time beyond int64) rejected alone and
        # counted by the writer's own conversion, never an exception that costs other rows
        table = KIND_TABLE[m.kind]
        try:
            from_messages(table, [m], "fuzz")
        except OverflowError:
            before = _STORAGE.stats.table(m.provider, table).rejected
            assert _STORAGE._convert(table, m.provider, [m]) is None, where
            assert _STORAGE.stats.table(m.provider, table).rejected == before + 1, where


_STORAGE = DatasetWriter(tempfile.mkdtemp(prefix="wrdata-fuzz-"), recover=False)  # never started: its conversion only


def bad_frame_events(msgs) -> list[StreamMessage]:
    return [m for m in msgs if m.kind == "status" and m.status == "error" and (m.reason or "").startswith("bad frame")]


# -- the run ----------------------------------------------------------------------------------------------

_ID_LIMIT = 2**62  # probes need room above any id a hostile frame planted


class _LogCount(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class FuzzReport:
    venue: str
    cases: int = 0
    bad_frames: int = 0
    kinds: set = field(default_factory=set)
    by_mutation: dict = field(default_factory=dict)
    resets: int = 0  # the venue was recreated after a hostile frame planted an id near 2**63
    refusals: int = 0  # a hostile frame was a venue refusing the probe's stream (then recreated)


def run_fuzz(venue: str, examples: int, seed: int | None = None) -> FuzzReport:
    """Feed ``examples`` hostile frames to one long-lived session of ``venue`` (with a
    probe after each) and check what must hold; returns the figures."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed

    report = FuzzReport(venue)
    state = {"t": TARGETS[venue]()}
    mutate = mutate_json if state["t"].text else mutate_msgpack if venue == "alpaca-msgpack" else mutate_fields
    recent: list = []
    for f in state["t"].corpus:  # a healthy, synchronised session first
        check_messages(state["t"].feed(f), f"{venue} corpus")
        _raise_ids(state["t"], f)
    handler = _LogCount()
    logger = logging.getLogger("wrdata")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)

    # one session lives through every example (as a connection does), so shrinking, which
    # replays examples on that state, would only blur the report: generation only
    @settings(max_examples=examples, deadline=None, database=None, derandomize=seed is None,
              suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
    @given(st.data())
    def one(data) -> None:
        t = state["t"]
        frame = data.draw(st.sampled_from(t.corpus), label="frame")
        how, payload, invalid = mutate(data, frame)
        before = t.session.bad_frames
        msgs = t.feed(payload)  # must not raise
        check_messages(msgs, f"{venue} {how}")
        bad = bad_frame_events(msgs)
        assert t.session.bad_frames - before == len(bad), f"{venue} {how}: bad frames counted and reported alike"
        if invalid:
            assert bad, f"{venue} {how}: an unparseable frame must be counted ({payload[:120]!r})"
        report.cases += 1
        report.by_mutation[how] = report.by_mutation.get(how, 0) + 1
        # no stuck stream: a valid trade after it is delivered (its id above any id planted)
        if t.ids and not _raise_ids(t, payload):
            report.resets += 1
            state["t"] = t = _fresh(venue, report, t)
        t.next_id += 1
        recent.append((how, payload[:200], [m.reason for m in msgs if m.kind == "status"]))
        del recent[:-5]
        out = t.feed(t.probe(t.next_id))
        check_messages(out, f"{venue} probe")
        if not [m for m in out if m.kind == "trade" and m.symbol == t.probe_symbol]:
            # the venue may end a stream in its own words (a request refused): not stuck
            refused = [m for m in msgs if m.kind == "status" and m.status == "error" and m.symbol == t.probe_symbol
                       and not (m.reason or "").startswith("bad frame")]
            assert refused, f"{venue}: stream stuck after hostile frames (latest last): {recent}; probe gave {out}"
            report.refusals += 1
            state["t"] = _fresh(venue, report, t)

    try:
        (hseed(seed)(one) if seed is not None else one)()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    t = state["t"]
    report.bad_frames += t.session.bad_frames
    report.kinds |= set(t.session._bad_kinds)
    # logged once per kind (per connection), never once per frame
    per_kind: dict = {}
    for r in handler.records:
        if r.levelno >= logging.WARNING and r.name.startswith("wrdata.streaming"):
            key = (r.getMessage().split(":")[0], r.getMessage().split("(")[0])
            per_kind[key] = per_kind.get(key, 0) + 1
    repeated = {k: n for k, n in per_kind.items() if n > 1 + report.resets}
    assert not repeated, f"{venue}: logged more than once per kind: {repeated}"
    return report


def _raise_ids(t: Target, payload: bytes) -> bool:
    """Make the probe's ids exceed every number in ``payload`` (any of them may have been
    taken as a trade id or sequence number); False if one is too close to 2**63 for that."""
    for digits in re.findall(rb"\d{1,19}", payload):
        v = int(digits)
        if v >= t.next_id:
            if v >= _ID_LIMIT:
                return False
            t.next_id = v + 1
    return True


def _fresh(venue: str, report: FuzzReport, old: Target) -> Target:
    """A new process, as it were: a hostile frame planted an id near 2**63, which the
    venue's de-duplication would keep as its high-water mark (see the soak README)."""
    report.bad_frames += old.session.bad_frames
    report.kinds |= set(old.session._bad_kinds)
    t = TARGETS[venue]()
    for f in t.corpus:
        t.feed(f)
        _raise_ids(t, f)
    return t
