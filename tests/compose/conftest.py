"""The Compose stack, run the way a user runs it: `docker compose up --build -d` on a real engine.

One stack per test session under a unique project name, on free host ports, configured by
.env.example (what `cp .env.example .env` gives a user: the demo). `down -v` at the end, whatever
happens. Without an engine the suite fails and says how to get one: CI's `.ci/run` starts one.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psycopg2
import pytest
from redis import Redis

REPO_ROOT = Path(__file__).resolve().parents[2]
ENV_FILE = REPO_ROOT / ".env.example"
DEADLINE_SECONDS = 300.0
T = TypeVar("T")


def demo_env() -> dict[str, str]:
    """The variables .env.example sets (the user's .env after `cp .env.example .env`)."""
    values = {}
    for line in ENV_FILE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(probe: Callable[[], T | None], what: str, deadline: float = DEADLINE_SECONDS) -> T:
    """Poll ``probe`` until it returns something truthy, or fail naming ``what``."""
    give_up = time.monotonic() + deadline
    last_error: Exception | None = None
    while time.monotonic() < give_up:
        try:
            result = probe()
        except (OSError, psycopg2.OperationalError) as exc:  # the service is not there (yet)
            last_error, result = exc, None
        if result:
            return result
        time.sleep(0.5)  # polling interval, not synchronisation: the deadline decides
    pytest.fail(f"gave up after {deadline:.0f} s waiting for {what} (last error: {last_error})")


def engine_answers() -> bool:
    try:
        done = subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@dataclass
class Stack:
    """A running compose project and the host ports it publishes."""

    project: str
    ports: dict[str, int]
    env: dict[str, str] = field(default_factory=dict)
    startup_seconds: float = 0.0

    def compose(self, *args: str, check: bool = True, timeout: float = 600) -> str:
        done = subprocess.run(
            # --env-file: the demo settings, never a developer's own .env beside the compose file
            [
                "docker",
                "compose",
                "--project-name",
                self.project,
                "--env-file",
                str(ENV_FILE),
                *args,
            ],
            cwd=REPO_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            pytest.fail(f"docker compose {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
        return done.stdout

    def exec(self, service: str, *command: str, check: bool = True) -> str:
        return self.compose("exec", "-T", service, *command, check=check)

    def containers(self, *services: str) -> list[dict[str, Any]]:
        """`docker compose ps --all` of the services (all when none named), as dicts."""
        out = self.compose("ps", "--all", "--format", "json", *services)
        rows = [json.loads(line) for line in out.splitlines() if line.strip()]
        return rows

    def inspect(self, container: str) -> dict[str, Any]:
        out = subprocess.run(
            ["docker", "inspect", container], capture_output=True, text=True, check=True
        ).stdout
        state: dict[str, Any] = json.loads(out)[0]
        return state

    def admin_db(self) -> psycopg2.extensions.connection:
        return self.db("postgres", self.env["POSTGRES_PASSWORD"])

    def db(self, user: str, password: str) -> psycopg2.extensions.connection:
        return psycopg2.connect(
            host="127.0.0.1",
            port=self.ports["POSTGRES_PORT"],
            user=user,
            password=password,
            dbname="pagila",
            connect_timeout=3,
        )

    def redis(self) -> Redis:
        return Redis(host="127.0.0.1", port=self.ports["REDIS_PORT"], socket_timeout=5)

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        conn = self.admin_db()
        try:
            with conn, conn.cursor() as cur:
                cur.execute(sql, params)
                return list(cur.fetchall())
        finally:
            conn.close()


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    if not engine_answers():
        pytest.fail(
            "no Docker engine answers: the compose suite needs one. As root, run"
            " ../shared/tools/offline-docker/setup (CI's .ci/run does), or deselect with"
            " -m 'not compose'.",
            pytrace=False,
        )
    ports = {
        name: free_port()
        for name in ("POSTGRES_PORT", "REDIS_PORT", "SANDBOX_PORT", "DASHBOARD_PORT")
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWELVE_DATA", "COMPOSE_"))}
    env |= demo_env() | {name: str(port) for name, port in ports.items()}
    # The tests load what they ask for (their own backfills), not two years of every symbol.
    env["BACKFILL_SINCE"] = "none"
    stack = Stack(project=f"mptest{secrets.token_hex(4)}", ports=ports, env=env)
    try:
        started = time.monotonic()
        stack.compose("up", "--build", "--detach", "--wait", "--wait-timeout", "300")
        stack.startup_seconds = time.monotonic() - started
        print(f"\ncompose: `up --build -d --wait` took {stack.startup_seconds:.1f} s")
        yield stack
    finally:
        logs = stack.compose("logs", "--no-color", "--timestamps", check=False)
        artifacts = REPO_ROOT / "artifacts"
        artifacts.mkdir(exist_ok=True)
        (artifacts / "compose-logs.txt").write_text(logs)
        stack.compose("down", "--volumes", "--remove-orphans", "--timeout", "10", check=False)
