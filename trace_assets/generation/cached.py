"""Generation through the DuckDB cache: only what is missing for (messages, model, sampling) is generated."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from trace_assets.generation.backends import Backend
from trace_assets.generation.types import Completion, GenerationStats, ModelSpec, Request, Sampling, messages_hash
from trace_assets.generation.cache_store import cached_completions, store_completions


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
            "generate_s": round(self.stats.generate_s, 1),
            "output_tokens_per_s": round(self.stats.output_tokens_per_s, 1),
        }


def request_key(messages: list[dict], model: str, sampling: Sampling, json_schema: dict | None = None) -> str:
    """Content address of a generation: messages (or a raw prompt as one message), schema, model, sampling."""
    chat = messages if json_schema is None else [*messages, {"role": "schema", "content": str(json_schema)}]
    return messages_hash(chat, model, sampling)


def prompt_request(prompt: str, model: str, sampling: Sampling) -> Request:
    """A raw-prompt request, keyed like a one-message chat."""
    return Request(request_key([{"role": "raw", "content": prompt}], model, sampling), [], prompt=prompt)


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
    unique = list({request.key: request for request in requests}.values())
    cached = cached_completions(database, [request.key for request in unique])
    missing = [r for r in unique if any((r.key, i) not in cached for i in range(sampling.n))]
    reused = sum(1 for r in unique for i in range(sampling.n) if (r.key, i) in cached)
    log(f"{len(unique) - len(missing)} prompts cached, {len(missing)} to generate with {spec.name}")
    failed = 0

    def persist(batch: list[Completion]) -> None:
        nonlocal failed
        store_completions(database, spec.name, batch)
        failed += sum(1 for completion in batch if completion.error is not None)
        for completion in batch:
            if completion.error is None:
                cached[(completion.key, completion.sample_index)] = completion

    stats = backend.generate(spec, sampling, missing, persist, log) if missing else GenerationStats()
    return CachedGeneration(cached, generated=stats.completions, reused=reused, failed=failed, stats=stats)
