"""The Kubernetes deployment file: it validates, its executor config is well formed, and GPU steps
become Kubernetes Jobs that request the GPUs the experiment says they need."""

import os
import runpy
import subprocess

import dagster as dg
import pytest
from dagster._config import process_config
from dagster_k8s import k8s_job_executor
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import (
    DagsterK8sJobConfig,
    UserDefinedDagsterK8sConfig,
    construct_dagster_k8s_job,
    get_user_defined_k8s_config,
)

from trace_assets.experiment import PROJECT_ROOT, load_experiment
from trace_assets_tests.conftest import DAGSTER_CLI

DEPLOY_FILE = PROJECT_ROOT / "deploy" / "k8s" / "definitions.py"
PAPER = PROJECT_ROOT / "experiments" / "paper.yaml"


@pytest.fixture
def paper_env(tmp_path, monkeypatch):
    monkeypatch.setenv("TRACE_ASSETS_EXPERIMENT", str(PAPER))
    monkeypatch.setenv("TRACE_ASSETS_DATA_DIR", str(tmp_path / "data"))
    return {**os.environ}


def test_dagster_validates_the_k8s_definitions(paper_env):
    result = subprocess.run(
        [DAGSTER_CLI, "definitions", "validate", "-f", str(DEPLOY_FILE)],
        cwd=PROJECT_ROOT,
        env=paper_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "All code locations passed validation" in result.stdout + result.stderr


def test_executor_config_matches_the_k8s_executor_schema(paper_env):
    # `dagster definitions validate` does not check executor config; a misspelt key only fails at launch.
    module = runpy.run_path(str(DEPLOY_FILE))
    checked = process_config(k8s_job_executor.config_schema.config_type, module["EXECUTOR_CONFIG"])
    assert checked.success, [error.message for error in checked.errors]
    broken = {**module["EXECUTOR_CONFIG"], "max_concurent": 1}
    assert not process_config(k8s_job_executor.config_schema.config_type, broken).success
    assert module["defs"].executor.name == "k8s_steps"


def _step_job(tags: dict, executor_config: dict):
    """The Kubernetes Job manifest dagster-k8s builds for a step with these op tags."""
    # merged the way the executor merges them (dagster_k8s.executor.K8sStepHandler._get_container_context)
    executor_level = K8sContainerContext(run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(executor_config["step_k8s_config"]))
    merged = executor_level.merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(tags))).run_k8s_config
    job_config = DagsterK8sJobConfig(job_image="trace-assets:latest", dagster_home="/opt/dagster/dagster_home")
    return construct_dagster_k8s_job(
        job_config, args=["dagster", "api", "execute_step"], job_name="step", user_defined_k8s_config=merged
    )


def test_gpu_steps_request_their_gpus_from_kubernetes(paper_env):
    module = runpy.run_path(str(DEPLOY_FILE))
    experiment = load_experiment(PAPER)
    graph = module["defs"].resolve_asset_graph()
    engine = experiment.teacher.tensor_parallel_size * experiment.teacher.data_parallel_size
    expected = {
        "teacher_traces": engine,
        "judged_traces": 8,
        "failure_modes": 8,
        "checkpoints": 1,
        "eval_results": 1,
        "trace_stats": 1,
    }
    assert engine == 8
    for asset, gpus in expected.items():
        node = graph.get(dg.AssetKey(asset))
        assert node.pools == {"gpu"}, asset
        job = _step_job(node.assets_def.op.tags, module["EXECUTOR_CONFIG"])
        pod = job.spec.template.spec
        resources = pod.containers[0].resources
        assert resources.limits == {"nvidia.com/gpu": str(gpus)}, asset
        assert resources.requests == {"cpu": "4", "memory": "32Gi"}, asset
        assert pod.tolerations[0].key == "nvidia.com/gpu"
    cpu_step = _step_job(graph.get(dg.AssetKey("sft_examples")).assets_def.op.tags, module["EXECUTOR_CONFIG"])
    assert not cpu_step.spec.template.spec.containers[0].resources.limits  # CPU steps ask for no GPU
