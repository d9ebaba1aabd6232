import dagster as dg

from trace_assets.demo import run_stage
from trace_assets.experiment import load_experiment
from trace_assets.project import build_definitions
from trace_assets_tests.conftest import write_experiment


def _sensor(defs):
    return defs.resolve_sensor_def("style_file_changes")


def test_editing_a_style_requests_exactly_its_partitions(tmp_path, instance):
    path = write_experiment(tmp_path, "unused-model")
    experiment = load_experiment(path)
    defs = build_definitions(experiment, tmp_path / "data")
    run_stage(defs, instance, ["style_prompts"])

    unchanged = _sensor(defs)(dg.build_sensor_context(instance=instance, definitions=defs))
    assert isinstance(unchanged, dg.SkipReason)

    style_file = tmp_path / "styles" / "normal.yaml"
    style_file.write_text(style_file.read_text().replace("Reason step by step", "Think step by step"))
    requests = _sensor(defs)(dg.build_sensor_context(instance=instance, definitions=defs))
    style_runs = [r for r in requests if r.partition_key in experiment.styles]
    dataset_runs = [r for r in requests if r.partition_key in experiment.datasets]
    assert [r.partition_key for r in style_runs] == ["normal"]
    assert {r.job_name for r in style_runs} == {"restyle"} and {r.job_name for r in dataset_runs} == {"rebuild_datasets"}
    restyle = defs.resolve_job_def("restyle")
    assert {k.to_user_string() for k in restyle.asset_layer.executable_asset_keys} == {
        "style_prompts",
        "teacher_traces",
        "judged_traces",
    }
    assert {k.to_user_string() for k in defs.resolve_job_def("rebuild_datasets").asset_layer.executable_asset_keys} == {
        "sft_examples",
        "dataset_exclusions",
        "trace_stats",
    }
    # All datasets share one problem set by default (the intersection where every arm has an eligible trace),
    # so a change to normal's traces can change every arm, the human one included.
    assert sorted(r.partition_key for r in dataset_runs) == sorted(experiment.datasets)
    assert len(requests) == len(style_runs) + len(dataset_runs)

    # once the new version is materialised, nothing is requested again
    run_stage(defs, instance, ["style_prompts"])
    assert isinstance(_sensor(defs)(dg.build_sensor_context(instance=instance, definitions=defs)), dg.SkipReason)


def test_reevaluation_schedule_follows_the_experiment(tmp_path, instance):
    path = write_experiment(tmp_path, "unused-model", extra="")
    assert not build_definitions(load_experiment(path), tmp_path / "data").schedules
    text = path.read_text().replace("evaluation: {max_tokens: 16}", 'evaluation: {max_tokens: 16, schedule: "0 3 * * *"}')
    path.write_text(text)
    experiment = load_experiment(path)
    defs = build_definitions(experiment, tmp_path / "data")
    schedule = defs.resolve_schedule_def("reevaluation")
    assert schedule.cron_schedule == "0 3 * * *"
    import datetime

    context = dg.build_schedule_context(
        instance=instance, scheduled_execution_time=datetime.datetime(2026, 1, 1, 3), repository_def=defs.get_repository_def()
    )
    requests = list(schedule.evaluate_tick(context).run_requests)
    assert len(requests) == (len(experiment.datasets) + 2) * len(experiment.students)  # + base and base_few_shot
