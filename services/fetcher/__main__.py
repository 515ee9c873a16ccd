"""Fetcher service: a cycle at start, then one per tick of FETCH_SCHEDULE (`--once`: one)."""

from __future__ import annotations

import argparse
import logging
import time
from datetime import UTC, datetime

from cronsim import CronSim

from marketpipe import broker
from marketpipe.settings import load_settings
from services.fetcher.client import TwelveDataClient
from services.fetcher.cycle import run_cycle

log = logging.getLogger("marketpipe.fetcher")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--once", action="store_true", help="run one cycle and exit")
    args = parser.parse_args(argv)

    settings = load_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(name)s %(message)s")
    if settings.demo_mode:
        log.warning(
            "DEMO MODE: no TWELVE_DATA_API_KEY set; fetching synthetic data from the sandbox at %s."
            " Set TWELVE_DATA_API_KEY to use the real Twelve Data API.",
            settings.api_base_url,
        )
    else:
        log.info("fetching from %s", settings.api_base_url)
    client = TwelveDataClient(
        settings.api_base_url, settings.api_key, timeout=settings.http_timeout_seconds
    )
    redis = broker.redis_from(settings)

    run_cycle(settings, client, redis)
    if args.once:
        return
    schedule = CronSim(settings.fetch_schedule, datetime.now(UTC))
    for tick in schedule:
        log.info("next cycle at %s", tick.isoformat())
        time.sleep(max(0.0, (tick - datetime.now(UTC)).total_seconds()))
        run_cycle(settings, client, redis)


if __name__ == "__main__":
    main()
