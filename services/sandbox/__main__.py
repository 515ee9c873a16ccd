"""``python -m services.sandbox``: serve the sandbox Twelve Data API until interrupted."""

from __future__ import annotations

import contextlib
import signal
from types import FrameType

from marketpipe.logs import setup_logging
from services.sandbox.app import SandboxServer
from services.sandbox.settings import load_sandbox_settings


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> None:
    # SIGTERM (`docker compose stop`) stops it like Ctrl-C: the server closes its socket.
    signal.signal(signal.SIGTERM, _interrupt)
    settings = load_sandbox_settings()
    setup_logging(settings.log_level, settings.log_format, "sandbox")
    with contextlib.suppress(KeyboardInterrupt):
        SandboxServer(settings).serve_forever()


if __name__ == "__main__":
    main()
