"""A service started as its own process (``python -m services.X``), logging to a file."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest

from marketpipe.worker import die_with_parent

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A local TCP port nobody listens on now, for a service to bind."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def die_with_test_run() -> None:
    """``preexec_fn``: the child gets SIGKILL when the test run dies (no orphans after a kill)."""
    # A pytest killed by a timeout skips its fixtures' teardown; without this its workers lived
    # on, holding scratch Redis db indexes until none was left for the next run.
    die_with_parent(signal.SIGKILL)


@contextmanager
def service_process(
    module: str, env: Mapping[str, str], log: Path, *args: str
) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m module args`` from the repo root; killed on the way out if still running."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=REPO_ROOT,
            env=dict(env),
            stdout=out,
            stderr=out,
            preexec_fn=die_with_test_run,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def wait_while_running(
    process: subprocess.Popen[bytes], log: Path, ready: Callable[[], bool], what: str
) -> None:
    """Until ``ready()``; fails with the log if the process dies or a minute passes."""
    give_up = time.monotonic() + 60
    while not ready():
        assert process.poll() is None, log.read_text()
        if time.monotonic() > give_up:
            pytest.fail(f"{what} did not happen:\n{log.read_text()}")
        time.sleep(0.1)  # polling interval, not synchronisation: the deadline decides


def stop_with_sigterm(process: subprocess.Popen[bytes], log: Path) -> None:
    """SIGTERM, as `docker compose stop` sends it; the process must exit 0 within 10 s."""
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0, log.read_text()
