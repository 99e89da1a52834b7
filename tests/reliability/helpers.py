"""Shared by the reliability tests (tests/reliability) and the soak run (tests/soak).

- :data:`VENUES`: each provider with its simulator, short timings and a symbol, so one
  scenario runs against every venue;
- :class:`Recorder`: a tap (what a capture daemon's writer sees) that also notes the
  monotonic time of every status event as the runner emits it;
- :func:`fault_cycle`: inject one network fault through a :class:`~wrdata.sim.proxy.TcpProxy`
  (or the simulator) and measure how the client detects it, recovers, and records it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wrdata import DataStream
from wrdata.message import StreamMessage
from wrdata.sim.proxy import TcpProxy

S = 1_000_000_000

# Credentials used in every test that needs them: distinctive, so a grep cannot miss them.
ALPACA_KEY, ALPACA_SECRET = "PKRELIABILITYKEY7Q3Z", "alpaca-secret-Zq81-never-logged"
POLYGON_KEY = "polygon-key-Kx72-never-logged"
FINNHUB_TOKEN = "finnhub-token-Tz55-never-logged"


@dataclass
class VenueSetup:
    name: str
    symbol: str  # the subscription, provider-prefixed
    venue_symbol: str  # what messages carry
    make_sim: Callable[..., Any]
    options: dict[str, Any]
    credentials: dict[str, str] | None = None
    silence_timeout: float = 1.0
    ws: bool = True  # a WebSocket venue (else the TWS API over TCP)
    sim_kwargs: dict[str, Any] = field(default_factory=dict)

    def endpoint(self, host: str, port: int) -> str:
        return f"ws://{host}:{port}" if self.ws else f"{host}:{port}"

    def stream(self, endpoint: str, **kw) -> DataStream:
        opts = dict(self.options)
        opts.update(kw.pop("options", {}))
        return DataStream(
            endpoints={self.name: endpoint},
            credentials={self.name: self.credentials} if self.credentials else None,
            options={self.name: opts},
            **kw,
        )


def _binance(**kw):
    from wrdata.sim.binance import BinanceSimulator

    kw.setdefault("rate", 300)
    return BinanceSimulator(seed=kw.pop("seed", 11), **kw)


def _coinbase(**kw):
    from wrdata.sim.coinbase import CoinbaseSimulator

    kw.setdefault("rate", 300)
    return CoinbaseSimulator(seed=kw.pop("seed", 12), heartbeat_interval=0.2, **kw)


def _kraken(**kw):
    from wrdata.sim.kraken import KrakenSimulator

    kw.setdefault("rate", 300)
    return KrakenSimulator(seed=kw.pop("seed", 13), heartbeat_interval=0.2, **kw)


def _alpaca(**kw):
    from wrdata.sim.alpaca import AlpacaSimulator

    kw.setdefault("rate", 400)
    return AlpacaSimulator(key=ALPACA_KEY, secret=ALPACA_SECRET, seed=kw.pop("seed", 14), hours="always", warmup=0.3, **kw)


def _polygon(**kw):
    from wrdata.sim.polygon import PolygonSimulator

    kw.setdefault("rate", 400)
    return PolygonSimulator(key=POLYGON_KEY, seed=kw.pop("seed", 15), hours="always", warmup=0.3, **kw)


def _finnhub(**kw):
    from wrdata.sim.finnhub import FinnhubSimulator

    kw.setdefault("rate", 400)
    return FinnhubSimulator(key=FINNHUB_TOKEN, seed=kw.pop("seed", 16), hours="always", warmup=0.3, **kw)


def _ibkr(**kw):
    from wrdata.sim.ibkr import IbkrSimulator

    kw.setdefault("rate", 300)
    return IbkrSimulator(seed=kw.pop("seed", 17), speed=20.0, warmup=1.0, **kw)


_WS_FAST = {"backoff_initial": 0.05, "backoff_max": 0.5, "silence_timeout": 1.0, "ready_timeout": 5.0, "connect_timeout": 2.0}

VENUES: dict[str, VenueSetup] = {
    "binance": VenueSetup("binance", "binance:BTCUSDT", "BTCUSDT", _binance, dict(_WS_FAST)),
    "coinbase": VenueSetup("coinbase", "coinbase:BTC-USD", "BTC-USD", _coinbase, dict(_WS_FAST, ws_ping_interval=0.3)),
    "kraken": VenueSetup("kraken", "kraken:BTC/USD", "BTC/USD", _kraken, dict(_WS_FAST, ws_ping_interval=0.3, keepalive_interval=0.3)),
    "alpaca": VenueSetup("alpaca", "alpaca:AAPL", "AAPL", _alpaca, dict(_WS_FAST, ws_ping_interval=0.3),
                         {"key": ALPACA_KEY, "secret": ALPACA_SECRET}),
    "polygon": VenueSetup("polygon", "polygon:AAPL", "AAPL", _polygon, dict(_WS_FAST, ws_ping_interval=0.3), {"key": POLYGON_KEY}),
    "finnhub": VenueSetup("finnhub", "finnhub:AAPL", "AAPL", _finnhub, dict(_WS_FAST, ws_ping_interval=0.3), {"key": FINNHUB_TOKEN}),
    "ibkr": VenueSetup(
        "ibkr", "ibkr:AAPL", "AAPL", _ibkr,
        {"backoff_initial": 0.05, "backoff_max": 0.5, "keepalive_interval": 0.2, "silence_timeout": 1.0,
         "connect_timeout": 2.0, "request_timeout": 2.0, "idle_linger": 0.1, "pacing_delay": 0.1},
        ws=False,
    ),
}


class Recorder:
    """A tap: raw rows and messages as a recorder sees them, status events with the
    monotonic time the runner emitted them."""

    def __init__(self) -> None:
        self.raw: list[tuple] = []
        self.messages: list[StreamMessage] = []
        self.status: list[tuple[float, StreamMessage]] = []
        self.woken = asyncio.Event()

    def on_raw(self, provider, conn, seq, ts_recv, direction, url, payload, status=None) -> None:
        self.raw.append((provider, conn, seq, ts_recv, direction, url, payload))

    def on_messages(self, msgs: list[StreamMessage]) -> None:
        now = time.monotonic()
        for m in msgs:
            self.messages.append(m)
            if m.kind == "status":
                self.status.append((now, m))
        self.woken.set()

    def events(self, status: str, since: float = 0.0) -> list[tuple[float, StreamMessage]]:
        return [(t, m) for t, m in self.status if m.status == status and t >= since]

    def data(self, since_ns: int = 0) -> list[StreamMessage]:
        return [m for m in self.messages if m.kind != "status" and m.ts_recv >= since_ns]

    async def wait(self, pred: Callable[[], Any], timeout: float, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            got = pred()
            if got:
                return got
            left = deadline - time.monotonic()
            if left <= 0:
                story = "\n".join(f"  {t:.3f} conn {m.conn} {m.status} {m.reason}" for t, m in self.status[-30:])
                raise AssertionError(f"timed out after {timeout}s waiting for {what}; status events:\n{story}")
            self.woken.clear()
            try:
                await asyncio.wait_for(self.woken.wait(), min(left, 0.05))
            except TimeoutError:
                pass


async def hold_subscription(ds: DataStream, symbol: str, kind: str = "trade") -> asyncio.Task:
    """Keep a stream open with a consumer that drains it (the tap sees everything)."""
    it = ds.stream(symbol, kind)

    async def drain() -> None:
        async for _ in it:
            pass

    return asyncio.get_running_loop().create_task(drain())


async def steady(rec: Recorder, what: str = "", timeout: float = 15.0) -> None:
    """Wait until a connection is subscribed and delivering (a fault before that is a
    fault of the subscribe phase, which ``ready_timeout`` handles)."""

    def ok():
        subs = rec.events("subscribed")
        if not subs:
            return False
        t, last = subs[-1]
        return time.monotonic() - t > 0.3 and any(m.conn == last.conn for m in rec.data(last.ts_recv))

    await rec.wait(ok, timeout, f"{what} subscribed and delivering")


@dataclass
class FaultResult:
    venue: str
    fault: str
    fault_ns: int  # wall clock when the fault was injected
    detected_s: float | None  # fault injected -> ``disconnected`` emitted
    recovered_s: float | None  # fault injected -> data flowing again on a new connection
    gaps: list[StreamMessage]
    reconnect_delays: list[float]  # the backoff delays the runner announced


async def fault_cycle(setup: VenueSetup, sim, proxy: TcpProxy, rec: Recorder, fault: str, *,
                      hold: float = 0.0, reject_for: float = 2.0) -> FaultResult:
    """Inject ``fault`` on a streaming connection, heal after detection (or after
    ``reject_for`` for ``reject``), and wait until data flows again.

    ``cut``: abort the TCP connection; ``blackhole``: half-open, nothing moves either way;
    ``drip``: one byte every 250 ms; ``reject``: cut, and the venue refuses upgrades (HTTP
    503) for ``reject_for`` seconds; ``refuse``: cut, and TCP connections are refused for
    ``reject_for`` seconds; ``venue_close``: the venue closes the connection (a rollover
    cut it makes itself).
    """
    await steady(rec, setup.name)
    conns_before = {m.conn for _, m in rec.events("connected")}
    n_disc = len(rec.events("disconnected"))
    t0 = time.monotonic()
    t0_ns = time.time_ns()
    if fault == "cut":
        assert proxy.cut() >= 1
    elif fault == "blackhole":
        proxy.blackhole()
    elif fault == "drip":
        # four bytes a second: no frame, and no pong (which queues behind the data), gets
        # through within the silence timeout. (A drip that still delivers frames or pongs
        # in time is a slow link, not a dead one: the watchdog replaces it once the
        # backlog delays them past the timeout, which depends on the feed's own rate.)
        proxy.drip(1, 0.25)
    elif fault == "reject":
        sim.faults.reject_connections(reject_for)
        proxy.cut()
    elif fault == "refuse":
        proxy.refuse(reject_for)
        proxy.cut()
    elif fault == "venue_close":
        for c in list(sim.connections):
            c.close(1000, "")
    else:
        raise ValueError(fault)
    if hold:
        await asyncio.sleep(hold)
    disc = await rec.wait(lambda: [e for e in rec.events("disconnected")[n_disc:] if e[1].conn in conns_before], 30, f"{fault} detected")
    detected = disc[0][0] - t0
    if fault in ("blackhole", "drip"):
        proxy.heal()

    def fresh_data():
        new = {m.conn for _, m in rec.events("connected", t0)}
        return [m for m in rec.data(t0_ns) if m.conn in new]

    await rec.wait(fresh_data, 30, f"data after {fault}")
    recovered = time.monotonic() - t0
    await rec.wait(lambda: [m for t, m in rec.events("gap", t0) if m.gap_start_ns is not None], 5, f"gap event after {fault}")
    gaps = [m for t, m in rec.events("gap", t0) if m.gap_start_ns is not None]
    delays = []
    for _, m in rec.events("reconnecting", t0):
        try:
            delays.append(float(m.reason.rsplit(" in ", 1)[1].rstrip("s")))
        except (IndexError, ValueError):
            pass
    return FaultResult(setup.name, fault, t0_ns, detected, recovered, gaps, delays)


def assert_gap_covers_the_outage(rec: Recorder, res, venue_symbol: str) -> None:
    gaps = [g for g in res.gaps if g.symbol == venue_symbol]
    assert gaps, f"{res.fault}: no gap event for {venue_symbol}"
    g = gaps[0]
    # it starts at the last sign of life of the dead connection (a frame, or bytes still in
    # flight when the fault began) and ends where the new connection delivers
    dead = {m.conn for t, m in rec.events("disconnected") if m.ts_recv >= res.fault_ns}
    last_in = max((r[3] for r in rec.raw if r[4] == "in" and r[1] in dead), default=0)
    assert last_in <= g.gap_start_ns <= res.fault_ns + int(1e9), (last_in, g.gap_start_ns, res.fault_ns)
    assert g.gap_end_ns > g.gap_start_ns
    assert g.reason.startswith("disconnected")
    # nothing was received inside the gap: it is the outage, no more and no less
    inside = [m for m in rec.data() if m.symbol == venue_symbol and g.gap_start_ns < m.ts_recv < g.gap_end_ns]
    assert not inside, f"{len(inside)} messages received inside the recorded gap"
    # and the gap reached the recording (raw 'event' rows are what the writer stores)
    assert any(d == "event" and b'"gap"' in p and str(g.gap_start_ns).encode() in p for _, _, _, _, d, _, p in rec.raw)


# -- capture subprocesses ---------------------------------------------------------------------------


def capture_cmd(root, endpoint_args: list[str], targets: list[str], *extra: str, verbose: bool = False) -> list[str]:
    cmd = [sys.executable, "-m", "wrdata.cli"]
    if verbose:
        cmd.append("-vv")
    return [*cmd, "capture", *targets, "--root", str(root), *endpoint_args, "--status", "log", "--status-interval", "0.5", *extra]


def run_cli(*args: str, env: dict | None = None, cwd=None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wrdata.cli", *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=cwd)


def kill9(proc) -> None:
    try:
        os.kill(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# -- crash campaigns -----------------------------------------------------------------------------------


@dataclass
class CrashReport:
    kills: int = 0
    connected_kills: int = 0  # kills of a process that was recording
    lost: list[int] = field(default_factory=list)  # trades lost per kill (sent to it before the kill, not recorded)
    lost_window_s: list[float] = field(default_factory=list)  # how far before the kill the first lost trade was
    rows: int = 0
    files: int = 0
    recovered_events: int = 0


CRASH_SYMBOLS = ("BTCUSDT", "ETHUSDT")


async def crash_campaign(root, kills: int, seed: int, *, flush: float = 0.2, roll: float = 1.0,
                         max_alive: float = 2.5, writer_id: str | None = None) -> CrashReport:
    """Run ``wrdata capture`` against a Binance simulator and SIGKILL it ``kills`` times at
    random moments (while starting, recovering, recording or sealing), restarting it each
    time; then let a last run stop cleanly and check the recording.

    What must hold: every Parquet file readable and none half-written under a final
    name; after the clean stop nothing is left in the journal (recovery was automatic);
    no trade recorded twice; each killed run's trades are a contiguous run of the tape up
    to shortly before its kill (only the tail after the last flush is lost), measured as
    rows lost per kill.
    """
    import random

    import pyarrow.parquet as pq

    from wrdata.sim.binance import BinanceSimulator
    from wrdata.storage import list_segments, read_table

    rng = random.Random(seed)
    report = CrashReport()
    sim = BinanceSimulator(seed=seed, rate=400, symbols=list(CRASH_SYMBOLS) + ["BNBUSDT"])
    targets = [f"binance:{','.join(CRASH_SYMBOLS)}"]
    extra = ["--kinds", "trade,quote", "--flush-interval", str(flush), "--roll-interval", str(roll)]
    if writer_id:
        extra += ["--writer-id", writer_id]
    kill_times: list[int] = []
    async with sim:
        endpoint = ["--endpoint", f"binance={sim.url}"]
        for _ in range(kills):
            proc = await asyncio.create_subprocess_exec(*capture_cmd(root, endpoint, targets, *extra),
                                                        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
            if rng.random() < 0.25:  # while it starts and recovers its predecessor's journal
                await asyncio.sleep(rng.uniform(0.05, 1.2))
            else:  # while it records (and rolls and seals, every ``roll`` seconds)
                n = len(sim.history)
                try:
                    await sim.wait_for_connections(n + 1, timeout=20)
                except TimeoutError:
                    pass
                await asyncio.sleep(rng.uniform(0.0, max_alive))
            kill9(proc)
            kill_times.append(time.time_ns())
            await proc.wait()
            report.kills += 1
        final = await asyncio.create_subprocess_exec(*capture_cmd(root, endpoint, targets, *extra, "--duration", "2"),
                                                     stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(final.communicate(), 120)
        assert final.returncode == 0, err.decode()[-3000:]
        tape = {s: sorted((t.trade_id, t.ts_ns) for t in sim.market.trades(s)) for s in CRASH_SYMBOLS}

    # every file readable; nothing half-written under a final name; nothing left unsealed
    names = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]
    for f in names:
        if f.endswith(".parquet"):
            pq.read_table(f)
            report.files += 1
    assert not list_segments(os.path.join(str(root), "_journal")), "recovery sealed every killed run's journal"
    assert not [f for f in names if ".tmp-" in f], "no temporary file of a seal the kill interrupted is left"
    trades = read_table(str(root), "trades")
    report.rows = trades.num_rows
    syms = trades.column("symbol").cast("string").to_pylist()
    ids = trades.column("trade_id").to_pylist()
    ts = [t.value for t in trades.column("ts_recv")]
    assert len(set(zip(syms, ids))) == len(ids), "no trade recorded twice"
    # each run's rows: received after the previous kill and before its own
    bounds = [0, *kill_times, 2**63]
    runs: list[dict[str, list[tuple[int, int]]]] = [{} for _ in range(len(bounds) - 1)]
    for s, i, t in zip(syms, ids, ts):
        k = next(k for k in range(len(bounds) - 1) if bounds[k] <= t < bounds[k + 1])
        runs[k].setdefault(s, []).append((i, t))
    for k, kill_ns in enumerate(kill_times):
        if not runs[k]:
            continue  # killed before it recorded anything
        report.connected_kills += 1
        lost = 0
        first_lost = None
        for s in CRASH_SYMBOLS:
            got = sorted(runs[k].get(s, []))
            if not got:
                continue
            got_ids = [i for i, _ in got]
            assert got_ids == list(range(got_ids[0], got_ids[0] + len(got_ids))), f"run {k} {s}: a hole in a run"
            # lost: trades the venue made after the last recorded one and before the kill
            after = [(i, t) for i, t in tape[s] if i > got_ids[-1] and t < kill_ns]
            lost += len(after)
            if after:
                first_lost = min(first_lost or after[0][1], after[0][1])
        report.lost.append(lost)
        if first_lost is not None:
            window = (kill_ns - first_lost) / 1e9
            report.lost_window_s.append(window)
            # only what came after the last flush (plus the process's scheduling) is lost
            assert window <= flush + 0.8, f"run {k}: lost trades from {window:.2f}s before the kill"
    ev = read_table(str(root), "events")
    reasons = [r or "" for r in ev.column("reason").to_pylist()]
    report.recovered_events = sum(1 for r in reasons if "stopped without sealing" in r)
    assert report.recovered_events >= 1
    return report
