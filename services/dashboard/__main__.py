"""``python -m services.dashboard [streamlit flags]``: the Streamlit app, stopped within 2 s.

Streamlit's own SIGTERM handling waits for every session's running script (the live strip
reruns each second), which took 5.7 s on a loaded host. The dashboard holds no state of its own
(it only reads), so a stop may abandon a page render: this parent forwards SIGTERM and gives the
server ``STOP_DEADLINE_SECONDS`` before it kills it, then exits 0.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

APP = Path(__file__).with_name("app.py")
STOP_DEADLINE_SECONDS = 1.5


def main(argv: list[str]) -> int:
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(APP), *argv])
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
        return 0 if kill_at else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
