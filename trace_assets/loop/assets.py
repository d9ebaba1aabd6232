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
import yaml

from trace_assets.assetdefs import asset_settings
from trace_assets.datasets.recipes import build_datasets
from trace_assets.evaluation.build import eval_rows
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
from trace_assets.generation.cached import prompt_request
from trace_assets.generation.types import ModelSpec, Sampling
from trace_assets.judging.build import faithfulness_requests, judge_requests, verdict_rows
from trace_assets.judging.verdicts import judge_char_budget
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
from trace_assets.reporting.assets import EAGER, classify_wrong_answers
from trace_assets.resources import DataResource, GenerationResource, GPUResource
from trace_assets.storage import connect
from trace_assets.students import load_tokenizer, student_path
from trace_assets.styles.library import Style, StyleFile, load_style
from trace_assets.tables import empty_frame, frame_of
from trace_assets.traces.build import teacher_requests
from trace_assets.traces.sampling import sample_traces
from trace_assets.training.assets import trained_checkpoint, trained_row, training_examples, untrained_record
from trace_assets.training.format import student_prompt

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


def style_of(row: dict) -> Style:
    """A round_styles row as a Style (named as the chain's style, so recipes find it)."""
    return Style(
        name=row["style"],
        path=Path(row["path"]),
        version=row["version"],
        spec=StyleFile.model_validate(yaml.safe_load(row["style_yaml"])),
    )


def _settings(name: str, table, **extra) -> dict:
    return asset_settings(
        name, GROUP, extra.pop("kinds"), table=table, partitions=round_partitions(), partition_expr="round_key", **extra
    )


def _parent_failures(database: Path, parent: str, problems: pl.DataFrame) -> pl.DataFrame:
    """The parent round's classified validation failures with the answer and question they are about."""
    failures = round_rows(database, "round_failures", parent)
    evals = round_rows(database, "round_evals", parent)
    if failures.is_empty() and evals.is_empty():
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
            row["style_yaml"] = original.path.read_text(encoding="utf-8")
            yield dg.Output(frame_of([row], RoundStyleSchema), data_version=dg.DataVersion(original.version))
            return
        parents = round_rows(data.database, "round_styles", parent)
        if parents.is_empty():
            raise RuntimeError(f"round {key}: its parent round {parent} has no style version yet; run {parent} first")
        parent_row = parents.row(0, named=True)
        parent_style = style_of(parent_row)
        failures = _parent_failures(data.database, parent, problems)
        counts = dict(failures.group_by("category").len().sort(["len", "category"], descending=[True, False]).iter_rows())
        examples = pick_examples(failures, settings.revision.examples_per_category, settings.seed + number)
        messages = reviser_messages(parent_style, counts, examples)
        check_no_test_text(messages, problems.filter(pl.col("split") == "test")["question"].to_list())
        spec, sampling = generation.settings(settings.reviser, n=1)
        notes, revised, attempts = [], None, 0
        for attempt in range(settings.revision.max_attempts):
            attempts += 1
            attempt_sampling, request = revision_request(messages, settings.reviser.model, sampling, attempt)
            result = generation.generate(spec, attempt_sampling, [request], context.log.info)
            outcome = parse_revision(result.completions.get((request.key, 0)), parent_style)
            if outcome.spec is not None:
                revised = outcome
                break
            notes.append(f"attempt {attempt + 1}: {outcome.reason}")
            context.log.warning(f"round {key}: reviser attempt {attempt + 1} rejected: {outcome.reason}")
        folder, parent_text = data.path / "styles" / "rounds", parent_row["style_yaml"]
        if revised is not None:
            written = write_round_style(folder, style, number, parent_text, revised.spec)
            status, note, version_style = "revised", "; ".join([*notes, f"changes: {revised.reason}"]), written
        else:  # the round re-measures its parent's text, and says so
            written = write_round_style(folder, style, number, parent_text, parent_style.spec)
            status, note, version_style = "kept_parent", "; ".join(notes) + "; kept the parent's text", written
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
        row["style_yaml"] = version_style.path.read_text(encoding="utf-8")
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
                "failure_counts": json.dumps(counts),
                "path": dg.MetadataValue.path(str(version_style.path)),
                "instruction": dg.MetadataValue.md(f"```\n{version_style.system_prompt()}\n```"),
            },
        )

    return round_styles


def _row(
    key, style, number, version: Style, parent, parent_version, status, note, attempts, model, hash_, failures, counts
) -> dict:
    return {
        "round_key": key,
        "style": style,
        "round": number,
        "version": version.version,
        "parent_key": parent,
        "parent_version": parent_version,
        "path": str(version.path),
        "status": status,
        "note": note,
        "attempts": attempts,
        "reviser_model": model,
        "reviser_prompt_hash": hash_,
        "motivating_failures": json.dumps(failures),
        "failure_counts": json.dumps(counts),
        "style_yaml": "",
    }


