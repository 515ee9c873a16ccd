"""``python -m services.sandbox``: serve the sandbox Twelve Data API until interrupted."""

from __future__ import annotations

import contextlib
import logging
import signal
from types import FrameType

from services.sandbox.app import SandboxServer
from services.sandbox.settings import load_sandbox_settings


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> None:
    # SIGTERM (`docker compose stop`) stops it like Ctrl-C: the server closes its socket.
    signal.signal(signal.SIGTERM, _interrupt)
    settings = load_sandbox_settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    with contextlib.suppress(KeyboardInterrupt):
        SandboxServer(settings).serve_forever()


if __name__ == "__main__":
    main()
