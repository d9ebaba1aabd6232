"""Dry-run's rates come from the GPU benchmark's results file (trace_assets/rates.py), here a fixture
written by the test, so that re-running the benchmark changes no assertion."""

import copy
import json
import re

import pytest

from trace_assets.cli import dry_run, main, plan
from trace_assets.estimates import (
    FAILURE_ANSWER_S,
    FAILURE_PROMPTS_TRAINED,
    FAILURE_PROMPTS_UNTRAINED,
    model_billions,
)
from trace_assets.experiment import PROJECT_ROOT, DatasetRecipe, RevisionConfig, database_path, load_experiment
from trace_assets.loop.rounds import round_gpu_hours
from trace_assets.rates import BUILT_IN, BenchResultsError, load_rates

# The keys bench/gpu.py writes, with figures from an H200 run (bench/results/gpu.json's shape).
RESULTS = {
    "device": "NVIDIA H200",
    "generation_ratio_greedy": 1.274,
    "generation_ratio_sampled": 0.797,
    "eval_checkpoints": 8,
    "eval_engine_starts": 2,
    "eval_seconds": 136.2,
    "eval_bare_generate_seconds": 88.7,
    "sft_tokens_per_s": 115477,
    "sft_mfu": 0.2857,
    "sft_ratio_vs_bare": 0.766,
    "sections": {
        "generation": {
            "prompts": 1319,
            "ours": {
                "greedy": {"engine_startup_s": 39.22, "output_tokens_per_s": 32427.0},
                "sampled": {"engine_startup_s": 32.73, "output_tokens_per_s": 23594.2},
            },
        },
        "eval": {"checkpoints": 8, "engine_starts": 2, "engine_startup_s": 56.6, "swap_s": [0.0, 0.0, 0.35, 0.2]},
        "sft": {
            "model": "Qwen2.5-0.5B shape, 402M parameters, vocab 49152",
            "flops_per_token": 2447597264,
            "peak_flops": 989.4e12,
            "ours_tokens_per_s": 115477,
            "ours_mfu": 0.2857,
        },
    },
}


@pytest.fixture
def results_file(tmp_path, monkeypatch):
    """Write ``results`` (the H200 figures by default) where TRACE_ASSETS_BENCH_RESULTS points, with an empty
    data folder (dry-run reads what it holds: a built local model, the generation cache)."""

    def write(results=RESULTS):
        path = tmp_path / "gpu.json"
        path.write_text(json.dumps(results))
        monkeypatch.setenv("TRACE_ASSETS_BENCH_RESULTS", str(path))
        monkeypatch.setenv("TRACE_ASSETS_DATA_DIR", str(tmp_path / "data"))
        return path

    return write


@pytest.fixture(scope="module")
def paper():
    return load_experiment(PROJECT_ROOT / "experiments" / "paper.yaml")


def test_rates_are_the_measured_figures(results_file):
    path = results_file()
    rates = load_rates()
    assert rates.source == str(path) and rates.device == "NVIDIA H200"
    assert rates.sft_tokens_per_s(0.402) == 115477
    assert rates.decode_tokens_per_s(0.402, "greedy") == 32427.0
    assert rates.decode_tokens_per_s(0.402, "sampled") == 23594.2
    assert rates.startup_s == {"greedy": 39.22, "sampled": 32.73}
    assert rates.eval_startup_s == pytest.approx(28.3) and rates.eval_swap_s == pytest.approx(0.275)
    # a larger model: scaled by FLOPs per token (proportional to parameters) at the measured utilisation
    assert rates.sft_tokens_per_s(4.02) == pytest.approx(11547.7)
    assert rates.decode_tokens_per_s(40.2, "greedy") == pytest.approx(324.27)


@pytest.mark.parametrize("shape", ["sft", "greedy", "sampled"])
def test_larger_models_are_never_faster_than_the_measured_size(results_file, shape):
    results_file()
    rates = load_rates()
    rate = rates.sft_tokens_per_s if shape == "sft" else lambda b: rates.decode_tokens_per_s(b, shape)
    sizes = [0.05, 0.135, 0.402, 0.5, 1.5, 3, 7, 72]
    per_size = [rate(b) for b in sizes]
    assert per_size == sorted(per_size, reverse=True)
    assert max(per_size) == rate(0.402)  # smaller models: the measured rate, not faster


def test_dry_run_note_names_the_measurement(results_file, paper):
    path = results_file()
    # the rates' note closes the GPU-hour table (the power lines follow it)
    note = next(line for line in dry_run(paper).splitlines() if "rates measured" in line or "built-in rates" in line)
    assert f"measured on NVIDIA H200 by bench/gpu.py ({path}" in note
    assert "SFT 115k tok/s at 0.40B (MFU 0.29)" in note and "decode 32k tok/s greedy / 24k sampled" in note
    assert "larger models scaled by FLOPs" in note and "upper bound" in note


def test_the_committed_file_is_named_relative_to_the_repository(monkeypatch):
    monkeypatch.delenv("TRACE_ASSETS_BENCH_RESULTS", raising=False)
    path = PROJECT_ROOT / "bench" / "results" / "gpu.json"
    if not path.exists():
        pytest.skip("no bench/results/gpu.json in this checkout")
    assert load_rates().source == "bench/results/gpu.json"
    assert "(bench/results/gpu.json, " in load_rates().describe()  # with its commit date or "not committed"


def test_estimates_follow_the_measured_rates(results_file, paper):
    results_file()
    before = {row["asset"]: row["gpu_hours"] for row in plan(paper)}
    looped = paper.model_copy(update={"revision": RevisionConfig(styles=["normal"])})
    rounds_before = round_gpu_hours(looped, "normal")
    faster = copy.deepcopy(RESULTS)
    faster["sft_tokens_per_s"] *= 2
    faster["sections"]["generation"]["ours"]["sampled"]["output_tokens_per_s"] *= 2
    results_file(faster)
    after = {row["asset"]: row["gpu_hours"] for row in plan(paper)}
    assert after["checkpoints[*|qwen7b]"] == pytest.approx(before["checkpoints[*|qwen7b]"] / 2)
    startup = 32.73 * paper.teacher.gpus / 3600  # the engine start-up does not get faster
    assert after["teacher_traces"] - startup == pytest.approx((before["teacher_traces"] - startup) / 2)
    assert after["eval_results[*|qwen7b]"] == before["eval_results[*|qwen7b]"]  # greedy unchanged
    assert round_gpu_hours(looped, "normal") < rounds_before  # the loop's budget uses the same rates


