"""Fixtures for the simulator tests."""

from __future__ import annotations

from typing import Any

import pytest
import websockets

from wrdata.sim.binance import BinanceSimulator


@pytest.fixture
async def sim():
    s = BinanceSimulator(seed=1, rate=400, warmup=1.0, kline_push_interval=0.2, kline_1s_push_interval=0.2, msg_limit=None)
    async with s:
        yield s


@pytest.fixture
def connect():
    """``async with connect(url) as ws``: a plain websockets client (no compression, no keepalive pings)."""

    def _connect(url: str, **kw: Any):
        kw.setdefault("ping_interval", None)
        kw.setdefault("compression", None)
        return websockets.connect(url, **kw)

    return _connect
