"""``wrdata sim <venue>``: run one simulator until SIGINT/SIGTERM.

The command is generic over :data:`wrdata.sim.SIMULATORS`: each registered class gets a
sub-command with the common options below. A simulator class adds its own options by
defining ``cli_options() -> list[click.Option]``; their values are passed to its
constructor as keyword arguments of the same name. Every simulator constructor accepts
``host``, ``port``, ``seed``, ``rate``, ``symbols`` (list of str) and ``faults``.

The first line on stdout is the URL served (flushed at once), so a parent process can
read it and connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from typing import Any

import click

from . import SIMULATORS, simulator_class
from .faults import Faults

_COMMON = [
    click.Option(["--host"], default="127.0.0.1", show_default=True, help="Interface to listen on."),
    click.Option(["--port"], type=click.IntRange(0, 65535), default=0, show_default=True, help="Port (0: pick a free one)."),
    click.Option(["--seed"], type=int, default=0, show_default=True, help="Seed of the synthetic market."),
    click.Option(["--rate"], type=float, default=None, help="Market events per second (all symbols)."),
    click.Option(["--symbols"], default=None, help="Comma-separated symbols, venue spelling (default: the venue's set)."),
    click.Option(["--drop-after"], type=int, default=None, help="Fault: abort each connection after N frames."),
    click.Option(["--malformed-every"], type=int, default=None, help="Fault: a malformed frame after every N frames."),
    click.Option(
        ["--lifetime"], type=float, default=None, help="Close each connection after T seconds (venue default otherwise)."
    ),
    click.Option(["--page-limit"], type=int, default=None, help="Fault: REST history pages hold at most N rows."),
]


async def _run(sim: Any) -> None:
    await sim.start()
    click.echo(sim.url)
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await sim.stop()


def _command(name: str) -> click.Command:
    cls = simulator_class(name)
    extra: list[click.Parameter] = list(cls.cli_options()) if hasattr(cls, "cli_options") else []

    def callback(**kw: Any) -> None:
        faults = Faults(
            drop_after=kw.pop("drop_after"),
            malformed_every=kw.pop("malformed_every"),
            lifetime=kw.pop("lifetime"),
            page_limit=kw.pop("page_limit"),
        )
        symbols = kw.pop("symbols")
        if symbols:
            from ..cliopts import check_symbols

            kw["symbols"] = check_symbols([s.strip() for s in symbols.split(",") if s.strip()])
        if kw.get("rate") is None:
            kw.pop("rate")
        try:
            sim = cls(faults=faults, **kw)
        except (ValueError, TypeError) as e:
            raise click.UsageError(str(e)) from None
        asyncio.run(_run(sim))

    doc = (cls.__doc__ or "").strip().splitlines()
    common = list(_COMMON)
    default_port = getattr(cls, "default_port", 0)  # e.g. 4002 for ibkr, as a paper IB Gateway
    if default_port:
        common = [
            click.Option(["--port"], type=click.IntRange(0, 65535), default=default_port, show_default=True,
                         help="Port (0: pick a free one).")
            if o.name == "port" else o
            for o in common
        ]
    return click.Command(
        name,
        params=[*common, *extra],
        callback=callback,
        help=f"Serve the {name} protocol on loopback. " + (doc[0] if doc else ""),
    )


class SimGroup(click.Group):
    """Sub-commands built from the simulator registry on demand (imports stay lazy)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SIMULATORS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in SIMULATORS:
            return None
        return _command(cmd_name)


@click.group(cls=SimGroup, name="sim")
def sim() -> None:
    """Run a venue simulator (prints its URL on the first line, runs until Ctrl-C)."""