def test_engine_start_up_is_counted_per_generation_step(results_file, paper):
    results_file()
    slow_start = copy.deepcopy(RESULTS)
    slow_start["sections"]["eval"]["engine_startup_s"] += 2 * 3600  # two starts: +1 h each
    slow_start["sections"]["generation"]["ours"]["greedy"]["engine_startup_s"] += 3600
    before = {row["asset"]: row["gpu_hours"] for row in plan(paper)}
    results_file(slow_start)
    after = {row["asset"]: row["gpu_hours"] for row in plan(paper)}
    # paper.yaml's students are hub ids: no base folder whose engine files the trained checkpoints could keep,
    # so they start a second engine (a local base's share one: test_a_hub_id_students_checkpoints_get_...)
    assert after["eval_results[*|qwen0_5b]"] == pytest.approx(before["eval_results[*|qwen0_5b]"] + 2)
    assert after["judged_traces"] == pytest.approx(before["judged_traces"] + paper.judge.gpus)  # every GPU waits


@pytest.mark.parametrize(
    "key",
    ["sft_tokens_per_s", "sections.generation.ours.greedy.output_tokens_per_s", "sections.eval.engine_startup_s"],
)
def test_a_missing_figure_is_an_error_naming_the_file_and_key(results_file, key, capsys):
    broken = copy.deepcopy(RESULTS)
    *parents, last = key.split(".")
    holder = broken
    for part in parents:
        holder = holder[part]
    del holder[last]
    path = results_file(broken)
    with pytest.raises(BenchResultsError, match=re.escape(f"{path}: no '{key}'")):
        load_rates()
    with pytest.raises(SystemExit) as exit:  # the command line: one message, status 2
        main(["dry-run", "--experiment", "experiments/paper.yaml"])
    assert exit.value.code == 2 and f"no '{key}'" in capsys.readouterr().err


def test_malformed_figures_are_errors(results_file):
    zero = copy.deepcopy(RESULTS)
    zero["sections"]["generation"]["ours"]["sampled"]["output_tokens_per_s"] = 0
    results_file(zero)
    with pytest.raises(BenchResultsError, match=re.escape("'sections.generation.ours.sampled.output_tokens_per_s' is 0")):
        load_rates()
    unsized = copy.deepcopy(RESULTS)
    unsized["sections"]["sft"]["model"] = "a model"
    results_file(unsized)
    with pytest.raises(BenchResultsError, match=re.escape("'sections.sft.model'")):
        load_rates()
    path = results_file()
    path.write_text("{not json")
    with pytest.raises(BenchResultsError, match=re.escape(f"{path}: cannot read")):
        load_rates()


def test_without_a_results_file_the_built_in_rates_are_used_and_said(tmp_path, monkeypatch, paper):
    monkeypatch.setenv("TRACE_ASSETS_BENCH_RESULTS", str(tmp_path / "absent.json"))
    assert load_rates() is BUILT_IN
    assert any("no bench/results/gpu.json" in line for line in dry_run(paper).splitlines())
    # the earlier constants, as they were: 12,000 tok/s up to 3.84B, then FLOPs at 35% of 790 TFLOP/s
    assert BUILT_IN.sft_tokens_per_s(0.5) == 12000 and BUILT_IN.sft_tokens_per_s(7) == pytest.approx(790e12 * 0.35 / 42e9)
    assert BUILT_IN.decode_tokens_per_s(72, "sampled") == pytest.approx(790e12 * 0.15 / 144e9)


def test_each_sft_run_costs_its_measured_overhead_and_completions_are_capped_at_max_tokens(results_file, paper):
    results_file()
    before = {row["asset"]: row["gpu_hours"] for row in plan(paper)}
    with_overhead = copy.deepcopy(RESULTS)
    with_overhead["sections"]["sft"]["run_overhead_s"] = 3600.0  # an hour a run besides its tokens
    results_file(with_overhead)
    after = {row["asset"]: row["gpu_hours"] for row in plan(paper)}
    runs = len(paper.datasets) * len(paper.training.seeds)
    assert after["checkpoints[*|qwen0_5b]"] == pytest.approx(before["checkpoints[*|qwen0_5b]"] + runs)
    assert "3600 s per SFT run" in load_rates().describe()
    # traces assumed 300 tokens long, but a teacher allowed 150 writes at most that
    short = paper.model_copy(
        update={
            "teacher": paper.teacher.model_copy(
                update={"sampling": paper.teacher.sampling.model_copy(update={"max_tokens": 150})}
            )
        }
    )
    results_file()
    startup = 32.73 * paper.teacher.gpus / 3600
    capped = {row["asset"]: row["gpu_hours"] for row in plan(short)}
    assert capped["teacher_traces"] - startup == pytest.approx((before["teacher_traces"] - startup) / 2)


# sections.study_135m shaped as bench/results/gpu.json has it (the GPU study's SmolLM2-135M figures, as they were
# before the fourth run; the right-trace share is the fourth run's)
STUDY = {
    "model": "SmolLM2-135M-Instruct, 135M parameters",
    "source": "bench/results/gpu_study/third_run",
    "sft": {
        "eager_tokens_per_s": 49481,
        "launch_s": 30.7,
        "per_run_s": 1.5,
        "compile_per_run_s": 10.0,
        "first_run_s": {"eager": 48.6, "compiled": 114.4},
    },
    "engine": {"cold_startup_s": 163.5, "warm_startup_s": 42.9},
    "judge": {"seconds_per_verdict": 0.0065},
    "teacher": {
        "samples": 8,
        "problems_with_a_right_trace": 0.2589,
        "countdown": {"samples": 8, "problems_with_a_right_trace": 0.00074},
    },
}
WITH_STUDY = {**RESULTS, "sections": {**RESULTS["sections"], "study_135m": STUDY}}


@pytest.fixture(scope="module")
def small_study():
    """The third GPU run's cut: human solutions alone (no styles), a 135M student trained eager, 3 seeds."""
    return load_experiment(PROJECT_ROOT / "bench" / "results" / "gpu_study" / "third_run" / "experiment.yaml")


def seconds(experiment) -> dict[str, float]:
    return {row["asset"].split("[")[0]: row["gpu_hours"] * 3600 for row in plan(experiment)}


