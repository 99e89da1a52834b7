"""Synthetic market generation speed (events/s, trades/s) on one core.

    python bench/sim_market.py [events]
"""

from __future__ import annotations

import sys
import time

from wrdata.sim.market import SyntheticMarket


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300_000
    m = SyntheticMarket(seed=1, t0_ns=0)
    t = time.perf_counter()
    c = time.process_time()
    events = m.take(n)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    trades = sum(len(e.trades) for e in events)
    changes = sum(len(e.bids) + len(e.asks) for e in events)
    print(f"{n} events in {wall:.2f} s wall / {cpu:.2f} s CPU: {n / cpu:,.0f} events/s per CPU-second")
    print(f"  {trades:,} trades ({trades / cpu:,.0f}/s), {changes:,} book level changes ({changes / cpu:,.0f}/s)")


if __name__ == "__main__":
    main()
