"""The closed loop's assets, one dynamic partition per round of a revised style (``<style>_r<N>``).

round_styles -> round_traces -> round_examples -> round_checkpoints -> round_evals -> round_failures,
and ``rounds_report`` over every round. Round 0 is the style file as written; round N is the reviser's
rewrite of round N-1 from round N-1's validation failures. That link runs backwards through the graph
(round N's first asset needs round N-1's last), which an asset graph cannot hold without a cycle, so
``round_styles`` reads its parent's rows from the loop's tables by key and fails, naming the parent,
if they are not there; the ``next_round`` sensor only starts round N once round N-1 has finished.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import polars as pl

from trace_assets.assetdefs import EAGER, asset_settings
from trace_assets.datasets.step import build_sft_datasets
from trace_assets.evaluation.step import evaluate
from trace_assets.experiment import (
    ConfidenceConfig,
    DatasetRecipe,
    DatasetRules,
    EvaluationConfig,
    Experiment,
    ModelConfig,
    RevisionConfig,
    StudentConfig,
    TrainingConfig,
)
from trace_assets.generation.cached import engine_metadata
from trace_assets.judging.step import judge_traces
from trace_assets.loop.report import ROUNDS_VIEW, rounds_report_text
from trace_assets.loop.revision import (
    check_no_test_text,
    parse_revision,
    pick_examples,
    prompt_hash,
    reviser_messages,
    revision_request,
    write_round_style,
)
from trace_assets.loop.rounds import ROUND_PARTITIONS, parent_key, parse_round_key, round_recipes, round_rules
from trace_assets.loop.schemas import (
    RoundCheckpointSchema,
    RoundEvalSchema,
    RoundExampleSchema,
    RoundFailureSchema,
    RoundStyleSchema,
    RoundTraceSchema,
)
from trace_assets.metadata import preview
from trace_assets.reporting.step import classify_failures
from trace_assets.resources import DataResource, GenerationResource, GPUResource
from trace_assets.storage import connect
from trace_assets.styles.library import Style, load_style, style_from_row, style_row
from trace_assets.tables import frame_of
from trace_assets.traces.step import generate_traces
from trace_assets.training.step import train_checkpoints

GROUP = "loop"
ROUND_CHAIN = ["round_styles", "round_traces", "round_examples", "round_checkpoints", "round_evals", "round_failures"]


@dataclass(frozen=True)
class LoopSettings:
    """What the loop's assets need from the experiment (``loop_settings``), read once in project.py."""

    revision: RevisionConfig
    styles_dir: Path
    seed: int
    teacher: ModelConfig
    judge: ModelConfig
    reviser: ModelConfig
    confidence: ConfidenceConfig
    paraphrase_styles: frozenset[str]
    recipes: dict[str, DatasetRecipe]
    rules: DatasetRules
    students: dict[str, StudentConfig]
    training: TrainingConfig
    evaluation: EvaluationConfig

    def style_recipes(self, style: str) -> dict[str, DatasetRecipe]:
        return round_recipes(self.recipes, style)


def loop_settings(experiment: Experiment) -> LoopSettings:
    assert experiment.revision is not None
    return LoopSettings(
        revision=experiment.revision,
        styles_dir=experiment.resolve(experiment.styles_dir),
        seed=experiment.seed,
        teacher=experiment.teacher,
        judge=experiment.judge,
        reviser=experiment.reviser(),
        confidence=experiment.confidence,
        paraphrase_styles=experiment.paraphrase_styles(),
        recipes=dict(experiment.datasets),
        rules=experiment.dataset_rules(),
        students=dict(experiment.students),
        training=experiment.training,
        evaluation=experiment.evaluation,
    )


def round_partitions() -> dg.DynamicPartitionsDefinition:
    return dg.DynamicPartitionsDefinition(name=ROUND_PARTITIONS)


def round_rows(database: Path, table: str, key: str) -> pl.DataFrame:
    """The rows of one round in one of the loop's tables (empty when there are none)."""
    with connect(database, read_only=True) as db:
        exists = db.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [table]).fetchone()[0]
        return db.execute(f"SELECT * FROM {table} WHERE round_key = ?", [key]).pl() if exists else pl.DataFrame()


def _settings(name: str, table, **extra) -> dict:
    return asset_settings(
        name, GROUP, extra.pop("kinds"), table=table, partitions=round_partitions(), partition_expr="round_key", **extra
    )


