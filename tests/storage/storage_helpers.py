"""Helpers for storage tests: message factories and the real Binance tape.

(A module of its own: ``from conftest import`` is ambiguous with several test folders.)
"""

from __future__ import annotations

import threading
from pathlib import Path

# The 19,904-trade Binance tape (hftbacktest, MIT): committed under bench/data/ with its
# attribution in bench/data/SOURCES.md and tests/data/SOURCES.md; loaded as the benches load it.
from bench.storage_common import TAPES, load_tape  # noqa: F401
from wrdata.message import StreamMessage

REPO = Path(__file__).resolve().parents[2]
DAY = 86_400_000_000_000
T0 = 1_723_161_600_000_000_000  # 2024-08-09 00:00:00 UTC


def trade(i: int, ts: int | None = None, *, provider: str = "binance", symbol: str = "BTCUSDT", conn: int = 0, **kw) -> StreamMessage:
    ts = T0 + 1_000_003 * i + 7 if ts is None else ts
    fields = dict(
        provider=provider,
        symbol=symbol,
        kind="trade",
        ts_recv=ts,
        ts_event=ts - 1_250_000_123,
        conn=conn,
        seq=i,
        idx=0,
        channel="trade",
        price=61000.0 + (i % 100) * 0.01,
        size=0.001 * (1 + i % 7),
        side="buy" if i % 2 else "sell",
        trade_id=3_735_693_016 + i,
    )
    fields.update(kw)
    return StreamMessage(**fields)


class StatusLog:
    """Collects on_status events (called from the storage threads)."""

    def __init__(self) -> None:
        self.events: list[StreamMessage] = []
        self._lock = threading.Lock()

    def __call__(self, msg: StreamMessage) -> None:
        with self._lock:
            self.events.append(msg)

    def of(self, status: str) -> list[StreamMessage]:
        with self._lock:
            return [e for e in self.events if e.status == status]


