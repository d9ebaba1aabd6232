"""trace_assets on Kubernetes: every step runs as its own Kubernetes Job.

Validate:   TRACE_ASSETS_EXPERIMENT=experiments/paper.yaml dagster definitions validate -f deploy/k8s/definitions.py
Deploy:     the Dagster Helm chart with deploy/k8s/values.yaml (docs/operations.md, "Beyond one machine").

GPU steps carry a ``dagster-k8s/config`` tag with ``nvidia.com/gpu`` limits computed from the
experiment (trace_assets/scaling.py): the teacher's tensor x data parallel size for
teacher_traces, the judge's for judged_traces and failure_modes, ``training.processes`` for
checkpoints, one GPU for trace_stats and eval_results. CPU steps ask for CPU and memory only.
"""

import os

from dagster_k8s import k8s_job_executor

from trace_assets.experiment import data_dir, load_experiment
from trace_assets.project import build_definitions

NAMESPACE = os.environ.get("TRACE_ASSETS_K8S_NAMESPACE", "trace-assets")
DATA_CLAIM = os.environ.get("TRACE_ASSETS_K8S_DATA_CLAIM", "trace-assets-data")

EXECUTOR_CONFIG = {
    "job_namespace": NAMESPACE,
    # Steps running at once across the cluster; GPU steps are further limited by the "gpu" pool.
    "max_concurrent": 16,
    "env_vars": ["TRACE_ASSETS_EXPERIMENT", "TRACE_ASSETS_DATA_DIR=/data", "HF_TOKEN", "HF_HOME=/data/hf"],
    # One shared volume for the DuckDB file, checkpoints and the HF cache. It must honour POSIX
    # locks (NFSv4, CephFS): DuckDB's single-writer lock is what keeps concurrent steps safe.
    "volumes": [{"name": "data", "persistent_volume_claim": {"claim_name": DATA_CLAIM}}],
    "volume_mounts": [{"name": "data", "mount_path": "/data"}],
    "step_k8s_config": {
        "container_config": {"resources": {"requests": {"cpu": "4", "memory": "32Gi"}}},
    },
}
executor = k8s_job_executor.configured(EXECUTOR_CONFIG, name="k8s_steps")

defs = build_definitions(load_experiment(), data_dir(), executor=executor)
