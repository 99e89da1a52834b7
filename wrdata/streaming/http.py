"""The few REST calls providers make (instrument lists, book snapshots, history).

They are rare and off the hot path, so the standard library's client in a worker
thread is enough and adds no dependency. Responses are returned whole (status, body,
headers) so callers can record them in ``raw`` and honour ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

from .base import HttpRequest, HttpResponse

USER_AGENT = "wrdata/0.1"


def _fetch(url: str, headers: dict[str, str], timeout: float) -> HttpResponse:
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return HttpResponse(r.status, r.read(), {k.lower(): v for k, v in r.headers.items()})
    except urllib.error.HTTPError as e:
        body = e.read() if e.fp is not None else b""
        return HttpResponse(e.code, body, {k.lower(): v for k, v in (e.headers or {}).items()})


async def fetch(request: HttpRequest, timeout: float = 10.0) -> HttpResponse:
    """GET ``request``; HTTP error statuses are returned, network failures raise ``OSError``."""
    return await asyncio.to_thread(_fetch, request.full_url, request.headers or {}, timeout)
