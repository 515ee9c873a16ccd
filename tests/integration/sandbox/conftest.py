"""A real sandbox server on an ephemeral port per test, its clock frozen at a known instant."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from services.sandbox.app import SandboxServer
from services.sandbox.settings import SandboxSettings

API_KEY = "marketpipe-sandbox"
# Tuesday 2026-03-10 15:47 EDT: the US market is open, the 15:30 bar is still forming.
MARKET_OPEN_NOW = datetime(2026, 3, 10, 19, 47, tzinfo=UTC)


def make_settings(**overrides: Any) -> SandboxSettings:
    values: dict[str, Any] = {
        "port": 0,
        "clock_start": MARKET_OPEN_NOW.isoformat(),
        "clock_speed": 0.0,
        "credits_per_minute": 10_000,
        "credits_per_day": 1_000_000,
        "slow_seconds": 2.0,
    }
    values.update(overrides)
    return SandboxSettings(**values)


@pytest.fixture
def start_sandbox() -> Iterator[Callable[..., SandboxServer]]:
    started: list[SandboxServer] = []

    def start(**overrides: Any) -> SandboxServer:
        server = SandboxServer(make_settings(**overrides)).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def sandbox(start_sandbox: Callable[..., SandboxServer]) -> SandboxServer:
    return start_sandbox()


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session
