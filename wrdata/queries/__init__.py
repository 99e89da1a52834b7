"""DuckDB SQL over a recording, helper queries, and the tools that inspect a recording.

::

    from wrdata.queries import connect, ohlcv
    con = connect("./data")                  # views trades, quotes, bars, book, events, raw
    con.sql("SELECT symbol, count(*) FROM trades WHERE date = '2026-11-23' GROUP BY ALL").show()
    bars = ohlcv(con, interval="1m", symbols=["binance:BTCUSDT"], output="pandas")

- :mod:`.connection`: :func:`connect`, :func:`refresh` (what the views read, and when).
- :mod:`.helpers`: :func:`ohlcv`, :func:`vwap`, :func:`spreads`, :func:`coverage`,
  :func:`gaps`, :func:`scan` (Arrow, pandas, polars or a DuckDB relation).
- :mod:`.inspect`: :func:`summarize` (``wrdata ls``), :func:`verify` (``wrdata verify``).
- Compaction is storage mechanics: :func:`wrdata.storage.compact_partition`
  (``wrdata compact``).
"""

from .connection import FILES_VIEW, VIEWS, connect, default_root, refresh, snapshot_of, view_columns
from .helpers import coverage, gaps, ohlcv, parse_interval, scan, spreads, to_ns, vwap
from .inspect import PartitionSummary, VerifyReport, summarize, verify

__all__ = [
    "FILES_VIEW",
    "VIEWS",
    "connect",
    "default_root",
    "refresh",
    "snapshot_of",
    "view_columns",
    "ohlcv",
    "vwap",
    "spreads",
    "coverage",
    "gaps",
    "scan",
    "to_ns",
    "parse_interval",
    "summarize",
    "verify",
    "PartitionSummary",
    "VerifyReport",
]
