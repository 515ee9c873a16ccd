"""A server that cannot be reached at start: one line naming the variable and the address.

Real processes with a bad address (a port nobody listens on, or a proxy that is cut), no
mocks: one-shot commands exit 1 with the line and no traceback; workers and the fetcher log
the line per try with a growing delay, stay unregistered (unhealthy) meanwhile, and start
working once the server answers.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from marketpipe.settings import Settings
from tests.integration.conftest import settings_env
from tests.integration.loader.test_outage import TcpProxy
from tests.support.processes import REPO_ROOT, service_process, wait_while_running

pytestmark = pytest.mark.integration


def closed_port() -> int:
    """A port nothing listens on (connections are refused at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def dead_redis_url() -> str:
    return f"redis://:redis-secret@127.0.0.1:{closed_port()}/0"


@pytest.fixture
def dead_database_url() -> str:
    return f"postgresql://postgres:pg-secret@127.0.0.1:{closed_port()}/pagila"


def one_shot(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def assert_one_line(done: subprocess.CompletedProcess[str], expected: str) -> None:
    """Exit 1, and the whole output is the one line (no traceback, no password)."""
    output = (done.stdout + done.stderr).strip()
    assert done.returncode == 1, output
    assert len(output.splitlines()) == 1, output
    assert re.fullmatch(expected, output), output
    assert "secret" not in output and "Traceback" not in output


def test_migrate_names_database_url_and_exits_1(clean_db: Settings, dead_database_url: str) -> None:
    env = settings_env(clean_db) | {"DATABASE_URL": dead_database_url}
    done = one_shot(["-m", "marketpipe.migrate"], env)
    port = dead_database_url.rsplit(":", 1)[1].split("/")[0]
    assert_one_line(
        done,
        rf"migrate: DATABASE_URL: PostgreSQL at 127\.0\.0\.1:{port}/pagila as postgres cannot be"
        r" reached \(.*[Cc]onnection refused.*\)",
    )


@pytest.mark.parametrize(
    ("variable", "expected"),
    [
        ("REDIS_URL", r"Redis at 127\.0\.0\.1:\d+/0 cannot be reached \(.*\)"),
        ("DATABASE_URL", r"PostgreSQL at 127\.0\.0\.1:\d+/postgres as postgres cannot be .*"),
    ],
)
def test_make_run_names_the_variable_exits_1_and_never_says_running(
    clean_db: Settings, dead_redis_url: str, dead_database_url: str, variable: str, expected: str
) -> None:
    bad = {"REDIS_URL": dead_redis_url, "DATABASE_URL": dead_database_url}
    env = settings_env(clean_db) | {variable: bad[variable]}
    done = one_shot(["scripts/run_stack.py"], env)
    assert "running" not in done.stdout
    assert_one_line(done, rf"make run: {variable}: {expected}")


@pytest.mark.parametrize(
    ("args", "variable"),
    [
        (["-m", "services.fetcher", "--once"], "REDIS_URL"),
        (["-m", "services.fetcher", "backfill", "--since", "2026-03-01"], "REDIS_URL"),
        (["-m", "services.ops", "status"], "REDIS_URL"),
        (["-m", "services.ops", "status"], "DATABASE_URL"),
    ],
)
def test_one_shot_commands_name_the_variable_and_exit_1(
    clean_db: Settings,
    dead_redis_url: str,
    dead_database_url: str,
    args: list[str],
    variable: str,
) -> None:
    bad = {"REDIS_URL": dead_redis_url, "DATABASE_URL": dead_database_url}
    env = settings_env(clean_db) | {variable: bad[variable]}
    done = one_shot(args, env)
    server = "Redis" if variable == "REDIS_URL" else "PostgreSQL"
    program = args[1].rsplit(".", 1)[-1]
    assert_one_line(
        done, rf"{program}: {variable}: {server} at 127\.0\.0\.1:\d+/\S+( as \S+)? cannot be .*"
    )


def retry_lines(log: Path, variable: str) -> list[float]:
    """The delays of the retry lines naming ``variable`` so far."""
    pattern = re.compile(
        rf"WARNING marketpipe\.\S+ {variable}: .* cannot be reached .*"
        r"; retrying in (\d+\.\d) s$"
    )
    return [
        float(m.group(1)) for line in log.read_text().splitlines() if (m := pattern.search(line))
    ]


@pytest.fixture
def proxy(clean_db: Settings) -> Iterator[TcpProxy]:
    """The test database behind a proxy that starts cut: the server is 'not there yet'."""
    url = clean_db.admin_url
    tcp = TcpProxy((url.host or "127.0.0.1", url.port or 5432))
    yield tcp
    tcp.cut()


def registered_workers(redis: Redis) -> int:
    return len(redis.smembers("rq:workers"))  # type: ignore[arg-type]


@pytest.mark.parametrize("service", ["services.loader", "services.transformer"])
def test_a_worker_waits_for_its_database_unregistered_then_registers(
    clean_db: Settings, redis: Redis, proxy: TcpProxy, tmp_path: Path, service: str
) -> None:
    behind = clean_db.admin_url.set(port=proxy.port).render_as_string(hide_password=False)
    env = settings_env(clean_db) | {"DATABASE_URL": behind}
    log = tmp_path / "worker.log"
    with service_process(service, env, log) as worker:
        wait_while_running(
            worker, log, lambda: len(retry_lines(log, "DATABASE_URL")) >= 3, "three retries"
        )
        delays = retry_lines(log, "DATABASE_URL")
        assert delays[:3] == [0.5, 1.0, 2.0]  # backoff, one line per try
        assert registered_workers(redis) == 0  # not registered: its healthcheck fails meanwhile
        assert "Traceback" not in log.read_text()
        proxy.restore()
        wait_while_running(worker, log, lambda: registered_workers(redis) == 1, "registration")
        assert "every server answers now" in log.read_text()
        # SIGTERM, not the kill on the way out: a killed worker's scheduler process lives on.
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=10)


@pytest.mark.parametrize("service", ["services.fetcher", "services.transformer"])
def test_the_fetcher_and_the_workers_wait_for_redis_with_backoff(
    clean_db: Settings, dead_redis_url: str, tmp_path: Path, service: str
) -> None:
    env = settings_env(clean_db) | {"REDIS_URL": dead_redis_url}
    log = tmp_path / "service.log"
    with service_process(service, env, log) as process:
        wait_while_running(
            process, log, lambda: len(retry_lines(log, "REDIS_URL")) >= 3, "three retries"
        )
        text = log.read_text()
    assert retry_lines(log, "REDIS_URL")[:3] == [0.5, 1.0, 2.0]
    assert "redis-secret" not in text and "Traceback" not in text
    assert "tick" not in text and "taking jobs" not in text  # no work while Redis was away
