"""GPU benchmarks: our generation, evaluation and SFT steps against the bare tools, in one run each.

    python bench/gpu.py generation --tokenizer TOKENIZER_DIR    # teacher and eval shapes vs bare LLM.chat
    python bench/gpu.py eval --tokenizer TOKENIZER_DIR          # 8 checkpoints, one engine, vs bare generation
    python bench/gpu.py sft --tokenizer TOKENIZER_DIR           # packed SFT through TRL vs a bare compiled loop
    python bench/gpu.py sleep                                   # an engine asleep through an SFT run, woken after

Every section builds a Qwen2.5-0.5B-shaped model with random weights from a config (there is no
model hub on the GPU machine; see _student.py): the speed figures are those of a real 0.5B model,
its answers are noise. Each section merges its figures into bench/results/gpu.json (``--output``),
keyed as docs/benchmarks.md quotes them, with the device it ran on.

What is compared, and how:
- generation: 1,319 chat prompts (the size of GSM8K's test set), like for like (issue 25). Bare: two
  ``LLM.chat`` calls over all of them in one engine (bench/bare_vllm.py --repeats 2 --gc-freeze), the
  second, warm one timed. Ours: two ``GenerationResource.generate`` calls of one resource (the path
  teacher_traces and eval_results take: worker process, streaming, the DuckDB cache and its writes),
  the second, in the kept engine, timed. Both with the same engine settings and sampling (per-request
  seeds, as ours uses on a GPU; the sampled shape with flat log-probabilities on both sides), for a
  random-weight 0.4B model and SmolLM2-135M-Instruct's real weights.
- eval: K checkpoints of one architecture (the base and K-1 perturbed copies) through
  ``GenerationResource.generate_many`` and its DuckDB cache, as eval_results does, against a plain
  vLLM script evaluating them in one engine with the same weight reload (bench/bare_eval.py) and
  against a fresh bare engine per checkpoint; per checkpoint, engine starts included.
- sleep: SmolLM2-135M-Instruct's engine as the study's stages use it with ``gpu.sleep_engines``: it
  answers the test prompts, a training step's claim puts it to sleep, a real SFT run (torchrun) has the
  card, the next call wakes it and answers again; against a fresh engine's (warm) start for the same
  answers, with the completions compared (a wake that lost the weights would answer otherwise).
- sft: GSM8K-length traces (150-400 tokens), packed. Ours: ``train_sft`` (TRL, packing, padding-free
  FlexAttention, fused AdamW, torch.compile). Bare: a hand-written loop over the same packed rows
  with the same model, attention, optimizer and compile. Tokens/s after warm-up steps, and MFU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
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


def merge_results(path: Path, section: str, figures: dict, summary: dict, stale: tuple[str, ...] = ()) -> None:
    """Write ``figures`` under ``section`` and the top-level ``summary`` keys into the results file,
    removing the ``stale`` top-level keys (figures the section no longer measures)."""
    results = json.loads(path.read_text()) if path.exists() else {}
    for key in stale:
        results.pop(key, None)
    results.update(summary)
    # sections can come from different runs and cards: each names its own
    results.setdefault("sections", {})[section] = {"device": device_name(), **figures}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({section: figures, **summary}, indent=2))


def progress(message: str) -> None:
    """A line in the log (stderr) as each part of a section ends, with its seconds: a call cut off by its
    time limit still shows how far it got and what each part took."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


def test_problems(count: int):
    from trace_assets.problems.synthetic import generate_problems

    return generate_problems(count, seed=1, min_steps=2, max_steps=6)


# --- generation --------------------------------------------------------------------------------


