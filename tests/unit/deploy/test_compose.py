"""docker-compose.yml as Compose itself resolves it (`docker compose config`; no engine needed).

Only properties with a behavioural meaning are checked here; what the stack does is tested by
running it (tests/compose).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from marketpipe.settings import Settings

REPO = Path(__file__).resolve().parents[3]
ENV_FILE = REPO / ".env.example"
APP_SERVICES = ("migrate", "sandbox", "fetcher", "streamer", "transformer", "loader", "dashboard")
# The database passwords each service may see (least privilege); migrate sets them all.
PASSWORDS_ALLOWED = {
    "migrate": {"LOADER", "READER", "FETCHER", "TRANSFORMER", "STREAMER"},
    "sandbox": set(),
    "fetcher": {"FETCHER"},
    "streamer": {"STREAMER"},
    "transformer": {"TRANSFORMER"},
    "loader": {"LOADER"},
    "dashboard": {"READER"},
    "postgres": set(),
    "redis": set(),
}


def compose_config(
    *, env_file: Path | None = ENV_FILE, **env: str
) -> subprocess.CompletedProcess[str]:
    if shutil.which("docker") is None:
        pytest.fail(
            "the docker CLI with Compose v2 is needed (../shared/tools/offline-docker/setup)"
        )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "TWELVE_DATA"))}
    clean |= env
    options = ["--env-file", str(env_file)] if env_file else ["--env-file", os.devnull]
    return subprocess.run(
        ["docker", "compose", *options, "config", "--format", "json"],
        cwd=REPO,
        env=clean,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture(scope="module")
def demo() -> dict[str, Any]:
    done = compose_config()
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = json.loads(done.stdout)
    return config


def test_the_demo_env_file_gives_a_valid_stack_with_the_sandbox(demo: dict[str, Any]) -> None:
    assert demo["name"] == "marketpipe"
    assert set(demo["services"]) == {"postgres", "redis", *APP_SERVICES}


def test_without_the_demo_profile_there_is_no_sandbox_and_the_fetcher_still_starts() -> None:
    done = compose_config(COMPOSE_PROFILES="")
    assert done.returncode == 0, done.stderr
    services = json.loads(done.stdout)["services"]
    assert "sandbox" not in services
    assert services["fetcher"]["depends_on"]["sandbox"]["required"] is False


@pytest.mark.parametrize(
    "secret", ["POSTGRES_PASSWORD", "LOADER_DB_PASSWORD", "READER_DB_PASSWORD"]
)
def test_a_missing_secret_stops_compose_naming_it(secret: str) -> None:
    values = dict(
        line.split("=", 1) for line in ENV_FILE.read_text().splitlines() if re.match(r"^\w+=", line)
    )
    values.pop(secret)
    done = compose_config(env_file=None, **values)
    assert done.returncode != 0
    assert f"set {secret}" in done.stderr


def test_published_ports_bind_loopback_only(demo: dict[str, Any]) -> None:
    published = [(n, p) for n, s in demo["services"].items() for p in s.get("ports", [])]
    assert published
    for name, port in published:
        assert port["host_ip"] == "127.0.0.1", (name, port)


def test_every_app_service_runs_the_one_image(demo: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        service = demo["services"][name]
        assert service["image"] == "marketpipe:local", name
        assert Path(service["build"]["context"]) == REPO, name
        assert service["read_only"] is True, name


def test_each_service_sees_only_its_own_database_passwords(demo: dict[str, Any]) -> None:
    for name, service in demo["services"].items():
        env = service.get("environment") or {}
        given = {k.removesuffix("_DB_PASSWORD") for k in env if k.endswith("_DB_PASSWORD")}
        assert given == PASSWORDS_ALLOWED[name], name
        admin = "POSTGRES_PASSWORD" in env or ":marketpipe@" in str(env.get("DATABASE_URL"))
        assert admin == (name in ("postgres", "migrate")), name
        # The streamer presents the key in its stream URL (never logged).
        assert ("TWELVE_DATA_API_KEY" in env) == (name in ("fetcher", "streamer", "migrate")), name


def test_unset_settings_are_not_passed_so_defaults_live_in_settings_only(
    demo: dict[str, Any],
) -> None:
    assert demo["services"]["fetcher"]["environment"]["SYMBOLS"] is None  # passed only if set
    done = compose_config(SYMBOLS="AAPL")
    assert json.loads(done.stdout)["services"]["fetcher"]["environment"]["SYMBOLS"] == "AAPL"


def test_workers_may_finish_a_running_job_before_being_killed(demo: dict[str, Any]) -> None:
    timeout = Settings().job_timeout_seconds
    for name in ("transformer", "loader"):
        grace = demo["services"][name]["stop_grace_period"]
        match = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", grace)
        assert match, grace
        seconds = int(match.group(1) or 0) * 60 + int(match.group(2) or 0)
        assert seconds >= timeout, (name, grace, timeout)


def test_long_running_services_have_a_healthcheck_with_a_start_period(
    demo: dict[str, Any],
) -> None:
    for name, service in demo["services"].items():
        if name != "migrate":
            assert service["healthcheck"]["test"], name
            assert service["healthcheck"]["start_period"], name


@pytest.mark.parametrize("name", ["postgres", "redis", *APP_SERVICES])
def test_no_service_runs_privileged_or_on_the_host_network(demo: dict[str, Any], name: str) -> None:
    service = demo["services"][name]
    assert not service.get("privileged"), name
    assert str(service.get("user", "")).split(":")[0] not in ("root", "0"), name
    assert "network_mode" not in service, name  # host networking would bypass the 127.0.0.1 ports
