"""What a cycle or a backfill works with: settings, the API client, Redis, credits, the clock."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from redis import Redis

from marketpipe.settings import Settings
from services.fetcher.client import MarketDataClient
from services.fetcher.clock import Clock
from services.fetcher.limiter import CreditLimiter


@dataclass
class FetchContext:
    """Built once per process (or per test); ``rng`` spreads the retries of replicas apart."""

    settings: Settings
    client: MarketDataClient
    redis: Redis
    limiter: CreditLimiter
    clock: Clock
    rng: random.Random = field(default_factory=random.Random)