def run_bare(script: str, arguments: list[str], prefix: str, env: dict | None = None) -> tuple[list[dict], float]:
    """A bare-tool script of bench/ in a process of its own (eager on a CPU, as our resource runs vLLM
    there): its JSON result lines (those starting ``{"<prefix>"``) and the process's wall seconds."""
    command = [sys.executable, str(ROOT / "bench" / script), *arguments] + (["--eager"] if device_name() == "cpu" else [])
    started = time.perf_counter()
    output = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if output.returncode != 0:
        sys.stderr.write(output.stderr[-6000:])
        raise SystemExit(f"bench/{script} failed with exit {output.returncode}")
    return [json.loads(line) for line in output.stdout.splitlines() if line.startswith(f'{{"{prefix}"')], wall


def bare_generation(model: str, prompts_path: Path, shapes: list[dict], memory: float, repeats: int = 1) -> list[dict]:
    """bench/bare_vllm.py; with ``repeats`` > 1 each shape's figure is its last, warm call, and the
    collector is frozen before each call (as our worker does)."""
    arguments = [str(prompts_path), model, "--shapes", json.dumps(shapes), "--gpu-memory-utilization", str(memory)]
    arguments += ["--repeats", str(repeats), "--gc-freeze"] if repeats > 1 else []
    return run_bare("bare_vllm.py", arguments, "bare")[0]


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


# teacher_traces samples with log-probabilities (step-level confidence), read flat on both sides; evaluation is greedy
# (the shapes' names are the ones trace_assets/rates.py reads dry-run's decoding rates and engine starts by)
GENERATION_SHAPES = {
    "greedy": {"temperature": 0.0, "top_p": 1.0, "max_tokens": 256, "n": 1, "seed": 0, "logprobs": None},
    "sampled": {
        "temperature": 0.7,
        "top_p": 0.95,
        "max_tokens": 256,
        "n": 4,
        "seed": 0,
        "logprobs": 0,
        "flat_logprobs": True,
    },
}


def like_for_like(model: str, name: str, messages: list, work: Path, memory: float) -> dict:
    """One model's shapes, bare and ours, each on its second (warm) call in a running engine: bare's
    two ``LLM.chat`` calls in one engine, the collector frozen (bench/bare_vllm.py --repeats 2
    --gc-freeze); ours two ``GenerationResource.generate`` calls of one resource, which keeps its
    engine, each with its own seed and request keys (so the second is generated, not read from the cache)."""
    from trace_assets.generation.cached import request_key
    from trace_assets.generation.types import ModelSpec, Request, Sampling
    from trace_assets.resources import DataResource, GenerationResource, GPUResource

    prompts_path = work / f"prompts-{name}.json"
    prompts_path.write_text(json.dumps(messages))
    shapes = [{"name": shape, **params} for shape, params in GENERATION_SHAPES.items()]
    started = time.perf_counter()
    bare = {run["shape"]: run for run in bare_generation(model, prompts_path, shapes, memory, repeats=2)}
    progress(f"bare {name} done in {time.perf_counter() - started:.1f} s")
    ours: dict = {}
    for shape, params in GENERATION_SHAPES.items():
        data = DataResource(data_dir=str(work / f"ours-{name}-{shape}"))  # an empty cache: everything is generated
        generation = GenerationResource(gpu=GPUResource(memory_fraction=memory), data=data)
        spec = ModelSpec(name=f"bench-{name}", path=model, dtype="bfloat16", max_model_len=2048)
        calls = []
        try:
            for repeat in range(2):
                settings = {k: v for k, v in params.items() if k not in ("logprobs", "flat_logprobs")}
                sampling = Sampling(**{**settings, "seed": params["seed"] + repeat})
                with_logprobs = params["logprobs"] is not None
                # a key of its own per call: a greedy request's key ignores the seed, and the cache would answer it
                key_name = f"{spec.name}#call{repeat}"
                requests = [Request(request_key(m, key_name, sampling), m, logprobs=with_logprobs) for m in messages]
                calls.append(our_generation(generation, spec, sampling, requests))
                progress(f"ours {name} {shape} call {repeat + 1} done in {calls[-1]['wall_s']:.1f} s")
        finally:
            generation.close()
        ours[shape] = {
            **calls[-1],
            # the engine the first call started (the second reused it): dry-run's engine start for the shape
            "engine_startup_s": calls[0]["engine_startup_s"],
            "first_call": calls[0],
            "ratio_vs_bare": round(calls[-1]["output_tokens_per_s"] / bare[shape]["output_tokens_per_s"], 3),
        }
    return {"device": device_name(), "model": model, "prompts": len(messages), "bare": bare, "ours": ours}


