"""The Streamlit dashboard driven by AppTest against the real (empty, then loaded) database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from marketpipe.settings import Settings
from tests.integration.conftest import run_pipeline

APP = str(Path(__file__).resolve().parents[2] / "services" / "dashboard" / "app.py")


@pytest.fixture
def app_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_data.clear()
    st.cache_resource.clear()


def open_app(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("REDIS_URL", settings.redis_url)
    monkeypatch.delenv("TWELVE_DATA_API_KEY", raising=False)
    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def test_empty_database_says_how_to_start(
    pipeline_settings: Settings, monkeypatch: pytest.MonkeyPatch, app_env: None
) -> None:
    app = open_app(pipeline_settings, monkeypatch)
    assert any("No data yet" in info.value for info in app.info)
    assert any("DEMO DATA" in warning.value for warning in app.warning)


def test_loaded_database_shows_prices_and_comparison(
    pipeline_settings: Settings, monkeypatch: pytest.MonkeyPatch, app_env: None
) -> None:
    run_pipeline(pipeline_settings)
    app = open_app(pipeline_settings, monkeypatch)
    assert any("DEMO DATA" in warning.value for warning in app.warning)
    assert not app.info
    charts = app.get("plotly_chart")
    assert len(charts) == 2
    assert app.metric[0].label == f"{pipeline_settings.symbols[0]} last close"
    app.sidebar.selectbox[1].select("BTC/USD").run()
    assert not app.exception
    assert app.metric[0].label == "BTC/USD last close"
