"""The running dashboard in headless Chromium, at 1440, 800 and 390 px (a phone).

Starts ``streamlit run`` on a free port against the loaded test database, drives Debian's
Chromium over the DevTools protocol (the ``websockets`` client Streamlit already depends on),
waits by polling the DOM against a deadline, and saves a screenshot of every page at every
width (and the overview in the dark theme) under artifacts/screenshots/. Each page must draw
without an exception box, without a metric cut short (text wider than its box, or "…"),
without two Plotly labels (titles, legend, annotations, tick labels of one axis) overlapping or
leaving the figure, without a table cut off at desktop width, and without the page growing
wider than the window. docs/dashboard-checks.md maps each point the issue saw on screen to its
check. The time from
navigation to drawn charts is recorded per page and width in artifacts/screenshots/timings.json,
after one untimed page load that warms the server (its first run imports the libraries).
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from websockets.sync.client import ClientConnection, connect

from marketpipe.settings import Settings
from tests.integration.conftest import REPO_ROOT, settings_env
from tests.support.processes import die_with_test_run

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = REPO_ROOT / "artifacts" / "screenshots"
DEADLINE_SECONDS = 90.0
WIDTHS = (1440, 800, 390)
PHONE_WIDTH = 480  # at or below: emulate a phone (touch, mobile viewport)
HEIGHT = 1000
WIDE_TABLES_FROM = 1400  # a window at least this wide shows every table whole
TIMINGS: dict[str, float] = {}
# A prepared large database instead of the loaded test one: `bench/bench_dashboard.py --browser`
# fills 10 M bars and runs this test against it, to record the pages' time to drawn charts there.
LARGE_DATABASE = os.environ.get("BROWSER_DATABASE_URL")
TIMINGS_FILE = "timings-large.json" if LARGE_DATABASE else "timings.json"
# view -> the Plotly charts and the tables it must draw before it counts as drawn.
PAGES = {"overview": (2, 1), "instrument": (1, 0), "compare": (3, 1), "health": (0, 3)}
T = TypeVar("T")


def wait_for(
    probe: Callable[[], T | None],
    what: str | Callable[[], str],
    deadline: float = DEADLINE_SECONDS,
) -> T:
    """Poll ``probe`` until it returns something truthy, or fail naming ``what``."""
    give_up = time.monotonic() + deadline
    while time.monotonic() < give_up:
        result = probe()
        if result:
            return result
        time.sleep(0.1)  # polling interval, not synchronisation: the deadline decides
    pytest.fail(f"gave up after {deadline:.0f} s waiting for {what() if callable(what) else what}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # our own local server
            return bool(response.status == 200)
    except OSError:
        return False


class DevTools:
    """The few DevTools protocol calls the test needs, over one page's websocket."""

    def __init__(self, websocket: ClientConnection) -> None:
        self.websocket = websocket
        self.ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self.ids)
        self.websocket.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.websocket.recv(timeout=DEADLINE_SECONDS))
            if message.get("id") == call_id:  # events in between are not ours to handle
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message["result"]
                return result

    def evaluate(self, expression: str) -> Any:
        answer = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return answer["result"].get("value")


@pytest.fixture(scope="module")
def dashboard_settings(request: pytest.FixtureRequest, base_settings: Settings) -> Settings:
    """The pipeline-loaded test database, or the prepared large one of BROWSER_DATABASE_URL."""
    if LARGE_DATABASE:
        return base_settings.model_copy(update={"database_url": LARGE_DATABASE})
    loaded: Settings = request.getfixturevalue("loaded_settings")
    return loaded


