"""Helpers of the object-store tests (a module of its own: ``from conftest import`` is
ambiguous with several test folders).

A real S3 API server on loopback (moto in server mode, started by the tests), buckets,
an isolated AWS environment (fake credentials the tests grep for, no ~/.aws, no instance
metadata), and capture helpers.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import uuid
from dataclasses import dataclass, field

import pyarrow.fs as pafs

from wrdata.capture.config import CaptureConfig, Target
from wrdata.channels import parse_channels
from wrdata.message import StreamMessage

ACCESS_KEY = "AKIAWRDATATEST000001"
#: never to be found in a log line or a recorded byte
SECRET_KEY = "wrdataSECRETkey/do-not-log+Zq9XkP3vL7"
REGION = "us-east-1"


@dataclass
class S3Server:
    """moto's S3 API in server mode on 127.0.0.1, with a log of the requests it served."""

    endpoint: str = ""
    requests: list[str] = field(default_factory=list)
    _server: object = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> S3Server:
        from moto.server import ThreadedMotoServer

        log = logging.getLogger("werkzeug")
        log.setLevel(logging.INFO)
        log.propagate = False
        log.addHandler(_RequestLog(self))
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=True)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        self._server.stop()

    def admin_fs(self) -> pafs.S3FileSystem:
        """A filesystem with explicit test keys that may create buckets (test setup only)."""
        return pafs.S3FileSystem(access_key=ACCESS_KEY, secret_key=SECRET_KEY, region=REGION, endpoint_override=self.endpoint,
                                 scheme="http", allow_bucket_creation=True, allow_bucket_deletion=True)

    def new_bucket(self) -> str:
        name = f"wrdata-{uuid.uuid4().hex[:12]}"
        self.admin_fs().create_dir(name)
        return name

    def keys(self, prefix: str) -> list[str]:
        """Every object under ``bucket/prefix`` (files only), as paths."""
        infos = self.admin_fs().get_file_info(pafs.FileSelector(prefix, recursive=True, allow_not_found=True))
        return sorted(i.path for i in infos if i.type == pafs.FileType.File)

    def read_bytes(self, path: str) -> bytes:
        with self.admin_fs().open_input_stream(path) as f:
            return f.read()

    def download(self, prefix: str, dest: str) -> None:
        """A local copy of ``bucket/prefix`` (the same layout, byte for byte)."""
        pafs.copy_files(prefix, dest, source_filesystem=self.admin_fs(), destination_filesystem=pafs.LocalFileSystem())

    def request_lines(self) -> list[str]:
        with self._lock:
            return list(self.requests)

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()


class _RequestLog(logging.Handler):
    def __init__(self, server: S3Server) -> None:
        super().__init__()
        self.server = server

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if '"' in msg:  # werkzeug: 127.0.0.1 - - [date] "GET /bucket/key HTTP/1.1" 200 -
            line = msg.split('"')[1]
            line = "".join(ch for ch in line if ch.isprintable())
            with self.server._lock:
                self.server.requests.append(line.replace("[0m", "").replace("[35m[1m", "").replace("[33m", ""))


def aws_env(tmp_path, endpoint: str | None = None) -> dict[str, str]:
    """The environment a wrdata process sees in these tests: test keys, no profile or
    config files, no instance metadata lookups, a private journal home."""
    env = {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
    }
    if endpoint:
        env["AWS_ENDPOINT_URL_S3"] = endpoint
    return env


def subprocess_env(tmp_path, endpoint: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(aws_env(tmp_path, endpoint))
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


def capture_config(root: str, sim, endpoint: str, symbols=("BTCUSDT", "ETHUSDT"), kinds="trade,quote") -> CaptureConfig:
    c = CaptureConfig(targets=[Target("binance", list(symbols), parse_channels(kinds))], root=root, endpoints={"binance": sim.url})
    c.storage.flush_interval = 0.2
    c.storage.s3_endpoint = endpoint
    return c


T0 = 1_723_161_600_000_000_000  # 2024-08-09 00:00:00 UTC


def trade(i: int, *, symbol: str = "BTCUSDT", ts: int | None = None) -> StreamMessage:
    ts = T0 + 1_000_003 * i + 7 if ts is None else ts
    return StreamMessage(provider="binance", symbol=symbol, kind="trade", ts_recv=ts, ts_event=ts - 1_250_000_123, conn=0, seq=i,
                         idx=0, channel="trade", price=61000.0 + (i % 100) * 0.01, size=0.001 * (1 + i % 7),
                         side="buy" if i % 2 else "sell", trade_id=3_735_693_016 + i)


def wait_for(cond, timeout: float, interval: float = 0.02) -> None:
    """Until ``cond()`` holds (a generous ``timeout`` guards against a hang; it is not
    what the test measures)."""
    import time

    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)
