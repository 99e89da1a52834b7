"""Fan-out: routing messages to consumers, with bounded queues and shared stages.

The hub is the same live and in replay: a source (the live
:class:`~wrdata.streaming.manager.StreamManager` or a replay source) publishes venue
messages; the hub routes each by ``(provider, symbol, channel)`` to consumer queues and
to shared stages (book views, derived bars) that emit into consumer queues.

A consumer's queue is bounded (10,000 by default) and drops the *oldest* message when
full; the consumer then receives an ``overflow`` status event with the number dropped,
and the hub's ``on_overflow`` hook (metrics, logs) is told. Memory stays bounded no
matter how slow a consumer is, and a lagging consumer is visible, not silently late.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Hashable

from ..message import StreamMessage, status_message

log = logging.getLogger("wrdata.streaming.hub")

DEFAULT_QUEUE_SIZE = 10_000
OVERFLOW_LOG_INTERVAL = 10.0  # seconds between warnings about a consumer that stays behind


class Consumer:
    """One reader's bounded queue; ``DataStream`` drains it (``_iterate``) as an async iterator."""

    __slots__ = (
        "maxsize", "include_status", "queue", "waiter", "dropped", "dropped_pending", "error", "finished",
        "on_overflow", "providers", "symbols", "_overflowing", "label", "include_backfill",
    )

    def __init__(
        self, maxsize: int = DEFAULT_QUEUE_SIZE, include_status: bool = False, label: str = "", include_backfill: bool = False
    ) -> None:
        if maxsize <= 0:
            raise ValueError("queue size must be positive")
        self.maxsize = maxsize
        self.include_status = include_status
        #: live: also receive trades healed from the venue's history (source "backfill")
        self.include_backfill = include_backfill
        self.queue: deque[StreamMessage] = deque()
        self.waiter: asyncio.Future | None = None
        self.dropped = 0  # total over the consumer's life
        self.dropped_pending = 0  # not yet reported to the reader
        self.error: BaseException | None = None
        self.finished = False
        self.on_overflow: Callable[[Consumer, StreamMessage], None] | None = None
        self.providers: set[str] = set()
        self.symbols: set[tuple[str, str]] = set()
        self._overflowing = False
        self.label = label

    def put(self, msg: StreamMessage) -> None:
        q = self.queue
        if len(q) >= self.maxsize:
            dropped = q.popleft()
            self.dropped += 1
            self.dropped_pending += 1
            if not self._overflowing:
                self._overflowing = True
                if self.on_overflow is not None:
                    self.on_overflow(self, dropped)
        q.append(msg)
        w = self.waiter
        if w is not None:
            self.waiter = None
            if not w.done():
                w.set_result(None)

    def put_many(self, msgs: list[StreamMessage]) -> None:
        """``put`` of each of ``msgs`` in one step: what the hub does with a run of messages
        for one route (a replay chunk, a multi-event frame). Same queue, drops and events."""
        q = self.queue
        q.extend(msgs)
        over = len(q) - self.maxsize
        if over > 0:
            dropped = q[0]
            for _ in range(over):
                q.popleft()
            self.dropped += over
            self.dropped_pending += over
            if not self._overflowing:
                self._overflowing = True
                if self.on_overflow is not None:
                    self.on_overflow(self, dropped)
        w = self.waiter
        if w is not None:
            self.waiter = None
            if not w.done():
                w.set_result(None)

    def finish(self, error: BaseException | None = None) -> None:
        """No more messages will come: the reader ends (or raises ``error``) once drained."""
        if error is not None and self.error is None:
            self.error = error
        self.finished = True
        w = self.waiter
        if w is not None:
            self.waiter = None
            if not w.done():
                w.set_result(None)

    def overflow_event(self) -> StreamMessage:
        """The status event telling the reader how many messages were dropped since the last one."""
        n = self.dropped_pending
        self.dropped_pending = 0
        self._overflowing = False
        head = self.queue[0] if self.queue else None
        return status_message(
            head.provider if head else next(iter(self.providers), "wrdata"),
            "overflow",
            head.ts_recv if head else 0,
            f"consumer fell behind: {n} oldest messages dropped (queue size {self.maxsize})",
            dropped=n,
        )


