"""RFC 3339 timestamps to integer nanoseconds, without building a ``datetime``.

Coinbase and Kraken stamp every event with text like ``2023-10-04T16:26:30.524394914Z``
(0 to 9 fractional digits, ``Z`` or an offset). ``datetime.fromisoformat`` would build an
object per message and drop the nanoseconds; this keeps them, costs a few slices and
``int()`` calls, and caches the epoch of the (few) calendar days a stream spans.
"""

from __future__ import annotations

import calendar

_NS = 1_000_000_000
_INT64 = 2**63
_DAYS: dict[str, int] = {}
_DIGITS = frozenset("0123456789")


def _day_ns(day: str) -> int:
    ns = _DAYS.get(day)
    if ns is None:
        if len(day) != 10 or day[4] != "-" or day[7] != "-":
            raise ValueError(f"not an RFC 3339 date: {day!r}")
        ns = calendar.timegm((int(day[0:4]), int(day[5:7]), int(day[8:10]), 0, 0, 0, 0, 0, 0)) * _NS
        if not -_INT64 <= ns < _INT64 - 2 * 86_400 * _NS:  # int64 ns: 1677 to 2262
            raise ValueError(f"date out of range: {day!r}")
        if len(_DAYS) > 256:  # a long-running process sees a new day only once a day
            _DAYS.clear()
        _DAYS[day] = ns
    return ns


def rfc3339_ns(text: str) -> int:
    """``2026-04-07T14:30:02.789012Z`` → ns since the epoch (UTC). Raises ``ValueError`` on bad text.

    Also accepts a space for the ``T`` and ``+HH:MM``/``-HH:MM``/``+HHMM`` offsets.
    """
    try:
        if text[10] not in "Tt " or text[13] != ":" or text[16] != ":":
            raise ValueError
        ns = _day_ns(text[:10]) + (int(text[11:13]) * 3600 + int(text[14:16]) * 60 + int(text[17:19])) * _NS
    except (IndexError, ValueError):
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}") from None
    n = len(text)
    i = 19
    if i < n and text[i] == ".":
        j = i + 1
        while j < n and text[j] in _DIGITS:
            j += 1
        frac = text[i + 1 : j]
        if not frac:
            raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
        ns += int(frac[:9].ljust(9, "0"))
        i = j
    tz = text[i:].strip()
    if tz in ("Z", "z", "", "+00:00", "-00:00", "+0000"):
        return ns
    if tz[0] in "+-" and len(tz) in (5, 6):
        hh, mm = int(tz[1:3]), int(tz[-2:])
        off = (hh * 3600 + mm * 60) * _NS
        return ns - off if tz[0] == "+" else ns + off
    raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
