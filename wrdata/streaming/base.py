"""What every provider module implements: a sans-IO venue and its per-connection session.

A provider is two pure state machines and no I/O:

- :class:`Venue`, one per provider per process: symbol spelling and validation, which
  venue streams a subscription needs, connection limits and timings, and the state
  shared by all its connections (the :class:`Sequencer` that de-duplicates the
  overlap of a rollover and spots id gaps across reconnects).
- :class:`Session`, one per physical connection: the URL and headers to open it with,
  control frames to send (``outbox``), REST requests it needs (``requests``), and
  ``feed()`` which turns one received frame into a list of :class:`StreamMessage`.

The shared runner (:mod:`wrdata.streaming.runner`) does all the I/O for WebSocket
venues. The rebuild path (:mod:`wrdata.capture.rebuild`) drives the same sessions from
recorded ``raw`` rows, so a session's output must depend only on the frames it was
fed (received frames, REST responses) and the venue's instrument list, never on the
wall clock or on what the caller subscribed.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar

import msgspec

from ..channels import Channel
from ..message import StreamMessage, status_message

log = logging.getLogger("wrdata.streaming")

_SECRET_QUERY = re.compile(r"(?i)([?&](?:token|apikey|api_key|key|secret|signature|jwt|password)=)[^&#\s]*")


#: A float field of a venue's wire type: finite. msgspec's non-strict decoding (decimal
#: strings straight to floats) also takes "nan", "inf" and "Infinity", and MessagePack
#: carries NaN natively; a frame with such a price or size is a bad frame, not a trade.
Finite = Annotated[float, msgspec.Meta(ge=-sys.float_info.max, le=sys.float_info.max)]


def redact_url(url: str) -> str:
    """A URL fit for logs and recordings: credential-looking query values replaced."""
    return _SECRET_QUERY.sub(r"\1***", url)


class ProviderError(Exception):
    """Base class for errors a provider reports to the caller."""


class UnknownSymbolError(ProviderError, ValueError):
    pass


class UnsupportedChannelError(ProviderError, ValueError):
    pass


class AuthenticationError(ProviderError):
    """Credentials were missing or the venue rejected them; retrying will not help."""


class SubscriptionError(ProviderError):
    pass


class ConfigurationError(ProviderError, ValueError):
    pass


@dataclass(slots=True)
class HttpRequest:
    """A REST call a venue or session needs; the runner performs it and hands back the body."""

    url: str
    params: dict[str, Any] | None = None
    headers: dict[str, str] | None = None
    purpose: str = ""
    context: Any = None

    @property
    def full_url(self) -> str:
        if not self.params:
            return self.url
        from urllib.parse import urlencode

        return f"{self.url}?{urlencode(self.params)}"


@dataclass(slots=True)
class HttpResponse:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class Sequencer:
    """Monotonic venue ids per stream, across all connections of one provider.

    ``accept(key, first, last)`` is called with the id range an event covers (a trade:
    ``first == last == trade id``; a diff-depth event: ``U``, ``u``). It returns
    ``(False, None)`` for an event already delivered (the overlap of a rollover, or a
    replayed snapshot), else ``(True, gap)`` where ``gap`` is ``(first_missing,
    last_missing)`` when ids were skipped and ``consecutive`` says ids are dense.
    """

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last: dict[Hashable, int] = {}

    def accept(self, key: Hashable, first: int, last: int, consecutive: bool = True) -> tuple[bool, tuple[int, int] | None]:
        prev = self.last.get(key)
        if prev is None:
            self.last[key] = last
            return True, None
        if last <= prev:
            return False, None
        self.last[key] = last
        if consecutive and first > prev + 1:
            return True, (prev + 1, first - 1)
        return True, None

    def reset(self, key: Hashable) -> None:
        self.last.pop(key, None)


def _option_value(venue: str, name: str, default: Any, value: Any) -> Any:
    """An option of the type of its default (a number for timings and limits, a string or
    a flag where the default is one), so a bad config fails when the venue is made, not
    in a connection's supervisor later. Options whose default is None are not checked."""
    if default is None or value is None and name in _NULLABLE:
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, (int, float)):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and isinstance(default, int) and not isinstance(value, int):
            ok = float(value).is_integer()
            value = int(value) if ok else value
    elif isinstance(default, str):
        ok = isinstance(value, str)
    else:
        return value
    if not ok:
        raise ConfigurationError(f"{venue}: option {name} must be {type(default).__name__}, not {value!r}")
    return value


_NULLABLE = {"lifetime", "keepalive_interval", "ws_ping_interval"}  # None turns these off


