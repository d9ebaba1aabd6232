"""Benchmark: K checkpoints of one architecture evaluated by one vLLM engine with weight swaps
(what eval_results does) vs a fresh engine per checkpoint (what it did before), on CPU.

    .venv/bin/python bench/eval_engine.py [--checkpoints 4] [--prompts 12] [--max-tokens 160]

The checkpoints are SmolLM2-135M-Instruct (the offline demo model) and K-1 copies with seeded
noise added to every weight (``--noise`` of each tensor's standard deviation), saved like a
training run saves them. The prompts are synthetic test problems in the students' evaluation format,
answered greedily with the engine settings eval_results uses on this machine (GenerationResource:
dtype, eager mode, KV cache size, thread binding). Both paths call the backend directly, without the
generation cache. Prints and writes bench/results/eval_engine_cpu.json: wall seconds of both,
engine starts, swap seconds, and the share of (checkpoint, prompt) pairs whose completions are
identical between the two paths.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def perturbed_copies(base: str, folder: Path, count: int, noise: float) -> list[str]:
    """``count`` checkpoints of ``base``'s architecture, each with its own seeded noise."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    paths = []
    for index in range(1, count + 1):
        target = folder / f"checkpoint-{index}"
        if not (target / "config.json").exists():
            model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16)
            generator = torch.Generator().manual_seed(index)
            with torch.no_grad():
                for parameter in model.parameters():
                    scale = noise * parameter.float().std().item()
                    parameter.add_((torch.randn(parameter.shape, generator=generator) * scale).to(parameter.dtype))
            model.save_pretrained(target)
            AutoTokenizer.from_pretrained(base).save_pretrained(target)
            del model
        paths.append(str(target))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoints", type=int, default=4, help="K, the base model included")
    parser.add_argument("--prompts", type=int, default=12)
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--noise", type=float, default=0.02)
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "bench-eval-engine"))
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "eval_engine_cpu.json"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from trace_assets.generation.cached import prompt_request
    from trace_assets.generation.types import ModelSpec, Sampling
    from trace_assets.models import resolve_model
    from trace_assets.problems.synthetic import generate_problems
    from trace_assets.resources import DataResource, GenerationResource, GPUResource
    from trace_assets.students import load_tokenizer
    from trace_assets.training.format import student_prompt

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    base = resolve_model("local:smollm2-135m-instruct", work / "models")
    paths = [base, *perturbed_copies(base, work / "checkpoints", args.checkpoints - 1, args.noise)]

    gpu = GPUResource()
    generation = GenerationResource(gpu=gpu, data=DataResource(data_dir=str(work)))
    tokenizer = load_tokenizer(base)
    problems = generate_problems(args.prompts, 1, 1, 2, operations=["find", "give"], max_number=9)
    sampling = Sampling(temperature=0.0, max_tokens=args.max_tokens, n=1, seed=0)
    jobs = []
    for path in paths:
        spec = ModelSpec(name=path, path=path, dtype=gpu.resolve_dtype("auto"))
        requests = [prompt_request(student_prompt(p.question, tokenizer), path, sampling) for p in problems]
        jobs.append((spec, sampling, requests))
    backend = generation.backend(jobs[0][0], keep_engines=False)
    quiet = lambda message: None  # noqa: E731

    load_before = os.getloadavg()[0]
    ours: dict[int, dict[str, str]] = {}
    started = time.perf_counter()
    stats = backend.generate_many(jobs, lambda i, batch: ours.setdefault(i, {}).update({c.key: c.text for c in batch}), quiet)
    ours_wall = time.perf_counter() - started

    fresh: dict[int, dict[str, str]] = {}
    fresh_stats = []
    started = time.perf_counter()
    for index, (spec, job_sampling, requests) in enumerate(jobs):
        fresh_stats.append(
            backend.generate(
                spec,
                job_sampling,
                requests,
                lambda batch, i=index: fresh.setdefault(i, {}).update({c.key: c.text for c in batch}),
                quiet,
            )
        )
    fresh_wall = time.perf_counter() - started

    pairs = [(i, r.key) for i, (_, _, requests) in enumerate(jobs) for r in requests]
    identical = sum(ours[i].get(key) == fresh[i].get(key) for i, key in pairs) / len(pairs)
    # the checkpoints do answer differently, so a swap that left the old weights in place would show
    base_texts = [fresh[0][r.key] for r in jobs[0][2]]
    differs_from_base = sum(
        fresh[i][r.key] != base_texts[n] for i in range(1, len(jobs)) for n, r in enumerate(jobs[i][2])
    ) / max(1, (len(jobs) - 1) * len(problems))
    result = {
        "device": f"cpu: {cpu_name()} ({os.cpu_count()} cores)",
        "load_average_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],  # a shared machine
        "model": "SmolLM2-135M-Instruct",
        "dtype": jobs[0][0].dtype,
        "checkpoints": len(jobs),
        "prompts": len(problems),
        "max_tokens": args.max_tokens,
        "noise": args.noise,
        "ours": {
            "wall_s": round(ours_wall, 1),
            "engine_starts": sum(s.extra.get("engine_starts", 0) for s in stats),
            # the engine starts on one checkpoint; the others' startup_s is their weight swap
            "engine_startup_s": round(sum(s.startup_s for s in stats if s.extra.get("engine_starts")), 1),
            "swap_s": [round(s.startup_s, 3) for s in stats if not s.extra.get("engine_starts")],
            "generate_s": round(sum(s.generate_s for s in stats), 1),
            "output_tokens": sum(s.output_tokens for s in stats),
        },
        "fresh_engine_per_checkpoint": {
            "wall_s": round(fresh_wall, 1),
            "engine_starts": sum(s.extra.get("engine_starts", 0) for s in fresh_stats),
            "engine_startup_s": [round(s.startup_s, 1) for s in fresh_stats],
            "generate_s": round(sum(s.generate_s for s in fresh_stats), 1),
            "output_tokens": sum(s.output_tokens for s in fresh_stats),
        },
        "speedup": round(fresh_wall / ours_wall, 2),
        "identical_greedy_completions": round(identical, 4),
        "checkpoint_completions_differing_from_base": round(differs_from_base, 4),
    }
    print(json.dumps(result, indent=2))
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
