"""Order books: one implementation for every venue, live and in replay.

Venue parsers turn their frames into *delta* messages (``bids``/``asks`` = changed
levels as ``(price, size)``, ``size == 0`` deletes, ``snapshot=True`` resets first);
that is also what the ``book`` table stores. :class:`BookView` applies those deltas to
an :class:`OrderBook` and emits what consumers receive: the top ``depth`` levels, best
first, ``snapshot=True`` on the first view after every reset. Replay feeds the stored
deltas through the same class, so a replayed book is the live book.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable

import msgspec

from ..message import StreamMessage

_replace = msgspec.structs.replace


class OrderBook:
    """Price levels of both sides; top-N reads are cheap at any book size.

    Prices are kept in ascending lists (bids negated) beside a price → size map, so an
    update is a dict write plus, for a new or removed level, one ``bisect`` and a
    C-level list insert/delete.
    """

    __slots__ = ("bids", "asks", "_bid_keys", "_ask_keys")

    def __init__(self) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self._bid_keys: list[float] = []  # -price, ascending = best bid first
        self._ask_keys: list[float] = []  # price, ascending = best ask first

    def clear(self) -> None:
        self.bids.clear()
        self.asks.clear()
        self._bid_keys.clear()
        self._ask_keys.clear()

    def set_bid(self, price: float, size: float) -> None:
        book = self.bids
        if size == 0:
            if book.pop(price, None) is not None:
                keys = self._bid_keys
                del keys[bisect_left(keys, -price)]
        else:
            if price not in book:
                keys = self._bid_keys
                keys.insert(bisect_left(keys, -price), -price)
            book[price] = size

    def set_ask(self, price: float, size: float) -> None:
        book = self.asks
        if size == 0:
            if book.pop(price, None) is not None:
                keys = self._ask_keys
                del keys[bisect_left(keys, price)]
        else:
            if price not in book:
                keys = self._ask_keys
                keys.insert(bisect_left(keys, price), price)
            book[price] = size

    def apply(self, bids: Iterable | None, asks: Iterable | None, reset: bool = False) -> None:
        if reset:
            self.clear()
        if bids:
            for p, q in bids:
                self.set_bid(p, q)
        if asks:
            for p, q in asks:
                self.set_ask(p, q)

    def top_bids(self, n: int) -> list[tuple[float, float]]:
        b = self.bids
        return [(-k, b[-k]) for k in self._bid_keys[:n]]

    def top_asks(self, n: int) -> list[tuple[float, float]]:
        a = self.asks
        return [(k, a[k]) for k in self._ask_keys[:n]]

    def truncate(self, depth: int) -> None:
        """Forget levels beyond ``depth`` (venues that stop updating levels out of range)."""
        for k in self._bid_keys[depth:]:
            del self.bids[-k]
        del self._bid_keys[depth:]
        for k in self._ask_keys[depth:]:
            del self.asks[k]
        del self._ask_keys[depth:]

    @property
    def best_bid(self) -> tuple[float, float] | None:
        return (-self._bid_keys[0], self.bids[-self._bid_keys[0]]) if self._bid_keys else None

    @property
    def best_ask(self) -> tuple[float, float] | None:
        return (self._ask_keys[0], self.asks[self._ask_keys[0]]) if self._ask_keys else None

    def __len__(self) -> int:
        return len(self.bids) + len(self.asks)


class BookView:
    """A stage: venue book deltas in, top-``depth`` views out, per consumer depth."""

    def __init__(self) -> None:
        self.book = OrderBook()
        self.synced = False  # a snapshot has been applied since the last reset/gap
        self.last: StreamMessage | None = None
        self.consumers: list[tuple[int, Callable[[StreamMessage], None]]] = []

    def add(self, depth: int, put: Callable[[StreamMessage], None]) -> None:
        self.consumers.append((depth, put))
        if self.synced and self.last is not None:  # a late joiner starts from the current book
            put(self._view(self.last, depth, True))

    def remove(self, put: Callable[[StreamMessage], None]) -> None:
        self.consumers = [(d, p) for d, p in self.consumers if p is not put]

    def on_gap(self, msg: StreamMessage) -> None:
        """A hole in the deltas: the book cannot be trusted until the next snapshot."""
        if msg.channel in (None, "book", "book:partial"):
            self.synced = False

    def on_message(self, msg: StreamMessage) -> None:
        snap = bool(msg.snapshot)
        self.book.apply(msg.bids, msg.asks, snap)
        if snap:
            self.synced = True
        elif not self.synced:
            return
        self.last = msg
        views: dict[int, StreamMessage] = {}
        for depth, put in self.consumers:
            v = views.get(depth)
            if v is None:
                v = views[depth] = self._view(msg, depth, snap)
            put(v)

    def _view(self, msg: StreamMessage, depth: int, snapshot: bool) -> StreamMessage:
        return _replace(
            msg,
            bids=self.book.top_bids(depth),
            asks=self.book.top_asks(depth),
            snapshot=snapshot,
            view=True,
            channel=f"book:{depth}" if msg.channel == "book" else f"book:{depth}:partial",
        )
