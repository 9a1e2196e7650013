"""What the operational files run, run for real: the container image's command and health
check, the Compose stack's three services, and the Grafana dashboard's queries against the
metrics a gateway really exports.

No container engine is needed: each service runs as the process the image would run, with
the image's (or the Compose file's) environment, on loopback ports chosen free; host names of
the Compose network (``backend``, ``redis``) are mapped to those ports.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from conftest import (
    GENERAL,
    JANE,
    JOHN,
    Client,
    MakeGateway,
    StartProcess,
    client_factory,
    free_port,
    http_get,
    metrics_text,
)
from deployfiles import compose, dashboard, image_copies, image_env, interpolate, one, runtime_stage
from test_tls import certificate  # noqa: F401  (a fixture)

from bench.procs import GatewayProcess, Service
from gogate.devbackend import DevBackend

METRIC = re.compile(r"\b((?:gogate|process)_[a-z0-9_]+)")
HOST_ROW = "Workers, bus and Redis"  # series that exist only under a supervisor


# --- the image's command and health check ------------------------------------------------------

def healthcheck_argv() -> list[str]:
    """The image's HEALTHCHECK command, with this interpreter and the repository's script."""
    command = one(runtime_stage(), "HEALTHCHECK").exec_form()
    copies = image_copies()
    return [sys.executable if part == "python" else str(copies.get(part, part))
            for part in command]


async def healthcheck(env: dict[str, str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *healthcheck_argv(), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def image_settings(**overrides: str) -> dict[str, str]:
    """The image's environment on loopback: its ports are chosen free by the fixture."""
    env = {k: v for k, v in image_env().items() if k not in ("PORT", "INTERNAL_PORT")}
    return {**env, "HOST": "127.0.0.1", "INTERNAL_HOST": "127.0.0.1", **overrides}


async def test_image_command_serves_and_its_healthcheck_follows_it(
        gateway_process: StartProcess, backend: DevBackend) -> None:
    proc = gateway_process(env=image_settings(BACKEND_API_URL=backend.url))
    env = {"PATH": "/usr/bin:/bin", "HOST": "0.0.0.0", "PORT": str(proc.port)}
    code, output = await healthcheck(env)
    assert code == 0, output
    assert '"status":"ok"' in output

    proc.signal(signal.SIGTERM)  # the image's STOPSIGNAL
    assert await asyncio.to_thread(proc.wait, 20) == 0, proc.output()
    code, output = await healthcheck(env)
    assert code == 1, output


async def test_healthcheck_asks_over_https_when_the_gateway_serves_tls(
        make_gateway: MakeGateway, certificate: tuple[str, str]) -> None:  # noqa: F811
    cert, key = certificate
    gateway = await make_gateway(tls_cert_file=cert, tls_key_file=key)
    env = {"HOST": "127.0.0.1", "PORT": str(gateway.port), "TLS_CERT_FILE": cert}
    code, output = await healthcheck(env)
    assert code == 0, output
    assert output.startswith("https://127.0.0.1:")
    code, output = await healthcheck({**env, "TLS_CERT_FILE": ""})  # plain HTTP to a TLS port
    assert code == 1, output


# --- the Compose stack -------------------------------------------------------------------------

@dataclass
class Stack:
    gateway: GatewayProcess
    backend: Service
    tokens: dict[int, str]


def service_argv(name: str, port: int) -> list[str]:
    """A Compose service's command as a local process: this interpreter, loopback, ``port``."""
    argv = [interpolate(part) for part in compose()["services"][name]["command"]]
    argv = [sys.executable if part == "python" else part for part in argv]
    listen = {"--port": str(port), "--bind" if name == "redis" else "--host": "127.0.0.1"}
    for flag, value in listen.items():
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    return argv


@pytest.fixture
def stack(gateway_process: StartProcess, tmp_path: Path) -> Iterator[Stack]:
    """The three services of docker-compose.yml, each as the process its container runs."""
    redis_server = shutil.which("redis-server")
    assert redis_server is not None, "redis-server is needed: apt-get install redis-server"
    services = compose()["services"]
    redis_port, backend_port = free_port(), free_port()
    redis = Service("redis", [redis_server, *service_argv("redis", redis_port)[1:]],
                    redis_port, cwd=tmp_path)
    backend = Service("backend", service_argv("backend", backend_port), backend_port,
                      cwd=tmp_path, log=tmp_path / "backend.log")
    try:
        env = {k: interpolate(str(v)) for k, v in services["gateway"]["environment"].items()}
        env["BACKEND_API_URL"] = env["BACKEND_API_URL"].replace(
            "backend:8000", f"127.0.0.1:{backend_port}")
        env["REDIS_URL"] = env["REDIS_URL"].replace("redis:6379", f"127.0.0.1:{redis_port}")
        assert services["gateway"]["command"] == ["python", "-m", "gogate"]
        gateway = gateway_process(env=image_settings(**env, RATE_LIMIT="0"))
        # The demo tokens, as `docker compose logs backend` shows them.
        tokens = {int(m[1]): m[2] for m in re.finditer(r"user (\d+) [^:]*: (\S+)",
                                                        backend.output())}
        assert {JOHN, JANE} <= set(tokens), backend.output()
        yield Stack(gateway, backend, tokens)
    finally:
        backend.stop()
        redis.stop()


