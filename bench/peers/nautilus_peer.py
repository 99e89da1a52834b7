"""NautilusTrader's ParquetDataCatalog on the tape's trades (runs in the peers' venv).

    python bench/peers/nautilus_peer.py N

- bytes per trade: the 19,904 real trades of the tape (``bench/frames.py``) as
  ``TradeTick`` objects (``TestInstrumentProvider.btcusdt_binance()``: prices at its 2
  decimals, sizes at its 6, trade id as the string the venue's id makes, ``ts_event`` =
  ``ts_init`` = the venue's trade time), ``ParquetDataCatalog(path).write_data(ticks)``
  with its defaults; every byte under the catalog's directory, divided by 19,904.
- write rows/s: the tape repeated (times shifted, ids renumbered) to N ticks, built
  before the clock starts; ``write_data`` of all of them, wall and CPU seconds.
- read rows/s: ``catalog.trade_ticks()``: all N back as ``TradeTick`` objects.

Prints one JSON line.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from nautilus_trader.model.data import TradeTick  # noqa: E402
from nautilus_trader.model.enums import AggressorSide  # noqa: E402
from nautilus_trader.model.identifiers import TradeId  # noqa: E402
from nautilus_trader.persistence.catalog import ParquetDataCatalog  # noqa: E402
from nautilus_trader.test_kit.providers import TestInstrumentProvider  # noqa: E402

from bench.frames import tape_trades  # noqa: E402


def ticks(n: int) -> list[TradeTick]:
    inst = TestInstrumentProvider.btcusdt_binance()
    trades = tape_trades()
    span = (trades[-1]["T"] - trades[0]["T"] + 1) * 1_000_000
    out = []
    for i in range(n):
        rep, k = divmod(i, len(trades))
        d = trades[k]
        ts = d["T"] * 1_000_000 + rep * span
        out.append(TradeTick(inst.id, inst.make_price(d["p"]), inst.make_qty(d["q"]),
                             AggressorSide.SELLER if d["m"] else AggressorSide.BUYER,
                             TradeId(str(d["t"] + rep * len(trades))), ts, ts))
    return out


def dir_bytes(d: str) -> int:
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(d) for f in fs)


def main() -> None:
    import nautilus_trader

    n = int(sys.argv[1])
    tape = ticks(19_904)
    tmp = tempfile.mkdtemp(prefix="bench-nautilus-")
    try:
        ParquetDataCatalog(f"{tmp}/tape").write_data(tape)
        tape_bytes = dir_bytes(f"{tmp}/tape")
        many = ticks(n)
        cat = ParquetDataCatalog(f"{tmp}/many")
        w0, c0 = time.perf_counter(), time.process_time()
        cat.write_data(many)
        ww, wc = time.perf_counter() - w0, time.process_time() - c0
        w0, c0 = time.perf_counter(), time.process_time()
        back = cat.trade_ticks()
        rw, rc = time.perf_counter() - w0, time.process_time() - c0
        assert len(back) == n, (len(back), n)
        out = {
            "tape_trades": len(tape), "tape_bytes": tape_bytes, "n": n,
            "write_wall": ww, "write_cpu": wc, "read_wall": rw, "read_cpu": rc,
            "files": sum(len(fs) for _, _, fs in os.walk(f"{tmp}/many")),
            "python": sys.version.split()[0], "nautilus_trader": nautilus_trader.__version__,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
