"""The ranks of data-parallel SFT runs: ``torchrun --nproc_per_node=N -m trace_assets.training.launch JOB.json``.

Written by :func:`trace_assets.training.sft.train_sft_launched`: the job lists runs, trained one
after another in these processes; rank 0 writes each run's record as the run ends, so a crash
keeps the runs before it.
"""

import gc
import json
import sys
from pathlib import Path

from trace_assets.experiment import TrainingConfig
from trace_assets.training.sft import TrainRun, train_sft


def main(job_path: str) -> None:
    import torch

    job = json.loads(Path(job_path).read_text())
    config = TrainingConfig.model_validate_json(job["config"])
    for number, (run, record) in enumerate(zip(job["runs"], job["records"]), 1):
        print(f"SFT run {number}/{len(job['runs'])}", file=sys.stderr, flush=True)
        result = train_sft(TrainRun.from_json(run), config)
        if result is not None:
            result.write(Path(record))
        # the next run starts from a clean slate: its own model and optimizer memory, and a fresh
        # torch.compile (its compiled kernels come from inductor's cache; without the reset, dynamo
        # would count each new model as a recompile of the last and stop compiling after 8)
        gc.collect()
        torch._dynamo.reset()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main(sys.argv[1])
