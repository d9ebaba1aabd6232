"""The data half of the graph through real Dagster runs and DuckDB, with a scripted generation backend."""

from typing import ClassVar

import dagster as dg
import duckdb
import polars as pl

from trace_assets.demo import run_stage
from trace_assets.experiment import load_experiment
from trace_assets.generation.backends import Backend
from trace_assets.generation.types import Completion, GenerationStats
from trace_assets.project import build_definitions
from trace_assets.resources import GenerationResource
from trace_assets.tables import duckdb_type
from trace_assets_tests.conftest import write_experiment


class ScriptedTeacher(Backend):
    """Answers like a small model would: solves, paraphrases, judges in JSON, sometimes badly."""

    raw_prompts: ClassVar[list[str]] = []  # every raw (student) prompt it was given, for the tests to inspect
    many_calls: ClassVar[list[int]] = []  # the number of models of each generate_many call

    def generate_many(self, jobs, on_batch, log=print):
        ScriptedTeacher.many_calls.append(len(jobs))
        return super().generate_many(jobs, on_batch, log)

    def generate(self, spec, sampling, requests, on_batch, log=print):
        batch = []
        for request in requests:
            if request.prompt is not None:
                ScriptedTeacher.raw_prompts.append(request.prompt)
            prompt = request.prompt if request.prompt is not None else request.messages[-1]["content"]
            for index in range(sampling.n):
                if request.json_schema and "faithful" in request.json_schema["properties"]:
                    text = '{"faithful": true, "reason": "same steps"}'  # paraphrases follow the human solution
                elif request.json_schema:
                    text = (
                        '{"conforms": true, "failed_criteria": [], "reason": "ok"}'
                        if index == 0 and "####" in prompt
                        else "not json"
                    )
                elif "Reference solution" in prompt:
                    text = prompt.split("Reference solution:\n", 1)[1]
                elif index == 0:
                    text = "I add the numbers: 2 + 3 = 5.\n#### 5"
                else:
                    text = ""  # an empty completion: a normal case, not a crash
                batch.append(Completion(request.key, index, text, "stop", 10, len(text.split())))
        on_batch(batch)
        return GenerationStats(generate_s=1.0, output_tokens=sum(c.output_tokens for c in batch), completions=len(batch))


class ScriptedGeneration(GenerationResource):
    def backend(self, config):
        return ScriptedTeacher()


def definitions(experiment_path, data_dir):
    experiment = load_experiment(experiment_path)
    defs = build_definitions(experiment, data_dir)
    resources = dict(defs.resources)
    resources["generation"] = ScriptedGeneration(gpu=resources["gpu"], data=resources["data"])
    return dg.Definitions(assets=list(defs.assets), resources=resources), experiment


def traces_normal(db):
    return db.sql("SELECT count(*) FROM teacher_traces WHERE style = 'normal'").fetchone()[0]


def model_columns(defs: dg.Definitions) -> dict[str, list[tuple[str, str]]]:
    """Table name -> (column, DuckDB type) of the pandera model its asset's output is checked against."""
    tables = {}
    for asset in defs.resolve_asset_graph().assets_defs:
        for key in asset.keys:
            output = asset.op.output_def_named(asset.get_output_name_for_asset_key(key))
            schema = (output.dagster_type.metadata or {}).get("schema")
            if schema is not None:
                tables[key.to_user_string()] = [(c.name, duckdb_type(c.type)) for c in schema.schema.columns]
    return tables


def assert_tables_match_models(db, defs: dg.Definitions) -> None:
    """Every DuckDB table an asset wrote has exactly its pandera model's columns, in order, with its types."""
    models = model_columns(defs)
    written = [
        row[0]
        for row in db.execute("SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE'").fetchall()
    ]
    assert len(models) >= 10 and set(models) <= set(written), set(models) - set(written)
    for table, columns in models.items():
        stored = db.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position",
            [table],
        ).fetchall()
        assert stored == columns, table


def latest(instance, key, partition):
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=[partition]), limit=1
    ).records
    return {k: v.value for k, v in records[0].asset_materialization.metadata.items()}


