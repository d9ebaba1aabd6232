"""GPU-hour estimates of an experiment's steps from the measured throughput rates
(:mod:`trace_assets.rates`): the formulas dry-run (trace_assets/cli.py) and the closed loop's round
estimates (trace_assets/loop/rounds.py) share."""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from trace_assets.experiment import DatasetRecipe, Experiment, ModelConfig, ProblemsConfig, StudentConfig
from trace_assets.generation.types import ModelSpec
from trace_assets.rates import Rates

if TYPE_CHECKING:
    import duckdb

# Measured: bench/gpu_scaling.py on H200s, a 0.4B-parameter student, bf16, batch 16 per GPU, after a
# warm-up run: 11,994 tokens/s on one GPU, 18,926 on two (DDP), i.e. 79% efficiency per added GPU.
DP_EFFICIENCY = 18926 / (2 * 11994)
ASSUMED_TRACE_TOKENS = 300  # mean completion length for GSM8K-style traces
ASSUMED_JUDGE_TOKENS = 60
# Generated problems (the synthetic word problems) are measured, not assumed. SmolLM2's tokenizer on the
# third GPU run's 2,020 H examples (sft_examples in bench/results/gpu_study/third_run/tables.tar): questions
# 3.52 characters a token, human solutions 2.17 (digits and symbols), the chat template 30 tokens a prompt
# (its default system prompt and role markers), 138.8 tokens an example with the end token.
QUESTION_CHARS_PER_TOKEN = 3.52
SOLUTION_CHARS_PER_TOKEN = 2.17
CHAT_TEMPLATE_TOKENS = 30
# The 135M teacher's traces of the synthetic problems, mean tokens, by task (taken for any teacher of them): the
# word problems 91.4 over 16,160 (1,517 of them cut at max_tokens 256; bench/results/gpu_study/second_run.json,
# teacher.mean_tokens); Countdown 86.4 over 21,600 (2,400 cut at 256; countdown_run/tables.tar, judged_traces.n_tokens).
SYNTHETIC_TRACE_TOKENS = {"gsm8k": 91.4, "countdown": 86.4}
# Not measured: one decoding step of a vLLM engine serving a few sequences at once (the closed loop's reviser:
# its max_attempts replies), which then decode at the speed of one rather than at the batched rate. vLLM's
# step with CUDA graphs takes a few ms for a small model; 10 ms is taken as a bound.
ASSUMED_DECODE_STEP_S = 0.01
# A sleeping vLLM engine (gpu.sleep_engines) put to sleep and woken, in place of an engine start: 0.52 s to
# sleep (LLM.sleep level 1: 39.4 GiB freed, the 0.5 GiB of weights copied to CPU memory) and 0.05 s to wake,
# SmolLM2-135M on an H100 (bench/results/gpu.json sections.engine_sleep), against a warm start's 60.7 s
ENGINE_WAKE_S = 0.6
# The failure judge's prompts: one for each distinct wrong answer to a problem (its question, reference and the
# answer) that the rules can't settle. Identical wrong answers make one request, so the prompts are far fewer than
# the answers. Counted in the tables (bench/results/gpu_study/*/tables.tar: the distinct (problem, answer) pairs
# among the judge's failure_modes rows; the fifth run's log has 4,034 cached + 2,713 generated = its 6,747), per
# problem of an arm:
# - the untrained arms (base and few-shot: the same answers for every seed): 1,911, 1,912, 1,910 and 1,913 prompts
#   for 2 arms x 1,319 problems in the third, fourth, fifth and loop GPU runs;
# - the trained arms, the prompts they add: 995 for 2 arms (third), 10,020 for 7 (fourth), 4,837 for 4 (fifth),
#   all of 3 seeds, and 1,199 for the loop run's one arm of one seed. An arm adds about one prompt a problem
#   whatever its seeds: its seeds, trained alike, mostly repeat each other's wrong answers (an arm that learned,
#   H, adds fewer: it is mostly right).
# The figure before (0.68 of all answers, seeds included) counted the judge's rows, duplicates included, and
# overcharged the fifth and sixth runs 1.7-2.1x.
FAILURE_PROMPTS_UNTRAINED = (1911 + 1912 + 1910 + 1913) / (4 * 2 * 1319)
FAILURE_PROMPTS_TRAINED = (995 + 10020 + 4837 + 1199) / ((2 + 7 + 4 + 1) * 1319)
# Of those prompts, the share whose verdict a carried cache already held when it held an earlier run's failure
# verdicts of the same student on the same test problems: 4,034 of 6,747 in the fifth run (the fourth run's cache;
# the same student gives many of the same wrong answers). Charged only on a cache holding failure verdicts of the
# judge (cached_generations: CachedWork.failures), on at most that many prompts.
FAILURE_CACHED_SHARE = 4034 / 6747
# The step's own work per answer of a judged task, before its first verdict: reading the answers, the rules over
# each wrong one, building the prompts and looking them up in the cache: 4 s for the loop run's 3,957 answers and
# 15 s for the fifth run's 18,466 (the logs: step start to "N prompts cached, M to generate").
FAILURE_ANSWER_S = (4 + 15) / (3957 + 18466)


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


