"""The host's table of who holds whom (:mod:`gogate.cluster.presence`): the per-user limit
across workers, routing targets, and what a dead worker's users leave behind."""

from __future__ import annotations

from gogate.cluster.presence import Presence


def test_limit_counts_every_worker_of_the_host() -> None:
    presence = Presence()
    assert presence.acquire(0, 7, limit=2)
    assert presence.acquire(1, 7, limit=2)
    assert not presence.acquire(2, 7, limit=2)
    presence.release(0, 7)
    assert presence.acquire(2, 7, limit=2)
    assert presence.acquire(2, 7, limit=0), "0 means no limit"
    assert presence.totals() == {7: 3}


def test_holders_are_the_workers_to_route_to() -> None:
    presence = Presence()
    presence.acquire(0, 1, 0)
    presence.acquire(2, 2, 0)
    presence.acquire(2, 1, 0)
    assert presence.holders([1]) == {0, 2}
    assert presence.holders([2, 3]) == {2}
    assert presence.holders([3]) == set()


def test_last_release_makes_the_user_offline() -> None:
    presence = Presence()
    presence.acquire(0, 1, 0)
    presence.acquire(0, 1, 0)
    presence.release(0, 1)
    assert 1 in presence
    presence.release(0, 1)
    presence.release(0, 1)  # one too many changes nothing
    assert 1 not in presence
    assert presence.totals() == {}


def test_forget_returns_what_a_dead_worker_held() -> None:
    presence = Presence()
    for worker, user in ((0, 1), (0, 1), (0, 2), (1, 2)):
        presence.acquire(worker, user, 0)
    assert presence.forget(0) == {1: 2, 2: 1}
    assert 1 not in presence
    assert presence.totals() == {2: 1}
    assert presence.holders([1, 2]) == {1}
    assert presence.forget(0) == {}
