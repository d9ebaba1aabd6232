"""GPU-hour estimates of an experiment's steps from the measured throughput rates
(:mod:`trace_assets.rates`): the formulas dry-run (trace_assets/cli.py) and the closed loop's round
estimates (trace_assets/loop/rounds.py) share."""

from __future__ import annotations

import re

from trace_assets.experiment import Experiment
from trace_assets.rates import Rates

# Measured: bench/gpu_scaling.py on H200s, a 0.4B-parameter student, bf16, batch 16 per GPU, after a
# warm-up run: 11,994 tokens/s on one GPU, 18,926 on two (DDP), i.e. 79% efficiency per added GPU.
DP_EFFICIENCY = 18926 / (2 * 11994)
ASSUMED_TRACE_TOKENS = 300  # mean completion length for GSM8K-style traces
ASSUMED_JUDGE_TOKENS = 60


def model_billions(name: str) -> float:
    """Parameter count in billions read from a model name ("Qwen2.5-72B" -> 72); 0.5 when it doesn't say.
    A mixture of experts counts its active parameters ("Qwen3-235B-A22B" -> 22): the rates scale by
    FLOPs per token, and a token passes through only those."""
    active = re.search(r"\d\s*[bB]-[aA](\d+(?:\.\d+)?)[bB]\b", name.replace("_", "."))
    if active and float(active.group(1)) > 0:
        return float(active.group(1))
    match = re.search(r"(\d+(?:\.\d+)?)\s*[bB]\b", name.replace("_", "."))
    if match and float(match.group(1)) > 0:  # "-0B" says nothing (and would divide by zero)
        return float(match.group(1))
    match = re.search(r"([1-9]\d*)\s*[mM]\b", name)
    return float(match.group(1)) / 1000 if match else 0.5


def generation_gpu_hours(tokens: float, billions: float, shape: str, rates: Rates, gpus: int = 1) -> float:
    """Batched vLLM decoding in ``shape`` ("sampled": teacher, "greedy": judge and evaluation) plus one
    engine start-up holding the step's ``gpus``; tensor parallelism adds GPUs, not speed per GPU."""
    return tokens / rates.decode_tokens_per_s(billions, shape) / 3600 + rates.startup_s[shape] * gpus / 3600


def eval_gpu_hours(tokens: float, billions: float, checkpoints: int, rates: Rates) -> float:
    """A student's evaluations: greedy decoding in one engine per architecture, swapping checkpoints."""
    decode = tokens / rates.decode_tokens_per_s(billions, "greedy")
    return (decode + rates.eval_startup_s + rates.eval_swap_s * (checkpoints - 1)) / 3600


def sft_tokens_per_s(billions: float, rates: Rates, processes: int = 1) -> float:
    """Per GPU; data-parallel processes each lose a share to gradient all-reduce."""
    return rates.sft_tokens_per_s(billions) * (1.0 if processes == 1 else DP_EFFICIENCY)


def sft_gpu_hours(tokens: float, runs: int, billions: float, rates: Rates, processes: int = 1) -> float:
    """``runs`` SFT runs over ``tokens`` in all: the tokens at the measured rate, and each run's fixed
    cost (launch, model load, compilation, save) on each of its processes' GPUs."""
    return (tokens / sft_tokens_per_s(billions, rates, processes) + runs * rates.sft_run_overhead_s * processes) / 3600


def completion_tokens(experiment: Experiment) -> tuple[int, int]:
    """Assumed tokens of one teacher trace and one judge verdict: a completion is at most max_tokens long."""
    return (
        min(ASSUMED_TRACE_TOKENS, experiment.teacher.sampling.max_tokens),
        min(ASSUMED_JUDGE_TOKENS, experiment.judge.sampling.max_tokens),
    )