def parent_failures(database: Path, parent: str, problems: pl.DataFrame) -> pl.DataFrame:
    """The parent round's classified validation failures with the answer and question they are about.
    None when the parent trained nothing (every dataset of its style came out empty: no teacher trace
    it kept was right), so no student answered and there are no failures to show; the chain goes on
    from its text and the reviser is told so. A RuntimeError if the parent has not finished."""
    failures = round_rows(database, "round_failures", parent)
    evals = round_rows(database, "round_evals", parent)
    if failures.is_empty() and evals.is_empty():
        checkpoints = round_rows(database, "round_checkpoints", parent)
        if checkpoints.height and not (checkpoints["status"] == "trained").any():
            return None
        raise RuntimeError(
            f"round {parent} has no evaluations or failures yet: the next round starts from them "
            f"(materialize {parent} first; the next_round sensor does this in order)"
        )
    if failures.is_empty():
        return failures
    answers = evals.filter(pl.col("split") == "validation").select(
        "dataset", "student", "seed", "problem_id", "completion", "extracted_answer", "reference_answer"
    )
    questions = problems.filter(pl.col("split") == "validation").select("problem_id", "question")
    # inner joins: only validation answers and questions can reach the reviser
    return failures.join(answers, on=["dataset", "student", "seed", "problem_id"]).join(questions, on="problem_id")


def build_round_styles_asset(settings: LoopSettings) -> dg.AssetsDefinition:
    @dg.asset(**_settings("round_styles", RoundStyleSchema, kinds={"yaml", "duckdb"}, gpus=settings.reviser.gpus))
    def round_styles(
        context: dg.AssetExecutionContext, data: DataResource, generation: GenerationResource, problems: pl.DataFrame
    ):
        """The round's style version: the file as written in round 0, after that the reviser's rewrite of
        its parent from the parent's validation failures, with lineage to both."""
        key = context.partition_key
        style, number = parse_round_key(key)
        parent = parent_key(key)
        if parent is None:
            original = load_style(settings.styles_dir, style)
            row = _row(key, style, 0, original, None, None, "original", "the style file as written", 0, None, None, [], {})
            yield dg.Output(frame_of([row], RoundStyleSchema), data_version=dg.DataVersion(original.version))
            return
        parents = round_rows(data.database, "round_styles", parent)
        if parents.is_empty():
            raise RuntimeError(f"round {key}: its parent round {parent} has no style version yet; run {parent} first")
        parent_row = parents.row(0, named=True)
        parent_style = style_from_row(parent_row)
        failures = parent_failures(data.database, parent, problems)
        if failures is None:
            counts, examples = {}, []
            context.log.warning(f"round {key}: its parent {parent} trained nothing (empty datasets); revising without failures")
        else:
            counts = dict(failures.group_by("category").len().sort(["len", "category"], descending=[True, False]).iter_rows())
            examples = pick_examples(failures, settings.revision.examples_per_category, settings.seed + number)
        messages = reviser_messages(parent_style, counts, examples, trained=failures is not None)
        check_no_test_text(messages, problems.filter(pl.col("split") == "test")["question"].to_list())
        spec, sampling = generation.settings(settings.reviser, n=1)
        # every attempt's reply is sampled in one call, so one engine start (~40 s on a GPU) serves them
        # all, and they are read in order until one is accepted
        requests = [
            revision_request(messages, settings.reviser.model, sampling, a) for a in range(settings.revision.max_attempts)
        ]
        results = generation.generate_many([(spec, s, [r]) for s, r in requests], context.log.info)
        notes, revised, attempts = [], None, 0
        for attempt, ((_, request), result) in enumerate(zip(requests, results)):
            attempts += 1
            outcome = parse_revision(result.completions.get((request.key, 0)), parent_style)
            if outcome.spec is not None:
                revised = outcome
                break
            notes.append(f"attempt {attempt + 1}: {outcome.reason}")
            context.log.warning(f"round {key}: reviser attempt {attempt + 1} rejected: {outcome.reason}")
        # the parent's file as written (round 0: the style file itself): a kept round is its bytes
        folder, parent_text = data.path / "styles" / "rounds", parent_style.path.read_text(encoding="utf-8")
        if revised is not None:
            written = write_round_style(folder, style, number, parent_text, revised.spec)
            status, note, version_style = "revised", "; ".join([*notes, f"changes: {revised.reason}"]), written
        else:  # the round re-measures its parent's text, and says so
            written = write_round_style(folder, style, number, parent_text, parent_style.spec)
            status, note, version_style = "kept_parent", "; ".join(notes) + "; kept the parent's text", written
        if failures is None:
            note = f"{parent} trained nothing (its datasets were empty), so the reviser saw no failures; {note}"
        row = _row(
            key,
            style,
            number,
            version_style,
            parent,
            parent_row["version"],
            status,
            note,
            attempts,
            settings.reviser.model,
            prompt_hash(messages),
            [example.failure_id for example in examples],
            counts,
        )
        frame = frame_of([row], RoundStyleSchema)
        yield dg.Output(
            frame,
            data_version=dg.DataVersion(version_style.version),
            metadata={
                "status": status,
                "note": note,
                "parent": parent,
                "attempts": attempts,
                "motivating_failures": len(examples),
                **engine_metadata(results),
                "failure_counts": json.dumps(counts),
                "path": dg.MetadataValue.path(str(version_style.path)),
                "instruction": dg.MetadataValue.md(f"```\n{version_style.system_prompt()}\n```"),
            },
        )

    return round_styles


