"""``wrdata replay serve``: a recording over a venue's own wire protocol.

The venue's simulator (:mod:`wrdata.sim`) serves the recording instead of its synthetic
market, so an unmodified third-party client of that venue can run against recorded
data. Recorded frames are served byte for byte (``raw`` rows received from the venue),
paced by their receive times; recorded REST responses (book snapshots, instrument
lists) answer the same requests. The feed starts when a first client has subscribed
(plus ``settle`` seconds for the rest of its subscriptions and other clients), so a
client started after the server sees the recording from its beginning, however long it
takes to connect and subscribe (python-kraken-sdk waits a random 1-2 s before it even
connects). A simulator that does not track subscriptions (``sim.subscribed()`` absent)
starts ``settle`` seconds after the first connection.

A frame received on two connections at once (the overlap of a rollover) was recorded
twice; it is served once.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from typing import Any

from ..sim import simulator_class
from ..sim.server import FrameFeed, RecordedFrame
from ..storage import list_sealed, read_table, to_raw_frames
from .reader import NS, to_ns

log = logging.getLogger("wrdata.replay.serve")


def _rest_key(url: str) -> str:
    u = urllib.parse.urlsplit(url)
    return f"{u.path}?{u.query}" if u.query else u.path


def recorded_rest(root: str, provider: str, start: Any = None, end: Any = None, filesystem: Any = None) -> dict[str, bytes]:
    """The first recorded response to each REST request (``path?query`` → body)."""
    import pyarrow.compute as pc

    t = read_table(root, "raw", provider, to_ns(start), to_ns(end), filesystem=filesystem)
    if not t.num_rows:
        return {}
    t = t.filter(pc.equal(t.column("direction").cast("string"), "rest"))
    out: dict[str, bytes] = {}
    for f in to_raw_frames(t):
        if f.url:
            out.setdefault(_rest_key(f.url), f.payload)
    return out


def recorded_frames(
    root: str,
    provider: str,
    start: Any = None,
    end: Any = None,
    *,
    window: float = 300.0,
    filesystem: Any = None,
    on_rest=None,
    sent: bool = False,
) -> Iterator[RecordedFrame]:
    """Frames received from ``provider``, in total order, de-duplicated across connections.

    ``on_rest(path_and_query, body)`` is called for each REST response met on the way.
    With ``sent``, the frames the client sent come too, marked ``stream="out"``: a
    simulator whose answers carry ids the client chose (IBKR request ids) learns from
    them what each recorded id stood for.
    """
    lo, hi = to_ns(start), to_ns(end)
    files = list_sealed(root, "raw", provider, lo, hi, filesystem=filesystem)
    first = min((f.first_ts for f in files), default=None)
    last = max((f.last_ts for f in files), default=None)
    tail = read_table(root, "raw", provider, lo, hi, filesystem=filesystem, columns=["ts_recv"])
    if tail.num_rows:
        import pyarrow.compute as pc

        ts = tail.column("ts_recv").cast("int64")
        first = min(x for x in (first, pc.min(ts).as_py()) if x is not None)
        last = max(x for x in (last, pc.max(ts).as_py()) if x is not None)
    if first is None:
        return
    lo = max(first, lo) if lo is not None else first
    stop = min(last + 1, hi) if hi is not None else last + 1
    recent: OrderedDict[bytes, int] = OrderedDict()
    step = int(window * NS)
    while lo < stop:
        w_hi = min(lo + step, stop)
        for f in to_raw_frames(read_table(root, "raw", provider, lo, w_hi, filesystem=filesystem)):
            if f.direction == "rest":
                if on_rest is not None and f.url:
                    on_rest(_rest_key(f.url), f.payload)
                continue
            if f.direction == "out" and sent:
                yield RecordedFrame(ts_ns=f.ts_recv, payload=f.payload, url=f.url, stream="out", conn=f.conn)
                continue
            if f.direction != "in":
                continue
            seen_on = recent.get(f.payload)
            if seen_on is not None and seen_on != f.conn:  # the same bytes from a second connection: a rollover overlap
                continue
            # (the same bytes again on one connection are a new frame: TWS messages carry no ids)
            recent[f.payload] = f.conn
            recent.move_to_end(f.payload)
            if len(recent) > 4096:
                recent.popitem(last=False)
            yield RecordedFrame(ts_ns=f.ts_recv, payload=f.payload, url=f.url, conn=f.conn)
        lo = w_hi


class _AfterFirstClient:
    """Frames, once a client has subscribed (or connected, for a simulator that does not
    track subscriptions) and ``settle`` seconds more have passed."""

    def __init__(self, sim, frames: Iterator[RecordedFrame], settle: float) -> None:
        self.sim, self.frames, self.settle = sim, frames, settle

    async def __aiter__(self) -> AsyncIterator[RecordedFrame]:  # type: ignore[override]
        subscribed = getattr(self.sim, "subscribed", None)
        while not (subscribed() if subscribed is not None else self.sim.history):
            await asyncio.sleep(0.02)
        await asyncio.sleep(self.settle)
        for f in self.frames:
            yield f


async def serve(
    provider: str,
    root: str,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    speed: float | None = 1.0,
    start: Any = None,
    end: Any = None,
    settle: float = 0.5,
    linger: float = 1.0,
    on_ready=None,
    filesystem: Any = None,
    **sim_options: Any,
) -> int:
    """Serve the recording until it is exhausted (after a first client connected), then
    ``linger`` seconds more; returns the number of frames served. ``on_ready(sim)`` is
    called once the server listens."""
    feed = FrameFeed([], speed=speed)
    sim = simulator_class(provider)(host=host, port=port, feed=feed, **sim_options)
    frames = recorded_frames(root, provider, start, end, filesystem=filesystem, on_rest=sim.set_rest_override,
                             sent=getattr(sim, "serves_sent_frames", False))
    feed.frames = _AfterFirstClient(sim, frames, settle)
    await sim.start()
    # every recorded REST answer is there from the start (a client may ask before the
    # recording reaches it); a later response to the same request replaces it in time
    for path, body in recorded_rest(root, provider, start, end, filesystem).items():
        sim.set_rest_override(path, body)
    if on_ready is not None:
        on_ready(sim)
    try:
        while getattr(feed, "done", None) is None:
            await asyncio.sleep(0.01)
        n = await feed.done
        # let clients receive what is queued for them, then a moment more to read it
        deadline = asyncio.get_running_loop().time() + 10
        while any(c._queue for c in sim.connections) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.sleep(linger)
        return n
    finally:
        await sim.stop()