def _engine_start_s(billions: float, shape: str, rates: Rates, gpus: int, cold: bool, engine: bool) -> float:
    """One engine start holding ``gpus`` (``cold``: the model's first of the study); 0 where ``engine`` is
    False: the step runs on an engine an earlier step of its run started (:func:`shares_engine`)."""
    return rates.engine_start_s(billions, shape, cold) * gpus if engine else 0.0


def generation_gpu_hours(
    tokens: float, billions: float, shape: str, rates: Rates, gpus: int = 1, cold: bool = False, engine: bool = True
) -> float:
    """Batched vLLM decoding in ``shape`` ("sampled": teacher, "greedy": judge and evaluation) plus one
    engine start-up holding the step's ``gpus`` (``cold``: the model's first engine of the study; none
    where ``engine`` is False: the step runs on an engine an earlier step of its run started, see
    :func:`shares_engine`); nothing to generate starts no engine. Tensor parallelism adds GPUs, not
    speed per GPU."""
    if tokens <= 0:
        return 0.0
    start = _engine_start_s(billions, shape, rates, gpus, cold, engine)
    return (tokens / rates.decode_tokens_per_s(billions, shape) + start) / 3600


def few_sequences_gpu_hours(
    sequences: int,
    max_tokens: int,
    billions: float,
    shape: str,
    rates: Rates,
    gpus: int = 1,
    cold: bool = False,
    engine: bool = True,
) -> float:
    """``sequences`` completions of up to ``max_tokens`` each, sampled in one call (the loop's reviser): they
    decode together, so at least ``max_tokens`` steps of ASSUMED_DECODE_STEP_S (an assumption) and at least
    their tokens at the measured batched rate (a large model), an upper bound where replies end early; plus
    an engine start unless ``engine`` is False."""
    if sequences <= 0:
        return 0.0
    decode = max(max_tokens * ASSUMED_DECODE_STEP_S, sequences * max_tokens / rates.decode_tokens_per_s(billions, shape))
    return (decode + _engine_start_s(billions, shape, rates, gpus, cold, engine)) / 3600


def judge_gpu_hours(
    verdicts: float,
    verdict_tokens: float,
    billions: float,
    rates: Rates,
    gpus: int = 1,
    cold: bool = False,
    engine: bool = True,
) -> float:
    """A judge's verdicts: its output tokens at the greedy rate, but at least the measured seconds a verdict
    (reading each prompt, a whole trace and the rubric, costs more than writing the verdict), plus one engine
    start unless ``engine`` is False (the judge runs on an engine a step before it started: see
    :func:`shares_engine`)."""
    if verdicts <= 0:
        return 0.0
    decode = max(verdicts * verdict_tokens / rates.decode_tokens_per_s(billions, "greedy"), verdicts * rates.judge_verdict_s())
    return (decode + _engine_start_s(billions, "greedy", rates, gpus, cold, engine)) / 3600


# What an experiment's model section sets of a vLLM engine's key (VllmBackend._engine_key: weight_swap.engine_key
# of the model's files, backend, dtype, context length and parallelism, then the GenerationResource's engine
# settings, which are the same for every model of a run).
ENGINE_FIELDS = frozenset({"model", "backend", "dtype", "max_model_len", "tensor_parallel_size", "data_parallel_size"})


