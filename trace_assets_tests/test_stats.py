"""The report's statistics (trace_assets/reporting/stats.py) and their calibration by simulation."""

import re

import numpy as np
import polars as pl
import pytest
from statsmodels.stats.multitest import multipletests

from trace_assets.cli import main
from trace_assets.experiment import PROJECT_ROOT, ExperimentError, load_experiment
from trace_assets.reporting.calibration import (
    StudyShape,
    World,
    calibrate,
    problem_ids,
    run_world,
    shape_from_experiment,
    simulate,
    study_results,
    worlds,
)
from trace_assets.reporting.stats import (
    METHOD,
    NoiseSettings,
    PlanningNoise,
    accuracy_summary,
    arm_estimate,
    arm_terms,
    contrast_table,
    detectable_difference,
    holm,
    make_arm,
    noise_floor_note,
    noise_table,
    seed_accuracies,
    seeds_needed,
    stronger_baselines,
    study_noise,
    untrained_noise,
    variance_prior,
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
        "training",
    ]
    assert summary["accuracy_strict"].is_null().all()  # these results carry no strict column
    assert summary["training"].is_null().all()  # ... nor how their models were trained
    a = summary.row(by_predicate=pl.col("dataset") == "A", named=True)
    assert a["n"] == 200 and a["n_seeds"] == 3
    assert a["accuracy"] == pytest.approx(per_seed.filter(pl.col("dataset") == "A")["accuracy"].mean())
    assert a["sd_seeds"] == pytest.approx(per_seed.filter(pl.col("dataset") == "A")["accuracy"].std())
    assert a["ci_low"] < a["accuracy"] < a["ci_high"]
    base = summary.row(by_predicate=pl.col("dataset") == "base", named=True)
    assert base["sd_seeds"] == 0.0  # identical answers for every seed: no training noise
    strict = accuracy_summary(evals.with_columns(pl.lit(True).alias("is_correct_strict")))
    assert strict["accuracy_strict"].to_list() == [1.0, 1.0]
    kind = pl.when(pl.col("dataset") == "base").then(pl.lit("none")).otherwise(pl.lit("per_task"))
    labelled = accuracy_summary(evals.with_columns(kind.alias("training")))
    assert dict(labelled.select("dataset", "training").iter_rows()) == {"A": "per_task", "base": "none"}


def test_training_noise_widens_the_interval():
    rng = np.random.default_rng(2)
    quiet = np.array([bernoulli(rng, 0.5, 1, 1000)[0] for _ in range(3)])
    noisy = np.array([bernoulli(rng, p, 1, 1000)[0] for p in (0.40, 0.50, 0.60)])  # seeds 10 points apart
    evals = frame({("quiet", "alone"): quiet, ("noisy", "alone too"): noisy})
    width = {(r["dataset"], r["student"]): r["ci_high"] - r["ci_low"] for r in accuracy_summary(evals).iter_rows(named=True)}
    assert width[("noisy", "alone too")] > 2 * width[("quiet", "alone")]
    noise = study_noise({("noisy", "s"): make_arm(noisy, problem_ids(1000))})[("noisy", "s")]
    own = arm_estimate(arm_terms(noisy), noise)
    assert width[("noisy", "alone too")] == pytest.approx(float(own.interval()[1] - own.interval()[0]))
    assert untrained_noise(arm_terms(np.tile(quiet[:1], (3, 1)))).seed_variance == 0.0


def test_an_arm_answering_every_problem_alike_gets_the_exact_interval_not_a_point():
    """0 of 1,319 right in every seed (the untrained student on Countdown): the t interval is [0, 0];
    Clopper-Pearson's says up to 1 - 0.025^(1/1319), 0.28%."""
    n = 1319
    wrong, right = np.zeros((3, n), dtype=bool), np.ones((3, n), dtype=bool)
    rng = np.random.default_rng(5)
    summary = accuracy_summary(frame({("base", "s"): wrong, ("A", "s"): right, ("B", "s"): bernoulli(rng, 0.3, 3, n)}))
    rows = {r["dataset"]: r for r in summary.iter_rows(named=True)}
    assert rows["base"]["ci_low"] == 0 and rows["base"]["ci_high"] == pytest.approx(1 - 0.025 ** (1 / n))
    assert rows["A"]["ci_high"] == 1 and rows["A"]["ci_low"] == pytest.approx(0.025 ** (1 / n))
    assert rows["B"]["ci_low"] < 0.3 < rows["B"]["ci_high"] < 0.4  # an arm with variance keeps its t interval