def failure_work_s(answers: int, untrained_arms: int, trained_arms: int, problems: int = 1319) -> float:
    """The failure judge's seconds past its engine: its own work on every answer, and a verdict (6.5 ms) for
    each of its distinct prompts, of the untrained and the trained arms' problems (whatever their seeds)."""
    prompts = problems * (untrained_arms * FAILURE_PROMPTS_UNTRAINED + trained_arms * FAILURE_PROMPTS_TRAINED)
    return answers * FAILURE_ANSWER_S + prompts * 0.0065


def test_a_small_study_is_estimated_from_its_measured_figures(results_file, small_study):
    results_file(WITH_STUDY)
    steps = seconds(small_study)
    # nothing to generate: no teacher or judge engine
    assert steps["teacher_traces"] == steps["judged_traces"] == 0
    # the synthetic problems are generated: 2,700 asked for, 2,020 left after decontamination; an H example is
    # its question under the chat template and its reference solution (~139 tokens), not an assumed 300-token trace
    checkpoints = next(row for row in plan(small_study) if row["asset"].startswith("checkpoints"))
    tokens = float(checkpoints["work"].split("~")[1].split(" ")[0].replace(",", ""))
    assert checkpoints["work"].startswith("6 runs in one launch") and 2020 * 130 * 3 * 6 < tokens < 2020 * 150 * 3 * 6
    assert steps["checkpoints"] == pytest.approx(30.7 + 6 * 1.5 + 48.6 + tokens / 49481)
    # the evaluation starts the study's first engine (cold), the trained checkpoints swapped into it: the untrained
    # student's two arms once and six checkpoints, half of max_tokens an answer at the greedy rate, 0.275 s a swap
    answers = (6 + 2) * 1319
    assert steps["eval_results"] == pytest.approx(163.5 + answers * 256 * 0.5 / 32427.0 + 7 * 0.275)
    # failure judging, in the evaluation's stage: on its engine (the judge is the student's model under the
    # evaluation's engine settings), one swap back to the base weights, the measured seconds a verdict for the
    # distinct prompts of the two untrained and two trained arms (seeds repeat each other's wrong answers), and its
    # own work on every answer; a judge of other engine settings starts a (warm) engine of its own
    assert steps["failure_modes"] == pytest.approx(0.275 + failure_work_s(answers, 2, 2))
    other = small_study.model_copy(update={"judge": small_study.judge.model_copy(update={"max_model_len": 4096})})
    assert seconds(other)["failure_modes"] == pytest.approx(42.9 + failure_work_s(answers, 2, 2))


def test_a_teacher_starts_the_cold_engine_and_compiling_costs_a_compile_a_run(results_file, small_study):
    results_file(WITH_STUDY)
    with_teacher = small_study.model_copy(update={"styles": ["normal"]})
    steps = seconds(with_teacher)
    generations = 2020 * small_study.teacher.sampling.n
    # traces of synthetic problems at the measured mean length (91.4 tokens), at the teacher shape's rate
    assert steps["teacher_traces"] == pytest.approx(163.5 + generations * 91.4 / 23594.2)
    # the judge is the teacher's model: it runs on the teacher's engine (same stage), at the verdict's floor
    assert steps["judged_traces"] == pytest.approx(generations * 0.0065)
    assert seconds(small_study)["eval_results"] - steps["eval_results"] == pytest.approx(163.5 - 42.9)  # now warm
    compiled = small_study.model_copy(update={"training": small_study.training.model_copy(update={"compile": True})})
    extra = seconds(compiled)["checkpoints"] - seconds(small_study)["checkpoints"]
    assert extra == pytest.approx(6 * 10.0 + 114.4 - 48.6)


def test_with_sleep_engines_the_evaluation_wakes_the_teacher_stages_engine_of_its_key(results_file, small_study):
    from trace_assets.estimates import ENGINE_WAKE_S

    results_file(WITH_STUDY)

    def sleeping(experiment):
        return experiment.model_copy(update={"gpu": experiment.gpu.model_copy(update={"sleep_engines": True})})

    with_teacher = small_study.model_copy(update={"styles": ["normal"]})
    awake, asleep = seconds(with_teacher), seconds(sleeping(with_teacher))
    # the warm start the evaluation paid becomes a wake; nothing else changes
    assert awake["eval_results"] - asleep["eval_results"] == pytest.approx(42.9 - ENGINE_WAKE_S)
    assert {k: v for k, v in awake.items() if k != "eval_results"} == {k: v for k, v in asleep.items() if k != "eval_results"}
    # no teacher work: no engine to wake, the evaluation starts the first (cold)
    assert seconds(sleeping(small_study)) == seconds(small_study)
    # a teacher of another engine key (its context length): its sleeping engine is stopped, the evaluation starts its own
    longer = with_teacher.model_copy(
        update={
            "teacher": with_teacher.teacher.model_copy(update={"max_model_len": 4096}),
            "judge": with_teacher.judge.model_copy(update={"max_model_len": 4096}),
        }
    )
    assert seconds(sleeping(longer))["eval_results"] == pytest.approx(seconds(longer)["eval_results"])
    # a hub id's trained checkpoints get an engine key of their own (no folder to keep the base's files): no wake counted
    hub = "HuggingFaceTB/SmolLM2-135M-Instruct"
    on_hub = with_teacher.model_copy(
        update={
            "teacher": with_teacher.teacher.model_copy(update={"model": hub}),
            "judge": with_teacher.judge.model_copy(update={"model": hub}),
            "students": {n: st.model_copy(update={"model": hub}) for n, st in with_teacher.students.items()},
        }
    )
    assert seconds(sleeping(on_hub))["eval_results"] == pytest.approx(seconds(on_hub)["eval_results"])


@pytest.mark.parametrize(
    ("change", "start"),
    [
        ({}, 0.0),  # the teacher's model and engine settings: its engine, kept by the stage's GenerationResource
        ({"max_model_len": 4096}, 42.9),  # another engine key: an engine of its own, warm (the teacher's compiled it)
        ({"tensor_parallel_size": 2}, 2 * 42.9),  # on both its GPUs
        ({"model": "org/Other-0.1B"}, 163.5),  # another model: its first engine, cold
    ],
)
def test_the_judge_starts_an_engine_unless_it_shares_the_teachers(results_file, small_study, change, start):
    results_file(WITH_STUDY)
    judge = small_study.judge.model_copy(update=change)
    steps = seconds(small_study.model_copy(update={"styles": ["normal"], "judge": judge}))
    generations = 2020 * small_study.teacher.sampling.n
    assert steps["judged_traces"] == pytest.approx(start + generations * 0.0065)
    # the failure judge runs in the evaluation's stage: on the evaluation engine where it is the student's model
    # under its engine settings (a swap back to the base weights), else an engine start, warm (its model ran before)
    own_engine = 42.9 * judge.tensor_parallel_size if change else 0.275
    assert steps["failure_modes"] == pytest.approx(own_engine + failure_work_s((2 * 3 + 2) * 1319, 2, 2))


