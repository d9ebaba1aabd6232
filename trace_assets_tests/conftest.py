import os

import dagster as dg
import pytest

from trace_assets.experiment import PROJECT_ROOT, load_experiment

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def smoke_experiment():
    return load_experiment(PROJECT_ROOT / "experiments" / "smoke.yaml")


@pytest.fixture
def instance():
    with dg.instance_for_test() as test_instance:
        yield test_instance