def _row(
    key, style, number, version: Style, parent, parent_version, status, note, attempts, model, hash_, failures, counts
) -> dict:
    """A round_styles row: ``version`` as a style_prompts row (named as the chain's style, so recipes
    find it), with the round's lineage."""
    return {
        **style_row(version),
        "style": style,
        "round_key": key,
        "round": number,
        "parent_key": parent,
        "parent_version": parent_version,
        "status": status,
        "note": note,
        "attempts": attempts,
        "reviser_model": model,
        "reviser_prompt_hash": hash_,
        "motivating_failures": json.dumps(failures),
        "failure_counts": json.dumps(counts),
    }


def build_round_traces_asset(settings: LoopSettings) -> dg.AssetsDefinition:
    gpus = max(settings.teacher.gpus, settings.judge.gpus)

    @dg.asset(**_settings("round_traces", RoundTraceSchema, kinds={"vllm", "duckdb"}, gpus=gpus))
    def round_traces(
        context: dg.AssetExecutionContext, generation: GenerationResource, round_styles: pl.DataFrame, problems: pl.DataFrame
    ):
        """The teacher's traces of the round's style on the train problems, with the judge's verdicts."""
        key = context.partition_key
        style = style_from_row(round_styles.row(0, named=True))
        sampled, _ = generate_traces(
            generation, settings.teacher, [style], problems, settings.paraphrase_styles, settings.confidence, context.log.info
        )
        frame = judge_traces(generation, settings.judge, sampled.frame, {style.name: style}, problems, context.log.info).frame
        frame = frame.with_columns(pl.lit(key).alias("round_key"))
        yield dg.Output(
            frame,
            metadata={
                **sampled.metadata(),
                "dagster/row_count": frame.height,
                "style_version": style.version,
                "correct_rate": float(frame["is_correct"].mean() or 0.0) if frame.height else 0.0,
                "conformance_rate": float(frame["conforms"].mean() or 0.0) if frame.height else 0.0,
                "with_logprobs": int(frame["mean_logprob"].is_not_null().sum()),
                "preview": preview(frame, ["problem_id", "is_correct", "conforms", "step_confidence", "completion"]),
            },
        )

    return round_traces


def build_round_examples_asset(settings: LoopSettings) -> dg.AssetsDefinition:
    @dg.asset(**_settings("round_examples", RoundExampleSchema, kinds={"polars", "duckdb"}))
    def round_examples(
        context: dg.AssetExecutionContext,
        data: DataResource,
        round_traces: pl.DataFrame,
        round_styles: pl.DataFrame,
        problems: pl.DataFrame,
    ):
        """The round-0 recipes of the style rebuilt from the round's traces, under round 0's rules."""
        key = context.partition_key
        recipes = settings.style_recipes(round_styles["style"][0])
        rules = round_rules(settings.rules, recipes)
        build = build_sft_datasets(data, recipes, rules, round_traces, problems, round_styles, settings.students, settings.seed)
        frame = build.examples.with_columns(pl.lit(key).alias("round_key"))
        yield dg.Output(
            frame,
            metadata={
                "dagster/row_count": frame.height,
                "datasets": preview(build.summary, rows=build.summary.height),
                "exclusions": int(build.exclusions.height),
            },
        )

    return round_examples


def build_round_checkpoints_asset(settings: LoopSettings) -> dg.AssetsDefinition:
    @dg.asset(
        **_settings("round_checkpoints", RoundCheckpointSchema, kinds={"pytorch", "duckdb"}, gpus=settings.training.processes)
    )
    def round_checkpoints(
        context: dg.AssetExecutionContext,
        data: DataResource,
        gpu: GPUResource,
        round_examples: pl.DataFrame,
        round_styles: pl.DataFrame,
        problems: pl.DataFrame,
    ):
        """Every student fine-tuned on each of the round's datasets, once per training seed."""
        key = context.partition_key
        # keyed by content, not round: a round whose examples did not change reuses its parent's checkpoint
        run = train_checkpoints(
            gpu,
            data,
            settings.training,
            settings.students,
            round_examples,
            problems,
            settings.style_recipes(round_styles["style"][0]),
            data.path / "checkpoints" / "rounds",
            context.log.info,
        )
        for row in run.rows:
            row["round_key"] = key
            if row["status"] == "skipped_empty":
                context.log.warning(f"{key}: dataset {row['dataset']} is empty; nothing to train for {row['student']}")
        frame = frame_of(run.rows, RoundCheckpointSchema)
        yield dg.Output(
            frame,
            metadata={
                "dagster/row_count": frame.height,
                "train_s": round(run.train_s, 1),  # the trainers' own seconds (metadata.WORK_SECONDS)
                "checkpoints": preview(frame, ["dataset", "student", "seed", "status", "train_examples"]),
            },
        )

    return round_checkpoints


