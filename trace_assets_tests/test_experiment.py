from pathlib import Path

import pytest

from trace_assets.experiment import ExperimentError, PROJECT_ROOT, load_experiment


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
