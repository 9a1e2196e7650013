"""The processes that benchmarks and tests start: the gateway, the development backend, Redis,
the reference hub, and any other gateway command to compare against.

Each runs as its own process, optionally pinned to one CPU with ``taskset``, so that its CPU
time (``/proc/<pid>/stat``) and memory (``VmRSS``) can be read apart from the caller's. The
gateway runs as ``<this interpreter> -m gogate`` from a fresh empty working directory: what
runs is the installed package, and no ``.env`` file of the source tree is read by accident.

The test suite imports this module (``bench.procs``) for its ``gateway_process`` fixture, so
tests and benchmarks start the gateway the same way.
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
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

__all__ = [
    "KEY",
    "GatewayProcess",
    "Service",
    "StartupError",
    "bench_settings",
    "child_env",
    "cpu_seconds",
    "descendants",
    "free_port",
    "launch_gateway",
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


class StartupError(AssertionError):
    """A child process exited or did not listen in time. An ``AssertionError``, so that a test
    whose gateway does not come up fails rather than errors."""


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


def child_env(overrides: Mapping[str, str] | None = None, drop: Collection[str] = ()
              ) -> dict[str, str]:
    """This process's environment without the variables in ``drop`` (and ``GOGATE_*`` when
    anything is dropped), plus ``overrides``."""
    env = {k: v for k, v in os.environ.items()
           if k not in drop and not (drop and k.startswith("GOGATE_"))}
    env.update(overrides or {})
    return env


class Service:
    """A child process that listens on ``port``.

    ``env`` is its whole environment (see ``child_env``). Its output goes to ``log``, or to a
    temporary file removed by ``stop``; without ``cwd`` it runs in a fresh empty directory,
    removed by ``stop`` too. With ``wait`` the constructor returns once the port accepts.
    """

    def __init__(self, name: str, argv: Sequence[str], port: int, *,
                 env: Mapping[str, str] | None = None, cpu: int | None = None,
                 cwd: Path | None = None, log: Path | None = None, wait: bool = True) -> None:
        self.name = name
        self.port = port
        self.cpu = cpu
        self._own_dir = None if cwd is not None else Path(
            tempfile.mkdtemp(prefix=f"gogate-{name}-"))
        self._own_log = log is None
        if log is None:
            handle, path = tempfile.mkstemp(prefix=f"gogate-{name}-", suffix=".log")
            os.close(handle)
            log = Path(path)
        self.log_path = log
        self._log = log.open("wb")
        command = list(argv)
        if cpu is not None and shutil.which("taskset"):
            command = ["taskset", "-c", str(cpu), *command]
        self.proc = subprocess.Popen(
            command, cwd=cwd or self._own_dir, env=dict(os.environ if env is None else env),
            stdout=self._log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_ready()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Return once the port accepts connections; raise if the process exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise StartupError(f"{self.name} exited early:\n{self.output()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise StartupError(f"{self.name} did not listen on {self.port} in time:\n"
                           f"{self.output()}")

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 20.0) -> int:
        return self.proc.wait(timeout)

    def cpu_seconds(self) -> float:
        """CPU time of the process and of every process it started (its workers)."""
        return tree_cpu_seconds(self.pid)

    def rss_bytes(self) -> int:
        return rss_bytes(self.pid)

    def kill(self) -> None:
        """Kill the process at once if it still runs; keep a log that was given."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._release()

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._release()

    def _release(self) -> None:
        self._log.close()
        if self._own_log:
            self.log_path.unlink(missing_ok=True)
        if self._own_dir is not None:
            shutil.rmtree(self._own_dir, ignore_errors=True)


class GatewayProcess(Service):
    """A gateway process: its public ``port`` and its ``internal_port`` (``/metrics``)."""

    def __init__(self, name: str, argv: Sequence[str], port: int, internal_port: int, *,
                 env: Mapping[str, str] | None = None, cpu: int | None = None,
                 cwd: Path | None = None, log: Path | None = None, wait: bool = True) -> None:
        self.internal_port = internal_port
        super().__init__(name, argv, port, env=env, cpu=cpu, cwd=cwd, log=log, wait=wait)


def launch_gateway(env: Mapping[str, str], args: Sequence[str] = (), *,
                   command: Sequence[str] | None = None, name: str = "gateway",
                   cpu: int | None = None, cwd: Path | None = None, log: Path | None = None,
                   wait: bool = True) -> GatewayProcess:
    """Run ``command`` (default ``python -m gogate``) plus ``args`` with exactly ``env``, which
    must hold ``PORT`` and ``INTERNAL_PORT``."""
    argv = [*(command or [sys.executable, "-m", "gogate"]), *args]
    return GatewayProcess(name, argv, int(env["PORT"]), int(env["INTERNAL_PORT"]), env=env,
                          cpu=cpu, cwd=cwd, log=log, wait=wait)


def bench_settings(backend_url: str, overrides: Mapping[str, str] | None = None
                     ) -> dict[str, str]:
    """The settings a benchmark gives every gateway under synthetic load: loopback, free
    ports, no per-connection rate limit or per-user cap, warnings only."""
    settings = {
        "HOST": "127.0.0.1", "PORT": str(free_port()), "INTERNAL_PORT": str(free_port()),
        "BACKEND_API_URL": backend_url, "INTERNAL_API_KEY": KEY, "LOG_LEVEL": "warning",
        "RATE_LIMIT": "0", "MAX_CONNECTIONS_PER_USER": "0", "ALLOWED_ORIGINS": "*",
    }
    settings.update(overrides or {})
    return settings


def start_gateway(backend_url: str, *, cpu: int | None = None, pure: bool = False,
                  env: Mapping[str, str] | None = None) -> GatewayProcess:
    """Start the installed gogate with the benchmark settings plus ``env``; the caller's own
    deployment settings (a shared ``REDIS_URL``, ``WORKERS``) are not inherited."""
    settings = bench_settings(backend_url, env)
    if pure:
        settings["GOGATE_NO_EXTENSIONS"] = "1"
    return launch_gateway(child_env(settings, drop=("REDIS_URL", "WORKERS")),
                          name="gateway-pure" if pure else "gateway", cpu=cpu)


def start_backend(cpu: int | None = None, extra: Sequence[str] = ()) -> Service:
    """The development backend (``extra``: more of its command-line options)."""
    port = free_port()
    return Service("backend", [sys.executable, "-m", "gogate.devbackend", "--port", str(port),
                               "--quiet", "--internal-api-key", KEY, *extra], port, cpu=cpu)


def start_redis(cpu: int | None = None) -> Service:
    port = free_port()
    return Service("redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no"], port, cpu=cpu)


def start_refhub(*, cpu: int | None = None, read_buffer: int = 1024,
                 loop_transports: bool = False) -> Service:
    """The bare picows hub of ``bench.refhub`` (run from the source tree: it is no product)."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.refhub", "--port", str(port),
            "--read-buffer", str(read_buffer)]
    if loop_transports:
        argv.append("--loop-transports")
    return Service("refhub", argv, port, cpu=cpu, cwd=ROOT)
