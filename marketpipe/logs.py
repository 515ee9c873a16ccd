"""Process-wide logging of every service: one configuration, secrets redacted in every line.

``LOG_FORMAT=text`` (default) writes ``time LEVEL logger message`` for people;
``LOG_FORMAT=json`` one JSON object per line for log shippers (python-json-logger, a stdlib
``logging.Formatter``, so RQ's, Streamlit's and our records all come out the same way).
RQ's per-job chatter ("Job OK", "Result is kept", "cleaning registries") is INFO in RQ; here
it is demoted to DEBUG by a handler filter, so ``LOG_LEVEL=INFO`` shows marketpipe's own
one-line-per-unit-of-work records and RQ's warnings and errors only.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Final, Literal

from pythonjsonlogger.json import JsonFormatter

LogFormat = Literal["text", "json"]
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s %(message)s"
JSON_FIELDS: Final = ("levelname", "name", "message")
# Loggers whose INFO records are per-job chatter, shown only at DEBUG.
CHATTY_LOGGERS: Final = ("rq",)

# user:password@ in any URL; apikey= / password= in a query string or a libpq conninfo.
_URL_PASSWORD: Final = re.compile(r"(?P<head>[a-z][a-z0-9+.\-]*://[^:/@\s]*:)[^@\s]+@", re.I)
_KEY_VALUE: Final = re.compile(r"(?P<head>\b(?:apikey|password|api_key)=)[^&\s\"']+", re.I)
REDACTED: Final = "***"


def redact(text: str) -> str:
    """``text`` with URL passwords, ``apikey=`` and ``password=`` values replaced by ***."""
    text = _URL_PASSWORD.sub(rf"\g<head>{REDACTED}@", text)
    return _KEY_VALUE.sub(rf"\g<head>{REDACTED}", text)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class RedactingJsonFormatter(JsonFormatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class QuietChatter(logging.Filter):
    """RQ's INFO records become DEBUG: kept at LOG_LEVEL=DEBUG, dropped above."""

    def __init__(self, threshold: int) -> None:
        super().__init__()
        self.threshold = threshold

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and record.name.split(".", 1)[0] in CHATTY_LOGGERS:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return self.threshold <= logging.DEBUG
        return True


def formatter_for(log_format: LogFormat, service: str) -> logging.Formatter:
    if log_format == "json":
        return RedactingJsonFormatter(
            list(JSON_FIELDS),
            rename_fields={"levelname": "level", "name": "logger"},
            static_fields={"service": service},
            timestamp="time",  # ISO 8601, UTC
        )
    return TextFormatter(TEXT_FORMAT)


def setup_logging(level: str, log_format: LogFormat, service: str) -> None:
    """One stderr handler on the root logger for the whole process (replacing any other)."""
    threshold = logging.getLevelName(level)
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(threshold)
    handler.setFormatter(formatter_for(log_format, service))
    handler.addFilter(QuietChatter(threshold))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(threshold)
