"""The compose stack without Docker: every service as a local process, stopped together on Ctrl-C.

Creates the database if missing and migrates it first; starts the sandbox too when no
TWELVE_DATA_API_KEY is set (demo mode). Settings come from the environment as in compose.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from marketpipe.migrate import create_database_if_missing, migrate
from marketpipe.settings import Settings, load_settings

REPO_ROOT = Path(__file__).resolve().parent.parent
DASHBOARD_PORT = os.environ.get("DASHBOARD_PORT", "8501")


def _pump(name: str, process: subprocess.Popen[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        sys.stdout.write(f"{name:<12}| {line}")
        sys.stdout.flush()


def wait_until_serving(url: str, deadline_seconds: float = 30.0) -> None:
    """Poll ``url`` until it answers 200, so the fetcher's first cycle finds the sandbox up."""
    deadline = time.monotonic() + deadline_seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (our own URL)
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                raise SystemExit(f"{url} did not answer within {deadline_seconds:.0f} s") from None
        time.sleep(0.2)


def service_commands(settings: Settings) -> dict[str, list[str]]:
    """What `make run` starts, in start order (the sandbox only in demo mode)."""
    python = sys.executable
    commands: dict[str, list[str]] = {}
    if settings.demo_mode and not settings.twelve_data_base_url:
        port = settings.sandbox_url.rsplit(":", 1)[-1]
        commands["sandbox"] = [python, "-m", "services.sandbox"]
        os.environ.setdefault("SANDBOX_PORT", port)
    return commands | {
        "transformer": [python, "-m", "services.transformer"],
        "loader": [python, "-m", "services.loader"],
        "streamer": [python, "-m", "services.streamer"],
        "dashboard": [
            python,
            "-m",
            "streamlit",
            "run",
            "services/dashboard/app.py",
            f"--server.port={DASHBOARD_PORT}",  # the rest: .streamlit/config.toml
        ],
        "fetcher": [python, "-m", "services.fetcher"],
    }


def start(settings: Settings, commands: dict[str, list[str]]) -> dict[str, subprocess.Popen[str]]:
    processes: dict[str, subprocess.Popen[str]] = {}
    for name, command in commands.items():
        processes[name] = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # Ctrl-C reaches us only; we stop the children in order
        )
        threading.Thread(target=_pump, args=(name, processes[name]), daemon=True).start()
        if name == "sandbox":
            wait_until_serving(f"{settings.sandbox_url}/__sandbox/health")
    return processes


def supervise(processes: dict[str, subprocess.Popen[str]]) -> int:
    """Run until Ctrl-C/SIGTERM or a service dies; then stop all in reverse order."""
    stopping = threading.Event()
    # Installed explicitly: a shell without job control starts background jobs with SIGINT ignored.
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, lambda *_: stopping.set())
    exit_code = 0
    while not stopping.wait(1.0):
        dead = {n: p.returncode for n, p in processes.items() if p.poll() is not None}
        if dead:
            print(f"service(s) exited: {dead}; stopping the rest", flush=True)
            exit_code = 1
            break
    for process in reversed(processes.values()):
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes.values():
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
    print("marketpipe stopped", flush=True)
    return exit_code


def main() -> int:
    settings = load_settings()
    create_database_if_missing(settings)
    migrate(settings)
    processes = start(settings, service_commands(settings))
    print(
        f"\nmarketpipe is running: dashboard at http://127.0.0.1:{DASHBOARD_PORT}"
        "  (Ctrl-C stops all)\n",
        flush=True,
    )
    return supervise(processes)


if __name__ == "__main__":
    raise SystemExit(main())
