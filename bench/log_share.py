"""A newcomer's `make run` log at INFO: how many of its lines are marketpipe's own.

Run: .venv/bin/python -m bench.log_share [--seconds 150] [--speed 1]   (or `make log-share`)

Starts ``scripts/run_stack.py`` (what `make run` runs) with the default settings but on a
scratch database and Redis db (never a user's), free ports and the sandbox clock accelerated
``--speed`` times (60: an API hour a minute, so the hourly ticks come every minute), lets it run
``--seconds`` after it says "running", stops it like Ctrl-C, and sorts every line by who wrote
it: marketpipe's (its ``marketpipe.*`` and ``services.*`` loggers, make run's own lines), the
sandbox's (a stand-in for the API, not counted as ours), RQ's, Streamlit's and the rest.

Goal (issue 17): marketpipe's own lines are at least half of all lines. Before that issue, a
26-minute `make run` showed 17 of 481 (3.5 %), 446 being RQ's per-job chatter.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from tests.support.scratch import scratch_database, scratch_redis

REPO_ROOT = Path(__file__).resolve().parents[1]
# run_stack prefixes every line with "<service>  | "; our format is "time LEVEL logger message".
PREFIXED = re.compile(r"^(?P<service>\S+)\s*\| (?P<line>.*)$")
RECORD = re.compile(r"^\S+ \S+ (?P<level>[A-Z]+) (?P<logger>\S+) ")


def free_port_pair() -> int:
    """A port whose successor is free too (the sandbox streams on its HTTP port + 1)."""
    while True:
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
        with socket.socket() as second:
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port


def who(line: str) -> str:
    """marketpipe (its loggers, make run's own lines), sandbox, or the library that wrote it."""
    match = PREFIXED.match(line)
    text = match.group("line") if match else line  # unprefixed: make run itself (migrate)
    record = RECORD.match(text)
    if not record:
        # make run's "running" / "stopped"; a service's stray prints (Streamlit's banner).
        return f"other ({match.group('service')})" if match else "marketpipe"
    logger = record.group("logger")
    if logger.startswith("services.sandbox"):
        return "sandbox"
    if logger.startswith(("marketpipe", "services.")):
        return "marketpipe"
    return logger.split(".", 1)[0]


def run(seconds: float, speed: float, log_path: Path) -> list[str]:
    database = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    redis = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    with scratch_database(database, prefix="marketpipe_logs") as db_url, scratch_redis(redis) as r:
        sandbox, dashboard = free_port_pair(), free_port_pair()
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("SANDBOX_", "LOG_", "TWELVE_DATA", "SYMBOLS", "FETCH_"))
        } | {
            "DATABASE_URL": db_url,
            "REDIS_URL": r,
            "SANDBOX_URL": f"http://127.0.0.1:{sandbox}",
            "SANDBOX_STREAM_URL": f"ws://127.0.0.1:{sandbox + 1}",
            "SANDBOX_CLOCK_SPEED": str(speed),
            "DASHBOARD_PORT": str(dashboard),
        }
        process = subprocess.Popen(
            [sys.executable, "scripts/run_stack.py"],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert process.stdout is not None
        lines: list[str] = []
        up = threading.Event()

        def read() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                lines.append(line.rstrip("\n"))
                if "marketpipe is running" in line:
                    up.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        if not up.wait(timeout=300):
            process.send_signal(signal.SIGINT)
            process.wait(timeout=60)
            raise SystemExit("make run did not say 'running' within 300 s:\n" + "\n".join(lines))
        ran_until = time.monotonic() + seconds
        while time.monotonic() < ran_until and process.poll() is None:
            time.sleep(1)  # the run's length is the measurement's window, not synchronisation
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
        reader.join(timeout=10)
    log_path.write_text("\n".join(lines) + "\n")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=150.0)
    # 1: a newcomer's run as it is; 60 shows an hour of ticks a minute (the streamer then drops
    # the accelerated stream's ticks as dated in the future, a warning per 1000).
    parser.add_argument("--speed", type=float, default=1.0)
    parser.add_argument("--log", type=Path, default=REPO_ROOT / "artifacts" / "make-run.log")
    args = parser.parse_args()
    args.log.parent.mkdir(parents=True, exist_ok=True)
    lines = [line for line in run(args.seconds, args.speed, args.log) if line.strip()]
    counts = Counter(who(line) for line in lines)
    ours = counts["marketpipe"]
    print(f"make run at INFO, {args.seconds:.0f} s after 'running', sandbox clock x{args.speed:g}")
    print(f"log: {args.log}")
    for source, count in counts.most_common():
        print(f"  {source:<24} {count:5d}")
    share = ours / max(1, len(lines))
    print(f"marketpipe's own lines: {ours} of {len(lines)} = {share:.0%} (goal >= 50 %)")
    if share < 0.5:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