def shares_engine(running: ModelConfig, then: ModelConfig) -> bool:
    """Whether a call for ``then`` runs on the vLLM engine an earlier call of the same Dagster run started for
    ``running``: the run's GenerationResource keeps its engine for the next call of the same engine key, so
    a model of the same name under the same engine settings reuses it (loading its weights where another
    checkpoint's are in) rather than starting one."""
    return running.backend == "vllm" and running.model_dump(include=set(ENGINE_FIELDS)) == then.model_dump(
        include=set(ENGINE_FIELDS)
    )


def evaluation_engine(student: StudentConfig) -> ModelConfig:
    """The engine a student's evaluation starts, as a model section: evaluation/step.py asks for
    ``ModelSpec(path, dtype)`` of each checkpoint, every other engine setting at ModelSpec's default, and the
    trained checkpoints keep the base model's engine files, so it is the student's model under those settings
    (a later call of the same run for that model and settings, the loop's failure judge, reuses it)."""
    defaults = {f.name: f.default for f in fields(ModelSpec) if f.name in ENGINE_FIELDS - {"model", "dtype"}}
    return ModelConfig(model=student.model, dtype=student.dtype, **defaults)


def failure_judge_on_evaluation_engine(experiment: Experiment, trains: bool = True) -> bool:
    """Whether the failure judge runs on the evaluation engine its stage (or round) left running: the last
    student's (eval_results walks the checkpoints table, dataset outer and student inner, grouping by
    engine in order of appearance), of the judge's model and engine settings. Where checkpoints are
    trained (``trains``) that engine serves them, and they share the base model's engine only where the
    base is a local folder: a hub id's trained checkpoints get an engine of their own, which a judge
    naming the hub id does not match."""
    last = list(experiment.students.values())[-1]
    return shares_engine(evaluation_engine(last), experiment.judge) and (local_model(last.model) or not trains)


def wakes_for_evaluation(asleep: ModelConfig | None, student: StudentConfig) -> bool:
    """Whether ``student``'s evaluation wakes the engine left asleep for it (``gpu.sleep_engines``): one of its
    evaluation engine's key. A hub id's trained checkpoints get an engine key of their own (no folder to keep
    the base's files) and may run first, so no wake is counted for one."""
    return asleep is not None and local_model(student.model) and shares_engine(asleep, evaluation_engine(student))


def eval_gpu_hours(
    tokens: float,
    billions: float,
    checkpoints: int,
    rates: Rates,
    cold: bool = False,
    local_base: bool = True,
    woken: bool = False,
) -> float:
    """A student's evaluations: greedy decoding in one engine, started on the base model (``cold`` when no
    engine of the model ran before), each further checkpoint's weights swapped into it: the trained
    checkpoints keep the base model's engine files (commit aad6ee3; the fourth GPU run's one engine served
    the untrained student and its 15 trained checkpoints, bench/results/gpu_study/fourth_run/run.json).
    A base named by a hub id (``local_base`` false) has no folder whose files they can keep: its trained
    checkpoints get a second (warm) engine. ``woken``: the engine is an earlier stage's, asleep
    (``gpu.sleep_engines``), woken rather than started."""
    decode = tokens / rates.decode_tokens_per_s(billions, "greedy")
    start = ENGINE_WAKE_S if woken else rates.engine_start_s(billions, "eval", cold)
    if not local_base and checkpoints > 1:
        start += rates.engine_start_s(billions, "eval")
    return (decode + start + rates.eval_swap_s * (checkpoints - 1)) / 3600


def local_model(name: str) -> bool:
    """Whether a model name resolves to a folder here (``local:`` models and paths), not a hub id."""
    from trace_assets.models import LOCAL_PREFIX

    return name.startswith(LOCAL_PREFIX) or Path(name).expanduser().is_dir()


def judged_task_share(experiment: Experiment) -> float:
    """The share of the experiment's answers whose task asks the failure judge about wrong ones
    (``Task.judges_wrong_answers``: the word problems and MATH do; Countdown's and MBPP's verifiers name
    every wrong answer's category), weighted by each task's test problems."""
    from trace_assets.tasks import get_task
    from trace_assets.tasks.base import sizes

    counts = {task: sizes(get_task(task), experiment.problems)[1] for task in experiment.problems.tasks}
    total = sum(counts.values())
    judged = sum(n for task, n in counts.items() if get_task(task).judges_wrong_answers)
    return judged / total if total else 0.0


