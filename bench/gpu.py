"""GPU benchmarks: our generation, evaluation and SFT steps against the bare tools, in one run each.

    python bench/gpu.py generation --tokenizer TOKENIZER_DIR    # teacher and eval shapes vs bare LLM.chat
    python bench/gpu.py eval --tokenizer TOKENIZER_DIR          # 8 checkpoints, one engine, vs bare generation
    python bench/gpu.py sft --tokenizer TOKENIZER_DIR           # packed SFT through TRL vs a bare compiled loop

Every section builds a Qwen2.5-0.5B-shaped model with random weights from a config (there is no
model hub on the GPU machine; see _student.py): the speed figures are those of a real 0.5B model,
its answers are noise. Each section merges its figures into bench/results/gpu.json (``--output``),
keyed as docs/benchmarks.md quotes them, with the device it ran on.

What is compared, and how:
- generation: 1,319 chat prompts (the size of GSM8K's test set). Bare: one ``LLM.chat`` over all
  of them (bench/bare_vllm.py), timed around that call. Ours: ``GenerationResource.generate``, the
  path teacher_traces and eval_results take (worker process, streaming, the DuckDB cache and its
  writes, teardown), timed around the whole call minus the engine's start-up (from the worker's
  first line to a ready engine, imports included, as bare's ``LLM(...)`` plus its import). Both with
  the same engine settings and sampling (per-request seeds, as ours uses on a GPU).
- eval: K checkpoints of one architecture (the base and K-1 perturbed copies) through
  ``generate_many``, as eval_results does, against K times one bare ``LLM.generate`` of the same
  prompts; the last checkpoint is also run in a fresh engine of its own, for the share of identical
  greedy completions and the accuracy of both.
- sft: GSM8K-length traces (150-400 tokens), packed. Ours: ``train_sft`` (TRL, packing, padding-free
  FlexAttention, fused AdamW, torch.compile). Bare: a hand-written loop over the same packed rows
  with the same model, attention, optimizer and compile. Tokens/s after warm-up steps, and MFU.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BF16_PEAK_FLOPS = {"H100": 989.4e12, "H200": 989.4e12, "A100": 312e12}  # dense bf16, per card


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def peak_flops(name: str) -> float | None:
    return next((flops for key, flops in BF16_PEAK_FLOPS.items() if key in name), None)


def build_model(tokenizer_dir: str, folder: Path, layers: int = 24, hidden: int = 896) -> tuple[str, int]:
    """A Qwen2.5-0.5B-shaped model with random weights and the given tokenizer, saved in bf16."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    if (folder / "config.json").exists():
        return str(folder), int(json.loads((folder / "params.json").read_text())["parameters"])
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=4864,
        num_hidden_layers=layers,
        num_attention_heads=14,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    parameters = sum(p.numel() for p in model.parameters())
    model.save_pretrained(folder)
    # Saved once through the model's own folder, as every checkpoint re-saves it: AutoTokenizer picks
    # the tokenizer class from the model type (Qwen2Tokenizer rewrites the pre-tokenizer), and a base
    # whose tokenizer files differ from its checkpoints' can't share their engine (engine_key).
    tokenizer.save_pretrained(folder)
    AutoTokenizer.from_pretrained(folder).save_pretrained(folder)
    (folder / "params.json").write_text(json.dumps({"parameters": parameters}))
    return str(folder), parameters


def merge_results(path: Path, section: str, figures: dict, summary: dict) -> None:
    """Write ``figures`` under ``section`` and the top-level ``summary`` keys into the results file."""
    results = json.loads(path.read_text()) if path.exists() else {}
    results.update(summary)
    # sections can come from different runs and cards: each names its own
    results.setdefault("sections", {})[section] = {"device": device_name(), **figures}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({section: figures, **summary}, indent=2))


def test_problems(count: int):
    from trace_assets.problems.synthetic import generate_problems

    return generate_problems(count, seed=1, min_steps=2, max_steps=6)


# --- generation --------------------------------------------------------------------------------


