"""The pytest plugin: a user's test replays a recording through the wrdata_replay fixture."""

from __future__ import annotations

import asyncio

import pytest

from wrdata import DataStream
from wrdata.sim.binance import BinanceSimulator
from wrdata.storage import DatasetWriter

pytest_plugins = ["pytester"]


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    root = tmp_path_factory.mktemp("plugin")

    async def rec():
        sim = BinanceSimulator(seed=21, rate=300)
        async with sim:
            writer = DatasetWriter(str(root), flush_interval=0.2).start()
            async with DataStream(endpoints={"binance": sim.url}) as ds:
                ds.add_tap(writer)
                n = 0
                async for _ in ds.stream("BTCUSDT"):
                    n += 1
                    if n == 40:
                        break
            writer.close()

    asyncio.run(rec())
    return root


def test_users_strategy_test_is_deterministic(pytester, recording):
    pytester.makeini(f"[pytest]\nasyncio_mode = auto\nwrdata_root = {recording}\n")
    pytester.makepyfile(
        """
        def momentum(prices, n=5):
            return [1 if p > sum(prices[i - n:i]) / n else -1 for i, p in enumerate(prices) if i >= n]

        async def collect(stream):
            return [t.price async for t in stream.stream("BTCUSDT")]

        async def test_signal_is_stable(wrdata_replay):
            a = await collect(wrdata_replay(speed=None))
            b = await collect(wrdata_replay())
            assert len(a) >= 40 and a == b
            assert momentum(a) == momentum(b)

        def test_root_is_required_somewhere(wrdata_replay):
            assert wrdata_replay().source.root
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
