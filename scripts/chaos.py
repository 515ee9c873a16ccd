"""`make chaos`: run the chaos tests (crashes, outages) and print one table of their results.

Every chaos test appends its line (faults injected, jobs run, rows expected / found, lost,
duplicated) to the report file, `.chaos/results.jsonl`; this script starts that file empty, runs
pytest on the chaos and reliability tests, prints the table and fails unless pytest passed with
0 lost and 0 duplicated rows everywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# In the repo (git-ignored), not /tmp: the last run's results stay where the README points.
REPORT = REPO_ROOT / ".chaos" / "results.jsonl"
COLUMNS = ("scenario", "faults", "jobs", "rows_expected", "rows_found", "lost", "duplicated")
HEADERS = (
    "scenario",
    "faults injected",
    "jobs run",
    "rows expected",
    "rows found",
    "lost",
    "duplicated",
)


def table(lines: list[dict[str, object]]) -> str:
    """A Markdown table (it goes into the README as it is printed)."""
    rows = [HEADERS, *[tuple(str(line[c]) for c in COLUMNS) for line in lines]]
    totals = ("**total**", *(str(sum(int(line[c]) for line in lines)) for c in COLUMNS[1:]))  # type: ignore[call-overload]
    rows.append(totals)
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    out = []
    for n, row in enumerate(rows):
        out.append(
            "| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |"
        )
        if n == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def main() -> int:
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text("")
    env = dict(os.environ, CHAOS_REPORT=str(REPORT))
    tests = ["tests/chaos", "tests/integration/reliability"]
    done = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", *tests, "-p", "no:cacheprovider"),
            # Workers' logs of a failed test stay for the post-mortem; the rest is removed.
            *("-o", "tmp_path_retention_policy=failed"),
            *sys.argv[1:],
        ],
        cwd=REPO_ROOT,
        env=env,
        check=False,
    )
    lines = [json.loads(x) for x in REPORT.read_text().splitlines() if x.strip()]
    print("\nchaos results\n")
    print(table(lines) if lines else "(no chaos test recorded a result)")
    clean = bool(lines) and all(line["lost"] == 0 and line["duplicated"] == 0 for line in lines)
    return 0 if done.returncode == 0 and clean else 1


if __name__ == "__main__":
    raise SystemExit(main())