def bare_generation(model: str, prompts_path: Path, shapes: list[dict], memory: float, raw: bool = False) -> list[dict]:
    command = [sys.executable, str(ROOT / "bench" / "bare_vllm.py"), str(prompts_path), model]
    command += ["--shapes", json.dumps(shapes), "--gpu-memory-utilization", str(memory)] + (["--raw"] if raw else [])
    if device_name() == "cpu":
        command.append("--eager")  # as our resource runs vLLM on CPU (a quick check of this script)
    output = subprocess.run(command, capture_output=True, text=True)
    if output.returncode != 0:
        sys.stderr.write(output.stderr[-6000:])
        raise SystemExit(f"bare vLLM failed with exit {output.returncode}")
    return [json.loads(line) for line in output.stdout.splitlines() if line.startswith('{"bare"')]


def our_generation(generation, spec, sampling, requests) -> dict:
    started = time.perf_counter()
    result = generation.generate(spec, sampling, requests, log=lambda message: print(message, file=sys.stderr))
    wall = time.perf_counter() - started
    tokens = result.stats.output_tokens
    return {
        "wall_s": round(wall, 2),
        "engine_startup_s": round(result.stats.startup_s, 2),
        "call_minus_startup_s": round(wall - result.stats.startup_s, 2),
        "output_tokens": tokens,
        "output_tokens_per_s": round(tokens / (wall - result.stats.startup_s), 1),
        "generated": result.generated,
        # where the call's time went besides the engine's start: the worker's own loop (enqueue to
        # last completion, as bare's LLM.chat) and the engine's shutdown after the last completion
        "worker_loop_s": round(result.stats.generate_s, 2),
        "teardown_s": round(result.stats.extra.get("teardown_s", 0.0), 2),
    }


def generation_section(args) -> None:
    from trace_assets.generation.cached import request_key
    from trace_assets.generation.types import ModelSpec, Request, Sampling
    from trace_assets.resources import DataResource, GenerationResource, GPUResource

    work = Path(args.work)
    model, parameters = build_model(args.tokenizer, work / "model", args.layers, args.hidden)
    messages = [[{"role": "user", "content": p.question}] for p in test_problems(args.prompts)]
    prompts_path = work / "prompts.json"
    prompts_path.write_text(json.dumps(messages))
    shapes = {
        "greedy": {"temperature": 0.0, "top_p": 1.0, "max_tokens": 256, "n": 1, "seed": 0},
        "sampled": {"temperature": 0.7, "top_p": 0.95, "max_tokens": 256, "n": 4, "seed": 0},
    }
    # teacher_traces records the sampled tokens' log-probabilities (step-level confidence); evaluation doesn't
    logprobs = {"greedy": False, "sampled": True}
    bare = {
        shape: run
        for shape, run in zip(
            [*shapes, "sampled_flat"],
            bare_generation(
                model,
                prompts_path,
                [{"name": s, **p, "logprobs": 0 if logprobs[s] else None} for s, p in shapes.items()]
                # the sampled shape again with vLLM's flat log-probabilities, as ours asks for them
                + [{"name": "sampled_flat", **shapes["sampled"], "logprobs": 0, "flat_logprobs": True}],
                args.memory,
            ),
        )
    }
    figures: dict = {"parameters": parameters, "prompts": len(messages), "bare": bare, "ours": {}}
    for shape, params in shapes.items():
        data = DataResource(data_dir=str(work / f"ours-{shape}"))  # an empty cache: everything is generated
        generation = GenerationResource(gpu=GPUResource(memory_fraction=args.memory), data=data)
        spec = ModelSpec(name="bench-0.5b", path=model, dtype="bfloat16", max_model_len=2048)
        sampling = Sampling(**params)
        requests = [Request(request_key(m, spec.name, sampling), m, logprobs=logprobs[shape]) for m in messages]
        figures["ours"][shape] = our_generation(generation, spec, sampling, requests)
        figures["ours"][shape]["ratio_vs_bare"] = round(
            figures["ours"][shape]["output_tokens_per_s"] / bare[shape]["output_tokens_per_s"], 3
        )
    # against a bare script that also reads flat log-probabilities: the engine-for-engine comparison
    figures["ours"]["sampled"]["ratio_vs_bare_flat_logprobs"] = round(
        figures["ours"]["sampled"]["output_tokens_per_s"] / bare["sampled_flat"]["output_tokens_per_s"], 3
    )
    merge_results(
        Path(args.output),
        "generation",
        figures,
        {
            "device": device_name(),
            "generation_ratio_greedy": figures["ours"]["greedy"]["ratio_vs_bare"],
            "generation_ratio_sampled": figures["ours"]["sampled"]["ratio_vs_bare"],
        },
    )