def failure_judge_calls(experiment: Experiment, untrained: float, trained: float, cached_verdicts: int = 0) -> float:
    """The failure judge's generated verdicts: its distinct prompts over the untrained arms' problems
    (``untrained``: arms x test problems) and the trained arms' (``trained``: arms x problems, whatever their
    seeds) (FAILURE_PROMPTS_UNTRAINED, FAILURE_PROMPTS_TRAINED), of the tasks whose wrong answers go to the
    judge at all (:func:`judged_task_share`), less those a cache holding ``cached_verdicts`` failure verdicts of
    this judge answers (FAILURE_CACHED_SHARE, of at most that many)."""
    prompts = (untrained * FAILURE_PROMPTS_UNTRAINED + trained * FAILURE_PROMPTS_TRAINED) * judged_task_share(experiment)
    return prompts - FAILURE_CACHED_SHARE * min(prompts, cached_verdicts)


def failure_judge_gpu_hours(
    experiment: Experiment,
    answers: float,
    rates: Rates,
    cold: bool = False,
    engine: bool = True,
    *,
    untrained: float,
    trained: float,
    cached_verdicts: int = 0,
) -> float:
    """The failure judge over ``answers`` (failure_modes, a round's round_failures): the step's work per answer
    (FAILURE_ANSWER_S), its generated verdicts (:func:`failure_judge_calls` of the ``untrained`` and ``trained``
    arms' problems) at the judge's verdict cost, plus its engine start unless ``engine`` is False (a round's
    failure judge on its evaluation engine: then the judge's weights are loaded into it, one swap)."""
    judge = experiment.judge
    judged = failure_judge_calls(experiment, untrained, trained, cached_verdicts)
    verdict_tokens = completion_tokens(experiment)[1]
    hours = judge_gpu_hours(judged, verdict_tokens, model_billions(judge.model), rates, judge.gpus, cold, engine)
    own = answers * judged_task_share(experiment) * FAILURE_ANSWER_S
    return hours + (own + (rates.eval_swap_s if judged > 0 and not engine else 0.0)) / 3600


def sft_tokens_per_s(billions: float, rates: Rates, processes: int = 1, compiled: bool = True, *, fused: bool) -> float:
    """Per GPU; data-parallel processes each lose a share to gradient all-reduce."""
    return rates.sft_costs(billions, compiled, fused=fused).tokens_per_s * (1.0 if processes == 1 else DP_EFFICIENCY)


def sft_gpu_hours(
    tokens: float,
    runs: int,
    billions: float,
    rates: Rates,
    processes: int = 1,
    launches: int | None = None,
    compiled: bool = True,
    first: bool = False,
    *,
    fused: bool,
) -> float:
    """``runs`` SFT runs over ``tokens`` in all, in ``launches`` torchrun launches (one a checkpoints
    step, which trains every partition of its stage; ``None``: one a run): the tokens at the measured rate, each launch's and
    each run's fixed cost, and (``first``: the study's first SFT of this student) the first run's warm-up,
    all on each of the processes' GPUs; ``fused``: training.fused_lm_head."""
    costs = rates.sft_costs(billions, compiled, fused=fused)
    fixed = (runs if launches is None else launches) * costs.launch_s + runs * costs.run_s
    fixed += costs.first_run_s if first and runs else 0.0
    return (tokens / sft_tokens_per_s(billions, rates, processes, compiled, fused=fused) + fixed * processes) / 3600


def completion_tokens(experiment: Experiment, generated: bool = False) -> tuple[float, float]:
    """Tokens of one teacher trace (measured for ``generated`` problems: one synthetic task's, else assumed)
    and one judge verdict: a completion is at most max_tokens long."""
    trace = SYNTHETIC_TRACE_TOKENS[experiment.problems.tasks[0]] if generated else ASSUMED_TRACE_TOKENS
    return (
        min(trace, experiment.teacher.sampling.max_tokens),
        min(ASSUMED_JUDGE_TOKENS, experiment.judge.sampling.max_tokens),
    )


