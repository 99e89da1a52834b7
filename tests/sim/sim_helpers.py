"""Helpers for driving simulators with plain clients (imported by the sim tests)."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any


async def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    """GET in a thread (urllib): (status, headers, decoded JSON body or raw bytes)."""

    def go() -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(url, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    status, hdrs, body = await asyncio.to_thread(go)
    try:
        return status, hdrs, json.loads(body) if body else None
    except ValueError:
        return status, hdrs, body


async def recv_json(ws: Any, timeout: float = 2.0) -> Any:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def recv_until(ws: Any, pred: Any, timeout: float = 3.0) -> Any:
    """Read messages until ``pred(msg)``; return that message."""
    async with asyncio.timeout(timeout):
        while True:
            msg = json.loads(await ws.recv())
            if pred(msg):
                return msg


async def reply(ws: Any, request: dict, timeout: float = 2.0) -> dict:
    """Send a control message and return the reply carrying an ``id`` key (data may interleave)."""
    await ws.send(json.dumps(request))
    return await recv_until(ws, lambda m: "id" in m and ("result" in m or "error" in m), timeout)
