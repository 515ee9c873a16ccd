#!/usr/bin/env bash
# Re-resolve the pinned direct dependencies of pyproject.toml into full lock files.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/runtime"
"$tmp/runtime/bin/pip" install -q --upgrade pip
"$tmp/runtime/bin/pip" install -q .
"$tmp/runtime/bin/pip" freeze --exclude marketpipe > requirements.lock
"$tmp/runtime/bin/pip" install -q ".[dev]"
"$tmp/runtime/bin/pip" freeze --exclude marketpipe > requirements-dev.lock
echo "wrote requirements.lock ($(wc -l < requirements.lock) pins) and requirements-dev.lock ($(wc -l < requirements-dev.lock) pins)"
