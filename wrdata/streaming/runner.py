"""The one connection runner every WebSocket provider shares.

A provider's streams are spread over *slots* of at most ``venue.max_streams_per_conn``
streams. A slot is a logical connection: a supervisor task keeps one physical
connection (a *link*) open for it, through reconnects and rollovers:

- connect (timeout), let the session authenticate/subscribe, wait until it says it is
  ready (timeout), emit ``connected`` / ``subscribed``;
- send control frames no faster than ``venue.control_interval`` (Binance counts every
  incoming frame against 5 per second), perform the session's REST requests;
- application pings every ``keepalive_interval``, protocol pings every
  ``ws_ping_interval``; a silence watchdog per connection (any frame, ping or pong
  counts) replaces a connection that stops sending for ``silence_timeout``;
- on a drop: ``disconnected``, then reconnect with exponential backoff and full jitter,
  resubscribe everything, and emit a ``gap`` per affected stream covering the outage;
- before ``venue.lifetime`` runs out (Binance: 24 h), open a replacement link with the
  same streams, wait until it is delivering, then close the old one (``rollover``); the
  venue's :class:`~wrdata.streaming.base.Sequencer` drops what both delivered, so a
  rollover loses and duplicates nothing;
- a fatal error (credentials rejected) stops the slot and is reported to the caller.

Every frame received and sent, every REST response a session used and every status
event the runner made goes to the raw sink (``direction`` ``in``/``out``/``rest``/
``event``) before anything else sees it, so the recording can be rebuilt.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections.abc import Callable, Hashable, Iterable

import msgspec

from ..clock import recv_ns
from ..message import StreamMessage, status_message
from .base import HttpRequest, HttpResponse, Session, Venue, redact_url
from .http import fetch
from .transport import TransportClosed, handshake_status, transport_class

log = logging.getLogger("wrdata.streaming.runner")

MessageSink = Callable[[list[StreamMessage]], None]
RawSink = Callable[[str, int, int, int, str, str, bytes], None]
FatalSink = Callable[[str, Exception], None]

_conn_ids = itertools.count(1)
_encode = msgspec.json.Encoder().encode


def backoff_delay(venue: Venue, attempt: int) -> float:
    """Exponential backoff with jitter; the exponent is capped so that a venue down for
    days (thousands of attempts) cannot overflow the float arithmetic and kill the slot."""
    delay = min(venue.backoff_max, venue.backoff_initial * 2 ** min(max(attempt - 1, 0), 30))
    return delay * random.uniform(0.5, 1.0)  # jitter: many clients must not retry in step


def next_conn_id() -> int:
    """Connection ids are unique within the process; 0 is the provider's own REST calls."""
    return next(_conn_ids)


class Link:
    """One physical connection and its session."""

    __slots__ = (
        "client", "slot", "conn", "session", "transport", "url", "seq", "last_rx", "opened_at",
        "ready_at", "delivered", "closing", "wake", "tasks", "provider", "raw", "sink", "feed", "ended_outage",
    )

    def __init__(self, client: WsClient, slot: Slot, streams: Iterable[Hashable]) -> None:
        self.client = client
        self.slot = slot
        self.conn = next_conn_id()
        self.session: Session = client.venue.session(self.conn, list(streams))
        self.transport = None
        self.url = self.session.public_url()  # what raw rows and logs show; never a token
        self.seq = 0
        self.last_rx = 0
        self.opened_at = 0.0
        self.ready_at = 0.0
        self.delivered = 0
        self.closing = False
        self.wake = asyncio.Event()
        self.tasks: list[asyncio.Task] = []
        self.provider = client.venue.name
        self.raw = client.raw_sink
        self.sink = client.sink
        self.feed = self.session.feed
        self.ended_outage = False

    # -- the hot path ------------------------------------------------------------------
    def on_frame(self, payload: bytes, ts: int) -> None:
        if self.slot.outage is not None:  # the first frame after an outage: report it first
            self.client._report_outage(self, ts)
        self.last_rx = ts
        seq = self.seq
        self.seq = seq + 1
        raw = self.raw
        if raw is not None:
            raw(self.provider, self.conn, seq, ts, "in", self.url, payload)
        try:
            msgs = self.feed(payload, ts, seq)
        except Exception as e:  # a parser bug must not kill the connection; the frame is in raw
            msgs = self.session.parser_failed(payload, ts, seq, e)
        if msgs:
            self.delivered += len(msgs)
            self.sink(msgs)
        s = self.session
        if s.outbox or s.requests or s.fatal is not None or s.reconnect_requested:
            self.wake.set()
            if s.fatal is not None or s.reconnect_requested:
                self.slot.changed.set()  # the supervisor acts now, not at its next tick

    def on_activity(self, ts: int) -> None:
        self.last_rx = ts

    # -- everything else -----------------------------------------------------------------
    def next_seq(self) -> int:
        seq = self.seq
        self.seq = seq + 1
        return seq

    def send(self, data: str | bytes) -> None:
        if self.raw is not None:
            payload = data.encode() if isinstance(data, str) else data
            self.raw(self.provider, self.conn, self.next_seq(), recv_ns(), "out", self.url, self.session.redact(payload))
        self.transport.send(data)

    def event(self, status: str, reason: str | None = None, **fields) -> None:
        self.client.event(status, reason, conn=self.conn, seq=self.next_seq(), url=self.url, **fields)

    def deliver(self, msgs: list[StreamMessage]) -> None:
        if msgs:
            self.delivered += len(msgs)
            self.sink(msgs)


