"""The six classic examples run offline against the Binance simulator."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from wrdata import DataStream
from wrdata.sim.binance import BinanceSimulator

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "streaming_usage.py"


def load():
    spec = importlib.util.spec_from_file_location("streaming_usage", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


async def test_each_example_does_what_it_says():
    ex = load()
    sim = BinanceSimulator(seed=1, rate=400, kline_push_interval=0.2)
    async with sim:
        async with DataStream(endpoints={"binance": sim.url}) as ds:
            prices = await ex.price_stream(ds, n=10)
            assert len(prices) == 10 and all(p > 0 for p in prices)
            bars = await ex.candles(ds, n=3)
            assert [b.interval for b in bars] == ["1m"] * 3 and all(b.low <= b.close <= b.high for b in bars)
            assert await ex.callback(ds, seconds=0.5) > 0
            seen = await ex.many_symbols(ds, n=200)
            assert set(seen) == {"BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT"}
            vwap = await ex.aggregation(ds, n=100)
            assert set(vwap) == {"BTCUSDT", "ETHUSDT"}
            signals = await ex.momentum(ds, n=200, fast=5, slow=20)
            assert signals and all(s in ("long", "short") for s, _ in signals)
            assert all(a[0] != b[0] for a, b in zip(signals, signals[1:])), "a signal is a change of state"


def test_the_script_runs_offline():
    p = subprocess.run([sys.executable, str(EXAMPLE), "--offline", "--seconds", "0.5"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    for title in ("1. Trades", "2. 1-minute candles", "3. A callback", "4. Several symbols", "5. Rolling VWAP", "6. Momentum"):
        assert title in p.stdout
