"""Plain types shared by every generation backend."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 256
    n: int = 1
    seed: int = 0

    @classmethod
    def of(cls, settings, **overrides) -> Sampling:
        """The sampling of an experiment's model section (its ``sampling`` settings), ``overrides`` applied:
        what GenerationResource.settings sends, and what dry-run keys the cache lookups with."""
        return cls(**(settings.model_dump() | overrides))

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]

    def identity(self) -> dict:
        """The parameters that decide the completions, as a request's key records them. Greedy decoding
        (temperature 0) draws nothing at random, so its seed is recorded as 0 whatever it was set to:
        an untrained arm evaluated once per training seed then asks for the same answers three times,
        and greedy keys made with seed 0 (judges, seed-0 evaluations) stay what they were."""
        identity = asdict(self)
        if self.temperature == 0:
            identity["seed"] = 0
        return identity


@dataclass(frozen=True)
class ModelSpec:
    """What a backend needs to start a model; ``path`` is already resolved (see models.resolve_model)."""

    name: str
    path: str
    backend: str = "vllm"  # vllm | openai | transformers
    dtype: str = "bfloat16"
    max_model_len: int = 2048
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    max_concurrency: int = 8
    timeout_s: float = 120.0


@dataclass(frozen=True)
class Request:
    """One prompt; the backend returns ``sampling.n`` completions for it."""

    key: str
    messages: list[dict]
    json_schema: dict | None = None
    prompt: str | None = None  # a raw prompt (already formatted) instead of chat messages
    # Record the sampled tokens' log-probabilities (teacher traces: step-level confidence). Not part
    # of the key: they describe a completion, they don't change it. Off elsewhere, since vLLM then
    # also detokenizes every token on its own.
    logprobs: bool = False

    def __hash__(self) -> int:  # messages are lists; requests are identified by key
        return hash(self.key)


@dataclass
class Completion:
    key: str
    sample_index: int
    text: str
    finish_reason: str
    prompt_tokens: int
    output_tokens: int
    error: str | None = None
    # Per output token: the sampled token's log-probability and where its text ends in ``text``
    # (characters). None where the backend or an older cache row did not record them.
    token_logprobs: list[float] | None = None
    token_ends: list[int] | None = None


@dataclass
class GenerationStats:
    startup_s: float = 0.0
    generate_s: float = 0.0
    output_tokens: int = 0
    completions: int = 0
    failures: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def output_tokens_per_s(self) -> float:
        return self.output_tokens / self.generate_s if self.generate_s > 0 else 0.0


def messages_hash(messages: list[dict], model: str, sampling: Sampling) -> str:
    """Identity of a generation: the exact chat, model and sampling parameters (see :meth:`Sampling.identity`)."""
    payload = json.dumps({"messages": messages, "model": model, "sampling": sampling.identity()}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]
