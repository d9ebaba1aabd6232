"""The report's statistics (trace_assets/reporting/stats.py) and their calibration by simulation."""

import re
from dataclasses import replace

import numpy as np
import polars as pl
import pytest
from statsmodels.stats.multitest import multipletests

from trace_assets.cli import main
from trace_assets.experiment import PROJECT_ROOT, ExperimentError, load_experiment
from trace_assets.reporting.calibration import (
    StudyShape,
    World,
    null_tally,
    power_tally,
    shape_from_experiment,
    simulate_outcomes,
    study_frame,
    study_statistics,
)
from trace_assets.reporting.stats import (
    METHOD,
    accuracy_summary,
    arm_estimate,
    arm_terms,
    contrast_table,
    holm,
    noise_floor_note,
    seed_accuracies,
    seed_noise,
    stronger_baselines,
)


def frame(arms: dict[tuple[str, str], np.ndarray]) -> pl.DataFrame:
    """eval_results from {(dataset, student): seeds x problems 0/1 matrix}."""
    rows = []
    for (dataset, student), matrix in arms.items():
        for seed, outcomes in enumerate(np.atleast_2d(matrix)):
            for j, correct in enumerate(outcomes):
                rows.append(
                    {
                        "dataset": dataset,
                        "student": student,
                        "seed": seed,
                        "problem_id": f"q{j:04d}",
                        "is_correct": bool(correct),
                        "difficulty": 1 + j % 7,
                    }
                )
    return pl.DataFrame(rows)


def bernoulli(rng, p: float, seeds: int, n: int) -> np.ndarray:
    return rng.random((seeds, n)) < p


def test_holm_matches_statsmodels_and_a_hand_computation():
    p = np.array([0.01, 0.04, 0.03, 0.005])
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04; running max 0.02, 0.03, 0.06, 0.06
    assert np.allclose(holm(p), [0.03, 0.06, 0.06, 0.02])
    # (multipletests runs gc.collect() on every call, slow under pytest: a few families suffice)
    rng = np.random.default_rng(0)
    for size in (1, 2, 9, 27):
        family = rng.random(size) ** 3
        family[-1] = family[0]  # a tie
        assert np.allclose(holm(family), multipletests(family, method="holm")[1])
    batch = rng.random((4, 27)) ** 4
    assert np.allclose(holm(batch), [multipletests(row, method="holm")[1] for row in batch])
    assert np.allclose(holm(np.array([0.01, np.nan, 0.04]))[[0, 2]], [0.02, 0.04])
    assert np.isnan(holm(np.array([0.01, np.nan]))[1])


def test_seed_accuracies_and_summary_columns():
    rng = np.random.default_rng(1)
    evals = frame({("A", "s"): bernoulli(rng, 0.6, 3, 200), ("base", "s"): np.tile(bernoulli(rng, 0.3, 1, 200), (3, 1))})
    per_seed = seed_accuracies(evals)
    assert per_seed.columns == ["dataset", "student", "seed", "n", "accuracy"] and per_seed.height == 6
    summary = accuracy_summary(evals)
    assert summary.columns == [
        "dataset",
        "student",
        "n",
        "n_seeds",
        "accuracy",
        "sd_seeds",
        "ci_low",
        "ci_high",
        "accuracy_strict",
    ]
    assert summary["accuracy_strict"].is_null().all()  # these results carry no strict column
    a = summary.row(by_predicate=pl.col("dataset") == "A", named=True)
    assert a["n"] == 200 and a["n_seeds"] == 3
    assert a["accuracy"] == pytest.approx(per_seed.filter(pl.col("dataset") == "A")["accuracy"].mean())
    assert a["sd_seeds"] == pytest.approx(per_seed.filter(pl.col("dataset") == "A")["accuracy"].std())
    assert a["ci_low"] < a["accuracy"] < a["ci_high"]
    base = summary.row(by_predicate=pl.col("dataset") == "base", named=True)
    assert base["sd_seeds"] == 0.0  # identical answers for every seed: no training noise
    strict = accuracy_summary(evals.with_columns(pl.lit(True).alias("is_correct_strict")))
    assert strict["accuracy_strict"].to_list() == [1.0, 1.0]


def test_training_noise_widens_the_interval():
    rng = np.random.default_rng(2)
    quiet = np.array([bernoulli(rng, 0.5, 1, 1000)[0] for _ in range(3)])
    noisy = np.array([bernoulli(rng, p, 1, 1000)[0] for p in (0.40, 0.50, 0.60)])  # seeds 10 points apart
    evals = frame({("quiet", "alone"): quiet, ("noisy", "alone too"): noisy, ("quiet", "both"): quiet, ("noisy", "both"): noisy})
    width = {(r["dataset"], r["student"]): r["ci_high"] - r["ci_low"] for r in accuracy_summary(evals).iter_rows(named=True)}
    assert width[("noisy", "alone too")] > 2 * width[("quiet", "alone")]
    # one student's trained arms share one training-noise estimate, between their own
    assert width[("quiet", "alone")] < width[("quiet", "both")] < width[("noisy", "alone too")]
    assert width[("noisy", "both")] == pytest.approx(width[("quiet", "both")], rel=0.1)
    own = arm_estimate(arm_terms(noisy), seed_noise([arm_terms(noisy)]))
    assert width[("noisy", "alone too")] == pytest.approx(float(own.interval()[1] - own.interval()[0]))


