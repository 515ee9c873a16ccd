"""Throwaway databases and Redis db indexes for tests and benchmarks: never a user's data."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

from psycopg2 import sql
from redis import Redis
from sqlalchemy.engine import make_url

from marketpipe.db import connect

CLAIM_KEY = "marketpipe:scratch-claim"


@contextmanager
def scratch_database(server_url: str, prefix: str = "marketpipe_scratch") -> Iterator[str]:
    """A new empty database on the server of ``server_url``, dropped afterwards whatever happens."""
    server = make_url(server_url)
    name = f"{prefix}_{secrets.token_hex(4)}"
    admin = connect(server.set(database=server.database or "postgres"))
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield server.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.cursor() as cur:
                cur.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
    finally:
        admin.close()


def empty_claimed_redis(client: Redis) -> None:
    """Empty a claimed scratch db but keep the claim, so no other run takes it meanwhile."""
    token = client.get(CLAIM_KEY)
    client.flushdb()
    client.set(CLAIM_KEY, token or b"claimed")


@contextmanager
def scratch_redis(server_url: str) -> Iterator[str]:
    """An empty Redis db index (15 down to 1) claimed for this run, flushed afterwards."""
    base = server_url.rsplit("/", 1)[0] if server_url.count("/") > 2 else server_url
    token = secrets.token_hex(8)
    for index in range(15, 0, -1):
        client = Redis.from_url(f"{base}/{index}")
        if client.dbsize() == 0 and client.set(CLAIM_KEY, token, nx=True):
            try:
                yield f"{base}/{index}"
            finally:
                client.flushdb()
                client.close()
            return
        client.close()
    raise RuntimeError("no empty Redis db index (1-15) to claim")
