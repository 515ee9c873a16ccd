"""``python -m services.streamer``: stream live prices until SIGTERM / SIGINT."""

from __future__ import annotations

import asyncio
import logging

from marketpipe.live import redact
from marketpipe.settings import load_settings
from services.streamer.service import Streamer


class RedactingFilter(logging.Filter):
    """Defence in depth: no record leaves the process with an ``apikey=`` value in it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def main() -> None:
    settings = load_settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())
    asyncio.run(Streamer(settings).run())


if __name__ == "__main__":
    main()
