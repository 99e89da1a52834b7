"""When two trade rows are the same trade: the one rule live healing, queries, replay and
compaction share.

A trade can be recorded more than once: by two capture daemons (redundant capture), by
the stream and by a heal of the stream's gap (the edges of a heal window overlap what
was streamed), or by two heals of overlapping gaps. Rows of the same provider, symbol and
channel are the same trade when their **key** is equal:

- a row with a venue id (``trade_id`` or ``trade_ref``): ``(UTC day of ts_event,
  exchange, trade_id, trade_ref)``. The exchange is part of it because some venues number
  trades per exchange (Alpaca's ``i``, Polygon's ``id``); the day because such numbers
  repeat across days. ``ts_event`` itself is not, since a venue's stream and its history
  API may state the time at different precisions (Polygon: ms and ns; Kraken: RFC 3339
  and float seconds). Such keys are unique: one row per key survives.
- a row without one (Finnhub, IBKR): ``(ts_event, price, size)``. Identical trades in the
  same instant are legitimate, so these keys are a **multiset**: each *origin* (the
  stream rows of one writer; the rows of one heal job, which holds every trade the venue
  reported inside its window) states how many trades have the key, and the merged tape
  has as many as the origin that saw most.

Among the rows that are the same trade (for a multiset key: the n-th row of the key in
each origin), the **earliest receipt** survives: the smallest total-order key ``(ts_recv,
writer, conn, seq, idx)``, a deterministic rule that does not depend on files or reading
order. A trade streamed before its gap was healed therefore keeps its streamed row.

:func:`trade_key` is the rule for one message (the live healer uses it to hand consumers
only what they have not seen); :data:`KEY_SQL` and :func:`duplicate_keys` are the same
rule in SQL over a table of rows (:mod:`wrdata.storage.merge` applies it to recordings).
"""

from __future__ import annotations

from typing import Any

DAY_NS = 86_400_000_000_000


def has_id(trade_id: int | None, trade_ref: str | None) -> bool:
    return trade_id is not None or trade_ref is not None


def trade_key(m: Any) -> tuple:
    """The key of a trade message within its (provider, symbol, channel); its first element
    says whether it is unique (True: a venue id) or a multiset key (False)."""
    if m.trade_id is not None or m.trade_ref is not None:
        day = m.ts_event // DAY_NS if m.ts_event is not None else None
        return (True, day, m.exchange, m.trade_id, m.trade_ref)
    return (False, m.ts_event, m.price, m.size)


# The same key in SQL (DuckDB), over columns named as in the trades table, ts_event as
# integer ns (``ts_event_ns``). NULLs compare equal in PARTITION BY, as in the tuple above.
KEY_SQL = (
    "(trade_id IS NOT NULL OR trade_ref IS NOT NULL) AS k_id, "
    "CASE WHEN trade_id IS NOT NULL OR trade_ref IS NOT NULL THEN ts_event_ns // 86400000000000 ELSE ts_event_ns END AS k_time, "
    "CASE WHEN trade_id IS NOT NULL OR trade_ref IS NOT NULL THEN exchange END AS k_exchange, "
    "trade_id AS k_trade_id, trade_ref AS k_trade_ref, "
    "CASE WHEN trade_id IS NULL AND trade_ref IS NULL THEN price END AS k_price, "
    "CASE WHEN trade_id IS NULL AND trade_ref IS NULL THEN size END AS k_size"
)
KEY_COLUMNS = "provider, symbol, channel, k_id, k_time, k_exchange, k_trade_id, k_trade_ref, k_price, k_size"
#: an origin: the stream rows of one writer, or the rows of one heal job (writer, conn)
ORIGIN_SQL = "writer || CASE WHEN source = 'backfill' THEN ':' || CAST(conn AS VARCHAR) ELSE '' END"
ORDER_SQL = "ts_recv_ns, writer, conn, seq, idx"


def duplicate_sql(rows: str) -> str:
    """SQL selecting the rows of ``rows`` (a relation with the trades columns plus
    ``ts_recv_ns``/``ts_event_ns`` as BIGINT) that the rule drops: their total-order key
    ``(provider, ts_recv_ns, writer, conn, seq, idx)``."""
    return f"""
        WITH k AS (
            SELECT provider, symbol, channel, writer, conn, seq, idx, ts_recv_ns, {ORIGIN_SQL} AS origin, {KEY_SQL}
            FROM {rows}
        ), r AS (
            SELECT *, CASE WHEN k_id THEN 1 ELSE row_number() OVER (PARTITION BY {KEY_COLUMNS}, origin ORDER BY {ORDER_SQL}) END AS occ
            FROM k
        ), w AS (
            SELECT *, row_number() OVER (PARTITION BY {KEY_COLUMNS}, occ ORDER BY {ORDER_SQL}) AS pick FROM r
        )
        SELECT provider, ts_recv_ns, writer, conn, seq, idx FROM w WHERE pick > 1
    """


def duplicate_keys(con: Any, rows: str) -> Any:
    """The dropped rows' keys as an Arrow table (``con``: a DuckDB connection)."""
    return con.sql(duplicate_sql(rows)).to_arrow_table()


__all__ = ["DAY_NS", "KEY_SQL", "duplicate_keys", "duplicate_sql", "has_id", "trade_key"]