class Slot:
    """A logical connection: the streams it should carry and the task keeping it open."""

    def __init__(self, client: WsClient, streams: Iterable[Hashable], group: Hashable = None) -> None:
        self.client = client
        self.group = group  # the venue's connection group: streams of other groups never join
        self.streams: set[Hashable] = set(streams)
        self.link: Link | None = None
        self.task: asyncio.Task | None = None
        self.stopping = False
        self.changed = asyncio.Event()
        #: an unplanned outage not reported yet: (ts of the last frame before it, reason).
        #: Its ``gap`` events go out just before the first frame of the next connection
        #: (or when it is ready, if that comes first), so the gap ends where data resumes
        #: and consumers see the gap before what follows it.
        self.outage: tuple[int, str] | None = None


class WsClient:
    """Runs all connections of one WebSocket provider."""

    def __init__(
        self,
        venue: Venue,
        sink: MessageSink,
        raw_sink: RawSink | None = None,
        on_fatal: FatalSink | None = None,
        transport: str | None = None,
    ) -> None:
        self.venue = venue
        self.sink = sink
        self.raw_sink = raw_sink
        self.on_fatal = on_fatal
        self.transport_cls = transport_class(transport)
        self.slots: list[Slot] = []
        self.closed = False
        self.provider_seq = 0  # seq of conn 0 (provider-level REST calls and events)
        self.fatal: Exception | None = None

    # -- status events and provider-level REST -----------------------------------------
    def event(
        self, status: str, reason: str | None = None, *, conn: int = 0, seq: int | None = None, url: str = "", ts: int | None = None,
        **fields,
    ) -> StreamMessage:
        if seq is None:
            seq = self.provider_seq
            self.provider_seq += 1
        msg = status_message(self.venue.name, status, recv_ns() if ts is None else ts, reason, conn=conn, seq=seq, **fields)
        if self.raw_sink is not None:
            self.raw_sink(self.venue.name, conn, seq, msg.ts_recv, "event", url, _encode(msg))
        self.sink([msg])
        return msg

    async def request(self, req: HttpRequest, link: Link | None = None) -> tuple[HttpResponse, int, int]:
        """Perform a REST call and record its response, or its failure (status 0), in raw.

        Returns (response, ts_recv, seq); a failure without a response is returned as
        status 0 with the error text as the body, so what a session saw can be rebuilt.
        """
        try:
            resp = await fetch(req, timeout=self.venue.rest_timeout)
        except OSError as e:
            resp = HttpResponse(0, redact_url(f"{type(e).__name__}: {e}").encode())
        ts = recv_ns()
        if link is not None:
            conn, seq = link.conn, link.next_seq()
        else:
            conn, seq = 0, self.provider_seq
            self.provider_seq += 1
        if self.raw_sink is not None:
            self.raw_sink(self.venue.name, conn, seq, ts, "rest", redact_url(req.full_url), resp.body, resp.status)
        return resp, ts, seq

    # -- subscriptions -----------------------------------------------------------------
    def add(self, streams: list[Hashable]) -> None:
        if self.closed:
            raise RuntimeError(f"{self.venue.name} client is closed")
        if self.fatal is not None:
            raise self.fatal
        have = set().union(*(s.streams for s in self.slots)) if self.slots else set()
        groups: dict[Hashable, list[Hashable]] = {}
        group_of = self.venue.connection_group
        for s in streams:
            if s not in have:
                groups.setdefault(group_of(s), []).append(s)
        admit = self.venue.admit
        for group, new in groups.items():
            for slot in self.slots:
                if not new:
                    break
                if not slot.stopping and slot.group == group:
                    take, new = admit(slot.streams, new)
                    if take:
                        slot.streams.update(take)
                        slot.changed.set()
            while new:
                take, new = admit(set(), new)
                if not take:
                    raise ValueError(f"{self.venue.name}: no connection can carry {new[0]!r}")
                slot = Slot(self, take, group)
                self.slots.append(slot)
                slot.task = asyncio.get_running_loop().create_task(self._supervise(slot), name=f"wrdata-{self.venue.name}-slot")

    def remove(self, streams: list[Hashable]) -> None:
        gone = set(streams)
        for slot in self.slots:
            if slot.streams & gone:
                slot.streams -= gone
                slot.changed.set()
        for key in gone:
            self.venue.sequencer.reset(key)

    @property
    def streams(self) -> set[Hashable]:
        return set().union(*(s.streams for s in self.slots)) if self.slots else set()

    async def close(self) -> None:
        self.closed = True
        for slot in self.slots:
            slot.stopping = True
            slot.changed.set()
        tasks = [s.task for s in self.slots if s.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self.slots.clear()

    # -- the supervisor ------------------------------------------------------------------
    async def _supervise(self, slot: Slot) -> None:
        venue = self.venue
        attempt = 0
        link: Link | None = None
        try:
            while not slot.stopping:
                if not slot.streams:
                    break
                if link is None:
                    link = await self._open(slot)
                    if link is None:
                        if self.fatal is not None:
                            break
                        attempt += 1
                        if slot.outage is None:
                            slot.outage = (recv_ns(), "connect failed")
                        delay = backoff_delay(venue, attempt)
                        self.event("reconnecting", f"attempt {attempt + 1} in {delay:.2f}s")
                        if await self._sleep_or_stop(slot, delay):
                            break
                        continue
                    attempt = 0
                slot.link = link
                outcome = await self._run(slot, link)
                if outcome == "rollover":
                    new = await self._open(slot)
                    if new is None:  # keep the old link and try again after a pause
                        if await self._sleep_or_stop(slot, venue.backoff_initial * random.uniform(1.0, 2.0)):
                            break
                        continue
                    await self._await_delivery(new)
                    link.event("rollover", f"replaced by conn {new.conn}")
                    await self._close_link(link, "rollover")
                    link = new
                    continue
                if outcome == "stop":
                    if not slot.streams:
                        # retire the slot before awaiting the close: streams added meanwhile must go
                        # to a new slot, not to this one, whose supervisor is about to end
                        slot.stopping = True
                    await self._close_link(link, "unsubscribed" if not slot.streams else "closed")
                    link = None
                    break
                # the link died or went silent
                slot.outage = (link.last_rx or recv_ns(), outcome)
                await self._close_link(link, outcome, aborted=True)
                link = None
                if self.fatal is not None:
                    break
            if link is not None and not link.closing:
                await self._close_link(link, "closed")
        except asyncio.CancelledError:
            if link is not None:
                await self._close_link(link, "cancelled", aborted=True)
            raise
        finally:
            slot.link = None
            if slot in self.slots and (not slot.streams or self.fatal is not None):
                self.slots.remove(slot)

    async def _sleep_or_stop(self, slot: Slot, delay: float) -> bool:
        try:
            await asyncio.wait_for(self._wait_stop(slot), delay)
            return True
        except TimeoutError:
            return slot.stopping

    async def _wait_stop(self, slot: Slot) -> None:
        while not slot.stopping:
            slot.changed.clear()
            await slot.changed.wait()

    async def _open(self, slot: Slot) -> Link | None:
        venue = self.venue
        link = Link(self, slot, slot.streams)
        try:
            link.transport = await self.transport_cls.connect(
                link.session.url(),
                link.on_frame,
                link.on_activity,
                headers=link.session.headers(),
                max_frame_size=venue.max_frame_size,
                timeout=venue.connect_timeout,
            )
        except Exception as e:
            log.warning("%s: connect failed: %s", venue.describe(), _describe_error(e))
            link.event("error", f"connect failed: {_describe_error(e)}")
            fatal = link.session.on_connect_error(handshake_status(e), e)
            if fatal is not None:
                self._fail(fatal)
            return None
        link.opened_at = time.monotonic()
        link.last_rx = recv_ns()
        link.event("connected", link.url.split("?")[0])
        link.deliver(link.session.on_open(recv_ns()))
        link.tasks.append(asyncio.get_running_loop().create_task(self._pump(link)))
        link.wake.set()  # frames queued by on_open go out even if the session is ready at once
        deadline = time.monotonic() + venue.ready_timeout
        session = link.session
        while not session.ready:
            if (
                session.fatal is not None or session.reconnect_requested or link.transport.done.done()
                or time.monotonic() > deadline
            ):
                break
            link.wake.set()
            await asyncio.sleep(0.005)
        if not session.ready or session.reconnect_requested:
            why = (
                str(session.fatal) if session.fatal is not None
                else session.reconnect_requested if session.reconnect_requested
                else "closed during subscribe" if link.transport.done.done()
                else f"no subscription confirmed within {venue.ready_timeout}s"
            )
            if link.session.fatal is not None:
                self._fail(link.session.fatal)
            if link.ended_outage:  # frames came (and ended the outage) before it failed: a new one starts
                slot.outage = (link.last_rx, why)
            link.event("error", why)
            await self._close_link(link, why, aborted=True, quiet=True)
            return None
        link.ready_at = time.monotonic()
        link.event("subscribed", f"{len(link.session.streams)} streams")
        if slot.outage is not None:
            self._report_outage(link, recv_ns())
        return link

    async def _await_delivery(self, link: Link) -> None:
        """A rollover keeps the old link until the new one receives frames (or a grace period
        ends), then a little longer so both cover the switch; the Sequencer drops the overlap."""
        deadline = time.monotonic() + self.venue.rollover_overlap
        since = link.last_rx
        while time.monotonic() < deadline and link.last_rx == since:
            await asyncio.sleep(0.01)
        await asyncio.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    async def _pump(self, link: Link) -> None:
        """Send queued control frames (throttled) and perform REST requests for one link."""
        session = link.session
        interval = self.venue.control_interval
        last_send = 0.0
        while not link.closing:
            await link.wake.wait()
            link.wake.clear()
            while session.requests and not link.closing:
                req = session.requests.pop(0)
                link.tasks.append(asyncio.get_running_loop().create_task(self._rest(link, req)))
            while session.outbox and not link.closing:
                wait = last_send + interval - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                    if link.closing:
                        return
                frame = session.outbox.pop(0)
                try:
                    link.send(frame)
                except Exception as e:
                    log.debug("%s conn %d: send failed: %s", self.venue.name, link.conn, e)
                    return
                last_send = time.monotonic()

    async def _rest(self, link: Link, req: HttpRequest) -> None:
        resp, ts, seq = await self.request(req, link)
        if link.closing:
            return
        try:
            link.deliver(link.session.on_response(req, resp, ts, seq))
        except Exception as e:
            log.exception("%s: handling REST response failed", self.venue.name)
            link.event("error", f"REST response handling failed: {e!r}"[:300])
        link.wake.set()

    async def _run(self, slot: Slot, link: Link) -> str:
        """Watch one ready link until it must be replaced; say why."""
        venue = self.venue
        session = link.session
        tick = min(1.0, venue.silence_timeout / 4, *(x / 2 for x in (venue.keepalive_interval, venue.ws_ping_interval) if x))
        last_keepalive = last_ping = time.monotonic()
        while True:
            if slot.stopping or not slot.streams:
                return "stop"
            self._reconcile(slot, link)
            if session.fatal is not None:
                self._fail(session.fatal)
                return f"fatal: {session.fatal}"
            if session.reconnect_requested:
                log.warning("%s conn %d: %s; reconnecting", venue.name, link.conn, session.reconnect_requested)
                return session.reconnect_requested
            done = link.transport.done
            if done.done():
                t = link.transport
                err = session.on_close(t.close_code, t.close_reason)
                if err is not None:
                    self._fail(err)
                return f"closed by venue (code {t.close_code}{', ' + t.close_reason if t.close_reason else ''})"
            now = time.monotonic()
            if (recv_ns() - link.last_rx) / 1e9 > venue.silence_timeout:
                log.warning("%s conn %d: silent for %.1fs, replacing", venue.name, link.conn, venue.silence_timeout)
                return f"silent for {venue.silence_timeout}s"
            if venue.lifetime is not None and now - link.opened_at >= venue.lifetime:
                return "rollover"
            if session.replace_requested:
                log.info("%s conn %d: %s; switching connections", venue.name, link.conn, session.replace_requested)
                return "rollover"
            if venue.keepalive_interval and now - last_keepalive >= venue.keepalive_interval:
                frame = session.keepalive()
                if frame is not None:
                    session.outbox.append(frame)
                    link.wake.set()
                last_keepalive = now
            if venue.ws_ping_interval and now - last_ping >= venue.ws_ping_interval:
                try:
                    link.transport.ping()
                except Exception:
                    pass
                last_ping = now
            slot.changed.clear()
            try:
                await asyncio.wait_for(_first(done, slot.changed.wait()), tick)
            except TimeoutError:
                pass

    def _reconcile(self, slot: Slot, link: Link) -> None:
        """Bring the session's subscriptions in line with what the slot should carry."""
        session = link.session
        want, have = slot.streams, session.streams
        if want == have:
            return
        add = [s for s in want if s not in have]
        drop = [s for s in have if s not in want]
        if add:
            session.add(add)
        if drop:
            session.remove(drop)
        link.wake.set()

    def _report_outage(self, link: Link, end_ns: int) -> None:
        """One ``gap`` per stream of ``link`` for the slot's outage, ending at ``end_ns``."""
        start_ns, reason = link.slot.outage
        link.slot.outage = None
        link.ended_outage = True
        for stream in sorted(link.session.streams, key=repr):
            symbol, channel = self.venue.stream_target(stream)
            # stamped with the end time: in the recording's total order (ts_recv, ..., conn,
            # seq) the gap sorts just before the frame that ended it, as consumers saw it
            link.event("gap", f"disconnected: {reason}", symbol=symbol, channel=channel, gap_start_ns=start_ns,
                       gap_end_ns=end_ns, ts=end_ns)

    def _fail(self, err: Exception) -> None:
        if self.fatal is None:
            self.fatal = err
            log.error("%s: %s", self.venue.name, err)
            for slot in self.slots:
                slot.stopping = True
                slot.changed.set()
            if self.on_fatal is not None:
                self.on_fatal(self.venue.name, err)

    async def _close_link(self, link: Link, reason: str, aborted: bool = False, quiet: bool = False) -> None:
        link.closing = True
        link.wake.set()
        if link.transport is not None:
            if aborted:
                link.transport.abort()
            else:
                await link.transport.close()
        for t in link.tasks:
            t.cancel()
        if link.tasks:
            await asyncio.gather(*link.tasks, return_exceptions=True)
        if not quiet:
            link.event("disconnected", reason)


async def _first(fut: asyncio.Future, coro) -> None:
    task = asyncio.ensure_future(coro)
    try:
        await asyncio.wait([fut, task], return_when=asyncio.FIRST_COMPLETED)
    finally:
        task.cancel()


def _describe_error(e: BaseException) -> str:
    if isinstance(e, TransportClosed):
        return str(e)
    text = redact_url(str(e)) or type(e).__name__
    return f"{type(e).__name__}: {text}" if text != type(e).__name__ else text
