"""Recording storage: Arrow schemas, the crash-safe journal, sealed Parquet, recovery.

Layout (DESIGN.md, "Storage layout")::

    <root>/<table>/provider=<p>/date=<YYYY-MM-DD>/<writer>-<first_ts>-<last_ts>.parquet
    <journal_dir>/<table>/provider=<p>/date=<YYYY-MM-DD>/<writer>-<n>.arrows

Writing: :class:`DatasetWriter` (the stream manager's recorder tap). Reading:
:func:`dataset` (pyarrow dataset for DuckDB/Polars), :func:`read_table`,
:func:`read_messages`, :func:`read_journal`, :func:`list_sealed`, :func:`list_segments`,
and the batch converters :func:`to_messages` / :func:`from_messages`.
"""

from .convert import RawFrame, from_messages, raw_batch, to_messages, to_raw_frames
from .fs import StorageFS
from .journal import SegmentInfo, SegmentReader, read_segment
from .layout import SealedFile, SegmentFile, default_writer_id, list_sealed, list_segments
from .reader import dataset, read_journal, read_messages, read_raw, read_table, sort_total_order
from .recorder import DatasetWriter, StorageStats, TableStats
from .schema import KIND_TABLE, SCHEMA_VERSION, SCHEMAS, TABLES, conform, parquet_options, schema, schema_version
from .seal import SealResult, seal_segment

__all__ = [
    "DatasetWriter",
    "StorageStats",
    "TableStats",
    "StorageFS",
    "RawFrame",
    "from_messages",
    "raw_batch",
    "to_messages",
    "to_raw_frames",
    "SegmentInfo",
    "SegmentReader",
    "read_segment",
    "SealedFile",
    "SegmentFile",
    "default_writer_id",
    "list_sealed",
    "list_segments",
    "dataset",
    "read_journal",
    "read_messages",
    "read_raw",
    "read_table",
    "sort_total_order",
    "KIND_TABLE",
    "SCHEMA_VERSION",
    "SCHEMAS",
    "TABLES",
    "conform",
    "parquet_options",
    "schema",
    "schema_version",
    "SealResult",
    "seal_segment",
]