def test_variance_prior_recovers_limmas_prior():
    """Sample variances drawn from limma's model (sigma^2 ~ s0^2 d0 / chi2_d0, s^2 ~ sigma^2 chi2_d / d)."""
    rng = np.random.default_rng(11)
    d0, s0, d = 8.0, 0.5, 2.0
    sigma2 = s0 * d0 / rng.chisquare(d0, 4000)
    values = sigma2 * rng.chisquare(d, 4000) / d
    fitted_d0, fitted_s0 = variance_prior(values, np.full(4000, d))
    assert fitted_d0 == pytest.approx(d0, rel=0.4) and fitted_s0 == pytest.approx(s0, rel=0.1)
    assert variance_prior(np.full(5, 2.0), np.full(5, 2.0))[0] == np.inf  # no more scatter than chance: pool


def test_a_noisy_dataset_keeps_its_own_noise_and_single_seed_arms_borrow():
    """Arms of one dataset three times as noisy (logit SD) for every student are not shrunk to the rest;
    a single-seed arm borrows its student's scale (never zero)."""
    shape = StudyShape(("base", *"ABCDEF"), ("s1", "s2", "s3"), 3, 1319, (("B", "A"),))
    world = World("test", 0.15, seed_sd_scale={"A": 3.0}, seeds={"F": 1})
    outcomes, _, _ = simulate(np.random.default_rng(12), shape, world, 30)
    ratio = []
    for i in range(30):
        _, _, noise = study_results(outcomes, shape, world, i)
        ratio.append(noise[("A", "s1")].mean_square / noise[("B", "s1")].mean_square)
        single = noise[("F", "s2")]
        assert single.known and single.seed_variance > 0 and single.source.startswith("borrowed")
        assert noise[("base", "s1")].seed_variance == 0
    assert np.median(ratio) > 4  # the true ratio of logit variances is 9 (plus answer noise in both)


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
        "family_ci_low",
        "family_ci_high",
        "df",
        "p_value",
        "p_adjusted",
        "direction",
        "distinguishable",
        "conditional",
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


def test_the_family_interval_agrees_with_holms_verdict_where_the_95_interval_may_not():
    """A contrast not distinguishable after Holm has a family interval covering 0, though its own 95%
    interval may exclude 0 (the fourth GPU run's A/A contrast: [-5.3, -0.2] points, Holm p 0.22); the
    family interval is Bonferroni's, t at 1 - 0.05 / (2 m), and holds the 95% interval."""
    from scipy import stats

    rng = np.random.default_rng(5)
    arms = {("base", "s1"): np.tile(bernoulli(rng, 0.3, 1, 800), (3, 1))}
    for name, p in {"a": 0.5, "b": 0.47, "c": 0.5, "d": 0.5, "e": 0.5, "f": 0.5}.items():
        arms[(name, "s1")] = bernoulli(rng, p, 3, 800)
    table = contrast_table(frame(arms), [("a", "b"), ("c", "b"), ("d", "b"), ("e", "b"), ("f", "b")])
    m = table.height
    for row in table.iter_rows(named=True):
        assert row["family_ci_low"] <= row["ci_low"] <= row["diff"] <= row["ci_high"] <= row["family_ci_high"]
        half, family_half = row["ci_high"] - row["diff"], row["family_ci_high"] - row["diff"]
        ratio = stats.t.ppf(1 - 0.025 / m, row["df"]) / stats.t.ppf(0.975, row["df"])
        assert family_half == pytest.approx(half * ratio, rel=1e-6)
        if row["p_adjusted"] >= 0.05:
            assert row["family_ci_low"] <= 0 <= row["family_ci_high"]
    split = table.filter((pl.col("p_adjusted") >= 0.05) & ((pl.col("ci_low") > 0) | (pl.col("ci_high") < 0)))
    assert split.height >= 1  # the case the family interval is for: 95% excludes 0, the family does not
    alone = contrast_table(frame(arms), [("a", "b")]).row(0, named=True)  # a family of one: the same interval
    assert (alone["family_ci_low"], alone["family_ci_high"]) == pytest.approx((alone["ci_low"], alone["ci_high"]))


