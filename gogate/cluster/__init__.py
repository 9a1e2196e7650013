"""What exists only with several workers or hosts.

- :mod:`.supervisor`: the worker processes (start, restart, stop).
- :mod:`.bus`: the binary bus between the workers of a host and their supervisor.
- :mod:`.link`: a worker's end of the bus, :class:`~.link.BusBroker` (the
  :class:`gogate.hub.Broker` of a worker among several), and the worker process.
- :mod:`.host`: the supervisor's end: routing between workers and hosts, the internal API.
- :mod:`.presence`: who holds whom on the host, kept once.
- :mod:`.relay`: the link between hosts, through Redis.
- :mod:`.metrics`: the supervisor's metrics and one ``/metrics`` for every process of a host.
"""

__all__: list[str] = []
