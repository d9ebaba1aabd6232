from pathlib import Path

import polars as pl
import pytest

from trace_assets.experiment import PROJECT_ROOT, ExperimentError, load_experiment


@pytest.mark.parametrize("name", ["smoke", "paper", "jsonl_example", "shape_of_thought"])
def test_shipped_experiments_validate(name):
    path = PROJECT_ROOT / "experiments" / f"{name}.yaml"
    if not path.exists():
        pytest.skip(f"{path.name} not shipped yet")
    experiment = load_experiment(path)
    assert experiment.styles
    for recipe in experiment.datasets.values():
        assert recipe.style is None or recipe.style in experiment.styles


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


BASE = """
name: t
styles: [normal]
teacher: {model: local:smollm2-135m-instruct}
judge: {model: local:smollm2-135m-instruct}
students: {s: {model: local:smollm2-135m-instruct}}
datasets: {G_normal: {recipe: G, style: normal}}
"""


def test_unknown_key_is_named(tmp_path):
    path = _write(tmp_path, BASE + "problems: {source: synthetic, n_trian: 3}\n")
    with pytest.raises(ExperimentError, match=r"unknown key 'problems\.n_trian'") as info:
        load_experiment(path)
    assert str(path) in str(info.value)


def test_bad_value_names_key_and_expectation(tmp_path):
    path = _write(tmp_path, BASE + "problems: {source: parquet}\n")
    with pytest.raises(ExperimentError, match=r"problems\.source.*'synthetic', 'gsm8k' or 'jsonl'"):
        load_experiment(path)


def test_dataset_must_use_a_declared_style(tmp_path):
    path = _write(tmp_path, BASE.replace("style: normal}}", "style: gold}}"))
    with pytest.raises(ExperimentError, match="gold"):
        load_experiment(path)


def test_missing_key_and_missing_file(tmp_path):
    path = _write(tmp_path, "name: t\n")
    with pytest.raises(ExperimentError, match="missing required key 'styles'"):
        load_experiment(path)
    with pytest.raises(ExperimentError, match="not found"):
        load_experiment(tmp_path / "nope.yaml")


def test_environment_variable_selects_the_file(tmp_path, monkeypatch):
    path = _write(tmp_path, BASE.replace("name: t", "name: from_env"))
    monkeypatch.setenv("TRACE_ASSETS_EXPERIMENT", str(path))
    assert load_experiment().name == "from_env"


