"""``trace-assets``: command-line helpers.

    trace-assets dry-run [--experiment experiments/paper.yaml]

prints, per asset, the work an experiment implies and an estimate of GPU hours from the throughput
measured by bench/gpu.py (bench/results/gpu.json, trace_assets/rates.py), scaled by model size.

and, per planned contrast, the smallest difference detectable with 80% power at its seeds and test size
(trace_assets/reporting/stats.py ``power_lines``).

    trace-assets calibrate [--experiment experiments/paper.yaml] [--studies 1000] [--seed 0] [--output FILE]

simulates studies shaped like the experiment in several worlds through the report's statistics and ends
with the line ``fwer=<worst> coverage=<worst> power=<p>`` (trace_assets/reporting/calibration.py).
"""

from __future__ import annotations

import argparse
import functools
import sys

from trace_assets.errors import InputError
from trace_assets.estimates import (
    CACHED_SAMPLE_S,
    CACHED_VERDICT_S,
    TRACE_RECIPES,
    EngineStarts,
    cached_generations,
    completion_tokens,
    eval_gpu_hours,
    examples_per_problem,
    failure_judge_calls,
    failure_judge_gpu_hours,
    failure_judge_on_evaluation_engine,
    generated_problems,
    generation_gpu_hours,
    judge_gpu_hours,
    local_model,
    model_billions,
    problem_counts,
    problem_splits,
    right_trace_rate,
    sft_gpu_hours,
    shares_engine,
    teacher_generations,
    training_tokens_per_seed,
    wakes_for_evaluation,
)
from trace_assets.experiment import BASE_DATASETS, Experiment, data_dir, database_path, load_experiment
from trace_assets.inputs import check_inputs
from trace_assets.rates import Rates, load_rates


def training_runs_per_seed(experiment: Experiment) -> int:
    """Models trained per student and seed: one per pooled dataset, one per task for each per-task dataset."""
    per_task = experiment.per_task_datasets()
    return len(experiment.datasets) - len(per_task) + len(per_task) * len(experiment.problems.tasks)


def training_line(experiment: Experiment) -> str:
    """Which datasets train per task (one model per task) and which pooled, for the dry-run's header."""
    per_task = [name for name in experiment.datasets if name in experiment.per_task_datasets()]
    if not per_task:
        return "  training: pooled (one model per dataset, student and seed on every task's examples)"
    pooled = [name for name in experiment.datasets if name not in per_task]
    tasks = experiment.problems.tasks
    line = f"  training per task ({len(tasks)} models per dataset, student and seed: {', '.join(tasks)}): {', '.join(per_task)}"
    return line + (f"; pooled: {', '.join(pooled)}" if pooled else "")


