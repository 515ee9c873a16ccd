"""One home per fact: market rules live in marketpipe/market.py, indicators in indicators.py."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
HOMES = {ROOT / "marketpipe" / "market.py", ROOT / "marketpipe" / "indicators.py"}
SOURCES = sorted(
    path
    for folder in ("marketpipe", "services")
    for path in (ROOT / folder).rglob("*.py")
    if path not in HOMES
)
DASHBOARD = sorted((ROOT / "services" / "dashboard").glob("*.py"))

# Functions and tables that state a market rule; only market.py may define them.
MARKET_RULES = {
    "bars_per_year",
    "bars_per_session",
    "bar_end",
    "bar_end_local",
    "asset_class_of",
    "session_for",
    "regular_session_minutes",
    "INTRADAY_MINUTES",
    "TRADING_DAYS_PER_YEAR",
    "SESSIONS_PER_YEAR",
    "SESSIONS",
    "AssetClass",
    "us_market_holidays",
    "us_early_closes",
}
# What computing an indicator looks like in pandas/numpy.
INDICATOR_CALLS = {"rolling", "ewm", "expanding", "sliding_window_view"}


def defined_names(tree: ast.Module) -> set[str]:
    """Functions and classes anywhere, names assigned at module level."""
    names = {
        node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.ClassDef)
    }
    for node in tree.body:
        if isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_restates_a_market_rule(path: Path) -> None:
    restated = defined_names(ast.parse(path.read_text())) & MARKET_RULES
    assert not restated, f"{path.name} defines {restated}: import them from marketpipe.market"


@pytest.mark.parametrize("path", DASHBOARD, ids=lambda p: p.name)
def test_no_dashboard_module_computes_an_indicator(path: Path) -> None:
    tree = ast.parse(path.read_text())
    calls = {
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    }
    assert not calls & INDICATOR_CALLS, f"{path.name} computes {calls & INDICATOR_CALLS}"
    imported = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert "marketpipe.indicators" not in imported
    assert "with_indicators" not in defined_names(tree)
