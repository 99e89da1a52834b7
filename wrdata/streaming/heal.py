"""Gap healing: the trades a stream missed, fetched from the venue's history API.

Every feed drops something (a reconnect window, a skipped trade id). When a ``gap``
status event names a trade stream, the healer fetches the missing trades from the
venue's public history API and delivers them flagged ``source="backfill"`` (with
``ts_fetched``) to the recorder taps, and to the live consumers that asked for them
(``Consumer.include_backfill``). Every gap then gets an **outcome** event:

- ``healed`` (``reason`` ``"healed: ..."``, ``dropped`` = trades the gap had lost): the
  history proves the window complete (every id of a dense id range found, or every page
  of a time window fetched and its edges reconciled with what was streamed);
- ``error`` with ``reason`` ``"partly healed: ..."``: some of it was found, the rest stays
  a gap (history too short, the API failed midway, an edge that cannot be reconciled);
- ``error`` with ``reason`` ``"unhealable: ..."``: nothing could be proven (no history
  API, no credentials or plan for it, the API down for ``heal_attempts`` requests).

Outcome events carry the gap's own ``gap_start_ns``/``gap_end_ns``/``first_missing_id``/
``last_missing_id``, so queries pair them with the gap. Nothing is invented: a trade is
backfilled only if the venue's history reports it, and what cannot be proven complete
stays a gap.

How it is split
---------------
The venue-specific part is a sans-IO :class:`HistoryPager` per venue (in the venue's
provider module, ``Venue.history_pager(spec)``): endpoints, paging, id spaces, parsing.
This module is the shared part: which trades a gap lost (the **window**, from the gap
event and the trades streamed around it), scheduling (background tasks that never block
the stream), one rate limiter per venue (weights, 429/418 and ``Retry-After``, backoff),
recording, de-duplication against what was streamed, and the outcome.

The window of a gap, in the venue's event time: from the last trade delivered before it
(``start_ns``, ``after_id``) to the first trade delivered after it (``end_ns``,
``before_id``), both included and widened to whole units of the stream's time resolution
(Binance sends milliseconds: the whole millisecond). A gap on a venue with dense ids whose
next trade continues the ids lost nothing and is healed without a request. If no trade
comes within ``heal_wait`` seconds, the window ends at that moment.

Recording and rebuilding
------------------------
Each heal job has a connection id of its own. Before its first request the job's
:class:`HealSpec` is recorded in ``raw`` (direction ``heal``), then every request's
response (direction ``rest``, with its HTTP status), and its outcome events. The rows a
job records are a pure function of its spec and those responses: every trade the
history reports inside the window, including the window's edge trades that were also
streamed (the job's rows are a complete account of its window, which is what the
multiset rule of :mod:`wrdata.dedupe` needs); readers drop the duplicates. So
:class:`~wrdata.streaming.driver.RawDriver` re-derives them exactly (:class:`HealReplay`).
Live consumers get only trades they have not seen (same rule, :func:`wrdata.dedupe.trade_key`).

Venues without trade ids at all (Finnhub, IBKR) reconcile the window's edge units by
(time, price, size) multiset: the job waits until the stream has passed the window's end
unit, so the streamed edge trades are known and recorded in the spec; an edge whose
streamed trades are not all found in the history cannot be matched and stays unhealed.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter, deque
from typing import Any

import msgspec

from ..clock import recv_ns
from ..dedupe import trade_key
from ..message import StreamMessage, status_message
from .base import HttpRequest, HttpResponse, Venue, redact_url

log = logging.getLogger("wrdata.streaming.heal")

#: channels healed (aggregate trades are another id space, served by no history by id)
HEAL_CHANNELS = frozenset({"trade"})
#: HTTP statuses worth retrying (0: no response at all)
RETRY_STATUSES = frozenset({0, 408, 418, 425, 429, 500, 502, 503, 504})
#: raw direction of a heal job's spec
DIRECTION = "heal"
#: trades kept per stream to know what was streamed just before a gap
RECENT = 1024

_encode = msgspec.json.Encoder().encode


class HealSpec(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What one heal job fetches (recorded in ``raw``, so a rebuild re-derives its rows)."""

    symbol: str
    channel: str = "trade"
    #: ts_event of the last trade delivered before the gap (None: none was)
    start_ns: int | None = None
    #: ts_event of the first trade delivered after it, or the moment healing stopped waiting
    end_ns: int | None = None
    #: trade id of the last trade delivered before the gap / of the first one after it
    after_id: int | None = None
    before_id: int | None = None
    #: venues without ids: (ts_event, price, size) of the streamed trades in the edge units
    edges: list[tuple[int, float, float]] = []
    #: offline heals (``wrdata heal``): rows are stamped with this receive time (the gap's
    #: end, where a live heal would have delivered them), the fetch time is in ts_fetched
    stamp_ns: int | None = None
    reason: str = ""


