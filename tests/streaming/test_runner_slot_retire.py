"""A slot whose last stream was removed retires at once: a stream added while its link
closes gets a new connection instead of joining a supervisor that is about to end."""

import asyncio

from wrdata import DataStream
from wrdata.sim.kraken import KrakenSimulator


async def test_resubscribing_right_after_the_last_unsubscribe_gets_data():
    async with KrakenSimulator(seed=9, rate=400) as sim:
        async with DataStream(endpoints={"kraken": sim.url}, options={"kraken": {"control_interval": 0.01}}) as ds:
            for kind in ("trade", "quote", "bar:5m", "book:10", "trade"):
                it = ds.stream("BTC/USD", kind)
                async with asyncio.timeout(10):  # bounds a hung run only
                    msg = await anext(it)
                assert msg.symbol == "BTC/USD"
                sim.stall_all()  # the old connection will not answer the close handshake: a wide window
                await it.aclose()  # the slot's last stream: its link starts closing
                await asyncio.sleep(0.01)  # the supervisor notices and waits for the close
