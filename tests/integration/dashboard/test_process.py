"""The dashboard's process under LOG_FORMAT=json: every line it prints is one JSON object,
Streamlit's banner and Streamlit's own log records included (services/dashboard/relay.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from marketpipe.settings import Settings
from tests.integration.conftest import settings_env
from tests.support.processes import (
    free_port,
    service_process,
    stop_with_sigterm,
    wait_while_running,
)

pytestmark = pytest.mark.integration


def test_under_log_format_json_every_line_of_the_dashboard_is_a_json_object(
    clean_db: Settings, tmp_path: Path
) -> None:
    port, log = free_port(), tmp_path / "dashboard.log"
    env = settings_env(clean_db, LOG_FORMAT="json", LOG_LEVEL="DEBUG")
    health = f"http://127.0.0.1:{port}/_stcore/health"

    def answers() -> bool:
        try:
            return requests.get(health, timeout=2).ok
        except requests.RequestException:  # not up yet: refused, or too busy to answer
            return False

    args = (f"--server.port={port}", "--server.address=127.0.0.1", "--server.headless=true")
    with service_process("services.dashboard", env, log, *args) as dashboard:
        wait_while_running(dashboard, log, answers, "the dashboard's health endpoint")
        stop_with_sigterm(dashboard, log)

    lines = log.read_text().splitlines()
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON line: {line!r}\n{log.read_text()[-3000:]}")
    assert all(isinstance(p, dict) and p["service"] == "dashboard" for p in parsed), parsed
    banner = [p for p in parsed if "You can now view your Streamlit app" in p["message"]]
    assert len(banner) == 1 and f"URL: http://127.0.0.1:{port}" in banner[0]["message"], parsed
    assert banner[0]["logger"] == "streamlit" and banner[0]["level"] == "INFO"
    # Streamlit's own records keep their logger and level (LOG_LEVEL=DEBUG reaches them).
    own = {(p["logger"], p["level"]) for p in parsed if p["logger"].startswith("streamlit.")}
    assert any(level == "DEBUG" for _, level in own), own
