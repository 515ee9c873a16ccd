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
from pathlib import Path
from types import FrameType

APP = Path(__file__).with_name("app.py")
STOP_DEADLINE_SECONDS = 1.5


def main(argv: list[str]) -> int:
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(APP), *argv])

    def stop(signum: int, frame: FrameType | None) -> None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=STOP_DEADLINE_SECONDS)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return server.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
