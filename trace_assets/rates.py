"""Throughput rates for dry-run's GPU-hour estimates, read from the GPU benchmark's results. Pure
(but for one ``git`` call naming the file's commit date in the note).

``bench/gpu.py`` writes ``bench/results/gpu.json`` (``TRACE_ASSETS_BENCH_RESULTS`` names another
file): the rates of our own steps on one GPU for a model of one size (a Qwen2.5-0.5B-shaped model,
402M parameters): SFT training tokens/s and its MFU, vLLM output tokens/s in the evaluation shape
(greedy, one completion per prompt) and the teacher shape (sampled, four per prompt, with
log-probabilities), and engine start-up seconds.

The rule for other sizes, per GPU (a model spread over several GPUs by tensor parallelism gains
GPUs, not speed per GPU): a model no larger than the measured one gets the measured rate (never
faster: small models are bound by per-step overheads, not FLOPs); a larger one gets the measured
rate scaled down by its FLOPs per token (6 x params trained, 2 x params generated), i.e. it is
assumed to use the GPU's FLOPs exactly as well as the measured model did. For SFT that is close
(MFU grows a little with size). For decoding it is pessimistic: a 0.4B model decodes at a few
percent of peak FLOPs (its time goes to scheduling, sampling and reading weights each step) while a
large one, batched, uses the FLOPs several times better; generation hours of larger models are an
upper bound. Engine start-up is taken as measured (larger models load for longer).

The file's ``sections.study_135m`` (optional) holds what the GPU study measured for a small model
(SmolLM2-135M-Instruct as teacher, judge and student on one H100, bench/results/gpu_study/): eager SFT
tokens/s, the seconds of a torchrun launch, of a run besides its tokens, a compile per compiled run and
the first run's warm-up, vLLM engine starts cold (empty compile cache) and warm, a judge verdict's seconds,
and (optional) the share of the synthetic word problems (and, under ``teacher.countdown``, of Countdown's) on
which the 135M teacher wrote an eligible right trace in its samples, from which dry-run expects how many problems the G, W and mixture arms keep
(:meth:`Rates.teacher_right_rate`; an assumption for another experiment: it depends on the teacher, the
problems and the eligibility policy). A model nearer
that size than the bench's (on a log scale: up to the geometric mean of the two, 0.23B) gets those
figures; a larger one the bench's as above. A 0.2-0.3B student therefore gets one or the other, not a
blend: neither was measured between them. The launch and the cold engine's extra seconds apply at every
size (a launch imports Python, torch and TRL whatever the model; a cold engine compiles its graph).

Without the results file (an installed package, away from the repository) the rates are the
earlier built-in constants, and ``describe`` says so.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from trace_assets.errors import InputError
from trace_assets.experiment import PROJECT_ROOT

RESULTS_FILE = Path("bench") / "results" / "gpu.json"
SHAPES = ("greedy", "sampled")  # evaluation and judge; teacher


class BenchResultsError(InputError):
    """The benchmark results file is unreadable or lacks a figure dry-run needs."""


@dataclass(frozen=True)
class Rate:
    """``tokens_per_s`` per GPU measured at ``billions`` parameters: the same for smaller models,
    scaled down by FLOPs per token (proportional to parameters) for larger ones."""

    tokens_per_s: float
    billions: float

    def at(self, billions: float) -> float:
        return self.tokens_per_s * min(1.0, self.billions / billions)


@dataclass(frozen=True)
class SmallModelRates:
    """``sections.study_135m``: a small model's figures from the GPU study (see the module's docstring)."""

    source: str  # where they were measured
    billions: float
    sft_tokens_per_s: float  # eager, tokens of the examples (prompt and completion), not padding
    sft_launch_s: float  # one torchrun launch (a checkpoints step); without sft_per_run_s its runs' loads and saves too
    sft_compile_per_run_s: float  # a compiled run's extra seconds over an eager one, warm inductor cache
    sft_first_run_s: dict[bool, float]  # the study's first run's one-time warm-up, by ``training.compile``
    engine_cold_s: float  # a vLLM engine with an empty compile cache (a model's first on a fresh machine)
    engine_warm_s: float  # a later engine of the same architecture (the compile cache is in the data folder)
    judge_verdict_s: float  # one judge verdict: reading the trace and rubric dominates, not its few output tokens
    sft_per_run_s: float = 0.0  # a run's own seconds in a launch outside the trainer (its model load and save)
    # building a ``local:`` model's folder from its GGUF (models.resolve_model), once per data folder
    local_model_prep_s: float = 0.0
    # by synthetic task (gsm8k: the word problems), the share of problems with an eligible right trace among
    # the teacher's samples of each, and how many samples a problem that was measured at
    teacher_right: dict[str, tuple[float, int]] = field(default_factory=dict)
    # eager with TRL's fused LM head (training.fused_lm_head), as sft_tokens_per_s; None: unmeasured (its rate then)
    sft_fused_tokens_per_s: float | None = None


@dataclass(frozen=True)
class SftCosts:
    """What an SFT estimate needs for one student: tokens/s per GPU and the fixed seconds."""

    tokens_per_s: float
    launch_s: float  # per torchrun launch
    run_s: float  # per run besides its tokens (compile, or the bench's load, compile and save)
    first_run_s: float  # once per student: the first run's warm-up


@dataclass(frozen=True)
class Rates:
    source: str  # the results file, relative to the repository; "" for the built-in constants
    device: str
    sft: Rate
    decode: dict[str, Rate]  # "greedy" (evaluation, judge) and "sampled" (teacher)
    startup_s: dict[str, float]  # one engine start, per shape
    eval_startup_s: float  # one engine start for a student's checkpoints (one per architecture)
    eval_swap_s: float  # loading the next checkpoint's weights into that engine
    sft_mfu: float | None = None
    peak_flops: float | None = None
    sft_run_overhead_s: float = 0.0  # one SFT run's launch, imports, model load, compilation and save
    small: SmallModelRates | None = None  # sections.study_135m

    def sft_tokens_per_s(self, billions: float) -> float:
        return self.sft.at(billions)

    def is_small(self, billions: float) -> bool:
        """Whether a model of ``billions`` gets the small model's figures: nearer its size than the bench's,
        on a log scale."""
        return self.small is not None and billions <= math.sqrt(self.small.billions * self.sft.billions)

    def sft_costs(self, billions: float, compiled: bool, *, fused: bool) -> SftCosts:
        """The small eager student's figures (plus a compile a run where compiled; its fused-LM-head rate
        where ``fused`` and measured) up to the middle size; above it the bench's compiled 0.4B figures, its
        fixed cost a run less the launch they share (an eager larger student is charged the compile too: not
        measured)."""
        small = self.small
        if small is not None and self.is_small(billions):
            run_s = small.sft_per_run_s + (small.sft_compile_per_run_s if compiled else 0.0)
            rate = small.sft_fused_tokens_per_s if fused and small.sft_fused_tokens_per_s else small.sft_tokens_per_s
            return SftCosts(rate, small.sft_launch_s, run_s, small.sft_first_run_s[compiled])
        launch = small.sft_launch_s if small else 0.0
        return SftCosts(self.sft.at(billions), launch, max(0.0, self.sft_run_overhead_s - launch), 0.0)

    def engine_start_s(self, billions: float, shape: str, cold: bool = False) -> float:
        """One vLLM engine start in ``shape`` ("sampled", "greedy", or "eval": a student's checkpoints);
        ``cold``: the model's first engine of the study, its compile cache empty."""
        small = self.small
        if small is not None and self.is_small(billions):
            return small.engine_cold_s if cold else small.engine_warm_s
        warm = self.eval_startup_s if shape == "eval" else self.startup_s[shape]
        return warm + (small.engine_cold_s - small.engine_warm_s if small and cold else 0.0)

    def judge_verdict_s(self) -> float:
        """The least seconds a verdict takes at any size (a larger judge reads no faster); 0 unmeasured."""
        return self.small.judge_verdict_s if self.small else 0.0

    def teacher_right_rate(self, billions: float, task: str) -> float | None:
        """For a teacher of ``billions`` on ``task``'s synthetic problems (the caller's condition), the chance
        that one sample is an eligible right trace, such that independent samples give the measured share of
        problems with one (``1 - (1 - share) ** (1 / samples)``); None where unmeasured (a larger teacher,
        another task)."""
        small = self.small
        if small is None or not self.is_small(billions) or task not in small.teacher_right:
            return None
        share, samples = small.teacher_right[task]
        return 1 - (1 - share) ** (1 / samples)

    def decode_tokens_per_s(self, billions: float, shape: str) -> float:
        return self.decode[shape].at(billions)

    def describe(self) -> str:
        """Where the rates come from and the rule for other sizes, for dry-run's closing note."""
        greedy, sampled = self.decode["greedy"], self.decode["sampled"]
        if not self.source:
            return (
                f"no {RESULTS_FILE} (not run from the repository): built-in rates from an earlier H200 bench, "
                f"SFT {self.sft.tokens_per_s / 1e3:.0f}k tok/s, larger students and all decoding from FLOPs at "
                "assumed utilisation; no engine start-up"
            )
        mfu = f" (MFU {self.sft_mfu:.2f})" if self.sft_mfu else ""
        utilisation = ""
        if self.peak_flops:
            share = greedy.tokens_per_s * 2 * greedy.billions * 1e9 / self.peak_flops
            utilisation = f", {share:.1%} of peak FLOPs"
        return (
            f"rates measured on {self.device} by bench/gpu.py ({self.source}{committed(self.source)}): "
            f"SFT {self.sft.tokens_per_s / 1e3:.0f}k tok/s at {self.sft.billions:.2f}B{mfu}, decode "
            f"{greedy.tokens_per_s / 1e3:.0f}k tok/s greedy / {sampled.tokens_per_s / 1e3:.0f}k sampled at "
            f"{greedy.billions:.2f}B{utilisation}; engine start-up {self.startup_s['sampled']:.0f} s per teacher "
            f"engine, {self.startup_s['greedy']:.0f} s per judge engine, {self.eval_startup_s:.0f} s per student "
            f"evaluated, {self.sft_run_overhead_s:.0f} s per SFT run besides its tokens; larger models scaled by FLOPs at the measured utilisation (for generation an upper "
            "bound: larger models decode at higher utilisation), smaller ones at the measured rates"
        ) + self.describe_small()

    def describe_small(self) -> str:
        small = self.small
        if small is None:
            return ""
        return (
            f"; models up to {math.sqrt(small.billions * self.sft.billions):.2f}B at the {small.billions * 1e3:.0f}M "
            f"model's figures ({small.source}): eager SFT {small.sft_tokens_per_s / 1e3:.0f}k tok/s"
            + (f" ({small.sft_fused_tokens_per_s / 1e3:.0f}k with the fused LM head)" if small.sft_fused_tokens_per_s else "")
            + f", "
            f"{small.sft_launch_s:.0f} s a launch, {small.sft_per_run_s:.1f} s a run besides its tokens, "
            f"+{small.sft_compile_per_run_s:.0f} s a compiled run, first run "
            f"+{small.sft_first_run_s[False]:.0f} s eager / +{small.sft_first_run_s[True]:.0f} s compiled; engine "
            f"{small.engine_cold_s:.0f} s cold, {small.engine_warm_s:.0f} s warm; "
            f"{small.judge_verdict_s * 1e3:.1f} ms a judge verdict at least"
            + "".join(
                f"; its teacher wrote an eligible right trace for {share:.1%} of the synthetic {task} problems in {samples} samples"
                for task, (share, samples) in small.teacher_right.items()
            )
        )


# The earlier constants (bench/gpu_scaling.py, H200, bf16: a 0.4B student at 12,000 tokens/s; 790 TFLOP/s
# measured for bf16 matmuls; assumed 35% utilisation for SFT, 15% for batched decoding), as Rates:
# min(12,000, 790e12 x 0.35 / (6 x params)) is 12,000 up to 3.84B and FLOPs-scaled above.
BUILT_IN = Rates(
    source="",
    device="H200 (built-in)",
    sft=Rate(12000.0, 790e12 * 0.35 / (6 * 12000.0) / 1e9),
    decode={shape: Rate(790e12 * 0.15 / (2 * 0.5e9), 0.5) for shape in SHAPES},
    startup_s={"greedy": 0.0, "sampled": 0.0},
    eval_startup_s=0.0,
    eval_swap_s=0.0,
)


def results_path() -> Path:
    configured = os.environ.get("TRACE_ASSETS_BENCH_RESULTS")
    return Path(configured) if configured else PROJECT_ROOT / RESULTS_FILE


def load_rates(path: Path | None = None) -> Rates:
    """The rates in the results file, or the built-in ones when there is none; a
    ``BenchResultsError`` naming the file and key when it is malformed."""
    path = path or results_path()
    if not path.exists():
        return BUILT_IN
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as problem:
        raise BenchResultsError(f"{path}: cannot read the GPU benchmark results ({problem})") from None

    def lookup(key: str, required: bool = True) -> object:
        value = results
        for part in key.split("."):
            if not isinstance(value, dict) or part not in value:
                if not required:
                    return None
                raise BenchResultsError(f"{path}: no {key!r}; re-run bench/gpu.py (see its docstring) to write it")
            value = value[part]
        return value

    def figure(key: str) -> float:
        value = lookup(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise BenchResultsError(f"{path}: {key!r} is {value!r}, expected a positive number")
        return float(value)

    def optional(key: str) -> float | None:
        return None if lookup(key, required=False) is None else figure(key)

    device, model = lookup("device"), lookup("sections.sft.model")
    if not isinstance(device, str) or not device:
        raise BenchResultsError(f"{path}: 'device' is {device!r}, expected the name of the GPU measured on")
    size = re.search(r"(\d+(?:\.\d+)?)M parameters", model) if isinstance(model, str) else None
    if size is None:
        raise BenchResultsError(f"{path}: 'sections.sft.model' is {model!r}, expected '... <N>M parameters ...'")
    billions = float(size.group(1)) / 1000
    # the generation section's own model size where it records it, else the sft section's (the same model)
    decode_parameters = optional("sections.generation.parameters")
    decode_billions = decode_parameters / 1e9 if decode_parameters else billions
    ours = "sections.generation.ours"
    swaps = lookup("sections.eval.swap_s", required=False) or []
    swaps = [s for s in swaps if isinstance(s, (int, float)) and s > 0] if isinstance(swaps, list) else []
    return Rates(
        source=str(path.relative_to(PROJECT_ROOT)) if path.is_relative_to(PROJECT_ROOT) else str(path),
        small=small_model_rates(path, lookup, figure),
        device=device,
        sft=Rate(figure("sft_tokens_per_s"), billions),
        decode={shape: Rate(figure(f"{ours}.{shape}.output_tokens_per_s"), decode_billions) for shape in SHAPES},
        startup_s={shape: figure(f"{ours}.{shape}.engine_startup_s") for shape in SHAPES},
        eval_startup_s=figure("sections.eval.engine_startup_s") / figure("sections.eval.engine_starts"),
        eval_swap_s=sum(swaps) / len(swaps) if swaps else 0.0,
        # null where bench/gpu.py knows no peak FLOPs for the device
        sft_mfu=optional("sft_mfu"),
        peak_flops=optional("sections.sft.peak_flops"),
        sft_run_overhead_s=optional("sections.sft.run_overhead_s") or 0.0,
    )


SMALL = "sections.study_135m"
# synthetic tasks besides the word problems whose teacher figures sit under sections.study_135m.teacher.<task>
OTHER_TEACHER_TASKS = ("countdown",)


def small_model_rates(path: Path, lookup, figure) -> SmallModelRates | None:
    """``sections.study_135m`` when the file has one; a ``BenchResultsError`` naming the key when it is malformed."""
    if lookup(SMALL, required=False) is None:
        return None

    def optional_figure(key: str) -> float | None:
        return None if lookup(key, required=False) is None else figure(key)

    model, source = lookup(f"{SMALL}.model"), lookup(f"{SMALL}.source")
    size = re.search(r"(\d+(?:\.\d+)?)M parameters", model) if isinstance(model, str) else None
    if size is None:
        raise BenchResultsError(f"{path}: '{SMALL}.model' is {model!r}, expected '... <N>M parameters ...'")
    if not isinstance(source, str) or not source:
        raise BenchResultsError(f"{path}: '{SMALL}.source' is {source!r}, expected where the figures were measured")
    teacher_right: dict[str, tuple[float, int]] = {}
    # the word problems' figures at the section's top level, another synthetic task's under its name
    for task, prefix in (("gsm8k", f"{SMALL}.teacher"), *((t, f"{SMALL}.teacher.{t}") for t in OTHER_TEACHER_TASKS)):
        share, samples = optional_figure(f"{prefix}.problems_with_a_right_trace"), lookup(f"{prefix}.samples", required=False)
        if share is not None and not share < 1:
            raise BenchResultsError(f"{path}: '{prefix}.problems_with_a_right_trace' is {share!r}, expected a share below 1")
        if (share is None) != (samples is None) or (
            samples is not None and (isinstance(samples, bool) or not isinstance(samples, int) or samples < 1)
        ):
            raise BenchResultsError(
                f"{path}: '{prefix}.samples' is {samples!r}, expected the whole number of samples a problem "
                "'problems_with_a_right_trace' was measured at (both or neither)"
            )
        if share is not None and isinstance(samples, int):
            teacher_right[task] = (share, samples)
    return SmallModelRates(
        source=source,
        billions=float(size.group(1)) / 1000,
        sft_tokens_per_s=figure(f"{SMALL}.sft.eager_tokens_per_s"),
        sft_launch_s=figure(f"{SMALL}.sft.launch_s"),
        sft_compile_per_run_s=figure(f"{SMALL}.sft.compile_per_run_s"),
        sft_first_run_s={False: figure(f"{SMALL}.sft.first_run_s.eager"), True: figure(f"{SMALL}.sft.first_run_s.compiled")},
        engine_cold_s=figure(f"{SMALL}.engine.cold_startup_s"),
        engine_warm_s=figure(f"{SMALL}.engine.warm_startup_s"),
        judge_verdict_s=figure(f"{SMALL}.judge.seconds_per_verdict"),
        sft_per_run_s=optional_figure(f"{SMALL}.sft.per_run_s") or 0.0,
        local_model_prep_s=optional_figure(f"{SMALL}.local_model.prep_s") or 0.0,
        teacher_right=teacher_right,
        sft_fused_tokens_per_s=optional_figure(f"{SMALL}.sft.fused_tokens_per_s"),
    )


def committed(source: str) -> str:
    """ ", committed <date>" for a file in the repository with no uncommitted changes, else ", not
    committed" or "" (no git, or not a repository)."""
    if Path(source).is_absolute():
        return ""

    def git(*args: str) -> str | None:
        try:
            run = subprocess.run(["git", *args, "--", source], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return run.stdout.strip() if run.returncode == 0 else None

    changed, date = git("status", "--porcelain"), git("log", "-1", "--format=%cs")
    if changed is None or date is None:
        return ""
    return ", not committed" if changed or not date else f", committed {date}"
