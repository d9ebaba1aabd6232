"""Generation through the DuckDB cache: only what is missing for (messages, model, sampling) is generated."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from trace_assets.generation.backends import Backend
from trace_assets.generation.cache_store import cached_completions, store_completions
from trace_assets.generation.types import Completion, GenerationStats, ModelSpec, Request, Sampling, messages_hash


@dataclass
class CachedGeneration:
    """Completions for every request (by request key and sample index) and what it took."""

    completions: dict[tuple[str, int], Completion]
    generated: int
    reused: int
    failed: int
    stats: GenerationStats = field(default_factory=GenerationStats)

    def metadata(self, rows: int) -> dict:
        """What the generating asset shows in the UI: rows, cache reuse, failures and speed."""
        return {
            "dagster/row_count": rows,
            "generated": self.generated,
            "reused_from_cache": self.reused,
            "failed_requests": self.failed,
            "engine_startup_s": round(self.stats.startup_s, 1),
            # engines this call started, running ones (kept from an earlier call) it reused, and sleeping ones
            # (gpu.sleep_engines) of an earlier run or step it woke rather than started
            **engine_metadata([self]),
            "output_tokens_per_s": round(self.stats.output_tokens_per_s, 1),
        }


# what every generating asset records of its vLLM engines (bench/study_run.py counts them per step)
ENGINE_COUNTS = ("engine_starts", "engine_reuses", "engine_wakes")


def engine_metadata(results: Iterable[CachedGeneration | None]) -> dict[str, float]:
    """A step's vLLM engine starts, reuses and wakes (ENGINE_COUNTS) over its generation calls (None: a call
    not made), and the seconds its engines spent generating (``generate_s``: metadata.WORK_SECONDS)."""
    made = [result for result in results if result is not None]
    counts = {key: sum(result.stats.extra.get(key, 0) for result in made) for key in ENGINE_COUNTS}
    return {**counts, "generate_s": round(sum(result.stats.generate_s for result in made), 2)}


def request_key(messages: list[dict], model: str, sampling: Sampling, json_schema: dict | None = None) -> str:
    """Content address of a generation: messages (or a raw prompt as one message), schema, model, sampling."""
    chat = messages if json_schema is None else [*messages, {"role": "schema", "content": str(json_schema)}]
    return messages_hash(chat, model, sampling)


def prompt_request(prompt: str, model: str, sampling: Sampling) -> Request:
    """A raw-prompt request, keyed like a one-message chat."""
    return Request(request_key([{"role": "raw", "content": prompt}], model, sampling), [], prompt=prompt)


@dataclass
class _Lookup:
    """One model's requests against the cache: what is there, what is missing, and a writer for the rest.

    ``scheduled`` maps the keys that earlier jobs of the same call generate to their lookups: such
    requests are not generated again here but taken from that job afterwards (:meth:`share`), and
    this job's own missing keys are added to it."""

    database: Path
    spec: ModelSpec
    sampling: Sampling
    requests: list[Request]
    log: Callable[[str], None]
    scheduled: dict[str, _Lookup] = field(default_factory=dict)
    failed: int = 0

    def __post_init__(self) -> None:
        unique = list({request.key: request for request in self.requests}.values())
        n = self.sampling.n
        self.cached = cached_completions(self.database, [request.key for request in unique])
        absent = [r for r in unique if any((r.key, i) not in self.cached for i in range(n))]
        self.shared = [r for r in absent if r.key in self.scheduled]
        self.missing = [r for r in absent if r.key not in self.scheduled]
        self.scheduled.update((r.key, self) for r in self.missing)
        self.reused = sum(1 for r in unique for i in range(n) if (r.key, i) in self.cached)
        also = f", {len(self.shared)} generated for an earlier job" if self.shared else ""
        self.log(f"{len(unique) - len(absent)} prompts cached{also}, {len(self.missing)} to generate with {self.spec.name}")

    def persist(self, batch: list[Completion]) -> None:
        store_completions(self.database, self.spec.name, batch)
        self.failed += sum(1 for completion in batch if completion.error is not None)
        for completion in batch:
            if completion.error is None:
                self.cached[(completion.key, completion.sample_index)] = completion

    def share(self) -> None:
        """Take the completions of ``shared`` requests from the jobs that generated them (counted as reused)."""
        for request in self.shared:
            generated = self.scheduled[request.key].cached
            for index in range(self.sampling.n):
                if (request.key, index) in generated:
                    self.cached[(request.key, index)] = generated[(request.key, index)]
                    self.reused += 1

    def result(self, stats: GenerationStats) -> CachedGeneration:
        return CachedGeneration(self.cached, generated=stats.completions, reused=self.reused, failed=self.failed, stats=stats)


def generate_with_cache(
    database: Path,
    backend: Backend,
    spec: ModelSpec,
    sampling: Sampling,
    requests: list[Request],
    log: Callable[[str], None] = print,
) -> CachedGeneration:
    """Look up every request in the cache, generate the missing ones, persist each batch as it lands.

    ``Request.key`` must be ``request_key(...)`` of the request, so the cache is content-addressed:
    a changed prompt, model or sampling parameter is a different key and is generated afresh.
    """
    lookup = _Lookup(database, spec, sampling, requests, log)
    stats = backend.generate(spec, sampling, lookup.missing, lookup.persist, log) if lookup.missing else GenerationStats()
    return lookup.result(stats)


def generate_many_with_cache(
    database: Path,
    backend: Backend,
    jobs: list[tuple[ModelSpec, Sampling, list[Request]]],
    log: Callable[[str], None] = print,
) -> list[CachedGeneration]:
    """:func:`generate_with_cache` for several models in one ``backend.generate_many`` call (vLLM:
    one engine per architecture). Only missing requests are generated, each once: a request that
    several jobs share (the same key: the same prompt, model and sampling, as an untrained model's
    greedy answers evaluated once per training seed) is generated for the first and served to the
    others. A model whose requests are all cached is never loaded."""
    scheduled: dict[str, _Lookup] = {}
    lookups = [_Lookup(database, spec, sampling, requests, log, scheduled) for spec, sampling, requests in jobs]
    pending = [(spec, sampling, lookup.missing) for (spec, sampling, _), lookup in zip(jobs, lookups)]
    if any(lookup.missing for lookup in lookups):
        stats = backend.generate_many(pending, lambda index, batch: lookups[index].persist(batch), log)
    else:
        stats = [GenerationStats() for _ in jobs]
    for lookup in lookups:
        lookup.share()
    return [lookup.result(result) for lookup, result in zip(lookups, stats)]