# --- evaluation ---------------------------------------------------------------------------------


def perturbed_copies(base: str, folder: Path, count: int, noise: float) -> list[str]:
    """``count`` checkpoints of ``base``'s architecture with seeded noise, saved as training saves them."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    paths = []
    for index in range(1, count + 1):
        target = folder / f"checkpoint-{index}"
        if not (target / "config.json").exists():
            model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16).to(device)
            generator = torch.Generator(device=device).manual_seed(index)
            with torch.no_grad():
                for parameter in model.parameters():
                    noise_scale = noise * parameter.float().std()
                    parameter.add_(
                        (torch.randn(parameter.shape, generator=generator, device=device) * noise_scale).to(parameter.dtype)
                    )
            model.save_pretrained(target)
            AutoTokenizer.from_pretrained(base).save_pretrained(target)
            del model
        paths.append(str(target))
    return paths


def eval_section(args) -> None:
    from trace_assets.answers import extract_answer, numbers_match
    from trace_assets.generation.cached import prompt_request
    from trace_assets.generation.types import ModelSpec, Sampling
    from trace_assets.resources import DataResource, GenerationResource, GPUResource
    from trace_assets.students import load_tokenizer
    from trace_assets.training.format import student_prompt

    work = Path(args.work)
    base, _ = build_model(args.tokenizer, work / "model", args.layers, args.hidden)
    paths = [base, *perturbed_copies(base, work / "checkpoints", args.checkpoints - 1, args.noise)]
    tokenizer = load_tokenizer(base)
    problems = test_problems(args.prompts)
    prompts = [student_prompt(p.question, tokenizer) for p in problems]
    sampling = Sampling(temperature=0.0, max_tokens=256, n=1, seed=0)
    generation = GenerationResource(gpu=GPUResource(memory_fraction=args.memory), data=DataResource(data_dir=str(work / "eval")))
    jobs = [
        (
            ModelSpec(name=p, path=p, dtype="bfloat16", max_model_len=2048),
            sampling,
            [prompt_request(t, p, sampling) for t in prompts],
        )
        for p in paths
    ]
    backend = generation.backend(jobs[0][0], keep_engines=False)
    quiet = lambda message: print(message, file=sys.stderr)  # noqa: E731

    texts: dict[int, dict[str, str]] = {}
    started = time.perf_counter()
    stats = backend.generate_many(jobs, lambda i, batch: texts.setdefault(i, {}).update({c.key: c.text for c in batch}), quiet)
    ours_wall = time.perf_counter() - started
    startup = sum(s.startup_s for s in stats if s.extra.get("engine_starts"))

    fresh: dict[str, str] = {}
    last_spec, _, last_requests = jobs[-1]
    fresh_stats = backend.generate(
        last_spec, sampling, last_requests, lambda batch: fresh.update({c.key: c.text for c in batch}), quiet
    )

    (prompts_path := work / "raw_prompts.json").write_text(json.dumps(prompts))
    bare = bare_generation(base, prompts_path, [{"name": "greedy", **asdict(sampling)}], args.memory, raw=True)[0]

    def accuracy(by_key: dict[str, str]) -> float:
        return sum(
            numbers_match(extract_answer(by_key[r.key]).answer, str(p.answer)) for r, p in zip(last_requests, problems)
        ) / len(problems)

    last, previous = texts[len(jobs) - 1], texts[len(jobs) - 2]
    identical = sum(last[r.key] == fresh[r.key] for r in last_requests) / len(last_requests)
    # a swap that left the previous checkpoint's weights in place would answer as that checkpoint did;
    # previous-checkpoint requests have other keys (the model is in the key), so compare by prompt order
    same_as_previous = sum(last[r.key] == previous[q.key] for r, q in zip(last_requests, jobs[-2][2])) / len(last_requests)
    budget = startup + 1.3 * len(jobs) * bare["generate_s"]
    figures = {
        "checkpoints": len(jobs),
        "prompts": len(prompts),
        "ours_wall_s": round(ours_wall, 1),
        "engine_starts": sum(s.extra.get("engine_starts", 0) for s in stats),
        "engine_startup_s": round(startup, 1),
        "swap_s": [round(s.extra.get("swap_s", 0.0), 3) for s in stats],
        "generate_s": [round(s.generate_s, 2) for s in stats],
        "bare_generate_s_one_checkpoint": round(bare["generate_s"], 2),
        "target_s": round(budget, 1),
        "within_target": ours_wall <= budget,
        "fresh_engine_startup_s": round(fresh_stats.startup_s, 1),
        "identical_greedy_completions_vs_fresh_engine": round(identical, 4),
        "identical_to_previous_checkpoint_in_shared_engine": round(same_as_previous, 4),
        "accuracy_shared_engine": accuracy(texts[len(jobs) - 1]),
        "accuracy_fresh_engine": accuracy(fresh),
        "note": "random weights: accuracies are ~0 by construction, and near-flat logits make greedy bf16 completions "
        "sensitive to batch composition, so the identical share vs a fresh engine is lower than with trained weights; "
        "the share identical to the previous checkpoint shows the swap changed the weights",
    }
    merge_results(
        Path(args.output),
        "eval",
        figures,
        {
            "device": device_name(),
            "eval_checkpoints": len(jobs),
            "eval_engine_starts": figures["engine_starts"],
            "eval_seconds": figures["ours_wall_s"],
            "eval_bare_generate_seconds": round(len(jobs) * bare["generate_s"], 1),
        },
    )


# --- SFT ----------------------------------------------------------------------------------------


def realistic_examples(count: int, seed: int = 0) -> list[dict]:
    """GSM8K-like traces: a word problem and a worked solution of several explained steps, 150-400
    tokens (measured and reported by the section), built from the synthetic problems."""
    from trace_assets.problems.synthetic import generate_problems

    rng = random.Random(seed)
    lead = ["First", "Next", "Then", "After that", "Now", "So"]
    filler = [
        "We need to keep track of how many there are at each point, so let us write the amount down.",
        "This is the quantity that changes in this step of the story, and the rest stays the same.",
        "It helps to check the units here: everything is counted in the same items as in the question.",
        "We carry this number forward to the next part of the problem.",
    ]
    examples = []
    for index, problem in enumerate(generate_problems(count, seed=seed, min_steps=2, max_steps=7)):
        lines = []
        for step, line in enumerate(re.sub(r"<<[^>]*>>", "", problem.solution).splitlines()):
            if line.startswith("####"):
                continue
            lines.append(f"{lead[min(step, len(lead) - 1)]}: {line.strip()} {rng.choice(filler)}")
        lines.append(f"The answer is {problem.answer}.\n#### {problem.answer}")
        examples.append(
            {"example_id": f"x{index}", "prompt": problem.question, "completion": "\n".join(lines), "difficulty": problem.steps}
        )
    return examples


def pack_rows(token_lists: list[tuple[list[int], list[int]]], max_length: int) -> list[list[tuple[list[int], list[int]]]]:
    """Best-fit decreasing, as TRL's "bfd": each row holds whole examples, at most max_length tokens."""
    rows: list[list] = []
    space: list[int] = []
    for ids, labels in sorted(token_lists, key=lambda pair: -len(pair[0])):
        ids, labels = ids[:max_length], labels[:max_length]
        best = min((i for i, free in enumerate(space) if free >= len(ids)), key=lambda i: space[i], default=None)
        if best is None:
            rows.append([]), space.append(max_length)
            best = len(rows) - 1
        rows[best].append((ids, labels))
        space[best] -= len(ids)
    return rows


