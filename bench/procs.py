"""The processes a benchmark runs: the development backend, the gateway, the reference hub.

Each runs as its own process, optionally pinned to one CPU with ``taskset``, so that its CPU
time (``/proc/<pid>/stat``) and memory (``VmRSS``) can be read apart from the load generator's.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = [
    "KEY",
    "Service",
    "cpu_seconds",
    "descendants",
    "free_port",
    "raise_fd_limit",
    "rss_bytes",
    "start_backend",
    "start_gateway",
    "start_redis",
    "start_refhub",
    "tree_cpu_seconds",
]

KEY = "bench-internal-key"
ROOT = Path(__file__).resolve().parent.parent
_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def raise_fd_limit(wanted: int = 65536) -> int:
    """Raise this process's open-file limit (children inherit it); returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(wanted, hard) if hard != resource.RLIM_INFINITY else wanted
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def descendants(pid: int) -> list[int]:
    """The process and every process below it (a supervisor and its workers)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(parents.get(current, []))
    return found


def tree_cpu_seconds(pid: int) -> float:
    total = 0.0
    for member in descendants(pid):
        with contextlib.suppress(OSError):
            total += cpu_seconds(member)
    return total


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Service:
    """A child process listening on ``port``; its output goes to a temporary log file."""

    def __init__(self, name: str, argv: list[str], port: int, env: dict[str, str] | None = None,
                 cpu: int | None = None) -> None:
        self.name = name
        self.port = port
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as the process
            prefix=f"gogate-bench-{name}-", suffix=".log", delete=False)
        if cpu is not None and shutil.which("taskset"):
            argv = ["taskset", "-c", str(cpu), *argv]
        self.cpu = cpu
        self.proc = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **(env or {})},
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self._wait_listening()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _wait_listening(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.output()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not listen on {self.port}:\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")

    def cpu_seconds(self) -> float:
        """CPU time of the process and of every process it started (its workers)."""
        return tree_cpu_seconds(self.pid)

    def rss_bytes(self) -> int:
        return rss_bytes(self.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)


def start_backend(cpu: int | None = None) -> Service:
    port = free_port()
    return Service("backend", [sys.executable, "-m", "gogate.devbackend", "--port", str(port),
                               "--quiet", "--internal-api-key", KEY], port, cpu=cpu)


def start_gateway(backend_url: str, *, cpu: int | None = None, pure: bool = False,
                  env: dict[str, str] | None = None) -> tuple[Service, int]:
    """Start ``python -m gogate``; returns the service and its internal (metrics) port."""
    port, internal_port = free_port(), free_port()
    settings = {
        "HOST": "127.0.0.1", "PORT": str(port), "INTERNAL_PORT": str(internal_port),
        "BACKEND_API_URL": backend_url, "INTERNAL_API_KEY": KEY, "LOG_LEVEL": "warning",
        "RATE_LIMIT": "0", "MAX_CONNECTIONS_PER_USER": "0", "ALLOWED_ORIGINS": "*",
    }
    settings.update(env or {})
    if pure:
        settings["GOGATE_NO_EXTENSIONS"] = "1"
    service = Service("gateway-pure" if pure else "gateway",
                      [sys.executable, "-m", "gogate"], port, env=settings, cpu=cpu)
    return service, internal_port


def start_redis(cpu: int | None = None) -> Service:
    port = free_port()
    return Service("redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no"], port, cpu=cpu)


def start_refhub(*, cpu: int | None = None, read_buffer: int = 1024,
                 loop_transports: bool = False) -> Service:
    port = free_port()
    argv = [sys.executable, "-m", "bench.refhub", "--port", str(port),
            "--read-buffer", str(read_buffer)]
    if loop_transports:
        argv.append("--loop-transports")
    return Service("refhub", argv, port, cpu=cpu)