class EngineStarts:
    """Which models have had a vLLM engine in the study so far: a model's first engine (in the order the
    steps run) is cold, with the compile cache empty on a fresh machine; later ones are warm."""

    def __init__(self, started: Iterable[str] = ()) -> None:
        self.started: set[str] = set(started)

    def cold(self, model: str, work: float) -> bool:
        """Whether a step with ``work`` to generate on ``model`` starts its first engine (none without work)."""
        if work <= 0 or model in self.started:
            return False
        self.started.add(model)
        return True


@dataclass(frozen=True)
class ProblemSplits:
    """The problems an experiment's GPU steps work on: ``train`` (what the teacher samples and the datasets
    train on: the closed loop's validation share carved out), ``validation`` (the loop's, else 0), ``test``;
    ``frame``: the train problems where dry-run made them (estimates.generated_problems), else None."""

    train: int
    validation: int
    test: int
    frame: pl.DataFrame | None

    @property
    def generated(self) -> bool:
        return self.frame is not None


def problem_counts(problems: ProblemsConfig, generated: pl.DataFrame | None = None) -> tuple[int, int]:
    """Train and test problems over the experiment's tasks (``n_train`` / ``n_test`` apply per task;
    where null, each task's ``full_sizes``); the ``generated`` problems table's own counts, decontaminated,
    where dry-run made it (estimates.generated_problems)."""
    from trace_assets.tasks import get_task
    from trace_assets.tasks.base import sizes

    if generated is not None:
        return int((generated["split"] == "train").sum()), int((generated["split"] == "test").sum())
    counts = [sizes(get_task(task), problems) for task in problems.tasks]
    return sum(n_train for n_train, _ in counts), sum(n_test for _, n_test in counts)


def problem_splits(experiment: Experiment) -> ProblemSplits:
    """The experiment's train, validation and test counts as the ``problems`` asset leaves them: generated
    problems carved exactly as it carves them (problems/validation.py), others by the validation fraction."""
    from trace_assets.problems.validation import VALIDATION, carve_validation

    generated = generated_problems(experiment)
    fraction = experiment.validation_fraction()
    if generated is not None:
        carved = carve_validation(generated, fraction, experiment.seed)
        train = carved.filter(pl.col("split") == "train")
        return ProblemSplits(
            train.height, int((carved["split"] == VALIDATION).sum()), int((carved["split"] == "test").sum()), train
        )
    n_train, n_test = problem_counts(experiment.problems)
    validation = max(1, round(n_train * fraction)) if fraction > 0 and n_train > 1 else 0
    return ProblemSplits(n_train - validation, validation, n_test, None)


def teacher_generations(experiment: Experiment, styles: Iterable[str], n_train: int) -> int:
    """The teacher's samples of ``n_train`` problems under ``styles``, with the paraphrases of the human
    solutions into those of them that an H_style recipe asks for (traces/step.py teacher_requests)."""
    styles = list(styles)
    paraphrased = len(set(styles) & experiment.paraphrase_styles())
    return (len(styles) + paraphrased) * n_train * experiment.teacher.sampling.n


def generated_problems(experiment: Experiment) -> pl.DataFrame | None:
    """The experiment's problems table when dry-run can afford to make it and knows its teacher traces: one
    synthetic task with measured traces (SYNTHETIC_TRACE_TOKENS: the word problems, Countdown) comes from a
    seeded generator (seconds for 2,700, decontamination included), so its counts and lengths are known
    before the run; None for problems read from the hub or from files, and for several tasks together."""
    problems = experiment.problems
    if problems.source != "synthetic" or len(problems.tasks) != 1 or problems.tasks[0] not in SYNTHETIC_TRACE_TOKENS:
        return None
    return _generate(problems.model_dump_json(), experiment.seed)


@functools.lru_cache(maxsize=4)
def _generate(settings: str, seed: int) -> pl.DataFrame:
    from trace_assets.problems.sources import load_problems

    return load_problems(ProblemsConfig.model_validate_json(settings), seed)[0]


def example_tokens(experiment: Experiment, recipe: DatasetRecipe, train: pl.DataFrame | None) -> float:
    """Mean tokens of one training example of ``recipe``. From generated ``train`` problems: the question
    under the chat template, and the human solution (H) or a trace of the measured mean length; otherwise
    an assumed trace alone, as dry-run always did (an upper bound for short prompts' datasets)."""
    trace = completion_tokens(experiment, generated=train is not None)[0]
    if train is None or train.is_empty():
        return trace

    def mean_chars(column: str) -> float:
        return float(train[column].str.len_chars().mean() or 0.0)  # type: ignore[arg-type]

    prompt = CHAT_TEMPLATE_TOKENS + mean_chars("question") / QUESTION_CHARS_PER_TOKEN
    if recipe.recipe == "H":
        return prompt + mean_chars("reference_solution") / SOLUTION_CHARS_PER_TOKEN + 1
    return prompt + trace + 1  # the end-of-sequence token