@pytest.mark.parametrize(("model", "small"), [("org/Tiny-0.2B", True), ("org/Mid-0.3B", False), ("Qwen/Qwen2.5-7B", False)])
def test_a_student_gets_the_figures_of_the_nearer_measured_size(results_file, small_study, model, small):
    results_file(WITH_STUDY)
    students = {"student": small_study.students["smollm2"].model_copy(update={"model": model})}
    steps = seconds(small_study.model_copy(update={"students": students}))
    rates = load_rates()
    assert rates.is_small(model_billions(model)) == small
    first, runs = (48.6, 6 * 1.5) if small else (0.0, 0.0)
    tokens_per_s = 49481 if small else rates.sft_tokens_per_s(model_billions(model))
    tokens = seconds(small_study)["checkpoints"] - 30.7 - 6 * 1.5 - 48.6  # the same examples: seconds at the small rate
    # the launch is charged at every size (the fixture's bench section has no fixed cost a run)
    assert steps["checkpoints"] == pytest.approx(30.7 + runs + first + tokens * 49481 / tokens_per_s)


@pytest.mark.parametrize(
    "key",
    [
        "sft.launch_s",
        "sft.per_run_s",
        "engine.cold_startup_s",
        "judge.seconds_per_verdict",
        "teacher.problems_with_a_right_trace",
        "teacher.countdown.problems_with_a_right_trace",
        "model",
    ],
)
def test_a_malformed_study_section_is_an_error_naming_its_key(results_file, key):
    broken = copy.deepcopy(WITH_STUDY)
    *parents, last = f"study_135m.{key}".split(".")
    holder = broken["sections"]
    for part in parents:
        holder = holder[part]
    holder[last] = "fast"
    path = results_file(broken)
    with pytest.raises(BenchResultsError, match=re.escape(f"{path}: 'sections.study_135m.{key}' is 'fast'")):
        load_rates()


@pytest.mark.parametrize("value", [1.0, 1.5, None])
def test_a_right_trace_share_needs_its_sample_count_and_is_below_one(results_file, value):
    broken = copy.deepcopy(WITH_STUDY)
    teacher = broken["sections"]["study_135m"]["teacher"]
    if value is None:
        del teacher["samples"]
    else:
        teacher["problems_with_a_right_trace"] = value
    path = results_file(broken)
    key = "samples" if value is None else "problems_with_a_right_trace"
    with pytest.raises(BenchResultsError, match=re.escape(f"{path}: 'sections.study_135m.teacher.{key}'")):
        load_rates()


def recipe(kind: str, **settings) -> DatasetRecipe:
    return DatasetRecipe(recipe=kind, **({"style": "normal"} if kind != "H" else {}), **settings)


def test_examples_per_problem_follow_the_right_trace_rate():
    from trace_assets.estimates import examples_per_problem

    p, n = 0.05, 8
    none_right, all_right = (1 - p) ** n, p**n
    assert examples_per_problem(recipe("G"), p, n) == pytest.approx(1 - none_right)
    assert examples_per_problem(recipe("W"), p, n) == pytest.approx(1 - all_right)
    for paired in (recipe("G", pair_correct_wrong=True), recipe("W", pair_correct_wrong=True), recipe("mixture")):
        # a mixture whose flaw is the problem's wrong trace needs one for every problem: paired like G/W
        assert examples_per_problem(paired, p, n) == pytest.approx(1 - none_right - all_right)
    corrupted = recipe("mixture", flaw="corrupted", flawed_fraction=0.25)  # flawed from its own right trace
    assert examples_per_problem(corrupted, p, n) == pytest.approx(1 - none_right)
    # two traces a problem where it has two: the expected min(2, right samples)
    two = 2 * (1 - none_right - n * p * (1 - p) ** (n - 1)) + n * p * (1 - p) ** (n - 1)
    assert examples_per_problem(recipe("G", per_problem=2), p, n) == pytest.approx(two)
    # keep_by keeps its fraction whether or not the rate is known; H and an unknown rate: one a problem
    confident = recipe("G", keep_by="step_confidence", keep_fraction=0.5)
    assert examples_per_problem(confident, p, n) == pytest.approx(0.5 * (1 - none_right))
    assert examples_per_problem(confident, None, n) == 0.5
    assert examples_per_problem(recipe("H"), p, n) == examples_per_problem(recipe("G"), None, n) == 1.0


@pytest.fixture(scope="module")
def teacher_arms():
    """The fourth GPU run's first cut: H, its replicate, G and W paired, a 25% wrong-trace mixture, 8 samples."""
    experiment = load_experiment(PROJECT_ROOT / "bench" / "results" / "gpu_study" / "fourth_run" / "experiment.yaml")
    keep = ["H", "H_aa", "G_normal", "W_normal", "mix25_normal"]
    return experiment.model_copy(
        update={
            "styles": ["normal"],
            "datasets": {name: experiment.datasets[name] for name in keep},
            "comparisons": experiment.comparisons.model_copy(update={"groups": [["G_normal", "W_normal", "mix25_normal"]]}),
            "token_matching": [],
            "contrasts": [],
        }
    )


def training_tokens(experiment) -> float:
    checkpoints = next(row for row in plan(experiment) if row["asset"].startswith("checkpoints"))
    return float(checkpoints["work"].split("~")[1].split(" ")[0].replace(",", ""))


def test_teacher_arms_train_on_the_expected_share_of_problems_with_a_right_trace(results_file, teacher_arms):
    results_file(WITH_STUDY)
    humans = teacher_arms.model_copy(update={"datasets": {"H": teacher_arms.datasets["H"]}})
    traces = teacher_arms.model_copy(update={"datasets": {"G_normal": teacher_arms.datasets["G_normal"]}})
    h_tokens, g_tokens = training_tokens(humans), training_tokens(traces)
    # the measured share at the measured 8 samples: a quarter of the problems (530 of 2,020 kept in the run)
    share = 0.2589
    # a G example is its question and a trace (91.4 tokens) where H's is its question and the human solution
    per_problem = g_tokens / share / h_tokens
    assert 1.0 < per_problem < 1.6
    assert training_tokens(teacher_arms) == pytest.approx(2 * h_tokens + 3 * g_tokens)
    note = next(line for line in dry_run(teacher_arms).splitlines() if "of the train problems" in line)
    assert "G_normal 26%, W_normal 26%, mix25_normal 26%" in note and "assumed" in note
    # twice the samples: more problems have a right trace, at the rate that gives the measured share at 8
    sixteen = traces.model_copy(
        update={"teacher": traces.teacher.model_copy(update={"sampling": traces.teacher.sampling.model_copy(update={"n": 16})})}
    )
    assert training_tokens(sixteen) / g_tokens == pytest.approx((1 - (1 - share) ** 2) / share)


