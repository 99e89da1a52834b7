"""Fault injection shared by every venue simulator.

One :class:`Faults` object belongs to a server (``sim.faults``). Set its fields at
construction (``Faults(drop_after=100)``) or change them from a test while the server
runs; per-connection actions live on :class:`wrdata.sim.server.SimConnection`
(``conn.drop()``, ``conn.stall()``, ``conn.send_malformed()``) and server-wide ones on
the server (``sim.drop_all()``, ``sim.stall_all()``, ``sim.inject_malformed()``).

WebSocket faults (applied by the server's send path to every venue alike):

``drop_after``       abort each connection (no close frame) once it has been sent N frames
``malformed_every``  after every Nth frame on a connection, also send a malformed frame
``lifetime``         the server closes each connection T seconds after it opened
                     (Binance's 24 h cut, made short); code/reason per venue
``reject_connections(seconds, status)``  refuse WebSocket upgrades (HTTP status) for T s
``withhold_trades(n, symbol)``  the next n trades of ``symbol`` (or of any symbol) are
                     left out of trade streams (a gap in trade ids); they stay in REST
                     history, so healing by id can find them; ``withheld`` records them

REST faults (the venue supplies its own error bodies):

``rate_limit(n, retry_after, status)``  the next n REST requests get 429 (or 418) with
                     ``Retry-After``
``outage(n=None, seconds=None, status)``  5xx for the next n requests or for T seconds
``page_limit``       history endpoints return at most this many rows (short pages)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

__all__ = ["Faults", "RestFault"]


@dataclass(frozen=True)
class RestFault:
    status: int
    kind: str  # "rate_limit" | "ban" | "outage"
    retry_after: int | None = None


@dataclass
class Faults:
    # -- WebSocket --
    drop_after: int | None = None
    malformed_every: int | None = None
    lifetime: float | None = None
    malformed_payload: bytes = b'{"e":"trade","E":'  # a truncated JSON object
    # -- REST --
    page_limit: int | None = None
    # -- runtime state (use the methods) --
    reject_until: float = 0.0
    reject_status: int = 503
    withheld: dict[str, list[int]] = field(default_factory=dict)
    _withhold: dict[str | None, int] = field(default_factory=dict)
    _rate_limited: int = 0
    _rate_status: int = 429
    _retry_after: int = 1
    _outage_left: int = 0
    _outage_until: float = 0.0
    _outage_status: int = 503

    # -- connections --
    def reject_connections(self, seconds: float, status: int = 503) -> None:
        """Answer WebSocket upgrade requests with HTTP ``status`` for ``seconds``."""
        self.reject_until = time.monotonic() + seconds
        self.reject_status = status

    def rejecting(self) -> bool:
        return time.monotonic() < self.reject_until

    # -- gaps --
    def withhold_trades(self, n: int, symbol: str | None = None) -> None:
        """Leave the next ``n`` trades of ``symbol`` (any symbol when None) out of trade streams."""
        self._withhold[symbol] = self._withhold.get(symbol, 0) + n

    @property
    def withholding(self) -> bool:
        return bool(self._withhold)

    def take_withheld(self, symbol: str, trade_id: int) -> bool:
        """Called once per trade by a venue encoder: True if this trade must not be streamed."""
        for key in (symbol, None):
            left = self._withhold.get(key)
            if left:
                if left == 1:
                    del self._withhold[key]
                else:
                    self._withhold[key] = left - 1
                self.withheld.setdefault(symbol, []).append(trade_id)
                return True
        return False

    # -- REST --
    def rate_limit(self, n: int = 1, retry_after: int = 1, status: int = 429) -> None:
        """The next ``n`` REST requests are refused with ``status`` (429, or 418 for a ban)."""
        self._rate_limited = n
        self._retry_after = retry_after
        self._rate_status = status

    def outage(self, n: int | None = None, seconds: float | None = None, status: int = 503) -> None:
        """REST answers ``status`` for the next ``n`` requests and/or for ``seconds``."""
        if n is None and seconds is None:
            n = 1
        self._outage_left = n or 0
        self._outage_until = time.monotonic() + seconds if seconds else 0.0
        self._outage_status = status

    def clear(self) -> None:
        """Stop every runtime fault (fields set at construction stay)."""
        self.reject_until = 0.0
        self._withhold.clear()
        self._rate_limited = 0
        self._outage_left = 0
        self._outage_until = 0.0

    def rest_fault(self) -> RestFault | None:
        """Consume and return the fault for one REST request, if any."""
        if self._outage_left > 0 or time.monotonic() < self._outage_until:
            if self._outage_left > 0:
                self._outage_left -= 1
            return RestFault(self._outage_status, "outage")
        if self._rate_limited > 0:
            self._rate_limited -= 1
            kind = "ban" if self._rate_status == 418 else "rate_limit"
            return RestFault(self._rate_status, kind, self._retry_after)
        return None

    def clip_page(self, limit: int) -> int:
        return limit if self.page_limit is None else min(limit, self.page_limit)
