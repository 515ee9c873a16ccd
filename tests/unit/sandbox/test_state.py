from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.sandbox.clock import SandboxClock
from services.sandbox.credits import CreditLedger
from services.sandbox.faults import FaultInjector, parse_fault_spec
from services.sandbox.settings import SandboxSettings, parse_key_credits

START = datetime(2026, 3, 10, 14, 59, 30, tzinfo=UTC)


class FakeMonotonic:
    def __init__(self) -> None:
        self.value = 100.0

    def __call__(self) -> float:
        return self.value


def test_clock_fixed_accelerated_and_settable() -> None:
    ticks = FakeMonotonic()
    clock = SandboxClock(START, speed=60.0, monotonic=ticks)
    assert clock.now() == START
    ticks.value += 2
    assert clock.now() == START + timedelta(minutes=2)
    clock.freeze()
    ticks.value += 100
    assert clock.now() == START + timedelta(minutes=2)
    assert clock.advance(30) == START + timedelta(minutes=2, seconds=30)
    clock.set(START, speed=1.0)
    ticks.value += 5
    assert clock.now() == START + timedelta(seconds=5)
    with pytest.raises(ValueError):
        clock.set_speed(-1)


def test_credits_per_minute_reset_on_the_minute_and_refusals_count() -> None:
    ledger = CreditLedger(lambda key: (8, 800))
    decisions = [ledger.charge("k", 1, START) for _ in range(8)]
    assert [d.used for d in decisions] == list(range(1, 9))
    assert decisions[-1].left == 0 and all(d.allowed for d in decisions)
    refused = ledger.charge("k", 1, START + timedelta(seconds=29))
    assert not refused.allowed
    assert refused.used == 9
    assert "9 API credits were used, with the current limit being 8" in refused.message
    assert refused.message.startswith("You have run out of API credits for the current minute.")
    fresh = ledger.charge("k", 3, START + timedelta(seconds=30))  # 15:00:00, a new minute
    assert fresh.allowed and fresh.used == 3 and fresh.left == 5
    assert ledger.charge("other", 1, START).used == 1


def test_batch_over_budget_is_refused_whole_and_counted() -> None:
    ledger = CreditLedger(lambda key: (8, 800))
    assert ledger.charge("k", 6, START).allowed
    refused = ledger.charge("k", 3, START)
    assert not refused.allowed and refused.used == 9 and refused.cost == 3
    assert ledger.snapshot("k", START).day_used == 9


def test_daily_budget() -> None:
    ledger = CreditLedger(lambda key: (8, 10))
    for minute in range(5):
        assert ledger.charge("k", 2, START + timedelta(minutes=minute)).allowed
    refused = ledger.charge("k", 1, START + timedelta(minutes=6))
    assert not refused.allowed
    assert refused.message.startswith(
        "You have run out of API credits for the day. 11 API credits were used, with the "
        "current limit being 10."
    )
    assert ledger.charge("k", 1, START + timedelta(days=1)).allowed


def test_key_overrides() -> None:
    assert parse_key_credits("a=55/5000, b=144") == {"a": (55, 5000), "b": (144, 14400)}
    settings = SandboxSettings(api_keys="x,y", key_credits="y=55/1000")  # type: ignore[arg-type]
    assert settings.api_keys == ("x", "y")
    assert settings.plan_for("y") == (55, 1000)
    assert settings.plan_for("x") == (8, 800)
    assert "y=55" not in repr(settings) and "'x'" not in repr(settings)
    with pytest.raises(ValueError):
        parse_key_credits("broken")


def test_fault_spec_and_scripted_faults() -> None:
    rules = parse_fault_spec("server_error*2, gaps@0.5, 429:*, bad_gateway:quote")
    assert [(r.name, r.remaining, r.probability, r.endpoint) for r in rules] == [
        ("server_error", 2, 0.0, "time_series"),
        ("gaps", None, 0.5, "time_series"),
        ("rate_limit", 1, 0.0, "*"),
        ("bad_gateway", 1, 0.0, "quote"),
    ]
    with pytest.raises(ValueError):
        parse_fault_spec("explode")
    injector = FaultInjector(parse_fault_spec("server_error*2,rate_limit:*"))
    assert injector.draw("quote") == "rate_limit"
    assert [injector.draw("time_series") for _ in range(3)] == [
        "server_error",
        "server_error",
        None,
    ]


def test_random_faults_are_seeded() -> None:
    def sequence(seed: int) -> list[str | None]:
        injector = FaultInjector(parse_fault_spec("server_error@0.3"), seed=seed)
        return [injector.draw("time_series") for _ in range(50)]

    assert sequence(7) == sequence(7)
    assert sequence(7) != sequence(8)
    assert 5 < sequence(7).count("server_error") < 30