def test_missing_arms_are_skipped_and_single_seed_runs_have_no_noise_floor():
    rng = np.random.default_rng(4)
    evals = frame(
        {
            ("base", "s1"): bernoulli(rng, 0.2, 1, 300),
            ("A", "s1"): bernoulli(rng, 0.5, 1, 300),
            ("B", "s1"): bernoulli(rng, 0.8, 1, 300),
            ("A", "s2"): bernoulli(rng, 0.5, 1, 300),
        }
    )
    summary = accuracy_summary(evals)
    assert summary["n_seeds"].to_list() == [1] * 4 and summary["sd_seeds"].null_count() == 4
    assert summary["ci_low"].null_count() == 0  # problem sampling only, conditional on the run
    table = contrast_table(evals, [("A", "base"), ("B", "A"), ("C", "A")])
    assert table.select("student", "a", "b").rows() == [("s1", "A", "base"), ("s1", "B", "A")]
    # B is 30 points better, but with one seed and nothing measured or declared nothing is distinguishable:
    # both rows are per-run tests, conditional on these runs (A's training noise is unknown)
    assert table["conditional"].to_list() == [True, True] and not table["distinguishable"].any()
    assert table.filter(pl.col("a") == "B")["p_adjusted"][0] < 1e-6
    noise = noise_table(evals)
    assert noise.filter(pl.col("dataset") == "A")["known"].to_list() == [False, False]
    note = noise_floor_note(noise)
    assert "no noise floor for A (s1), B (s1), A (s2)" in note and "base" not in note.split("no noise floor")[1]
    # declared: the same study is tested, and B's 30 points stand
    declared = contrast_table(evals, [("B", "A")], settings=NoiseSettings(declared_sd=0.15))
    assert declared["distinguishable"].to_list() == [True] and not declared["conditional"].any()
    assert "Holm" in METHOD
    assert contrast_table(evals, []).height == 0


def test_earlier_runs_of_the_student_give_the_noise(tmp_path):
    """A single-seed study borrows the training noise measured in earlier multi-seed runs of the same
    student in the database, and names them."""
    import duckdb

    from trace_assets.reporting.stats import earlier_runs

    rng = np.random.default_rng(13)
    earlier = frame({("old", "s1"): np.array([bernoulli(rng, p, 1, 400)[0] for p in (0.45, 0.5, 0.55)])})
    database = tmp_path / "db.duckdb"
    with duckdb.connect(str(database)) as connection:
        connection.register("earlier", earlier.to_arrow())
        connection.execute("create table eval_results as select * from earlier")
    reference, names = earlier_runs(database, ["s1"], ["base", "A", "B"])
    assert list(reference) == [("old", "s1")] and names == "old|s1"
    evals = frame({("A", "s1"): bernoulli(rng, 0.5, 1, 400), ("B", "s1"): bernoulli(rng, 0.5, 1, 400)})
    noise = noise_table(evals, NoiseSettings(reference=reference, reference_name=names))
    assert noise["known"].all() and noise["source"].str.contains("earlier runs \\(old\\|s1\\)").all()
    assert earlier_runs(tmp_path / "missing.duckdb", ["s1"], []) == ({}, "")


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
    first, *others = [name for name, recipe in undeclared.datasets.items() if not recipe.replicate_of]
    assert undeclared.planned_contrasts() == [(first, "baseline")] + [(o, first) for o in others]
    declared = smoke_experiment.model_copy(update={"contrasts": [("W_normal", "G_normal")]})
    assert declared.planned_contrasts() == [("W_normal", "G_normal")]


