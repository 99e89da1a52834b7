"""Credentials never leave the process: not in logs (at DEBUG, every library's), exceptions,
status events, metrics, recordings or ``raw``.

A real ``wrdata -vv capture`` records Coinbase (signed with a CDP key: JWTs), Alpaca,
Polygon, Finnhub and IBKR (whose messages name the account) from their simulators,
through an outage (every connection dropped: reconnects re-authenticate), with its
metrics endpoint scraped; then runs again with wrong credentials, so that refusals and
their exceptions are logged too. Everything it wrote or printed is then searched, the
recording decoded table by table (compressed files would hide a secret from a byte grep).
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import urllib.request

import pyarrow.parquet as pq

from tests.reliability.helpers import ALPACA_KEY, ALPACA_SECRET, FINNHUB_TOKEN, POLYGON_KEY
from wrdata.sim.alpaca import AlpacaSimulator
from wrdata.sim.coinbase import CoinbaseSimulator
from wrdata.sim.finnhub import FinnhubSimulator
from wrdata.sim.ibkr import IbkrSimulator
from wrdata.sim.polygon import PolygonSimulator

ACCOUNT = "DU7319468"
CB_KEY_NAME = "organizations/org-5a1d/apiKeys/key-never-logged-8c2e"
JWT = re.compile(rb"eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}")


def _keypair() -> tuple[str, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    priv = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return priv, pub


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _needles(secrets: list[str]) -> list[bytes]:
    out = []
    for s in secrets:
        out.append(s.encode())
        if "BEGIN" in s:  # a PEM key: its base64 body, line by line
            out += [ln.encode() for ln in s.splitlines() if len(ln) > 20 and "-----" not in ln]
    return out


def _recorded_bytes(root) -> bytes:
    """Every value of every table, decoded; and every other file's bytes."""
    parts = []
    for d, _, files in os.walk(root):
        for f in files:
            path = os.path.join(d, f)
            if f.endswith(".parquet"):
                t = pq.read_table(path)
                for col in t.columns:
                    for v in col.to_pylist():
                        if v is not None:
                            parts.append(v if isinstance(v, bytes) else str(v).encode())
            else:
                with open(path, "rb") as fh:
                    parts.append(fh.read())
    return b"\n".join(parts)


async def _capture(root, urls: dict[str, str], env: dict, duration: float, sims, metrics_port: int | None) -> tuple[int, bytes, bytes]:
    args = [sys.executable, "-m", "wrdata.cli", "-vv", "capture", "coinbase:BTC-USD", "alpaca:AAPL", "polygon:AAPL", "finnhub:AAPL",
            "ibkr:AAPL", "--kinds", "trade", "--root", str(root), "--flush-interval", "0.2", "--status", "log", "--status-interval", "0.5",
            "--duration", str(duration)]
    for venue, url in urls.items():
        args += ["--endpoint", f"{venue}={url}"]
    if metrics_port:
        args += ["--metrics-port", str(metrics_port)]
    p = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    comm = asyncio.ensure_future(p.communicate())
    metrics = b""
    if metrics_port:
        await asyncio.sleep(duration / 2)
        for s in sims:  # an outage: every venue reconnects and authenticates again
            for c in list(s.connections):
                c.drop()
        await asyncio.sleep(1.5)
        metrics = await asyncio.to_thread(lambda: urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read())
    out, err = await asyncio.wait_for(comm, 120)
    return p.returncode, out + err, metrics


async def _refusals(urls: dict[str, str], creds: dict[str, dict[str, str]]) -> list[bytes]:
    """Each venue given wrong credentials in this process: the exception its consumer gets
    (message, repr, traceback) and everything logged meanwhile, at DEBUG."""
    import logging
    import traceback

    from wrdata import DataStream

    class Grab(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.DEBUG)
            self.lines: list[str] = []

        def emit(self, record) -> None:
            if not record.name.startswith(("websockets.server", "wrdata.sim")):  # the venue's side of the test
                self.lines.append(self.format(record))

    out = []
    for venue, cred in creds.items():
        grab = Grab()
        root = logging.getLogger()
        old = root.level
        root.addHandler(grab)
        root.setLevel(logging.DEBUG)
        text = ""
        try:
            async with DataStream(endpoints={venue: urls[venue]}, credentials={venue: cred},
                                  options={venue: {"backoff_initial": 0.05, "ready_timeout": 5.0}}) as ds:
                try:
                    async with asyncio.timeout(15):
                        async for _ in ds.stream(f"{venue}:{'BTC-USD' if venue == 'coinbase' else 'AAPL'}"):
                            pass
                except Exception as e:  # noqa: BLE001 - the refusal is what is examined
                    text = f"{type(e).__name__}: {e}\n{e!r}\n" + "".join(traceback.format_exception(e))
        finally:
            root.removeHandler(grab)
            root.setLevel(old)
        out.append((text + "\n".join(grab.lines)).encode())
    return out


