"""The Dagster UI as a person uses it: open it in Chromium, materialize everything, watch the run succeed."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from dagster_project.definitions import defs

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
EXPECTED_ASSETS = sorted(key.path[-1] for key in defs.resolve_asset_graph().get_all_asset_keys())
RUN_TIMEOUT_S = 420

pytestmark = [pytest.mark.browser, pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (.ci/run installs it)")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"{url} did not answer within {timeout_s}s")


def _finished_run(dagster_home: Path, timeout_s: float):
    """The one run in the UI's instance, once it has ended."""
    from dagster import DagsterInstance, DagsterRunStatus

    ended = (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            (run,) = instance.get_runs()
            if run.status in ended:
                return run
            time.sleep(2)
    raise TimeoutError(f"run {run.run_id} did not finish within {timeout_s}s")


@pytest.fixture
def dagster_ui(tmp_path):
    port = _free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "VIDEODIT_PROJECT_DIR": str(tmp_path / "project"),
        "VIDEODIT_PRESET": "tiny",
        "VIDEODIT_DVC_REMOTE": str(tmp_path / "dvc-remote"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'project' / 'mlflow.db'}",
    }
    for key in ("DAGSTER_HOME", "VIDEODIT_PROJECT_DIR"):
        Path(env[key]).mkdir(parents=True)
    dg = Path(sys.executable).parent / "dg"
    server = subprocess.Popen(
        [str(dg), "dev", "--host", "127.0.0.1", "--port", str(port)],
        cwd=Path(__file__).parents[1], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_for(f"http://127.0.0.1:{port}/server_info", 120)
        yield f"http://127.0.0.1:{port}", tmp_path
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:  # a child of `dg dev` may ignore SIGTERM (seen: every run, for 60 s)
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)


def test_materialize_everything_from_the_ui(dagster_ui):
    from playwright.sync_api import expect, sync_playwright

    base, tmp_path = dagster_ui
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{base}/asset-groups")
        page.get_by_role("button", name="Skip").click(timeout=30_000)  # the first-visit newsletter dialog
        page.get_by_role("button", name="Materialize all").click()
        expect(page.get_by_text("Launched run")).to_be_visible(timeout=30_000)

        # The run is watched in the instance with the page parked, then shown: a live runs page re-renders on every
        # event, and on two cores Chromium and the webserver's answers to it slow the run (test alone: 92 -> 78 s).
        page.goto("about:blank")
        run = _finished_run(tmp_path / "dagster_home", RUN_TIMEOUT_S)
        assert run.status.value == "SUCCESS", run.run_id
        page.goto(f"{base}/runs/{run.run_id}")
        expect(page.get_by_text("Success").first).to_be_visible(timeout=30_000)

        page.goto(f"{base}/assets")
        for asset in EXPECTED_ASSETS:
            expect(page.locator(f'a[href="/assets/{asset}"]').first).to_be_visible(timeout=30_000)
        expect(page.get_by_text(re.compile(r"^Materialized"))).to_have_count(len(EXPECTED_ASSETS))
        page.goto(f"{base}/asset-groups")
        page.wait_for_timeout(2000)
        screenshot = tmp_path / "dagster-ui.png"
        page.screenshot(path=str(screenshot), full_page=True)
        browser.close()
    assert screenshot.stat().st_size > 10_000
    if os.environ.get("VIDEODIT_SCREENSHOT_DIR"):  # keep the picture for a person to look at
        shutil.copy(screenshot, Path(os.environ["VIDEODIT_SCREENSHOT_DIR"]) / "dagster-ui.png")