@pytest.mark.parametrize(
    ("datasets", "extra", "message"),
    [
        ("{G: {recipe: G, style: normal, trim_after_answer: true}}", "", "use 'trim: conclusion'"),
        ("{G: {recipe: G, style: normal, match_tokens_with: H}, H: {recipe: H}}", "", "token_matching"),
        ("{G: {recipe: G, style: normal, flaw: wrong}}", "", "apply to recipe 'mixture'"),
        ("{m: {recipe: mixture, style: normal, flaw: wrnog}}", "", "'wrong', 'corrupted', 'complete' or 'both'"),
        ("{m: {recipe: mixture, style: normal, flaw: wrong, flaw_level: 0.5}}", "", "applies to flaw 'complete', not 'wrong'"),
        ("{m: {recipe: mixture, style: normal, flaw: complete, flaw_level: 0}}", "", "flaw_level"),
        (
            "{m: {recipe: mixture, style: normal, flaw: complete}}",
            "problems: {tasks: [math], math: {train: experiments/data/math_train.jsonl, test: experiments/data/math_test.jsonl}}\n",
            "none of the tasks \\['math'\\] has numeric answers",
        ),
        ("{H: {recipe: H, trim: conclusion}}", "", "teacher traces"),
        ("{H: {recipe: H, exclude_arithmetic_slips: false}}", "", "checks teacher traces, not recipe 'H'"),
        ("{G: {recipe: G, style: normal, exclude_arithmetic_slips: sometimes}}", "", "exclude_arithmetic_slips"),
        ("{G: {recipe: G, style: normal}}", "eligibility: {exclude_arithmetic_slips: 2}\n", "exclude_arithmetic_slips"),
        ("{m: {recipe: mixture, style: normal, trim: control}}", "", "not trimmed"),
        ("{H: {recipe: H, pair_correct_wrong: true}}", "", "recipes G, W and mixture"),
        ("{G: {recipe: G, style: normal}}", "token_matching: [{datasets: [G, nope]}]\n", "'nope' is not a dataset"),
        ("{G: {recipe: G, style: normal}, H: {recipe: H}}", "token_matching: [{datasets: [G]}]\n", "at least 2"),
        ("{G: {recipe: G, style: normal}, H: {recipe: H}}", "comparisons: {groups: [[G, H], [H]]}\n", "'H' is in groups 0 and 1"),
        (
            "{m1: {recipe: mixture, style: normal, flawed_fraction: 0.1}, m2: {recipe: mixture, style: normal, flawed_fraction: 0.2}, "
            "G: {recipe: G, style: normal}}",
            "comparisons: {groups: [[m1, G]]}\n",
            "do not nest",
        ),
        (
            "{m1: {recipe: mixture, style: normal}, G: {recipe: G, style: normal}}",
            "token_matching: [{datasets: [m1, G]}]\n",
            "flawed fraction",
        ),
        ("{G: {recipe: G, style: normal}}", "training: {packing: true, curriculum: true}\n", "easy-to-hard order"),
        (
            "{G: {recipe: G, style: normal}}",
            "eligibility: {require_conformence: false}\n",
            "unknown key 'eligibility.require_conformence'",
        ),
    ],
)
def test_dataset_sections_are_validated(tmp_path, datasets, extra, message):
    text = BASE.replace("datasets: {G_normal: {recipe: G, style: normal}}", f"datasets: {datasets}") + extra
    with pytest.raises(ExperimentError, match=message):
        load_experiment(_write(tmp_path, text))


def test_dataset_sections_default_to_one_strict_policy_and_one_group(tmp_path):
    experiment = load_experiment(_write(tmp_path, BASE))
    policy = experiment.eligibility
    assert policy.exclude_truncated and policy.require_declared_answer and policy.require_conformance
    assert experiment.comparisons.intersect_problems and experiment.comparisons.groups is None
    assert experiment.token_matching == []


def test_arithmetic_slip_rule_is_per_dataset_with_the_policy_as_default(tmp_path):
    datasets = (
        "datasets: {G: {recipe: G, style: normal}, G_checked: {recipe: G, style: normal, exclude_arithmetic_slips: true}, "
        "G_unchecked: {recipe: G, style: normal, exclude_arithmetic_slips: false}, G_checked_aa: {replicate_of: G_checked}, "
        "H: {recipe: H}}"
    )
    text = BASE.replace("datasets: {G_normal: {recipe: G, style: normal}}", datasets)
    for policy, expected in [
        ("", {"G": False, "G_checked": True, "G_unchecked": False, "G_checked_aa": True, "H": False}),
        ("eligibility: {exclude_arithmetic_slips: true}\n", {"G": True, "G_checked": True, "G_unchecked": False}),
    ]:
        experiment = load_experiment(_write(tmp_path, text + policy))
        assert experiment.eligibility.exclude_arithmetic_slips is bool(policy)
        for name, checks in expected.items():
            assert experiment.datasets[name].excludes_arithmetic_slips(experiment.eligibility) is checks, (policy, name)
    assert experiment.datasets["H"].exclude_arithmetic_slips is None  # the policy's setting never reaches H's rows
    # checked and unchecked mixtures of one style and flaw are different problem sets: they need not share a group
    mixtures = (
        "datasets: {m: {recipe: mixture, style: normal, flawed_fraction: 0.25}, "
        "m_checked: {recipe: mixture, style: normal, flawed_fraction: 0.25, exclude_arithmetic_slips: true}}\n"
    )
    loaded = load_experiment(
        _write(
            tmp_path,
            BASE.replace("datasets: {G_normal: {recipe: G, style: normal}}", mixtures)
            + "comparisons: {groups: [[m], [m_checked]]}\n",
        )
    )
    assert loaded.datasets["m_checked"].excludes_arithmetic_slips(loaded.eligibility)