def test_traces_to_datasets_end_to_end(tmp_path, tiny_model, instance):
    path = write_experiment(tmp_path, tiny_model)
    defs, experiment = definitions(path, tmp_path / "data")
    for stage in (
        ["problems"],
        ["style_prompts"],
        ["teacher_traces", "judged_traces"],
        ["sft_examples", "dataset_exclusions", "trace_stats"],
    ):
        run_stage(defs, instance, stage)

    db = duckdb.connect(str(tmp_path / "data" / "trace_assets.duckdb"), read_only=True)
    traces = db.sql("SELECT * FROM teacher_traces").pl()
    # 4 train problems x 2 styles x 2 samples, plus normal's paraphrases (4 x 2).
    assert traces.height == 4 * 2 * 2 + 4 * 2
    assert set(traces["kind"]) == {"solve", "paraphrase"}
    assert (traces.filter(pl.col("completion") == "")["is_correct"] == False).all()  # noqa: E712
    judged = db.sql("SELECT * FROM judged_traces").pl()
    assert judged.height == traces.height
    assert not judged.filter(~pl.col("judge_parsed"))["conforms"].any()
    examples = db.sql("SELECT * FROM sft_examples").pl()
    assert examples.filter(pl.col("dataset") == "H").height == 4
    assert examples.filter(pl.col("dataset") == "H_to_normal").height == 4
    assert (examples.filter(pl.col("dataset") == "H_to_normal")["source"] == "paraphrase").all()
    # every teacher-derived example points at a real trace
    linked = db.sql("SELECT count(*) FROM sft_examples e JOIN teacher_traces t USING (trace_id)").fetchone()[0]
    assert linked == examples.filter(pl.col("trace_id").is_not_null()).height
    stats = db.sql("SELECT * FROM trace_stats").pl()
    assert set(stats["dataset"]) == {"base", "base_few_shot", *experiment.datasets}  # the untrained student: no examples
    h = stats.filter(pl.col("dataset") == "H").row(0, named=True)
    assert h["n_examples"] == 4 and h["nll_before"] > 0 and h["total_tokens"] > 0
    db.close()

    assert latest(instance, "teacher_traces", "normal")["generated"] == traces.height
    # The scripted teacher leaves every second sample empty: the error-severity check must catch each one.
    key = dg.AssetCheckKey(dg.AssetKey("teacher_traces"), "no_empty_completions")
    evaluation = instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key].evaluation
    empty = traces.filter(pl.col("completion") == "").height
    assert empty > 0 and not evaluation.passed and evaluation.metadata["empty"].value == empty


def test_rerun_reuses_and_style_edit_regenerates_only_that_style(tmp_path, tiny_model, instance):
    path = write_experiment(tmp_path, tiny_model)
    defs, _ = definitions(path, tmp_path / "data")
    for stage in (["problems"], ["style_prompts"], ["teacher_traces"]):
        run_stage(defs, instance, stage)
    run_stage(defs, instance, ["teacher_traces"])
    assert latest(instance, "teacher_traces", "normal")["generated"] == 0

    style_file = tmp_path / "styles" / "titanium.yaml"
    style_file.write_text(style_file.read_text().replace("Answer with labelled lines only", "Reply with labelled lines only"))
    run_stage(defs, instance, ["style_prompts"])
    run_stage(defs, instance, ["teacher_traces"])
    metadata = latest(instance, "teacher_traces", "titanium")
    assert metadata["generated"] == 4 * 2  # titanium's 4 problems x 2 samples
    assert metadata["reused_from_cache"] == 4 * 2 + 4 * 2  # normal's solves and paraphrases
    with duckdb.connect(str(tmp_path / "data" / "trace_assets.duckdb"), read_only=True) as db:
        versions = dict(db.execute("SELECT style, count(DISTINCT style_version) FROM teacher_traces GROUP BY style").fetchall())
        total = db.execute("SELECT count(*) FROM teacher_traces").fetchone()[0]
    assert versions == {"normal": 1, "titanium": 1}  # replaced, not duplicated
    assert total == 4 * 2 * 2 + 4 * 2


