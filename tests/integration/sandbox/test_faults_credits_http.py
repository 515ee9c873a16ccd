"""Faults (scripted, random, via admin endpoint or settings) and credits over real HTTP."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
import requests

from services.sandbox.app import SandboxServer
from tests.integration.sandbox.conftest import API_KEY

Start = Callable[..., SandboxServer]
SERIES = {"symbol": "AAPL", "interval": "1h", "outputsize": 12, "apikey": API_KEY}


def series(http: requests.Session, sandbox: SandboxServer, **params: object) -> requests.Response:
    return http.get(f"{sandbox.url}/time_series", params={**SERIES, **params}, timeout=10)


def admin(http: requests.Session, sandbox: SandboxServer, method: str, path: str, **body: object):  # type: ignore[no-untyped-def]
    response = http.request(
        method, f"{sandbox.url}/__sandbox/{path}", json=body or None, timeout=10
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_scripted_server_errors_via_admin_then_recovery(
    sandbox: SandboxServer, http: requests.Session
) -> None:
    rules = admin(http, sandbox, "POST", "faults", fault="server_error", count=2)["rules"]
    assert rules[0]["name"] == "server_error" and rules[0]["remaining"] == 2
    statuses = [series(http, sandbox).status_code for _ in range(3)]
    assert statuses == [500, 500, 200]
    assert admin(http, sandbox, "GET", "faults")["rules"] == []


def test_rate_limit_burst_does_not_touch_the_budget(
    sandbox: SandboxServer, http: requests.Session
) -> None:
    sandbox.faults.script("rate_limit", count=2)
    burst = [series(http, sandbox) for _ in range(2)]
    assert [r.status_code for r in burst] == [429, 429]
    assert (
        burst[0]
        .json()["message"]
        .startswith("You have run out of API credits for the current minute.")
    )
    assert burst[0].headers["Api-Credits-Used"] == "0"
    assert series(http, sandbox).headers["Api-Credits-Used"] == "1"


def test_bad_gateway_is_html(sandbox: SandboxServer, http: requests.Session) -> None:
    sandbox.faults.script("502")
    response = series(http, sandbox)
    assert response.status_code == 502
    assert response.headers["Content-Type"] == "text/html"
    assert "<h1>502 Bad Gateway</h1>" in response.text
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.text)


def test_slow_answer_passes_the_client_timeout(
    start_sandbox: Start, http: requests.Session
) -> None:
    sandbox = start_sandbox(slow_seconds=5.0)
    sandbox.faults.script("slow")
    with pytest.raises(requests.exceptions.ReadTimeout):
        http.get(f"{sandbox.url}/time_series", params=SERIES, timeout=0.3)
    assert series(http, sandbox).status_code == 200


def test_slow_answer_arrives_complete_after_the_delay(
    start_sandbox: Start, http: requests.Session
) -> None:
    sandbox = start_sandbox(slow_seconds=0.3)
    sandbox.faults.script("slow")
    started = time.perf_counter()
    response = series(http, sandbox)
    assert time.perf_counter() - started >= 0.3
    assert response.status_code == 200 and len(response.json()["values"]) == 12


def test_malformed_json(sandbox: SandboxServer, http: requests.Session) -> None:
    sandbox.faults.script("malformed_json")
    response = series(http, sandbox)
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.text)


def test_duplicate_bars_and_gaps(sandbox: SandboxServer, http: requests.Session) -> None:
    clean = [v["datetime"] for v in series(http, sandbox).json()["values"]]
    sandbox.faults.script("duplicate_bars")
    doubled = [v["datetime"] for v in series(http, sandbox).json()["values"]]
    assert len(doubled) > len(clean) and sorted(set(doubled)) == sorted(clean)
    sandbox.faults.script("gaps")
    holed = [v["datetime"] for v in series(http, sandbox).json()["values"]]
    assert 0 < len(holed) < len(clean) and set(holed) < set(clean)
    assert holed[0] == clean[0] and holed[-1] == clean[-1]


def test_unknown_symbol_inside_a_batch_and_empty_values(
    sandbox: SandboxServer, http: requests.Session
) -> None:
    sandbox.faults.script("unknown_symbol")
    body = series(http, sandbox, symbol="AAPL,MSFT,NVDA").json()
    assert [body[s]["status"] for s in ("AAPL", "MSFT", "NVDA")] == ["ok", "ok", "error"]
    assert body["NVDA"]["message"].startswith("**symbol** not found: NVDA")
    sandbox.faults.script("empty_values")
    empty = series(http, sandbox).json()
    assert empty["status"] == "ok" and empty["values"] == [] and empty["meta"]["symbol"] == "AAPL"


def test_faults_scoped_to_an_endpoint(sandbox: SandboxServer, http: requests.Session) -> None:
    admin(http, sandbox, "POST", "faults", spec="server_error:quote")
    assert series(http, sandbox).status_code == 200
    quote = http.get(
        f"{sandbox.url}/quote", params={"symbol": "AAPL", "apikey": API_KEY}, timeout=10
    )
    assert quote.status_code == 500


def test_faults_from_settings_and_seeded_probability(
    start_sandbox: Start, http: requests.Session
) -> None:
    def statuses(sandbox: SandboxServer) -> list[int]:
        return [series(http, sandbox, outputsize=1).status_code for _ in range(30)]

    first = statuses(start_sandbox(faults="bad_gateway,server_error@0.3", fault_seed=11))
    second = statuses(start_sandbox(faults="bad_gateway,server_error@0.3", fault_seed=11))
    assert first == second
    assert first[0] == 502
    assert 3 <= first.count(500) <= 20 and first.count(200) >= 10


def test_admin_clears_faults_and_reports_bad_input(
    sandbox: SandboxServer, http: requests.Session
) -> None:
    sandbox.faults.set_probability("server_error", 1.0)
    assert series(http, sandbox).status_code == 500
    admin(http, sandbox, "DELETE", "faults")
    assert series(http, sandbox).status_code == 200
    bad = http.post(f"{sandbox.url}/__sandbox/faults", json={"fault": "explode"}, timeout=10)
    assert bad.status_code == 400 and "unknown fault" in bad.json()["error"]


def test_admin_token(start_sandbox: Start, http: requests.Session) -> None:
    sandbox = start_sandbox(admin_token="s3cret")
    assert http.get(f"{sandbox.url}/__sandbox/clock", timeout=10).status_code == 403
    allowed = http.get(
        f"{sandbox.url}/__sandbox/clock", headers={"X-Sandbox-Admin-Token": "s3cret"}, timeout=10
    )
    assert allowed.status_code == 200


def test_credits_across_a_minute_boundary_with_the_admin_clock(
    start_sandbox: Start, http: requests.Session
) -> None:
    sandbox = start_sandbox(credits_per_minute=8, clock_start="2026-03-10T19:47:50Z")
    used = [series(http, sandbox).headers["Api-Credits-Used"] for _ in range(8)]
    assert used == [str(n) for n in range(1, 9)]
    refused = series(http, sandbox)
    assert refused.status_code == 429
    assert refused.headers["Api-Credits-Used"] == "9"
    assert refused.headers["Api-Credits-Left"] == "0"
    assert refused.json()["message"] == (
        "You have run out of API credits for the current minute. 9 API credits were used, "
        "with the current limit being 8. Wait for the next minute or consider switching to a "
        "higher tier plan at https://twelvedata.com/pricing"
    )
    clock = admin(http, sandbox, "POST", "clock", advance_seconds=9)
    assert clock["now"].startswith("2026-03-10T19:47:59")
    assert series(http, sandbox).status_code == 429  # still the same minute
    admin(http, sandbox, "POST", "clock", advance_seconds=1)
    fresh = series(http, sandbox, symbol="AAPL,MSFT,NVDA")
    assert fresh.status_code == 200
    assert fresh.headers["Api-Credits-Used"] == "3" and fresh.headers["Api-Credits-Left"] == "5"
    over = series(http, sandbox, symbol=",".join(f"SYN{i:04d}" for i in range(1, 7)))
    assert over.status_code == 429 and "Is_batch" not in over.headers
    assert over.headers["Api-Credits-Used"] == "9" and over.headers["Api-Credits-Request"] == "6"


def test_accelerated_clock_moves_the_credit_minute(
    start_sandbox: Start, http: requests.Session
) -> None:
    sandbox = start_sandbox(credits_per_minute=1, clock_start="2026-03-10T19:47:00Z")
    assert series(http, sandbox).status_code == 200
    assert series(http, sandbox).status_code == 429
    admin(http, sandbox, "POST", "clock", speed=3600, set="2026-03-10T19:47:59Z")
    # At 3600x a real second is an hour of sandbox time: poll, bounded, until the minute turns.
    deadline = time.monotonic() + 5
    while datetime.fromisoformat(admin(http, sandbox, "GET", "clock")["now"]) < datetime(
        2026, 3, 10, 19, 48, tzinfo=UTC
    ):
        assert time.monotonic() < deadline
    assert series(http, sandbox).status_code == 200


def test_per_key_budgets_and_daily_limit(start_sandbox: Start, http: requests.Session) -> None:
    sandbox = start_sandbox(api_keys=f"{API_KEY},small", key_credits="small=2/3")
    assert [series(http, sandbox, apikey="small").status_code for _ in range(3)] == [200, 200, 429]
    admin(http, sandbox, "POST", "clock", advance_seconds=60)
    day_refused = series(http, sandbox, apikey="small")
    assert day_refused.status_code == 429
    assert day_refused.json()["message"].startswith("You have run out of API credits for the day.")
    assert series(http, sandbox).status_code == 200  # other keys are unaffected
    usage = http.get(f"{sandbox.url}/api_usage", params={"apikey": "small"}, timeout=10)
    assert usage.status_code == 429  # /api_usage costs a credit too


def test_the_request_log_names_what_was_asked(
    sandbox: SandboxServer, http: requests.Session
) -> None:
    admin(http, sandbox, "DELETE", "requests")
    series(http, sandbox, symbol="AAPL,BTC/USD", interval="1h", outputsize=26)
    series(http, sandbox, symbol="ETH/USD", interval="1h", outputsize=30, start_date="2026-03-01")
    logged = admin(http, sandbox, "GET", "requests")["requests"]
    assert [(r["symbols"], r["outputsize"], r["start_date"]) for r in logged] == [
        (["AAPL", "BTC/USD"], 26, None),
        (["ETH/USD"], 30, "2026-03-01T00:00:00"),
    ]
    assert admin(http, sandbox, "DELETE", "requests") == {"requests": []}
    assert admin(http, sandbox, "GET", "requests") == {"requests": []}


def test_a_client_gone_before_its_answer_is_one_log_line_not_a_traceback(
    start_sandbox: Start, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """What the server does when writing a (slow) answer finds the client gone."""
    server = start_sandbox()._server
    assert server is not None
    caplog.set_level(logging.INFO, logger="services.sandbox")
    try:
        raise BrokenPipeError(32, "Broken pipe")
    except BrokenPipeError:
        server.handle_error(None, ("127.0.0.1", 40000))
    [line] = [r.getMessage() for r in caplog.records if "left before" in r.getMessage()]
    assert line == "client 127.0.0.1:40000 left before its answer ([Errno 32] Broken pipe)"
    assert not [r for r in caplog.records if r.exc_info]
    assert "Traceback" not in capfd.readouterr().err