class Venue:
    """Sans-IO description of one provider. Subclass per venue."""

    name: ClassVar[str]
    default_url: ClassVar[str]
    #: environment variables holding credentials, by credential name
    credential_env: ClassVar[dict[str, tuple[str, ...]]] = {}
    #: stock providers take plain tickers like AAPL (routing order: alpaca, polygon, finnhub, ibkr)
    stock: ClassVar[bool] = False
    #: bar intervals the venue streams itself; others are built from trades
    native_bars: ClassVar[frozenset[str]] = frozenset()
    #: kinds the venue offers at all
    kinds: ClassVar[frozenset[str]] = frozenset({"trade", "quote", "bar", "book"})
    #: seconds a bar built from trades stays open after its end for trades still on their
    #: way (a venue that batches its trades sets it); per class, so replay builds bars with
    #: the value live used
    bar_grace: ClassVar[float] = 0.0

    # Limits and timings. All are instance attributes so tests and users can shorten them
    # (``DataStream(options={"binance": {"lifetime": 5}})``).
    max_streams_per_conn: int = 1024
    control_interval: float = 0.25  # seconds between control frames we send
    lifetime: float | None = None  # open a replacement connection after this many seconds
    rollover_overlap: float = 2.0  # keep the old connection this long after the new one is ready
    keepalive_interval: float | None = None  # application-level ping
    ws_ping_interval: float | None = 20.0  # protocol pings from us (None: the venue pings us)
    silence_timeout: float = 30.0  # no frame at all for this long: the connection is dead
    connect_timeout: float = 10.0
    ready_timeout: float = 15.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    max_frame_size: int = 64 * 1024 * 1024
    rest_timeout: float = 10.0

    # Gap healing (:mod:`wrdata.streaming.heal`): missing trades fetched from the venue's
    # history API. Off unless asked (``options={"binance": {"heal": True}}``; the capture
    # daemon turns it on), since it spends the venue's REST limits.
    heal: bool = False
    history_rate: float = 1.0  # history API weight per second this process may spend on healing
    history_burst: float = 5.0  # weight that may be spent at once
    heal_wait: float = 30.0  # how long a gap waits for the first trade after it before healing up to "now"
    heal_attempts: int = 6  # failed requests in a row before a gap is given up (unhealable / partly healed)
    heal_backoff: float = 1.0  # first retry delay when the venue names none (doubles, with jitter)
    heal_backoff_max: float = 60.0
    heal_concurrency: int = 2  # gaps healed at once
    #: what the venue's trade ids prove: ``"dense"`` (consecutive per symbol: an id range is
    #: complete when every id in it is found), ``"monotonic"`` (increasing: ids bound a time
    #: window, completeness comes from paging through the window), None (no usable order)
    history_ids: ClassVar[str | None] = None
    #: resolution of the stream's trade times in ns (Binance: ms): a heal window's edges are
    #: widened to whole units, and trades at the edges are matched against what was streamed
    trade_time_resolution: ClassVar[int] = 1

    def __init__(
        self,
        url: str | None = None,
        rest_url: str | None = None,
        credentials: dict[str, str] | None = None,
        **options: Any,
    ) -> None:
        self.url = (url or self.default_url).rstrip("/")
        self.rest_url = (rest_url or self.derive_rest_url(self.url)).rstrip("/")
        self.credentials = self.find_credentials(credentials or {})
        for k, v in options.items():
            if not hasattr(self, k) or k.startswith("_"):
                raise ConfigurationError(f"{self.name}: unknown option {k!r}")
            setattr(self, k, _option_value(self.name, k, getattr(self, k), v))
        self.sequencer = Sequencer()
        self.instruments: dict[str, Any] | None = None

    # -- configuration -------------------------------------------------------------
    @classmethod
    def find_credentials(cls, given: dict[str, str]) -> dict[str, str]:
        found = {k: v for k, v in given.items() if v}
        for key, names in cls.credential_env.items():
            if key not in found:
                for n in names:
                    if os.environ.get(n):
                        found[key] = os.environ[n]
                        break
        return found

    @classmethod
    def has_credentials(cls, given: dict[str, str] | None = None) -> bool:
        need = cls.credential_env.keys()
        have = cls.find_credentials(given or {})
        return all(k in have for k in need)

    def derive_rest_url(self, ws_url: str) -> str:
        """Same host and port, http(s): what the simulators serve and tests rely on."""
        from urllib.parse import urlsplit

        u = urlsplit(ws_url)
        scheme = "https" if u.scheme == "wss" else "http"
        return f"{scheme}://{u.netloc}"

    def describe(self) -> str:
        """For logs: never includes credentials."""
        return f"{self.name} at {self.url}"

    # -- symbols ---------------------------------------------------------------------
    @classmethod
    def claims(cls, symbol: str) -> bool:
        """Does a bare symbol of this shape belong to this venue?"""
        return False

    def venue_symbol(self, symbol: str) -> str:
        """The venue's own spelling of a user's symbol (``XBT/USD`` → ``BTC/USD``)."""
        return symbol

    def instruments_request(self) -> HttpRequest | None:
        """REST call listing the venue's instruments (None: cannot validate up front)."""
        return None

    def load_instruments(self, response: HttpResponse) -> dict[str, Any]:
        """Parse the instrument list into {venue symbol: info}."""
        raise NotImplementedError

    def unknown_symbol(self, symbol: str) -> UnknownSymbolError:
        hint = ""
        if self.instruments:
            import difflib

            close = difflib.get_close_matches(symbol, list(self.instruments), n=3)
            if close:
                hint = f" (did you mean {', '.join(close)}?)"
        return UnknownSymbolError(f"{self.name}: unknown symbol {symbol!r}{hint}")

    # -- subscriptions -----------------------------------------------------------------
    def check_channel(self, channel: Channel) -> None:
        if channel.message_kind not in self.kinds:
            raise UnsupportedChannelError(f"{self.name} has no {channel.kind} stream")

    def derives_bars(self, channel: Channel) -> bool:
        return channel.kind == "bar" and channel.interval not in self.native_bars

    def upstream(self, channel: Channel) -> Channel:
        """The venue channel a subscription is fed from (what is asked of the venue and recorded).

        Itself, or ``trade`` for bars the venue does not stream (built by
        :class:`~wrdata.streaming.bars.BarBuilder`). A venue that streams short bars may
        return a bar channel instead (IBKR: ``bar:5s`` for ``bar:1m``); those are resampled
        by :class:`~wrdata.streaming.bars.BarResampler`. Live and replay sources both wire
        subscriptions from this, so derived bars replay as they were built live.
        """
        return Channel("trade") if self.derives_bars(channel) else channel

    def streams(self, symbol: str, channel: Channel) -> list[Hashable]:
        """Venue streams (the unit of venue subscription and ref-counting) for one channel."""
        raise NotImplementedError

    def admit(self, have: set[Hashable], new: list[Hashable]) -> tuple[list[Hashable], list[Hashable]]:
        """Which of ``new`` streams a connection already carrying ``have`` may take: (take, rest).

        The default is the venue's per-connection stream limit; venues with other limits
        (Coinbase: a few level2 books per connection) override it.
        """
        room = max(0, self.max_streams_per_conn - len(have))
        return new[:room], new[room:]

    def stream_target(self, stream: Hashable) -> tuple[str | None, str | None]:
        """(symbol, channel route) a venue stream feeds; used to address gap events."""
        raise NotImplementedError

    def connection_group(self, stream: Hashable) -> Hashable:
        """Streams of different groups never share a connection.

        For venues whose streams live behind different URLs of one provider (Alpaca's
        stock feed and crypto feed, Polygon's ``/stocks`` and ``/crypto`` clusters): the
        runner gives each group its own connections, and a session's streams all belong
        to one group, so it can derive its URL from them.
        """
        return None

    def session(self, conn: int, streams: list[Hashable]) -> Session:
        raise NotImplementedError

    def client(self, sink, raw_sink=None, on_fatal=None, transport: str | None = None):
        """The I/O side for this venue: the shared WebSocket runner unless the venue has its own."""
        from .runner import WsClient

        return WsClient(self, sink, raw_sink, on_fatal, transport)

    def history_pager(self, spec):
        """A :class:`~wrdata.streaming.heal.HistoryPager` fetching the trades of one heal
        window (:class:`~wrdata.streaming.heal.HealSpec`), or None: the venue has no usable
        history API (gaps then get an ``unhealable`` outcome)."""
        return None