GENERATION_MODELS = ("random", "smollm2")


def generation_figures(recorded: dict, runs: dict[str, dict]) -> tuple[dict, dict, tuple[str, ...]]:
    """The generation section, its headline figures and the stale top-level keys after a call that ran the
    models in ``runs`` (``random``, ``smollm2``: like_for_like's figures, each with its device; ``random``'s
    with the model's ``parameters`` too). A model not run keeps what ``recorded`` (the section gpu.json
    holds) has for it, and its headline figures are left alone, so one call per model builds the section.
    The random model's figures are the section's top level, where dry-run reads them (parameters,
    ours.<shape>); SmolLM2's are under ``smollm2``."""
    if "random" in runs:
        section = {**runs["random"], **({"smollm2": recorded["smollm2"]} if "smollm2" in recorded else {})}
    else:
        section = dict(recorded)
    if "smollm2" in runs:
        section["smollm2"] = runs["smollm2"]
    summary = {}
    for name, suffix in (("random", ""), ("smollm2", "_smollm2")):
        if name in runs:
            summary[f"generation_ratio_greedy{suffix}"] = runs[name]["ours"]["greedy"]["ratio_vs_bare"]
            summary[f"generation_ratio_sampled_flat{suffix}"] = runs[name]["ours"]["sampled"]["ratio_vs_bare"]
    # against a bare script reading log-probabilities as dicts, not like for like (issue 25)
    stale = ("generation_ratio_sampled",) if "random" in runs else ()
    return section, summary, stale


def generation_section(args) -> None:
    """The teacher's (sampled, flat log-probabilities) and the evaluation's (greedy) shapes, like for like
    (issue 25): a random-weight 0.4B model, whose answers run to max_tokens, and SmolLM2-135M-Instruct's real
    weights, whose answers stop early and vary in length, so per-completion costs show. Each model is about
    five minutes on an H100 (four engine starts, ~60 s each cold): ``--models random`` and ``--models smollm2``
    run one each, in a device call of its own, and the second merges beside the first's figures."""
    from trace_assets.models import LOCAL_PREFIX, SMOLLM2, resolve_model

    work = Path(args.work)
    messages = [[{"role": "user", "content": p.question}] for p in test_problems(args.prompts)]
    runs = {}
    if "random" in args.models:
        model, parameters = build_model(args.tokenizer, work / "model", args.layers, args.hidden)
        runs["random"] = {**like_for_like(model, "random", messages, work, args.memory), "parameters": parameters}
    if "smollm2" in args.models:
        smollm2 = resolve_model(LOCAL_PREFIX + SMOLLM2, work / "models")
        runs["smollm2"] = like_for_like(smollm2, "smollm2", messages, work, args.memory)
    output = Path(args.output)
    recorded = json.loads(output.read_text()).get("sections", {}).get("generation", {}) if output.exists() else {}
    section, summary, stale = generation_figures(recorded, runs)
    merge_results(output, "generation", section, {"device": device_name(), **summary}, stale)


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


def bare_eval(prompts_path: Path, checkpoints: list[str], memory: float) -> list[dict]:
    """bench/bare_eval.py: one engine, the checkpoints' weights loaded in turn."""
    # the engine's workers import the reload extension from bench/
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    arguments = [str(prompts_path), *checkpoints, "--gpu-memory-utilization", str(memory)]
    runs, wall = run_bare("bare_eval.py", arguments, "bare_eval", env)
    for run in runs:
        run["process_wall_s"] = round(wall, 2)
    return runs