def build_round_evals_asset(settings: LoopSettings) -> dg.AssetsDefinition:
    @dg.asset(**_settings("round_evals", RoundEvalSchema, kinds={"vllm", "duckdb"}, gpus=1))
    def round_evals(
        context: dg.AssetExecutionContext, generation: GenerationResource, round_checkpoints: pl.DataFrame, problems: pl.DataFrame
    ):
        """Greedy answers of the round's checkpoints to the validation problems (what the next round
        learns from) and to the test problems (for the report only)."""
        key = context.partition_key
        trained = round_checkpoints.filter(pl.col("status") == "trained")
        splits = ["validation", "test"]
        evaluation = evaluate(
            generation, settings.students, settings.evaluation, settings.seed, trained, problems, splits, context.log.info
        )
        frame = pl.concat(
            [
                evaluation.answers[split].with_columns(pl.lit(key).alias("round_key"), pl.lit(split).alias("split"))
                for split in splits
            ]
        )
        accuracy = frame.group_by("split").agg(pl.col("is_correct").mean()).sort("split") if frame.height else frame
        yield dg.Output(
            frame,
            metadata={
                "dagster/row_count": frame.height,
                "validation_accuracy": float(frame.filter(pl.col("split") == "validation")["is_correct"].mean() or 0.0)
                if frame.height
                else 0.0,
                "by_split": preview(accuracy, rows=2),
                **engine_metadata(evaluation.results),
            },
        )

    return round_evals


def build_round_failures_asset(settings: LoopSettings) -> dg.AssetsDefinition:
    @dg.asset(**_settings("round_failures", RoundFailureSchema, kinds={"vllm", "duckdb"}, gpus=settings.judge.gpus))
    def round_failures(
        context: dg.AssetExecutionContext, generation: GenerationResource, round_evals: pl.DataFrame, problems: pl.DataFrame
    ):
        """The round's wrong validation answers, classified (rules propose, the judge decides): what the
        reviser of the next round is shown. Test answers are never classified here."""
        key = context.partition_key
        rows, engines = classify_failures(
            generation,
            settings.judge,
            round_evals.filter(pl.col("split") == "validation"),
            problems.filter(pl.col("split") == "validation"),
            ("round_key", "dataset", "student", "seed", "problem_id"),
            context.log.info,
        )
        for row in rows:
            row["failure_id"] = ":".join(str(row[k]) for k in ("round_key", "dataset", "student", "seed", "problem_id"))
        frame = frame_of(rows, RoundFailureSchema)
        counts = frame.group_by("category").len().sort("len", descending=True)
        yield dg.Output(
            frame,
            metadata={"dagster/row_count": frame.height, "round": key, **engines, "counts": preview(counts, rows=counts.height)},
        )

    return round_failures


def build_rounds_report_asset(name: str) -> dg.AssetsDefinition:
    every_round = dg.AssetIn(partition_mapping=dg.AllPartitionMapping())

    @dg.asset(
        **asset_settings(
            "rounds_report",
            GROUP,
            {"markdown"},
            automation_condition=EAGER,
            ins={"round_styles": every_round, "round_evals": every_round},
            deps=["round_failures"],
        )
    )
    def rounds_report(
        context: dg.AssetExecutionContext, data: DataResource, round_styles: pl.DataFrame, round_evals: pl.DataFrame
    ):
        """Accuracy by round (validation and test, intervals, change vs the parent), each revision's diff,
        and the style_round_lineage view."""
        folder = data.path / "report"
        folder.mkdir(parents=True, exist_ok=True)
        report = rounds_report_text(name, round_styles, round_evals)
        (folder / "rounds.md").write_text(report.text)
        if report.png:
            (folder / "accuracy_by_round.png").write_bytes(report.png)
        with connect(data.database) as db:
            db.execute(f"CREATE OR REPLACE VIEW style_round_lineage AS {ROUNDS_VIEW}")
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(folder / "rounds.md")),
                "rounds": round_styles.height,
                "report": dg.MetadataValue.md(report.text[:20000]),
            }
        )

    return rounds_report


def build_loop_assets(settings: LoopSettings, name: str) -> list[dg.AssetsDefinition]:
    return [
        build_round_styles_asset(settings),
        build_round_traces_asset(settings),
        build_round_examples_asset(settings),
        build_round_checkpoints_asset(settings),
        build_round_evals_asset(settings),
        build_round_failures_asset(settings),
        build_rounds_report_asset(name),
    ]
