"""The back-off after wrong API keys: a client waits only after the threshold, the wait doubles up to its cap,
a right key or a quiet window starts the count again, clients are counted apart, and the state stays bounded."""

from __future__ import annotations

from lienthong.singlewindow.throttle import FailureThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def throttle(clock: Clock, **kw) -> FailureThrottle:
    return FailureThrottle(**{"threshold": 3, "window": 60.0, "backoff": 1.0, "backoff_max": 8.0, "clock": clock, **kw})


def test_a_client_waits_only_from_the_threshold_on_and_the_wait_doubles_up_to_the_cap():
    clock = Clock()
    t = throttle(clock)
    assert [t.failed("a") for _ in range(2)] == [(1, 0.0), (2, 0.0)]
    assert t.wait("a") == 0.0
    assert t.failed("a") == (3, 1.0)
    assert t.wait("a") == 1.0
    clock.now += 0.4
    assert abs(t.wait("a") - 0.6) < 1e-9
    waits = []
    for _ in range(5):
        clock.now += t.wait("a")
        waits.append(t.failed("a")[1])
    assert waits == [2.0, 4.0, 8.0, 8.0, 8.0]


def test_other_clients_are_not_affected():
    t = throttle(Clock())
    for _ in range(3):
        t.failed("a")
    assert t.wait("a") > 0 and t.wait("b") == 0.0
    assert t.failed("b") == (1, 0.0)


def test_a_right_key_starts_the_count_again():
    clock = Clock()
    t = throttle(clock)
    for _ in range(3):
        t.failed("a")
    clock.now += 1.0
    t.succeeded("a")
    assert t.wait("a") == 0.0 and t.failed("a") == (1, 0.0)


def test_failures_further_apart_than_the_window_start_the_count_again():
    clock = Clock()
    t = throttle(clock)
    t.failed("a")
    t.failed("a")
    clock.now += 61.0
    assert t.failed("a") == (1, 0.0)


def test_the_state_is_bounded_forgetting_the_least_recently_failing_client():
    t = throttle(Clock(), max_clients=100)
    for i in range(250):
        t.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(t) == 100
    t.failed("10.0.0.249")  # the most recent stay
    assert t.failed("10.0.0.249")[0] == 3
    assert t.failed("10.0.0.0") == (1, 0.0)  # the oldest was forgotten


def test_a_very_long_run_of_failures_stays_at_the_cap():
    clock = Clock()
    t = throttle(clock, backoff_max=900.0)
    for _ in range(5000):
        clock.now += t.wait("a")
        _, wait = t.failed("a")
    assert wait == 900.0