class HistoryRetry(Exception):
    """The venue asked us to slow down (a rate-limit answer in a 200 body, e.g. Kraken)."""

    def __init__(self, reason: str, after: float | None = None) -> None:
        super().__init__(reason)
        self.after = after


class HistoryError(Exception):
    """An answer that retrying will not change (bad request, no plan, unknown symbol)."""


Row = tuple  # (ts_event, price, size, side, trade_id, trade_ref, exchange, conditions)


class HistoryPager:
    """Sans-IO paging through one heal window of one venue's history API.

    Subclasses implement :meth:`_next` (the next page's request, None when done) and
    :meth:`_page` (parse one 200 answer into :data:`Row` tuples, advance the cursor, set
    ``complete`` once the pages cover the window, or ``exhausted`` with a note when the
    history holds no more); this base class keeps the window, filters rows to it,
    de-duplicates pages that overlap, builds the backfill messages, reconciles edges
    (venues without ids) and says the outcome.

    The request a pager asks for stays the same until an answer to it is accepted, so a
    retried request (429, an outage) is the same URL again, and a rebuild feeding the
    recorded answers in order walks through the same states.
    """

    #: REST weight of one request (Binance's weights; 1 elsewhere)
    weight: float = 1.0

    def __init__(self, venue: Venue, spec: HealSpec) -> None:
        self.venue = venue
        self.spec = spec
        self.provider = venue.name
        self.conn = 0
        res = max(1, venue.trade_time_resolution)
        self.res = res
        #: the window in event time, inclusive, widened to whole units
        self.lo = spec.start_ns - spec.start_ns % res if spec.start_ns is not None else None
        self.hi = spec.end_ns - spec.end_ns % res + res - 1 if spec.end_ns is not None else None
        self.by_id = venue.history_ids is not None and spec.after_id is not None
        self.dense = venue.history_ids == "dense" and spec.after_id is not None and spec.before_id is not None
        self.complete = False  # the pages covered the window
        self.exhausted = False  # the history has nothing more (see notes)
        self.failed: str | None = None
        self.notes: list[str] = []
        self.requests = 0
        self.rows = 0  # rows recorded (in the window)
        self.found_ids: set[int] = set()
        self._seen: set[tuple] = set()
        self._pending: HttpRequest | None = None
        self._edge_rows: list[StreamMessage] = []  # venues without ids: edge-unit rows, held until the end
        self._ambiguous: list[str] = []
        self._finished = False

    # -- what subclasses implement --------------------------------------------------------
    def _next(self) -> HttpRequest | None:
        raise NotImplementedError

    def _page(self, request: HttpRequest, response: HttpResponse) -> list[Row]:
        raise NotImplementedError

    def _error(self, response: HttpResponse) -> Exception:
        """The exception for a non-200 answer that is not retried (venues refine the text)."""
        text = response.body[:200].decode(errors="replace").strip()
        if response.status in (401, 403):
            return HistoryError(f"history refused (HTTP {response.status}: {text}): no credentials or plan for it")
        return HistoryError(f"history request failed (HTTP {response.status}: {text})")

    # -- driven by the healer (live) and by HealReplay (rebuild) ---------------------------
    @property
    def done(self) -> bool:
        return self.complete or self.exhausted or self.failed is not None

    def next_request(self) -> HttpRequest | None:
        if self.done:
            return None
        if self._pending is None:
            self._pending = self._next()
            if self._pending is None and not self.done:
                self.complete = True
        return self._pending

    def on_response(self, request: HttpRequest, response: HttpResponse, ts_recv: int, seq: int) -> list[StreamMessage]:
        """Rows of one answer inside the window (raises HistoryRetry / HistoryError)."""
        if response.status != 200:
            raise self._error(response)
        rows = self._page(request, response)  # may raise; the cursor only moves on success
        self._pending = None
        self.requests += 1
        return self._messages(rows, ts_recv, seq)

    def fail(self, reason: str) -> None:
        if self.failed is None and not self.complete:
            self.failed = reason

    def finish(self, ts_recv: int, seq: int) -> list[StreamMessage]:
        """The end of the job: edge rows held back (venues without ids), once."""
        if self._finished:
            return []
        self._finished = True
        if not self._edge_rows:
            return []
        held, self._edge_rows = self._edge_rows, []
        if not self.complete:
            # an edge can only be reconciled against a complete account of its unit
            self._ambiguous.append("the window's edges (the history was not read to the end)")
            return []
        streamed: dict[int, Counter] = {}
        for t, p, s in self.spec.edges:
            streamed.setdefault(t - t % self.res, Counter())[(t, p, s)] += 1
        out = []
        by_unit: dict[int, list[StreamMessage]] = {}
        for m in held:
            by_unit.setdefault(m.ts_event - m.ts_event % self.res, []).append(m)
        for unit in sorted(set(by_unit) | set(streamed)):
            hist = Counter((m.ts_event, m.price, m.size) for m in by_unit.get(unit, ()))
            want = streamed.get(unit, Counter())
            if any(hist[k] < n for k, n in want.items()):
                # a streamed trade the history does not report: which history rows are the
                # streamed ones cannot be told, so none of this unit is backfilled
                self._ambiguous.append(f"edge {_fmt_ns(unit)}: streamed trades not in the history")
                continue
            for m in by_unit.get(unit, ()):
                out.append(msgspec.structs.replace(m, ts_recv=ts_recv if self.spec.stamp_ns is None else self.spec.stamp_ns,
                                                   seq=seq, idx=len(out)))
        self.rows += len(out)
        return out

    def outcome(self) -> tuple[str, str]:
        """(``healed`` | ``partly`` | ``unhealable``, why)."""
        sp = self.spec
        why = "; ".join(self.notes + ([self.failed] if self.failed else []) + self._ambiguous)
        if self.dense:
            want = sp.before_id - sp.after_id - 1
            got = len(self.found_ids)
            if got >= want:
                return "healed", f"ids {sp.after_id + 1}..{sp.before_id - 1} complete"
            missing = _ranges(sorted(set(range(sp.after_id + 1, sp.before_id)) - self.found_ids))
            text = f"{got} of {want} ids found; missing {missing}" + (f" ({why})" if why else "")
            return ("partly" if got else "unhealable"), text
        if self.complete and not self._ambiguous:
            return "healed", "window complete"
        if self.rows or self.complete:
            return "partly", why or "the history ended before the window did"
        return "unhealable", why or "nothing found"

    # -- helpers --------------------------------------------------------------------------
    def in_window(self, ts_event: int | None, trade_id: int | None) -> bool:
        sp = self.spec
        if self.by_id and trade_id is not None:
            if trade_id <= sp.after_id:
                return False
            if sp.before_id is not None:
                return trade_id < sp.before_id
            return self.hi is None or ts_event is None or ts_event <= self.hi
        if ts_event is None:
            return False
        return (self.lo is None or ts_event >= self.lo) and (self.hi is None or ts_event <= self.hi)

    def _messages(self, rows: list[Row], ts_recv: int, seq: int) -> list[StreamMessage]:
        out: list[StreamMessage] = []
        sp = self.spec
        stamp = sp.stamp_ns if sp.stamp_ns is not None else ts_recv
        ids = self.by_id
        res, lo, hi = self.res, self.lo, self.hi
        for ts_event, price, size, side, trade_id, trade_ref, exchange, conditions in rows:
            if not self.in_window(ts_event, trade_id):
                continue
            m = StreamMessage(
                provider=self.provider, symbol=sp.symbol, kind="trade", ts_recv=stamp, ts_event=ts_event, conn=self.conn,
                seq=seq, idx=len(out), source="backfill", channel=sp.channel, price=price, size=size, side=side,
                trade_id=trade_id, trade_ref=trade_ref, exchange=exchange, conditions=conditions, ts_fetched=ts_recv,
            )
            key = trade_key(m)
            if key[0]:
                if key in self._seen:  # overlapping pages (a window split at a shared second)
                    continue
                self._seen.add(key)
                if trade_id is not None:
                    self.found_ids.add(trade_id)
            elif not ids and ts_event is not None and (
                (lo is not None and ts_event < lo + res) or (hi is not None and ts_event > hi - res)
            ):
                self._edge_rows.append(m)  # reconciled with the streamed edge at the end
                continue
            out.append(m)
        self.rows += len(out)
        return out


