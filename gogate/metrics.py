"""Prometheus metrics of one worker, in a registry of their own, served on ``/metrics``.

Counters are bumped once per event or per broadcast (never once per receiver); gauges are read
at scrape time from the live structures, so the hot path pays nothing for them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from typing import Final

import msgspec
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from gogate.lifecycle import Lifecycle
from gogate_fast import IMPLEMENTATION

__all__ = ["CONTENT_TYPE_LATEST", "FamilyRecord", "Metrics", "SampleRecord", "decode_families",
           "describe_process", "encode_families"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """All metrics of the gateway. One instance per worker."""

    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        describe_process(r)
        self.lifecycle = Lifecycle()  # plain integers on the connection path, read at scrape
        r.register(_LifecycleCollector(self.lifecycle))
        gauge, counter = partial(Gauge, registry=r), partial(Counter, registry=r)
        self.connections = gauge("gogate_connections", "Open WebSocket connections.")
        self.authenticated = gauge("gogate_authenticated_connections",
                                   "Authenticated WebSocket connections.")
        self.users = gauge("gogate_users", "Distinct users with a connection.")
        self.events_in = counter("gogate_events_in", "Client events received, by event.",
                                 ["event"])
        self.events_out = counter("gogate_events_out",
                                  "Server events written to connections, by event.", ["event"])
        self.client_errors = counter("gogate_client_errors", "Error events sent, by code.",
                                     ["code"])
        self.closes = counter("gogate_closes", "Connections closed by the gateway, by reason.",
                              ["reason"])
        self.slow_consumers = counter("gogate_slow_consumer_closes",
                                      "Connections closed as slow consumers.")
        self.backend_calls = counter("gogate_backend_calls", "Backend calls by endpoint and "
                                     "outcome (status, timeout, unreachable).",
                                     ["endpoint", "outcome"])
        self.backend_errors = counter("gogate_backend_errors", "Backend calls that failed (5xx, "
                                      "timeout, unreachable).", ["endpoint"])
        self.backend_latency = Histogram("gogate_backend_call_seconds",
                                         "Backend call latency by endpoint.", ["endpoint"],
                                         buckets=_LATENCY_BUCKETS, registry=r)
        self.member_fetches = counter("gogate_member_list_fetches",
                                      "Member lists fetched from the backend.")
        self.broker_messages = counter("gogate_broker_messages",
                                       "Events passed through the broker, by direction.",
                                       ["direction"])
        self.undelivered = counter("gogate_undelivered_messages",
                                   "Accepted messages whose member list could not be fetched.")
        self.resumes = counter("gogate_stream_resumes", "auth events with since on a new "
                               "connection, by outcome: recovered or not_recovered.", ["outcome"])
        self.replayed = counter("gogate_stream_replayed_events",
                                "Stream events written to connections catching up (replays).")
        self.auth_cache = counter("gogate_auth_cache", "Tokens looked up in the validation "
                                  "cache: hit (no backend call) or miss (a backend validation).",
                                  ["result"])
        self.auth_local = counter("gogate_auth_local_verifications", "Tokens verified locally "
                                  "(JWT_PUBLIC_KEY / JWT_SECRET), by outcome: accepted or the "
                                  "refusal's reason.", ["outcome"])
        self.auth_refusals = counter("gogate_auth_refusals", "auth events refused, by reason "
                                     "(backend: the backend refused the token).", ["reason"])
        self.revocations = counter("gogate_auth_revocations", "Users revoked by the backend "
                                   "(users/{id}/disconnect) as this worker learned of them.")
        self._auth_local: dict[str, Counter] = {}
        self._events_out: dict[str, Counter] = {}
        self._events_in: dict[str, Counter] = {}
        self._backend: dict[tuple[str, str], tuple[Counter, Histogram, Counter | None]] = {}

    def event_in(self, event: str) -> None:
        child = self._events_in.get(event)
        if child is None:
            child = self._events_in[event] = self.events_in.labels(event)
        child.inc()

    def auth_hooks(self) -> dict[str, Callable[..., None]]:
        """The counters an :class:`~gogate.auth.Authenticator` reports to (its ``on_*``)."""
        return {"on_cache_hit": self.auth_cache.labels("hit").inc,
                "on_cache_miss": self.auth_cache.labels("miss").inc,
                "on_local": self.auth_outcome}

    def auth_outcome(self, outcome: str) -> None:
        """One token verified locally: ``accepted`` or the reason of its refusal."""
        child = self._auth_local.get(outcome)
        if child is None:
            child = self._auth_local[outcome] = self.auth_local.labels(outcome)
        child.inc()

    def event_out(self, event: str, count: int = 1) -> None:
        child = self._events_out.get(event)
        if child is None:
            child = self._events_out[event] = self.events_out.labels(event)
        child.inc(count)

    def backend_call(self, endpoint: str, outcome: str, seconds: float) -> None:
        """Count one backend call; the labelled series of each (endpoint, outcome) are looked
        up once (a message costs a call: this runs per message)."""
        series = self._backend.get((endpoint, outcome))
        if series is None:
            failed = not outcome.isdigit() or int(outcome) >= 500
            series = self._backend[endpoint, outcome] = (
                self.backend_calls.labels(endpoint, outcome),
                self.backend_latency.labels(endpoint),
                self.backend_errors.labels(endpoint) if failed else None)
        calls, latency, errors = series
        calls.inc()
        latency.observe(seconds)
        if errors is not None:
            errors.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _LifecycleCollector(Collector):
    """The lifecycle counts of a worker as Prometheus counters, read when scraped."""

    def __init__(self, lifecycle: Lifecycle) -> None:
        self._lifecycle = lifecycle

    def collect(self) -> Iterator[Metric]:
        counts = self._lifecycle
        yield CounterMetricFamily("gogate_connections_opened",
                                  "WebSocket handshakes completed.", value=counts.opened)
        yield CounterMetricFamily("gogate_connections_authenticated",
                                  "Connections authenticated (once each).",
                                  value=counts.authenticated)
        closed = CounterMetricFamily("gogate_connections_closed",
                                     "Connections gone, by the close code gogate sent (1006: "
                                     "dropped without one).", labels=["code"])
        for code, count in sorted(counts.closed.items()):
            closed.add_metric([str(code)], count)
        yield closed
        refused = CounterMetricFamily("gogate_upgrades_refused",
                                      "Upgrades answered with an HTTP error, by reason.",
                                      labels=["reason"])
        for reason, count in sorted(counts.refused.items()):
            refused.add_metric([reason], count)
        yield refused


def describe_process(registry: CollectorRegistry) -> None:
    """Add the process's own series to ``registry``: ``process_*`` (CPU, memory, open files)
    and ``gogate_build_info{version,implementation}``."""
    ProcessCollector(registry=registry)
    try:
        release = version("gogate")
    except PackageNotFoundError:  # run from a source tree that was never installed
        release = "unknown"
    Info("gogate_build", "The running gogate: its version and hot-path implementation.",
         registry=registry).info({"version": release, "implementation": IMPLEMENTATION})


# Metric families carried between processes: the workers of a supervisor send theirs over the
# bus, and the supervisor serves them all on one /metrics. Values stay floats (NaN and the
# infinities included); timestamps and exemplars, which gogate never sets, are not carried.

class SampleRecord(msgspec.Struct, array_like=True):
    """One sample of a family: its full name (``gogate_events_in_total``), labels, value."""

    name: str
    labels: dict[str, str]
    value: float


class FamilyRecord(msgspec.Struct, array_like=True):
    """One metric family as ``prometheus_client`` collects it."""

    name: str
    type: str
    documentation: str
    unit: str
    samples: list[SampleRecord]


_encode_records: Final = msgspec.msgpack.Encoder().encode
_decode_records: Final = msgspec.msgpack.Decoder(list[FamilyRecord]).decode


def encode_families(registry: CollectorRegistry) -> bytes:
    """Every family of ``registry``, collected now, as bytes for another process."""
    return _encode_records([
        FamilyRecord(family.name, family.type, family.documentation, family.unit,
                     [SampleRecord(s.name, s.labels, s.value) for s in family.samples])
        for family in registry.collect()])


def decode_families(data: bytes) -> list[FamilyRecord]:
    """The families of :func:`encode_families`; raises ``msgspec.DecodeError`` on garbage."""
    return _decode_records(data)
