"""Is a server named by a setting there? One line naming the variable and the address if not.

Services check their servers at start: workers and the fetcher wait with backoff, logging one
line per try (:func:`wait_until_reachable`); one-shot commands print the line and exit 1
(:func:`exit_if_unreachable`). Never a traceback for a server that is simply not there.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import Final

import psycopg2
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.engine import URL

from marketpipe.logs import redact

CONNECT_TIMEOUT_SECONDS: Final = 3
FIRST_DELAY_SECONDS: Final = 0.5
MAX_DELAY_SECONDS: Final = 30.0


# A server that went away while a service runs: logged as one line (outage_line), not a traceback.
SERVER_LOST: Final = (RedisConnectionError, RedisTimeoutError, psycopg2.OperationalError)


class Unreachable(RuntimeError):
    """A server a setting names does not answer; the message is the one line to print."""


def reason_of(exc: BaseException) -> str:
    """The cause in a few words: libpq's and redis-py's messages span lines and repeat the host."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    first = lines[0] if lines else type(exc).__name__
    return first.rsplit(" failed: ", 1)[-1].rstrip(".")


def outage_line(exc: BaseException) -> str:
    """One line for a lost server, naming the setting that points at it."""
    if isinstance(exc, psycopg2.Error):
        return f"DATABASE_URL: PostgreSQL does not answer ({reason_of(exc)})"
    return f"REDIS_URL: Redis does not answer ({reason_of(exc)})"


def postgres_address(url: URL) -> str:
    return f"{url.host or 'localhost'}:{url.port or 5432}/{url.database}"


def redis_address(redis_url: str) -> str:
    return redact(redis_url.split("://", 1)[-1].rsplit("@", 1)[-1])


def check_postgres(url: URL, variable: str = "DATABASE_URL") -> None:
    """Connect once (as ``url``'s user); raise :class:`Unreachable` naming ``variable``."""
    try:
        psycopg2.connect(
            host=url.host,
            port=url.port or 5432,
            user=url.username,
            password=url.password,
            dbname=url.database,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
        ).close()
    except psycopg2.Error as exc:
        as_user = f" as {url.username}" if url.username else ""
        raise Unreachable(
            f"{variable}: PostgreSQL at {postgres_address(url)}{as_user} cannot be reached"
            f" ({reason_of(exc)})"
        ) from None


def check_redis(redis_url: str, variable: str = "REDIS_URL") -> None:
    """PING once; raise :class:`Unreachable` naming ``variable``."""
    client = Redis.from_url(
        redis_url,
        socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
        socket_timeout=CONNECT_TIMEOUT_SECONDS,
    )
    try:
        client.ping()
    except (RedisError, OSError) as exc:
        raise Unreachable(
            f"{variable}: Redis at {redis_address(redis_url)} cannot be reached ({reason_of(exc)})"
        ) from None
    finally:
        client.close()


Check = Callable[[], None]


def wait_until_reachable(
    checks: Sequence[Check],
    log: logging.Logger,
    *,
    sleep: Callable[[float], None] = time.sleep,
    max_delay: float = MAX_DELAY_SECONDS,
) -> int:
    """Run ``checks`` until all pass, one warning line per failed try, backing off; tries."""
    delay, tries = FIRST_DELAY_SECONDS, 0
    while True:
        tries += 1
        try:
            for check in checks:
                check()
        except Unreachable as exc:
            log.warning("%s; retrying in %.1f s", exc, delay)
            sleep(delay)
            delay = min(max_delay, delay * 2)
            continue
        if tries > 1:
            log.info("every server answers now (after %d tries)", tries)
        return tries


def exit_if_unreachable(checks: Sequence[Check], program: str) -> None:
    """For one-shot commands: print the one line and exit 1 when a server does not answer."""
    try:
        for check in checks:
            check()
    except Unreachable as exc:
        sys.stderr.write(f"{program}: {exc}\n")
        raise SystemExit(1) from None
