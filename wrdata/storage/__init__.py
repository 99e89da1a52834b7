"""Recording storage: Arrow schemas, the crash-safe journal, sealed Parquet, recovery.

Layout (DESIGN.md, "Storage layout")::

    <root>/<table>/provider=<p>/date=<YYYY-MM-DD>/<writer>-<first_ts>-<last_ts>.parquet
    <journal_dir>/<table>/provider=<p>/date=<YYYY-MM-DD>/<writer>-<n>.arrows
    <journal_dir>/_locks/<writer>.lock

Tables: ``trades``, ``quotes``, ``bars``, ``book`` (one row per level change),
``events`` (status messages), ``raw`` (every frame in and out, REST responses, runner
events); schemas in :mod:`.schema`, converters both ways in :mod:`.convert`.

Writing: :class:`DatasetWriter` is the stream manager's tap (``on_raw``,
``on_messages``). Reading: :func:`dataset` (a plain pyarrow dataset over the Hive
layout, for DuckDB, Polars, pyarrow), :func:`read_table` / :func:`read_messages` /
:func:`read_raw` (sealed files plus the unsealed journal tail, in total order),
:func:`read_journal`, :func:`list_sealed` (from directory listings only),
:func:`list_segments`, :func:`to_messages` / :func:`from_messages`.

Where: a local path or any pyarrow filesystem URI (``s3://bucket/prefix``): sealed files
go there, the journal stays on local disk (:func:`default_journal_dir`), and every
reader takes ``filesystem=`` (a pyarrow filesystem, or :func:`open_filesystem` of a URI
with ``s3_endpoint=``). Object stores: :mod:`.remote`; many writers, compaction and other
engines on one bucket: ``docs/scale-out.md``.

Decisions, and why:

- **Order within files.** Every sealed file is sorted by the total-order key (provider
  and writer are constant per file): ``(ts_recv, conn, seq, idx)``, plus ``pos`` for
  book rows. The writer sorts each flush (a cheap check first: rows arrive in receive
  order) and starts a new segment when a row would go behind what is already journaled
  (``stats.late_rolls``), so a file never needs sorting and replay merges files with a
  k-way merge on the key. The key is recorded as Parquet ``sorting_columns``.
- **Journal framing.** A segment is a valid Arrow IPC stream; each flush appends one
  *unit* (the data batch with its dictionaries) and a zero-row *commit* batch whose
  metadata carries the unit's CRC-32 (over the compressed bytes on disk: ~10x cheaper
  than hashing columns), offset and length. One ``write(2)`` per unit; a failed write
  is truncated back (``ftruncate``) and the segment abandoned for a new one, so a
  journal never holds an ambiguous unit. Readers stop at the first unit whose commit
  is missing or does not match: the torn tail.
- **Sealing** reads the segment back (bounded memory: row group by row group), writes
  ``.<segment>.parquet.tmp-<pid>`` (dot files are skipped by pyarrow.dataset, DuckDB
  globs and Spark), fsyncs, renames to ``<writer>-<first_ts>-<last_ts>.parquet``, then
  removes the segment. The name derives from the segment's content, so re-sealing after
  a crash between rename and removal rewrites the same file (idempotent), and readers
  skip a segment whose sealed file already exists. On non-local filesystems the file
  is uploaded under the temporary key and moved to the final key.
- **Ownership.** A writer holds ``flock`` on ``_locks/<writer>.lock`` for its life.
  At start (in the background, so starting never blocks the caller) and every
  ``recover_interval``, a writer seals the segments of writers whose lock it can take,
  and records a ``gap`` event per (dead writer, provider): rows recovered, torn bytes,
  and the range from the last recovered row to the segment's last modification.
- **Failures.** Journal and seal errors keep data (in memory up to ``memory_budget``,
  or in the journal), retry every ``retry_interval``, and produce ``error`` then
  ``healed`` status events (``conn=-1``, reason ``storage: ...``) in the ``events``
  table and through ``on_status``. Over budget, the oldest rows are dropped and a
  ``gap`` event gives their count and ``ts_recv`` range. Events are never dropped.
- **Size.** Encodings and zstd level were chosen by measuring on the real tape
  (``python -m bench.storage_size``): 7.9 bytes per normalized trade (two files, split
  at midnight, footers included); raw trade frames 7.7 bytes of payload, 10.6 per row
  with their receive time and sequence.
- **Speed.** ``python -m bench.storage_recorder``: the tap costs ~0.5 µs per trade plus
  its raw frame on the event loop (it only appends to deques; StreamMessages are queued
  directly rather than in lists, which would be GC-tracked); conversion and journaling
  ~2.6 µs per trade+frame on the writer thread; sealing ~2.4 µs, mostly zstd-9 of raw
  payloads, in C++ with the GIL released.
"""

from .compact import CompactResult, compact_partition, drop_superseded
from .convert import RawFrame, from_messages, raw_batch, to_messages, to_raw_frames
from .fs import StorageFS, default_journal_dir, resolve_root
from .journal import SegmentInfo, SegmentReader, read_segment
from .layout import SealedFile, SegmentFile, default_writer_id, list_sealed, list_segments
from .reader import Snapshot, dataset, read_journal, read_messages, read_raw, read_table, snapshot, sort_total_order
from .recorder import DatasetWriter, StorageStats, TableStats
from .remote import open_filesystem
from .schema import KIND_TABLE, SCHEMA_VERSION, SCHEMAS, TABLES, conform, parquet_options, schema, schema_version
from .seal import SealResult, seal_segment, write_sealed

__all__ = [
    "DatasetWriter",
    "StorageStats",
    "TableStats",
    "StorageFS",
    "default_journal_dir",
    "open_filesystem",
    "resolve_root",
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
    "Snapshot",
    "snapshot",
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
    "write_sealed",
    "CompactResult",
    "compact_partition",
    "drop_superseded",
]