def test_countdown_takes_its_own_measured_traces_and_right_trace_share(results_file, teacher_arms):
    """One synthetic task at a time: Countdown's teacher traces (86.4 tokens) and right-trace share (2 of
    2,700 problems) are its own, not the word problems'; the two tasks together are not generated by dry-run
    and keep the assumed 300-token traces and the upper bound."""
    from trace_assets.estimates import completion_tokens, generated_problems

    results_file(WITH_STUDY)

    def on(tasks: list[str], datasets: list[str]):
        problems = teacher_arms.problems.model_copy(update={"tasks": tasks})
        return teacher_arms.model_copy(update={"problems": problems, "datasets": {n: teacher_arms.datasets[n] for n in datasets}})

    countdown, words, both = (
        on(["countdown"], ["G_normal"]),
        on(["gsm8k"], ["G_normal"]),
        on(["gsm8k", "countdown"], ["G_normal"]),
    )
    frame = generated_problems(countdown)
    assert frame is not None and set(frame["task"]) == {"countdown"} and generated_problems(both) is None
    assert completion_tokens(countdown, generated=True)[0] == 86.4 and completion_tokens(words, generated=True)[0] == 91.4
    assert completion_tokens(both, generated=generated_problems(both) is not None)[0] == 256  # assumed 300, cut at 256
    note = next(line for line in dry_run(countdown).splitlines() if "of the train problems" in line)
    assert "G_normal 0%" in note and "0.1% of synthetic countdown problems" in note
    # G on Countdown keeps 2,700 problems x 0.074%: a couple of examples, not every problem (the upper bound before)
    assert training_tokens(countdown) < 0.01 * training_tokens(on(["countdown"], ["H"]))
    assert training_tokens(words) > 0.2 * training_tokens(on(["gsm8k"], ["H"]))
    # the teacher samples the generated train problems (2,700 asked for, Countdown's decontamination keeps them)
    samples = 8 * frame.filter(frame["split"] == "train").height
    teacher = next(row for row in plan(countdown) if row["asset"] == "teacher_traces")
    assert samples == 21600 and teacher["work"].startswith("21,600 generations")


def test_what_the_generation_cache_holds_is_read_back_not_generated(results_file):
    """The fifth GPU run's cut found every teacher sample and verdict in the fourth run's carried cache: dry-run
    builds the same request keys as the GPU run did (16,160 samples; verdicts on 16,155 distinct prompts, so on
    every trace), charges reading them back instead of generating, and so no engine for the teacher: the
    evaluation's engine is then the run's first, cold (the run's ~170 s start, charged warm before). It also
    holds the fourth run's failure verdicts, one per distinct prompt that run's judge was asked (11,932)."""
    import os
    from pathlib import Path

    from bench.gpu_study import load_cache
    from trace_assets.estimates import CACHED_SAMPLE_S, CACHED_VERDICT_S, CachedWork, cached_generations, problem_splits

    results_file(WITH_STUDY)
    experiment = load_experiment(PROJECT_ROOT / "bench" / "results" / "gpu_study" / "fifth_run" / "experiment.yaml")
    fresh = seconds(experiment)
    data = Path(os.environ["TRACE_ASSETS_DATA_DIR"])
    load_cache(data, [PROJECT_ROOT / "bench" / "results" / "gpu_study" / "fourth_run" / "generation_cache"])
    assert cached_generations(experiment, problem_splits(experiment), database_path(data)) == CachedWork(16160, 16160, 11932)
    cached = seconds(experiment)
    assert cached["teacher_traces"] == pytest.approx(16160 * CACHED_SAMPLE_S)  # (WITH_STUDY has no GGUF figure)
    assert cached["judged_traces"] == pytest.approx(16160 * CACHED_VERDICT_S)
    assert cached["judged_traces"] < fresh["judged_traces"] / 10
    study = STUDY["engine"]
    assert cached["eval_results"] - fresh["eval_results"] == pytest.approx(study["cold_startup_s"] - study["warm_startup_s"])
    # another sampling setting asks for other samples: nothing of the cache is theirs
    other = experiment.model_copy(
        update={
            "teacher": experiment.teacher.model_copy(
                update={"sampling": experiment.teacher.sampling.model_copy(update={"temperature": 0.7})}
            )
        }
    )
    assert cached_generations(other, problem_splits(other), database_path(data)) == CachedWork(failures=11932)


def test_a_cache_dry_run_cannot_read_at_once_counts_as_empty(results_file, tmp_path):
    """A database another connection holds for writing, or a file that is no DuckDB database, is not waited
    on nor an error: dry-run charges every sample as generated (its estimate an upper bound)."""
    import duckdb

    from trace_assets.estimates import CachedWork, cached_generations, problem_splits

    results_file(WITH_STUDY)
    experiment = load_experiment(PROJECT_ROOT / "bench" / "results" / "gpu_study" / "fifth_run" / "experiment.yaml")
    splits = problem_splits(experiment)
    broken = tmp_path / "broken.duckdb"
    broken.write_bytes(b"not a database" * 100)
    assert cached_generations(experiment, splits, broken) == CachedWork()
    held = tmp_path / "held.duckdb"
    with duckdb.connect(str(held)):  # read-write in this process: a read-only connection is refused at once
        assert cached_generations(experiment, splits, held) == CachedWork()


@pytest.mark.parametrize("teacher", ["Qwen/Qwen2.5-7B-Instruct", None])
def test_without_a_measured_share_teacher_arms_take_every_problem(results_file, teacher_arms, teacher):
    """A larger teacher (no figure measured for it), or a results file without the share: today's upper bound."""
    study = copy.deepcopy(WITH_STUDY)
    if teacher is None:
        del study["sections"]["study_135m"]["teacher"]
    results_file(study)
    experiment = teacher_arms
    if teacher is not None:
        experiment = teacher_arms.model_copy(update={"teacher": teacher_arms.teacher.model_copy(update={"model": teacher})})
    humans = experiment.model_copy(update={"datasets": {"H": experiment.datasets["H"]}})
    traces = experiment.model_copy(update={"datasets": {"G_normal": experiment.datasets["G_normal"]}})
    assert 1.0 < training_tokens(traces) / training_tokens(humans) < 1.6  # every problem, a trace each
    note = next(line for line in dry_run(experiment).splitlines() if "G_normal" in line and "every train problem" in line)
    assert "upper bound" in note


