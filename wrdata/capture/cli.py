"""``wrdata capture`` and ``wrdata rebuild``."""

from __future__ import annotations

import asyncio
import logging

import click

from ..cliopts import check_providers, check_writable, open_root, require_recording, s3_endpoint_option
from .config import CaptureConfig, ConfigError, default_root, load_config, parse_endpoints, parse_targets


def _fail(e: Exception) -> None:
    raise click.UsageError(str(e))  # one line, exit status 2


@click.command()
@click.argument("targets", nargs=-1)
@click.option("--kinds", default="trade", show_default=True, help="Comma-separated: trade,aggtrade,quote,bar:1m,book:20")
@click.option("--root", default=None, help="Dataset root (default $WRDATA_ROOT, else ./data).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML file with providers, symbols, kinds.")
@click.option("--duration", type=float, help="Seconds to capture, then seal and exit 0.")
@click.option("--endpoint", "endpoints", multiple=True, help="provider=URL (a simulator, testnet or proxy); repeatable.")
@click.option("--rest-endpoint", "rest_endpoints", multiple=True, help="provider=URL for REST calls, if not derived from --endpoint.")
@click.option("--workers", type=int, default=1, show_default=True, help="Shard subscriptions over N processes (one writer each).")
@click.option("--metrics-port", type=int, help="Serve Prometheus metrics on this port (127.0.0.1; --metrics-host to change).")
@click.option("--metrics-host", default="127.0.0.1", show_default=True)
@click.option("--status", "status_mode", type=click.Choice(["auto", "rich", "log", "none"]), default="auto", show_default=True,
              help="Live table on a terminal, periodic log lines otherwise.")
@click.option("--status-interval", type=float, default=10.0, show_default=True, help="Seconds between status log lines.")
@click.option("--writer-id", help="Writer id (default: unique per host and process).")
@click.option("--journal-dir", help="Local directory for the journal (default <root>/_journal; for a remote root "
              "~/.local/state/wrdata/journal/<root>-<hash>).")
@s3_endpoint_option
@click.option("--flush-interval", type=float, help="Seconds between journal flushes (default 1).")
@click.option("--roll-interval", type=float, help="Seconds per sealed file (default 3600).")
@click.option("--fsync", type=click.Choice(["flush", "seal", "never"]), help="When the journal is fsynced.")
@click.option("--raw-level", type=click.IntRange(1, 22), help="zstd level of sealed raw frames (default 9; 1 costs "
              "~1/7 the CPU for ~17% more bytes).")
@click.option("--transport", type=click.Choice(["picows", "websockets"]), help="WebSocket client library.")
@click.option("--no-heal", "no_heal", is_flag=True, help="Do not fill trade gaps from the venues' history APIs.")
def capture(targets, kinds, root, config_path, duration, endpoints, rest_endpoints, workers, metrics_port, metrics_host,
            status_mode, status_interval, writer_id, journal_dir, s3_endpoint, flush_interval, roll_interval, fsync, raw_level,
            transport, no_heal) -> None:
    """Record providers into rolling zstd Parquet, partitioned by provider and date.

    \b
    wrdata capture binance:BTCUSDT,ETHUSDT coinbase:BTC-USD --kinds trade,quote,bar:1m
    wrdata capture --config capture.toml --duration 60
    wrdata capture BTCUSDT --endpoint binance=ws://127.0.0.1:9001
    wrdata capture binance:BTCUSDT --root s3://bucket/prefix --s3-endpoint http://127.0.0.1:9000
    """
    from .daemon import CaptureDaemon, run_workers

    logging.getLogger("wrdata.capture").setLevel(logging.INFO)
    try:
        if config_path:
            if targets:
                raise ConfigError("give targets on the command line or in --config, not both")
            config = load_config(config_path)
        else:
            config = CaptureConfig(targets=parse_targets(list(targets), kinds), root=default_root())
        if root:
            config.root = root
        config.endpoints.update(parse_endpoints(list(endpoints)))
        config.rest_endpoints.update(parse_endpoints(list(rest_endpoints), "--rest-endpoint"))
        if s3_endpoint:
            config.storage.s3_endpoint = s3_endpoint
        # the store first: a missing bucket or wrong credentials is one line before anything runs
        open_root(config.root, config.storage.s3_endpoint or None)
        for name, value in (("flush_interval", flush_interval), ("roll_interval", roll_interval), ("fsync", fsync),
                            ("raw_level", raw_level)):
            if value is not None:
                setattr(config.storage, name, value)
        if no_heal:
            config.heal = False
        if workers < 1:
            raise ConfigError("--workers must be at least 1")
        kwargs = dict(duration=duration, writer_id=writer_id, journal_dir=journal_dir, status=status_mode,
                      status_interval=status_interval, metrics_port=metrics_port, metrics_host=metrics_host, transport=transport,
                      freeze_gc=True)  # the process is the daemon's own
        if workers > 1:
            daemon = CaptureDaemon(config, **kwargs)  # validates the arguments
            asyncio.run(daemon.check())
            code = run_workers(config, workers, **kwargs)
        else:
            code = asyncio.run(CaptureDaemon(config, **kwargs).run())
    except ConfigError as e:
        _fail(e)
    raise SystemExit(code)


@click.command()
@click.option("--root", default=None, help="Dataset root (default $WRDATA_ROOT, else ./data).")
@click.option("--provider", "providers", multiple=True, help="Only this provider (repeatable; default: every recorded one).")
@click.option("--journal-dir", help="Where the capture's journal is (default <root>/_journal, or a remote root's on this host).")
@click.option("--dry-run", is_flag=True, help="Parse and count, write nothing.")
@s3_endpoint_option
def rebuild(root, providers, journal_dir, dry_run, s3_endpoint) -> None:
    """Re-derive trades, quotes, bars, book and events from raw with the current parsers."""
    from .rebuild import RebuildError
    from .rebuild import rebuild as run

    root = root or default_root()
    providers = check_providers(list(providers))
    fs = open_root(root, s3_endpoint)
    check_writable(root, fs) if not dry_run else require_recording(root, fs)
    try:
        results = run(root, providers or None, journal_dir=journal_dir, dry_run=dry_run, filesystem=fs)
    except (RebuildError, ValueError) as e:
        _fail(e)
    for r in results:
        rows = ", ".join(f"{t}={n}" for t, n in sorted(r.rows.items()))
        verb = "would write" if dry_run else f"wrote {len(r.written)} files ({len(r.removed)} replaced):"
        click.echo(f"{r.provider}: {r.frames} raw rows -> {verb} {rows}")
