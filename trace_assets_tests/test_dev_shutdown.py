"""A pleasant UI: `make dev` serves the project's instance with no first-visit modal, and stops,
child processes included, within 10 seconds of Ctrl-C (SIGINT to its process group, as a terminal
sends it) or of SIGTERM to the group (a process manager stopping the session), also when a script
started it in the background (``make dev &``, SIGINT ignored) and SIGTERMs make or its group."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
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


def _make_dev_command(port: int) -> list[str]:
    venv = Path(sys.executable).parent.parent
    # -o: this venv is already set up; never rebuild it from here.
    return ["make", "-s", "-o", f"{venv}/bin/.installed", f"VENV={venv}", "dev", f"DEV_ARGS=-p {port}"]


def _dev_env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "TRACE_ASSETS_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(PROJECT_ROOT)}
    env.pop("DAGSTER_HOME", None)  # the Makefile's: data/dagster_home under TRACE_ASSETS_DATA_DIR
    return env


def _start_in_session(command: list[str], tmp_path: Path, preexec_fn) -> tuple[subprocess.Popen, Path]:
    """COMMAND in a session of its own (its output in dev.log), as a terminal or a script starts it."""
    log_path = tmp_path / "dev.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env=_dev_env(tmp_path),
            start_new_session=True,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=preexec_fn,
        )
    return process, log_path


def _wait_until_served(process: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + 120
    while True:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2)
            return
        except OSError:
            assert time.monotonic() < deadline, "dagster dev did not serve within 120 s\n" + log.read_text()[-3000:]
            time.sleep(0.5)


def _session_processes(session: int) -> list:
    """Every live process of the session (a code server re-parented to init included)."""
    import psutil

    found = []
    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) == session and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (OSError, psutil.Error):
            continue
    return found


def _assert_all_gone(session: int, started: float, log: Path | None = None) -> None:
    while _session_processes(session) and time.monotonic() - started < SHUTDOWN_LIMIT_S:
        time.sleep(0.2)
    left = _session_processes(session)
    if left:  # what is left, with its parent and group, and the end of dev.log: enough to tell why
        import psutil

        described = []
        for process in left:
            with contextlib.suppress(psutil.Error, OSError):
                described.append(
                    f"pid {process.pid} ppid {process.ppid()} pgid {os.getpgid(process.pid)} {process.status()}: "
                    + " ".join(process.cmdline()[:6])
                )
        tail = log.read_text()[-4000:] if log is not None and log.exists() else ""
        raise AssertionError(f"left after {SHUTDOWN_LIMIT_S} s:\n" + "\n".join(described) + "\n--- dev.log ---\n" + tail)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_make_dev_stops_within_ten_seconds(tmp_path, stop):
    import psutil

    port = _free_port()
    make, log_path = _start_in_session(_make_dev_command(port), tmp_path, _terminal_signals)
    try:
        _wait_until_served(make, port, log_path)
        assert (tmp_path / "data" / "dagster_home" / "dagster.yaml").exists()
        assert _graphql(port, "{ shouldShowNux }") == {"shouldShowNux": False}
        children = psutil.Process(make.pid).children(recursive=True)
        assert any("dagster_webserver" in " ".join(child.cmdline()) for child in children)

        started = time.monotonic()
        os.killpg(make.pid, stop)
        make.wait(SHUTDOWN_LIMIT_S)
        _assert_all_gone(make.pid, started, log_path)
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait(10)


def _ignore_interrupts() -> None:
    """A script started in the background of another: SIGINT (and SIGQUIT) ignored, as a
    non-interactive shell sets them for its ``&`` jobs; bash then does the same for ``make dev &``.
    SIGTERM as a shell leaves it, at its default: the test process's own may be ignored (after the
    suite's first in-process Dagster run, test_automation's, it is), and an ignored SIGTERM survives exec,
    so ``make`` ignored ``kill $!`` in every fresh-clone CI run and the test measured its own launch."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGQUIT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def _ignores_sigint(pid: int) -> bool:
    """Whether the process ignores SIGINT (the SigIgn mask of /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGINT - 1) & 1)
    raise AssertionError(f"/proc/{pid}/status has no SigIgn line")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None or shutil.which("bash") is None, reason="needs make and bash")
@pytest.mark.parametrize("target", ["make", "group"], ids=["kill-make", "kill-group"])
def test_make_dev_in_a_script_stops_within_ten_seconds_of_sigterm(tmp_path, target):
    """``make dev &`` from a script: every process inherits SIGINT ignored, which is how dagster dev
    stops its children. SIGTERM to make (``kill $!``) or to the script's process group stops all of
    them, the webserver, daemon and code servers included, within 10 s."""
    import psutil

    port = _free_port()
    pid_file = tmp_path / "make.pid"
    script = f"{shlex.join(_make_dev_command(port))} & echo $! > {shlex.quote(str(pid_file))}; wait"
    shell, log_path = _start_in_session(["bash", "-c", script], tmp_path, _ignore_interrupts)
    try:
        _wait_until_served(shell, port, log_path)
        make_pid = int(pid_file.read_text())
        webserver = [p for p in _session_processes(shell.pid) if "dagster_webserver" in " ".join(p.cmdline())]
        assert webserver, log_path.read_text()[-3000:]
        assert _ignores_sigint(make_pid), "the script's make dev should inherit SIGINT ignored"
        assert not _ignores_sigint(webserver[0].pid), "dagster dev's webserver must not ignore SIGINT"

        started = time.monotonic()
        if target == "make":
            os.kill(make_pid, signal.SIGTERM)
        else:
            os.killpg(shell.pid, signal.SIGTERM)
        _assert_all_gone(shell.pid, started, log_path)
        assert not psutil.pid_exists(make_pid) or psutil.Process(make_pid).status() == psutil.STATUS_ZOMBIE
    finally:
        for process in _session_processes(shell.pid):  # whatever a failure left behind
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        shell.wait(10)


# The launcher alone, on toy commands: fast, and independent of how long dagster takes to stop.

_STUBBORN = """
import signal, subprocess, sys, time
for stop in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(stop, signal.SIG_IGN)
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])  # inherits the ignoring
print("ready", flush=True)
time.sleep(120)
"""

_REPORTING = """
import pathlib, sys, time
status = pathlib.Path("/proc/self/status").read_text()
pathlib.Path(sys.argv[1]).write_text(next(l for l in status.splitlines() if l.startswith("SigIgn:")))
print("ready", flush=True)
time.sleep(120)
"""


def _start_launcher(command: list[str], grace_s: float) -> subprocess.Popen:
    code = f"import sys; from trace_assets.devserver import supervise; sys.exit(supervise({command!r}, {grace_s}))"
    launcher = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        start_new_session=True,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=_ignore_interrupts,  # as `make dev &` from a script runs it
    )
    assert launcher.stdout is not None and launcher.stdout.readline() == "ready\n"
    return launcher


def test_launcher_gives_the_command_default_stop_signals(tmp_path):
    report = tmp_path / "sigign"
    launcher = _start_launcher([sys.executable, "-c", _REPORTING, str(report)], grace_s=30)
    try:
        ignored = int(report.read_text().split()[1], 16)
        assert not ignored >> (signal.SIGINT - 1) & 1 and not ignored >> (signal.SIGTERM - 1) & 1
        started = time.monotonic()
        os.kill(launcher.pid, signal.SIGTERM)
        assert launcher.wait(10) == 128 + signal.SIGTERM
        assert time.monotonic() - started < 5, "a command that honours SIGTERM needs no grace period"
        _assert_all_gone(launcher.pid, started)
    finally:
        for process in _session_processes(launcher.pid):
            process.kill()


def test_launcher_kills_what_ignores_the_stop_signal_after_the_grace_period():
    launcher = _start_launcher([sys.executable, "-c", _STUBBORN], grace_s=1.5)
    try:
        assert len(_session_processes(launcher.pid)) == 3  # launcher, command, its child
        started = time.monotonic()
        os.kill(launcher.pid, signal.SIGTERM)
        assert launcher.wait(10) == 128 + signal.SIGKILL
        assert 1.5 <= time.monotonic() - started < SHUTDOWN_LIMIT_S
        _assert_all_gone(launcher.pid, started)
    finally:
        for process in _session_processes(launcher.pid):
            process.kill()