def test_the_study_samples_the_train_problems_left_after_the_loops_validation_split(results_file):
    """The problems asset carves the closed loop's validation share out of the train problems before the teacher samples them."""
    from trace_assets.estimates import problem_splits

    results_file(WITH_STUDY)
    experiment = load_experiment(PROJECT_ROOT / "experiments" / "gpu_loop.yaml")
    splits = problem_splits(experiment)
    # 1,501 train problems after decontamination, 305 of them for validation (the problems asset's seeded carve)
    assert (splits.train, splits.validation, splits.test) == (1196, 305, 1319)
    rows = {row["asset"]: row for row in plan(experiment)}
    assert rows["teacher_traces"]["work"].startswith(f"{1196 * 4:,} generations")
    assert rows["judged_traces"]["work"].startswith(f"{1196 * 4:,} judge calls")


# The closed loop's rounds (trace_assets/loop/rounds.py round_steps): one Dagster run a round, in one process, whose
# GenerationResource keeps its engine for the next call of the same engine key until the round's training takes its
# card; round 0's traces and verdicts are the study's (cached).


@pytest.fixture(scope="module")
def gpu_loop():
    """gpu_loop.yaml with its engines stopped between runs (the file sleeps them: the test that turns it on says what that changes)."""
    experiment = load_experiment(PROJECT_ROOT / "experiments" / "gpu_loop.yaml")
    assert experiment.gpu.sleep_engines
    return experiment.model_copy(update={"gpu": experiment.gpu.model_copy(update={"sleep_engines": False})})


def with_revision(experiment, **changes):
    return experiment.model_copy(update={"revision": experiment.revision.model_copy(update=changes)})


def engine_starts(results_file, experiment, number: int) -> float:
    """How many warm engine starts round ``number`` is charged: its hours grow by that many when a start takes an hour more."""
    results_file(WITH_STUDY)
    before = round_gpu_hours(experiment, "normal", number=number)
    slow = copy.deepcopy(WITH_STUDY)
    slow["sections"]["study_135m"]["engine"]["warm_startup_s"] += 3600
    results_file(slow)
    return round_gpu_hours(experiment, "normal", number=number) - before


@pytest.mark.parametrize(
    ("change", "revised", "first"),
    [
        # the default: the reviser is the teacher, and the judge its model too: the reviser's engine serves the
        # teacher's samples and the judge's verdicts; training takes the card back; the evaluation's engine (the
        # student's model, ModelSpec's settings) serves the failure judge. Round 0: the evaluation's alone.
        ({}, 2, 1),
        # a judge of another context length: its own engine for the verdicts and another for the failures
        ({"judge": {"max_model_len": 4096}}, 4, 2),
        # a student of another model: the failure judge can't use its evaluation engine
        ({"students": {"smollm2": {"model": "org/Tiny-0.2B"}}}, 3, 2),
        # a reviser of another model: its engine, then the teacher's (which the judge shares)
        ({"reviser": {"model": "org/Other-0.1B"}}, 3, 1),
    ],
)
def test_a_round_is_charged_the_engines_it_starts(results_file, gpu_loop, change, revised, first):
    experiment = gpu_loop
    if "judge" in change:
        experiment = experiment.model_copy(update={"judge": experiment.judge.model_copy(update=change["judge"])})
    if "students" in change:
        students = {name: student.model_copy(update=change["students"][name]) for name, student in experiment.students.items()}
        experiment = experiment.model_copy(update={"students": students})
    if "reviser" in change:
        experiment = with_revision(experiment, reviser=experiment.teacher.model_copy(update=change["reviser"]))
    assert engine_starts(results_file, experiment, 1) == pytest.approx(revised)
    assert engine_starts(results_file, experiment, 0) == pytest.approx(first)


def test_a_round_counts_its_work_at_the_study_steps_rates(results_file, gpu_loop):
    from trace_assets.estimates import ASSUMED_DECODE_STEP_S, problem_splits
    from trace_assets.loop.revision import REVISION_MAX_TOKENS
    from trace_assets.loop.rounds import round_steps

    results_file(WITH_STUDY)
    rates = load_rates()
    assert problem_splits(gpu_loop).train == 1196  # 305 of the 1,501 train problems carved out for validation
    revised, first = round_steps(gpu_loop, "normal", number=1), round_steps(gpu_loop, "normal", number=0)
    # the reviser: an engine start and its replies (2 attempts) decoding together, at most REVISION_MAX_TOKENS steps
    assert revised["round_styles"] == pytest.approx(42.9 + REVISION_MAX_TOKENS * ASSUMED_DECODE_STEP_S)
    assert first["round_styles"] == first["round_traces"] == 0  # round 0: the style file, the study's traces
    # the teacher's samples of the train problems at the measured trace length and rate, the judge's at the verdict floor
    samples = 1196 * gpu_loop.teacher.sampling.n
    assert revised["round_traces"] == pytest.approx(samples * 91.4 / 23594.2 + samples * 0.0065)
    # the round's checkpoints: the study's own (the same arm, problems and kept share) less its first-run warm-up
    assert revised["round_checkpoints"] == first["round_checkpoints"] == pytest.approx(seconds(gpu_loop)["checkpoints"] - 48.6)
    # validation and test answers of the one checkpoint, half of max_tokens each, in one engine
    assert revised["round_evals"] == pytest.approx(42.9 + (305 + 1319) * 256 * 0.5 / 32427.0)
    # the failure judge reads the validation answers of the round's one arm on the evaluation's engine: its weights loaded
    assert revised["round_failures"] == pytest.approx(failure_work_s(305, 0, 1, problems=305) + rates.eval_swap_s)


