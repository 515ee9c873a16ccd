"""``python -m services.streamer``: stream live prices until SIGTERM / SIGINT."""

from __future__ import annotations

import asyncio

from marketpipe.logs import setup_logging
from marketpipe.settings import load_settings
from services.streamer.service import Streamer


def main() -> None:
    settings = load_settings()
    # The formatter redacts apikey= values: no record leaves the process with the key.
    setup_logging(settings.log_level, settings.log_format, "streamer")
    asyncio.run(Streamer(settings).run())


if __name__ == "__main__":
    main()
