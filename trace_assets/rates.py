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

Without the results file (an installed package, away from the repository) the rates are the
earlier built-in constants, and ``describe`` says so.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
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

    def sft_tokens_per_s(self, billions: float) -> float:
        return self.sft.at(billions)

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