_MAX_BAD_KINDS = 100  # kinds of bad frame logged per connection


class Session:
    """One physical connection's protocol state. Subclass per venue."""

    def __init__(self, venue: Venue, conn: int, streams: Iterable[Hashable] = ()) -> None:
        self.venue = venue
        self.provider = venue.name
        self.conn = conn
        self.streams: set[Hashable] = set(streams)
        self.outbox: list[str | bytes] = []
        self.requests: list[HttpRequest] = []
        self.ready = False
        self.fatal: Exception | None = None
        #: set when the venue asks us to move (e.g. a shutdown notice): the runner opens a
        #: replacement connection and switches over without a gap, as for a rollover
        self.replace_requested: str | None = None
        #: set when the venue reports a condition that only a new connection cures (an auth
        #: timeout, a slow-client error, a connection-limit error that may clear): the
        #: runner drops this connection and reconnects with backoff (an outage, with gap events)
        self.reconnect_requested: str | None = None
        self.bad_frames = 0
        self._bad_kinds: set[str] = set()

    # connection setup
    def url(self) -> str:
        return self.venue.url

    def headers(self) -> dict[str, str]:
        return {}

    def redact(self, payload: bytes) -> bytes:
        """What of a frame we send may be recorded in ``raw``.

        Sessions that send credentials (auth messages, signed subscriptions) return the
        frame with the secrets replaced; keys never reach a recording or a log.
        """
        return payload

    def public_url(self) -> str:
        """The connection URL as recorded and logged (no tokens)."""
        return redact_url(self.url())

    def on_open(self, ts_recv: int) -> list[StreamMessage]:
        """The socket is open: queue authentication / subscription frames."""
        return []

    # data
    def feed(self, payload: bytes, ts_recv: int, seq: int) -> list[StreamMessage]:
        raise NotImplementedError

    def on_response(self, request: HttpRequest, response: HttpResponse, ts_recv: int, seq: int) -> list[StreamMessage]:
        return []

    def on_sent(self, payload: bytes, ts_recv: int, seq: int) -> list[StreamMessage]:
        """A frame we sent (as recorded in ``raw``, redacted).

        Most sessions decide what they send and need nothing here. A session whose
        parsing depends on requests made by someone else (IBKR: ``ib_async`` assigns the
        request ids the answers carry) learns them here; its live client calls this for
        every frame it records as ``out``, and the rebuild driver does the same from ``raw``.
        """
        return []

    # subscription changes on an open connection
    def add(self, streams: list[Hashable]) -> None:
        raise NotImplementedError

    def remove(self, streams: list[Hashable]) -> None:
        raise NotImplementedError

    def keepalive(self) -> str | bytes | None:
        """An application-level ping frame, if the venue wants one."""
        return None

    def on_close(self, code: int | None, reason: str) -> Exception | None:
        """Map a close the venue initiated to a fatal error (None: just reconnect)."""
        return None

    def on_connect_error(self, status: int | None, error: Exception) -> Exception | None:
        """Map a failed connection attempt to a fatal error (None: retry with backoff).

        ``status`` is the HTTP status of a refused WebSocket upgrade, if there was one
        (venues that authenticate in the URL refuse a bad key with 401).
        """
        return None

    # helpers for subclasses
    def bad_frame(self, kind: str, payload: bytes, ts_recv: int, seq: int, err: Exception | str) -> list[StreamMessage]:
        """Count a frame that could not be parsed; log once per kind; report as an error event.

        The frame itself is already in ``raw``: nothing received is lost.
        """
        self.bad_frames += 1
        if kind not in self._bad_kinds:
            # kinds can come from the frame (an unknown type name): bounded, so hostile
            # input cannot grow the log or this set without end
            if len(self._bad_kinds) < _MAX_BAD_KINDS:
                self._bad_kinds.add(kind)
                log.warning("%s conn %d: cannot parse %s frame (%s): %.200r", self.provider, self.conn, kind, err, payload)
            elif len(self._bad_kinds) == _MAX_BAD_KINDS:
                self._bad_kinds.add("...")
                log.warning("%s conn %d: %d kinds of bad frames; further kinds are counted, not logged",
                            self.provider, self.conn, _MAX_BAD_KINDS)
        return [status_message(self.provider, "error", ts_recv, f"bad frame ({kind}): {err}"[:300], conn=self.conn, seq=seq)]

    def parser_failed(self, payload: bytes, ts_recv: int, seq: int, err: Exception) -> list[StreamMessage]:
        """``feed`` raised: input the parser did not foresee (bytes that are not UTF-8,
        nesting deeper than the decoder allows) or a parser bug.

        Called by every caller of ``feed`` (the runner, IBKR's client, the rebuild driver),
        so live and rebuilt recordings report it alike: counted and reported as a bad
        frame of kind ``unexpected <exception type>``, its traceback logged once per kind.
        """
        kind = f"unexpected {type(err).__name__}"
        if kind not in self._bad_kinds and len(self._bad_kinds) < _MAX_BAD_KINDS:
            self._bad_kinds.add(kind)
            log.error("%s conn %d: parser raised on a frame: %.200r", self.provider, self.conn, payload, exc_info=err)
        return self.bad_frame(kind, payload, ts_recv, seq, err)