def plan(experiment: Experiment, rates: Rates | None = None) -> list[dict]:
    """dry-run's rows, one per GPU step and student, in the order the steps run (which sets the cold engine)."""
    rates = rates or load_rates()
    # the train problems the teacher samples (the closed loop's validation share carved out), the test problems
    splits = problem_splits(experiment)
    n_train, n_test = splits.train, splits.test
    teacher, judge = experiment.teacher, experiment.judge
    samples = teacher_generations(experiment, experiment.styles, n_train)
    # what the data folder's generation cache already holds is read back, not generated: no engine for it
    cached = cached_generations(experiment, splits, database_path())
    to_sample, to_judge = samples - cached.teacher, samples - cached.judge
    teacher_b, judge_b = model_billions(teacher.model), model_billions(judge.model)
    trace_tokens, judge_tokens = completion_tokens(experiment, generated=splits.generated)
    engines = EngineStarts()
    # judged_traces runs in teacher_traces' stage (one Dagster run, one process: demo.STAGES), whose
    # GenerationResource keeps the teacher's engine: a judge of the same model and engine settings reuses it
    # (the fourth GPU run: one engine start for both); failure_modes runs in eval_results' stage, on the
    # evaluation engine where the judge is the (last) student's model under its evaluation engine settings
    shared = shares_engine(teacher, judge) and to_sample > 0
    on_teacher_engine = ", on the teacher's engine" if shared and to_judge > 0 else ""
    rows = [
        {
            "asset": "teacher_traces",
            "work": f"{samples:,} generations ({teacher.model})"
            + (f", {cached.teacher:,} of them cached" if cached.teacher else ""),
            "gpu_hours": generation_gpu_hours(
                to_sample * trace_tokens, teacher_b, "sampled", rates, teacher.gpus, engines.cold(teacher.model, to_sample)
            )
            + cached.teacher * CACHED_SAMPLE_S / 3600,
            "gpus": teacher.gpus,
        },
        {
            "asset": "judged_traces",
            "work": f"{samples:,} judge calls ({judge.model}{on_teacher_engine})"
            + (f", {cached.judge:,} of them cached" if cached.judge else ""),
            "gpu_hours": judge_gpu_hours(
                to_judge,
                judge_tokens,
                judge_b,
                rates,
                judge.gpus,
                engines.cold(judge.model, to_judge),
                engine=not shared,
            )
            + cached.judge * CACHED_VERDICT_S / 3600,
            "gpus": judge.gpus,
        },
    ]
    seeds = len(experiment.training.seeds)
    all_evals = untrained_problems = trained_problems = 0
    # gpu.sleep_engines: the engine the teacher's stage leaves (the judge's where it started its own) sleeps
    # through SFT, and an evaluation engine of the same key wakes it rather than starting one
    asleep = (
        (judge if to_judge > 0 and not shared else teacher if to_sample > 0 else None) if experiment.gpu.sleep_engines else None
    )
    # H takes every train problem; G, W and mixtures the problems with a right or wrong trace, an expected share
    # where the teacher's right-trace rate was measured (examples_per_problem), else every problem (an upper bound)
    tokens_per_seed = training_tokens_per_seed(experiment, experiment.datasets, splits, rates)
    # A per-task dataset trains one model per task on that task's share of the examples (the same tokens in all),
    # and each model answers its own task's test problems (the same answers in all, more checkpoints to load).
    models_per_seed = training_runs_per_seed(experiment)
    for name, student in experiment.students.items():
        billions = model_billions(student.model)
        processes = experiment.training.processes
        train_tokens = tokens_per_seed * seeds
        runs = models_per_seed * seeds
        # the checkpoints step trains every run of its stage in one torchrun launch (single-run backfill):
        # one launch, counted with each student's row (an extra student's share is an overcount of ~30 s)
        launches = 1
        rows.append(
            {
                "asset": f"checkpoints[*|{name}]",
                "work": f"{runs} runs in one launch, ~{train_tokens:,.0f} training tokens",
                "gpu_hours": sft_gpu_hours(
                    train_tokens,
                    runs,
                    billions,
                    rates,
                    processes,
                    launches,
                    experiment.training.compile,
                    first=True,
                    fused=experiment.training.fused_lm_head,
                ),
                "gpus": processes,
            }
        )
        checkpoints = runs + len(BASE_DATASETS)  # the untrained student is evaluated too, once per base arm
        evals = (len(experiment.datasets) * seeds + len(BASE_DATASETS)) * n_test
        all_evals += evals
        untrained_problems += len(BASE_DATASETS) * n_test
        trained_problems += len(experiment.datasets) * n_test
        woken = evals > 0 and wakes_for_evaluation(asleep, student)
        asleep = None  # woken, or stopped for another engine key
        rows.append(
            {
                "asset": f"eval_results[*|{name}]",
                "work": f"{evals:,} eval generations" + (" (waking the teacher stage's sleeping engine)" if woken else ""),
                "gpu_hours": eval_gpu_hours(
                    evals * experiment.evaluation.max_tokens * 0.5,
                    billions,
                    checkpoints,
                    rates,
                    cold=engines.cold(student.model, evals),
                    local_base=local_model(student.model),
                    woken=woken,
                ),
                "gpus": 1,
            }
        )
    judged = failure_judge_calls(experiment, untrained_problems, trained_problems, cached.failures)
    on_evaluation = failure_judge_on_evaluation_engine(experiment, trains=bool(experiment.datasets))
    rows.append(
        {
            # only wrong answers whose category the rules can't settle go to the judge, in eval_results' stage
            # (one Dagster run): on the evaluation engine where it shares it, else an engine of its own
            "asset": "failure_modes",
            "work": f"~{judged:,.0f} judge calls of {all_evals:,} answers ({judge.model}"
            + (", on the evaluation engine" if on_evaluation else "")
            + (f"; {cached.failures:,} failure verdicts cached)" if cached.failures else ")"),
            "gpu_hours": failure_judge_gpu_hours(
                experiment,
                all_evals,
                rates,
                cold=not on_evaluation and engines.cold(judge.model, judged),
                engine=not on_evaluation,
                untrained=untrained_problems,
                trained=trained_problems,
                cached_verdicts=cached.failures,
            ),
            "gpus": judge.gpus,
        }
    )
    prepared = local_model_preparation(experiment, rates) if samples > 0 else None
    if prepared:
        # the teacher's step resolves its model first; without teacher work sft_examples (a CPU step) builds it
        name, seconds = prepared
        rows[0]["gpu_hours"] += seconds / 3600
        rows[0]["work"] += f"; building {name} from its GGUF first (~{seconds:.0f} s, once per data folder)"
    if experiment.revision is not None:
        from trace_assets.loop.rounds import round_gpu_hours

        rounds = experiment.revision.rounds
        for style in experiment.revision.styles:
            # round 0 takes its traces and verdicts from the study's; the first revised round may start a reviser
            # model the study never ran (cold); the later ones are alike
            first, revised = (round_gpu_hours(experiment, style, rates, number, engines) for number in (0, 1))
            later = round_gpu_hours(experiment, style, rates, 2, engines)
            rows.append(
                {
                    "asset": f"round_*[{style}_r0..r{rounds}]",
                    "work": f"{rounds + 1} rounds at most: r0 ~{first:.3f} GPU h (traces and verdicts from the "
                    f"study's), a revised round ~{later:.3f} GPU h",
                    "gpu_hours": first + revised + later * (rounds - 1),
                    "gpus": max(teacher.gpus, judge.gpus),
                }
            )
    return rows


