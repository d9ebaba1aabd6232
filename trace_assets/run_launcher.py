"""The instance's run launcher: Dagster's default one, plus a health check for run monitoring.

Dagster's ``DefaultRunLauncher`` starts each run in a worker process of the code server but cannot
say whether that worker is still alive, so with it the monitoring daemon never notices a dead run:
a run whose worker was killed together with its code server (``dagster dev`` killed, the machine's
OOM killer, a ``dagster asset materialize`` process killed) stayed STARTED forever, holding its
``gpu`` pool slot. This launcher answers the daemon's health check from the process table: the
run's worker is the process of the run's first engine event that carries a ``pid`` ("Started
process for run (pid: N)" for launched runs, the executor's for in-process ones). If that process
no longer exists (or the pid now belongs to a younger process), the worker is reported FAILED and
the daemon marks the run failed (dagster.yaml, ``run_monitoring``).

The instance keeps its runs in a local SQLite store (``DAGSTER_HOME``), so every run it monitors
ran on this machine; deployments elsewhere (deploy/k8s) configure their own launcher.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dagster import DagsterEventType, DefaultRunLauncher
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus
from dagster._core.storage.dagster_run import DagsterRun
from dagster._serdes import ConfigurableClassData

# A process created this long after the event that named its pid is not the one that logged it.
PID_REUSE_SLACK_S = 2.0
ENGINE_EVENTS_SCANNED = 50


class LocalRunLauncher(DefaultRunLauncher):
    """``DefaultRunLauncher`` whose run workers are checked for life by the monitoring daemon."""

    def __init__(self, inst_data: ConfigurableClassData | None = None):
        super().__init__(inst_data=inst_data)

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]):
        return cls(inst_data=inst_data)

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def run_worker(self, run: DagsterRun) -> tuple[int, float] | None:
        """(pid, timestamp) of the run's first engine event that names a process; None before there is one."""
        records = self._instance.get_records_for_run(
            run.run_id, of_type=DagsterEventType.ENGINE_EVENT, limit=ENGINE_EVENTS_SCANNED, ascending=True
        ).records
        for record in records:
            event = record.event_log_entry.dagster_event
            metadata = event.engine_event_data.metadata if event and event.engine_event_data else {}
            pid = metadata.get("pid")
            if pid is not None:
                return int(pid.value), record.event_log_entry.timestamp
        return None

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        import psutil

        worker = self.run_worker(run)
        if worker is None:  # the worker has not said who it is yet: nothing to judge
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no worker process recorded yet")
        pid, logged_at = worker
        try:
            process = psutil.Process(pid)
            alive = process.status() != psutil.STATUS_ZOMBIE and process.create_time() <= logged_at + PID_REUSE_SLACK_S
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            alive = False
        except psutil.AccessDenied:  # exists, owned by someone else: the pid was reused
            alive = False
        if alive:
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"run worker process {pid} is alive", run_worker_id=str(pid))
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"run worker process {pid} no longer exists (killed, or its machine restarted)",
            run_worker_id=str(pid),
        )

    def get_run_worker_debug_info(self, run: DagsterRun, include_container_logs: bool | None = True) -> str | None:
        worker = self.run_worker(run)
        return None if worker is None else f"run worker pid: {worker[0]}"