# Reading a cached teacher sample back into a teacher_traces row (its log-probabilities' confidence
# included): the fifth GPU run's teacher step found all 16,160 samples cached and took 24 s besides the
# GGUF conversion (66.2 - 42.0 s; fifth_run/run.json), 1.5 ms a sample.
CACHED_SAMPLE_S = 24.2 / 16160
# Reading a cached verdict back into a judged_traces row: the judge steps of the two runs whose verdicts were
# all cached, 2.1 s for 16,155 (fifth run) and 2.8 s for 21,600 (Countdown run), 0.13 ms each
CACHED_VERDICT_S = (2.1 + 2.8) / (16155 + 21600)


@dataclass(frozen=True)
class CachedWork:
    """How much of the teacher's samples and the judge's verdicts the data folder's generation cache holds, and
    how many failure verdicts of the judge (``failures``: of any answers; which of this run's answers they
    cover is not known before the run, see FAILURE_CACHED_SHARE)."""

    teacher: int = 0
    judge: int = 0
    failures: int = 0


def cached_generations(experiment: Experiment, splits: ProblemSplits, database: Path) -> CachedWork:
    """The teacher samples, judge verdicts and failure verdicts of this experiment already in the generation
    cache at ``database`` (a carried cache loaded with ``gpu_study.py run --cache-from``, or an earlier run's).
    The samples and verdicts: its requests built as teacher_traces and judged_traces build them (the same
    keys), which dry-run can do where it generated the problems (``splits.frame``), and not with
    ``confidence.early_stop``, whose waves of one sample are keyed by wave. Nothing (every sample charged as
    generated, an upper bound) without the database or where it cannot be read at once (a writer holds it,
    an older schema)."""
    if not database.exists():
        return CachedWork()
    import duckdb

    from trace_assets.generation.cache_store import CACHE_TABLE
    from trace_assets.migrations import SchemaVersionError
    from trace_assets.storage import connect, table_names

    try:
        with connect(database, read_only=True, attempts=1) as connection:
            if CACHE_TABLE not in table_names(connection):
                return CachedWork()
            failures = cached_failure_verdicts(connection, experiment.judge.model)
            if splits.frame is None or experiment.confidence.early_stop is not None:
                return CachedWork(failures=failures)
            return replace(_cached_generations(experiment, splits, connection), failures=failures)
    except (duckdb.Error, SchemaVersionError):
        return CachedWork()


def cached_failure_verdicts(connection: duckdb.DuckDBPyConnection, judge: str) -> int:
    """The failure judge's verdicts of ``judge`` in the generation cache: its replies are guided JSON objects
    whose first field is the category (reporting.failures.FAILURE_SCHEMA), which the trace judge's
    (``conforms``) and every other reply are not."""
    from trace_assets.generation.cache_store import CACHE_TABLE

    row = connection.execute(
        f"SELECT count(*) FROM {CACHE_TABLE} WHERE model = ? AND regexp_matches(text, '^\\s*\\{{\\s*\"category\"')",
        [judge],
    ).fetchone()
    return int(row[0]) if row else 0