def test_contrast_direction_interval_and_holm_across_the_family():
    rng = np.random.default_rng(3)
    arms = {}
    for student in ("s1", "s2"):
        arms[("base", student)] = np.tile(bernoulli(rng, 0.2, 1, 600), (3, 1))
        arms[("good", student)] = bernoulli(rng, 0.7, 3, 600)
        arms[("bad", student)] = bernoulli(rng, 0.4, 3, 600)
        arms[("same", student)] = bernoulli(rng, 0.4, 3, 600)
    evals = frame(arms)
    table = contrast_table(evals, [("good", "bad"), ("bad", "good"), ("same", "bad")])
    assert table.columns == [
        "student",
        "a",
        "b",
        "n_problems",
        "n_seeds_a",
        "n_seeds_b",
        "accuracy_a",
        "accuracy_b",
        "diff",
        "ci_low",
        "ci_high",
        "df",
        "p_value",
        "p_adjusted",
        "direction",
        "distinguishable",
    ]
    assert table.height == 6
    forward = table.filter((pl.col("a") == "good") & (pl.col("student") == "s1")).row(0, named=True)
    backward = table.filter((pl.col("a") == "bad") & (pl.col("student") == "s1")).row(0, named=True)
    assert forward["direction"] == "a>b" and forward["distinguishable"] and 0 < forward["ci_low"] < forward["diff"]
    assert forward["diff"] == pytest.approx(forward["accuracy_a"] - forward["accuracy_b"])
    assert backward["direction"] == "a<b" and backward["diff"] == pytest.approx(-forward["diff"])
    assert backward["ci_high"] < 0 and backward["p_value"] == pytest.approx(forward["p_value"])
    assert (forward["n_problems"], forward["n_seeds_a"], forward["n_seeds_b"]) == (600, 3, 3)
    # Holm over all 6 rows, not per student
    assert table["p_adjusted"].to_list() == pytest.approx(multipletests(table["p_value"].to_numpy(), method="holm")[1])
    assert table["distinguishable"].to_list() == (table["p_adjusted"] < 0.05).to_list()
    assert not table.filter(pl.col("a") == "same")["distinguishable"].any()


def test_missing_arms_are_skipped_and_single_seed_runs_have_no_noise_floor():
    rng = np.random.default_rng(4)
    evals = frame(
        {
            ("base", "s1"): bernoulli(rng, 0.2, 1, 300),
            ("A", "s1"): bernoulli(rng, 0.5, 1, 300),
            ("B", "s1"): bernoulli(rng, 0.5, 1, 300),
            ("A", "s2"): bernoulli(rng, 0.5, 1, 300),
        }
    )
    summary = accuracy_summary(evals)
    assert summary["n_seeds"].to_list() == [1] * 4 and summary["sd_seeds"].null_count() == 4
    assert summary["ci_low"].null_count() == 0  # problem sampling only, conditional on the run
    table = contrast_table(evals, [("A", "base"), ("B", "A"), ("C", "A")])
    assert table.select("student", "a", "b").rows() == [("s1", "A", "base"), ("s1", "B", "A")]
    assert "no noise floor" in noise_floor_note(1) and "no noise floor" not in noise_floor_note(3)
    assert "Holm" in METHOD
    assert contrast_table(evals, []).height == 0


def test_contrasts_use_the_problems_both_arms_answered():
    rng = np.random.default_rng(5)
    evals = frame({("A", "s"): bernoulli(rng, 0.5, 2, 100), ("B", "s"): bernoulli(rng, 0.5, 2, 100)})
    evals = evals.filter(~((pl.col("dataset") == "B") & (pl.col("problem_id") < "q0010")))
    evals = evals.filter(~((pl.col("dataset") == "A") & (pl.col("seed") == 1) & (pl.col("problem_id") == "q0050")))
    row = contrast_table(evals, [("A", "B")]).row(0, named=True)
    assert row["n_problems"] == 89


def test_planned_contrasts_default_and_declared(smoke_experiment):
    assert ("H", "baseline") in smoke_experiment.planned_contrasts()  # smoke.yaml declares its own
    undeclared = smoke_experiment.model_copy(update={"contrasts": None})
    first, *others = undeclared.datasets
    assert undeclared.planned_contrasts() == [(first, "baseline")] + [(o, first) for o in others]
    declared = smoke_experiment.model_copy(update={"contrasts": [("W_normal", "G_normal")]})
    assert declared.planned_contrasts() == [("W_normal", "G_normal")]


