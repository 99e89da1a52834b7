"""What a capture daemon shows about itself: per-provider figures, a terminal view,
plain log lines, and a Prometheus endpoint.

The figures come from two places that already count them, so the hot path pays almost
nothing: :class:`CaptureStats` is a tap on parsed messages only (one call per frame that
parsed to messages: counts, the last receive time, status events); frames are counted by
the dataset writer as it takes them off its queue (at most a flush interval behind),
beside its rows, bytes, files and errors per provider and table. Prometheus reads both
at scrape time.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from ..message import StreamMessage

log = logging.getLogger("wrdata.capture")


@dataclass
class ProviderFigures:
    messages: int = 0
    last_ts: int = 0  # ts_recv of the last market-data message (status events aside)
    connections: set[int] = field(default_factory=set)
    gaps: int = 0
    errors: int = 0
    reconnects: int = 0
    last_error: str = ""
    # for the rate
    _rate_msgs: int = 0
    _rate_at: float = field(default_factory=time.monotonic)
    rate: float = 0.0


class CaptureStats:
    """A tap: message counts, connection state and incidents per provider."""

    def __init__(self) -> None:
        self.providers: dict[str, ProviderFigures] = {}
        self.storage_events: list[StreamMessage] = []

    def figures(self, provider: str) -> ProviderFigures:
        f = self.providers.get(provider)
        if f is None:
            f = self.providers[provider] = ProviderFigures()
        return f

    # -- tap ---------------------------------------------------------------------------
    # no frames: a second raw tap beside the writer's cost the event loop ~0.3 µs a frame
    # (two calls through a fan-out instead of one); the writer counts frames
    on_raw = None

    def on_messages(self, msgs: list[StreamMessage]) -> None:
        last = msgs[-1]
        f = self.providers.get(last.provider) or self.figures(last.provider)
        f.messages += len(msgs)
        if last.kind != "status":
            f.last_ts = last.ts_recv
        for m in msgs:
            if m.kind == "status":
                self._status(m)

    def _status(self, m: StreamMessage) -> None:
        f = self.figures(m.provider)
        s = m.status
        if s == "connected":
            f.connections.add(m.conn)
        elif s == "disconnected":
            f.connections.discard(m.conn)
        elif s == "reconnecting":
            f.reconnects += 1
        elif s == "gap":
            f.gaps += 1
        elif s == "error":
            f.errors += 1
            f.last_error = m.reason or ""

    def on_storage_event(self, m: StreamMessage) -> None:
        self.storage_events.append(m)
        del self.storage_events[:-100]
        level = logging.WARNING if m.status in ("error", "gap") else logging.INFO
        log.log(level, "%s: %s", m.provider, m.reason)

    def tick(self) -> None:
        now = time.monotonic()
        for f in self.providers.values():
            dt = now - f._rate_at
            if dt >= 0.5:
                f.rate = (f.messages - f._rate_msgs) / dt
                f._rate_msgs, f._rate_at = f.messages, now


def rows_table(stats: CaptureStats, storage, now_ns: int) -> list[dict]:
    """One row per provider with everything the views show."""
    out = []
    for provider in sorted(stats.providers):
        f = stats.providers[provider]
        written = rows = files = errors = dropped = 0
        if storage is not None:
            for (p, _table), t in list(storage.stats.tables.items()):
                if p == provider:
                    rows += t.rows
                    written += t.bytes_journal + t.bytes_sealed
                    files += t.files_sealed
                    errors += t.write_errors
                    dropped += t.dropped
        out.append({
            "provider": provider,
            "connected": len(f.connections),
            "msgs_per_s": f.rate,
            "last_age_s": (now_ns - f.last_ts) / 1e9 if f.last_ts else None,
            "gaps": f.gaps,
            "errors": f.errors,
            "rows": rows,
            "bytes": written,
            "files": files,
            "write_errors": errors,
            "dropped": dropped,
        })
    return out


def log_line(row: dict) -> str:
    age = "-" if row["last_age_s"] is None else f"{row['last_age_s']:.1f}s"
    return (
        f"{row['provider']}: conns={row['connected']} msgs/s={row['msgs_per_s']:.0f} last={age} gaps={row['gaps']} "
        f"errors={row['errors']} rows={row['rows']} written={row['bytes']} sealed={row['files']}"
        + (f" write_errors={row['write_errors']}" if row["write_errors"] else "")
        + (f" dropped={row['dropped']}" if row["dropped"] else "")
    )


def rich_table(rows: list[dict]):
    from rich.table import Table

    t = Table(title="wrdata capture", expand=False)
    for col in ("provider", "conns", "msgs/s", "last msg", "gaps", "errors", "rows", "bytes", "files"):
        t.add_column(col, justify="left" if col == "provider" else "right")
    for r in rows:
        age = "-" if r["last_age_s"] is None else f"{r['last_age_s']:.1f}s"
        style = "red" if r["connected"] == 0 else None
        t.add_row(
            r["provider"], str(r["connected"]), f"{r['msgs_per_s']:.0f}", age, str(r["gaps"]), str(r["errors"]),
            f"{r['rows']:,}", _human(r["bytes"]), str(r["files"]), style=style,
        )
    return t


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024:
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.1f}TB"


class MetricsCollector:
    """Prometheus collector reading the daemon's figures at scrape time."""

    def __init__(self, stats: CaptureStats, storage, hub=None) -> None:
        self.stats = stats
        self.storage = storage
        self.hub = hub

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        frames = CounterMetricFamily("wrdata_frames_received", "Frames received", labels=["provider"])
        msgs = CounterMetricFamily("wrdata_messages", "Messages parsed", labels=["provider"])
        conns = GaugeMetricFamily("wrdata_connections", "Open venue connections", labels=["provider"])
        age = GaugeMetricFamily("wrdata_last_message_age_seconds", "Seconds since the last market-data message", labels=["provider"])
        gaps = CounterMetricFamily("wrdata_gaps", "Gap events", labels=["provider"])
        errors = CounterMetricFamily("wrdata_errors", "Error events", labels=["provider"])
        rate = GaugeMetricFamily("wrdata_messages_per_second", "Recent message rate", labels=["provider"])
        now = time.time_ns()
        received: dict[str, int] = {}
        if self.storage is not None:
            for (p, table), t in list(self.storage.stats.tables.items()):
                if table == "raw":
                    received[p] = t.received
        for p, f in self.stats.providers.items():
            frames.add_metric([p], received.get(p, 0))
            msgs.add_metric([p], f.messages)
            conns.add_metric([p], len(f.connections))
            age.add_metric([p], (now - f.last_ts) / 1e9 if f.last_ts else float("nan"))
            gaps.add_metric([p], f.gaps)
            errors.add_metric([p], f.errors)
            rate.add_metric([p], f.rate)
        yield from (frames, msgs, conns, age, gaps, errors, rate)
        if self.storage is not None:
            rows = CounterMetricFamily("wrdata_rows_written", "Rows written", labels=["provider", "table"])
            written = CounterMetricFamily("wrdata_bytes_written", "Bytes written to journal and sealed files", labels=["provider", "table"])
            sealed = CounterMetricFamily("wrdata_files_sealed", "Parquet files sealed", labels=["provider", "table"])
            werr = CounterMetricFamily("wrdata_write_errors", "Failed writes", labels=["provider", "table"])
            dropped = CounterMetricFamily("wrdata_rows_dropped", "Rows dropped over the memory budget", labels=["provider", "table"])
            for (p, table), t in list(self.storage.stats.tables.items()):
                rows.add_metric([p, table], t.rows)
                written.add_metric([p, table], t.bytes_journal + t.bytes_sealed)
                sealed.add_metric([p, table], t.files_sealed)
                werr.add_metric([p, table], t.write_errors)
                dropped.add_metric([p, table], t.dropped)
            cpu = CounterMetricFamily("wrdata_storage_cpu_seconds", "CPU seconds of the storage threads", labels=["thread"])
            cpu.add_metric(["writer"], self.storage.stats.writer_cpu_s)
            cpu.add_metric(["sealer"], self.storage.stats.sealer_cpu_s)
            yield from (rows, written, sealed, werr, dropped, cpu)
        if self.hub is not None:
            ov = CounterMetricFamily("wrdata_consumer_overflows", "Times a consumer queue overflowed", labels=[])
            ov.add_metric([], self.hub.overflows)
            yield ov


def serve_metrics(port: int, collector: MetricsCollector, host: str = "127.0.0.1"):
    """Start the Prometheus endpoint on its own registry (no process-global state)."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    registry.register(collector)
    server, thread = start_http_server(port, addr=host, registry=registry)
    return server, thread