@pytest.fixture(scope="module")
def dashboard_url(dashboard_settings: Settings) -> Iterator[str]:
    port = free_port()
    env = settings_env(dashboard_settings, DASHBOARD_REFRESH_SECONDS=60)
    env.pop("TWELVE_DATA_API_KEY", None)
    command = [sys.executable, "-m", "streamlit", "run", "services/dashboard/app.py"]
    options = [
        f"--server.port={port}",
        "--server.address=127.0.0.1",
        "--server.headless=true",
        "--server.fileWatcherType=none",
        "--browser.gatherUsageStats=false",
    ]
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(
            [*command, *options],
            preexec_fn=die_with_test_run,
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=log,
        )
        try:

            def healthy() -> bool:
                if server.poll() is not None:
                    log.seek(0)
                    pytest.fail(f"streamlit exited {server.returncode}:\n{log.read().decode()}")
                return http_ok(f"http://127.0.0.1:{port}/_stcore/health")

            wait_for(healthy, "the dashboard's health endpoint")
            yield f"http://127.0.0.1:{port}/"
        finally:
            server.terminate()
            server.wait(timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator[DevTools]:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser test needs Debian's chromium package."
            " Install it with `make browser-deps` (as root), which `make test` runs first.",
            pytrace=False,
        )
    with tempfile.TemporaryDirectory(prefix="marketpipe-chromium-") as profile:
        flags = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            f"--window-size={WIDTHS[0]},{HEIGHT}",
            "about:blank",
        ]
        chromium = subprocess.Popen(
            [CHROMIUM, *flags],
            preexec_fn=die_with_test_run,
            start_new_session=True,  # its renderers and helpers share one process group
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            active_port = Path(profile) / "DevToolsActivePort"
            wait_for(
                lambda: active_port.exists() and active_port.read_text().strip(),
                "Chromium's DevTools port",
            )
            port = active_port.read_text().split()[0]

            def page_target() -> str | None:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as response:
                    targets = json.load(response)
                pages = [t for t in targets if t.get("type") == "page"]
                return pages[0]["webSocketDebuggerUrl"] if pages else None

            ws_url = wait_for(page_target, "a Chromium page target")
            with connect(ws_url, max_size=None, open_timeout=DEADLINE_SECONDS) as websocket:
                devtools = DevTools(websocket)
                devtools.call("Page.enable")
                yield devtools
        finally:
            stop_process_group(chromium)


def stop_process_group(leader: subprocess.Popen[bytes]) -> None:
    """SIGTERM a group and wait until none of it is left (they write to the profile to the end)."""
    # Stopping only the browser process left helpers writing under the profile while
    # TemporaryDirectory removed it: "Directory not empty: 'Default'" failed a CI run.
    os.killpg(leader.pid, signal.SIGTERM)
    leader.wait(timeout=DEADLINE_SECONDS)

    def group_gone() -> bool:
        # A zombie nobody reaps (PID 1 in a container may not) writes nothing: it does not count.
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # exited while we looked
            state, group = fields[0], int(fields[2])
            if group == leader.pid and state != "Z":
                return False
        return True

    wait_for(group_gone, "Chromium's helper processes to exit")


# True once the run finished and everything the page should draw is drawn; or an error text.
PAGE_STATE_JS = """
(() => {
  const errors = [...document.querySelectorAll('[data-testid="stException"]')];
  if (errors.length) return {error: errors.map(e => e.innerText).join('\\n')};
  const text = document.body.innerText;
  const plots = [...document.querySelectorAll('.js-plotly-plot')];
  // drawn = at least one trace painted (bars, lines, candles, or a heatmap's image)
  const drawn = plots.filter(p => p.querySelector('.main-svg .trace, .main-svg .hm')).length;
  const tables = document.querySelectorAll('[data-testid="stDataFrame"]').length;
  const running = document.querySelector('[data-testid="stStatusWidget"]') !== null
    && /Running/.test(document.querySelector('[data-testid="stStatusWidget"]').innerText);
  return {updated: text.includes('Last updated'), drawn, tables, running,
          containers: document.querySelectorAll('[data-testid="stPlotlyChart"]').length,
          plotly: plots.length, svgs: document.querySelectorAll('.main-svg').length,
          height: document.querySelector('[data-testid="stMain"]')?.scrollHeight || 0};
})()
"""


# Everything on the page that could be cut or collide: metrics whose text is wider than their
# box (CSS ellipsis leaves the text whole, so widths tell), Plotly labels that overlap each other
# or leave their figure, a heatmap squeezed thin, and a page wider than the window.
LAYOUT_FAULTS_JS = """
(() => {
  const WIDE_TABLES_FROM = {wide_tables_from};
  const faults = [];
  const box = e => e.getBoundingClientRect();
  const overlap = (a, b) => a.width > 0 && b.width > 0 && a.left < b.right - 1
    && b.left < a.right - 1 && a.top < b.bottom - 1 && b.top < a.bottom - 1;
  // every text of a metric card (label, value, delta and its description), not its sparkline
  document.querySelectorAll('[data-testid="stMetric"]').forEach(m => {
    const texts = [m, ...m.querySelectorAll('*')].filter(e => !e.closest('svg, canvas')
      && !e.querySelector('svg, canvas'));
    const cut = texts.filter(e => e.scrollWidth > e.clientWidth + 1);
    if (cut.length || m.innerText.includes('…'))
      faults.push('metric cut short: ' + (cut[0] || m).innerText.replace(/\n/g, ' | '));
  });
  // a row of buttons or pills that scrolls sideways hides some of them
  document.querySelectorAll('[data-testid="stButtonGroup"]').forEach(g => {
    if (g.scrollWidth > g.clientWidth + 1) faults.push('controls cut off: ' + g.innerText);
  });
  // at desktop width every table shows all its columns (the freshness table and the fetch
  // cycles' "Message" were seen cut off at 1440 px); narrower windows may scroll a table
  if (window.innerWidth >= WIDE_TABLES_FROM)
    document.querySelectorAll('[data-testid="stDataFrame"]').forEach(table => {
      const scroller = table.querySelector('.dvn-scroller');
      if (scroller && scroller.scrollWidth > scroller.clientWidth + 1)
        faults.push(`table cut off by ${scroller.scrollWidth - scroller.clientWidth}px: `
          + (table.closest('[data-testid="stVerticalBlock"]')?.querySelector('h3')?.innerText
             || table.innerText.slice(0, 40)));
    });
  document.querySelectorAll('.js-plotly-plot').forEach((plot, index) => {
    const frame = box(plot);
    const labels = [...plot.querySelectorAll(
      '.infolayer .gtitle, .infolayer [class*="title"] text, .legend .bg, .annotation'
    )].filter(e => box(e).width > 0).map(e => [e, box(e)]);
    for (let i = 0; i < labels.length; i++) {
      const [e, r] = labels[i];
      if (r.left < frame.left - 1 || r.right > frame.right + 1 || r.top < frame.top - 1
          || r.bottom > frame.bottom + 1)
        faults.push(`plot ${index}: "${e.textContent}" leaves the figure`);
      for (let j = i + 1; j < labels.length; j++) {
        if (labels[i][0].contains(labels[j][0]) || labels[j][0].contains(labels[i][0])) continue;
        if (overlap(r, labels[j][1]))
          faults.push(`plot ${index}: "${e.textContent}" overlaps "${labels[j][0].textContent}"`);
      }
    }
    plot.querySelectorAll('.xaxislayer-above, .yaxislayer-above').forEach(axis => {
      const ticks = [...axis.querySelectorAll('.xtick text, .ytick text')].map(box)
        .filter(r => r.width > 0);
      for (let i = 1; i < ticks.length; i++)
        for (let j = 0; j < i; j++)
          if (overlap(ticks[i], ticks[j])) {
            faults.push(`plot ${index}: tick labels overlap`);
            return;
          }
    });
    const heatmap = plot.querySelector('.hm image');
    if (heatmap && box(heatmap).width < Math.min(200, 0.5 * frame.width))
      faults.push(`plot ${index}: heatmap squeezed to ${box(heatmap).width}px`);
  });
  if (document.querySelector('.modebar'))
    faults.push('a Plotly toolbar is drawn (it covers titles and legends)');
  if (document.querySelector('[data-testid="stAppDeployButton"]')
      || /\bDeploy\b/.test(document.querySelector('header')?.innerText || ''))
    faults.push('the Deploy button is shown');
  const wide = document.documentElement.scrollWidth - window.innerWidth;
  if (wide > 1) faults.push(`page ${wide}px wider than the window`);
  return faults;
})()
""".replace("{wide_tables_from}", str(WIDE_TABLES_FROM))


def set_width(browser: DevTools, width: int, height: int = HEIGHT) -> None:
    browser.call(
        "Emulation.setDeviceMetricsOverride",
        width=width,
        height=height,
        deviceScaleFactor=1,
        mobile=width <= PHONE_WIDTH,
    )


def open_page(browser: DevTools, url: str, expected: tuple[int, int]) -> dict[str, Any]:
    charts, tables = expected
    started = time.monotonic()
    browser.call("Page.navigate", url=url)

    last: dict[str, Any] = {}

    def ready() -> dict[str, Any] | None:
        state: dict[str, Any] | None = browser.evaluate(PAGE_STATE_JS)
        last.update(state or {})
        if state and "error" in state:
            pytest.fail(f"Streamlit exception on {url}:\n{state['error']}")
        if not state or not state["updated"] or state["running"]:
            return None
        if state["drawn"] < charts or state["tables"] < tables:
            return None
        return state

    state = wait_for(
        ready, lambda: f"{url} to draw {charts} chart(s), {tables} table(s); last seen {last}"
    )
    state["seconds_to_drawn"] = time.monotonic() - started
    return state


def screenshot(browser: DevTools, name: str, width: int, height: int) -> Path:
    clip = {"x": 0, "y": 0, "width": width, "height": max(height, 600), "scale": 1}
    set_width(browser, width, clip["height"])
    # wait for the relayout at the new size: two animation frames after the resize
    browser.call(
        "Runtime.evaluate",
        expression="new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))",
        awaitPromise=True,
    )
    shot = browser.call("Page.captureScreenshot", format="png", clip=clip)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


@pytest.fixture(scope="module")
def warm_dashboard(browser: DevTools, dashboard_url: str) -> str:
    """The server after one separate page load: its first script run imports pandas, Plotly
    and SQLAlchemy (~3 s here), a one-off that is not a page's time. The health page warms
    it: none of the timed pages' queries are cached by it."""
    set_width(browser, WIDTHS[0])
    open_page(browser, f"{dashboard_url}?view=health", PAGES["health"])
    print("warm-up: one health page load before the timed pages (server imports, not timed)")
    return dashboard_url


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("view", PAGES)
def test_page_draws_whole_at_every_width(
    browser: DevTools, warm_dashboard: str, view: str, width: int
) -> None:
    dashboard_url = warm_dashboard
    browser.call(
        "Emulation.setEmulatedMedia", features=[{"name": "prefers-color-scheme", "value": "light"}]
    )
    set_width(browser, width)
    state = open_page(browser, f"{dashboard_url}?view={view}&window=5d", PAGES[view])
    record_timing(f"{view}-{width}", state["seconds_to_drawn"])
    faults = browser.evaluate(LAYOUT_FAULTS_JS)
    path = screenshot(browser, f"{view}-{width}", width, state["height"])
    assert not faults, (path, faults)
    png = path.read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000, (path, len(png))
    # the URL keeps the view (shareable): Streamlit rewrote it with every choice
    assert f"view={view}" in browser.evaluate("window.location.search")


@pytest.mark.parametrize("width", WIDTHS)
def test_one_day_chart_keeps_its_time_labels_apart(
    browser: DevTools, dashboard_url: str, width: int
) -> None:
    """The 1-day window (hourly candles of one session) at every width: few, horizontal,
    unclipped time labels (rotated, bunched and clipped ones were seen)."""
    set_width(browser, width)
    url = f"{dashboard_url}?view=instrument&symbol=AAPL&window=1d"
    state = open_page(browser, url, PAGES["instrument"])
    faults = browser.evaluate(LAYOUT_FAULTS_JS)
    path = screenshot(browser, f"instrument-1d-{width}", width, state["height"])
    assert not faults, (path, faults)
    labels = browser.evaluate(
        "[...document.querySelectorAll('.js-plotly-plot .xtick text')]"
        ".map(t => t.getAttribute('transform') || '').filter(t => t.includes('rotate'))"
    )
    assert labels == [], labels  # no rotated time label


def record_timing(name: str, seconds: float) -> None:
    """Time from navigation to drawn charts, printed and kept beside the screenshots."""
    TIMINGS[name] = round(seconds, 3)
    print(f"time to drawn {name}: {seconds:.2f} s")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    (SCREENSHOTS / TIMINGS_FILE).write_text(json.dumps(TIMINGS, indent=1, sort_keys=True))


def test_dark_theme_overview(browser: DevTools, dashboard_url: str) -> None:
    features = [{"name": "prefers-color-scheme", "value": "dark"}]
    browser.call("Emulation.setEmulatedMedia", features=features)
    set_width(browser, WIDTHS[0])
    state = open_page(browser, f"{dashboard_url}?view=overview&window=5d", PAGES["overview"])
    background = browser.evaluate(
        "getComputedStyle(document.querySelector('[data-testid=\"stApp\"]')).backgroundColor"
    )
    channels = [int(c) for c in background[background.index("(") + 1 : -1].split(",")[:3]]
    assert max(channels) < 80, background  # a dark background, not the light theme's white
    screenshot(browser, "overview-dark", WIDTHS[0], state["height"])