def test_whole_graph_with_real_sft_on_a_tiny_student(tmp_path, tiny_model, instance):
    ScriptedTeacher.raw_prompts.clear()
    ScriptedTeacher.many_calls.clear()
    path = write_experiment(tmp_path, tiny_model, extra="")
    defs, experiment = definitions(path, tmp_path / "data")
    from trace_assets.demo import STAGES

    for stage in STAGES:
        run_stage(defs, instance, stage)
    db = duckdb.connect(str(tmp_path / "data" / "trace_assets.duckdb"), read_only=True)
    assert_tables_match_models(db, defs)
    checkpoints = db.sql("SELECT * FROM checkpoints").pl()
    status = dict(zip(checkpoints["dataset"], checkpoints["status"]))
    assert status["base"] == status["base_few_shot"] == "base" and status["H"] == "trained"
    trained = checkpoints.filter(pl.col("status") == "trained")
    for row in trained.iter_rows(named=True):
        assert (tmp_path / "data" / "checkpoints").as_posix() in row["path"]
        assert len(row["content_hash"]) == 16 and row["train_tokens"] > 0
    log = db.sql("SELECT * FROM training_log WHERE dataset = 'H'").pl()
    assert log["train_loss"].drop_nulls().len() == experiment.training.max_steps
    assert log["eval_loss"].drop_nulls().len() >= 1
    evals = db.sql("SELECT * FROM eval_results").pl()
    n_test = experiment.problems.n_test
    # base_few_shot's prompts, and only those, start with the same k solved train problems.
    train_questions = db.sql("SELECT question FROM problems WHERE split = 'train'").pl()["question"].to_list()
    few_shot = [
        p for p in ScriptedTeacher.raw_prompts if sum(q.strip() in p for q in train_questions) == experiment.evaluation.few_shot_k
    ]
    # one generation per model and prompt: H and H_to_normal learnt the same examples (the scripted
    # paraphrase is the reference solution) into the same weights, whose answers are generated once
    prompts = evals.with_columns(few_shot=pl.col("dataset") == "base_few_shot").unique(
        ["checkpoint_hash", "few_shot", "problem_id"]
    )
    assert len(few_shot) == n_test and len(ScriptedTeacher.raw_prompts) == prompts.height
    assert evals.filter(pl.col("dataset") == "base").height == n_test
    assert set(evals["dataset"]) == {"base", "base_few_shot", *trained["dataset"].to_list()}
    # one run and one step evaluated every checkpoint of every dataset x student partition together
    assert ScriptedTeacher.many_calls == [checkpoints.filter(pl.col("status").is_in(["trained", "base"])).height]
    # lineage: every eval row comes from a recorded checkpoint
    orphans = db.sql(
        "SELECT count(*) FROM eval_results e ANTI JOIN checkpoints c ON e.checkpoint_hash = c.content_hash"
    ).fetchone()[0]
    assert orphans == 0
    accuracy = db.sql("SELECT * FROM accuracy").pl()
    assert accuracy.height == evals.select("dataset", "student").unique().height
    wrong = evals.filter(~pl.col("is_correct")).height
    assert db.sql("SELECT count(*) FROM failure_modes").fetchone()[0] == wrong

    # Lineage in plain SQL: an example back to its style version, judge verdict and problem ...
    example = db.sql("SELECT * FROM example_lineage WHERE trace_id IS NOT NULL LIMIT 1").pl().row(0, named=True)
    assert example["style_version"] and example["teacher_model"] == tiny_model and example["question"]
    assert example["verdict_source"] in {"rules", "judge", "both"} and example["style_is_current"]
    # ... an eval row back to its checkpoint ...
    assert db.sql("SELECT count(*) FROM eval_lineage").fetchone()[0] == evals.height
    # ... and a style version forward to every row built from it.
    version = db.sql("SELECT version FROM style_prompts WHERE style = 'normal'").fetchone()[0]
    downstream = dict(
        db.sql(f"SELECT table_name, count(*) FROM style_version_rows WHERE style_version = '{version}' GROUP BY 1").fetchall()
    )
    assert downstream["teacher_traces"] == traces_normal(db) and downstream["sft_examples"] > 0
    # Every eval row of a checkpoint trained on examples of this style version, and no other, is downstream of it.
    from_style = evals.filter(pl.col("dataset").is_in(experiment.datasets_using_style("normal"))).height
    assert downstream.get("eval_results", 0) == from_style
    db.close()
    report = (tmp_path / "data" / "report" / "report.md").read_text()
    assert "## Accuracy by student and dataset" in report and "Holm-adjusted" in report
    assert "SELF-GRADED" in report and "no noise floor" in report  # the teacher judges itself; one seed
    assert "base_few_shot" in report and "## Exclusions per arm, by reason" in report
    assert (tmp_path / "data" / "report" / "loss_curves.png").stat().st_size > 1000

    # A re-run trains nothing: the same examples, settings and seed reuse the checkpoint on disk.
    folders = sorted(p.name for p in (tmp_path / "data" / "checkpoints" / "H" / "tiny").iterdir())
    run_stage(defs, instance, ["checkpoints", "training_log"])
    assert sorted(p.name for p in (tmp_path / "data" / "checkpoints" / "H" / "tiny").iterdir()) == folders
    with duckdb.connect(str(tmp_path / "data" / "trace_assets.duckdb"), read_only=True) as db:
        again = db.sql("SELECT dataset, content_hash FROM checkpoints WHERE status = 'trained' ORDER BY dataset").fetchall()
    assert again == sorted(zip(trained["dataset"], trained["content_hash"]))
