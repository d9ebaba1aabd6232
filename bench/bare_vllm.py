"""A plain vLLM script: the baseline our generation step is compared against.

    python bench/bare_vllm.py PROMPTS.json MODEL_PATH [--eager] [--max-tokens N] [--temperature T] [--n N]
    python bench/bare_vllm.py PROMPTS.json MODEL_PATH --shapes '[{"name": "greedy", "temperature": 0, ...}]' [--raw]

PROMPTS.json is a list of chat message lists (or, with --raw, of prompt strings). One engine;
each shape is one ``LLM.chat`` (``LLM.generate``) call over all prompts, timed around that call.
A shape with a ``seed`` gives every request that seed, as our step does on a GPU. Prints one JSON
line per shape with the engine's start-up (import included) and the throughput.

``--repeats N`` makes each shape N calls, each with its own seed, and takes the last as the shape's
figure: a warm call, kernels compiled at first use already compiled (issue 25: bare's first call in a
fresh engine was 1.4-1.6x slower than its second). ``--gc-freeze`` moves what exists after the engine's
start out of the garbage collector's sight before each call, as our worker does, so a user setting it
is the reference.
"""

import argparse
import gc
import json
import time

STARTED = time.perf_counter()

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("prompts")
    parser.add_argument("model")
    parser.add_argument("--eager", action="store_true")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--max-tokens", type=int, default=192)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--n", type=int, default=1)
    parser.add_argument("--shapes", help="JSON list of sampling settings; overrides the single-shape flags")
    parser.add_argument("--raw", action="store_true", help="prompts are strings for LLM.generate")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.3)
    parser.add_argument("--repeats", type=int, default=1, help="calls per shape; the last (warm) one is the figure")
    parser.add_argument("--gc-freeze", action="store_true", help="gc.freeze() before each call, as our worker")
    args = parser.parse_args()

    from vllm import LLM, SamplingParams
    from vllm.platforms import current_platform

    with open(args.prompts) as handle:
        prompts = json.load(handle)
    shapes = (
        json.loads(args.shapes)
        if args.shapes
        else [
            {"name": "default", "temperature": args.temperature, "top_p": args.top_p, "max_tokens": args.max_tokens, "n": args.n}
        ]
    )
    llm = LLM(
        model=args.model,
        dtype=args.dtype,
        max_model_len=2048,
        enforce_eager=args.eager,
        gpu_memory_utilization=args.gpu_memory_utilization,
        seed=0,
        # as our worker: seeded requests on vLLM-CPU need whole-prompt prefills (vllm_worker._cpu_seeding)
        **({"enable_chunked_prefill": False} if current_platform.is_cpu() else {}),
    )
    startup = time.perf_counter() - STARTED
    if args.repeats == 1:  # no warm call of its own: a short untimed one per shape compiles what sampling first uses
        for shape in shapes:
            warm = SamplingParams(temperature=shape["temperature"], max_tokens=16, n=shape.get("n", 1), seed=shape.get("seed"))
            llm.generate(prompts[:64], warm, use_tqdm=False) if args.raw else llm.chat(prompts[:64], warm, use_tqdm=False)
    for shape in shapes:
        calls = []
        for repeat in range(args.repeats):
            seed = shape.get("seed")
            params = SamplingParams(
                temperature=shape["temperature"],
                top_p=shape.get("top_p", 1.0),
                max_tokens=shape["max_tokens"],
                n=shape.get("n", 1),
                seed=None if seed is None else seed + repeat,
                logprobs=shape.get("logprobs"),
                flat_logprobs=shape.get("flat_logprobs", False),
            )
            if args.gc_freeze:
                gc.unfreeze()
                gc.collect()
                gc.freeze()
            started = time.perf_counter()
            outputs = llm.generate(prompts, params) if args.raw else llm.chat(prompts, params)
            elapsed = time.perf_counter() - started
            tokens = sum(len(sample.token_ids) for o in outputs for sample in o.outputs)
            calls.append((elapsed, tokens))
            del outputs
        elapsed, tokens = calls[-1]
        print(
            json.dumps(
                {
                    "bare": True,
                    "shape": shape["name"],
                    "startup_s": round(startup, 2),
                    "generate_s": round(elapsed, 3),
                    "output_tokens": tokens,
                    "output_tokens_per_s": round(tokens / elapsed, 1),
                    "calls": [{"generate_s": round(s, 3), "output_tokens": t} for s, t in calls],
                    "gc_freeze": args.gc_freeze,
                }
            ),
            flush=True,
        )
