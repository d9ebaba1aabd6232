"""GPU steps: the pool they share and the op tags that ask a cluster for their cards.

How many cards a step needs comes from the experiment (``ModelConfig.gpus`` for the teacher and
judge, ``training.processes`` for SFT, one for trace_stats and evaluation). The same number drives
the devices a step claims on one machine (:meth:`trace_assets.resources.GPUResource.claim`), the
``nvidia.com/gpu`` limit of its pod under the Kubernetes executor (``deploy/k8s/definitions.py``)
and the dry-run.
"""

from __future__ import annotations

GPU_POOL = "gpu"


def gpu_op_tags(gpus: int) -> dict:
    """``trace_assets/gpus`` for people and tools, ``dagster-k8s/config`` for the Kubernetes executor.

    Other executors ignore the Kubernetes tag, so the assets carry it everywhere.
    """
    return {
        "trace_assets/gpus": str(gpus),
        "dagster-k8s/config": {
            "container_config": {"resources": {"limits": {"nvidia.com/gpu": str(gpus)}}},
            "pod_spec_config": {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
        },
    }
