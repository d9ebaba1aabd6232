"""A plain vLLM script: the baseline our generation step is compared against.

    python bench/bare_vllm.py PROMPTS.json MODEL_PATH [--eager] [--max-tokens N] [--temperature T]

PROMPTS.json is a list of chat message lists. Prints one JSON line with startup and throughput.
"""

import argparse
import json
import time

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
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.3)
    args = parser.parse_args()

    from vllm import LLM, SamplingParams

    with open(args.prompts) as handle:
        conversations = json.load(handle)
    started = time.perf_counter()
    llm = LLM(
        model=args.model,
        dtype=args.dtype,
        max_model_len=2048,
        enforce_eager=args.eager,
        gpu_memory_utilization=args.gpu_memory_utilization,
        seed=0,
    )
    startup = time.perf_counter() - started
    params = SamplingParams(temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens, n=args.n)
    started = time.perf_counter()
    outputs = llm.chat(conversations, params)
    elapsed = time.perf_counter() - started
    tokens = sum(len(sample.token_ids) for o in outputs for sample in o.outputs)
    print(
        json.dumps(
            {
                "bare": True,
                "startup_s": startup,
                "generate_s": elapsed,
                "output_tokens": tokens,
                "output_tokens_per_s": tokens / elapsed,
            }
        )
    )
