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


if __name__ == "__main__":
    main()
