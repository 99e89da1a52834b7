"""A pytest plugin: deterministic tests of your own strategies on recorded data.

Installed with wrdata (entry point ``pytest11``), it gives tests the ``wrdata_replay``
fixture, a factory of replaying ``DataStream`` objects::

    async def test_momentum_signal(wrdata_replay):
        stream = wrdata_replay("tests/data/btc-2026-11-23", speed=None)
        signals = [s async for s in my_strategy(stream)]
        assert signals == [...]

``root`` defaults to the ``wrdata_root`` ini option (or ``--wrdata-root``). Every
replay made through the fixture is closed when the test ends.
"""

from __future__ import annotations

from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("wrdata_root", "Default recording folder for the wrdata_replay fixture", default="")
    parser.addoption("--wrdata-root", default=None, help="Default recording folder for the wrdata_replay fixture")


@pytest.fixture
def wrdata_replay(request: pytest.FixtureRequest):
    """``wrdata_replay(root=None, **kwargs)`` → ``DataStream.replay(root, **kwargs)``."""
    from wrdata import DataStream

    made: list[Any] = []
    default = request.config.getoption("--wrdata-root") or request.config.getini("wrdata_root") or None

    def make(root: str | None = None, **kwargs: Any):
        root = root or default
        if not root:
            raise pytest.UsageError("wrdata_replay needs a recording folder: pass it, or set the wrdata_root ini option")
        ds = DataStream.replay(str(root), **kwargs)
        made.append(ds)
        return ds

    yield make
    for ds in made:
        # the event loop of an async test is gone by now: stop what runs outside it
        source = ds.source
        source._closed = True
        if source._reader is not None:
            source._reader.stop()
        source.hub.finish_all()
