"""examples/cross_venue_spread.py runs offline against the three simulators."""

import importlib.util
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cross_venue_spread.py"


def load():
    spec = importlib.util.spec_from_file_location("cross_venue_spread", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


async def test_spread_between_binance_coinbase_and_kraken_offline():
    mod = load()
    seen: dict[tuple[str, str], float] = {}

    def report(buy_at, sell_at, edge, bps):
        seen[(buy_at, sell_at)] = bps

    best = await mod.offline(3.0, report)
    assert set(best) == {"binance", "coinbase", "kraken"}
    for bid, ask in best.values():
        assert 0 < bid < ask
    venues = ("binance", "coinbase", "kraken")
    assert {(a, b) for a in venues for b in venues if a != b} <= set(seen)
    assert all(abs(bps) < 500 for bps in seen.values()), "three markets around the same price"