def eval_section(args) -> None:
    """K checkpoints (``--checkpoints``, 4 by default) through the path eval_results takes
    (GenerationResource.generate_many: the DuckDB cache, one engine, each checkpoint's weights loaded in
    turn) against a plain vLLM script doing the same in one engine (bench/bare_eval.py: the same weight
    reload) and against a fresh bare engine per checkpoint.

    Sized for one device call (at most 600 s): on an H100 the model and its perturbed copies take ~10 s a
    checkpoint, ours an engine start (~65 s) and ~16 s a checkpoint, bare one engine about as much, and
    a fresh engine ~70 s each; K=8 with two fresh engines did not fit the 370 s call it was given. So K is
    4 with one fresh engine (~6.5 minutes). ``--fresh-engines 0`` takes the fresh-engine figure from the
    one-engine run's first checkpoint instead, its engine's start (import included) and its generate: what
    a fresh engine does for one checkpoint, derived rather than measured. Both
    ratios are per checkpoint with the engine starts shared by the K checkpoints, on both sides alike, so
    they compare only at one K: the section and the headline record it (``checkpoints``, ``eval_checkpoints``)."""
    from trace_assets.answers import extract_answer, numbers_match
    from trace_assets.generation.cached import prompt_request
    from trace_assets.generation.types import ModelSpec, Sampling
    from trace_assets.resources import DataResource, GenerationResource, GPUResource
    from trace_assets.students import load_tokenizer
    from trace_assets.training.format import student_prompt

    work = Path(args.work)
    started = time.perf_counter()
    base, _ = build_model(args.tokenizer, work / "model", args.layers, args.hidden)
    paths = [base, *perturbed_copies(base, work / "checkpoints", args.checkpoints - 1, args.noise)]
    progress(f"model and {len(paths) - 1} perturbed copies ready in {time.perf_counter() - started:.1f} s")
    tokenizer = load_tokenizer(base)
    problems = test_problems(args.prompts)
    prompts = [student_prompt(p.question, tokenizer) for p in problems]
    sampling = Sampling(temperature=0.0, max_tokens=256, n=1, seed=0)
    # an empty cache: every answer generated and written, as a first evaluation of these checkpoints
    generation = GenerationResource(gpu=GPUResource(memory_fraction=args.memory), data=DataResource(data_dir=str(work / "eval")))
    jobs = [
        (
            ModelSpec(name=p, path=p, dtype="bfloat16", max_model_len=2048),
            sampling,
            [prompt_request(t, p, sampling) for t in prompts],
        )
        for p in paths
    ]
    quiet = lambda message: print(message, file=sys.stderr)  # noqa: E731
    started = time.perf_counter()
    try:
        results = generation.generate_many(jobs, quiet)
    finally:
        generation.close()
    ours_wall = time.perf_counter() - started
    progress(f"ours {len(jobs)} checkpoints done in {ours_wall:.1f} s")
    stats = [result.stats for result in results]
    texts = [{key: completion.text for (key, _), completion in result.completions.items()} for result in results]

    (prompts_path := work / "raw_prompts.json").write_text(json.dumps(prompts))
    started = time.perf_counter()
    one_engine = bare_eval(prompts_path, paths, args.memory)
    progress(f"bare one engine, {len(paths)} checkpoints, done in {time.perf_counter() - started:.1f} s")
    fresh = []
    for path in paths[: args.fresh_engines]:
        started = time.perf_counter()
        fresh += bare_eval(prompts_path, [path], args.memory)
        progress(f"bare fresh engine {len(fresh)} done in {time.perf_counter() - started:.1f} s")
    one_engine_s = one_engine[0]["startup_s"] + sum(run["load_s"] + run["generate_s"] for run in one_engine)
    # without engines of their own: the one engine's start and first checkpoint, what a fresh engine does for one
    fresh_runs = fresh or one_engine[:1]
    fresh_per_checkpoint_s = statistics.mean(run["startup_s"] + run["load_s"] + run["generate_s"] for run in fresh_runs)

    def accuracy(by_prompt: list[str]) -> float:
        return sum(numbers_match(extract_answer(text).answer, str(p.answer)) for text, p in zip(by_prompt, problems)) / len(
            problems
        )

    last_requests = jobs[-1][2]
    ours_last = [texts[-1][r.key] for r in last_requests]
    ours_previous = [texts[-2][r.key] for r in jobs[-2][2]]
    bare_last = one_engine[-1]["texts"]
    per_checkpoint = ours_wall / len(jobs)
    figures = {
        "checkpoints": len(jobs),
        "prompts": len(prompts),
        "ours_wall_s": round(ours_wall, 1),
        "ours_per_checkpoint_s": round(per_checkpoint, 2),
        "engine_starts": sum(s.extra.get("engine_starts", 0) for s in stats),
        "engine_startup_s": round(sum(s.startup_s for s in stats if s.extra.get("engine_starts")), 1),
        "swap_s": [round(s.extra.get("swap_s", 0.0), 3) for s in stats],
        "generate_s": [round(s.generate_s, 2) for s in stats],
        "bare_one_engine": {
            "startup_s": one_engine[0]["startup_s"],
            "load_s": [run["load_s"] for run in one_engine],
            "generate_s": [run["generate_s"] for run in one_engine],
            "total_s": round(one_engine_s, 1),
            "per_checkpoint_s": round(one_engine_s / len(jobs), 2),
        },
        "bare_fresh_engines": {
            "engines": len(fresh),
            **({} if fresh else {"from": "bare_one_engine's start and first checkpoint (no engines of their own)"}),
            "startup_s": [run["startup_s"] for run in fresh_runs],
            "generate_s": [run["generate_s"] for run in fresh_runs],
            "per_checkpoint_s": round(fresh_per_checkpoint_s, 2),
        },
        "eval_ratio_vs_bare_one_engine": round(per_checkpoint / (one_engine_s / len(jobs)), 3),
        "eval_ratio_vs_bare_fresh_engines": round(per_checkpoint / fresh_per_checkpoint_s, 3),
        "identical_greedy_completions_vs_bare_one_engine": round(
            sum(a == b for a, b in zip(ours_last, bare_last)) / len(prompts), 4
        ),
        "identical_to_previous_checkpoint_in_shared_engine": round(
            sum(a == b for a, b in zip(ours_last, ours_previous)) / len(prompts), 4
        ),
        "accuracy_ours_last": accuracy(ours_last),
        "accuracy_bare_last": accuracy(bare_last),
        "note": "ours through the generation cache (every answer written to DuckDB), timed with its engine's start; bare "
        "in one engine timed from its import to the last answer (bench/bare_eval.py); random weights: accuracies are ~0 "
        "by construction, and near-flat logits make greedy bf16 completions sensitive to batch composition, so the "
        "identical share is lower than with trained weights; the share identical to the previous checkpoint shows the "
        "swap changed the weights; both ratios are per checkpoint with the engine starts shared by `checkpoints` "
        "checkpoints on both sides, comparable only at the same count",
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
            "eval_ratio_vs_bare_one_engine": figures["eval_ratio_vs_bare_one_engine"],
            "eval_ratio_vs_bare_fresh_engines": figures["eval_ratio_vs_bare_fresh_engines"],
        },
        # against 8 bare generation calls without an engine start, not like for like (issue 25)
        stale=("eval_bare_generate_seconds",),
    )


