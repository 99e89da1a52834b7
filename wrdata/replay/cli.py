"""``wrdata replay`` (print a recording) and ``wrdata replay serve`` (serve it over a venue's protocol)."""

from __future__ import annotations

import asyncio
import sys

import click
import msgspec

from ..capture.config import default_root
from ..cliopts import check_providers, check_range, check_symbols, open_root, require_recording, s3_endpoint_option


def _speed(value: str | None) -> float | None:
    if value is None or value.lower() in ("max", "none", "inf"):
        return None
    try:
        s = float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r}: a positive number or 'max'", param_hint="--speed") from None
    if s <= 0:
        raise click.BadParameter(f"{value!r}: must be positive", param_hint="--speed")
    return s


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _line(m) -> str:
    ts = m.recv_time.strftime("%Y-%m-%d %H:%M:%S.%f")
    return f"{ts} {m}"


@click.group(invoke_without_command=True)
@click.option("--root", default=None, help="Dataset root (default $WRDATA_ROOT, else ./data).")
@click.option("--provider", "providers", help="Comma-separated providers (default: all recorded).")
@click.option("--symbols", help="Comma-separated symbols (venue spelling).")
@click.option("--kinds", default="trade,quote,bar,book,status", show_default=True, help="Comma-separated kinds.")
@click.option("--speed", default="max", show_default=True, help="1 = real time, 10 = ten times faster, max = no pacing.")
@click.option("--start", help="From this time (ISO 8601, e.g. 2026-11-23T14:00Z, or ns).")
@click.option("--end", help="Until this time (exclusive).")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "table"]), default="table", show_default=True)
@click.option("--limit", type=int, help="Stop after this many messages.")
@click.option("--writer", "writers", multiple=True, help="Only this writer's rows (repeatable): its view, its outages.")
@click.option("--backfill", type=click.Choice(["received", "event", "none"]), default="received", show_default=True,
              help="Healed trades: where received, at their event time inside the gap, or left out.")
@click.option("--all-rows", is_flag=True, help="Every writer's rows, duplicates included (not the merged view).")
@s3_endpoint_option
@click.pass_context
def replay(ctx, root, providers, symbols, kinds, speed, start, end, fmt, limit, writers, backfill, all_rows,
           s3_endpoint) -> None:
    """Print a recording's messages in its total order (book rows as venue deltas): the
    merged view (each trade once across writers and heals) unless --all-rows.

    \b
    wrdata replay --root ./data --provider binance --symbols BTCUSDT --kinds trade --format jsonl
    wrdata replay --root ./data --writer daemon-a --backfill none
    wrdata replay serve binance --root ./data --port 9001 --speed 1
    """
    if ctx.invoked_subcommand is not None:
        return
    from .reader import KIND_TABLES, everything, iter_windows, to_ns

    root = root or default_root()
    kind_list = _csv(kinds) or []
    bad = [k for k in kind_list if k not in KIND_TABLES]
    if bad:
        raise click.BadParameter(f"unknown kind(s) {', '.join(bad)}: expected {', '.join(KIND_TABLES)}", param_hint="--kinds")
    try:
        lo, hi = to_ns(start), to_ns(end)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    check_range(lo, hi, start, end)
    provider_list, symbol_list = check_providers(_csv(providers)), check_symbols(_csv(symbols))
    pace = _speed(speed)
    fs = open_root(root, s3_endpoint)
    require_recording(root, fs)
    sel = everything(root, fs, provider_list, symbol_list, kind_list)
    if not sel.tables or not sel.providers:
        raise click.UsageError(f"nothing recorded under {root} for that selection")
    from .merged import MergedView

    view = MergedView(root, filesystem=fs, start=lo, end=hi, merged=not all_rows, writers=list(writers) or None, backfill=backfill)
    sel.view = None if view.trivial else view
    enc = msgspec.json.Encoder()
    out = sys.stdout

    async def run() -> None:
        import time

        n = 0
        t0 = ts0 = None
        for w in iter_windows(root, sel, lo, hi, filesystem=fs):
            for m in w.messages():
                if pace is not None:
                    if t0 is None:
                        t0, ts0 = time.monotonic(), m.ts_recv
                    delay = t0 + (m.ts_recv - ts0) / 1e9 / pace - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                if fmt == "jsonl":
                    out.write(enc.encode(m).decode() + "\n")
                else:
                    out.write(_line(m) + "\n")
                n += 1
                if limit is not None and n >= limit:
                    return

    try:
        asyncio.run(run())
    except BrokenPipeError:  # `| head` closed the pipe
        pass


@replay.command()
@click.argument("provider")
@click.option("--root", default=None, help="Dataset root (default $WRDATA_ROOT, else ./data).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind (loopback unless told otherwise).")
@click.option("--port", type=int, default=0, help="Port (default: any free port).")
@click.option("--speed", default="1", show_default=True, help="1 = real time, 10 = ten times faster, max = no pacing.")
@click.option("--start", help="From this time (ISO 8601 or ns).")
@click.option("--end", help="Until this time (exclusive).")
@click.option("--settle", type=float, default=0.5, show_default=True, help="Seconds after the first client subscribes before serving.")
@s3_endpoint_option
def serve(provider, root, host, port, speed, start, end, settle, s3_endpoint) -> None:
    """Serve a recording over PROVIDER's own wire protocol, for an unmodified venue client.

    Prints the URL on the first line; exits when the recording has been served.
    """
    from ..sim import SIMULATORS
    from .serve import serve as run_serve

    provider = provider.lower()
    if provider not in SIMULATORS:
        raise click.BadParameter(f"no simulator for {provider!r}: expected one of {', '.join(sorted(SIMULATORS))}", param_hint="PROVIDER")
    from .reader import recorded_providers, to_ns

    root = root or default_root()
    try:
        check_range(to_ns(start), to_ns(end), start, end)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    fs = open_root(root, s3_endpoint)
    require_recording(root, fs)
    if provider not in recorded_providers(root, fs):  # else it would wait for clients, then serve nothing
        raise click.UsageError(f"nothing recorded for {provider} under {root}")

    def ready(sim) -> None:
        click.echo(sim.url)
        sys.stdout.flush()

    try:
        n = asyncio.run(run_serve(provider, root, host=host, port=port, speed=_speed(speed), start=start, end=end,
                                  settle=settle, on_ready=ready, filesystem=fs))
    except (ValueError, OSError) as e:
        raise click.UsageError(str(e)) from None
    except KeyboardInterrupt:
        return
    click.echo(f"served {n} recorded frames", err=True)
