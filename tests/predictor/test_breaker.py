from pulsar_predictor.breaker import BreakerState, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_n_failures_then_half_opens_and_closes() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=3, cooldown_seconds=10, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()
    clock.now = 10.0
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()  # the one probe
    assert not breaker.allow()  # no second probe while the first is out
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED and breaker.allow()


def test_failed_probe_reopens_for_a_full_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=1, cooldown_seconds=5, clock=clock)
    breaker.record_failure()
    clock.now = 5.0
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    clock.now = 9.0
    assert not breaker.allow()
    clock.now = 10.0
    assert breaker.allow()


def test_success_resets_the_failure_count() -> None:
    breaker = CircuitBreaker(failures=2, cooldown_seconds=5, clock=Clock())
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED


def test_a_probe_that_never_reports_back_does_not_block_probing_forever() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=1, cooldown_seconds=5, clock=clock)
    breaker.record_failure()
    clock.now = 5.0
    assert breaker.allow()  # probe sent, its outcome never recorded (request timed out)
    clock.now = 7.0
    assert not breaker.allow()
    clock.now = 10.0
    assert breaker.allow()
