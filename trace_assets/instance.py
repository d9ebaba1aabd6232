"""The Dagster instance's home: the project's dagster.yaml, with the ``gpu`` pool sized to this
machine's GPUs (1 without any). ``make dev``/``make demo``/``make test`` write it through
``python -m trace_assets.instance HOME``; ``python -m trace_assets.demo`` writes it when missing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from trace_assets.experiment import PROJECT_ROOT


def gpu_count() -> int:
    """GPUs nvidia-smi lists; 0 where there is no NVIDIA driver."""
    if shutil.which("nvidia-smi") is None:
        return 0
    listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout
    return sum(1 for line in listing.splitlines() if line.startswith("GPU"))


def instance_yaml(gpus: int) -> str:
    text = (PROJECT_ROOT / "dagster.yaml").read_text()
    return re.sub(r"(?m)^(\s*default_limit:) 1$", rf"\1 {max(1, gpus)}", text)


def write_instance(home: Path, overwrite: bool = True) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "dagster.yaml"
    if overwrite or not path.exists():
        path.write_text(instance_yaml(gpu_count()))
    return path


if __name__ == "__main__":
    write_instance(Path(sys.argv[1]))
