"""`docker compose up` of the whole pipeline on a real engine, used the way an operator uses it.

The tests share one stack and run in file order: healthy stack -> bars in Postgres -> the
dashboard in Chromium -> container hardening -> scaled workers and a backfill -> replay with
Redis and Postgres restarted under it -> `stop` of every service.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from rq import Queue, Worker
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

from marketpipe.queues import LOAD_QUEUE, TRANSFORM_QUEUE
from tests.compose.conftest import Stack, wait_for
from tests.integration.dashboard.test_browser import DevTools, browser  # noqa: F401 (fixture)

APP_SERVICES = ("sandbox", "fetcher", "streamer", "transformer", "loader", "dashboard")
# Stopped in this order, the way `docker compose down` would: consumers before their servers.
STOP_ORDER = ("dashboard", "fetcher", "sandbox", "transformer", "loader", "redis", "postgres")
# Every complete bar's vendor values, in key order: equal digests mean no bar was lost, doubled
# or changed. Derived columns are left out: over overlapping payloads (a tick's 300 bars, a
# backfill's window) the long-window indicators take the context of whichever payload loads
# last, and a job retried after a restart can land after the other (reported, not ours here).
BARS_DIGEST = (
    "SELECT count(*), md5(coalesce(string_agg(concat_ws(',', symbol, interval, bar_time, open,"
    " high, low, close, volume), '|' ORDER BY symbol, interval, bar_time), ''))"
    " FROM marketpipe.bars WHERE is_complete"
)


def pending_jobs(stack: Stack) -> int:
    """Jobs queued, running or waiting for a retry, on both queues; failed jobs fail the test."""
    redis = stack.redis()
    try:
        total = 0
        for name in (TRANSFORM_QUEUE, LOAD_QUEUE):
            queue = Queue(name, connection=redis)
            failed = FailedJobRegistry(queue=queue)
            assert failed.count == 0, (name, failed.get_job_ids())
            total += queue.count + StartedJobRegistry(queue=queue).count
            total += ScheduledJobRegistry(queue=queue).count
        return total
    finally:
        redis.close()


def drained(stack: Stack) -> bool:
    return pending_jobs(stack) == 0


def test_every_service_becomes_healthy_and_migrate_completes(stack: Stack) -> None:
    rows = {c["Service"]: c for c in stack.containers()}
    assert set(rows) == {"postgres", "redis", "migrate", *APP_SERVICES}
    assert rows["migrate"]["State"] == "exited" and rows["migrate"]["ExitCode"] == 0
    for name, row in rows.items():
        if name != "migrate":
            assert row["Health"] == "healthy", (name, row["Status"])


def test_demo_bars_reach_postgres_readable_by_the_reader_role(stack: Stack) -> None:
    def bars() -> int:
        conn = stack.db("marketpipe_reader", stack.env["READER_DB_PASSWORD"])
        try:
            with conn, conn.cursor() as cur:
                cur.execute(
                    "SELECT count(DISTINCT b.symbol) FROM marketpipe.bars b"
                    " JOIN marketpipe.raw_payloads p USING (payload_id) WHERE p.source = 'demo'"
                )
                row = cur.fetchone()
                return int(row[0]) if row else 0
        finally:
            conn.close()

    wait_for(lambda: bars() == 8, "demo bars of all 8 default symbols", deadline=240)


def test_dashboard_page_shows_the_demo_banner(
    stack: Stack,
    browser: DevTools,  # noqa: F811
) -> None:
    url = f"http://127.0.0.1:{stack.ports['DASHBOARD_PORT']}/"
    browser.call("Page.navigate", url=url)

    seen = [""]

    def page_text() -> str | None:
        text = browser.evaluate("document.body ? document.body.innerText : ''")
        seen[0] = text or ""
        assert "Traceback" not in seen[0], seen[0]
        return text if text and "DEMO DATA" in text else None

    text = wait_for(page_text, "the DEMO DATA banner on the dashboard", deadline=120)
    assert "Deploy" not in text  # toolbarMode viewer (.streamlit/config.toml)
    logs = stack.compose("logs", "--no-color", "dashboard")
    assert f"URL: http://127.0.0.1:{stack.ports['DASHBOARD_PORT']}" in logs
    assert "External URL" not in logs and "Network URL" not in logs


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_containers_run_unprivileged_on_read_only_code(stack: Stack, service: str) -> None:
    assert stack.exec(service, "id", "-u").strip() not in ("", "0")
    # The installed package and the services' code: neither may be written by the service.
    probe = (
        "import pathlib, marketpipe, services\n"
        "for module in (marketpipe, services):\n"
        "    folder = pathlib.Path(module.__file__).parent\n"
        "    try:\n"
        "        (folder / 'probe').write_text('x')\n"
        "        print('WRITABLE', folder)\n"
        "    except OSError:\n"
        "        print('refused', folder)\n"
    )
    lines = stack.exec(service, "python", "-c", probe).splitlines()
    assert [line.split()[0] for line in lines] == ["refused", "refused"], lines
    # One copy of the shared package, the installed one; the services run from /app.
    assert "-packages/marketpipe" in lines[0] and lines[1].endswith("/app/services"), lines
    # No generic `services` package in site-packages: away from /app it is not importable.
    spec = stack.compose(
        "exec",
        "-T",
        "-w",
        "/",
        service,
        "python",
        "-c",
        "import importlib.util; print(importlib.util.find_spec('services'))",
    )
    assert spec.strip() == "None"


def test_scaled_workers_share_a_backfill_without_failures(stack: Stack) -> None:
    stack.compose(
        "up",
        "--detach",
        "--wait",
        "--no-recreate",
        "--scale",
        "transformer=3",
        "--scale",
        "loader=2",
    )
    assert len(stack.containers("transformer")) == 3 and len(stack.containers("loader")) == 2
    before = stack.query("SELECT count(*) FROM marketpipe.raw_payloads")[0][0]
    since = (datetime.now(UTC).date() - timedelta(days=120)).isoformat()
    stack.exec("fetcher", "python", "-m", "services.fetcher", "backfill", "--since", since)
    wait_for(lambda: drained(stack), "the backfill's jobs to drain", deadline=240)
    after = stack.query("SELECT count(*) FROM marketpipe.raw_payloads")[0][0]
    assert after > before
    oldest = stack.query("SELECT min(bar_time) FROM marketpipe.bars WHERE symbol = 'AAPL'")[0][0]
    assert oldest.date() <= date.fromisoformat(since) + timedelta(days=5)
    redis = stack.redis()
    try:
        hosts = {
            w.hostname
            for w in Worker.all(queue=Queue(TRANSFORM_QUEUE, connection=redis))
            if w.successful_job_count > 0
        }
    finally:
        redis.close()
    assert len(hosts) >= 2, hosts  # the work spread over more than one transformer container


def test_replay_through_redis_and_postgres_restarts_changes_no_row(stack: Stack) -> None:
    digest = stack.query(BARS_DIGEST)[0]
    payloads = stack.query("SELECT count(*) FROM marketpipe.raw_payloads")[0][0]
    since = (datetime.now(UTC) - timedelta(days=2)).date().isoformat()
    until = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    for restarted in ("redis", "postgres"):
        out = stack.exec(
            "loader", "python", "-m", "services.ops", "replay", "--since", since, "--until", until
        )
        assert "replaying" in out and " 0 payload" not in out, out
        stack.compose("restart", restarted)  # while the replayed jobs are being worked
        stack.compose(
            "up",
            "--detach",
            "--wait",
            "--no-recreate",
            "--scale",
            "transformer=3",
            "--scale",
            "loader=2",
        )
        wait_for(lambda: drained(stack), f"the replay to drain after restarting {restarted}")
        assert stack.query(BARS_DIGEST)[0] == digest, f"rows changed across a {restarted} restart"
    assert stack.query("SELECT count(*) FROM marketpipe.raw_payloads")[0][0] == payloads
    # RQ's own scheduler died at a lost connection, logging a traceback each time.
    workers_log = stack.compose("logs", "--no-color", "transformer", "loader")
    assert "raised an exception" not in workers_log


def _finished_at(stamp: str) -> datetime:
    """Docker's RFC 3339 time with nanoseconds, as a datetime (microseconds)."""
    head, _, fraction = stamp.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{head}.{(fraction + '000000')[:6]}+00:00")


def test_every_service_stops_on_sigterm_within_two_seconds(stack: Stack) -> None:
    report = []
    for service in STOP_ORDER:
        names = [c["Name"] for c in stack.containers(service) if c["State"] == "running"]
        assert names, f"{service} is not running"
        asked = datetime.now(UTC)
        stack.compose("stop", "--timeout", "10", service)
        for name in names:
            state = stack.inspect(name)["State"]
            seconds = (_finished_at(state["FinishedAt"]) - asked).total_seconds()
            report.append((name, seconds, state["ExitCode"]))
    print("\n" + "\n".join(f"  stop {n}: {s:.2f} s, exit {c}" for n, s, c in report))
    for name, seconds, code in report:
        assert code in (0, 143), f"{name} exited {code} (137: killed after ignoring SIGTERM)"
        assert seconds < 2.0, f"{name} took {seconds:.1f} s to stop"