def build_round_traces_asset(settings: LoopSettings) -> dg.AssetsDefinition:
    gpus = max(settings.teacher.gpus, settings.judge.gpus)

    @dg.asset(**_settings("round_traces", RoundTraceSchema, kinds={"vllm", "duckdb"}, gpus=gpus))
    def round_traces(
        context: dg.AssetExecutionContext, generation: GenerationResource, round_styles: pl.DataFrame, problems: pl.DataFrame
    ):
        """The teacher's traces of the round's style on the train problems, with the judge's verdicts."""
        key = context.partition_key
        style = style_of(round_styles.row(0, named=True))
        train = problems.filter(pl.col("split") == "train")
        spec, sampling = generation.settings(settings.teacher)
        planned = teacher_requests([style], train, settings.teacher.model, sampling, settings.paraphrase_styles)
        confidence = settings.confidence
        sampled = sample_traces(
            generation.generate,
            spec,
            sampling,
            planned,
            settings.teacher.model,
            confidence.window,
            confidence.early_stop,
            context.log.info,
        )
        traces = sampled.frame
        judge_spec, judge_sampling = generation.settings(settings.judge, n=1)
        max_chars = judge_char_budget(settings.judge.max_model_len, judge_sampling.max_tokens)
        questions = dict(zip(problems["problem_id"], problems["question"]))
        requests = judge_requests(traces, questions, {style.name: style}, settings.judge.model, judge_sampling, max_chars)
        problem_rows = {row["problem_id"]: row for row in problems.iter_rows(named=True)}
        faithful = faithfulness_requests(traces, problem_rows, settings.judge.model, judge_sampling, max_chars)
        verdicts = generation.generate(judge_spec, judge_sampling, [*requests.values(), *faithful.values()], context.log.info)
        frame = verdict_rows(
            traces, {style.name: style}, requests, verdicts.completions, settings.judge.model, max_chars, faithful
        )
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
        from trace_assets.students import token_counter

        key = context.partition_key
        style = round_styles.row(0, named=True)
        recipes = settings.style_recipes(style["style"])
        rules = round_rules(settings.rules, recipes)
        counters = {name: token_counter(student_path(student, data)) for name, student in settings.students.items()}
        build = build_datasets(
            recipes,
            rules.eligibility,
            round_traces,
            problems.filter(pl.col("split") == "train"),
            settings.seed,
            counters,
            {style["style"]: yaml.safe_load(style["style_yaml"]).get("answer_format", "hash")},
            rules.comparisons,
            rules.token_matching,
        )
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
        config = settings.training
        rows = []
        for dataset in settings.style_recipes(round_styles["style"][0]):
            for student_name, student in settings.students.items():
                base_path = student_path(student, data)
                examples = training_examples(round_examples, dataset, student_name, problems)
                for seed in config.seeds:
                    record = {"round_key": key, **untrained_record(dataset, student_name, seed, base_path, config)}
                    if not examples:
                        context.log.warning(f"{key}: dataset {dataset} is empty; nothing to train for {student_name}")
                        rows.append({**record, "status": "skipped_empty", "path": None, "content_hash": None})
                        continue
                    # keyed by content, not round: a round whose examples did not change reuses its parent's checkpoint
                    folder = data.path / "checkpoints" / "rounds" / dataset / student_name
                    result = trained_checkpoint(gpu, data, student, base_path, examples, config, seed, folder, context.log.info)
                    rows.append(trained_row(record, result))
        frame = frame_of(rows, RoundCheckpointSchema)
        yield dg.Output(
            frame,
            metadata={
                "dagster/row_count": frame.height,
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
        splits = {split: problems.filter(pl.col("split") == split) for split in ("validation", "test")}
        evaluated, jobs = [], []
        for checkpoint in round_checkpoints.filter(pl.col("status") == "trained").iter_rows(named=True):
            dtype = generation.gpu.resolve_dtype(settings.students[checkpoint["student"]].dtype)
            spec = ModelSpec(name=checkpoint["path"], path=checkpoint["path"], dtype=dtype)
            sampling = Sampling(temperature=0.0, max_tokens=settings.evaluation.max_tokens, n=1, seed=checkpoint["seed"])
            tokenizer = load_tokenizer(checkpoint["path"])
            for split, frame in splits.items():
                requests = {
                    row["problem_id"]: prompt_request(
                        student_prompt(row["question"], tokenizer), checkpoint["content_hash"], sampling
                    )
                    for row in frame.iter_rows(named=True)
                }
                evaluated.append((checkpoint, split, requests))
                jobs.append((spec, sampling, list(requests.values())))
        results = generation.generate_many(jobs, context.log.info) if jobs else []
        frames = []
        for (checkpoint, split, requests), result in zip(evaluated, results):
            base = {k: checkpoint[k] for k in ("dataset", "student", "seed")} | {"checkpoint_hash": checkpoint["content_hash"]}
            rows = eval_rows(splits[split], requests, result.completions, base)
            frames.append(rows.with_columns(pl.lit(key).alias("round_key"), pl.lit(split).alias("split")))
        frame = pl.concat(frames) if frames else empty_frame(RoundEvalSchema)
        accuracy = frame.group_by("split").agg(pl.col("is_correct").mean()).sort("split") if frame.height else frame
        yield dg.Output(
            frame,
            metadata={
                "dagster/row_count": frame.height,
                "validation_accuracy": float(frame.filter(pl.col("split") == "validation")["is_correct"].mean() or 0.0)
                if frame.height
                else 0.0,
                "by_split": preview(accuracy, rows=2),
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
        wrong = round_evals.filter((pl.col("split") == "validation") & ~pl.col("is_correct"))
        problem_rows = {row["problem_id"]: row for row in problems.filter(pl.col("split") == "validation").iter_rows(named=True)}
        rows = classify_wrong_answers(
            generation,
            settings.judge,
            wrong,
            problem_rows,
            ("round_key", "dataset", "student", "seed", "problem_id"),
            context.log.info,
        )
        for row in rows:
            row["failure_id"] = ":".join(str(row[k]) for k in ("round_key", "dataset", "student", "seed", "problem_id"))
        frame = frame_of(rows, RoundFailureSchema)
        counts = frame.group_by("category").len().sort("len", descending=True)
        yield dg.Output(
            frame, metadata={"dagster/row_count": frame.height, "round": key, "counts": preview(counts, rows=counts.height)}
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