def test_contrasts_must_name_arms_of_the_experiment(tmp_path):
    text = (PROJECT_ROOT / "experiments" / "smoke.yaml").read_text().replace("  - [H, baseline]", "  - [H, G_typo]")
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ExperimentError, match=r"contrasts\.0: 'G_typo' is not a dataset"):
        load_experiment(path)


def test_baseline_is_tested_against_each_untrained_arm_unless_declared():
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
    assert table.select("student", "b").rows() == [
        ("s1", "base"),
        ("s1", "base_few_shot"),
        ("s2", "base"),
        ("s2", "base_few_shot"),
    ]
    declared = contrast_table(frame, [("G", "baseline")], baselines=stronger_baselines(frame))
    assert dict(zip(declared["student"], declared["b"])) == {"s1": "base_few_shot", "s2": "base"}
    assert declared.filter(pl.col("student") == "s1")["diff"][0] == pytest.approx(0.2)


def test_interaction_is_a_difference_of_differences_paired_by_problem():
    rng = np.random.default_rng(14)
    arms = {}
    for student, (p_a, p_b) in {"small": (0.40, 0.55), "large": (0.70, 0.55)}.items():
        arms[("a", student)] = np.array([bernoulli(rng, p_a + shift, 1, 1500)[0] for shift in (-0.01, 0, 0.01)])
        arms[("b", student)] = np.array([bernoulli(rng, p_b + shift, 1, 1500)[0] for shift in (-0.01, 0, 0.01)])
    table = contrast_table(frame(arms), [("a", "b")], interactions=[("a", "b", "small", "large")])
    row = table.filter(pl.col("student") == "small vs large").row(0, named=True)
    pair = {r["student"]: r["diff"] for r in table.filter(~pl.col("student").str.contains(" vs ")).iter_rows(named=True)}
    assert (row["a"], row["b"]) == ("a-b@small", "a-b@large")
    assert row["diff"] == pytest.approx(pair["small"] - pair["large"]) and row["diff"] < -0.2
    assert row["distinguishable"] and row["ci_high"] < 0
    # Holm over all three rows together
    assert table["p_adjusted"].to_list() == pytest.approx(multipletests(table["p_value"].to_numpy(), method="holm")[1])


def test_report_wrappers_compute_what_the_simulation_counts():
    """accuracy_summary and contrast_table on a simulated study's frame give calibrate's numbers."""
    shape = StudyShape(
        ("base", "base_few_shot", "A", "B", "C"),
        ("s1", "s2"),
        3,
        120,
        (("A", "baseline"), ("B", "A"), ("C", "A")),
        (("B", "A", "s1", "s2"),),
    )
    world = World("test", 0.3, seeds={"C": 1})
    outcomes, _, _ = simulate(np.random.default_rng(6), shape, world, 1)
    summary_rows, rows, _ = study_results(outcomes, shape, world, 0)
    evals = pl.DataFrame(
        [
            {"dataset": arm, "student": student, "seed": k, "problem_id": problem, "is_correct": bool(correct)}
            for arm in shape.arms
            for s, student in enumerate(shape.students)
            for k, answers in enumerate(outcomes[arm][0, s])
            for problem, correct in zip(problem_ids(shape.n_problems), answers)
        ]
    )
    summary = {(r["dataset"], r["student"]): r for r in accuracy_summary(evals).iter_rows(named=True)}
    for row in summary_rows:
        assert summary[(row["dataset"], row["student"])]["ci_low"] == pytest.approx(row["ci_low"])
        assert summary[(row["dataset"], row["student"])]["ci_high"] == pytest.approx(row["ci_high"])
    table = contrast_table(evals, shape.contrasts, interactions=shape.interactions)
    assert table.height == len(rows) == 2 * 4 + 1
    assert table["p_adjusted"].to_list() == pytest.approx([row["p_adjusted"] for row in rows])


