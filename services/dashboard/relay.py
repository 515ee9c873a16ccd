"""Streamlit's own output as the stack's log records, so LOG_FORMAT=json holds for the dashboard.

Streamlit logs through handlers of its own (``streamlit.logger``: one per logger, propagation
off, made again whenever its config is parsed) and prints its start-up banner with click, so
neither follows marketpipe/logs.py. Under LOG_FORMAT=json the dashboard's parent process reads
the server's stdout and stderr instead and re-emits what it prints through the root handler:
a Streamlit log line (``LEVEL logger: message``, the format the parent asks for) and the lines
after it (a traceback) as one record of that logger and level; any other text (the banner, a
Python warning) as one record per burst, INFO from stdout and WARNING from stderr.
"""

from __future__ import annotations

import logging
import queue
import re
import textwrap
import threading
from dataclasses import dataclass, field
from typing import IO, Final

# What the parent sets as Streamlit's logger.messageFormat; before its config is parsed
# Streamlit uses its default, "%(asctime)s %(levelname) -7s %(name)s: %(message)s".
STREAMLIT_FORMAT: Final = "%(levelname)s %(name)s: %(message)s"
_HEADER: Final = re.compile(
    r"^(?:\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[.,]\d+ )?"
    r"(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL) +(?P<logger>[\w.]+): (?P<message>.*)$"
)
LEVELS: Final = logging.getLevelNamesMapping()
PLAIN_LOGGER: Final = "streamlit"
# A burst (a record and its traceback, the banner) ends when its stream is quiet this long.
IDLE_SECONDS: Final = 0.2


@dataclass(frozen=True)
class Record:
    logger: str
    level: int
    message: str


@dataclass
class Grouper:
    """Lines of one stream into records (pure: the caller says when the stream fell quiet)."""

    plain_level: int
    _logger: str = ""
    _level: int = logging.INFO
    _lines: list[str] = field(default_factory=list)

    def feed(self, line: str) -> Record | None:
        """Take one line; the record it ends (a new Streamlit log line ends the one before)."""
        line = line.rstrip("\r\n")
        header = _HEADER.match(line)
        if header:
            done = self.flush()
            self._logger, self._level = header["logger"], LEVELS[header["level"]]
            self._lines = [header["message"]]
            return done
        if not line.strip():
            return None  # the banner's blank lines
        if not self._lines:
            self._logger, self._level = PLAIN_LOGGER, self.plain_level
        self._lines.append(line)
        return None

    def flush(self) -> Record | None:
        """The record being gathered, if any (its stream fell quiet, or ended)."""
        if not self._lines:
            return None
        # Without the banner's indent; a traceback's first line keeps the rest's.
        done = Record(self._logger, self._level, textwrap.dedent("\n".join(self._lines)))
        self._lines = []
        return done


def emit(record: Record | None) -> None:
    if record is not None:
        logging.getLogger(record.logger).log(record.level, record.message)


class Relay:
    """Re-emit a child's stream as log records until it ends: a reader and an emitter thread."""

    def __init__(self, stream: IO[bytes], plain_level: int) -> None:
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._grouper = Grouper(plain_level)
        self._threads = [
            threading.Thread(target=self._read, args=(stream,), daemon=True),
            threading.Thread(target=self._emit, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        for raw in stream:
            self._lines.put(raw.decode("utf-8", "replace"))
        self._lines.put(None)

    def _emit(self) -> None:
        while True:
            try:
                line = self._lines.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                emit(self._grouper.flush())
                continue
            if line is None:
                emit(self._grouper.flush())
                return
            emit(self._grouper.feed(line))

    def join(self, timeout: float) -> None:
        """Until the stream ended and its last record is out (the child has exited)."""
        for thread in self._threads:
            thread.join(timeout)
