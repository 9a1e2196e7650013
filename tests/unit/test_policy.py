"""The pure rules: the rate limit, the typing gate and the relayed message index."""

from __future__ import annotations

from gogate.policy import RateLimit, RecentMessages, TypingGate


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- RateLimit -----------------------------------------------------------------------------


def take_all(rule: RateLimit, bucket: float, now: float) -> tuple[int, float]:
    """Take tokens at ``now`` until the bucket refuses: how many, and the bucket after."""
    taken = 0
    while (after := rule.take(bucket, now)) is not None:
        bucket = after
        taken += 1
        assert taken < 10_000
    return taken, bucket


def test_rate_limit_allows_the_burst_then_refuses() -> None:
    rule = RateLimit(rate=10, burst=5)
    taken, bucket = take_all(rule, 0.0, now=100.0)
    assert taken == 5
    assert rule.take(bucket, 100.0) is None
    assert rule.take(bucket, 100.05) is None  # half a token refilled: still refused


def test_rate_limit_refills_at_the_rate_up_to_the_burst() -> None:
    rule = RateLimit(rate=10, burst=5)
    _, bucket = take_all(rule, 0.0, now=100.0)
    assert take_all(rule, bucket, now=100.3)[0] == 3  # 0.3 s at 10/s
    _, bucket = take_all(rule, bucket, now=100.3)
    assert take_all(rule, bucket, now=200.0)[0] == 5  # a long pause refills the burst, no more


def test_rate_limit_refusal_takes_nothing() -> None:
    rule = RateLimit(rate=1, burst=1)
    bucket = rule.take(0.0, 10.0)
    assert bucket is not None
    for _ in range(100):
        assert rule.take(bucket, 10.5) is None
    assert rule.take(bucket, 11.0) is not None  # refused attempts did not push it back


def test_rate_limit_of_zero_is_no_limit() -> None:
    rule = RateLimit(rate=0, burst=1)
    assert all(rule.take(0.0, 1.0) == 0.0 for _ in range(1000))


# --- TypingGate ----------------------------------------------------------------------------


def test_typing_gate() -> None:
    clock = Clock()
    gate = TypingGate(clock)
    assert gate.allow(1, 10, True)
    clock.now += 0.5
    assert not gate.allow(1, 10, True)  # same state within 1 s
    assert gate.allow(2, 10, True)  # another user
    assert gate.allow(1, 11, True)  # another chat
    assert gate.allow(1, 10, False)  # a change passes at once
    assert gate.allow(1, 10, True)  # and back
    clock.now += 0.99
    assert not gate.allow(1, 10, True)
    clock.now += 0.02
    assert gate.allow(1, 10, True)  # after 1 s the same state passes again


def test_typing_gate_prune_keeps_behaviour() -> None:
    clock = Clock()
    gate = TypingGate(clock)
    gate.allow(1, 10, True)
    clock.now += 0.5
    gate.prune()
    assert not gate.allow(1, 10, True)
    clock.now += 2
    gate.prune()
    assert gate.allow(1, 10, True)


# --- RecentMessages ------------------------------------------------------------------------


def test_recent_messages_bounded() -> None:
    recent = RecentMessages(capacity=3)
    for message_id in (1, 2, 3):
        recent.remember(message_id, message_id * 10)
    assert [recent.chat_of(i) for i in (1, 2, 3)] == [10, 20, 30]
    recent.remember(4, 40)
    assert recent.chat_of(1) is None  # the oldest is forgotten first
    assert [recent.chat_of(i) for i in (2, 3, 4)] == [20, 30, 40]
    for message_id in range(100, 200):
        recent.remember(message_id, 1)
    assert sum(recent.chat_of(i) is not None for i in range(0, 200)) == 3
    assert recent.chat_of(999) is None