# Four students, as a noisy dataset is found from every student's seeds (with two students and four datasets
# a 3x-noisy one still raises fwer to about 0.09: README, "Statistics and their calibration").
SMALL = StudyShape(
    ("base", "base_few_shot", *"ABCDEF"),
    ("s1", "s2", "s3", "s4"),
    3,
    300,
    (("A", "baseline"), ("B", "A"), ("C", "A"), ("D", "A"), ("E", "A")),
    (("B", "A", "s1", "s2"),),
)


@pytest.mark.parametrize("name", [world.name for world in worlds(SMALL, 0.15)])
def test_each_world_is_calibrated(name):
    """200 null studies of a small shape per calibrate world: fwer <= 0.05 and coverage 0.93-0.97, within
    Monte Carlo error (2.5 standard errors; the seed makes it reproducible). The full run is calibrate's."""
    world = next(world for world in worlds(SMALL, 0.15) if world.name == name)
    tally = run_world(np.random.default_rng(7), SMALL, world, 200)
    assert tally.studies == 200
    assert tally.fwer <= 0.05 + 2.5 * np.sqrt(0.05 * 0.95 / 200)
    assert 0.93 - 0.01 <= tally.coverage <= 0.97 + 0.01
    if name == "one seed, nothing declared":
        assert tally.any_false_positive == 0  # nothing may be called distinguishable


def test_planned_power_matches_the_simulation():
    """At the smallest difference planned to be found with 80% power, the simulated study finds it about that often."""
    shape = StudyShape(("base", *"ABCDEF"), ("s",), 3, 800, (("A", "baseline"), ("B", "A"), ("C", "A")), (), (0.5,))
    noise = PlanningNoise(0.15, 144 / 14, "test")  # 6 trained arms x 2 df, as power_lines plans it
    effect = detectable_difference("pair", 800, 3, 3, noise)
    assert 0.03 < effect < 0.2
    world = World("power", 0.15, accuracy_shift={"B": effect}, declared_sd=0.15)
    tally = run_world(np.random.default_rng(8), shape, world, 120, target="B")
    assert 0.65 <= tally.power <= 0.95
    assert seeds_needed(effect, "pair", 800, 3, noise) <= 3 < seeds_needed(effect / 2, "pair", 800, 3, noise)


def test_shape_of_an_experiment():
    experiment = load_experiment(PROJECT_ROOT / "experiments" / "paper.yaml")
    shape = shape_from_experiment(experiment)
    assert shape.arms[:2] == ("base", "base_few_shot") and len(shape.arms) == 2 + len(experiment.datasets)
    assert (shape.n_seeds, shape.n_problems, len(shape.students)) == (3, 1319, 4)
    assert ("G_normal_aa", "G_normal") in shape.contrasts and len(shape.interactions) == 5


def test_calibrate_command_ends_with_the_figures(capsys, tmp_path):
    output = tmp_path / "calibration.json"
    main(["calibrate", "--experiment", "experiments/smoke.yaml", "--studies", "6", "--seed", "1", "--output", str(output)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"fwer=\d\.\d{3} coverage=\d\.\d{3} power=(\d\.\d{3}|nan)", lines[-1])
    assert sum("fwer=" in line for line in lines) == 9  # eight worlds and the summary
    import json

    saved = json.loads(output.read_text())
    assert len(saved["worlds"]) == 8 and saved["command"].startswith("trace-assets calibrate")


def test_calibrate_summary_takes_the_worst_world():
    shape = StudyShape(("base", "A", "B"), ("s",), 2, 60, (("B", "A"),), (), (0.5,))
    result = calibrate(shape, 4, 0.15, log=lambda line: None)
    assert result["fwer"] == max(w["fwer"] for w in result["worlds"])
    assert abs(result["coverage"] - 0.95) == max(abs(w["coverage"] - 0.95) for w in result["worlds"])