# --- an engine asleep through SFT ---------------------------------------------------------------


def sleep_section(args) -> None:
    """gpu.sleep_engines on one card: engine start, answers, sleep (a training claim), SFT, wake, answers;
    then a fresh engine's warm start and answers. Engine compile cache in ``--work``, warm after the first."""
    import torch

    from trace_assets.answers import extract_answer, numbers_match
    from trace_assets.experiment import TrainingConfig
    from trace_assets.generation.cached import request_key
    from trace_assets.generation.types import ModelSpec, Request, Sampling
    from trace_assets.models import LOCAL_PREFIX, SMOLLM2, resolve_model
    from trace_assets.resources import DataResource, GenerationResource, GPUResource
    from trace_assets.training.sft import TrainRun, train_one_launched

    work = Path(args.work)
    model = resolve_model(LOCAL_PREFIX + SMOLLM2, work / "models")
    problems = test_problems(args.prompts)
    messages = [[{"role": "user", "content": p.question}] for p in problems]
    # one card (a claim on a machine of several would take a free one, and the engine would not sleep); empty
    # generation caches, so every call generates (a cache left by an earlier run would answer them all)
    gpu = GPUResource(
        devices="0", memory_fraction=args.memory, compile_cache=str(work / "compile_cache"), lock_dir=str(work / "locks")
    )
    caches = Path(tempfile.mkdtemp(prefix="sleep-", dir=work))
    spec = ModelSpec(name="bench-sleep", path=model, dtype="bfloat16", max_model_len=2048)
    greedy = Sampling(temperature=0.0, max_tokens=256, n=1, seed=0)
    quiet = lambda message: print(message, file=sys.stderr)  # noqa: E731

    def answers(generation, call: str) -> tuple[list[str], dict, float]:
        requests = [Request(request_key(m, f"{spec.name}#{call}", greedy), m) for m in messages]
        started = time.perf_counter()
        result = generation.generate(spec, greedy, requests, log=quiet)
        wall = time.perf_counter() - started
        texts = [result.completions[(r.key, 0)].text for r in requests]
        return texts, dict(result.stats.extra, startup_s=round(result.stats.startup_s, 2)), round(wall, 2)

    def accuracy(texts: list[str]) -> float:
        return round(
            sum(numbers_match(extract_answer(t).answer, str(p.answer)) for t, p in zip(texts, problems)) / len(problems), 4
        )

    def free_gib() -> float:
        return round(torch.cuda.mem_get_info()[0] / 2**30, 1)

    sleeping = GenerationResource(gpu=gpu, data=DataResource(data_dir=str(caches / "sleep")), sleep_engines=True)
    first, first_stats, first_wall = answers(sleeping, "first")
    free_awake = free_gib()
    claimed = time.perf_counter()
    with gpu.claim(1, log=quiet) as cards:  # as the checkpoints step claims its card: the idle engine sleeps
        claim_s = time.perf_counter() - claimed
        free_asleep = free_gib()
        training = TrainingConfig(
            max_steps=args.steps, batch_size=8, max_length=1024, packing=True, eval_fraction=0.0, compile=False
        )
        run = TrainRun(model, realistic_examples(400), 0, str(work / "sft-asleep"), "cuda", "bfloat16")
        sft_started = time.perf_counter()
        train_one_launched(run, training, env={**gpu.environment(cards), "CUDA_VISIBLE_DEVICES": ",".join(cards)})
        sft_s = time.perf_counter() - sft_started
    woken, woken_stats, woken_wall = answers(sleeping, "woken")
    sleeping.backend(spec).close()
    fresh_resource = GenerationResource(gpu=gpu, data=DataResource(data_dir=str(caches / "fresh")))
    fresh, fresh_stats, fresh_wall = answers(fresh_resource, "fresh")
    fresh_resource.close()
    if first_stats.get("engine_starts") != 1 or woken_stats.get("engine_wakes") != 1 or woken_stats.get("engine_starts"):
        raise SystemExit(f"the engine did not start, sleep and wake as measured here: {first_stats} then {woken_stats}")
    figures = {
        "model": "SmolLM2-135M-Instruct",
        "prompts": len(messages),
        "memory_fraction": args.memory,
        "first_call": {"wall_s": first_wall, **first_stats},
        "free_gib_awake": free_awake,
        "claim_s_engine_to_sleep": round(claim_s, 2),
        "free_gib_asleep": free_asleep,
        "sft_steps": args.steps,
        "sft_while_asleep_s": round(sft_s, 1),
        "woken_call": {"wall_s": woken_wall, **woken_stats},
        "fresh_engine_call": {"wall_s": fresh_wall, **fresh_stats},
        "accuracy": {"first": accuracy(first), "woken": accuracy(woken), "fresh": accuracy(fresh)},
        "identical_woken_vs_first": round(sum(a == b for a, b in zip(woken, first)) / len(first), 4),
        "identical_fresh_vs_first": round(sum(a == b for a, b in zip(fresh, first)) / len(first), 4),
    }
    merge_results(
        Path(args.output),
        "engine_sleep",
        figures,
        {
            "engine_wake_s": woken_stats.get("wake_s"),
            "engine_warm_start_s": fresh_stats["startup_s"],
            "engine_sleep_s": figures["claim_s_engine_to_sleep"],
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


def bare_loop(
    model_path: str,
    examples: list[dict],
    max_length: int,
    rows_per_step: int,
    steps: int,
    lr: float,
    fused: bool = True,
    compiling: bool = True,
) -> dict:
    """A hand-written packed SFT loop: flattened rows, position ids restarting per example (the
    document mask), completion-only labels, bf16, fused AdamW, torch.compile, TRL's fused LM head
    (``fused``; without, the model's own loss over the full logits, as ``training.fused_lm_head: false``)."""
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

    if fused:
        add_fused_lm_head(model)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, fused=True)
    compiled = torch.compile(model) if compiling else model  # eager (--eager): as the GPU study trains

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

    warmup, marks, losses, norms = 3, [], [], []
    for step in range(steps):
        ids, labels, positions, real = batch(step)
        if fused:
            outputs = compiled(input_ids=ids, position_ids=positions, labels=labels, fused_lm_head=True)
            loss = -outputs.log_probs.sum() / outputs.label_mask.sum().clamp(min=1)
        else:
            loss = compiled(input_ids=ids, position_ids=positions, labels=labels).loss
        loss.backward()
        norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))  # as the Trainer does (max_grad_norm 1.0)
        losses.append(loss.detach())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        marks.append((time.perf_counter(), real))
    measured = marks[warmup:]
    tokens = sum(real for _, real in measured[1:])
    # read once after the loop (no per-step host sync): where a run that ends non-finite first went wrong
    first_bad = lambda values: next((i for i, ok in enumerate(torch.stack(values).isfinite().tolist()) if not ok), None)  # noqa: E731
    return {
        "tokens_per_s": tokens / (measured[-1][0] - measured[0][0]),
        "final_loss": float(loss.detach()),
        "rows": len(rows),
        "first_loss": float(losses[0]),
        "first_nonfinite_loss_step": first_bad(losses),
        "first_nonfinite_grad_norm_step": first_bad(norms),
    }


