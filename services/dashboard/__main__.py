"""``python -m services.dashboard [streamlit flags]``: the Streamlit app, stopped within 2 s.

Streamlit's own SIGTERM handling waits for every session's running script (the live strip
reruns each second), which took 5.7 s on a loaded host. The dashboard holds no state of its own
(it only reads), so a stop may abandon a page render: this parent forwards SIGTERM and gives the
server ``STOP_DEADLINE_SECONDS`` before it kills it, then exits 0. Under LOG_FORMAT=json it
also turns the server's output into JSON lines (services/dashboard/relay.py).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from marketpipe.logs import setup_logging
from marketpipe.settings import load_settings
from services.dashboard.relay import STREAMLIT_FORMAT, Relay

APP = Path(__file__).with_name("app.py")
STOP_DEADLINE_SECONDS = 1.5


def main(argv: list[str]) -> int:
    settings = load_settings()
    command = [sys.executable, "-m", "streamlit", "run", str(APP), *argv]
    relays: list[Relay] = []
    if settings.log_format == "text":
        server = subprocess.Popen(command)  # Streamlit's own lines, as a person reads them
    else:
        setup_logging(settings.log_level, settings.log_format, "dashboard")
        env = {
            **os.environ,
            "STREAMLIT_LOGGER_MESSAGE_FORMAT": STREAMLIT_FORMAT,
            "STREAMLIT_LOGGER_LEVEL": settings.log_level.lower(),
        }
        server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert server.stdout is not None and server.stderr is not None
        relays = [Relay(server.stdout, logging.INFO), Relay(server.stderr, logging.WARNING)]
    kill_at: list[float] = []  # set once, by the first SIGTERM/SIGINT

    def stop(signum: int, frame: FrameType | None) -> None:
        # Only flag and forward here: waiting on the child inside the handler would deadlock
        # with the wait below, which holds the Popen's lock.
        if not kill_at:
            kill_at.append(time.monotonic() + STOP_DEADLINE_SECONDS)
            server.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while True:
        try:
            code = server.wait(timeout=0.1)
        except subprocess.TimeoutExpired:
            if kill_at and time.monotonic() > kill_at[0]:
                server.kill()
            continue
        for relay in relays:
            relay.join(timeout=STOP_DEADLINE_SECONDS)
        return 0 if kill_at else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
