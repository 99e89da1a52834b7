"""Drive a venue's sessions from recorded ``raw`` rows, without any I/O.

This is the live code path minus the sockets: received frames go to the session of
their connection, REST responses to the request the session made, the runner's status
events pass through as they were. Rebuilding the normalized tables from ``raw`` and
testing parsers on real recorded frames both use it, so neither has a parser of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable

import msgspec

from ..message import StreamMessage
from .base import HttpRequest, HttpResponse, Session, Venue, redact_url
from .heal import DIRECTION as HEAL
from .heal import HealReplay

log = logging.getLogger("wrdata.streaming.driver")

_decode_event = msgspec.json.Decoder(StreamMessage).decode


def _path(url: str) -> str:
    """Path and query of a URL: a recording made against a simulator or a proxy is rebuilt
    with the venue's default host, so requests match on what they asked, not where."""
    from urllib.parse import urlsplit

    u = urlsplit(url)
    return f"{u.path}?{u.query}" if u.query else u.path


class RawDriver:
    def __init__(self, venue: Venue) -> None:
        self.venue = venue
        self.sessions: dict[int, Session] = {}
        self.pending: dict[int, list[HttpRequest]] = {}
        #: heal jobs by their connection id (raw direction ``heal`` starts one)
        self.heals: dict[int, HealReplay] = {}

    def session(self, conn: int, streams: list[Hashable] | None = None) -> Session:
        s = self.sessions.get(conn)
        if s is None:
            s = self.sessions[conn] = self.venue.session(conn, streams or [])
            s.on_open(0)
        return s

    def feed(
        self, conn: int, seq: int, ts_recv: int, direction: str, url: str, payload: bytes, status: int | None = None
    ) -> list[StreamMessage]:
        if direction == HEAL or conn in self.heals:
            return self._heal(conn, seq, ts_recv, direction, url, payload, status)
        if direction == "in":
            s = self.session(conn)
            try:
                out = s.feed(payload, ts_recv, seq)
            except Exception as e:  # as live: counted and reported, the rebuild goes on
                out = s.parser_failed(payload, ts_recv, seq, e)
            self._collect(conn, s)
            return out
        if direction == "rest":
            resp = HttpResponse(200 if status is None else status, payload)
            if conn == 0:
                req = self.venue.instruments_request()
                if req is not None and _path(url).split("?")[0] == _path(req.url) and resp.status == 200:
                    self.venue.instruments = self.venue.load_instruments(resp)
                return []
            s = self.session(conn)
            self._collect(conn, s)
            reqs = self.pending.get(conn, [])
            for i, req in enumerate(reqs):
                if _path(redact_url(req.full_url)) == _path(url):
                    del reqs[i]
                    out = s.on_response(req, resp, ts_recv, seq)
                    self._collect(conn, s)
                    return out
            log.debug("conn %d: REST response for %s matches no request of the session", conn, url)
            return []
        if direction == "event":
            return [_decode_event(payload)]
        if direction == "out":  # most sessions ignore their own frames; IBKR learns request ids
            s = self.session(conn)
            out = s.on_sent(payload, ts_recv, seq)
            self._collect(conn, s)
            return out
        return []

    def _heal(self, conn: int, seq: int, ts_recv: int, direction: str, url: str, payload: bytes, status: int | None) -> list[StreamMessage]:
        """A heal job's rows: its spec, the history answers it got, its outcome events."""
        if direction == HEAL:
            self.heals[conn] = HealReplay(self.venue, conn, payload)
            return []
        job = self.heals[conn]
        if direction == "rest":
            return job.rest(url, 200 if status is None else status, payload, ts_recv, seq, _path)
        if direction == "event":
            msg = _decode_event(payload)
            return job.event(msg) + [msg]
        return []

    def _collect(self, conn: int, s: Session) -> None:
        if s.requests:
            self.pending.setdefault(conn, []).extend(s.requests)
            s.requests.clear()
        s.outbox.clear()
