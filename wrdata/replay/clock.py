"""The virtual clock of a replay: recording time for the code being replayed.

``now()``/``ns()`` are the ``ts_recv`` of the message being delivered (or of the timer
firing). ``await clock.sleep(s)`` and ``clock.call_at(ns, fn)``/``call_later(s, fn)``
fire in recording time: the replay source delivers every message received before a
timer's due time, fires the timer, lets the woken code run, then goes on. Timers due at
the same instant fire in the order they were set. So a strategy that acts on timers
replays identically too, at any speed.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from datetime import datetime
from typing import Any

from ..message import ns_to_datetime


class ReplayClock:
    def __init__(self) -> None:
        self._now = 0
        self._started = False
        self._timers: list[tuple[int, int, Callable[[], Any]]] = []
        self._relative: list[tuple[int, int, Callable[[], Any]]] = []  # set before the replay started
        self._ids = itertools.count()

    # -- reading ---------------------------------------------------------------------------
    def ns(self) -> int:
        return self._now

    def now(self) -> datetime:
        return ns_to_datetime(self._now)

    # -- timers ----------------------------------------------------------------------------
    def call_at(self, ns: int, fn: Callable[[], Any]) -> None:
        """Call ``fn()`` when recording time reaches ``ns`` (before messages received after it)."""
        heapq.heappush(self._timers, (int(ns), next(self._ids), fn))

    def call_later(self, seconds: float, fn: Callable[[], Any]) -> None:
        if not self._started:  # relative to the recording's first message, once known
            self._relative.append((int(seconds * 1e9), next(self._ids), fn))
            return
        self.call_at(self._now + int(seconds * 1e9), fn)

    async def sleep(self, seconds: float) -> None:
        """Sleep in recording time."""
        fut = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not fut.done():
                fut.set_result(None)

        self.call_later(max(0.0, seconds), wake)
        await fut

    async def sleep_until(self, ns: int) -> None:
        await self.sleep(max(0, ns - self._now) / 1e9)

    # -- driven by the replay source -----------------------------------------------------------
    def start(self, ns: int) -> None:
        """The replay begins at ``ns`` (its first message): timers set before now count from it."""
        if self._started:
            return
        self._started = True
        self._now = max(self._now, ns)
        for offset, i, fn in self._relative:
            heapq.heappush(self._timers, (self._now + offset, i, fn))
        self._relative.clear()

    @property
    def next_due(self) -> int | None:
        return self._timers[0][0] if self._timers else None

    def set(self, ns: int) -> None:
        if ns > self._now:
            self._now = ns

    def fire_due(self, ns: int) -> bool:
        """Advance to ``ns``, firing every timer due at or before it; True if any fired."""
        fired = False
        while self._timers and self._timers[0][0] <= ns:
            due, _, fn = heapq.heappop(self._timers)
            self.set(due)
            fn()
            fired = True
        self.set(ns)
        return fired
