"""The MBPP sandbox stops code that loops, allocates without bound, reads outside its directory, forks or
reaches for the network; each is scored as failed and leaves no process, file or directory behind."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from trace_assets.tasks.sandbox import network_isolation, run_tests


@pytest.fixture(autouse=True)
def private_tmp(tmp_path, monkeypatch) -> Path:
    """Scratch directories go under the test's own folder, so leftovers can be counted."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def sandbox_processes() -> list[int]:
    """Processes still running the sandbox's bootstrap (its command line carries the result marker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"SANDBOX-RESULT" in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def assert_clean(private_tmp: Path) -> None:
    assert list(private_tmp.iterdir()) == []  # scratch and log directories removed
    assert sandbox_processes() == []  # the process group is gone


def test_passing_code_passes_and_leaves_nothing(private_tmp):
    result = run_tests("def double(x):\n    return 2 * x\n", ["assert double(2) == 4", "assert double(0) == 0"])
    assert result.passed and result.wall_s < 5
    assert_clean(private_tmp)


def test_an_infinite_loop_is_stopped(private_tmp):
    started = time.perf_counter()
    result = run_tests("def f():\n    while True:\n        pass\n\nf()\n", ["assert True"], timeout_s=3, cpu_s=2)
    assert result.status == "timeout" and not result.passed
    assert time.perf_counter() - started < 8
    assert_clean(private_tmp)


def test_unbounded_allocation_is_stopped(private_tmp):
    result = run_tests("chunks = []\nwhile True:\n    chunks.append(bytearray(10 ** 7))\n", ["assert True"], memory_mb=256)
    assert result.status in ("memory_limit", "killed") and not result.passed, result
    assert_clean(private_tmp)


def test_reading_files_outside_its_directory_is_refused(private_tmp, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("the test's secret")
    for path in ("/etc/passwd", str(secret), "../secret.txt", "/proc/self/environ"):
        result = run_tests(f"data = open({path!r}).read()\n", ["assert 'secret' not in data"])
        assert result.status == "forbidden_operation" and "reading" in result.detail, (path, result)
        assert "the test's secret" not in result.detail
    listing = run_tests("import os\nnames = os.listdir('/')\n", ["assert names"])
    assert listing.status == "forbidden_operation"
    assert_clean(private_tmp)


def test_writing_outside_is_refused_but_its_own_directory_works(private_tmp, tmp_path):
    target = tmp_path / "written_by_model.txt"
    result = run_tests(f"open({str(target)!r}, 'w').write('x')\n", ["assert True"])
    assert result.status == "forbidden_operation" and not target.exists()
    inside = run_tests("open('notes.txt', 'w').write('hi')\n", ["assert open('notes.txt').read() == 'hi'"])
    assert inside.passed, inside
    assert_clean(private_tmp)


def test_a_fork_bomb_is_stopped_and_the_machine_keeps_its_processes(private_tmp):
    before = len([p for p in Path("/proc").iterdir() if p.name.isdigit()])
    for code in (
        "import os\nwhile True:\n    os.fork()\n",
        "import subprocess\nsubprocess.Popen(['sleep', '60'])\n",
        "import os\nos.system('sleep 60 &')\n",
        "import multiprocessing\nmultiprocessing.Process(target=print).start()\n",
    ):
        result = run_tests(code, ["assert True"], timeout_s=5)
        assert not result.passed and result.status in ("forbidden_operation", "runtime_error"), (code, result)
    after = len([p for p in Path("/proc").iterdir() if p.name.isdigit()])
    assert after <= before + 5  # other workers share the machine; a bomb would add hundreds
    assert_clean(private_tmp)


def test_network_is_refused(private_tmp):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    port = server.getsockname()[1]
    connections = []

    def accept() -> None:
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            try:
                connections.append(server.accept())
            except OSError:
                continue

    watcher = threading.Thread(target=accept)
    watcher.start()
    try:
        for code in (
            f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\n",
            f"import urllib.request\nurllib.request.urlopen('http://127.0.0.1:{port}/', timeout=2)\n",
            f"import _socket\ns = _socket.socket()\ns.connect(('127.0.0.1', {port}))\n",
        ):
            result = run_tests(code, ["assert True"])
            assert not result.passed and result.status in ("forbidden_operation", "runtime_error"), (code, result)
        if network_isolation() == "namespace":
            # Without the audit hook, the network namespace alone keeps the host's loopback out of reach.
            probe = subprocess.run(
                [
                    "unshare",
                    "-rn",
                    "--",
                    sys.executable,
                    "-I",
                    "-S",
                    "-c",
                    f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)",
                ],
                capture_output=True,
                timeout=30,
            )
            assert probe.returncode != 0 and b"Error" in probe.stderr
    finally:
        watcher.join()
        server.close()
    assert connections == []
    assert_clean(private_tmp)


def test_output_floods_and_early_exits_fail(private_tmp):
    flood = run_tests("while True:\n    print('x' * 10000)\n", ["assert True"], timeout_s=10)
    assert flood.status == "output_limit", flood
    assert run_tests("import os\nos._exit(0)\n", ["assert False"]).status == "exited_early"
    assert run_tests("raise SystemExit(0)\n", ["assert False"]).status == "exited_early"
    assert run_tests("def f(:\n", ["assert True"]).status == "syntax_error"
    assert run_tests("def f():\n    return 1\n", ["assert f() == 2"]).status == "test_failed"
    assert_clean(private_tmp)


def test_it_reports_how_the_network_is_isolated():
    assert network_isolation() in ("namespace", "audit_hook")
    print(f"\nnetwork isolation here: {network_isolation()} (uid {os.getuid()})")
