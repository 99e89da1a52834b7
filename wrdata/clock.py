"""The receive clock.

``recv_ns()`` is wall-clock UTC nanoseconds, made strictly increasing within the
process. Every frame's ``ts_recv`` comes from it, once per frame, so the recording's
total order ``(ts_recv, provider, writer, conn, seq, idx)`` is exactly the order in
which this process handled the frames, even if NTP steps the clock back or two
frames land in the same nanosecond. (A backwards step shows up as a short run of
timestamps 1 ns apart, never as reordering.)
"""

from __future__ import annotations

import time

_last = 0


def recv_ns() -> int:
    global _last
    t = time.time_ns()
    if t <= _last:
        t = _last + 1
    _last = t
    return t
