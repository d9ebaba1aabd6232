"""A pleasant UI: `make dev` serves the project's instance with no first-visit modal, and stops,
child processes included, within 10 seconds of Ctrl-C (SIGINT to its process group, as a terminal
sends it) or of SIGTERM to the group (a process manager stopping the session)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from trace_assets.experiment import PROJECT_ROOT

SHUTDOWN_LIMIT_S = 10


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _terminal_signals() -> None:
    """Signals as a terminal gives them. A test suite started in the background by a non-interactive
    shell (``make test &``) inherits SIGINT ignored, and ignored signals survive exec: dagster dev
    would then ignore Ctrl-C for reasons of the test's own launch, not of ``make dev``."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["data"]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_make_dev_stops_within_ten_seconds(tmp_path, stop):
    import psutil

    venv = Path(sys.executable).parent.parent
    port = _free_port()
    env = {**os.environ, "TRACE_ASSETS_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(PROJECT_ROOT)}
    env.pop("DAGSTER_HOME", None)  # the Makefile's: data/dagster_home under TRACE_ASSETS_DATA_DIR
    # -o: this venv is already set up; never rebuild it from here.
    command = ["make", "-s", "-o", f"{venv}/bin/.installed", f"VENV={venv}", "dev", f"DEV_ARGS=-p {port}"]
    log = (tmp_path / "dev.log").open("w")
    make = subprocess.Popen(
        command,
        cwd=PROJECT_ROOT,
        env=env,
        start_new_session=True,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=_terminal_signals,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert make.poll() is None, (tmp_path / "dev.log").read_text()[-3000:]
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, "dagster dev did not serve within 120 s"
                time.sleep(0.5)
        assert (tmp_path / "data" / "dagster_home" / "dagster.yaml").exists()
        assert _graphql(port, "{ shouldShowNux }") == {"shouldShowNux": False}
        children = psutil.Process(make.pid).children(recursive=True)
        assert any("dagster_webserver" in " ".join(child.cmdline()) for child in children)

        started = time.monotonic()
        os.killpg(make.pid, stop)
        make.wait(SHUTDOWN_LIMIT_S)
        left = [child for child in children if child.is_running() and child.status() != psutil.STATUS_ZOMBIE]
        _, still_running = psutil.wait_procs(left, timeout=max(0.0, SHUTDOWN_LIMIT_S - (time.monotonic() - started)))
        assert not still_running, [" ".join(p.cmdline()[:4]) for p in still_running]
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait(10)
        log.close()
