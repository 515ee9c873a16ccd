"""relay.py: Streamlit's printed lines into records, a traceback inside its record."""

from __future__ import annotations

import logging

import pytest

from services.dashboard.relay import Grouper, Record

pytestmark = pytest.mark.unit


def records(lines: list[str], plain_level: int = logging.WARNING) -> list[Record]:
    grouper = Grouper(plain_level)
    out = [r for line in lines if (r := grouper.feed(line + "\n")) is not None]
    last = grouper.flush()
    return out + ([last] if last else [])


def test_a_streamlit_log_line_and_its_traceback_are_one_record() -> None:
    found = records(
        [
            "ERROR streamlit.runtime.scriptrunner: Uncaught app exception",
            "Traceback (most recent call last):",
            '  File "app.py", line 3, in <module>',
            "ValueError: bad",
            "INFO streamlit.web.server: Stopping...",
        ]
    )
    assert found == [
        Record(
            "streamlit.runtime.scriptrunner",
            logging.ERROR,
            "Uncaught app exception\nTraceback (most recent call last):\n"
            '  File "app.py", line 3, in <module>\nValueError: bad',
        ),
        Record("streamlit.web.server", logging.INFO, "Stopping..."),
    ]


def test_streamlits_default_format_before_its_config_is_parsed_is_understood() -> None:
    found = records(["2026-12-03 18:40:01.123 DEBUG   streamlit.config: Config parsed"])
    assert found == [Record("streamlit.config", logging.DEBUG, "Config parsed")]


def test_the_banner_is_one_record_without_its_blank_lines_or_indent() -> None:
    banner = ["", "  You can now view your Streamlit app in your browser.", "", "  URL: http://x:1"]
    assert records(banner, logging.INFO) == [
        Record(
            "streamlit",
            logging.INFO,
            "You can now view your Streamlit app in your browser.\nURL: http://x:1",
        )
    ]


def test_a_quiet_stream_ends_the_record_and_the_next_text_starts_another() -> None:
    grouper = Grouper(logging.WARNING)
    assert grouper.feed("app.py:3: FutureWarning: old\n") is None
    assert grouper.flush() == Record("streamlit", logging.WARNING, "app.py:3: FutureWarning: old")
    assert grouper.flush() is None
    assert grouper.feed("  warnings.warn(\n") is None
    assert grouper.flush() == Record("streamlit", logging.WARNING, "warnings.warn(")
