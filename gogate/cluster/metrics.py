"""The metrics of a host with several workers: the supervisor's own, and one ``/metrics`` for
every process of the host.

Each worker sends its metric families over the bus when the supervisor is scraped (the gauges
are computed from live structures at that moment, which ``prometheus_client``'s multiprocess
mode cannot carry). :class:`HostCollector` yields them as proper families, each sample with a
``worker`` label, merged by name with the supervisor's own families (``process_*`` of the
supervisor carry no ``worker`` label), and :func:`prometheus_client.generate_latest` writes
the text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sized

import msgspec
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from gogate.log import server_log
from gogate.metrics import FamilyRecord, decode_families, describe_process
from gogate.streams import StreamStore

__all__ = ["HostCollector", "HostMetrics"]


class HostCollector(Collector):
    """The supervisor's families and the workers' latest ones, as one set of families."""

    def __init__(self, own: CollectorRegistry) -> None:
        self._own = own
        self.workers: dict[int, list[FamilyRecord]] = {}

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for family in self._own.collect():
            merged[family.name] = family
        for index, families in sorted(self.workers.items()):
            worker = str(index)
            for record in families:
                known = merged.get(record.name)
                if known is None:
                    family = merged[record.name] = Metric(
                        record.name, record.documentation, record.type, record.unit)
                elif known.type == record.type:
                    family = known
                else:
                    server_log.warning("metric %s of worker %s left out: it is a %s here and "
                                       "a %s there", record.name, worker, record.type,
                                       known.type)
                    continue
                for sample in record.samples:
                    family.add_sample(sample.name, {**sample.labels, "worker": worker},
                                      sample.value)
        # A family without a sample in any process (a labelled counter never bumped) says
        # nothing, and would leave a TYPE line with nothing under it.
        yield from (family for family in merged.values() if family.samples)


class HostMetrics:
    """The supervisor's metrics (``own``), and ``registry``: what the host's ``/metrics``
    serves, the workers' families included. ``running`` counts the workers on the bus."""

    def __init__(self, workers: int, running: Callable[[], int]) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.own = own = CollectorRegistry(auto_describe=True)
        describe_process(own)
        Gauge("gogate_workers", "Worker processes running.", registry=own
              ).set_function(running)
        self.restarts = Counter("gogate_worker_restarts", "Workers restarted after dying.",
                                registry=own)
        self.redis_events = Counter("gogate_redis_events",
                                    "Events between hosts through Redis, by outcome "
                                    "(published, received, unroutable).", ["outcome"],
                                    registry=own)
        self.stream_resets = Counter("gogate_stream_resets",
                                     "User streams this host started anew once Redis was back "
                                     "(their connections got stream_reset).", registry=own)
        self._streams = Gauge("gogate_host_streams", "User streams kept by the supervisor "
                              "(several workers without Redis).", registry=own)
        self._kept = Gauge("gogate_host_stream_events", "Distinct events kept in those "
                           "streams.", registry=own)
        self._outbox = Gauge("gogate_redis_outbox_events", "Events kept for the other hosts "
                             "while Redis is unreachable.", registry=own)
        routed = Counter("gogate_bus_events", "Events forwarded between workers.",
                         ["direction"], registry=own)
        self.forwarded = routed.labels("forwarded")
        # Each worker's traffic on the bus, counted where it passes: what a worker hands over
        # ("out") and what is forwarded to it ("in").
        broker = Counter("gogate_broker_messages", "Events passed through the broker, by "
                         "direction.", ["direction", "worker"], registry=own)
        self.sent_by = [broker.labels("out", str(i)) for i in range(workers)]
        self.sent_to = [broker.labels("in", str(i)) for i in range(workers)]
        self._collector = HostCollector(own)
        self.registry = CollectorRegistry()
        self.registry.register(self._collector)

    def watch_streams(self, store: StreamStore | None, outbox: Sized | None) -> None:
        """Report the supervisor's stream store and the events owed to other hosts."""
        if store is not None:
            self._streams.set_function(lambda: len(store))
            self._kept.set_function(lambda: store.kept)
        if outbox is not None:
            self._outbox.set_function(lambda: len(outbox))

    def render(self, replies: dict[int, bytes]) -> bytes:
        """The host's ``/metrics`` text, with the families the workers sent (worker index →
        :func:`gogate.metrics.encode_families` bytes)."""
        workers: dict[int, list[FamilyRecord]] = {}
        for index, data in replies.items():
            try:
                workers[index] = decode_families(data)
            except msgspec.DecodeError:
                server_log.warning("unreadable metrics from worker %d left out", index,
                                   extra={"worker": index})
        self._collector.workers = workers
        try:
            return generate_latest(self.registry)
        finally:
            self._collector.workers = {}
