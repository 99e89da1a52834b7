"""The ``wrdata`` command."""

from __future__ import annotations

import logging
import sys

import click


@click.group()
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(package_name="wrdata")
def main(verbose: int) -> None:
    """Live market data: stream, capture, query, replay."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


# `wrdata sim <venue>`: the command lives with the simulators (wrdata/sim/cli.py)
from .sim.cli import sim as _sim_command  # noqa: E402

main.add_command(_sim_command)

from .capture.cli import capture as _capture_command  # noqa: E402
from .capture.cli import rebuild as _rebuild_command  # noqa: E402

main.add_command(_capture_command)
main.add_command(_rebuild_command)

from .capture.heal import heal_command as _heal_command  # noqa: E402

main.add_command(_heal_command)

from .demo import demo as _demo_command  # noqa: E402
from .replay.cli import replay as _replay_command  # noqa: E402

main.add_command(_replay_command)

main.add_command(_demo_command)

# `wrdata query / ls / verify / compact / ohlcv`: with the queries (wrdata/queries/cli.py)
from .queries.cli import COMMANDS as _query_commands  # noqa: E402

for _cmd in _query_commands:
    main.add_command(_cmd)

if __name__ == "__main__":
    main()