def test_study_experiments_run_as_the_studies_did():
    from trace_assets.cli import dry_run

    paper = load_experiment(PROJECT_ROOT / "experiments" / "paper.yaml")
    assert sorted(s.model for s in paper.students.values()) == sorted(
        f"Qwen/Qwen2.5-{size}" for size in ("0.5B", "1.5B", "3B", "7B")
    )
    assert len(paper.styles) == 4 and {r.style for r in paper.datasets.values() if r.recipe == "G"} == set(paper.styles)
    assert [sorted(paper.datasets[n].style for n in g.datasets) for g in paper.token_matching] == [["diamond", "normal_plain"]]
    assert {r.trim for r in paper.datasets.values()} == {"none", "conclusion", "control"}
    assert paper.training.seeds == [0, 1, 2]

    study = load_experiment(PROJECT_ROOT / "experiments" / "shape_of_thought.yaml")
    assert study.teacher.model == "google/gemma-2-27b-it"
    assert sorted(s.model for s in study.students.values()) == sorted(
        ["Qwen/Qwen2.5-1.5B", "meta-llama/Llama-3.1-8B", "google/gemma-2-2b", "google/gemma-2-9b"]
    )
    recipes = sorted(r.recipe for r in study.datasets.values())
    assert recipes.count("G") == recipes.count("W") == recipes.count("H") == recipes.count("H_style") == 1
    mixtures = [r for r in study.datasets.values() if r.recipe == "mixture"]
    assert {r.flaw for r in mixtures} == {"complete"}
    fractions = sorted(r.flawed_fraction for r in mixtures if r.flaw_level == 1)
    assert fractions == [0, 0.1, 0.2, 0.25, 0.3, 0.5, 0.75, 1.0]
    assert sorted(r.flaw_level for r in mixtures if r.flaw_level < 1) == [0.25, 0.5, 0.75]
    mixture_names = [name for name, r in study.datasets.items() if r.recipe == "mixture"]
    assert {tuple(c) for c in study.contrasts} >= {(name, "H") for name in mixture_names}
    for experiment in (paper, study):
        assert dry_run(experiment).startswith(f"experiment {experiment.name}:")


def test_study_files_plan_the_contrasts_their_claims_need():
    """Each seed claim listed in the README has its contrast in the study's file."""
    paper = load_experiment(PROJECT_ROOT / "experiments" / "paper.yaml")
    planned = set(paper.planned_contrasts())
    for pair in [
        ("H", "G_normal"),
        ("G_titanium", "baseline"),
        ("G_diamond", "G_titanium"),
        ("G_diamond", "G_gold"),
        ("G_diamond_eqtok", "G_normal_eqtok"),
        ("G_gold_trimmed", "G_gold_trim_control"),
    ]:
        assert pair in planned, pair
    interactions = set(paper.interactions())
    for big in ("qwen3b", "qwen7b"):
        assert ("G_diamond", "G_normal", "qwen0_5b", big) in interactions
    assert ("G_titanium", "base", "qwen0_5b", "qwen3b") in interactions
    assert not paper.self_graded()  # seed 000 judged with another, stronger model than the teacher
    study = load_experiment(PROJECT_ROOT / "experiments" / "shape_of_thought.yaml")
    assert {("G", "H"), ("W", "H"), ("W", "G"), ("H_para", "H")} <= set(study.planned_contrasts())
    claims = (PROJECT_ROOT / "README.md").read_text()
    mixtures = {name for name, recipe in study.datasets.items() if recipe.recipe == "mixture"}
    for a, b in [*planned, *study.planned_contrasts()]:
        if a not in mixtures:  # the mixture sweep is described as one ladder
            assert f"[{a}, {b}]" in claims, (a, b)


