"""How many GPUs each step needs, and the op tags that ask a cluster for them.

The same numbers drive three things: the devices a step takes on one machine
(:meth:`trace_assets.resources.GPUResource.claim`), the ``nvidia.com/gpu`` limit of the pod a
step runs in under the Kubernetes executor (``deploy/k8s/definitions.py``), and the dry-run.
"""

from __future__ import annotations

from trace_assets.experiment import Experiment, ModelConfig

GPU_POOL = "gpu"


def engine_gpus(model: ModelConfig) -> int:
    return model.tensor_parallel_size * model.data_parallel_size


def gpus_for(experiment: Experiment, asset: str) -> int:
    """GPUs one step of ``asset`` uses at once."""
    needs = {
        "teacher_traces": engine_gpus(experiment.teacher),
        "judged_traces": engine_gpus(experiment.judge),
        "failure_modes": engine_gpus(experiment.judge),
        "trace_stats": 1,
        "checkpoints": experiment.training.processes,
        "eval_results": 1,
    }
    return needs[asset]


def gpu_op_tags(experiment: Experiment, asset: str) -> dict:
    """``trace_assets/gpus`` for people and tools, ``dagster-k8s/config`` for the Kubernetes executor.

    Other executors ignore the Kubernetes tag, so the assets carry it everywhere.
    """
    gpus = gpus_for(experiment, asset)
    return {
        "trace_assets/gpus": str(gpus),
        "dagster-k8s/config": {
            "container_config": {"resources": {"limits": {"nvidia.com/gpu": str(gpus)}}},
            "pod_spec_config": {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
        },
    }