def test_with_sleep_engines_a_round_wakes_the_engines_it_would_start(results_file, gpu_loop):
    """The reviser wakes the engine the run before left (the evaluation's, where the failure judge ran), and
    the evaluation wakes the one the round's generation left through its training; another key starts its own."""
    from trace_assets.estimates import ENGINE_WAKE_S
    from trace_assets.loop.rounds import round_steps

    results_file(WITH_STUDY)

    def sleeping(experiment):
        return experiment.model_copy(update={"gpu": experiment.gpu.model_copy(update={"sleep_engines": True})})

    for number in (0, 1):
        awake, asleep = round_steps(gpu_loop, "normal", number=number), round_steps(sleeping(gpu_loop), "normal", number=number)
        assert awake["round_evals"] - asleep["round_evals"] == pytest.approx(42.9 - ENGINE_WAKE_S)
        assert awake["round_styles"] - asleep["round_styles"] == pytest.approx(number * (42.9 - ENGINE_WAKE_S))
        assert [awake[k] for k in ("round_traces", "round_checkpoints", "round_failures")] == [
            asleep[k] for k in ("round_traces", "round_checkpoints", "round_failures")
        ]
    # a reviser of another context length: its own engine (a start), and then the teacher's neither shares it
    other = sleeping(with_revision(gpu_loop, reviser=gpu_loop.teacher.model_copy(update={"max_model_len": 4096})))
    revised = round_steps(other, "normal", number=1)
    assert revised["round_styles"] == pytest.approx(
        round_steps(with_revision(gpu_loop, reviser=other.reviser()), "normal", number=1)["round_styles"]
    )


def test_a_round_trains_the_kept_share_of_its_problems(results_file, gpu_loop):
    """G_normal keeps the problems with a right trace among the teacher's samples: more samples, more problems."""
    from trace_assets.loop.rounds import round_steps

    results_file(WITH_STUDY)

    def token_seconds(experiment) -> float:
        return round_steps(experiment, "normal", number=1)["round_checkpoints"] - 30.7 - 1.5  # a launch, one run

    sampling = gpu_loop.teacher.sampling.model_copy(update={"n": 8})
    eight = gpu_loop.model_copy(update={"teacher": gpu_loop.teacher.model_copy(update={"sampling": sampling})})
    # the measured 25.9% of problems at 8 samples; at 4, from the same per-sample rate, 1 - sqrt(1 - 0.2589)
    assert token_seconds(eight) / token_seconds(gpu_loop) == pytest.approx(0.2589 / (1 - (1 - 0.2589) ** 0.5))


def test_dry_run_charges_round_0_its_own_work_and_a_reviser_it_never_ran_cold_once(results_file, gpu_loop):
    results_file(WITH_STUDY)
    rows = {row["asset"]: row for row in plan(gpu_loop)}
    first, revised = (round_gpu_hours(gpu_loop, "normal", number=n) for n in (0, 1))
    assert first < revised
    assert rows["round_*[normal_r0..r3]"]["gpu_hours"] == pytest.approx(first + 3 * revised)
    other = with_revision(gpu_loop, reviser=gpu_loop.teacher.model_copy(update={"model": "org/Other-0.1B"}))
    first, revised = (round_gpu_hours(other, "normal", number=n) for n in (0, 1))
    row = next(row for row in plan(other) if row["asset"].startswith("round_"))
    assert row["gpu_hours"] == pytest.approx(first + 3 * revised + (163.5 - 42.9) / 3600)


def test_a_hub_id_students_checkpoints_get_a_second_evaluation_engine(results_file, tmp_path):
    """Checkpoints keep their base's engine files only where the base is a folder (local: models, paths);
    a hub id's trained checkpoints start an engine of their own, one warm start more."""
    from trace_assets.estimates import eval_gpu_hours, local_model
    from trace_assets.rates import load_rates

    rates = load_rates(results_file())
    assert local_model("local:smollm2-135m-instruct") and local_model(str(tmp_path))
    assert not local_model("Qwen/Qwen2.5-0.5B")
    local = eval_gpu_hours(1e6, 0.5, 4, rates) * 3600
    hub = eval_gpu_hours(1e6, 0.5, 4, rates, local_base=False) * 3600
    assert hub - local == pytest.approx(rates.engine_start_s(0.5, "eval"))
    assert eval_gpu_hours(1e6, 0.5, 1, rates, local_base=False) == eval_gpu_hours(1e6, 0.5, 1, rates)  # untrained only


def test_a_local_model_not_yet_built_in_the_data_folder_is_charged_to_the_first_step(
    results_file, small_study, tmp_path, monkeypatch
):
    """Building local:smollm2's folder from its GGUF (~42 s on the GPU machine) happens once per data folder,
    in the first step that resolves the model: the teacher's where it samples (without teacher work,
    sft_examples, a CPU step, builds it: not GPU time); never again once the folder holds it."""
    monkeypatch.setenv("TRACE_ASSETS_DATA_DIR", str(tmp_path / "data"))
    with_teacher = small_study.model_copy(update={"styles": ["normal"]})
    results_file(WITH_STUDY)
    before = {"human": seconds(small_study), "teacher": seconds(with_teacher)}
    results_file({**RESULTS, "sections": {**RESULTS["sections"], "study_135m": {**STUDY, "local_model": {"prep_s": 42.0}}}})
    assert small_study.teacher.model == "local:smollm2-135m-instruct"
    human, teacher = seconds(small_study), seconds(with_teacher)
    assert human == pytest.approx(before["human"])  # no teacher work: sft_examples builds it, on the CPU
    assert teacher["teacher_traces"] == pytest.approx(before["teacher"]["teacher_traces"] + 42.0)
    assert teacher["checkpoints"] == pytest.approx(before["teacher"]["checkpoints"])  # once, not per step
    row = next(row for row in plan(with_teacher) if row["asset"] == "teacher_traces")
    assert "building local:smollm2-135m-instruct from its GGUF" in row["work"]
    built = tmp_path / "data" / "models" / "smollm2-135m-instruct"
    built.mkdir(parents=True)
    (built / "config.json").write_text("{}")
    assert seconds(with_teacher) == pytest.approx(before["teacher"])  # the data folder has it: nothing to build


