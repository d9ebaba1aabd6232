import subprocess
import sys

from trace_assets.cli import model_billions, plan
from trace_assets.experiment import PROJECT_ROOT, load_experiment


def test_model_size_from_name():
    assert model_billions("Qwen/Qwen2.5-72B-Instruct") == 72
    assert model_billions("Qwen/Qwen2.5-0.5B") == 0.5
    assert model_billions("HuggingFaceTB/SmolLM2-135M-Instruct") == 0.135
    # a mixture of experts: the active parameters, which set the FLOPs per token
    assert model_billions("Qwen/Qwen3-235B-A22B-Instruct-2507-FP8") == 22
    assert model_billions("Qwen/Qwen3-30B-A3B") == 3


def test_dry_run_of_the_paper_experiment():
    experiment = load_experiment(PROJECT_ROOT / "experiments" / "paper.yaml")
    rows = {row["asset"]: row for row in plan(experiment)}
    # 4 styles x 1,700 problems x 4 samples; paper.yaml has no paraphrase (H_style) arm
    assert rows["teacher_traces"]["work"].startswith("27,200 generations")
    assert (
        rows["checkpoints[*|qwen7b]"]["gpu_hours"]
        > rows["checkpoints[*|qwen3b]"]["gpu_hours"]
        >= rows["checkpoints[*|qwen0_5b]"]["gpu_hours"]
    )
    assert rows["teacher_traces"]["gpus"] == 8  # tensor_parallel_size 4 x data_parallel_size 2
    # Two data-parallel SFT processes: fewer wall hours, more GPU hours (all-reduce costs a share).
    two = experiment.model_copy(update={"training": experiment.training.model_copy(update={"processes": 2})})
    two_rows = {row["asset"]: row for row in plan(two)}
    single, double = rows["checkpoints[*|qwen0_5b]"], two_rows["checkpoints[*|qwen0_5b]"]
    assert double["gpus"] == 2 and double["gpu_hours"] > single["gpu_hours"] > double["gpu_hours"] / 2
    output = subprocess.run(
        [sys.executable, "-m", "trace_assets.cli", "dry-run", "--experiment", "experiments/paper.yaml"],
        capture_output=True,
        text=True,
        check=True,
        cwd=PROJECT_ROOT,
    ).stdout
    assert "teacher_traces" in output and "GPU h" in output and "total" in output
    # power planning: one detectable-difference line per planned contrast, A/A control and interaction
    planned = len(experiment.planned_contrasts()) + len(experiment.replicate_pairs()) + len(experiment.interactions())
    lines = [line for line in output.splitlines() if "detectable difference" in line]
    assert len(lines) == planned and all("seeds per arm for 3 points" in line for line in lines)
    assert "declared statistics.seed_sd" in output and "Holm over 57" in output


def test_dry_run_counts_one_run_per_task_for_datasets_trained_per_task():
    """shape_of_thought.yaml trains per task: datasets x 4 tasks x 3 seeds runs a student, with the same
    training tokens and answers to generate as pooled; a dataset's own per_task overrides the experiment's."""
    from trace_assets.cli import training_line

    experiment = load_experiment(PROJECT_ROOT / "experiments" / "shape_of_thought.yaml")
    assert experiment.training.per_task and experiment.per_task_datasets() == set(experiment.datasets)
    pooled = experiment.model_copy(update={"training": experiment.training.model_copy(update={"per_task": False})})
    first, *others = pooled.datasets
    one = pooled.model_copy(
        update={"datasets": {**pooled.datasets, first: pooled.datasets[first].model_copy(update={"per_task": True})}}
    )
    rows = {
        name: {row["asset"]: row for row in plan(e)} for name, e in (("per_task", experiment), ("pooled", pooled), ("one", one))
    }
    runs = {name: r["checkpoints[*|qwen1_5b]"]["work"].split(" runs")[0] for name, r in rows.items()}
    n, tasks, seeds = len(experiment.datasets), len(experiment.problems.tasks), len(experiment.training.seeds)
    assert (tasks, seeds) == (4, 3)
    assert runs == {"per_task": str(n * tasks * seeds), "pooled": str(n * seeds), "one": str((n - 1 + tasks) * seeds)}
    evals = {r["eval_results[*|qwen1_5b]"]["work"] for r in rows.values()}
    assert len(evals) == 1  # every test problem answered once per arm and seed either way
    assert training_line(one).endswith(f": {first}; pooled: {', '.join(others)}")
    assert "pooled" in training_line(pooled) and "per task" not in training_line(pooled)