def bare_loop(model_path: str, examples: list[dict], max_length: int, rows_per_step: int, steps: int, lr: float) -> dict:
    """A hand-written packed SFT loop: flattened rows, position ids restarting per example (the
    document mask), completion-only labels, bf16, fused AdamW, torch.compile, TRL's fused LM head."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trace_assets.training.format import student_prompt

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    pairs = []
    for example in examples:
        prompt = tokenizer(student_prompt(example["prompt"], tokenizer), add_special_tokens=False)["input_ids"]
        completion = tokenizer(example["completion"].strip() + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
        pairs.append((prompt + completion, [-100] * len(prompt) + completion))
    rows = pack_rows(pairs, max_length)
    random.Random(0).shuffle(rows)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.bfloat16, attn_implementation="flex_attention").cuda()
    model.config.use_cache = False
    # the same kernel as ours: TRL's fused LM head, only the labelled positions projected, in tiles,
    # so the full-vocabulary logits are never materialised (trace_assets.training.sft.lean_trainer_class)
    from trl.trainer.utils import add_fused_lm_head

    add_fused_lm_head(model)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, fused=True)
    compiled = torch.compile(model)

    def batch(step: int):
        chosen = [rows[(step * rows_per_step + i) % len(rows)] for i in range(rows_per_step)]
        ids = [t for row in chosen for example_ids, _ in row for t in example_ids]
        labels = [t for row in chosen for _, example_labels in row for t in example_labels]
        positions = [p for row in chosen for example_ids, _ in row for p in range(len(example_ids))]
        real = len(ids)
        pad = -len(ids) % max_length
        ids += [tokenizer.pad_token_id] * pad
        labels += [-100] * pad
        positions += [0] * pad
        as_tensor = lambda values: torch.tensor([values], device="cuda")  # noqa: E731
        return as_tensor(ids), as_tensor(labels), as_tensor(positions), real

    warmup, marks = 3, []
    for step in range(steps):
        ids, labels, positions, real = batch(step)
        outputs = compiled(input_ids=ids, position_ids=positions, labels=labels, fused_lm_head=True)
        loss = -outputs.log_probs.sum() / outputs.label_mask.sum().clamp(min=1)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # as the Trainer does (max_grad_norm 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        marks.append((time.perf_counter(), real))
    measured = marks[warmup:]
    tokens = sum(real for _, real in measured[1:])
    return {"tokens_per_s": tokens / (measured[-1][0] - measured[0][0]), "final_loss": float(loss.detach()), "rows": len(rows)}


def sft_section(args) -> None:
    import torch

    from trace_assets.experiment import TrainingConfig
    from trace_assets.models import offline_environment
    from trace_assets.training.sft import TrainRun, train_one_launched

    work = Path(args.work)
    model, parameters = build_model(args.tokenizer, work / "model", args.layers, args.hidden)
    examples = realistic_examples(args.examples)
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    lengths = [len(tokenizer(e["prompt"] + "\n" + e["completion"])["input_ids"]) for e in examples]
    config = AutoConfig.from_pretrained(model)
    # FLOPs per trained token (forward and backward): 6 per weight used in a matmul (the tied
    # embedding once, as the output head; its input side is a lookup) plus causal attention within
    # the token's own example, 12·layers·hidden·(mean tokens attended, about half the example).
    mean_attended = statistics.fmean(length / 2 for length in lengths)
    flops_per_token = 6 * parameters + 12 * config.num_hidden_layers * config.hidden_size * mean_attended
    peak = peak_flops(device_name())

    bare = bare_loop(model, examples, args.max_length, args.rows_per_step, args.steps, 1e-5)
    torch.cuda.empty_cache()
    training = TrainingConfig(
        max_steps=args.steps,
        batch_size=args.rows_per_step,
        max_length=args.max_length,
        packing=True,
        eval_fraction=0.0,
        learning_rate=1e-5,
        logging_steps=args.log_every,
    )
    # the checkpoints asset's path: a torchrun process on the claimed card, timed from launch to saved model
    started = time.perf_counter()
    run = TrainRun(model, examples, 0, str(work / "sft-ours"), "cuda", "bfloat16")
    result = train_one_launched(run, training, env={**offline_environment(), "CUDA_VISIBLE_DEVICES": "0"})
    ours_wall = time.perf_counter() - started
    # TRL counts the padding that rounds each flattened batch up to a multiple of max_length; scale
    # to real tokens by the fill of best-fit-decreasing rows (the packing TRL does, as pack_rows does)
    rows = pack_rows([(list(range(n)), []) for n in lengths], args.max_length)
    real_fraction = sum(lengths) / (len(rows) * args.max_length)
    ours_rate = (result.steady_tokens_per_s or 0.0) * real_fraction
    mfu = lambda rate: round(rate * flops_per_token / peak, 4) if peak else None  # noqa: E731
    figures = {
        "model": f"Qwen2.5-0.5B shape, {parameters / 1e6:.0f}M parameters, vocab {config.vocab_size}",
        "examples": len(examples),
        "example_tokens_median": statistics.median(lengths),
        "example_tokens_p10_p90": [sorted(lengths)[len(lengths) // 10], sorted(lengths)[9 * len(lengths) // 10]],
        "max_length": args.max_length,
        "rows_per_step": args.rows_per_step,
        "steps": args.steps,
        "flops_per_token": round(flops_per_token),
        "peak_flops": peak,
        "bare_tokens_per_s": round(bare["tokens_per_s"]),
        "bare_mfu": mfu(bare["tokens_per_s"]),
        "ours_tokens_per_s": round(ours_rate),
        "ours_mfu": mfu(ours_rate),
        "ours_wall_s": round(ours_wall, 1),
        # the run's cost besides its tokens (launch, imports, model load, compilation, save): dry-run's per-run term
        "run_overhead_s": round(max(0.0, ours_wall - result.train_tokens / result.steady_tokens_per_s), 1)
        if result.steady_tokens_per_s
        else None,
        "log_every": args.log_every,
        "ours_real_token_fraction": round(real_fraction, 4),
        "ratio_vs_bare": round(ours_rate / bare["tokens_per_s"], 3),
        "final_loss": {
            "bare": round(bare["final_loss"], 3),
            "ours": [r["train_loss"] for r in result.log if r["train_loss"]][-1:],
        },
    }
    merge_results(
        Path(args.output),
        "sft",
        figures,
        {
            "device": device_name(),
            "sft_tokens_per_s": figures["ours_tokens_per_s"],
            "sft_mfu": figures["ours_mfu"],
            "sft_ratio_vs_bare": figures["ratio_vs_bare"],
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("section", choices=["generation", "eval", "sft"])
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "bench-gpu"))
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "gpu.json"))
    parser.add_argument("--memory", type=float, default=0.5, help="vLLM gpu_memory_utilization, both sides")
    parser.add_argument("--prompts", type=int, default=1319)
    parser.add_argument("--checkpoints", type=int, default=8)
    parser.add_argument("--noise", type=float, default=0.02)
    parser.add_argument("--examples", type=int, default=4000)
    parser.add_argument("--max-length", type=int, default=4096)
    parser.add_argument("--rows-per-step", type=int, default=8)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--log-every", type=int, default=10, help="SFT: logging_steps (each logged step syncs)")
    parser.add_argument("--layers", type=int, default=24, help="smaller for a quick check of the script on CPU")
    parser.add_argument("--hidden", type=int, default=896)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    Path(args.work).mkdir(parents=True, exist_ok=True)
    {"generation": generation_section, "eval": eval_section, "sft": sft_section}[args.section](args)


if __name__ == "__main__":
    main()
