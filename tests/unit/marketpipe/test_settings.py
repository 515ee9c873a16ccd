from __future__ import annotations

import subprocess
import sys
from datetime import date

import pytest
from pydantic import ValidationError

from marketpipe.settings import (
    DEFAULT_SYMBOLS,
    REAL_API_BASE_URL,
    Settings,
    load_settings,
    validate_symbol,
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "TWELVE_DATA_API_KEY",
        "TWELVE_DATA_BASE_URL",
        "SYMBOLS",
        "INTERVAL",
        "INTERVALS",
        "BACKFILL_SINCE",
        "FETCH_SCHEDULE",
        "DASHBOARD_REFRESH_SECONDS",
        "DATABASE_URL",
        "REDIS_URL",
        "SANDBOX_URL",
    ):
        monkeypatch.delenv(name, raising=False)


def test_defaults_run_in_demo_mode_against_the_sandbox() -> None:
    settings = Settings()
    assert settings.demo_mode
    assert settings.data_source == "demo"
    assert settings.api_base_url == "http://127.0.0.1:8090"
    assert settings.symbols == DEFAULT_SYMBOLS
    assert settings.interval == "1h"
    assert settings.dashboard_refresh_seconds == 60


def test_a_key_switches_to_the_real_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWELVE_DATA_API_KEY", "k" * 32)
    settings = Settings()
    assert not settings.demo_mode
    assert settings.api_base_url == REAL_API_BASE_URL
    assert settings.api_key.get_secret_value() == "k" * 32
    assert "k" * 32 not in repr(settings)


def test_symbols_are_split_upper_cased_and_deduplicated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYMBOLS", " aapl, btc/usd ,AAPL,,eth/usd")
    assert Settings().symbols == ("AAPL", "BTC/USD", "ETH/USD")


@pytest.mark.parametrize(
    "hostile", ["AAPL;DROP TABLE x", "../etc/passwd", "A'B", "BTC/USD/EUR", "", "A" * 20]
)
def test_hostile_symbols_are_refused(hostile: str) -> None:
    with pytest.raises(ValueError, match="not a valid symbol"):
        validate_symbol(hostile)


def test_role_urls_swap_credentials_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://admin:secret@db.example:6543/pagila")
    monkeypatch.setenv("READER_DB_PASSWORD", "r-pass")
    url = Settings().role_url("reader")
    assert (url.username, url.password, url.host, url.port, url.database) == (
        "marketpipe_reader",
        "r-pass",
        "db.example",
        6543,
        "pagila",
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SYMBOLS", "AAPL,DROP TABLE"),
        ("INTERVAL", "7min"),
        ("INTERVALS", "1h,2d"),
        ("BACKFILL_SINCE", "two years"),
        ("DASHBOARD_REFRESH_SECONDS", "soon"),
        ("FETCH_SCHEDULE", "every hour"),
        ("DATABASE_URL", "mysql://root@localhost/pagila"),
        ("REDIS_URL", "localhost:6379"),
        ("TWELVE_DATA_BASE_URL", "api.twelvedata.com"),
    ],
)
def test_malformed_values_fail_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError):
        Settings()
    with pytest.raises(SystemExit) as exited:
        load_settings()
    assert exited.value.code == 2
    assert variable in capsys.readouterr().err


def test_a_service_stops_at_start_on_a_malformed_value() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "services.fetcher", "--once"],
        env={"INTERVAL": "7min", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "INTERVAL" in done.stderr


def test_with_a_key_a_demo_password_is_refused_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWELVE_DATA_API_KEY", "k" * 32)
    monkeypatch.setenv("LOADER_DB_PASSWORD", "marketpipe-loader")  # .env.example's value
    monkeypatch.setenv("READER_DB_PASSWORD", "a-real-one")
    with pytest.raises(ValidationError, match="LOADER_DB_PASSWORD: the demo password is refused"):
        Settings()
    monkeypatch.setenv("LOADER_DB_PASSWORD", "another-real-one")
    assert Settings().loader_db_password.get_secret_value() == "another-real-one"


def test_demo_passwords_are_fine_in_demo_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOADER_DB_PASSWORD", "marketpipe-loader")
    assert Settings().demo_mode


def test_the_refusal_stops_a_service_with_a_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWELVE_DATA_API_KEY", "k" * 32)
    monkeypatch.setenv("READER_DB_PASSWORD", "marketpipe-reader")
    done = subprocess.run(
        [sys.executable, "-c", "from marketpipe.settings import load_settings; load_settings()"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "READER_DB_PASSWORD: the demo password is refused outside demo mode" in done.stderr
    assert "k" * 32 not in done.stderr


def test_intervals_are_a_list_and_interval_is_read_as_one(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().intervals == ("1h",)
    monkeypatch.setenv("INTERVAL", "1day")  # the older single name
    assert Settings().intervals == ("1day",) and Settings().interval == "1day"
    monkeypatch.setenv("INTERVALS", " 1h, 1day,1h")
    settings = Settings()
    assert settings.intervals == ("1h", "1day")  # INTERVALS wins; split and deduplicated
    assert settings.interval == "1h"  # the first: single-series commands' default
    assert settings.for_interval("1day").intervals == ("1day",)
    monkeypatch.setenv("INTERVALS", " , ")
    with pytest.raises(ValidationError, match="at least one interval"):
        Settings()


@pytest.mark.parametrize(
    ("value", "first_day"),
    [
        ("2y", date(2024, 3, 11)),  # 730 days
        ("90d", date(2025, 12, 11)),
        ("2025-01-02", date(2025, 1, 2)),
        ("none", None),
        ("0d", None),
    ],
)
def test_backfill_since_is_a_depth_or_a_date(value: str, first_day: date | None) -> None:
    settings = Settings(backfill_since=value)
    assert settings.backfill_start(date(2026, 3, 11)) == first_day


def test_the_backfill_reaches_two_years_back_by_default() -> None:
    assert Settings().backfill_start(date(2026, 3, 11)) == date(2024, 3, 11)
