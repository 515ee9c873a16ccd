"""logs.py: text or JSON lines, secrets redacted in every line, RQ's per-job chatter at DEBUG."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from marketpipe.logs import redact, setup_logging

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://loader:s3cret@db:5432/pagila", "postgresql://loader:***@db:5432/pagila"),
        ("redis://:s3cret@redis:6379/0", "redis://:***@redis:6379/0"),
        ("GET /time_series?symbol=AAPL&apikey=s3cret", "GET /time_series?symbol=AAPL&apikey=***"),
        ("host=db password=s3cret dbname=x", "host=db password=*** dbname=x"),
        ("redis://redis:6379/0 has no password", "redis://redis:6379/0 has no password"),
    ],
)
def test_redact_hides_every_kind_of_secret_and_nothing_else(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_json_lines_are_one_object_each_with_the_service_and_no_secret(
    capsys: pytest.CaptureFixture[str],
) -> None:
    setup_logging("INFO", "json", "loader")
    log = logging.getLogger("marketpipe.loader")
    log.info("batch %s loaded from %s", "abc", "postgresql://u:s3cret@h/db", extra={"rows": 3})
    try:
        raise ConnectionError("redis://:s3cret@h:6379/0 refused")
    except ConnectionError:
        log.exception("lost")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2  # the traceback travels inside its object, not on lines of its own
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == "batch abc loaded from postgresql://u:***@h/db"
    assert (first["level"], first["logger"], first["service"], first["rows"]) == (
        "INFO",
        "marketpipe.loader",
        "loader",
        3,
    )
    assert first["time"].endswith("+00:00")
    assert "ConnectionError" in second["exc_info"]
    assert "s3cret" not in "\n".join(lines)


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
def test_rq_chatter_shows_only_at_debug_and_its_warnings_always(
    capsys: pytest.CaptureFixture[str], level: str
) -> None:
    setup_logging(level, "text", "transformer")
    rq = logging.getLogger("rq.worker")
    rq.setLevel(level)  # what RQ does with the worker's logging_level
    rq.info("marketpipe-transform: Job OK (abc)")
    rq.warning("Cleaning registries failed")
    logging.getLogger("marketpipe.transformer").info("payload abc AAPL 1h: 3 rows in")
    err = capsys.readouterr().err
    assert ("DEBUG rq.worker marketpipe-transform: Job OK" in err) is (level == "DEBUG")
    assert "Job OK" not in err or level == "DEBUG"
    assert "WARNING rq.worker Cleaning registries failed" in err
    assert "INFO marketpipe.transformer payload abc AAPL 1h" in err