def test_contrasts_must_name_arms_of_the_experiment(tmp_path):
    text = (PROJECT_ROOT / "experiments" / "smoke.yaml").read_text().replace("  - [H, baseline]", "  - [H, G_typo]")
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ExperimentError, match=r"contrasts\.0: 'G_typo' is not a dataset"):
        load_experiment(path)


def test_stronger_baseline_is_chosen_per_student_and_named_in_the_contrast():
    rows = []
    for student, few_shot_right in (("s1", 3), ("s2", 0)):
        for dataset, right in (("base", 1), ("base_few_shot", few_shot_right), ("G", 4)):
            rows += [
                {"dataset": dataset, "student": student, "seed": 0, "problem_id": f"p{i}", "is_correct": i < right}
                for i in range(5)
            ]
    frame = pl.DataFrame(rows)
    assert stronger_baselines(frame) == {"s1": "base_few_shot", "s2": "base"}
    table = contrast_table(frame, [("G", "baseline")])
    assert dict(zip(table["student"], table["b"])) == {"s1": "base_few_shot", "s2": "base"}
    assert table.filter(pl.col("student") == "s1")["diff"][0] == pytest.approx(0.2)


def test_report_wrappers_compute_what_the_simulation_counts():
    """accuracy_summary and contrast_table on a simulated study give the numpy cores' numbers."""
    shape = StudyShape(
        arms=("base", "A", "B", "C"), students=("s1", "s2"), n_seeds=3, n_problems=120, contrasts=((1, 0), (2, 1), (3, 1))
    )
    outcomes, _ = simulate_outcomes(np.random.default_rng(6), shape, World(seed_sd=0.3), 1)
    low, high, adjusted, diff = study_statistics(outcomes, shape)
    evals = study_frame(outcomes[0], shape)
    summary = {(r["dataset"], r["student"]): r for r in accuracy_summary(evals).iter_rows(named=True)}
    table = {
        (r["student"], r["a"], r["b"]): r
        for r in contrast_table(evals, [(shape.arms[a], shape.arms[b]) for a, b in shape.contrasts]).iter_rows(named=True)
    }
    for s, student in enumerate(shape.students):
        for a, arm in enumerate(shape.arms):
            assert summary[(arm, student)]["ci_low"] == pytest.approx(max(low[0, s, a], 0.0))
            assert summary[(arm, student)]["ci_high"] == pytest.approx(min(high[0, s, a], 1.0))
        for c, (a, b) in enumerate(shape.contrasts):
            row = table[(student, shape.arms[a], shape.arms[b])]
            assert row["diff"] == pytest.approx(diff[0, s, c]) and row["p_adjusted"] == pytest.approx(adjusted[0, s, c])


@pytest.mark.parametrize("seed_sd", [0.0, 0.15, 0.3])
def test_small_simulation_is_calibrated(seed_sd):
    """300 null studies of 6 arms x 2 students x 3 seeds x 300 problems: fwer <= 0.05 and coverage
    0.93-0.97, within Monte Carlo error (2.5 standard errors; the seed makes it reproducible)."""
    shape = StudyShape(
        arms=("base", "A", "B", "C", "D", "E"),
        students=("s1", "s2"),
        n_seeds=3,
        n_problems=300,
        contrasts=((1, 0), (2, 1), (3, 1), (4, 1), (5, 1)),
    )
    tally = null_tally(np.random.default_rng(7), shape, seed_sd, 300)
    assert tally.studies == 300 and tally.intervals == 300 * 2 * 6
    assert tally.fwer <= 0.05 + 2.5 * np.sqrt(0.05 * 0.95 / 300)
    assert 0.93 - 0.015 <= tally.coverage <= 0.97 + 0.015


def test_power_and_shape_of_an_experiment():
    experiment = load_experiment(PROJECT_ROOT / "experiments" / "paper.yaml")
    shape = shape_from_experiment(experiment)
    assert shape.arms[0] == "base" and len(shape.arms) == 1 + len(experiment.datasets)
    assert (shape.n_seeds, shape.n_problems, len(shape.students)) == (3, 1319, 4)
    with pytest.raises(ValueError, match="nope"):
        shape_from_experiment(experiment, [("nope", "H")])
    small = replace(shape, n_problems=400, students=("s",), student_accuracies=(0.5,))
    assert power_tally(np.random.default_rng(8), small, 0.0, 40, effect=0.10).power > 0.8


def test_calibrate_command_ends_with_the_figures(capsys):
    main(["calibrate", "--experiment", "experiments/smoke.yaml", "--studies", "6", "--seed", "1"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.fullmatch(r"fwer=\d\.\d{3} coverage=\d\.\d{3} power=\d\.\d{3}", last)