def loss_error(final_loss: dict) -> str | None:
    """Why the SFT section records no headline figures, when a side's final loss (``final_loss``: side to
    value, None where none was logged) is not a finite number; None when both are. A run whose loss went
    NaN still runs at full speed (the fused head's NaN run gave MFU 0.38, ratio 1.01), but it trained
    nothing, so its tokens/s is not a figure of training."""
    bad = [f"{side} {loss}" for side, loss in final_loss.items() if loss is None or not math.isfinite(loss)]
    return f"final loss not finite ({', '.join(bad)}): no headline figures recorded" if bad else None


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

    fused = not args.full_logits
    # --eager: neither side compiled, as experiments/gpu_study.yaml trains (training.compile: false); every study
    # run with the fused head trained eagerly and learned, where this bench's compiled fused run went NaN
    section = ("sft" if fused else "sft_full_logits") + ("_eager" if args.eager else "")
    bare = bare_loop(model, examples, args.max_length, args.rows_per_step, args.steps, 1e-5, fused, not args.eager)
    torch.cuda.empty_cache()
    training = TrainingConfig(
        fused_lm_head=fused,
        max_steps=args.steps,
        batch_size=args.rows_per_step,
        max_length=args.max_length,
        packing=True,
        eval_fraction=0.0,
        learning_rate=1e-5,
        logging_steps=args.log_every,
        compile=not args.eager,
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
        # the bare loop's step-0 loss and first non-finite step: NaN from the start or a run gone wrong later
        "bare_losses": {key: bare[key] for key in ("first_loss", "first_nonfinite_loss_step", "first_nonfinite_grad_norm_step")},
    }
    figures["loss"] = "TRL's fused LM head" if fused else "the model's own, over the full logits"
    figures["compiled"] = not args.eager
    logged = [r["train_loss"] for r in result.log if r["train_loss"] is not None]
    final_loss = {"bare": bare["final_loss"], "ours": logged[-1] if logged else None}
    # NaN as text: gpu.json stays JSON that every reader parses
    figures["final_loss"] = {
        side: round(v, 3) if v is not None and math.isfinite(v) else str(v) for side, v in final_loss.items()
    }
    error = loss_error(final_loss)
    if error:
        figures["error"] = error
        merge_results(Path(args.output), section, figures, {})
        raise SystemExit(f"bench/gpu.py sft: {error}")
    # the fused head, compiled, gives the headline figures; --full-logits and --eager the comparisons beside it
    summary = {
        "device": device_name(),
        "sft_tokens_per_s": figures["ours_tokens_per_s"],
        "sft_mfu": figures["ours_mfu"],
        "sft_ratio_vs_bare": figures["ratio_vs_bare"],
    }
    merge_results(Path(args.output), section, figures, summary if section == "sft" else {})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("section", choices=["generation", "eval", "sft", "sleep"])
    parser.add_argument("--tokenizer", help="a tokenizer folder (every section but sleep)")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "bench-gpu"))
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "gpu.json"))
    parser.add_argument("--memory", type=float, default=0.5, help="vLLM gpu_memory_utilization, both sides")
    parser.add_argument("--prompts", type=int, default=1319)
    parser.add_argument(
        "--models",
        nargs="+",
        choices=GENERATION_MODELS,
        default=list(GENERATION_MODELS),
        help="generation: the models to run (one call each on the device tool); the others' recorded figures stay",
    )
    parser.add_argument("--checkpoints", type=int, default=4, help="eval: K, the base and K-1 perturbed copies")
    parser.add_argument(
        "--fresh-engines",
        type=int,
        default=1,
        help="eval: checkpoints also run in a fresh bare engine each (0: derived from the one bare engine's start and first checkpoint)",
    )
    parser.add_argument("--noise", type=float, default=0.02)
    parser.add_argument("--examples", type=int, default=4000)
    parser.add_argument("--max-length", type=int, default=4096)
    parser.add_argument("--rows-per-step", type=int, default=8)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--log-every", type=int, default=10, help="SFT: logging_steps (each logged step syncs)")
    parser.add_argument(
        "--full-logits",
        action="store_true",
        help="SFT: both sides without TRL's fused LM head (training.fused_lm_head: false), into sections.sft_full_logits",
    )
    parser.add_argument(
        "--eager",
        action="store_true",
        help="SFT: neither side compiled (training.compile: false, as the GPU study trains), into sections.sft[_full_logits]_eager",
    )
    parser.add_argument("--layers", type=int, default=24, help="smaller for a quick check of the script on CPU")
    parser.add_argument("--hidden", type=int, default=896)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    Path(args.work).mkdir(parents=True, exist_ok=True)
    if args.section != "sleep" and not args.tokenizer:
        parser.error(f"{args.section} needs --tokenizer")
    {"generation": generation_section, "eval": eval_section, "sft": sft_section, "sleep": sleep_section}[args.section](args)


if __name__ == "__main__":
    main()
