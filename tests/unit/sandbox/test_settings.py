"""The sandbox's settings: its log lines follow the stack's LOG_FORMAT, as every service's do."""

from __future__ import annotations

import pytest

from services.sandbox.settings import SandboxSettings


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "text"),
        ({"LOG_FORMAT": "json"}, "json"),
        ({"SANDBOX_LOG_FORMAT": "json"}, "json"),
        ({"LOG_FORMAT": "json", "SANDBOX_LOG_FORMAT": "text"}, "text"),
    ],
)
def test_the_log_format_follows_the_stacks_log_format(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    for name in ("LOG_FORMAT", "SANDBOX_LOG_FORMAT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert SandboxSettings().log_format == expected
