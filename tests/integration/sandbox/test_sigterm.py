"""`docker compose stop` sends SIGTERM: the sandbox closes its socket and exits 0."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.integration.conftest import REPO_ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def test_sigterm_stops_the_sandbox_cleanly(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")}
    env |= {"SANDBOX_HOST": "127.0.0.1", "SANDBOX_PORT": str(port)}
    log = tmp_path / "sandbox.log"
    with log.open("w") as out:
        sandbox = subprocess.Popen(
            [sys.executable, "-m", "services.sandbox"],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=out,
        )
    try:
        give_up = time.monotonic() + 60
        while not answers(f"http://127.0.0.1:{port}/__sandbox/health"):
            assert sandbox.poll() is None, log.read_text()
            if time.monotonic() > give_up:
                pytest.fail(f"the sandbox never answered:\n{log.read_text()}")
            time.sleep(0.1)  # polling interval, not synchronisation: the deadline decides
        sandbox.send_signal(signal.SIGTERM)
        assert sandbox.wait(timeout=10) == 0, log.read_text()
    finally:
        if sandbox.poll() is None:
            sandbox.kill()
            sandbox.wait()
    assert not answers(f"http://127.0.0.1:{port}/__sandbox/health")
