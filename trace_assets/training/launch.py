"""One rank of a data-parallel SFT run: ``torchrun --nproc_per_node=N -m trace_assets.training.launch JOB.json``.

Written by :func:`trace_assets.training.sft.train_sft_launched`; rank 0 writes the result file.
"""

import json
import sys
from pathlib import Path

from trace_assets.experiment import TrainingConfig
from trace_assets.training.sft import TrainRun, train_sft


def main(job_path: str) -> None:
    job = json.loads(Path(job_path).read_text())
    result = train_sft(TrainRun.from_json(job["run"]), TrainingConfig.model_validate_json(job["config"]))
    if result is not None:
        result.write(Path(job["result_path"]))


if __name__ == "__main__":
    main(sys.argv[1])
