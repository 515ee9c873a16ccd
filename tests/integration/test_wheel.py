"""The wheel as pip installs it: `marketpipe-migrate` from a fresh venv, away from the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import psycopg2
import pytest

from marketpipe.migrate import migration_files
from tests.integration.conftest import REPO_ROOT
from tests.support.scratch import scratch_database


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # From a copy of what the Dockerfile's wheel stage copies: no build/ left in the checkout.
    source = tmp_path_factory.mktemp("source")
    shutil.copy(REPO_ROOT / "pyproject.toml", source)
    shutil.copytree(REPO_ROOT / "db" / "init", source / "db" / "init")
    shutil.copytree(REPO_ROOT / "marketpipe", source / "marketpipe", symlinks=True)
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", dist, source],
        check=True,
    )
    (built,) = dist.glob("marketpipe-*.whl")
    return built


@pytest.fixture(scope="module")
def venv_bin(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    lock = REPO_ROOT / "requirements.lock"
    subprocess.run(
        [venv / "bin" / "pip", "install", "--quiet", "-c", lock, wheel], check=True, cwd=venv
    )
    return venv / "bin"


def test_the_wheel_holds_the_shared_package_and_every_migration(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"marketpipe", "marketpipe-0.1.0.dist-info"}
    shipped = sorted(n.rsplit("/", 1)[1] for n in names if n.startswith("marketpipe/migrations/"))
    assert shipped == sorted(p.name for p in (REPO_ROOT / "db" / "init").iterdir())


def test_installed_marketpipe_migrate_builds_a_scratch_database(
    venv_bin: Path, server_urls: tuple[str, str], tmp_path: Path
) -> None:
    env = {"PATH": f"{venv_bin}:{os.environ['PATH']}", "HOME": str(tmp_path)}
    where = subprocess.run(
        [venv_bin / "python", "-c", "import marketpipe; print(marketpipe.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(str(venv_bin.parent)), where  # the installed copy, not the checkout
    with scratch_database(server_urls[0]) as url:
        subprocess.run(
            [venv_bin / "marketpipe-migrate"],
            cwd=tmp_path,
            env=env | {"DATABASE_URL": url},
            check=True,
            timeout=120,
        )
        conn = psycopg2.connect(url)
        try:
            with conn, conn.cursor() as cur:
                cur.execute("SELECT version FROM marketpipe.schema_migrations ORDER BY version")
                versions = [v for (v,) in cur.fetchall()]
                cur.execute("SELECT to_regclass('marketpipe.bars') IS NOT NULL")
                has_bars = cur.fetchone()
        finally:
            conn.close()
    assert versions == [v for v, _ in migration_files()]
    assert has_bars == (True,)
