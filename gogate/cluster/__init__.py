"""What exists only with several workers or hosts.

- :mod:`.supervisor`: the worker processes (start, restart, stop).
- :mod:`.bus`: the binary bus between the workers of a host and their supervisor.
- :mod:`.link`: a worker's end of the bus, :class:`~.link.BusBroker` (the
  :class:`gogate.hub.Broker` of a worker among several), and the worker process.
- :mod:`.host`: the supervisor's end: routing between workers and hosts, the internal API.
- :mod:`.presence`: who holds whom on the host, kept once.
- :mod:`.relay`: the link between hosts, through Redis.
- :mod:`.authority`: the users' streams of a host without Redis, kept by the supervisor.
- :mod:`.streams_redis`: the users' streams in Redis, and what a host does about them while
  Redis is out (:mod:`.outbox`: the events it owes the other hosts meanwhile).
- :mod:`.scripts`: the Lua scripts a host runs in Redis, and the keys they use.
- :mod:`.metrics`: the supervisor's metrics and one ``/metrics`` for every process of a host.
"""

__all__: list[str] = []
