"""The compose stack without Docker: every service as a local process, stopped together on Ctrl-C.

Checks that PostgreSQL and Redis answer (one line naming the variable if not, exit 1), creates
the database if missing and migrates it; starts the sandbox too when no TWELVE_DATA_API_KEY is
set (demo mode). Says "running" only once every service is up: the fetcher, the workers and the
streamer have touched their heartbeat file (workers do once registered, i.e. once their servers
answer) and the dashboard answers HTTP with the database reachable. Settings come from the
environment as in compose.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from marketpipe.logs import setup_logging
from marketpipe.migrate import create_database_if_missing, migrate
from marketpipe.reach import Unreachable, check_postgres, check_redis, exit_if_unreachable
from marketpipe.settings import Settings, load_settings

REPO_ROOT = Path(__file__).resolve().parent.parent
DASHBOARD_PORT = os.environ.get("DASHBOARD_PORT", "8501")
# Services whose loops touch HEARTBEAT_FILE once they work (each gets its own file here).
BEATING = ("transformer", "loader", "streamer", "fetcher")
UP_DEADLINE_SECONDS = float(os.environ.get("RUN_UP_DEADLINE_SECONDS", "120"))


def _pump(name: str, process: subprocess.Popen[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        sys.stdout.write(f"{name:<12}| {line}")
        sys.stdout.flush()


def answers_http(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (our own URL)
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


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
        # The rest of Streamlit's settings: .streamlit/config.toml.
        "dashboard": [python, "-m", "services.dashboard", f"--server.port={DASHBOARD_PORT}"],
        "fetcher": [python, "-m", "services.fetcher"],
    }


def start(
    settings: Settings, commands: dict[str, list[str]], beats: Path
) -> dict[str, subprocess.Popen[str]]:
    processes: dict[str, subprocess.Popen[str]] = {}
    for name, command in commands.items():
        env = dict(os.environ)
        if name in BEATING:
            env["HEARTBEAT_FILE"] = str(beats / f"{name}.beat")
        processes[name] = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # Ctrl-C reaches us only; we stop the children in order
        )
        threading.Thread(target=_pump, args=(name, processes[name]), daemon=True).start()
        if name == "sandbox":
            wait_until_serving(f"{settings.sandbox_url}/__sandbox/health")
    return processes


def readiness(settings: Settings, names: list[str], beats: Path) -> dict[str, Callable[[], bool]]:
    """Per service: is it up? (heartbeat touched; the dashboard answers with the database)."""

    def beat_of(name: str) -> Callable[[], bool]:
        return (beats / f"{name}.beat").exists

    def dashboard_up() -> bool:
        if not answers_http(f"http://127.0.0.1:{DASHBOARD_PORT}/_stcore/health"):
            return False
        try:
            check_postgres(settings.role_url("reader"))
        except Unreachable:
            return False
        return True

    checks: dict[str, Callable[[], bool]] = {n: beat_of(n) for n in names if n in BEATING}
    if "dashboard" in names:
        checks["dashboard"] = dashboard_up
    return checks


def wait_until_up(
    processes: dict[str, subprocess.Popen[str]],
    checks: dict[str, Callable[[], bool]],
    stopping: threading.Event,
) -> str:
    """Poll until every check passes; '' then, else why not (a service died, the deadline)."""
    deadline = time.monotonic() + UP_DEADLINE_SECONDS
    pending = dict(checks)
    while pending and not stopping.is_set():
        pending = {n: up for n, up in pending.items() if not up()}
        dead = {n: p.returncode for n, p in processes.items() if p.poll() is not None}
        if dead:
            return f"service(s) exited: {dead}"
        if pending and time.monotonic() > deadline:
            return f"not up within {UP_DEADLINE_SECONDS:.0f} s: {', '.join(sorted(pending))}"
        stopping.wait(0.5)
    return "stopped before every service was up" if stopping.is_set() else ""


def stop_all(processes: dict[str, subprocess.Popen[str]]) -> None:
    """SIGTERM in reverse start order; a service still there after 20 s is killed."""
    for process in reversed(processes.values()):
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes.values():
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def supervise(processes: dict[str, subprocess.Popen[str]], stopping: threading.Event) -> int:
    """Run until Ctrl-C/SIGTERM or a service dies; then stop all in reverse order."""
    exit_code = 0
    while not stopping.wait(1.0):
        dead = {n: p.returncode for n, p in processes.items() if p.poll() is not None}
        if dead:
            print(f"service(s) exited: {dead}; stopping the rest", flush=True)
            exit_code = 1
            break
    stop_all(processes)
    print("marketpipe stopped", flush=True)
    return exit_code


def main() -> int:
    settings = load_settings()
    setup_logging(settings.log_level, settings.log_format, "run")
    exit_if_unreachable(
        [
            lambda: check_postgres(settings.admin_url.set(database="postgres")),
            lambda: check_redis(settings.redis_url),
        ],
        "make run",
    )
    create_database_if_missing(settings)
    migrate(settings)
    stopping = threading.Event()
    # Installed explicitly: a shell without job control starts background jobs with SIGINT ignored.
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, lambda *_: stopping.set())
    with tempfile.TemporaryDirectory(prefix="marketpipe-run-") as beats:
        commands = service_commands(settings)
        processes = start(settings, commands, Path(beats))
        checks = readiness(settings, list(commands), Path(beats))
        problem = wait_until_up(processes, checks, stopping)
        if problem:
            print(f"make run: {problem}; stopping the rest", flush=True)
            stop_all(processes)
            return 1
        print(
            f"\nmarketpipe is running: dashboard at http://127.0.0.1:{DASHBOARD_PORT}"
            "  (Ctrl-C stops all)\n",
            flush=True,
        )
        return supervise(processes, stopping)


if __name__ == "__main__":
    raise SystemExit(main())
