"""`docker compose stop` sends SIGTERM: the sandbox closes its socket and exits 0."""

from __future__ import annotations

import os
import socket
import urllib.request
from pathlib import Path

from tests.support.processes import service_process, stop_with_sigterm, wait_while_running


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
    port, stream_port = free_port(), free_port()  # not port + 1: that one may be taken
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")}
    env |= {
        "SANDBOX_HOST": "127.0.0.1",
        "SANDBOX_PORT": str(port),
        "SANDBOX_STREAM_PORT": str(stream_port),
    }
    log = tmp_path / "sandbox.log"
    health = f"http://127.0.0.1:{port}/__sandbox/health"
    with service_process("services.sandbox", env, log) as sandbox:
        wait_while_running(sandbox, log, lambda: answers(health), "the sandbox answering")
        stop_with_sigterm(sandbox, log)
    assert not answers(f"http://127.0.0.1:{port}/__sandbox/health")
