"""Multi-GPU SFT through our code on one host: data-parallel scaling and card claims.

    python bench/gpu_scaling.py --tokenizer TOKENIZER_DIR [--steps 60 --batch-size 16]

Runs the same SFT (a random-weight Qwen2.5-0.5B-shaped student, see _student.py) three ways,
after one unreported warm-up run, each through ``train_one_launched`` (torchrun) on cards taken
with ``claim_devices``, as the ``checkpoints`` asset does:
  1. one process on one GPU;
  2. ``processes=2``: two ranks over two GPUs (NCCL), same per-device batch, so twice the tokens;
  3. two independent one-GPU runs started at once, as two concurrent Dagster steps would be:
     each must get its own card, and together they should take about as long as one.
Prints training tokens/s for each and the scaling ratio (2-GPU tokens/s over 1-GPU tokens/s).
"""

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

from _student import add_student_arguments, build_student_and_data  # bench/ is on sys.path as the script's folder


def main() -> None:
    parser = argparse.ArgumentParser()
    add_student_arguments(parser)
    args = parser.parse_args()

    import torch

    from trace_assets.devices import claim_devices
    from trace_assets.experiment import TrainingConfig
    from trace_assets.training.sft import TrainRun, train_one_launched

    gpus = [str(i) for i in range(torch.cuda.device_count())]
    print(json.dumps({"gpus": len(gpus), "device": torch.cuda.get_device_name(0) if gpus else "cpu"}))
    work = Path(tempfile.mkdtemp(prefix="gpu-scaling-"))
    locks = work / "locks"
    base, parameters, examples, _ = build_student_and_data(args, work)

    def run(name: str, processes: int, report: dict) -> None:
        settings = TrainingConfig(
            max_steps=args.steps,
            batch_size=args.batch_size,
            learning_rate=2e-5,
            max_length=512,
            eval_fraction=0.02,
            seeds=[0],
            processes=processes,
        )
        with claim_devices(gpus, processes, locks, log=print, poll_s=0.5) as cards:
            started = time.perf_counter()
            run_spec = TrainRun(
                str(base), examples, 0, str(work / name), "cuda" if gpus else "cpu", "bfloat16" if gpus else "float32"
            )
            result = train_one_launched(run_spec, settings, env={"CUDA_VISIBLE_DEVICES": ",".join(cards)})
            report.update(
                {
                    "run": name,
                    "cards": cards,
                    "world_size": result.world_size,
                    "train_tokens": result.train_tokens,
                    "train_wall_s": round(result.wall_s, 2),
                    "step_wall_s": round(time.perf_counter() - started, 2),
                    "train_tokens_per_s": round(result.train_tokens / result.wall_s, 1),
                }
            )
        print(json.dumps(report))

    run("warm_up", 1, {})  # the first run on a fresh machine pays for kernel loading and disk caches
    one: dict = {}
    run("one_gpu", 1, one)
    if len(gpus) >= 2:
        two: dict = {}
        run("two_gpus_dp", 2, two)
        print(
            json.dumps(
                {
                    "scaling_2gpu_over_1gpu": round(two["train_tokens_per_s"] / one["train_tokens_per_s"], 2),
                    "parameters": parameters,
                }
            )
        )
        reports = [{}, {}]
        started = time.perf_counter()
        threads = [threading.Thread(target=run, args=(f"concurrent{i}", 1, reports[i])) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        print(
            json.dumps(
                {
                    "concurrent_cards": sorted(c for r in reports for c in r["cards"]),
                    "concurrent_wall_s": round(time.perf_counter() - started, 2),
                    "single_step_wall_s": one["step_wall_s"],
                }
            )
        )


if __name__ == "__main__":
    main()
