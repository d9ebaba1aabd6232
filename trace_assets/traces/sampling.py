"""Teacher sampling with or without early stopping; shared by ``teacher_traces`` and the loop's rounds.

Without early stopping a problem gets the teacher's ``n`` samples in one call. With it
(``confidence.early_stop``), samples come in waves of one per still-open problem, wave ``w`` with
sampling seed ``seed + w``; after each wave a problem whose confident traces (step-level
confidence at least ``min_step_confidence``) reach ``confident_traces`` stops. What was not
sampled is counted as saved. Paraphrase requests are not stopped early: a paraphrase is kept for
faithfulness, not confidence.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import polars as pl

from trace_assets.experiment import EarlyStopConfig
from trace_assets.generation.cached import CachedGeneration, request_key
from trace_assets.generation.types import ModelSpec, Request, Sampling
from trace_assets.tables import empty_frame
from trace_assets.traces.build import Planned, trace_rows
from trace_assets.traces.schemas import TeacherTraceSchema

Generate = Callable[[ModelSpec, Sampling, list[Request], Callable[[str], None]], CachedGeneration]


@dataclass
class SampledTraces:
    frame: pl.DataFrame
    results: list[CachedGeneration] = field(default_factory=list)
    waves: int = 1
    saved: int = 0  # samples early stopping did not generate

    def metadata(self) -> dict:
        """Generation metadata over every call (a wave each when stopping early)."""
        first = self.results[0].metadata(self.frame.height) if self.results else {"dagster/row_count": self.frame.height}
        if len(self.results) > 1:
            for key in (
                "generated",
                "reused_from_cache",
                "failed_requests",
                "engine_startup_s",
                "engine_starts",
                "engine_reuses",
                "engine_wakes",
                "generate_s",
            ):
                first[key] = sum(result.metadata(0)[key] for result in self.results)
        return {**first, "sampling_waves": self.waves, "generations_saved_by_early_stop": self.saved}


def _wave(planned: list[Planned], model: str, sampling: Sampling) -> list[Planned]:
    """The planned requests re-keyed for one wave's sampling (n = 1, its own seed)."""
    return [
        (style, kind, problem, Request(request_key(r.messages, model, sampling), r.messages, logprobs=True))
        for style, kind, problem, r in planned
    ]


def sample_traces(
    generate: Generate,
    spec: ModelSpec,
    sampling: Sampling,
    planned: list[Planned],
    model: str,
    window: int,
    early_stop: EarlyStopConfig | None,
    log: Callable[[str], None] = print,
) -> SampledTraces:
    """``teacher_traces`` rows for ``planned`` (see ``teacher_requests``)."""
    if early_stop is None or sampling.n == 1:
        result = generate(spec, sampling, [r for *_, r in planned], log)
        return SampledTraces(trace_rows(planned, result.completions, model, sampling, window), [result])
    solves = [p for p in planned if p[1] == "solve"]
    paraphrases = [p for p in planned if p[1] != "solve"]
    frames, results = [], []
    if paraphrases:
        result = generate(spec, sampling, [r for *_, r in paraphrases], log)
        frames.append(trace_rows(paraphrases, result.completions, model, sampling, window))
        results.append(result)
    confident: dict[tuple[str, str], int] = {}
    open_problems = solves
    waves = sent = 0
    for wave in range(sampling.n):
        if not open_problems:
            break
        waves += 1
        wave_sampling = replace(sampling, n=1, seed=sampling.seed + wave)
        wave_planned = _wave(open_problems, model, wave_sampling)
        sent += len(wave_planned)
        result = generate(spec, wave_sampling, [r for *_, r in wave_planned], log)
        results.append(result)
        frame = trace_rows(wave_planned, result.completions, model, wave_sampling, window).with_columns(
            pl.lit(wave, dtype=pl.Int64).alias("sample_index")
        )
        frames.append(frame)
        for row in frame.iter_rows(named=True):
            if row["step_confidence"] is not None and row["step_confidence"] >= early_stop.min_step_confidence:
                key = (row["style"], row["problem_id"])
                confident[key] = confident.get(key, 0) + 1
        open_problems = [
            p for p in open_problems if confident.get((p[0].name, p[2]["problem_id"]), 0) < early_stop.confident_traces
        ]
        log(
            f"early stop: wave {wave + 1}, {len(solves) - len(open_problems)} of {len(solves)} problems have enough confident traces"
        )
    saved = len(solves) * sampling.n - sent
    frame = pl.concat(frames) if frames else empty_frame(TeacherTraceSchema)
    return SampledTraces(frame, results, waves=waves, saved=saved)
