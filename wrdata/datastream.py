"""`DataStream`: the one async API, over live venues or over a recording.

```python
async with DataStream() as stream:
    async for tick in stream.stream("BTCUSDT"):
        print(tick.symbol, tick.price, tick.size, tick.timestamp)
```

A ``DataStream`` sits on a *source*: the live :class:`StreamManager` (venue
connections) or a replay source (``DataStream.replay(root, ...)``). ``stream()``,
``subscribe()``, ``stream_many()`` and ``disconnect_streams()`` behave the same on
both, status and gap events included.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import UTC
from typing import Any

from .channels import Channel, parse_channel, split_target
from .message import StreamMessage
from .streaming.hub import DEFAULT_QUEUE_SIZE, Consumer
from .streaming.manager import Source, StreamManager, Subscription
from .streaming.registry import PROVIDERS

log = logging.getLogger("wrdata")

Callback = Callable[[StreamMessage], Any]


class WallClock:
    """Live time. Replay gives a virtual clock with the same methods."""

    def ns(self) -> int:
        import time

        return time.time_ns()

    def now(self):
        from datetime import datetime

        return datetime.now(tz=UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class DataStream:
    """Live market data from every provider through one async API.

    Parameters
    ----------
    endpoints:
        ``{"binance": "ws://127.0.0.1:9001"}``: a provider's base URL (a simulator, a
        testnet, a proxy). Its WebSocket paths and its REST base (same host and port)
        derive from it unless ``rest_endpoints`` says otherwise. IBKR takes ``host:port``.
    credentials:
        ``{"alpaca": {"key": ..., "secret": ...}}``; also accepted as keyword arguments
        ``<provider>_<name>=`` (``alpaca_key=...``) and from each provider's customary
        environment variables. Never logged, never recorded.
    options:
        Per-provider timings and limits (``{"binance": {"lifetime": 600}}``): see each
        provider's venue class.
    queue_size:
        Each consumer's bounded queue (drops oldest when full, with an ``overflow``
        status event).
    include_status:
        Default for ``stream(include_status=...)``: also deliver status events
        (connected, disconnected, gap, error, overflow) for the consumer's symbols.
    heal:
        Fill gaps of trade streams from each venue's history API
        (:mod:`wrdata.streaming.heal`; per provider: ``options={"binance": {"heal": True}}``).
        Every gap then gets an outcome event (``healed``, or ``error`` saying
        ``partly healed``/``unhealable``).
    include_backfill:
        Consumers also receive the healed trades (``source="backfill"``, ``ts_fetched``),
        once each, after the gap's end, as they arrive from the history API.
    transport:
        ``"picows"`` (default, fastest) or ``"websockets"``.
    """

    def __init__(
        self,
        *,
        endpoints: dict[str, str] | None = None,
        rest_endpoints: dict[str, str] | None = None,
        credentials: dict[str, dict[str, str]] | None = None,
        options: dict[str, dict[str, Any]] | None = None,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        include_status: bool = False,
        transport: str | None = None,
        stock_order: Iterable[str] | None = None,
        source: Source | None = None,
        heal: bool = False,
        include_backfill: bool = False,
        **provider_settings: str,
    ) -> None:
        creds = {k: dict(v) for k, v in (credentials or {}).items()}
        for key, value in provider_settings.items():
            provider, _, name = key.partition("_")
            if provider not in PROVIDERS or not name:
                raise TypeError(f"DataStream() got an unexpected keyword argument {key!r}")
            creds.setdefault(provider, {})[name] = value
        self.queue_size = queue_size
        self.include_status = include_status
        self.include_backfill = include_backfill
        self._source: Source = source or StreamManager(
            endpoints=endpoints,
            rest_endpoints=rest_endpoints,
            credentials=creds,
            options=options,
            transport=transport,
            stock_order=tuple(stock_order) if stock_order else None,
            heal=heal,
        )
        self.clock = getattr(self._source, "clock", None) or WallClock()
        self._tasks: set[asyncio.Task] = set()
        self._consumers: set[Consumer] = set()
        self._closed = False

    # -- construction over a recording ---------------------------------------------------
    @classmethod
    def replay(cls, root: str, **kwargs: Any) -> DataStream:
        """A ``DataStream`` over a recording (see :mod:`wrdata.replay`)."""
        from .replay.source import ReplaySource

        stream_kwargs = {k: kwargs.pop(k) for k in ("queue_size", "include_status") if k in kwargs}
        return cls(source=ReplaySource(root, **kwargs), **stream_kwargs)

    @property
    def source(self) -> Source:
        return self._source

    @property
    def manager(self) -> StreamManager:
        if not isinstance(self._source, StreamManager):
            raise AttributeError("this DataStream replays a recording; it has no live manager")
        return self._source

    def add_tap(self, tap) -> None:
        """Attach a recorder that sees every frame and message before the fan-out."""
        self.manager.add_tap(tap)

    # -- subscribing -------------------------------------------------------------------------
    def _channel(self, stream_type: str | Channel, interval: str | None, depth: int | None) -> Channel:
        return parse_channel(stream_type, interval=interval, depth=depth)

    def _target(self, symbol: str, provider: str | None) -> tuple[str | None, str]:
        prefix, sym = split_target(symbol)
        if provider is not None:
            provider = provider.lower()
            if provider not in PROVIDERS:
                raise ValueError(f"unknown provider {provider!r}: expected one of {', '.join(sorted(PROVIDERS))}")
            if prefix is not None and prefix != provider:
                raise ValueError(f"{symbol!r} names provider {prefix!r} but provider={provider!r} was given")
        return provider or prefix, sym

    def _consumer(self, include_status: bool | None, queue_size: int | None, label: str) -> Consumer:
        if self._closed:
            raise RuntimeError("this DataStream is closed")
        c = Consumer(queue_size or self.queue_size, self.include_status if include_status is None else include_status, label,
                     include_backfill=self.include_backfill)
        self._consumers.add(c)
        return c

    async def _open(self, symbols: Iterable[str], channel: Channel, provider: str | None, consumer: Consumer) -> list[Subscription]:
        subs: list[Subscription] = []
        try:
            for symbol in symbols:
                p, sym = self._target(symbol, provider)
                subs.append(await self._source.subscribe(p, sym, channel, consumer))
        except BaseException:
            await self._close_subs(subs, consumer)
            raise
        return subs

    async def _close_subs(self, subs: list[Subscription], consumer: Consumer) -> None:
        for s in subs:
            try:
                await self._source.unsubscribe(s)
            except Exception:  # closing must not raise over the user's own exception
                log.debug("unsubscribe failed", exc_info=True)
        self._source.consumer_done(consumer)
        self._consumers.discard(consumer)

    async def _iterate(
        self,
        symbols: list[str],
        stream_type: str | Channel,
        interval: str | None,
        provider: str | None,
        depth: int | None,
        include_status: bool | None,
        queue_size: int | None,
        many: bool,
    ) -> AsyncIterator[StreamMessage]:
        """Subscribe, yield the consumer's messages until the source ends, unsubscribe.

        ``stream()`` and ``stream_many()`` return this generator itself rather than
        re-yielding its messages from one of their own: a generator layer costs ~60 ns
        a message, a tenth of all a replayed message costs (bench/replay.py). Nothing
        runs before the first ``__anext__``, so bad arguments raise from the iterator,
        as they always have.
        """
        channel = self._channel(stream_type, interval, depth)
        label = f"{len(symbols)} symbols {channel}" if many else f"{symbols[0]} {channel}"
        consumer = self._consumer(include_status, queue_size, label)
        subs = await self._open(symbols, channel, provider, consumer)
        try:
            q = consumer.queue
            popleft = q.popleft
            loop = asyncio.get_running_loop()
            # replay: the message being taken is the virtual clock's "now"
            taken = getattr(self._source, "tick_clock", None)
            while True:
                if consumer.dropped_pending:
                    ev = consumer.overflow_event()
                    if consumer.include_status:
                        yield ev
                if taken is None:
                    while q:
                        yield popleft()
                        if consumer.dropped_pending:
                            break
                else:
                    while q:
                        m = popleft()
                        taken(m.ts_recv)
                        yield m
                        if consumer.dropped_pending:
                            break
                if q or consumer.dropped_pending:
                    continue
                if consumer.error is not None:
                    raise consumer.error
                if consumer.finished:
                    return
                consumer.waiter = loop.create_future()
                await consumer.waiter
        finally:
            await self._close_subs(subs, consumer)

    def stream(
        self,
        symbol: str,
        stream_type: str | Channel = "trade",
        interval: str | None = "1m",
        provider: str | None = None,
        *,
        depth: int | None = None,
        include_status: bool | None = None,
        queue_size: int | None = None,
    ) -> AsyncIterator[StreamMessage]:
        """Messages of one symbol and kind, as they arrive.

        ``stream_type``: ``trade`` (alias ``ticker``), ``aggtrade``, ``quote``, ``bar``
        (alias ``kline``; ``interval`` or ``bar:5m``), ``book`` (alias ``depth``;
        ``depth=`` or ``book:20``), ``book:5:partial``. ``symbol`` may carry its provider
        (``kraken:BTC/USD``); otherwise its shape decides (``BTCUSDT`` → binance).
        Errors (unknown symbol, rejected credentials) raise from the iterator.
        """
        return self._iterate([symbol], stream_type, interval, provider, depth, include_status, queue_size, False)

    def subscribe(
        self,
        symbol: str,
        callback: Callback,
        stream_type: str | Channel = "trade",
        interval: str | None = "1m",
        provider: str | None = None,
        **kwargs: Any,
    ) -> asyncio.Task:
        """Call ``callback(msg)`` (sync or async) for every message, in a task; cancel it to stop."""
        it = self.stream(symbol, stream_type, interval, provider, **kwargs)
        return self._spawn(self._pump(it, callback), f"wrdata subscribe {symbol}")

    def stream_many(
        self,
        symbols: Iterable[str],
        callback: Callback | None = None,
        stream_type: str | Channel = "trade",
        interval: str | None = "1m",
        provider: str | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[StreamMessage] | Awaitable[None]:
        """Many symbols through one queue, in arrival order.

        Without ``callback``: an async iterator. With one: a coroutine that calls it for
        every message until cancelled (``await`` it, or wrap it in a task).
        """
        it = self._many(list(symbols), stream_type, interval, provider, **kwargs)
        if callback is None:
            return it
        return self._pump(it, callback)

    def _many(
        self,
        symbols: list[str],
        stream_type: str | Channel,
        interval: str | None,
        provider: str | None,
        *,
        depth: int | None = None,
        include_status: bool | None = None,
        queue_size: int | None = None,
    ) -> AsyncIterator[StreamMessage]:
        return self._iterate(symbols, stream_type, interval, provider, depth, include_status, queue_size, True)

    async def _pump(self, it: AsyncIterator[StreamMessage], callback: Callback) -> None:
        is_async = inspect.iscoroutinefunction(callback)  # other callables: awaited if they return an awaitable
        try:
            async for msg in it:
                if is_async:
                    await callback(msg)
                else:
                    r = callback(msg)
                    # isawaitable goes through an ABC check: skip it for the usual None
                    if r is not None and inspect.isawaitable(r):
                        await r
        finally:
            await it.aclose()

    def _spawn(self, coro: Awaitable[None], name: str) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("subscription task %s failed: %s", task.get_name(), task.exception())

    # -- lifecycle -----------------------------------------------------------------------------
    async def disconnect_streams(self) -> None:
        """Stop every subscription and close every venue connection."""
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for c in list(self._consumers):
            c.finish()
        await self._source.close()

    async def close(self) -> None:
        if not self._closed:
            await self.disconnect_streams()
            self._closed = True

    async def __aenter__(self) -> DataStream:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
