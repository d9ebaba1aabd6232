"""One SFT + evaluation partition of a small student through the CUDA path, with our training and
generation code, measuring training tokens/s and evaluation wall time.

    python bench/gpu_sft_eval.py --tokenizer TOKENIZER_DIR [--layers 24 --hidden 896 ...]

The student is a Qwen2.5-0.5B-shaped model with random weights built from a config (no model hub
on the GPU machine): the throughput figures are those of a real 0.5B training and generation run;
its accuracy is meaningless. Training data is the H recipe (human reference solutions) over
synthetic problems. Evaluation uses the transformers backend, because vLLM is not installable on
that machine; on a GPU install (`pip install -e .[gpu]`) eval_results uses vLLM.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _student import add_student_arguments, build_student_and_data  # bench/ is on sys.path as the script's folder


def main() -> None:
    parser = argparse.ArgumentParser()
    add_student_arguments(parser)
    parser.add_argument("--eval-max-tokens", type=int, default=256)
    parser.add_argument("--eval-batch-size", type=int, default=64)
    args = parser.parse_args()

    import torch
    from transformers import AutoTokenizer

    from trace_assets.answers import extract_answer, numbers_match
    from trace_assets.experiment import TrainingConfig
    from trace_assets.generation.backends import TransformersBackend
    from trace_assets.generation.types import ModelSpec, Request, Sampling
    from trace_assets.training.format import student_prompt
    from trace_assets.training.sft import TrainRun, train_sft

    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(json.dumps({"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "torch": torch.__version__}))
    work = Path(tempfile.mkdtemp(prefix="gpu-sft-"))
    base, parameters, examples, test = build_student_and_data(args, work)
    settings = TrainingConfig(
        max_steps=args.steps, batch_size=args.batch_size, learning_rate=2e-5, max_length=512, eval_fraction=0.02, seeds=[0]
    )
    result = train_sft(TrainRun(str(base), examples, 0, str(work / "checkpoint"), device, "bfloat16"), settings)
    print(
        json.dumps(
            {
                "stage": "sft",
                "parameters": parameters,
                "steps": args.steps,
                "batch_size": args.batch_size,
                "train_tokens": result.train_tokens,
                "wall_s": round(result.wall_s, 2),
                "train_tokens_per_s": round(result.train_tokens / result.wall_s, 1),
                "final_train_loss": next((r["train_loss"] for r in reversed(result.log) if r["train_loss"] is not None), None),
                "eval_loss": next((r["eval_loss"] for r in reversed(result.log) if r["eval_loss"] is not None), None),
            }
        )
    )

    checkpoint_tokenizer = AutoTokenizer.from_pretrained(result.path)
    requests = [Request(f"t{i}", [], prompt=student_prompt(p.question, checkpoint_tokenizer)) for i, p in enumerate(test)]
    completions = {}
    backend = TransformersBackend(device=device, batch_size=args.eval_batch_size)
    started = time.perf_counter()
    stats = backend.generate(
        ModelSpec(name="checkpoint", path=result.path, dtype="bfloat16"),
        Sampling(temperature=0.0, max_tokens=args.eval_max_tokens, n=1),
        requests,
        lambda batch: completions.update({c.key: c for c in batch}),
        log=lambda message: None,
    )
    wall = time.perf_counter() - started
    correct = sum(numbers_match(extract_answer(completions[f"t{i}"].text).answer, str(p.answer)) for i, p in enumerate(test))
    print(
        json.dumps(
            {
                "stage": "eval",
                "backend": "transformers",
                "problems": len(test),
                "wall_s": round(wall, 2),
                "load_s": round(stats.startup_s, 2),
                "output_tokens": stats.output_tokens,
                "output_tokens_per_s": round(stats.output_tokens_per_s, 1),
                "accuracy_random_weights": correct / len(test),
            }
        )
    )


if __name__ == "__main__":
    main()
