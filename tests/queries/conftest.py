"""The recording the query tests share (see query_helpers.record)."""

from __future__ import annotations

import asyncio

import pytest
from query_helpers import Recording, record

from wrdata.storage import read_table


@pytest.fixture(scope="session")
def recording(tmp_path_factory) -> Recording:
    root = tmp_path_factory.mktemp("rec") / "data"
    rec = asyncio.run(record(root))
    # the fixture is only useful if the capture really produced what the tests rely on
    trades = read_table(str(root), "trades")
    assert trades.num_rows > 200
    assert rec.withheld.get("BTCUSDT"), "the simulator withheld no trade"
    return rec
