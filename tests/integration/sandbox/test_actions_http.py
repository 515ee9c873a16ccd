"""Corporate actions over HTTP: adjust=splits / none, /splits, the admin calls, correct_bar;
and on the WebSocket stream, which trades at the split price after a split."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta

import pytest
import requests
from websockets.sync.client import connect

from services.sandbox.app import SandboxServer
from tests.integration.sandbox.conftest import API_KEY, MARKET_OPEN_NOW


def get(http: requests.Session, sandbox: SandboxServer, path: str, **params: object) -> dict:
    params.setdefault("apikey", API_KEY)
    response = http.get(f"{sandbox.url}/{path}", params=params, timeout=10)
    body: dict = response.json()
    return body


def closes(body: dict) -> dict[str, float]:
    return {v["datetime"]: float(v["close"]) for v in body["values"]}


def test_a_split_adjusts_all_history_by_default_and_none_gives_raw_prices(
    start_sandbox: Callable[..., SandboxServer], http: requests.Session
) -> None:
    # The fixture's clock is Tuesday 2026-03-10 15:47 New York; the split is on Thursday.
    sandbox = start_sandbox(splits="AAPL@2026-03-12=4:1")
    window = {"symbol": "AAPL", "interval": "1h", "outputsize": 40}
    before = closes(get(http, sandbox, "time_series", **window))
    assert get(http, sandbox, "splits", symbol="AAPL")["splits"] == []

    sandbox.clock.advance(2 * 86_400)  # Thursday 15:47: the split has happened
    adjusted = closes(get(http, sandbox, "time_series", **window))
    raw = closes(get(http, sandbox, "time_series", adjust="none", **window))
    old_bars = [t for t in before if t < "2026-03-10 15:30:00"]  # complete then
    for when in old_bars:
        if when in adjusted:
            assert abs(adjusted[when] - before[when] / 4) <= 5e-7  # printed with 6 decimals
            assert raw[when] == before[when]
    new_bars = [t for t in adjusted if t >= "2026-03-12"]
    assert new_bars and all(adjusted[t] == raw[t] for t in new_bars)
    assert all(raw[t] < before[old_bars[-1]] / 3 for t in new_bars)

    body = get(http, sandbox, "splits", symbol="AAPL")
    assert body == {
        "meta": {
            "symbol": "AAPL",
            "name": "Apple Inc",
            "currency": "USD",
            "exchange": "NASDAQ",
            "mic_code": "XNGS",
            "exchange_timezone": "America/New_York",
        },
        "splits": [
            {
                "date": "2026-03-12",
                "description": "4-for-1 split",
                "ratio": 0.25,
                "from_factor": 4.0,
                "to_factor": 1.0,
            }
        ],
    }
    assert get(http, sandbox, "splits", symbol="MSFT")["splits"] == []
    assert get(http, sandbox, "time_series", adjust="bogus", **window)["code"] == 400
    assert get(http, sandbox, "splits", symbol="NOPE")["code"] == 400


def test_admin_adds_and_clears_splits_and_corrections(
    sandbox: SandboxServer, http: requests.Session
) -> None:
    window = {"symbol": "MSFT", "interval": "1h", "outputsize": 10}
    before = get(http, sandbox, "time_series", **window)["values"]
    admin = f"{sandbox.url}/__sandbox"
    made = http.post(
        f"{admin}/splits", json={"symbol": "MSFT", "date": "2026-03-10", "to_factor": 2}, timeout=5
    )
    assert made.status_code == 200, made.text
    halved = get(http, sandbox, "time_series", **window)["values"]
    # Today's bars are raw prices halved to the cent, earlier ones halved exactly.
    for now, was in zip(halved, before, strict=True):
        exact = not now["datetime"].startswith("2026-03-10")
        assert abs(float(now["close"]) - float(was["close"]) / 2) <= (5e-7 if exact else 0.006)
    assert http.post(f"{admin}/splits", json={"symbol": "MSFT"}, timeout=5).status_code == 400

    http.delete(f"{admin}/actions", timeout=5)
    assert get(http, sandbox, "time_series", **window)["values"] == before
    bar_time = "2026-03-10 17:30:00+00:00"  # 13:30 New York
    fixed = http.post(
        f"{admin}/corrections",
        json={"symbol": "MSFT", "bar_time": bar_time, "factor": 1.02},
        timeout=5,
    )
    assert fixed.status_code == 200, fixed.text
    after = get(http, sandbox, "time_series", **window)["values"]
    differing = [(b, a) for b, a in zip(before, after, strict=True) if b != a]
    assert [b["datetime"] for b, _ in differing] == ["2026-03-10 13:30:00"]
    assert float(differing[0][1]["close"]) == round(float(differing[0][0]["close"]) * 1.02, 6)
    listed = http.get(f"{admin}/actions", timeout=5).json()
    assert [c["bar_time"] for c in listed["corrections"]] == ["2026-03-10T17:30:00+00:00"]


def test_the_correct_bar_fault_fixes_one_bar_for_good(
    sandbox: SandboxServer, http: requests.Session
) -> None:
    window = {"symbol": "NVDA", "interval": "1h", "outputsize": 30}
    before = get(http, sandbox, "time_series", **window)["values"]
    sandbox.faults.script("correct_bar")
    during = get(http, sandbox, "time_series", **window)["values"]
    later = get(http, sandbox, "time_series", **window)["values"]
    changed = [i for i, (b, d) in enumerate(zip(before, during, strict=True)) if b != d]
    assert len(changed) == 1
    assert later == during  # the vendor's fix stays


def live_prices(sandbox: SandboxServer, symbol: str) -> list[dict]:
    """The price events the stream sends for ``symbol`` over the next few API seconds."""
    with connect(f"{sandbox.stream_url}?apikey={API_KEY}", open_timeout=10) as ws:
        ws.send(json.dumps({"action": "subscribe", "params": {"symbols": symbol}}))
        assert json.loads(ws.recv(timeout=10))["status"] == "ok"
        sandbox.clock.advance(5)
        events = [json.loads(ws.recv(timeout=10))]
        while events[-1]["timestamp"] < int(sandbox.clock.now().timestamp()):
            events.append(json.loads(ws.recv(timeout=10)))
    return events


def test_the_stream_trades_at_the_split_price_after_a_split(
    start_sandbox: Callable[..., SandboxServer],
) -> None:
    thursday = (MARKET_OPEN_NOW + timedelta(days=2)).isoformat()  # after the ex-date
    split = start_sandbox(splits="AAPL@2026-03-12=4:1", clock_start=thursday)
    unsplit = start_sandbox(clock_start=thursday)
    after, model = live_prices(split, "AAPL"), live_prices(unsplit, "AAPL")
    pairs = {e["timestamp"]: e for e in model}
    common = [(e, pairs[e["timestamp"]]) for e in after if e["timestamp"] in pairs]
    assert common
    for ours, theirs in common:
        assert ours["price"] == pytest.approx(theirs["price"] / 4, abs=0.006)
        assert ours.get("day_volume") == (
            None if theirs.get("day_volume") is None else theirs["day_volume"] * 4
        )
    # Before the ex-date nothing changes.
    early = start_sandbox(splits="AAPL@2026-03-12=4:1")
    plain = start_sandbox()
    before = {e["timestamp"]: e["price"] for e in live_prices(early, "AAPL")}
    assert before and before == {e["timestamp"]: e["price"] for e in live_prices(plain, "AAPL")}
