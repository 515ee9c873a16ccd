"""The API's clock from its Date headers alone: its offset, and its pace when it runs faster."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.fetcher.clock import ApiDateClock

API_START = datetime(2026, 3, 11, 18, 45, tzinfo=UTC)


class Wall:
    """Our wall clock, moved by hand; sleeps are recorded and move it too."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def header(moment: datetime) -> datetime:
    """What a Date header shows: the time truncated to the second."""
    return moment.replace(microsecond=0)


def test_follows_the_apis_offset_at_our_pace() -> None:
    wall = Wall()
    clock = ApiDateClock(wall=wall, real_sleep=wall.sleep)
    clock.observe(API_START)
    wall.now += 90
    clock.observe(API_START + timedelta(seconds=90))
    assert clock.rate == 1.0
    assert clock.now() == API_START + timedelta(seconds=90)
    clock.sleep(60)
    assert wall.slept == [60]


@pytest.mark.parametrize("speed", [2.0, 60.0, 600.0])
def test_measures_an_accelerated_clock_and_never_wakes_early(speed: float) -> None:
    wall = Wall()
    clock = ApiDateClock(wall=wall, real_sleep=wall.sleep)
    started = wall.now

    def api_now() -> datetime:
        return API_START + timedelta(seconds=(wall.now - started) * speed)

    for _ in range(5):
        clock.observe(header(api_now()), round_trip=0.01)
        wall.now += 1.3
    clock.observe(header(api_now()), round_trip=0.01)
    assert 0.8 * speed <= clock.rate <= speed  # the slowest pace the headers allow
    assert clock.now() <= api_now()
    target = api_now() + timedelta(minutes=1)
    clock.sleep((target - clock.now()).total_seconds())
    assert api_now() >= target  # a credit minute waited for has really begun
    assert wall.slept[-1] < 60  # ... in less real time than a minute


def test_a_clock_set_back_is_measured_again() -> None:
    wall = Wall()
    clock = ApiDateClock(wall=wall, real_sleep=wall.sleep)
    clock.observe(API_START)
    wall.now += 1
    clock.observe(API_START + timedelta(seconds=600))
    assert clock.rate > 100
    wall.now += 1
    restarted = API_START - timedelta(days=1)
    clock.observe(restarted)  # a restarted sandbox: time went back
    assert clock.rate == 1.0 and clock.now() == restarted


def test_a_frozen_clock_is_waited_on_at_our_pace() -> None:
    wall = Wall()
    clock = ApiDateClock(wall=wall, real_sleep=wall.sleep)
    for _ in range(3):
        clock.observe(API_START)
        wall.now += 5
    assert clock.rate == 1.0
    clock.sleep(30)
    assert wall.slept == [30]


def test_a_header_written_early_in_a_long_round_trip_keeps_the_pace() -> None:
    """At 3600x a 5 ms round trip is 18 API seconds: a header written as the request arrived
    is that far behind our time at the answer's end, and must not count as a clock set back."""
    wall = Wall()
    clock = ApiDateClock(wall=wall, real_sleep=wall.sleep)
    speed, started = 3600.0, wall.now

    def api_at(moment: float) -> datetime:
        return API_START + timedelta(seconds=(moment - started) * speed)

    for _ in range(5):
        clock.observe(header(api_at(wall.now)), round_trip=0.001)
        wall.now += 0.5
    sent = wall.now
    wall.now += 0.005
    clock.observe(header(api_at(sent)), round_trip=0.005)
    assert clock.rate > 0.9 * speed
