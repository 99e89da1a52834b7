"""Sources of messages and the subscription wiring they share.

:class:`Source` turns "this consumer wants (provider, symbol, channel)" into hub routes
and shared stages, identically for live data and for replay:

- trades, quotes, venue bars: a route straight to the consumer's queue;
- books: one :class:`~wrdata.streaming.book.BookView` per (provider, symbol) fed by the
  venue's deltas, emitting top-``depth`` views for every consumer;
- bars the venue does not stream: one :class:`~wrdata.streaming.bars.BarBuilder` per
  (provider, symbol, interval) behind the trade route, flagged ``derived``.

:class:`StreamManager` is the live source: it owns the venues and their clients and
ref-counts venue streams, so two consumers of one stream share one venue subscription
and the last to leave unsubscribes at the venue. Recorders ("taps") see every raw frame
and every venue message before the fan-out and are never subject to consumer overflow.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..channels import Channel
from ..clock import recv_ns
from ..message import StreamMessage
from . import registry
from .bars import BarBuilder, BarResampler
from .base import ConfigurationError, ProviderError, UnknownSymbolError, Venue
from .book import BookView
from .hub import Consumer, Hub

log = logging.getLogger("wrdata.streaming.manager")


class Tap(Protocol):
    """A recorder: sees everything before the fan-out, must not block. A tap that records no
    frames sets ``on_raw = None``."""

    def on_raw(
        self, provider: str, conn: int, seq: int, ts_recv: int, direction: str, url: str, payload: bytes, status: int | None = None
    ) -> None: ...

    def on_messages(self, msgs: list[StreamMessage]) -> None: ...


@dataclass(eq=False)
class Subscription:
    provider: str
    symbol: str
    channel: Channel
    consumer: Consumer | None
    upstream: Channel  # what the venue is asked for (trades, for derived bars)
    detach: list[Callable[[], None]] = field(default_factory=list)


def _bar_grace(provider: str) -> float:
    try:
        return registry.venue_class(provider).bar_grace
    except ConfigurationError:
        return 0.0  # a provider the registry does not list (tests)


class Source:
    """Subscription wiring shared by the live manager and replay."""

    def __init__(self) -> None:
        self.hub = Hub()
        self.subscriptions: list[Subscription] = []

    # implemented by sources
    async def prepare(self, provider: str | None, symbol: str, channel: Channel) -> tuple[str, str, Channel]:
        """Resolve the provider, the venue's spelling of the symbol and the upstream channel."""
        raise NotImplementedError

    async def acquire(self, provider: str, symbol: str, channel: Channel) -> None:
        raise NotImplementedError

    async def release(self, provider: str, symbol: str, channel: Channel) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    # shared
    async def subscribe(self, provider: str | None, symbol: str, channel: Channel, consumer: Consumer | None) -> Subscription:
        provider, symbol, upstream = await self.prepare(provider, symbol, channel)
        sub = Subscription(provider, symbol, channel, consumer, upstream)
        if consumer is not None:
            self._wire(sub, consumer)
        try:
            await self.acquire(provider, symbol, upstream)
        except BaseException:
            for undo in sub.detach:
                undo()
            raise
        self.subscriptions.append(sub)
        return sub

    async def unsubscribe(self, sub: Subscription) -> None:
        if sub not in self.subscriptions:
            return
        self.subscriptions.remove(sub)
        for undo in sub.detach:
            undo()
        await self.release(sub.provider, sub.symbol, sub.upstream)

    def _wire(self, sub: Subscription, consumer: Consumer) -> None:
        hub = self.hub
        hub.register(consumer)
        consumer.providers.add(sub.provider)
        consumer.symbols.add((sub.provider, sub.symbol))
        ch = sub.channel
        put = consumer.put
        if ch.kind == "book":
            key: Hashable = ("book", sub.provider, sub.symbol, ch.route)
            view = hub.stages.get(key)
            if view is None:
                view = hub.stages[key] = BookView()
                hub.attach((sub.provider, sub.symbol, ch.route), view.on_message)
            view.add(ch.depth or 10, put)

            def undo_book(view=view, key=key) -> None:
                view.remove(put)
                if not view.consumers:
                    hub.stages.pop(key, None)
                    hub.detach((sub.provider, sub.symbol, ch.route), view.on_message)

            sub.detach.append(undo_book)
        elif ch.kind == "bar" and sub.upstream != ch:
            # built from trades, or resampled from the venue's shorter bars (Venue.upstream)
            key = ("bar", sub.provider, sub.symbol, ch.interval)
            src = (sub.provider, sub.symbol, sub.upstream.route)
            builder = hub.stages.get(key)
            if builder is None:
                if sub.upstream.kind == "trade":
                    builder = BarBuilder(ch.interval, grace=_bar_grace(sub.provider))
                else:
                    builder = BarResampler(ch.interval, sub.upstream.interval or "")
                hub.stages[key] = builder
                hub.attach(src, builder.on_message)
                hub.timed.append(builder)
            builder.consumers.append(put)

            def undo_bar(builder=builder, key=key, src=src) -> None:
                builder.consumers.remove(put)
                if not builder.consumers:
                    hub.stages.pop(key, None)
                    hub.detach(src, builder.on_message)
                    hub.timed.remove(builder)

            sub.detach.append(undo_bar)
        else:
            route = (sub.provider, sub.symbol, ch.route)
            hub.attach(route, put)
            sub.detach.append(lambda: hub.detach(route, put))
            if consumer.include_backfill and ch.message_kind == "trade":
                # healed trades come on a route of their own (Hub.publish_backfill)
                healed = (sub.provider, sub.symbol, "backfill:" + ch.route)
                hub.attach(healed, put)
                sub.detach.append(lambda: hub.detach(healed, put))

    def consumer_done(self, consumer: Consumer) -> None:
        if not any(s.consumer is consumer for s in self.subscriptions):
            self.hub.unregister(consumer)