def test_replicate_of_takes_its_originals_recipe_and_is_checked(tmp_path):
    text = BASE.replace(
        "datasets: {G_normal: {recipe: G, style: normal}}",
        "datasets: {G_normal: {recipe: G, style: normal}, G_aa: {replicate_of: G_normal}}",
    )
    experiment = load_experiment(_write(tmp_path, text))
    assert experiment.datasets["G_aa"].model_copy(update={"replicate_of": None}) == experiment.datasets["G_normal"]
    assert experiment.replicate_pairs() == [("G_aa", "G_normal")]
    assert experiment.training_seed_offsets() == {"G_aa": 1000}
    assert ("G_aa", "G_normal") not in experiment.planned_contrasts() and "G_aa" in experiment.dataset_keys()
    for datasets, message in [
        ("{G_normal: {recipe: G, style: normal}, G_aa: {replicate_of: G_normal, trim: control}}", "give only 'replicate_of'"),
        (
            "{G_normal: {recipe: G, style: normal}, G_aa: {replicate_of: G_nope}}",
            r"datasets\.G_aa\.replicate_of: 'G_nope' is not",
        ),
        (
            "{G_normal: {recipe: G, style: normal}, G_aa: {replicate_of: G_normal}, G_ab: {replicate_of: G_aa}}",
            "is itself a replicate",
        ),
    ]:
        with pytest.raises(ExperimentError, match=message):
            load_experiment(
                _write(tmp_path, BASE.replace("datasets: {G_normal: {recipe: G, style: normal}}", f"datasets: {datasets}"))
            )
    grouped = text + "comparisons: {groups: [[G_normal, G_aa]]}\n"
    with pytest.raises(ExperimentError, match=r"comparisons\.groups\[0\]: 'G_aa' is a replicate"):
        load_experiment(_write(tmp_path, grouped))


def test_interaction_contrasts_and_statistics_are_validated(tmp_path):
    two = BASE.replace("students: {s: {model: local:smollm2-135m-instruct}}", "students: {s: {model: m}, t: {model: m}}")
    two = two.replace(
        "datasets: {G_normal: {recipe: G, style: normal}}", "datasets: {G_normal: {recipe: G, style: normal}, H: {recipe: H}}"
    )
    ok = (
        two
        + "contrasts:\n  - [H, G_normal]\n  - {difference: [H, G_normal], between: [s, t]}\nstatistics: {seed_sd: 0.15, target_difference: 0.03}\n"
    )
    experiment = load_experiment(_write(tmp_path, ok))
    assert experiment.planned_contrasts() == [("H", "G_normal")]
    assert experiment.interactions() == [("H", "G_normal", "s", "t")]
    assert experiment.statistics.seed_sd == 0.15 and experiment.statistics.target_difference == 0.03
    for entry, message in [
        ("{difference: [H, G_normal], between: [s, u]}", r"contrasts\.0\.between: 'u' is not a student"),
        ("{difference: [H, G_normal], between: [s, s]}", r"contrasts\.0\.between: compares student 's' with itself"),
        ("{difference: [H, G_nope], between: [s, t]}", r"contrasts\.0: 'G_nope' is not a dataset"),
        ("{difference: [H, G_normal], among: [s, t]}", r"contrasts\.0: expected \[a, b\] or \{difference"),
        ("[H, G_normal, base]", r"contrasts\.0: expected \[a, b\]"),
    ]:
        with pytest.raises(ExperimentError, match=message):
            load_experiment(_write(tmp_path, two + f"contrasts:\n  - {entry}\n"))
    with pytest.raises(ExperimentError, match=r"statistics\.seed_sd"):
        load_experiment(_write(tmp_path, two + "statistics: {seed_sd: -1}\n"))


def test_a_replicate_has_its_originals_examples_under_its_own_name():
    from trace_assets.experiment import DatasetRecipe
    from trace_assets_tests.test_recipes import SAMPLES, TRAIN, build

    original = DatasetRecipe(recipe="G", style="normal", trim="conclusion")
    replicate = original.model_copy(update={"replicate_of": "G"})
    result = build({"G": original, "G_aa": replicate}, SAMPLES, TRAIN)
    rows = {name: result.examples.filter(pl.col("dataset") == name) for name in ("G", "G_aa")}
    assert rows["G"].height > 0
    assert rows["G_aa"].drop("dataset", "example_id").equals(rows["G"].drop("dataset", "example_id"))
    assert all(example.startswith("G_aa:") for example in rows["G_aa"]["example_id"])  # a training key of its own
    assert result.summary.filter(pl.col("dataset") == "G_aa").height == 1
