"""Marks every test by its folder: tests/unit -> unit, tests/integration -> integration, …"""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(item.fspath).relative_to(TESTS_DIR).parts
        if parts and parts[0] in ("unit", "integration", "compose"):
            item.add_marker(parts[0])
