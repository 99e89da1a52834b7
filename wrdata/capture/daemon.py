"""The capture daemon: subscribe, record everything, survive, shut down cleanly.

One process records any number of providers: a :class:`~wrdata.datastream.DataStream`
with two taps, the figures (:class:`~wrdata.capture.status.CaptureStats`) and the
:class:`~wrdata.storage.DatasetWriter`, which sees every frame and message before any
fan-out and never drops within its memory budget. Nothing consumes the messages in
the daemon itself; venue streams are held open by ref-counted subscriptions without
consumers.

Shutdown: the first SIGINT/SIGTERM stops the streams, flushes, seals every open segment
and exits 0; a second one exits at once (status 130), which still loses nothing already
flushed: the next start seals the journal it left. ``workers > 1`` shards the
subscriptions over that many processes, each its own writer in the one dataset.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
import time
from dataclasses import replace

from ..channels import Channel
from ..streaming.base import ProviderError
from ..streaming.manager import StreamManager
from .config import CaptureConfig, ConfigError, Target
from .status import CaptureStats, MetricsCollector, log_line, rich_table, rows_table, serve_metrics

log = logging.getLogger("wrdata.capture")
status_log = logging.getLogger("wrdata.capture.status")


class CaptureDaemon:
    def __init__(
        self,
        config: CaptureConfig,
        *,
        duration: float | None = None,
        writer_id: str | None = None,
        journal_dir: str | None = None,
        status: str = "auto",
        status_interval: float = 10.0,
        metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
        transport: str | None = None,
        validate: bool = True,
        freeze_gc: bool = False,
    ) -> None:
        if status not in ("auto", "rich", "log", "none"):
            raise ConfigError(f"bad status mode {status!r}: expected auto, rich, log or none")
        if duration is not None and duration <= 0:
            raise ConfigError("--duration must be positive")
        self.config = config
        self.duration = duration
        self.writer_id = writer_id
        self.journal_dir = journal_dir
        self.status = status
        self.status_interval = status_interval
        self.metrics_port = metrics_port
        self.metrics_host = metrics_host
        self.freeze_gc = freeze_gc
        self.transport = transport
        self.validate = validate
        self.stats = CaptureStats()
        self.writer = None
        self.stream = None
        self.stop_event: asyncio.Event | None = None
        self.failed: dict[str, Exception] = {}
        self._signals = 0

    # -- setup -------------------------------------------------------------------------
    def _manager_kwargs(self) -> dict:
        c = self.config
        return dict(endpoints=c.endpoints, rest_endpoints=c.rest_endpoints, credentials=c.credentials, options=c.options,
                    heal=c.heal)

    async def check(self) -> None:
        """Validate every subscription before anything is written (unknown symbols, kinds)."""
        probe = StreamManager(**self._manager_kwargs(), transport=self.transport)
        try:
            for provider, symbol, channel in self.config.subscriptions():
                try:
                    await probe.prepare(provider, symbol, channel)
                except (ProviderError, ValueError) as e:
                    raise ConfigError(str(e)) from None
        finally:
            await probe.close()

    def _open_writer(self, loop: asyncio.AbstractEventLoop):
        from ..storage import DatasetWriter

        s = self.config.storage
        try:
            filesystem = None
            if s.s3_endpoint:
                from ..storage.remote import open_filesystem

                filesystem, _ = open_filesystem(self.config.root, s3_endpoint=s.s3_endpoint)
            return DatasetWriter(
                self.config.root,
                filesystem=filesystem,
                journal_dir=self.journal_dir,
                writer_id=self.writer_id,
                flush_interval=s.flush_interval,
                fsync=s.fsync,
                roll_interval=s.roll_interval,
                roll_bytes=s.roll_bytes,
                memory_budget=s.memory_budget,
                compression_level={"raw": s.raw_level},
                on_status=self.stats.on_storage_event,
                loop=loop,
            ).start()
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot record into {self.config.root}: {e}") from None

    # -- run -----------------------------------------------------------------------------
    async def run(self) -> int:
        from ..datastream import DataStream

        loop = asyncio.get_running_loop()
        if self.validate:
            await self.check()
        self.stop_event = asyncio.Event()
        self._install_signals(loop)
        self.writer = self._open_writer(loop)
        metrics = None
        try:
            self.stream = DataStream(**self._manager_kwargs(), transport=self.transport)
            self.stream.manager.add_tap(self.stats)
            self.stream.manager.add_tap(self.writer)
            self.stream.manager.fatal_hooks.append(self._provider_failed)
            if self.metrics_port is not None:
                metrics = serve_metrics(self.metrics_port, MetricsCollector(self.stats, self.writer, self.stream.manager.hub), self.metrics_host)
                log.info("metrics on http://%s:%d/metrics", self.metrics_host, self.metrics_port)
            for provider, symbol, channel in self.config.subscriptions():
                await self.stream.source.subscribe(provider, symbol, channel, None)
            n = len(self.config.subscriptions())
            log.info("capturing %d subscriptions of %s into %s (writer %s)", n, ", ".join(self.config.providers), self.config.root, self.writer.writer_id)
            if self.freeze_gc:
                # What startup made (modules, pyarrow, the providers) lives as long as the
                # process; frozen, a full collection no longer scans it. Full collections hold
                # the GIL, so they were the longest stalls of the event loop while recording
                # (bench/live.py: the worst delivery latency 25-40 ms before, 7-15 ms after).
                gc.collect()
                gc.freeze()
            await self._wait()
        finally:
            await self._shutdown(metrics)
        return 1 if self.failed and set(self.failed) >= set(self.config.providers) else 0

    async def _wait(self) -> None:
        deadline = time.monotonic() + self.duration if self.duration else None
        mode = self.status
        if mode == "auto":
            mode = "rich" if sys.stderr.isatty() else "log"
        live = None
        if mode == "rich":
            from rich.console import Console
            from rich.live import Live

            live = Live(console=Console(stderr=True), refresh_per_second=2, transient=False)
            live.start()
        last_log = time.monotonic()
        try:
            while not self.stop_event.is_set():
                timeout = 0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic()))
                try:
                    await asyncio.wait_for(self.stop_event.wait(), timeout)
                except TimeoutError:
                    pass
                self.stats.tick()
                if live is not None:
                    live.update(rich_table(rows_table(self.stats, self.writer, time.time_ns())))
                elif mode == "log" and time.monotonic() - last_log >= self.status_interval:
                    last_log = time.monotonic()
                    for row in rows_table(self.stats, self.writer, time.time_ns()):
                        status_log.info(log_line(row))
                if deadline is not None and time.monotonic() >= deadline:
                    break
        finally:
            if live is not None:
                live.stop()

    async def _shutdown(self, metrics) -> None:
        if self.stream is not None:
            try:
                await self.stream.close()
            except Exception:
                log.exception("closing the streams failed")
        if self.writer is not None:
            await asyncio.to_thread(self.writer.close)
            for row in rows_table(self.stats, self.writer, time.time_ns()):
                status_log.info("final: %s", log_line(row))
        if metrics is not None:
            metrics[0].shutdown()

    def _provider_failed(self, provider: str, err: Exception) -> None:
        if getattr(err, "symbol", None):  # one subscription refused; the provider goes on
            log.error("%s: %s", provider, err)
            return
        self.failed[provider] = err
        log.error("%s stopped: %s", provider, err)
        if set(self.failed) >= set(self.config.providers):
            self.stop_event.set()

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        def on_signal(signum: int) -> None:
            self._signals += 1
            if self._signals == 1:
                log.warning("%s: stopping, sealing open segments (again to exit at once)", signal.Signals(signum).name)
                self.stop_event.set()
            else:
                # the journal holds everything flushed; the next start seals it
                log.warning("second signal: exiting now")
                os._exit(130)

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, on_signal, sig)
            except (NotImplementedError, RuntimeError):  # not the main thread
                pass

    def request_stop(self) -> None:
        if self.stop_event is not None:
            self.stop_event.set()


# -- several processes ---------------------------------------------------------------------

def shard(config: CaptureConfig, workers: int) -> list[CaptureConfig]:
    """Split the subscriptions over ``workers`` configs: whole symbols, round-robin per provider."""
    if workers <= 1:
        return [config]
    pieces: list[list[Target]] = [[] for _ in range(workers)]
    i = 0
    for t in config.targets:
        for sym in t.symbols:
            pieces[i % workers].append(Target(t.provider, [sym], list(t.kinds)))
            i += 1
    out = []
    for targets in pieces:
        if not targets:
            continue
        merged: dict[tuple[str, tuple[Channel, ...]], Target] = {}
        for t in targets:
            key = (t.provider, tuple(t.kinds))
            if key in merged:
                merged[key].symbols.extend(t.symbols)
            else:
                merged[key] = Target(t.provider, list(t.symbols), list(t.kinds))
        out.append(replace(config, targets=list(merged.values())))
    return out


def _worker(config: CaptureConfig, kwargs: dict) -> None:
    logging.basicConfig(level=kwargs.pop("log_level", logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
    code = asyncio.run(CaptureDaemon(config, **kwargs).run())
    sys.exit(code)


def run_workers(config: CaptureConfig, workers: int, **kwargs) -> int:
    """Run one daemon per shard in its own process; forward signals; exit with the worst code."""
    import multiprocessing as mp

    shards = shard(config, workers)
    ctx = mp.get_context("spawn")
    procs = []
    for i, cfg in enumerate(shards):
        kw = dict(kwargs, status="log", validate=False)
        if kwargs.get("writer_id"):
            kw["writer_id"] = f"{kwargs['writer_id']}-w{i}"
        if kwargs.get("metrics_port") is not None:
            kw["metrics_port"] = kwargs["metrics_port"] + i
        kw["log_level"] = logging.getLogger().getEffectiveLevel()
        p = ctx.Process(target=_worker, args=(cfg, kw), name=f"wrdata-capture-{i}")
        p.start()
        procs.append(p)
    received = 0

    def forward(signum, frame) -> None:
        nonlocal received
        received += 1
        for p in procs:
            if p.is_alive():
                os.kill(p.pid, signal.SIGTERM if received == 1 else signal.SIGKILL)
        if received > 1:
            os._exit(130)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for p in procs:
            p.join()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return max((p.exitcode or 0) for p in procs)
