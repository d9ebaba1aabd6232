"""bench/soak.py's plan: the study's stages, then the loop's rounds as the sensor starts them, and kills
spread over every killed stage, rounds included. (The soak itself runs for an hour: bench/results/soak.json.)"""

from __future__ import annotations

import importlib.util
import random
import sys

import pytest

from trace_assets.experiment import PROJECT_ROOT


@pytest.fixture(scope="module")
def soak():
    spec = importlib.util.spec_from_file_location("soak", PROJECT_ROOT / "bench" / "soak.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setitem(sys.modules, "soak", module)  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    yield module
    monkeypatch.undo()


def test_rounds_follow_the_study_one_asset_a_stage_each_asked_for_once_the_last_round_ran(soak):
    answers = iter([["normal_r0"], ["normal_r1"], []])
    asked_after: list[int] = []
    seen: list[str] = []

    def next_rounds() -> list[str]:
        asked_after.append(len(seen))
        return next(answers)

    for stage in soak.stages(next_rounds):
        seen.append(stage.label)
    study = [assets[0] for assets in soak.STUDY_STAGES]
    round_assets = [assets[0] for assets in soak.ROUND_STAGES]
    assert seen == (
        study
        + [f"{name}[normal_r0]" for name in round_assets]
        + [f"{name}[normal_r1]" for name in round_assets]
        + ["rounds_report"]
    )
    # the sensor is asked only when everything before has run: after the study, after each round
    assert asked_after == [len(study), len(study) + len(round_assets), len(study) + 2 * len(round_assets)]
    assert soak.Stage(("round_traces",), "normal_r1").argv() == ["--child", "round_traces", "--partition", "normal_r1"]


def test_an_experiment_without_a_loop_runs_the_study_alone(soak):
    assert [stage.label for stage in soak.stages(lambda: [])] == [assets[0] for assets in soak.STUDY_STAGES]


def test_kills_go_to_every_killed_stage_of_the_reference_rounds_included(soak):
    def timing(step_s: float) -> dict:
        return {"total_s": 10.0 + step_s, "to_first_step_s": 10.0}

    timings = {
        "problems": timing(2),  # not a killed kind
        "teacher_traces": timing(100),
        "round_styles[normal_r0]": timing(0.5),  # round 0's style is the file: too short to kill
        "round_styles[normal_r1]": timing(30),  # the reviser generating
        "round_traces[normal_r0]": timing(60),
        "round_examples[normal_r0]": timing(5),  # not a killed kind
        "round_failures[normal_r1]": timing(20),
    }
    plan = soak.plan_kills(9, timings, random.Random(0))
    assert set(plan) == {"teacher_traces", "round_styles[normal_r1]", "round_traces[normal_r0]", "round_failures[normal_r1]"}
    assert sum(plan.values()) == 9 and min(plan.values()) == 2
    assert plan == soak.plan_kills(9, timings, random.Random(0))  # seeded
