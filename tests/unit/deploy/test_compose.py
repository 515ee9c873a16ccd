"""docker-compose.yml and the Dockerfiles, checked statically (no Docker engine runs here)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
COMPOSE: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
APP_SERVICES = ("sandbox", "fetcher", "transformer", "loader", "dashboard")
SCALABLE = ("transformer", "loader")


def test_every_service_the_pipeline_needs_is_there() -> None:
    assert {"postgres", "redis", "migrate", *APP_SERVICES} <= set(SERVICES)


@pytest.mark.parametrize("name", [n for n, s in SERVICES.items() if "build" in s])
def test_build_context_and_dockerfile_exist(name: str) -> None:
    build = SERVICES[name]["build"]
    context = REPO / build["context"]
    assert context.is_dir()
    assert (context / build["dockerfile"]).is_file()


@pytest.mark.parametrize("name", APP_SERVICES)
def test_each_app_service_has_its_own_dockerfile(name: str) -> None:
    assert SERVICES[name]["build"]["dockerfile"] == f"services/{name}/Dockerfile"


def _command(name: str) -> list[str]:
    service = SERVICES[name]
    if "command" in service:
        return list(service["command"])
    dockerfile = (REPO / service["build"]["dockerfile"]).read_text()
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile, re.MULTILINE)
    assert cmd, f"{name}: no exec-form CMD"
    return yaml.safe_load(cmd.group(1))


@pytest.mark.parametrize("name", [n for n, s in SERVICES.items() if "build" in s])
def test_command_targets_exist(name: str) -> None:
    command = _command(name)
    if command[:2] == ["python", "-m"]:
        assert importlib.util.find_spec(command[2]) is not None, command
    elif command[:2] == ["streamlit", "run"]:
        assert (REPO / command[2]).is_file(), command
    else:
        pytest.fail(f"{name}: unexpected command {command}")


@pytest.mark.parametrize("name", [n for n in SERVICES if n != "migrate"])
def test_long_running_services_have_healthchecks(name: str) -> None:
    assert SERVICES[name].get("healthcheck", {}).get("test")


def test_healthcheck_modules_exist() -> None:
    for service in SERVICES.values():
        test = service.get("healthcheck", {}).get("test", [])
        if test[:3] == ["CMD", "python", "-m"]:
            assert importlib.util.find_spec(test[3]) is not None


def test_dependencies_wait_for_health_or_completion() -> None:
    for name, service in SERVICES.items():
        for dep, cond in (service.get("depends_on") or {}).items():
            assert dep in SERVICES
            expected = "service_completed_successfully" if dep == "migrate" else "service_healthy"
            assert cond["condition"] == expected, (name, dep)


def test_postgres_initialises_pagila_from_db_init() -> None:
    postgres = SERVICES["postgres"]
    assert postgres["environment"]["POSTGRES_DB"] == "pagila"
    assert "./db/init:/docker-entrypoint-initdb.d:ro" in postgres["volumes"]
    assert any(
        ":/var/lib/postgresql/data" in v and not v.startswith(".") for v in postgres["volumes"]
    )


def test_redis_keeps_an_append_only_file() -> None:
    assert "--appendonly" in SERVICES["redis"]["command"]


def test_published_ports_bind_loopback_only() -> None:
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)


def test_scalable_workers_have_no_container_name_and_share_an_anchor() -> None:
    text = (REPO / "docker-compose.yml").read_text()
    assert "x-worker: &worker" in text
    for name in SCALABLE:
        assert "container_name" not in SERVICES[name]
        assert SERVICES[name]["restart"] == "unless-stopped"  # comes from the anchor


def test_every_variable_has_a_default_or_is_documented() -> None:
    readme = (REPO / "README.md").read_text()
    text = (REPO / "docker-compose.yml").read_text()
    for match in re.finditer(r"\$\{([A-Z_]+)(:?-[^}]*)?\}", text):
        name, default = match.group(1), match.group(2)
        assert default is not None or f"`{name}`" in readme, f"${{{name}}} undocumented"


def test_no_secret_has_a_literal_value() -> None:
    for service in SERVICES.values():
        for key, value in (service.get("environment") or {}).items():
            if "KEY" in key or "PASSWORD" in key:
                assert str(value).startswith("${"), key


@pytest.mark.parametrize("dockerfile", sorted(REPO.glob("services/*/Dockerfile")))
def test_dockerfiles_follow_the_house_rules(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    users = [ln for ln in lines if ln.startswith("USER ")]
    assert users and users[-1].split()[1] not in ("root", "0"), "must run as non-root"
    assert re.search(r"^CMD \[", text, re.MULTILINE), "CMD must be exec-form"
    lock_copy = next(
        i for i, ln in enumerate(lines) if "requirements.lock" in ln and ln.startswith("COPY")
    )
    code_copy = next(i for i, ln in enumerate(lines) if ln.startswith("COPY services/"))
    assert lock_copy < code_copy, "dependencies must be installed before the code is copied"
    for copied in re.findall(r"^COPY (\S+) ", text, re.MULTILINE):
        assert (REPO / copied.rstrip("/")).exists(), f"{dockerfile}: COPY {copied} is missing"


@pytest.mark.parametrize("name", list(SERVICES))
def test_no_service_runs_privileged_or_as_root(name: str) -> None:
    service = SERVICES[name]
    assert not service.get("privileged"), name
    assert str(service.get("user", "")).split(":")[0] not in ("root", "0"), name
    assert "network_mode" not in service, name  # host networking would bypass the 127.0.0.1 ports


def test_passwords_inside_connection_urls_come_from_the_environment() -> None:
    for name, service in SERVICES.items():
        for key, value in (service.get("environment") or {}).items():
            credentials = re.match(r"^\w+://([^/@]*)@", str(value))
            if credentials and ":" in credentials.group(1):
                password = credentials.group(1).split(":", 1)[1]
                assert password.startswith("${"), (name, key)