class Hub:
    """Routes published messages to consumers and stages."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str | None, str | None], list[Callable[[StreamMessage], None]]] = {}
        self.stages: dict[Hashable, object] = {}
        self.consumers: set[Consumer] = set()
        self.timed: list = []  # stages with on_time(now_ns): derived bars
        self.overflows = 0
        self.on_overflow_hooks: list[Callable[[Consumer, StreamMessage], None]] = []
        self._overflow_logged: dict[Consumer, tuple[float, int]] = {}  # when, and the consumer's drops then

    # -- wiring ----------------------------------------------------------------------
    def attach(self, key: tuple[str, str | None, str | None], put: Callable[[StreamMessage], None]) -> None:
        self.routes.setdefault(key, []).append(put)

    def detach(self, key: tuple[str, str | None, str | None], put: Callable[[StreamMessage], None]) -> None:
        sinks = self.routes.get(key)
        if sinks is None:
            return
        try:
            sinks.remove(put)
        except ValueError:
            return
        if not sinks:
            del self.routes[key]

    def register(self, consumer: Consumer) -> None:
        if consumer not in self.consumers:
            self.consumers.add(consumer)
            consumer.on_overflow = self._overflowed

    def unregister(self, consumer: Consumer) -> None:
        self.consumers.discard(consumer)
        self._overflow_logged.pop(consumer, None)

    def _overflowed(self, consumer: Consumer, dropped: StreamMessage) -> None:
        self.overflows += 1
        # a consumer that stays behind overflows again after every overflow event it reads:
        # one warning, then one every OVERFLOW_LOG_INTERVAL with the count, not a log flood
        now = time.monotonic()
        last = self._overflow_logged.get(consumer)
        if last is None:
            log.warning("consumer %s fell behind (queue of %d full): dropping oldest messages", consumer.label or id(consumer), consumer.maxsize)
            self._overflow_logged[consumer] = (now, consumer.dropped)
        elif now - last[0] >= OVERFLOW_LOG_INTERVAL:
            log.warning("consumer %s still behind: %d messages dropped in the last %.0f s (%d in all)", consumer.label or id(consumer),
                        consumer.dropped - last[1], now - last[0], consumer.dropped)
            self._overflow_logged[consumer] = (now, consumer.dropped)
        for hook in self.on_overflow_hooks:
            hook(consumer, dropped)

    # -- the hot path ------------------------------------------------------------------
    def publish(self, msgs: list[StreamMessage]) -> None:
        routes = self.routes
        n = len(msgs)
        i = 0
        while i < n:
            m = msgs[i]
            if m.kind == "status":
                self._status(m)
                i += 1
                continue
            provider, symbol, channel = m.provider, m.symbol, m.channel
            sinks = routes.get((provider, symbol, channel))
            # a run of messages for one route (a replay chunk of one stream, a frame of many
            # events) goes into a consumer's queue in one step: put() per message was 2/3 of
            # the hub's cost in a replay (bench/replay.py)
            j = i + 1
            while j < n:
                x = msgs[j]
                if x.symbol != symbol or x.channel != channel or x.provider != provider or x.kind == "status":
                    break
                j += 1
            if sinks is not None:
                if j - i == 1:
                    for put in sinks:
                        put(m)
                else:
                    run = msgs[i:j]
                    for put in sinks:
                        c = getattr(put, "__self__", None)
                        if type(c) is Consumer and put.__func__ is Consumer.put:
                            c.put_many(run)
                        else:
                            for x in run:
                                put(x)
            i = j

    def publish_backfill(self, msgs: list[StreamMessage]) -> None:
        """Healed trades (:mod:`wrdata.streaming.heal`): only to consumers that asked for them
        (their routes are keyed ``backfill:<channel>``); stages (bars, books) never see them,
        since what they built from the stream is already out."""
        routes = self.routes
        for m in msgs:
            sinks = routes.get((m.provider, m.symbol, "backfill:" + (m.channel or "")))
            if sinks is not None:
                for put in sinks:
                    put(m)

    def _status(self, m: StreamMessage) -> None:
        provider, symbol = m.provider, m.symbol
        for c in self.consumers:
            if not c.include_status or provider not in c.providers:
                continue
            if symbol is None or (provider, symbol) in c.symbols:
                c.put(m)
        if m.status == "gap" and symbol is not None:
            # stages that keep state across messages must know their input has a hole
            for key, stage in self.stages.items():
                if key[1] == provider and key[2] == symbol and hasattr(stage, "on_gap"):
                    stage.on_gap(m)

    def tick(self, now_ns: int) -> None:
        for stage in self.timed:
            stage.on_time(now_ns)

    def fail(self, provider: str, error: BaseException, symbol: str | None = None) -> None:
        """End consumers of ``provider`` with ``error`` (only those of ``symbol`` when given:
        a venue refusing one symbol must not end the streams of the others)."""
        for c in list(self.consumers):
            if provider in c.providers and (symbol is None or (provider, symbol) in c.symbols):
                c.finish(error)

    def finish_all(self) -> None:
        for c in list(self.consumers):
            c.finish()
