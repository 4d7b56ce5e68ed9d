import pytest

from worker.engine import schedule
from worker.engine.schedule import PACE_AFTER_STEPS, CosineSchedule


class _Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    c = _Clock()
    monkeypatch.setattr(schedule.time, "monotonic", c)
    return c


def _run(sched: CosineSchedule, clock: _Clock, asked: int, seconds_per_step: float) -> list[float]:
    rates = []
    for step in range(asked):
        if not sched.runs(step):
            break
        rates.append(sched.lr(step))
        clock.now += seconds_per_step
    return rates


def test_without_a_deadline_it_runs_every_step_down_to_zero(clock):
    rates = _run(CosineSchedule(1.0, 50, None), clock, 50, 1.0)
    assert len(rates) == 50 and rates[0] == 1.0 and rates[-1] < 0.01


def test_a_deadline_shortens_the_schedule_so_it_still_anneals(clock):
    sched = CosineSchedule(1.0, 300, clock.now + 20.0)  # one second a step: 20 of the 300 steps fit
    rates = _run(sched, clock, 300, 1.0)
    assert sched.total == 20 and len(rates) == 20
    assert rates[0] == 1.0 and rates[-1] < 0.01  # cut at step 20 of 300 it would still be at 0.99


def test_a_budget_that_buys_every_step_changes_nothing(clock):
    sched = CosineSchedule(1.0, 30, clock.now + 1000.0)
    assert len(_run(sched, clock, 30, 1.0)) == 30 and sched.total == 30


def test_it_stops_at_the_deadline_even_when_steps_slow_down(clock):
    sched = CosineSchedule(1.0, 300, clock.now + 20.0)
    rates = []
    for step in range(300):
        if not sched.runs(step):
            break
        rates.append(step)
        clock.now += 1.0 if step < PACE_AFTER_STEPS else 4.0  # slower after the timed steps
    assert clock.now - 100.0 <= 20.0 + 4.0 and len(rates) < sched.total


def test_an_exhausted_budget_runs_nothing(clock):
    assert not CosineSchedule(1.0, 10, clock.now - 1.0).runs(0)