def local_model_preparation(experiment: Experiment, rates: Rates) -> tuple[str, float] | None:
    """The teacher's model when it is a ``local:`` one the data folder does not hold yet, and the seconds
    building its folder takes (models.resolve_model: reading the GGUF, its tokenizer and config, writing
    the folder; ~42 s at the start of the loop run's teacher_traces, mostly before the conversion's own
    second); None when it is built, a hub id, or the rates have no figure for it. Only the teacher's: it
    is the first step to resolve a model, and without teacher work sft_examples, a CPU step, builds it
    (the third GPU run's took 48 s, the others' 2-13)."""
    from trace_assets.models import LOCAL_PREFIX, local_model_folder

    seconds = rates.small.local_model_prep_s if rates.small is not None else 0.0
    name = experiment.teacher.model
    if not seconds or not name.startswith(LOCAL_PREFIX):
        return None
    built = (local_model_folder(name, data_dir() / "models") / "config.json").exists()
    return None if built else (name, seconds)


def kept_shares(experiment: Experiment, rates: Rates, generated: bool) -> dict[str, float]:
    """Examples a train problem gives each dataset (estimates.examples_per_problem) where it is not one."""
    rate = right_trace_rate(experiment, rates, generated)
    per_problem = {
        name: examples_per_problem(recipe, rate, experiment.teacher.sampling.n) for name, recipe in experiment.datasets.items()
    }
    return {name: share for name, share in per_problem.items() if share != 1.0}