def _cached_generations(experiment: Experiment, splits: ProblemSplits, connection: duckdb.DuckDBPyConnection) -> CachedWork:
    assert splits.frame is not None
    from trace_assets.generation.cache_store import cached_rows
    from trace_assets.generation.types import Sampling
    from trace_assets.judging.build import judge_requests
    from trace_assets.judging.verdicts import judge_char_budget
    from trace_assets.styles.library import load_style
    from trace_assets.traces.build import teacher_requests

    styles_dir = experiment.resolve(experiment.styles_dir)
    styles = {name: load_style(styles_dir, name) for name in experiment.styles}
    teacher, judge = experiment.teacher, experiment.judge
    sampling = Sampling.of(teacher.sampling)
    planned = teacher_requests(list(styles.values()), splits.frame, teacher.model, sampling, experiment.paraphrase_styles())

    def texts(keys: list[str], samples: int) -> dict[tuple[str, int], str]:
        return {(key, index): text for key, index, text in cached_rows(connection, keys, "c.text", samples)}

    traces = texts([request.key for *_, request in planned], sampling.n)
    rows = [
        {"trace_id": f"{request.key}-{index}", "style": style.name, "problem_id": problem["problem_id"], "completion": text}
        for style, _, problem, request in planned
        for index in range(sampling.n)
        if (text := traces.get((request.key, index))) is not None
    ]
    if not rows:
        return CachedWork()
    judge_sampling = Sampling.of(judge.sampling, n=1)
    questions = dict(zip(splits.frame["problem_id"], splits.frame["question"], strict=True))
    requests = judge_requests(
        pl.DataFrame(rows),
        questions,
        styles,
        judge.model,
        judge_sampling,
        judge_char_budget(judge.max_model_len, judge_sampling.max_tokens),
    )
    verdicts = texts([request.key for request in requests.values()], 1)
    judged = sum(1 for request in requests.values() if (request.key, 0) in verdicts)
    return CachedWork(teacher=len(traces), judge=judged)


# The recipes whose problems depend on the teacher's traces: a problem gives them an example only where one of
# its samples is an eligible right trace (G, a mixture's unflawed source) or wrong one (W).
TRACE_RECIPES = ("G", "W", "mixture")


def right_trace_rate(experiment: Experiment, rates: Rates, generated: bool) -> float | None:
    """The chance that one teacher sample is an eligible right trace, where measured for such a teacher on
    such problems: the 135M teacher on one synthetic task's problems (``generated``; rates.teacher_right_rate).
    None elsewhere: the share depends on the teacher and the task, and none is measured."""
    if not generated:
        return None
    return rates.teacher_right_rate(model_billions(experiment.teacher.model), experiment.problems.tasks[0])


def examples_per_problem(recipe: DatasetRecipe, right_rate: float | None, samples: int) -> float:
    """Expected training examples one train problem gives ``recipe``, ``samples`` teacher samples a problem.

    H and H_style: one. G, W and mixtures, where ``right_rate`` is known: each sample is an eligible right
    trace with that chance, independently, and wrong otherwise (ignoring traces neither: truncated, without a
    declared answer); a problem gives min(per_problem, its right (G, mixture) or wrong (W) samples) examples if
    it has one, and, where the arm pairs right and wrong traces (``pair_correct_wrong``, or a mixture whose
    flaw is the wrong trace: its every problem needs one), if it has both. With per_problem 1 that is
    1-(1-p)^n for G alone and 1-(1-p)^n-p^n paired. Unknown ``right_rate``: one a problem, every problem (an
    upper bound), as dry-run always counted. ``keep_fraction`` (keep_by) applies in every case. Left out: the
    common problems of a comparison group of several styles and token matching (both keep fewer)."""
    kept = recipe.keep_fraction if recipe.keep_by != "all" else 1.0
    if right_rate is None or recipe.recipe not in TRACE_RECIPES:
        return kept
    paired = recipe.pair_correct_wrong or (recipe.recipe == "mixture" and recipe.flaw == "wrong")
    hit = 1 - right_rate if recipe.recipe == "W" else right_rate
    expected = sum(
        math.comb(samples, j) * hit**j * (1 - hit) ** (samples - j) * min(recipe.per_problem, j)
        for j in range(1, samples if paired else samples + 1)
    )
    return kept * expected


def training_tokens_per_seed(
    experiment: Experiment, recipes: Mapping[str, DatasetRecipe], splits: ProblemSplits, rates: Rates
) -> float:
    """One seed's training tokens over ``recipes`` for one student: each recipe's expected examples a train
    problem (:func:`examples_per_problem`: H one, G/W/mixtures the expected kept share where the teacher's
    right-trace rate is measured, else one, an upper bound) times an example's tokens, every epoch."""
    rate = right_trace_rate(experiment, rates, splits.generated)
    samples, epochs = experiment.teacher.sampling.n, experiment.training.epochs
    return sum(
        splits.train * examples_per_problem(recipe, rate, samples) * example_tokens(experiment, recipe, splits.frame) * epochs
        for recipe in recipes.values()
    )
