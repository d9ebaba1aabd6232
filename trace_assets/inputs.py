"""Everything about an experiment's input files that can be known before any work starts.

:func:`load_experiment` checks the experiment file itself; :func:`check_inputs` reads the files it
names: every style file, each task's problems as a run would read or generate them (its
``check_problems``: every line of JSONL files, the generators' output), local model folders, and
the sizes that follow from them (few-shot exemplars vs. train problems). ``trace-assets dry-run``
and the Dagster code location (trace_assets/definitions.py, so ``dagster definitions validate``
too) run it; a failure is an :class:`ExperimentError` naming the experiment file, the key, and the
named file and line.
Problems from the hub are not read here (they may need the network).
"""

from __future__ import annotations

import os
from pathlib import Path

from trace_assets.experiment import Experiment, ExperimentError, ModelConfig, StudentConfig, load_experiment
from trace_assets.models import LOCAL_PREFIX, SMOLLM2


def _fail(experiment: Experiment, key: str, message: str) -> ExperimentError:
    return ExperimentError(f"{experiment.source_path or 'experiment'}: key '{key}': {message}")


def check_styles(experiment: Experiment) -> None:
    from trace_assets.styles.library import StyleError, load_style

    styles_dir = experiment.resolve(experiment.styles_dir)
    if not styles_dir.is_dir():
        raise _fail(experiment, "styles_dir", f"folder {styles_dir} not found; it should hold <style>.yaml files")
    for number, name in enumerate(experiment.styles):
        try:
            load_style(styles_dir, name)
        except StyleError as error:
            raise _fail(experiment, f"styles[{number}]", f"style '{name}': {error}") from None


def check_models(experiment: Experiment) -> None:
    models: dict[str, ModelConfig | StudentConfig] = {"teacher": experiment.teacher, "judge": experiment.judge}
    models |= {f"students.{name}": student for name, student in experiment.students.items()}
    for key, config in models.items():
        name = config.model
        if isinstance(config, ModelConfig) and config.backend == "openai":
            continue  # the server's name for it
        if name.startswith(LOCAL_PREFIX) and name != LOCAL_PREFIX + SMOLLM2:
            raise _fail(
                experiment, f"{key}.model", f"unknown local model '{name}'; the offline model is '{LOCAL_PREFIX}{SMOLLM2}'"
            )
        if name.startswith(("/", "./", "../", "~")):  # a folder, not a hub id
            folder = Path(os.path.expanduser(name))
            folder = folder if folder.is_absolute() else experiment.resolve(name)
            if not (folder / "config.json").is_file():
                raise _fail(experiment, f"{key}.model", f"model folder {folder} not found (or has no config.json)")


def check_problems(experiment: Experiment) -> int:
    """Reads or generates the problems as a run would; returns the fewest train problems of any task."""
    counts = [_check_task_problems(experiment, task) for task in experiment.problems.tasks]
    return min(counts)


def _check_task_problems(experiment: Experiment, task: str) -> int:
    from trace_assets.settings import SettingsError
    from trace_assets.tasks import get_task

    try:
        return get_task(task).check_problems(experiment.problems, experiment.seed)
    except SettingsError as error:
        raise _fail(experiment, f"problems.{error.key}", str(error)) from None


def check_inputs(experiment: Experiment) -> Experiment:
    """Raise :class:`ExperimentError` for anything in the files that would stop the experiment; returns it."""
    check_styles(experiment)
    check_models(experiment)
    n_train = check_problems(experiment)
    k = experiment.evaluation.few_shot_k
    if k > n_train:
        raise _fail(
            experiment,
            "evaluation.few_shot_k",
            f"{k} few-shot exemplars, but there are only {n_train} train problems (of a task) to take them from",
        )
    return experiment


def load_checked_experiment(path: str | os.PathLike | None = None) -> Experiment:
    """:func:`load_experiment`, then :func:`check_inputs`."""
    return check_inputs(load_experiment(path))
