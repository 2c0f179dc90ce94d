"""The dashboard at `/` in real headless Chromium, and what the HTTP endpoints reveal."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml  # comes with rapidocr-onnxruntime, one of docsuper's dependencies

from .daemon import Env, stop_daemon, wait_for
from .test_http import free_port, get

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "t0ken-for-the-test"
SCREENSHOT = Path(tempfile.gettempdir()) / "docsuper-dashboard.png"
NAMES = ["intake-scan-0412.pdf", "referral-letter.pdf"]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1280,1800"]


def get_with(url: str, token: str | None = None) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def busy_daemon(env: Env, tmp_path: Path):
    port = free_port()
    env.set(PORT=str(port), DOCSUPER_HTTP_HOST="127.0.0.1", DOCSUPER_HTTP_TOKEN=TOKEN,
            DOCSUPER_WORKERS_CONCURRENCY="2", DOCSUPER_WORKERS_PRELOAD="docsuper", DOCSUPER_WORKERS_SHUTDOWN_GRACE_S="0",
            DOCSUPER_MEMORY_BOX_BUDGET_MB="1000")  # room for two jobs at their cap; near enough to chart
    for i, name in enumerate(NAMES):
        (tmp_path / name).write_bytes(b"not read by the alloc pass")
        env.cli("submit", str(tmp_path / name), "--passes", "alloc", "--option", f"alloc_mb={80 + 40 * i}",
                "--option", "alloc_step_mb=5", "--option", "alloc_step_s=0.05", "--option", "hold_s=60")
    (tmp_path / "water-damaged.pdf").write_bytes(b"x")
    env.cli("submit", str(tmp_path / "water-damaged.pdf"), "--passes", "invalid", "--priority", "5",
            "--option", 'message="page 3 cannot be decoded"')
    daemon = env.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: get(f"{base}/healthz")[0] == 200, what="/healthz")
        yield env, base
    finally:
        stop_daemon(daemon)


@pytest.mark.slow
def test_endpoints_refuse_without_the_token_and_name_no_document(busy_daemon):
    env, base = busy_daemon
    live = wait_for(lambda: (r := get_with(f"{base}/api/live", TOKEN))[0] == 200
                    and len(json.loads(r[1]).get("running", [])) == 2 and json.loads(r[1]), what="two running jobs")
    assert {r["document"] for r in live["running"]} == set(NAMES)
    assert get_with(f"{base}/")[0] == 401 and get_with(f"{base}/api/live")[0] == 401
    assert get_with(f"{base}/api/live", "wrong")[0] == 401
    assert get_with(f"{base}/?token={TOKEN}")[0] == 200
    # The queue's numbers in /metrics come from a snapshot the queue watcher takes every 2 s on its own
    # thread, so one snapshot may show the dead letter from before the second slow job was claimed
    # (the invalid job runs beside one slow job and frees its slot): wait for one showing both.
    def metrics_showing(*series: str) -> str | None:
        text = get(f"{base}/metrics")[1]
        return text if all(s in text for s in series) else None

    metrics = wait_for(lambda: metrics_showing('docsuper_jobs{state="dead"} 1.0', 'docsuper_jobs{state="running"} 2.0'),
                       what="the dead letter and both running jobs in /metrics")
    for series in ("docsuper_oldest_queued_seconds", "docsuper_leases_reclaimed_total 0.0",
                   'docsuper_attempts_total{outcome="oom"} 0.0', 'docsuper_attempts_total{outcome="preempted"} 0.0',
                   'docsuper_attempts_total{outcome="invalid_input"} 1.0'):
        assert series in metrics
    # Every series the example alert rules use is one docsuper exports.
    rules = yaml.safe_load((ROOT / "deploy" / "alerts.yml").read_text())["groups"][0]["rules"]
    used = {name for rule in rules for name in re.findall(r"docsuper_\w+", rule["expr"])}
    assert used and all(re.search(rf"^{name}[{{ ]", metrics, re.M) for name in used), used
    health = get(f"{base}/healthz")[1]
    for name in NAMES + ["water-damaged", "cannot be decoded"]:
        assert name not in metrics and name not in health


@pytest.mark.slow
def test_dashboard_in_headless_chromium(busy_daemon, tmp_path: Path):
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        pytest.skip("chromium and chromium-driver are not installed (scripts/test installs them)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    env, base = busy_daemon
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        browser.get(f"{base}/")
        refused = browser.find_element(By.TAG_NAME, "body").text
        assert "needs its access token" in refused and "intake" not in refused

        browser.get(f"{base}/?token={TOKEN}")
        browser.execute_script("window.loadedOnce = true")

        def rows(table: str) -> list[list[str]]:
            # One script call: the page redraws its tables every second, so element handles go stale.
            return browser.execute_script(
                "return [...document.querySelectorAll(arguments[0] + ' tbody tr')]"
                ".map(tr => [...tr.cells].map(td => td.textContent))", f"#{table}")

        def running_memory() -> dict[str, int] | None:
            seen = {}
            for cells in rows("running"):
                found = re.search(r"(\d+) MB of 450", cells[4]) if len(cells) > 4 else None
                if found and int(found.group(1)) >= 60:
                    seen[cells[1]] = int(found.group(1))
            return seen if set(seen) == set(NAMES) else None

        memory = wait_for(running_memory, timeout=60, what="both running jobs' memory on the page")
        dead = wait_for(lambda: [r for r in rows("dead") if "page 3 cannot be decoded" in r], what="the dead letter")
        assert dead[0][1:3] == ["water-damaged.pdf", "invalid_input"]
        counter = browser.find_element(By.ID, "updated").text
        wait_for(lambda: browser.find_element(By.ID, "updated").text != counter, what="the page to update itself")
        # A few more updates, so the memory chart has some history to draw.
        wait_for(lambda: int(re.search(r"#(\d+)", browser.find_element(By.ID, "updated").text).group(1)) >= 8,
                 timeout=30, what="eight updates")
        assert browser.execute_script("return window.loadedOnce === true")  # no reload happened
        paths = browser.find_elements(By.CSS_SELECTOR, "#chart path")
        assert len(paths) >= 3  # the children together, and one line per running job
        workers = rows("workers")
        assert len(workers) == 1 and workers[0][1] == "2"
        browser.save_screenshot(str(SCREENSHOT))
        print(f"memory on the page: {memory}; screenshot: {SCREENSHOT}")
    finally:
        browser.quit()


def test_the_token_is_a_secret_docsuper_config_never_prints(env: Env):
    env.set(DOCSUPER_HTTP_TOKEN="dashboard-s3cret-9")
    shown = env.cli("config").stdout
    assert "http.token" in shown and "dashboard-s3cret-9" not in shown


def test_without_a_token_a_request_forwarded_by_a_proxy_is_refused(env: Env):
    """A reverse proxy on the same host makes every client 127.0.0.1; its headers give it away."""
    import urllib.error
    import urllib.request

    port = free_port()
    env.set(PORT=str(port), DOCSUPER_HTTP_HOST="127.0.0.1")
    daemon = env.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: get(f"{base}/healthz")[0] == 200, what="/healthz")
        assert get(f"{base}/api/live")[0] == 200
        for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP"):
            request = urllib.request.Request(f"{base}/api/live", headers={header: "203.0.113.7"})
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=5)
            assert refused.value.code == 403 and b"proxy" in refused.value.read()
    finally:
        stop_daemon(daemon)