def _ranges(ids: list[int], limit: int = 5) -> str:
    if not ids:
        return "none"
    runs: list[tuple[int, int]] = []
    for i in ids:
        if runs and i == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    text = ", ".join(f"{a}" if a == b else f"{a}..{b}" for a, b in runs[:limit])
    return text + (f" and {len(runs) - limit} more ranges" if len(runs) > limit else "")


def _fmt_ns(ns: int) -> str:
    from datetime import UTC, datetime

    s, frac = divmod(ns, 1_000_000_000)
    return f"{datetime.fromtimestamp(s, UTC):%Y-%m-%dT%H:%M:%S}.{frac:09d}Z"


def retry_after(response: HttpResponse) -> float | None:
    """``Retry-After`` in seconds, if the answer has one (HTTP dates are not used by these venues)."""
    v = (response.headers or {}).get("retry-after")
    if v is None:
        return None
    try:
        return max(0.0, float(v))
    except ValueError:
        return None


class RateLimiter:
    """A token bucket of REST weight per venue, shared by its heal jobs; ``hold()`` stops
    every job until a rate-limit answer's ``Retry-After`` has passed."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = max(rate, 1e-6)
        self.burst = max(burst, 1.0)
        self.tokens = self.burst
        self.stamp = time.monotonic()
        self.hold_until = 0.0
        self.waited = 0.0  # seconds spent waiting, for the bench and the logs

    def hold(self, seconds: float) -> None:
        self.hold_until = max(self.hold_until, time.monotonic() + seconds)

    async def acquire(self, weight: float) -> None:
        need = min(weight, self.burst)
        while True:
            now = time.monotonic()
            if now < self.hold_until:
                self.waited += self.hold_until - now
                await asyncio.sleep(self.hold_until - now)
                continue
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= need:
                self.tokens -= weight
                return
            wait = (need - self.tokens) / self.rate
            self.waited += wait
            await asyncio.sleep(wait)


async def drive(venue: Venue, pager: HistoryPager, limiter: RateLimiter, fetch, deliver, label: str = "") -> None:
    """Walk ``pager`` through the venue's history API: ``await fetch(request)`` performs
    and records a request (-> (response, ts_recv, seq)), ``deliver(rows)`` takes the rows
    of each answer. Rate-limit answers (429/418, or the venue's own in a 200) hold every
    job of the venue for ``Retry-After`` (or a backoff) and are not failures; outages and
    errors are retried ``heal_attempts`` times with backoff; an answer a retry cannot
    change (HistoryError) ends the job. Shared by live healing and ``wrdata heal``."""
    failures = 0  # failed answers in a row (outages, errors): heal_attempts of them give up
    throttled = 0  # rate-limit answers in a row: honoured, not failures, but not forever either
    try:
        while True:
            req = pager.next_request()
            if req is None:
                return
            await limiter.acquire(pager.weight)
            resp, ts, seq = await fetch(req)
            delay: float | None = None
            why = ""
            limited = False
            if resp.status in RETRY_STATUSES:
                delay = retry_after(resp)
                why = f"HTTP {resp.status}" if resp.status else resp.body[:120].decode(errors="replace")
                limited = resp.status in (418, 429)
            else:
                try:
                    rows = pager.on_response(req, resp, ts, seq)
                except HistoryRetry as e:
                    delay, why, limited = e.after, str(e), True
                except HistoryError as e:
                    pager.fail(str(e))
                    return
                else:
                    failures = throttled = 0
                    deliver(rows)
                    continue
            if limited:
                throttled += 1
                if delay is None:
                    delay = _backoff(venue, throttled)
                # the venue counts per IP (or key): every job of this venue waits
                limiter.hold(delay)
                log.info("%s: heal of %s: rate limited (%s), waiting %.1fs", venue.name, label, why, delay)
                if throttled < max(venue.heal_attempts, 20):
                    continue  # acquire() waits out the hold
                pager.fail(f"history API rate limit not lifted ({why}, {throttled} answers)")
                return
            failures += 1
            log.info("%s: heal of %s: %s (attempt %d of %d)", venue.name, label, why, failures, venue.heal_attempts)
            if failures >= venue.heal_attempts:
                pager.fail(f"history API unavailable ({why}, {failures} attempts)")
                return
            await asyncio.sleep(delay if delay is not None else _backoff(venue, failures))
    except asyncio.CancelledError:
        raise
    except Exception as e:  # a pager bug: the gap stays a gap, the stream goes on
        log.exception("%s: heal of %s failed", venue.name, label)
        pager.fail(f"healing failed: {e!r}"[:200])


def _backoff(v: Venue, n: int) -> float:
    return min(v.heal_backoff_max, v.heal_backoff * 2 ** min(n - 1, 20)) * random.uniform(0.5, 1.0)


def outcome_reason(pager: HistoryPager, new: int) -> tuple[str, str]:
    """(outcome, the outcome event's reason) once a pager is finished."""
    status, why = pager.outcome()
    if status == "healed":
        return status, f"healed: {new} trades backfilled ({pager.rows} in the window from {pager.requests} requests; {why})"
    if status == "partly":
        return status, f"partly healed: {new} trades backfilled; {why}"
    return status, f"unhealable: {why}"


# ---------------------------------------------------------------------------------------
# the live healer

_AWAIT_END, _EDGE, _RUNNING, _DONE = range(4)


class _Stream:
    """What was delivered on one (provider, symbol, channel), as far as healing needs."""

    __slots__ = ("recent", "jobs")

    def __init__(self) -> None:
        self.recent: deque[StreamMessage] = deque(maxlen=RECENT)
        self.jobs: list[_Job] = []

    # looked up when a gap comes, not kept up to date per trade: the tap runs per frame
    @property
    def last_ts(self) -> int | None:
        """``ts_event`` of the last trade delivered that has one."""
        return next((t.ts_event for t in reversed(self.recent) if t.ts_event is not None), None)

    @property
    def last_id(self) -> int | None:
        """``trade_id`` of the last trade delivered that has one."""
        return next((t.trade_id for t in reversed(self.recent) if t.trade_id is not None), None)


class _Job:
    __slots__ = (
        "heal", "venue", "symbol", "channel", "gaps", "state", "conn", "seq", "start_ns", "end_ns", "after_id",
        "before_id", "streamed", "edges", "timer", "pager", "task", "t_gap", "t_done", "new", "res", "hi",
    )

    def __init__(self, heal: _ProviderHeal, symbol: str, channel: str, gap: StreamMessage) -> None:
        self.heal = heal
        self.venue = heal.venue
        self.symbol = symbol
        self.channel = channel
        self.gaps = [gap]
        self.state = _AWAIT_END
        self.conn = 0
        self.seq = 0
        self.start_ns: int | None = None
        self.end_ns: int | None = None
        self.after_id: int | None = None
        self.before_id: int | None = None
        self.streamed: Counter = Counter()  # keys of trades streamed inside the window
        self.edges: list[tuple[int, float, float]] = []
        self.timer: asyncio.TimerHandle | None = None
        self.pager: HistoryPager | None = None
        self.task: asyncio.Task | None = None
        self.t_gap = time.monotonic()
        self.t_done: float | None = None
        self.new = 0  # trades delivered to consumers (not streamed)
        self.res = max(1, heal.venue.trade_time_resolution)
        self.hi: int | None = None

    def next_seq(self) -> int:
        s = self.seq
        self.seq = s + 1
        return s

    @property
    def multiset(self) -> bool:
        return self.venue.history_ids is None

    def lo(self) -> int | None:
        return None if self.start_ns is None else self.start_ns - self.start_ns % self.res

    def on_trade(self, m: StreamMessage) -> None:
        """A trade delivered on the stream after this job's gap."""
        if self.state == _AWAIT_END:
            self.end_ns = m.ts_event
            self.hi = None if m.ts_event is None else m.ts_event - m.ts_event % self.res + self.res - 1
            if self.venue.history_ids is not None and self.before_id is None:
                self.before_id = m.trade_id
            if (
                self.venue.history_ids == "dense" and self.after_id is not None and m.trade_id is not None
                and m.trade_id == self.after_id + 1
            ):
                self.heal.resolve_empty(self, "no trade ids skipped across it")
                return
            self._count(m)
            if self.multiset:
                self.state = _EDGE  # the end unit's streamed trades decide the edge: collect them first
            else:
                self.heal.start(self)
            return
        if self.hi is not None and m.ts_event is not None and m.ts_event > self.hi:
            if self.state == _EDGE:
                self.heal.start(self)
            return
        self._count(m)

    def _count(self, m: StreamMessage) -> None:
        self.streamed[trade_key(m)] += 1
        if self.state != _RUNNING and self.multiset and m.ts_event is not None:
            self.edges.append((m.ts_event, m.price, m.size))

    def timeout(self) -> None:
        self.timer = None
        if self.state == _AWAIT_END:
            # no trade since the gap: heal up to now (receive clock, the venue's as well as we know)
            self.end_ns = recv_ns()
            self.hi = self.end_ns - self.end_ns % self.res + self.res - 1
            self.heal.start(self)
        elif self.state == _EDGE:
            self.heal.start(self)


class _ProviderHeal:
    """One venue's healing: its streams, jobs, rate limiter."""

    def __init__(self, healer: Healer, venue: Venue, client: Any) -> None:
        self.healer = healer
        self.venue = venue
        self.client = client
        self.limiter = RateLimiter(venue.history_rate, venue.history_burst)
        self.slots = asyncio.Semaphore(max(1, venue.heal_concurrency))
        self.streams: dict[tuple[str, str], _Stream] = {}
        self.jobs: set[_Job] = set()
        self.done: list[_Job] = []  # finished jobs (the bench reads their timings)

    # -- gaps --------------------------------------------------------------------------------
    def gap(self, m: StreamMessage) -> None:
        key = (m.symbol, m.channel)
        st = self.streams.get(key)
        if st is None:
            st = self.streams[key] = _Stream()
        if m.first_missing_id is not None and self.venue.history_ids is not None:
            # an id gap found by the first trade after an outage belongs to the outage's job
            for job in st.jobs:
                if job.state == _AWAIT_END and job.after_id in (None, m.first_missing_id - 1):
                    job.gaps.append(m)
                    job.after_id = m.first_missing_id - 1
                    job.before_id = m.last_missing_id + 1 if m.last_missing_id is not None else None
                    return
        job = _Job(self, m.symbol, m.channel, m)
        job.conn = self.healer.next_conn()
        # the window starts at the last trade delivered before the gap; with none, where
        # the gap says it started (venues healing by time can still use that)
        job.start_ns = st.last_ts if st.last_ts is not None else m.gap_start_ns
        if m.first_missing_id is not None and self.venue.history_ids is not None:
            job.after_id = m.first_missing_id - 1
            job.before_id = m.last_missing_id + 1 if m.last_missing_id is not None else None
        else:
            job.after_id = st.last_id if self.venue.history_ids is not None else None
        lo = job.lo()
        if lo is not None:
            for t in st.recent:  # streamed trades in the window's first unit (or later)
                if t.ts_event is not None and t.ts_event >= lo:
                    job._count(t)
        st.jobs.append(job)
        self.jobs.add(job)
        job.timer = asyncio.get_running_loop().call_later(self.venue.heal_wait, job.timeout)

    def resolve_empty(self, job: _Job, why: str) -> None:
        """A gap that lost nothing (dense ids continue across it)."""
        self._forget(job)
        job.t_done = time.monotonic()
        self.healer.outcome(self, job, "healed", f"healed: 0 trades missing ({why})", 0, recv_ns())

    def _forget(self, job: _Job) -> None:
        job.state = _DONE
        if job.timer is not None:
            job.timer.cancel()
            job.timer = None
        st = self.streams.get((job.symbol, job.channel))
        if st is not None and job in st.jobs:
            st.jobs.remove(job)
        self.jobs.discard(job)
        self.done.append(job)
        del self.done[:-100]

    # -- running a job ---------------------------------------------------------------------------
    def start(self, job: _Job) -> None:
        if job.timer is not None:
            job.timer.cancel()
            job.timer = None
        spec = HealSpec(
            symbol=job.symbol, channel=job.channel, start_ns=job.start_ns, end_ns=job.end_ns,
            after_id=job.after_id, before_id=job.before_id, edges=sorted(job.edges) if job.multiset else [],
            reason="; ".join(g.reason or "gap" for g in job.gaps)[:300],
        )
        job.state = _RUNNING
        pager = self.venue.history_pager(spec)
        if pager is None:
            self._forget(job)
            self.healer.outcome(self, job, "unhealable", f"unhealable: {self.venue.name} has no history API wrdata can heal from", 0,
                                recv_ns())
            return
        pager.conn = job.conn
        job.pager = pager
        raw = self.client.raw_sink
        if raw is not None:
            raw(self.venue.name, job.conn, job.next_seq(), recv_ns(), DIRECTION, f"heal:{job.symbol}", _encode(spec))
        job.task = asyncio.get_running_loop().create_task(self.run(job), name=f"wrdata-heal-{self.venue.name}-{job.symbol}")

    async def run(self, job: _Job) -> None:
        pager = job.pager
        try:
            async with self.slots:
                await drive(self.venue, pager, self.limiter, lambda req: self.healer.fetch(self, job, req),
                            lambda rows: self.healer.deliver(self, job, rows), job.symbol)
        except asyncio.CancelledError:
            pager.fail("stopped before it finished")
            self._finish(job, cancelled=True)
            raise
        self._finish(job)

    def _finish(self, job: _Job, cancelled: bool = False) -> None:
        if job.state == _DONE:
            return
        self._forget(job)
        job.t_done = time.monotonic()
        pager = job.pager
        ts = recv_ns()
        seq = job.seq  # the first outcome event's seq: held-back edge rows are stamped with it
        rows = pager.finish(ts, seq)
        if rows:
            self.healer.deliver(self, job, rows)
        status, text = outcome_reason(pager, job.new)
        self.healer.outcome(self, job, status, text, job.new, ts)


class Healer:
    """The stream manager's healing tap: sees every message before the fan-out, heals in
    background tasks, delivers backfill to the other taps and to consumers that ask."""

    def __init__(self, manager: Any) -> None:
        self.manager = manager
        self.providers: dict[str, _ProviderHeal] = {}

    def next_conn(self) -> int:
        from .runner import next_conn_id

        return next_conn_id()

    def attach(self, venue: Venue, client: Any) -> None:
        if venue.name not in self.providers:
            self.providers[venue.name] = _ProviderHeal(self, venue, client)

    # -- the tap -------------------------------------------------------------------------------
    on_raw = None  # frames are not its business: the manager skips it for them

    def on_messages(self, msgs: list[StreamMessage]) -> None:
        providers = self.providers
        for m in msgs:
            ph = providers.get(m.provider)
            if ph is None:
                continue
            k = m.kind
            try:
                if k == "trade":
                    st = ph.streams.get((m.symbol, m.channel))
                    if st is None:
                        if m.channel not in HEAL_CHANNELS:
                            continue
                        st = ph.streams[(m.symbol, m.channel)] = _Stream()
                    if st.jobs:
                        for job in list(st.jobs):
                            job.on_trade(m)
                    st.recent.append(m)
                elif k == "status" and m.status == "gap" and m.channel in HEAL_CHANNELS and m.symbol is not None:
                    ph.gap(m)
            except Exception:  # healing must never break the stream
                log.exception("%s: healer failed on %s", m.provider, m)

    # -- I/O -------------------------------------------------------------------------------------
    async def fetch(self, ph: _ProviderHeal, job: _Job, req: HttpRequest) -> tuple[HttpResponse, int, int]:
        """Perform one history request and record its answer (or failure, status 0) in raw."""
        client = ph.client
        special = getattr(client, "history_fetch", None)  # clients that are not HTTP (IBKR)
        if special is not None:
            resp = await special(req)
        else:
            from .http import fetch

            try:
                resp = await fetch(req, timeout=ph.venue.rest_timeout)
            except OSError as e:
                resp = HttpResponse(0, redact_url(f"{type(e).__name__}: {e}").encode())
        ts = recv_ns()
        seq = job.next_seq()
        raw = client.raw_sink
        if raw is not None:
            raw(ph.venue.name, job.conn, seq, ts, "rest", redact_url(req.full_url), resp.body, resp.status)
        return resp, ts, seq

    def deliver(self, ph: _ProviderHeal, job: _Job, rows: list[StreamMessage]) -> None:
        if not rows:
            return
        for t in self.manager.taps:
            if t is not self:
                t.on_messages(rows)
        new = []
        streamed = job.streamed
        for m in rows:
            k = trade_key(m)
            if streamed.get(k):
                streamed[k] -= 1  # the consumer has it already
            else:
                new.append(m)
        job.new += len(new)
        if new:
            self.manager.hub.publish_backfill(new)

    def outcome(self, ph: _ProviderHeal, job: _Job, status: str, reason: str, n: int, ts: int) -> None:
        """One outcome event per gap the job answers, recorded and delivered like the runner's."""
        code = "healed" if status == "healed" else "error"
        raw = ph.client.raw_sink
        msgs = []
        for g in job.gaps:
            seq = job.next_seq()
            m = status_message(
                ph.venue.name, code, ts, reason[:300], symbol=job.symbol, conn=job.conn, seq=seq, channel=job.channel,
                gap_start_ns=g.gap_start_ns, gap_end_ns=g.gap_end_ns, first_missing_id=g.first_missing_id,
                last_missing_id=g.last_missing_id, dropped=n,
            )
            if raw is not None:
                raw(ph.venue.name, job.conn, seq, ts, "event", "", _encode(m))
            msgs.append(m)
        (log.info if code == "healed" else log.warning)("%s %s: %s", ph.venue.name, job.symbol, reason)
        self.manager._sinks()[0](msgs)

    async def close(self) -> None:
        tasks = [j.task for ph in self.providers.values() for j in list(ph.jobs) if j.task is not None]
        for ph in self.providers.values():
            for j in list(ph.jobs):
                if j.timer is not None:
                    j.timer.cancel()
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def pending(self) -> int:
        return sum(len(ph.jobs) for ph in self.providers.values())

    async def idle(self, timeout: float = 30.0) -> bool:
        """Wait until no heal job is open (tests, ``wrdata heal``)."""
        deadline = time.monotonic() + timeout
        while self.pending():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True


# ---------------------------------------------------------------------------------------
# rebuilding a job from raw


class HealReplay:
    """A heal job re-derived from ``raw``: its spec row, then its REST rows and events."""

    def __init__(self, venue: Venue, conn: int, payload: bytes) -> None:
        self.spec = msgspec.json.decode(payload, type=HealSpec)
        self.pager = venue.history_pager(self.spec)
        if self.pager is not None:
            self.pager.conn = conn

    def rest(self, url: str, status: int, payload: bytes, ts_recv: int, seq: int, path: Any) -> list[StreamMessage]:
        p = self.pager
        if p is None or status in RETRY_STATUSES:
            return []
        req = p.next_request()
        if req is None or path(redact_url(req.full_url)) != path(url):
            log.debug("heal conn %d: recorded answer to %s is not the request the pager expects", p.conn, url)
            return []
        try:
            return p.on_response(req, HttpResponse(status, payload), ts_recv, seq)
        except HistoryRetry:
            return []
        except HistoryError as e:
            p.fail(str(e))
            return []

    def event(self, msg: StreamMessage) -> list[StreamMessage]:
        if self.pager is None:
            return []
        return self.pager.finish(msg.ts_recv, msg.seq)


__all__ = [
    "DIRECTION",
    "HEAL_CHANNELS",
    "HealReplay",
    "HealSpec",
    "Healer",
    "HistoryError",
    "HistoryPager",
    "HistoryRetry",
    "RateLimiter",
    "drive",
    "outcome_reason",
    "retry_after",
]