def test_the_failure_judges_prompts_a_problem_are_what_the_committed_runs_asked():
    """FAILURE_PROMPTS_UNTRAINED and FAILURE_PROMPTS_TRAINED are the judge's distinct prompts (one per distinct
    wrong answer to a problem) over the untrained arms' problems and the prompts the trained arms add over
    theirs (each arm's problems once, whatever its seeds), in the tables of the GPU runs they name: recounted
    from them. The fifth run's count is its log's cached plus generated prompts (4,034 + 2,713)."""
    import polars as pl

    from bench.gpu_study import read_tables
    from trace_assets.experiment import BASE_DATASETS

    counts = {"untrained": [0, 0], "trained": [0, 0]}  # prompts, arm problems
    for run in ("third_run", "fourth_run", "fifth_run", "loop_run"):
        tables = read_tables(PROJECT_ROOT / "bench" / "results" / "gpu_study" / run / "tables.tar")
        keys = ["dataset", "student", "seed", "problem_id"]
        judged = (
            tables["failure_modes"]
            .filter(pl.col("source").is_in(["judge", "rules+judge", "unparsable"]))
            .join(tables["eval_results"].select([*keys, "completion"]), on=keys)
        )
        base = pl.col("dataset").is_in(list(BASE_DATASETS))
        untrained = judged.filter(base).select("problem_id", "completion").unique()
        added = (
            judged.filter(~base)
            .select("problem_id", "completion")
            .unique()
            .join(untrained, on=["problem_id", "completion"], how="anti")
        )
        arms = tables["eval_results"].select("dataset", "student", "problem_id").unique()
        counts["untrained"][0] += untrained.height
        counts["untrained"][1] += arms.filter(base).height
        counts["trained"][0] += added.height
        counts["trained"][1] += arms.filter(~base).height
        if run == "fifth_run":
            assert untrained.height + added.height == 4034 + 2713
    assert counts["untrained"][0] / counts["untrained"][1] == pytest.approx(FAILURE_PROMPTS_UNTRAINED)
    assert counts["trained"][0] / counts["trained"][1] == pytest.approx(FAILURE_PROMPTS_TRAINED)
    # the untrained student's wrong answers are mostly distinct; a trained arm adds about one prompt a problem
    assert 0.65 < FAILURE_PROMPTS_UNTRAINED < 0.8 and 0.8 < FAILURE_PROMPTS_TRAINED < 1.0


def test_a_cache_holding_failure_verdicts_spares_their_share(tmp_path, small_study):
    """dry-run counts the judge's failure verdicts a carried cache holds (the replies whose first field is the
    category, of the judge's model only) and charges FAILURE_CACHED_SHARE of the prompts, at most that many, as
    read from it."""
    import polars as pl

    from trace_assets.estimates import FAILURE_CACHED_SHARE, cached_failure_verdicts, failure_judge_calls
    from trace_assets.generation.cache_store import CACHE_SCHEMA, add_missing_rows
    from trace_assets.storage import connect

    judge = small_study.judge.model
    texts = [('{"category": "arithmetic_slip", "reason": "x"}', judge)] * 3 + [
        ('{ "category": "misread", "reason": "y"}', judge),
        ('{"conforms": true, "failed_criteria": [], "reason": "z"}', judge),  # the trace judge's
        ('{"category": "misread", "reason": "w"}', "other-model"),
        ("The answer is 4.", judge),
    ]
    rows = pl.DataFrame(
        [
            {
                "request_hash": f"k{i}",
                "sample_index": 0,
                "model": model,
                "text": text,
                "finish_reason": "stop",
                "prompt_tokens": 1,
                "output_tokens": 1,
                "token_logprobs": None,
                "token_ends": None,
            }
            for i, (text, model) in enumerate(texts)
        ],
        schema=CACHE_SCHEMA,
    )
    database = tmp_path / "cache.duckdb"
    assert add_missing_rows(database, rows) == len(texts)
    with connect(database, read_only=True) as connection:
        assert cached_failure_verdicts(connection, judge) == 4
    fresh = failure_judge_calls(small_study, 1000, 1000)
    assert fresh == pytest.approx(1000 * (FAILURE_PROMPTS_UNTRAINED + FAILURE_PROMPTS_TRAINED))
    assert failure_judge_calls(small_study, 1000, 1000, 4) == pytest.approx(fresh - 4 * FAILURE_CACHED_SHARE)
    assert failure_judge_calls(small_study, 1000, 1000, 10**6) == pytest.approx(fresh * (1 - FAILURE_CACHED_SHARE))


def test_a_hub_id_students_trained_checkpoints_leave_the_failure_judge_an_engine_of_its_own(results_file, small_study):
    """A hub-id base has no folder whose engine files its checkpoints keep: they get an engine of their own,
    the last one running when the failure judge comes, and a judge naming the hub id does not match it. With
    no trained arm the base's engine is the last, and the judge of the same name and settings runs on it."""
    results_file(WITH_STUDY)
    hub = "org/Tiny-0.1B"
    students = {"student": small_study.students["smollm2"].model_copy(update={"model": hub})}
    judge = small_study.judge.model_copy(update={"model": hub})
    trained = small_study.model_copy(update={"students": students, "judge": judge})
    answers = (2 * 3 + 2) * 1319
    assert seconds(trained)["failure_modes"] == pytest.approx(
        42.9 + failure_work_s(answers, 2, 2)
    )  # warm: the student's model ran
    untrained = trained.model_copy(update={"datasets": {}, "contrasts": [], "comparisons": None, "token_matching": []})
    assert seconds(untrained)["failure_modes"] == pytest.approx(0.275 + failure_work_s(2 * 1319, 2, 0))


def test_the_failure_judge_is_charged_only_for_the_tasks_whose_wrong_answers_it_reads(results_file, small_study):
    """Countdown's verifier names every wrong answer's category (a CPU rehearsal of the GPU study's Countdown
    cut asked the judge nothing); the word problems' wrong answers go to it. A study of both is charged for
    the word problems' share of the answers."""
    from trace_assets.estimates import judged_task_share

    results_file(WITH_STUDY)
    problems = lambda tasks: small_study.problems.model_copy(update={"tasks": tasks})  # noqa: E731
    countdown = small_study.model_copy(update={"problems": problems(["countdown"])})
    both = small_study.model_copy(update={"problems": problems(["gsm8k", "countdown"])})
    assert judged_task_share(small_study) == 1.0 and judged_task_share(countdown) == 0.0
    assert seconds(countdown)["failure_modes"] == 0.0  # no judge call, no engine
    assert judged_task_share(both) == pytest.approx(0.5)  # the same n_test for each task
    row = next(row for row in plan(both) if row["asset"] == "failure_modes")
    answers = float(row["work"].split(" judge calls of ")[1].split(" ")[0].replace(",", ""))
    # two untrained and two trained arms of (6 + 2) evaluations a problem, half of them the word problems'
    prompts = answers / 8 * 2 * (FAILURE_PROMPTS_UNTRAINED + FAILURE_PROMPTS_TRAINED)
    assert row["work"].startswith(f"~{prompts * 0.5:,.0f} judge calls")