async def test_compose_stack_runs_and_delivers(stack: Stack) -> None:
    backend_check = [sys.executable if p == "python" else p.replace(
        "127.0.0.1:8000", f"127.0.0.1:{stack.backend.port}")
        for p in compose()["services"]["backend"]["healthcheck"]["test"][1:]]
    assert subprocess.run(backend_check, timeout=15).returncode == 0

    status, body, _ = await http_get(f"http://127.0.0.1:{stack.gateway.port}/health")
    assert status == 200, body
    async with client_factory(stack.gateway.port) as connect:
        john = await connect(stack.tokens[JOHN])
        jane = await connect(stack.tokens[JANE])
        await john.send("send_message", {"chat_id": GENERAL, "text": "through compose"})
        assert (await jane.expect("new_message"))["data"]["text"] == "through compose"
    text = (await http_get(f"http://127.0.0.1:{stack.gateway.internal_port}/metrics"))[1]
    assert b"\ngogate_workers 2.0\n" in text


# --- the Grafana dashboard ---------------------------------------------------------------------

def dashboard_queries() -> list[tuple[str, str]]:
    """(row title, PromQL) of every query: each panel's targets and the template variables."""
    board = dashboard()
    queries = [("variables", str(v["definition"])) for v in board["templating"]["list"]
               if v["type"] == "query"]
    row = ""
    for panel in board["panels"]:
        if panel["type"] == "row":
            row = panel["title"]
            continue
        queries += [(row, target["expr"]) for target in panel["targets"]]
    return queries


def exported(text: str) -> set[str]:
    """Names of the samples in a /metrics text (``_total``, ``_bucket``... included)."""
    return {re.split(r"[{ ]", line, maxsplit=1)[0] for line in text.splitlines()
            if line and not line.startswith("#")}


async def exercise(port: int, backend_url: str, tokens: dict[int, str]) -> None:
    """Traffic that gives every family a sample: a message, an error event, a backend
    failure and a close."""
    async with client_factory(port) as connect:
        john = await connect(tokens[JOHN])
        jane = await connect(tokens[JANE])
        await john.send("send_message", {"chat_id": GENERAL, "text": "hello"}, ref=1)
        await jane.expect("new_message")
        await john.send_raw("not json")
        assert (await next_of(john, "error"))["data"]["code"] == "INVALID_JSON"
        await put_fault(backend_url, {"status": 503, "match": "/api/v1/messages", "count": 1})
        await jane.send("send_message", {"chat_id": GENERAL, "text": "fails"})
        assert (await next_of(jane, "error"))["data"]["code"] == "BACKEND_UNAVAILABLE"
        stranger: Client = await connect()
        await stranger.send_raw(b"\x00binary")
        assert await stranger.closed() == 1003


async def next_of(client: Client, event: str) -> dict[str, Any]:
    """The next ``event`` frame, skipping others (the sender's own copy, acks)."""
    while (frame := await client.recv())["event"] != event:
        pass
    return frame


async def put_fault(backend_url: str, fault: dict[str, Any]) -> None:
    async with aiohttp.ClientSession() as session, session.put(
            f"{backend_url}/api/dev/faults", json=fault) as response:
        assert response.status < 300


def test_every_panel_queries_gogate_metrics() -> None:
    queries = dashboard_queries()
    assert len(queries) > 20
    for row, expr in queries:
        assert METRIC.search(expr), (row, expr)
    rows = {row for row, _ in queries}
    assert {"Connections", "Events", "Backend", HOST_ROW, "Processes"} <= rows


async def test_dashboard_names_only_what_one_worker_exports(
        gateway: Any, backend: DevBackend, tokens: dict[int, str]) -> None:
    await exercise(gateway.port, backend.url, tokens)
    names = exported(await metrics_text(gateway))
    missing = {(row, name) for row, expr in dashboard_queries() if row != HOST_ROW
               for name in METRIC.findall(expr) if name not in names}
    assert not missing, sorted(missing)


async def test_dashboard_names_only_what_a_host_of_workers_exports(stack: Stack) -> None:
    await exercise(stack.gateway.port, f"http://127.0.0.1:{stack.backend.port}", stack.tokens)
    text = (await http_get(f"http://127.0.0.1:{stack.gateway.internal_port}/metrics"))[1]
    names = exported(text.decode())
    missing = {(row, name) for row, expr in dashboard_queries()
               for name in METRIC.findall(expr) if name not in names}
    assert not missing, sorted(missing)


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool is needed: apt-get install prometheus")
def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Each query, with Grafana's variables given values, as a recording rule that
    ``promtool check rules`` parses."""
    values = {"$__rate_interval": "1m", "$job": ".*", "$instance": ".*"}
    rules = []
    for index, (_, expr) in enumerate(dashboard_queries()):
        if expr.startswith("label_values("):
            continue  # a Grafana function, not PromQL; its metric is checked above
        for variable, value in values.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        rules.append({"record": f"dashboard:query_{index}", "expr": expr})
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
