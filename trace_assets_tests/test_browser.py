"""The Dagster UI as a real client: `dagster dev` on loopback, headless Chromium, the GraphQL API.

Needs Debian's chromium and chromium-driver (`make test` installs them where it can). Without them
the test is skipped, unless TRACE_ASSETS_REQUIRE_BROWSER=1 (CI sets it), where it fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from trace_assets.experiment import PROJECT_ROOT, load_experiment
from trace_assets.instance import write_instance
from trace_assets_tests.conftest import DAGSTER_CLI, project_env, write_experiment

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
LOCATION = "trace_assets.definitions"
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1600,1000",
]


def _browser_missing() -> str | None:
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not os.access(binary, os.X_OK):
            return f"{binary} not installed (Debian packages chromium, chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium not installed"
    return None


@pytest.fixture(scope="module")
def chrome():
    missing = _browser_missing()
    if missing:
        if os.environ.get("TRACE_ASSETS_REQUIRE_BROWSER") == "1":
            pytest.fail(missing)
        pytest.skip(missing)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class DagsterUI:
    def __init__(self, url: str):
        self.url = url

    def graphql(self, query: str, **variables) -> dict:
        response = httpx.post(f"{self.url}/graphql", json={"query": query, "variables": variables}, timeout=60)
        response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]

    def location_status(self) -> tuple[str, str]:
        entries = self.graphql(
            "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
            "locationOrLoadError { __typename ... on PythonError { message } } } } } }"
        )["workspaceOrError"]["locationEntries"]
        entry = next((e for e in entries if e["name"] == LOCATION), None)
        if entry is None or entry["loadStatus"] != "LOADED" or entry["locationOrLoadError"] is None:
            return "LOADING", ""
        error = entry["locationOrLoadError"]
        return error["__typename"], error.get("message", "")


@contextlib.contextmanager
def dagster_dev(experiment: Path, data: Path, home: Path, log: Path):
    """`dagster dev` exactly as `make dev` runs it, on a free loopback port, torn down with its process group."""
    write_instance(home)
    port = _free_port()
    env = {**project_env(experiment, data, home), "HF_HUB_OFFLINE": "1"}
    command = [DAGSTER_CLI, "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)]
    with log.open("w") as output:
        process = subprocess.Popen(
            command, cwd=PROJECT_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    ui = DagsterUI(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 180
        status = ("LOADING", "")
        while time.monotonic() < deadline and status[0] == "LOADING":
            assert process.poll() is None, f"dagster dev exited early:\n{log.read_text()[-3000:]}"
            with contextlib.suppress(httpx.HTTPError):
                status = ui.location_status()
            time.sleep(1)
        assert status[0] == "RepositoryLocation", f"code location did not load: {status}\n{log.read_text()[-3000:]}"
        yield ui
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # the daemon and code servers, if still there
        process.wait()


def _page_text(driver, url: str, expected: list[str], timeout: float = 120) -> str:
    """Open a page and wait until every expected string is on it; the React app renders after load."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    text = ""

    def rendered(d) -> bool:
        nonlocal text
        text = d.find_element(By.TAG_NAME, "body").text
        return all(item in text for item in expected)

    try:
        WebDriverWait(driver, timeout, poll_frequency=0.5).until(rendered)
    except TimeoutException:
        missing = [item for item in expected if item not in text]
        pytest.fail(f"{url}: never showed {missing}; the page said:\n{text[:2000]}")
    return text


LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchPipelineExecution(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
  }
}"""
RUN_STATUS = "query Run($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"
LATEST_ROW_COUNT = """
{ assetNodeOrError(assetKey: {path: ["problems"]}) { ... on AssetNode {
    assetMaterializations(limit: 1) { runId metadataEntries { label ... on IntMetadataEntry { intValue } } } } } }"""


def test_ui_shows_the_graph_and_materializes_problems(chrome, tmp_path):
    experiment_path = write_experiment(tmp_path, "unused-model")
    experiment = load_experiment(experiment_path)
    with dagster_dev(experiment_path, tmp_path / "data", tmp_path / "dagster_home", tmp_path / "dagster_dev.log") as ui:
        # The global lineage shows one group per stage.
        _page_text(
            chrome,
            f"{ui.url}/asset-groups",
            ["problems", "styles", "traces", "judging", "datasets", "training", "evaluation", "reporting", "lineage"],
        )
        # Asset nodes render with their partitions: by style, and by dataset x student.
        n_styles, n_models = len(experiment.styles), len(experiment.dataset_keys()) * len(experiment.students)
        _page_text(
            chrome,
            f"{ui.url}/locations/{LOCATION}/asset-groups/traces",
            ["teacher_traces", "Latest event", f"{n_styles} partitions"],
        )
        _page_text(
            chrome,
            f"{ui.url}/locations/{LOCATION}/asset-groups/training",
            ["checkpoints", "training_log", f"{n_models} partitions"],
        )

        # Tables show their pandera columns before any run (teacher_traces is never materialised here).
        _page_text(chrome, f"{ui.url}/assets/teacher_traces", ["Columns", "finish_reason", "style_version"])

        # Launch `problems` through the UI's GraphQL API and wait for the run (queued, then started by the daemon).
        params = {
            "selector": {
                "repositoryLocationName": LOCATION,
                "repositoryName": "__repository__",
                "jobName": "__ASSET_JOB",
                "assetSelection": [{"path": ["problems"]}],
            },
            "mode": "default",
        }
        launched = ui.graphql(LAUNCH, params=params)["launchPipelineExecution"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run_id = launched["run"]["runId"]
        deadline, status = time.monotonic() + 240, "QUEUED"
        while time.monotonic() < deadline and status not in ("SUCCESS", "FAILURE", "CANCELED"):
            time.sleep(1)
            status = ui.graphql(RUN_STATUS, id=run_id)["runOrError"]["status"]
        assert status == "SUCCESS", f"run {run_id} ended {status}"

        materialization = ui.graphql(LATEST_ROW_COUNT)["assetNodeOrError"]["assetMaterializations"][0]
        assert materialization["runId"] == run_id
        row_count = {e["label"]: e.get("intValue") for e in materialization["metadataEntries"]}["dagster/row_count"]
        assert row_count == experiment.problems.n_train + experiment.problems.n_test
        # ... and the row count shows on the asset's page.
        text = _page_text(chrome, f"{ui.url}/assets/problems", ["Row count", "Latest materialization"])
        assert f"Row count\n{row_count}" in text