def kept_share_line(experiment: Experiment, rates: Rates) -> str | None:
    """What dry-run assumed of the G, W and mixture arms' sizes, None without such arms."""
    arms = [name for name, recipe in experiment.datasets.items() if recipe.recipe in TRACE_RECIPES]
    if not arms:
        return None
    generated = generated_problems(experiment) is not None
    if right_trace_rate(experiment, rates, generated) is None:
        return (
            f"  ({', '.join(arms)}: counted on every train problem, an upper bound; no right-trace share is measured "
            f"for {experiment.teacher.model} on these problems)"
        )
    small = rates.small
    assert small is not None  # a right-trace rate comes from the small model's figures
    task = experiment.problems.tasks[0]
    share, samples = small.teacher_right[task]
    shares = kept_shares(experiment, rates, generated)
    return (
        f"  ({', '.join(f'{name} {shares.get(name, 1.0):.0%}' for name in arms)} of the train problems: assumed from "
        f"the 135M teacher's measured {share:.1%} of synthetic {task} problems with an eligible right trace "
        f"in {samples} samples (sections.study_135m.teacher), samples independent, at this experiment's "
        f"{experiment.teacher.sampling.n}; it depends on the teacher, the task and the eligibility policy; comparison "
        "groups of several styles and token matching keep fewer)"
    )


def dry_run(experiment: Experiment, rates: Rates | None = None) -> str:
    check_inputs(experiment)  # every file the experiment names, before any estimate
    rates = rates or load_rates()
    rows = plan(experiment, rates)
    width = max(len(r["asset"]) for r in rows)
    lines = [
        f"experiment {experiment.name}: {len(experiment.styles)} styles, {len(experiment.datasets)} datasets, "
        f"{len(experiment.students)} students, seeds {experiment.training.seeds}",
        training_line(experiment),
    ]
    lines += [
        f"  {r['asset']:<{width}}  {r['work']:<48}  ~{r['gpu_hours']:8.2f} GPU h  "
        f"({r['gpus']} GPU/step, ~{r['gpu_hours'] / r['gpus']:.2f} h wall)"
        for r in rows
    ]
    lines.append(f"  {'total':<{width}}  {'':<48}  ~{sum(r['gpu_hours'] for r in rows):8.2f} GPU h")
    kept = kept_share_line(experiment, rates)
    if kept is not None:
        lines.append(kept)
    lines.append(f"  ({rates.describe()}; wall time is per step run alone)")
    from trace_assets.reporting.stats import experiment_power_lines

    lines += experiment_power_lines(
        experiment, problem_counts(experiment.problems, generated_problems(experiment))[1], database_path()
    )
    return "\n".join(lines)


def exit_on_input_errors(command):
    """A bad input file is one message on stderr and exit status 2, never a traceback."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except InputError as error:
            print(f"trace-assets: error: {error}", file=sys.stderr)
            raise SystemExit(2) from None

    return run


@exit_on_input_errors
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="trace-assets")
    commands = parser.add_subparsers(dest="command", required=True)
    dry = commands.add_parser("dry-run", help="print the work and GPU hours an experiment implies")
    dry.add_argument("--experiment", default=None, help="experiment file (default: TRACE_ASSETS_EXPERIMENT or smoke)")
    calibrate = commands.add_parser("calibrate", help="measure the report statistics' error rates by simulation")
    calibrate.add_argument("--experiment", default="experiments/paper.yaml", help="experiment file whose shape is simulated")
    calibrate.add_argument("--studies", type=int, default=1000, help="studies per world")
    calibrate.add_argument("--seed", type=int, default=0, help="random seed of the simulation")
    calibrate.add_argument("--output", default=None, help="also write the figures as JSON to this file")
    args = parser.parse_args(argv)
    if args.command == "dry-run":
        print(dry_run(load_experiment(args.experiment)))
    elif args.command == "calibrate":
        from trace_assets.reporting.calibration import run_calibration

        command = " ".join(["trace-assets", *(argv if argv is not None else sys.argv[1:])])
        run_calibration(load_experiment(args.experiment), args.studies, args.seed, args.output, command)


if __name__ == "__main__":
    main()