async def test_credentials_and_account_ids_never_reach_logs_events_metrics_or_recordings(tmp_path):
    cb_priv, cb_pub = _keypair()
    wrong_priv, _ = _keypair()
    secrets = [ALPACA_KEY, ALPACA_SECRET, POLYGON_KEY, FINNHUB_TOKEN, CB_KEY_NAME, cb_priv, ACCOUNT]
    wrong = ["PKWRONGKEY55AA", "wrong-alpaca-secret-Rr19", "wrong-polygon-key-Qq27", "wrong-finnhub-token-Ww83", wrong_priv]
    sims = [
        CoinbaseSimulator(seed=41, rate=200, jwt_keys={CB_KEY_NAME: cb_pub}),
        AlpacaSimulator(key=ALPACA_KEY, secret=ALPACA_SECRET, seed=42, hours="always", warmup=0.3),
        PolygonSimulator(key=POLYGON_KEY, seed=43, hours="always", warmup=0.3),
        FinnhubSimulator(key=FINNHUB_TOKEN, seed=44, hours="always", warmup=0.3),
        IbkrSimulator(seed=45, speed=20.0, warmup=1.0, accounts=[ACCOUNT]),
    ]
    for s in sims:
        await s.start()
    try:
        urls = {"coinbase": sims[0].url, "alpaca": sims[1].url, "polygon": sims[2].url, "finnhub": sims[3].url, "ibkr": sims[4].url}
        env = dict(os.environ, APCA_API_KEY_ID=ALPACA_KEY, APCA_API_SECRET_KEY=ALPACA_SECRET, POLYGON_API_KEY=POLYGON_KEY,
                   FINNHUB_API_KEY=FINNHUB_TOKEN, COINBASE_API_KEY=CB_KEY_NAME, COINBASE_API_SECRET=cb_priv, PYTHONUNBUFFERED="1")
        root = tmp_path / "good"
        code, output, metrics = await _capture(root, urls, env, 5.0, sims, _free_port())
        assert code == 0, output.decode(errors="replace")[-3000:]
        bad_env = dict(env, APCA_API_KEY_ID=wrong[0], APCA_API_SECRET_KEY=wrong[1], POLYGON_API_KEY=wrong[2], FINNHUB_API_KEY=wrong[3],
                       COINBASE_API_SECRET=wrong[4])
        bad_root = tmp_path / "bad"
        _, bad_output, _ = await _capture(bad_root, urls, bad_env, 3.0, sims, None)
        refusals = await _refusals(urls, {"coinbase": {"key": CB_KEY_NAME, "secret": wrong[4]},
                                          "alpaca": {"key": wrong[0], "secret": wrong[1]},
                                          "polygon": {"key": wrong[2]}, "finnhub": {"key": wrong[3]}})
    finally:
        for s in sims:
            await s.stop()

    recorded = _recorded_bytes(root)
    bad_recorded = _recorded_bytes(bad_root) if bad_root.exists() else b""
    # the test looks where secrets would be: these prove the places were full
    assert b"DEBUG ib_async.client: <<< 15,1," in output, "debug logging ran, down to the message naming the account"
    assert b"wrdata_frames_received_total" in metrics
    for venue in ("coinbase", "alpaca", "polygon", "finnhub", "ibkr"):
        assert f"provider={venue}".encode() in output or venue.encode() in recorded
    assert b'"***"' in recorded, "the recorded auth frames are there, redacted"
    assert b"token=***" in recorded, "the Finnhub URL is recorded, redacted"
    assert b"<redacted>" in recorded, "IBKR's account messages are recorded, redacted"
    assert b"Error: " in bad_output and b"refused" in bad_output, "the wrong credentials were refused before recording"
    assert len(refusals) == 4 and all(b"Error" in r for r in refusals), refusals
    places = {"log": output, "metrics": metrics, "recording": recorded, "log (wrong credentials)": bad_output,
              "recording (wrong credentials)": bad_recorded, "exceptions and logs of refusals": b"\n".join(refusals)}
    for where, blob in places.items():
        for needle in _needles(secrets + wrong):
            assert needle not in blob, f"a secret ({needle[:6]!r}...) in the {where}"
        assert not JWT.search(blob), f"a signed JWT in the {where}"
