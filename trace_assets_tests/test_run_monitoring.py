"""Killed runs recovered (dagster.yaml ``run_monitoring`` + trace_assets/run_launcher.py).

End to end with real processes: a code server launches a run of trace_assets_tests/monitored_job.py;
while its second step holds the ``gpu`` pool's slot, the code server and the run's worker are
SIGKILLed (as when ``dagster dev`` or the machine's OOM killer takes them). One pass of the
monitoring daemon's loop, on the instance written from the project's dagster.yaml, marks the run
FAILURE and frees its slot; re-executing it from failure runs only the unfinished step.
"""

from __future__ import annotations

import datetime
import os
import signal
import socket
import subprocess
import sys
import time

import dagster as dg
import pytest
import yaml
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import GrpcServerTarget
from dagster._daemon.monitoring import concurrency as slot_monitoring
from dagster._daemon.monitoring.run_monitoring import execute_run_monitoring_iteration
from dagster._grpc.client import DagsterGrpcClient

from trace_assets.experiment import PROJECT_ROOT
from trace_assets.instance import instance_yaml, write_instance
from trace_assets.run_launcher import LocalRunLauncher
from trace_assets_tests import monitored_job


def test_the_project_instance_monitors_runs():
    settings = yaml.safe_load(instance_yaml(0))
    monitoring = settings["run_monitoring"]
    assert monitoring["enabled"] and monitoring["max_resume_run_attempts"] == 0
    # "marked failed within a minute or two": one poll interval after the worker died
    assert monitoring["poll_interval_seconds"] <= 60
    assert 0 < monitoring["free_slots_after_run_end_seconds"] <= 60
    assert settings["run_launcher"] == {"module": "trace_assets.run_launcher", "class": "LocalRunLauncher"}
    assert settings["nux"] == {"enabled": False}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def _wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _launch(instance: dg.DagsterInstance, port: int) -> str:
    """What the UI's "Materialize" does: create the run from the code server's snapshot and launch it there."""
    from dagster._cli.job import _create_run
    from dagster._cli.workspace.cli_target import (
        get_code_location_from_workspace,
        get_remote_job_from_remote_repo,
        get_remote_repository_from_code_location,
    )

    target = GrpcServerTarget(host="localhost", port=port, socket=None, location_name="monitored")
    with WorkspaceProcessContext(instance, target) as process_context:
        workspace = process_context.create_request_context()
        location = get_code_location_from_workspace(workspace, "monitored")
        repo = get_remote_repository_from_code_location(location, None)
        job = get_remote_job_from_remote_repo(repo, "work")
        run = _create_run(
            instance=instance,
            code_location=location,
            remote_repo=repo,
            remote_job=job,
            run_config={},
            tags=None,
            op_selection=None,
            run_id=None,
        )
        instance.launch_run(run.run_id, workspace)
        return run.run_id


def _monitor(instance: dg.DagsterInstance, port: int | None = None) -> None:
    """One iteration of the monitoring daemon (dagster-daemon's MonitoringDaemon runs this every poll interval)."""
    import logging

    target = GrpcServerTarget(host="localhost", port=port, socket=None, location_name="monitored") if port else None
    with WorkspaceProcessContext(instance, target) as process_context:
        list(execute_run_monitoring_iteration(process_context, logging.getLogger("monitoring")))
        list(slot_monitoring.execute_concurrency_slots_iteration(process_context, logging.getLogger("monitoring")))


def test_a_killed_run_is_marked_failed_and_resumes_from_failure(tmp_path, monkeypatch):
    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    write_instance(home)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("TRACE_ASSETS_TEST_WORK", str(work))
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")])}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dagster",
            "api",
            "grpc",
            "--module-name",
            "trace_assets_tests.monitored_job",
            "--host",
            "localhost",
            "--port",
            str(port),
        ],
        env=env,
        cwd=PROJECT_ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = DagsterGrpcClient(host="localhost", port=port)

        def serving():
            try:
                return client.ping("") is not None
            except Exception:
                return False

        _wait_for(serving, 60, "the code server")
        with dg.DagsterInstance.from_config(str(home)) as instance:
            assert isinstance(instance.run_launcher, LocalRunLauncher) and instance.run_monitoring_enabled
            run_id = _launch(instance, port)
            worker_pid = int(
                _wait_for(
                    lambda: (work / "interrupted.pid").exists() and (work / "interrupted.pid").read_text(),
                    60,
                    "the second step to start",
                )
            )
            assert instance.event_log_storage.get_concurrency_info("gpu").claimed_slots

            _monitor(instance, port)  # a live worker is left alone
            assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED

            os.killpg(server.pid, signal.SIGKILL)  # the code server, and with it its run worker
            server.wait(10)
            _wait_for(lambda: not _alive(worker_pid), 10, "the run worker to die")
            assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED  # nobody else noticed

            _monitor(instance)
            run = instance.get_run_by_id(run_id)
            assert run.status == dg.DagsterRunStatus.FAILURE
            messages = [entry.message for entry in instance.all_logs(run_id)]
            assert any(f"run worker process {worker_pid} no longer exists" in message for message in messages)

            # free_slots_after_run_end_seconds later the dead run's gpu slot is given back
            later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=5)
            monkeypatch.setattr(slot_monitoring, "get_current_datetime", lambda: later)
            _monitor(instance)
            assert not instance.event_log_storage.get_concurrency_info("gpu").claimed_slots

            (work / "release").touch()
            result = dg.execute_job(
                dg.reconstructable(monitored_job.work_job),
                instance,
                reexecution_options=dg.ReexecutionOptions.from_failure(run_id, instance),
            )
            assert result.success
            assert [event.step_key for event in result.get_step_success_events()] == ["interrupted"]
            assert len((work / "persisted.runs").read_text().split()) == 1  # not redone
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("event_pid_offset", [0, 1])
def test_the_health_check_reads_the_workers_pid_from_the_run(tmp_path, event_pid_offset):
    """A run whose recorded worker is this process is RUNNING; a pid no process has is FAILED."""
    from dagster._core.launcher import WorkerStatus

    write_instance(tmp_path)
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:

        @dg.op
        def noop():
            return None

        @dg.job
        def job():
            noop()

        run = instance.create_run_for_job(job, status=dg.DagsterRunStatus.STARTED)
        assert instance.run_launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING  # nothing to judge yet
        pid = os.getpid() if event_pid_offset == 0 else _unused_pid()
        from dagster._core.events import EngineEventData

        instance.report_engine_event(f"Started process for run (pid: {pid}).", run, EngineEventData.in_process(pid))
        health = instance.run_launcher.check_run_worker_health(run)
        assert health.status == (WorkerStatus.RUNNING if event_pid_offset == 0 else WorkerStatus.FAILED)


def _unused_pid() -> int:
    import psutil

    pid = 4_000_000
    while psutil.pid_exists(pid):
        pid -= 1
    return pid