class StreamManager(Source):
    """The live source: venues, their connections, and ref-counted venue streams."""

    def __init__(
        self,
        endpoints: dict[str, str] | None = None,
        rest_endpoints: dict[str, str] | None = None,
        credentials: dict[str, dict[str, str]] | None = None,
        options: dict[str, dict[str, Any]] | None = None,
        transport: str | None = None,
        stock_order: tuple[str, ...] | None = None,
        heal: bool = False,
    ) -> None:
        super().__init__()
        #: heal gaps on every venue whose options do not say otherwise (Venue.heal)
        self.heal = heal
        self.endpoints = dict(endpoints or {})
        self.rest_endpoints = dict(rest_endpoints or {})
        self.credentials = {k: dict(v) for k, v in (credentials or {}).items()}
        self.options = {k: dict(v) for k, v in (options or {}).items()}
        self.transport = transport
        self.stock_order = tuple(stock_order or registry.STOCK_ORDER)
        self.venues: dict[str, Venue] = {}
        self.clients: dict[str, Any] = {}
        self.refs: dict[tuple[str, Hashable], int] = {}
        self.taps: list[Tap] = []
        self._ticker: asyncio.Task | None = None
        #: called with (provider, error) when a provider stops for good (credentials refused)
        self.fatal_hooks: list[Callable[[str, Exception], None]] = []
        self._instrument_locks: dict[str, asyncio.Lock] = {}
        #: gap healing (venues with the ``heal`` option): created with the first such client
        self.healer = None
        for name in list(self.endpoints) + list(self.rest_endpoints) + list(self.options):
            registry.venue_class(name)  # unknown provider names fail here, clearly

    # -- taps ------------------------------------------------------------------------------
    def add_tap(self, tap: Tap) -> None:
        """Attach a recorder; attach it before subscribing so it sees connections open."""
        self.taps.append(tap)
        for client in self.clients.values():
            client.sink, client.raw_sink = self._sinks()

    def _sinks(self):
        hub_publish = self.hub.publish
        on_messages = [t.on_messages for t in self.taps]
        # a tap without frames to record says so with on_raw = None: one call less per frame
        on_raw = [t.on_raw for t in self.taps if t.on_raw is not None]
        if not on_messages:
            sink = hub_publish
        elif len(on_messages) == 1:
            (tap_messages,) = on_messages

            def sink(msgs: list[StreamMessage]) -> None:
                tap_messages(msgs)
                hub_publish(msgs)
        else:
            def sink(msgs: list[StreamMessage]) -> None:
                for f in on_messages:
                    f(msgs)
                hub_publish(msgs)

        if len(on_raw) <= 1:
            return sink, (on_raw[0] if on_raw else None)

        def raw_many(*args) -> None:
            for f in on_raw:
                f(*args)

        return sink, raw_many

    # -- venues ------------------------------------------------------------------------------
    def venue(self, name: str) -> Venue:
        v = self.venues.get(name)
        if v is None:
            cls = registry.venue_class(name)
            opts = self.options.get(name, {})
            if self.heal and "heal" not in opts:
                opts = {**opts, "heal": True}
            v = cls(
                url=self.endpoints.get(name),
                rest_url=self.rest_endpoints.get(name),
                credentials=self.credentials.get(name),
                **opts,
            )
            self.venues[name] = v
        return v

    def client(self, name: str):
        c = self.clients.get(name)
        if c is None:
            sink, raw = self._sinks()
            venue = self.venue(name)
            c = self.clients[name] = venue.client(sink, raw, self._fatal, self.transport)
            if venue.heal:
                if self.healer is None:
                    from .heal import Healer

                    self.healer = Healer(self)
                    self.add_tap(self.healer)
                self.healer.attach(venue, c)
        return c

    def _fatal(self, provider: str, err: Exception) -> None:
        for hook in self.fatal_hooks:
            hook(provider, err)
        # an error naming a symbol (a subscription refused) ends only that symbol's consumers
        self.hub.fail(provider, err, getattr(err, "symbol", None))

    def resolve(self, symbol: str) -> str:
        return registry.resolve(symbol, self.credentials, self.stock_order)

    async def prepare(self, provider: str | None, symbol: str, channel: Channel) -> tuple[str, str, Channel]:
        if provider is None:
            provider = self.resolve(symbol)
        venue = self.venue(provider)
        venue.check_channel(channel)
        vsym = venue.venue_symbol(symbol)
        await self.validate(provider, vsym)
        upstream = venue.upstream(channel)
        venue.streams(vsym, upstream)  # unsupported variants (e.g. a partial depth of 7) fail now
        return provider, vsym, upstream

    async def instruments(self, provider: str) -> dict[str, Any] | None:
        """The venue's instrument list, fetched once and cached (None: unavailable)."""
        venue = self.venue(provider)
        if venue.instruments is not None:
            return venue.instruments
        lock = self._instrument_locks.setdefault(provider, asyncio.Lock())
        async with lock:
            if venue.instruments is not None:
                return venue.instruments
            req = venue.instruments_request()
            if req is None:
                return None
            client = self.client(provider)
            resp, _ts, _seq = await client.request(req)
            if resp.status == 0:
                log.warning("%s: cannot fetch the instrument list from %s (%s); symbols are not validated",
                            provider, req.url, resp.body.decode(errors="replace"))
                return None
            if resp.status != 200:
                text = resp.body[:200].decode(errors="replace")
                if resp.status in (401, 403):
                    raise ProviderError(f"{provider}: instrument list refused (HTTP {resp.status}): {text}")
                log.warning("%s: instrument list request failed (HTTP %d: %s); symbols are not validated", provider, resp.status, text)
                return None
            venue.instruments = venue.load_instruments(resp)
            return venue.instruments

    async def validate(self, provider: str, symbol: str) -> None:
        known = await self.instruments(provider)
        if known is not None and symbol not in known:
            raise self.venue(provider).unknown_symbol(symbol)
        check = getattr(self.client(provider), "validate_symbol", None)
        if check is not None:  # clients that look symbols up one by one (IBKR contract details)
            await check(symbol)

    async def acquire(self, provider: str, symbol: str, channel: Channel) -> None:
        venue = self.venue(provider)
        client = self.client(provider)
        new = []
        for stream in venue.streams(symbol, channel):
            key = (provider, stream)
            n = self.refs.get(key, 0)
            self.refs[key] = n + 1
            if n == 0:
                new.append(stream)
        if new:
            try:
                client.add(new)
            except BaseException:
                for stream in new:
                    self.refs.pop((provider, stream), None)
                raise
        if self.hub.timed and self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        """Let time-driven stages (derived bars) close their intervals on a quiet market."""
        while True:
            await asyncio.sleep(0.25)
            self.hub.tick(recv_ns())

    async def release(self, provider: str, symbol: str, channel: Channel) -> None:
        venue = self.venue(provider)
        gone = []
        for stream in venue.streams(symbol, channel):
            key = (provider, stream)
            n = self.refs.get(key, 0) - 1
            if n <= 0:
                self.refs.pop(key, None)
                gone.append(stream)
            else:
                self.refs[key] = n
        if gone and provider in self.clients:
            self.clients[provider].remove(gone)

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        if self.healer is not None:
            await self.healer.close()
        clients = list(self.clients.values())
        self.clients.clear()
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        self.refs.clear()
        self.subscriptions.clear()
        self.hub.finish_all()


__all__ = ["Source", "StreamManager", "Subscription", "Tap", "ConfigurationError", "UnknownSymbolError"]
