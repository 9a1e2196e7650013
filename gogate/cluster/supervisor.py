"""The supervisor of ``--workers N`` (and of any host linked to others through Redis): the
process started by ``python -m gogate``, which starts the worker processes, restarts a worker
that dies, and stops them all.

Every worker listens on ``PORT`` itself (``SO_REUSEPORT``) with its own loop, listener and
backend pool, and connects to the host's bus (a Unix domain socket in a private directory),
whose other end, with the routing, the internal API and ``/metrics``, is the
:class:`~gogate.cluster.host.Host`. On SIGTERM or SIGINT the supervisor passes the signal on,
waits for every worker to drain, and exits 0.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Final

from gogate.cluster.host import Host
from gogate.config import Settings, worker_environment
from gogate.internal import InternalServer
from gogate.log import server_log

__all__ = ["Supervisor", "run"]

_RESTART_BACKOFF: Final = (0.5, 1.0, 2.0, 4.0, 8.0)  # seconds; a dead worker is back within 15 s
_STEADY: Final = 30.0  # seconds a worker lives before its next death counts as a first one
_STOP_GRACE: Final = 5.0  # seconds beyond SHUTDOWN_TIMEOUT before a worker is killed


class WorkerProcess:
    """Worker ``index``'s current process."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: asyncio.subprocess.Process | None = None
        self.started_at = 0.0

    def signal(self, sig: int) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(sig)


class Supervisor:
    def __init__(self, settings: Settings, count: int) -> None:
        self.settings = settings
        self.workers = [WorkerProcess(i) for i in range(count)]
        self.host = Host(count, settings.redis_url, settings.recovery_ttl,
                         settings.recovery_size)
        self.internal = InternalServer(self.host, settings.internal_host,
                                       settings.internal_port, settings.internal_api_key)
        self._dir = Path(tempfile.mkdtemp(prefix="gogate-"))
        self.bus_path = str(self._dir / "bus.sock")

    async def _spawn(self, worker: WorkerProcess) -> None:
        worker.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gogate.cluster.link",
            env=worker_environment(self.settings, worker.index, self.bus_path))
        worker.started_at = time.monotonic()
        server_log.info("worker %d started (pid %d)", worker.index, worker.process.pid,
                        extra={"worker": worker.index})

    async def _watch(self, worker: WorkerProcess) -> None:
        """Restart the worker whenever it dies, with backoff, until the supervisor stops."""
        failures = 0
        while True:
            assert worker.process is not None
            code = await worker.process.wait()
            if self.host.stopping:
                return
            lived = time.monotonic() - worker.started_at
            failures = 0 if lived > _STEADY else failures + 1
            delay = _RESTART_BACKOFF[min(failures, len(_RESTART_BACKOFF) - 1)]
            server_log.error("worker %d exited with %s; restarting in %.1f s", worker.index,
                             code, delay, extra={"worker": worker.index})
            self.host.metrics.restarts.inc()
            await asyncio.sleep(delay)
            if self.host.stopping:
                return
            try:
                await self._spawn(worker)
            except OSError as exc:
                server_log.error("cannot start worker %d: %s", worker.index, exc,
                                 extra={"worker": worker.index})
                worker.started_at = time.monotonic()
                continue
            if self.host.stopping:
                worker.signal(signal.SIGTERM)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        server = await loop.create_unix_server(self.host.connection, self.bus_path)
        try:
            return await self._supervise(stop)
        finally:
            server.close()
            shutil.rmtree(self._dir, ignore_errors=True)

    async def _supervise(self, stop: asyncio.Event) -> int:
        try:
            await self.internal.start()
        except OSError as exc:
            server_log.error("cannot listen on the internal port: %s", exc.strerror or exc)
            return 1
        await self.host.start()
        for worker in self.workers:
            await self._spawn(worker)
        loop = asyncio.get_running_loop()
        watchers = [loop.create_task(self._watch(w)) for w in self.workers]
        server_log.info("supervising %d workers on port %d", len(self.workers),
                        self.settings.port)
        await stop.wait()
        self.host.stopping = True
        server_log.info("shutdown requested: draining every worker")
        for worker in self.workers:
            worker.signal(signal.SIGTERM)
        pending = [w.process.wait() for w in self.workers if w.process is not None]
        try:
            s = self.settings  # every worker answers /ready 503 at once, lingers, then drains
            await asyncio.wait_for(asyncio.gather(*pending),
                                   s.shutdown_delay + s.shutdown_timeout + _STOP_GRACE)
        except TimeoutError:
            for worker in self.workers:
                worker.signal(signal.SIGKILL)
        for task in watchers:
            task.cancel()
        await self.host.stop()
        await self.internal.stop()
        server_log.info("all workers stopped")
        return 0


async def run(settings: Settings, count: int) -> int:
    """Supervise ``count`` workers until SIGTERM or SIGINT; returns the exit code."""
    return await Supervisor(settings, count).run()
