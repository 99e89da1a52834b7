"""Replay: a recording as a message source for :class:`~wrdata.datastream.DataStream`.

``DataStream.replay(root, speed=10, start=..., end=...)`` builds a ``DataStream`` on a
:class:`ReplaySource`; ``stream()``, ``subscribe()``, ``stream_many()`` and
``disconnect_streams()`` then behave as live: the same hub routes the messages, the same
book views and bar builders turn deltas and trades into what consumers see, status and
gap events arrive where they were recorded, and the end of the recording ends the
iterators.

How it runs
-----------
Subscriptions made before the first message is delivered (in practice: those made in
the same moment, e.g. by ``stream_many`` or several tasks started together; the source
waits ``settle`` seconds after the last one) decide what is read. A reader thread reads
the recording ahead window by window (:mod:`wrdata.replay.reader`: filters pushed
down, total order), converts rows to messages, and queues ``readahead`` windows, so
I/O and conversion overlap delivery. The delivery task paces by ``ts_recv`` gaps
(``speed=1`` real time, ``speed=N`` N times faster, ``None`` as fast as possible),
fires the virtual clock's timers at their place in the recording, and waits for
consumers to catch up instead of dropping messages (a backtest must see every message;
after ``backpressure_timeout`` seconds of a consumer not reading at all, the usual
overflow rule applies). A subscription made while the replay runs restarts the reader
at the current position and receives data from there on, as a live subscription would.

Which rows: the merged view of the dataset by default (each trade once across writers
and heals), or one writer's (``writers=[...]``); healed trades where they were received
(``backfill="received"``), at their event time (``"event"``), or not at all (``"none"``):
:mod:`wrdata.replay.merged`.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from typing import Any

from ..channels import Channel
from ..streaming import registry
from ..streaming.base import ConfigurationError
from ..streaming.manager import Source
from .clock import ReplayClock
from .merged import MergedView
from .reader import KIND_TABLES, Selection, iter_windows, recorded_providers, to_ns

log = logging.getLogger("wrdata.replay")

_END = object()
_HALF_TICK = 0.0005  # seconds: half the event loop's 1 ms timer granularity
_PACED_CHUNK = 512  # messages converted at a time when paced (~0.5 ms of the GIL)


class ReplaySource(Source):
    def __init__(
        self,
        root: str,
        *,
        speed: float | None = None,
        start: Any = None,
        end: Any = None,
        filesystem: Any = None,
        journal: bool = True,
        merged: bool = True,
        writers: list[str] | None = None,
        backfill: str = "received",
        window: float = 300.0,
        readahead: int = 2,
        settle: float = 0.05,
        backpressure_timeout: float = 5.0,
        batch: int = 512,
        batch_convert: int = 16_384,
    ) -> None:
        super().__init__()
        if speed is not None and not speed > 0:
            raise ValueError(f"speed must be positive or None (as fast as possible), got {speed!r}")
        self.root = str(root)
        self.speed = speed
        self.start = to_ns(start)
        self.end = to_ns(end)
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError("end must be after start")
        self.filesystem = filesystem
        self.journal = journal
        self.window = window
        self.readahead = readahead
        self.settle = settle
        self.backpressure_timeout = backpressure_timeout
        self.batch = batch
        self.batch_convert = batch_convert
        self.clock = ReplayClock()
        self.selection = Selection()
        # the merged view, one writer's, and where healed trades go (wrdata.replay.merged)
        view = MergedView(self.root, filesystem=filesystem, journal=journal, start=self.start, end=self.end, merged=merged,
                          writers=writers, backfill=backfill)
        self.selection.view = None if view.trivial else view
        self._venues: dict[str, Any] = {}
        self._refs: dict[tuple[str, str, str, str | None], int] = {}
        self._task: asyncio.Task | None = None
        self._changed = 0.0  # loop time of the last subscription change
        self._generation = 0
        self._reader: _Reader | None = None
        self._last_key: tuple | None = None
        self._closed = False
        self.delivered = 0
        self._recorded: list[str] | None = None

    # -- Source ----------------------------------------------------------------------------
    def _venue(self, provider: str):
        v = self._venues.get(provider)
        if v is None:
            v = self._venues[provider] = registry.venue_class(provider)()
        return v

    def recorded(self) -> list[str]:
        if self._recorded is None:
            self._recorded = recorded_providers(self.root, self.filesystem)
        return self._recorded

    def resolve(self, symbol: str) -> str:
        """Shape routing as live; a plain ticker goes to the first stock provider in the recording."""
        for name in registry.PROVIDERS:
            cls = registry.venue_class(name)
            if not cls.stock and cls.claims(symbol):
                return name
        recorded = self.recorded()
        for name in registry.STOCK_ORDER:
            if name in registry.PROVIDERS and name in recorded and registry.venue_class(name).claims(symbol):
                return name
        raise ConfigurationError(
            f"cannot tell which provider {symbol!r} belongs to in {self.root}: write it as provider:symbol "
            f"(recorded providers: {', '.join(recorded) or 'none'})"
        )

    async def prepare(self, provider: str | None, symbol: str, channel: Channel) -> tuple[str, str, Channel]:
        if provider is None:
            provider = self.resolve(symbol)
        venue = self._venue(provider)
        venue.check_channel(channel)
        return provider, venue.venue_symbol(symbol), venue.upstream(channel)

    async def acquire(self, provider: str, symbol: str, channel: Channel) -> None:
        if self._closed:
            raise RuntimeError("this replay is closed")
        table = KIND_TABLES[channel.kind]
        key = (table, provider, symbol, channel.route)
        n = self._refs.get(key, 0)
        self._refs[key] = n + 1
        if n == 0:
            self.selection.add(table, provider, symbol, channel.route)
            self.selection.add("events", provider, symbol)
            self._changed = asyncio.get_running_loop().time()
            if self._task is None:
                self._task = asyncio.get_running_loop().create_task(self._run(), name="wrdata-replay")
            elif self._reader is not None:
                self._restart()

    async def release(self, provider: str, symbol: str, channel: Channel) -> None:
        # routes are detached by Source.unsubscribe; rows still read for it go nowhere
        key = (KIND_TABLES[channel.kind], provider, symbol, channel.route)
        n = self._refs.get(key, 0) - 1
        if n <= 0:
            self._refs.pop(key, None)
        else:
            self._refs[key] = n

    async def close(self) -> None:
        self._closed = True
        if self._reader is not None:
            self._reader.stop()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        self.subscriptions.clear()
        self.hub.finish_all()

    # -- the delivery task -----------------------------------------------------------------
    def _restart(self) -> None:
        """Read again from the last delivered message with the new selection."""
        self._reader.stop()
        self._generation += 1
        start = self._last_key[0] if self._last_key else self.start
        self._reader = _Reader(self, start, self._generation)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        # let subscriptions made together arrive before deciding what to read
        while loop.time() - self._changed < self.settle:
            await asyncio.sleep(self.settle)
        self._reader = _Reader(self, self.start, self._generation)
        try:
            await self._deliver(loop)
            await self._quiesce()
        finally:
            if self._reader is not None:
                self._reader.stop()
            self.hub.finish_all()

    async def _deliver(self, loop: asyncio.AbstractEventLoop) -> None:
        hub, clock, speed, batch = self.hub, self.clock, self.speed, self.batch
        publish = hub.publish
        wall0 = ts0 = None
        delivered_gen, restart_key = 0, None  # the first reader starts where asked: nothing to drop
        while True:
            reader = self._reader
            item = await loop.run_in_executor(None, reader.get)
            if item is _END:
                if reader is self._reader:
                    return
                continue
            gen, msgs = item
            if gen != self._generation:
                continue
            if gen != delivered_gen:
                delivered_gen, restart_key = gen, self._last_key
            if restart_key is not None:
                # a restarted reader reads again from the last delivered message's time:
                # drop what was delivered already (it can only be at that time)
                if msgs and msgs[0].ts_recv <= restart_key[0]:
                    last = restart_key
                    msgs = [m for m in msgs if (m.ts_recv, m.provider, m.conn, m.seq, m.idx) > last]
                else:
                    restart_key = None
            i, n = 0, len(msgs)
            while i < n:
                if gen != self._generation:
                    break  # a new subscription restarted the reader from here
                ts = msgs[i].ts_recv
                if wall0 is None:
                    wall0, ts0 = loop.time(), ts
                    clock.start(ts)
                due = clock.next_due
                if due is not None and due <= ts:
                    if speed is not None:
                        await self._pace(loop, due, wall0, ts0)
                    await self._quiesce()  # everything before the timer is handled first
                    clock.fire_due(due)
                    hub.tick(due)
                    await asyncio.sleep(0)
                    await asyncio.sleep(0)
                    continue
                j = i + 1
                if speed is None:
                    stop = min(n, i + batch)
                    if due is None:
                        j = stop
                    else:
                        while j < stop and msgs[j].ts_recv < due:
                            j += 1
                else:
                    await self._pace(loop, ts, wall0, ts0)
                    horizon = ts0 + int((loop.time() - wall0) * speed * 1e9)
                    stop = min(n, i + batch)
                    while j < stop and msgs[j].ts_recv <= horizon and (due is None or msgs[j].ts_recv < due):
                        j += 1
                chunk = msgs[i:j] if (i or j < n) else msgs
                clock.set(msgs[i].ts_recv)
                if hub.timed:
                    hub.tick(msgs[i].ts_recv)
                publish(chunk)
                last = msgs[j - 1]
                self._last_key = (last.ts_recv, last.provider, last.conn, last.seq, last.idx)
                self.delivered += j - i
                i = j
                await self._backpressure()

    async def _pace(self, loop: asyncio.AbstractEventLoop, ts: int, wall0: float, ts0: int) -> None:
        delay = wall0 + (ts - ts0) / (self.speed * 1e9) - loop.time()
        # the event loop waits in whole milliseconds, rounded up (selectors): a timer
        # fires 0-1 ms late. Aiming half a tick early centres the error on the due time
        # (within ±0.5 ms, not 0 to +1 ms); what replayed code reads is the virtual clock.
        if delay > _HALF_TICK:
            await asyncio.sleep(delay - _HALF_TICK)

    async def _backpressure(self) -> None:
        """Yield to consumers; wait while any queue is over half full (bounded)."""
        await asyncio.sleep(0)
        consumers = self.hub.consumers
        if not any(len(c.queue) > c.maxsize // 2 for c in consumers):
            return
        deadline = time.monotonic() + self.backpressure_timeout
        while any(len(c.queue) > c.maxsize // 2 for c in consumers):
            if time.monotonic() > deadline:
                log.warning("a replay consumer has not read for %.1fs: its queue will overflow", self.backpressure_timeout)
                return
            await asyncio.sleep(0.0005)

    async def _quiesce(self) -> None:
        """Wait until every consumer has taken what it was given (bounded)."""
        deadline = time.monotonic() + self.backpressure_timeout
        await asyncio.sleep(0)
        while any(c.queue for c in self.hub.consumers) and time.monotonic() < deadline:
            await asyncio.sleep(0)

    @property
    def tick_clock(self):
        """Called by the DataStream with a message's ``ts_recv`` as a consumer takes it:
        that message's time is now. (The clock's own method: one call per message.)"""
        return self.clock.set

    # -- batch API -----------------------------------------------------------------------------
    def batches(self, max_rows: int | None = None):
        """(table, RecordBatch) in total order over what has been subscribed (see :func:`read_batches`)."""
        for w in iter_windows(self.root, self.selection, self.start, self.end, window=self.window,
                              filesystem=self.filesystem, journal=self.journal):
            yield from w.batches(max_rows)


class _Reader:
    """A thread reading windows ahead and converting them to messages."""

    def __init__(self, source: ReplaySource, start: int | None, generation: int) -> None:
        # readahead windows' worth of message chunks (the window is read as Arrow, and
        # converted a chunk at a time so that Python objects stay few)
        self.q: queue.Queue = queue.Queue(maxsize=max(1, source.readahead) * 4)
        self.stopped = threading.Event()
        self.generation = generation
        self.selection = source.selection.copy()
        self.thread = threading.Thread(
            target=self._run, args=(source, start), name="wrdata-replay-reader", daemon=True
        )
        self.thread.start()

    def _run(self, source: ReplaySource, start: int | None) -> None:
        try:
            for w in iter_windows(source.root, self.selection, start, source.end, window=source.window,
                                  filesystem=source.filesystem, journal=source.journal):
                if self.stopped.is_set():
                    return
                # paced, small chunks: converting holds the GIL (~1 µs a message) and a
                # 16K chunk would hold back a due message for up to the 5 ms switch interval
                chunk = source.batch_convert if source.speed is None else min(source.batch_convert, _PACED_CHUNK)
                for msgs in w.iter_messages(chunk):
                    while not self.stopped.is_set():
                        try:
                            self.q.put((self.generation, msgs), timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if self.stopped.is_set():
                        return
        except Exception:
            log.exception("reading the recording failed")
        finally:
            while not self.stopped.is_set():
                try:
                    self.q.put(_END, timeout=0.1)
                    break
                except queue.Full:
                    continue

    def get(self):
        while True:
            try:
                return self.q.get(timeout=0.1)
            except queue.Empty:
                if self.stopped.is_set() or not self.thread.is_alive():
                    try:
                        return self.q.get_nowait()
                    except queue.Empty:
                        return _END

    def stop(self) -> None:
        self.stopped.set()
