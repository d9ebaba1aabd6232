"""The closed loop on CPU: two revision rounds of a style through real Dagster runs, DuckDB and tiny
TRL training, with a scripted teacher, judge, reviser and student (test_data_pipeline's pattern)."""

import json
from pathlib import Path
from typing import ClassVar

import dagster as dg
import duckdb
import polars as pl
import pytest
import yaml

from trace_assets.demo import run_stage
from trace_assets.experiment import PROJECT_ROOT, RevisionConfig, load_experiment
from trace_assets.generation.types import Completion, GenerationStats, Sampling
from trace_assets.loop.report import ROUNDS_VIEW
from trace_assets.loop.revision import (
    ANSWER_LINES,
    REVISION_MAX_TOKENS,
    REVISION_SCHEMA,
    LeakedTestQuestion,
    check_no_test_text,
    parse_revision,
    reviser_messages,
    revision_request,
    round_style_text,
    style_diff,
    write_round_style,
)
from trace_assets.loop.rounds import ROUND_PARTITIONS, RoundOutcome, stop_reason
from trace_assets.loop.sensors import run_loop
from trace_assets.project import build_definitions
from trace_assets.resources import GenerationResource
from trace_assets.styles.library import load_style
from trace_assets_tests.test_data_pipeline import ScriptedTeacher
from trace_assets_tests.test_tasks_pipeline import ScriptedTasks, write_task_experiment


def with_logprobs(completion: Completion) -> Completion:
    """Word-sized 'tokens' with log-probabilities that differ between traces."""
    ends, values, position = [], [], 0
    for word in completion.text.split(" "):
        position += len(word) + 1
        ends.append(min(position, len(completion.text)))
        values.append(-0.05 * (1 + (len(word) * 7 + len(completion.text)) % 9))
    completion.token_logprobs, completion.token_ends = values, ends
    return completion


class LoopBackend(ScriptedTeacher):
    """The teacher solves with the right answer (and a wrong one as a second sample); the reviser's
    first reply in round 1 is cut off at the token limit, its second a valid revision without the
    answer line; in round 2 it answers prose twice (the round keeps its parent); the student is
    ScriptedTeacher's."""

    answers: ClassVar[dict[str, str]] = {}
    reviser_prompts: ClassVar[list[str]] = []

    def generate(self, spec, sampling, requests, on_batch, log=print):
        revisions = [r for r in requests if r.json_schema and "instruction" in r.json_schema["properties"]]
        solves = [
            r
            for r in requests
            if r not in revisions and not r.json_schema and r.prompt is None and r.messages[-1]["content"] in self.answers
        ]
        rest = [r for r in requests if r not in revisions and r not in solves]
        batch = []
        for request in revisions:
            text = "\n".join(m["content"] for m in request.messages)
            LoopBackend.reviser_prompts.append(text)
            call = len(LoopBackend.reviser_prompts)
            finish = "stop"
            if call == 1:  # cut off: rejected as such, then retried
                reply, finish = '{"instruction":"Solve the math word problem. Restate each quantity', "length"
            elif call == 2:  # no answer line: the system adds it
                reply = json.dumps(
                    {
                        "instruction": f"Solve the math word problem. Revision {call}: restate each quantity before "
                        "using it and check the operation.",
                        "changes": f"added a restating rule (call {call})",
                    }
                )
            else:  # prose, twice: round 2 keeps its parent
                reply = "Sure! Here is a better instruction: be careful."
            batch.append(Completion(request.key, 0, reply, finish, 10, sampling.max_tokens if finish == "length" else 20))
        for request in solves:
            answer = self.answers[request.messages[-1]["content"]]
            for index in range(sampling.n):
                value = answer if index == 0 else str(int(float(answer)) + 1)
                text = f"First I read the numbers.\nThen I combine them step by step.\n#### {value}"
                batch.append(with_logprobs(Completion(request.key, index, text, "stop", 10, len(text.split()))))
        if batch:
            on_batch(batch)
        stats = GenerationStats(completions=len(batch))
        if rest:
            scripted = super().generate(spec, sampling, rest, lambda b: on_batch([with_logprobs(c) for c in b]), log)
            stats.completions += scripted.completions
        return stats


class LoopGeneration(GenerationResource):
    def backend(self, config):
        return LoopBackend()


EXPERIMENT = """
name: loop_test
seed: 0
problems: {{source: synthetic, n_train: 12, n_test: 3, synthetic: {{min_steps: 1, max_steps: 2}}}}
styles_dir: {styles}
styles: [normal]
teacher: {{model: {model}, sampling: {{temperature: 0.7, max_tokens: 24, n: 2}}}}
judge: {{model: {model}, sampling: {{temperature: 0.0, max_tokens: 32}}}}
students: {{tiny: {{model: {model}}}}}
datasets:
  G_normal: {{recipe: G, style: normal}}
  G_step: {{recipe: G, style: normal, keep_by: step_confidence, keep_fraction: 0.5}}
  G_mean: {{recipe: G, style: normal, keep_by: mean_logprob, keep_fraction: 0.5}}
eligibility: {{require_conformance: false, require_judge_verdict: false}}
training: {{max_steps: 1, batch_size: 2, max_length: 128, eval_fraction: 0.0}}
evaluation: {{max_tokens: 16, few_shot_k: 0}}
revision: {{styles: [normal], rounds: 2, validation_fraction: 0.25, stop_after: 2, max_attempts: 2}}
"""


def loop_definitions(tmp_path, model):
    import shutil

    styles = tmp_path / "styles"
    shutil.copytree(PROJECT_ROOT / "styles", styles)
    path = tmp_path / "experiment.yaml"
    path.write_text(EXPERIMENT.format(styles=styles, model=model))
    experiment = load_experiment(path)
    defs = build_definitions(experiment, tmp_path / "data")
    resources = dict(defs.resources)
    resources["generation"] = LoopGeneration(gpu=resources["gpu"], data=resources["data"])
    return dg.Definitions(assets=list(defs.assets), resources=resources, sensors=list(defs.sensors))


def test_two_revision_rounds_with_lineage_and_no_test_text_in_reviser_prompts(tmp_path, tiny_model, instance):
    LoopBackend.reviser_prompts.clear()
    defs = loop_definitions(tmp_path, tiny_model)
    run_stage(defs, instance, ["problems"])
    database = tmp_path / "data" / "trace_assets.duckdb"
    with duckdb.connect(str(database), read_only=True) as db:
        problems = db.sql("SELECT * FROM problems").pl()
    LoopBackend.answers = dict(zip(problems["question"], problems["answer"]))
    assert set(problems["split"]) == {"train", "validation", "test"}

    ran = run_loop(defs, instance, log=lambda _: None)
    assert ran == ["normal_r0", "normal_r1", "normal_r2"]
    run_stage(defs, instance, ["rounds_report"])

    with duckdb.connect(str(database), read_only=True) as db:
        styles = db.sql("SELECT * FROM round_styles ORDER BY round").pl()
        evals = db.sql("SELECT * FROM round_evals").pl()
        failures = db.sql("SELECT * FROM round_failures").pl()
        examples = db.sql("SELECT * FROM round_examples").pl()
        lineage = db.sql(f"{ROUNDS_VIEW} ORDER BY depth, category").pl().filter(pl.col("of_round") == "normal_r2")
    # round 1 is a revision, round 2 keeps it; both with lineage to their parents and the failures shown
    assert styles["round"].to_list() == [0, 1, 2] and styles["status"].to_list() == ["original", "revised", "kept_parent"]
    assert styles["parent_key"].to_list() == [None, "normal_r0", "normal_r1"]
    assert styles["parent_version"].to_list()[1:] == styles["version"].to_list()[:2]
    assert styles["version"][2] == styles["version"][1] != styles["version"][0]
    assert styles["attempts"].to_list() == [0, 2, 2]
    assert "attempt 1: the reply was cut off at the token limit (1200 tokens)" in styles["note"][1]
    assert "not a JSON object" in styles["note"][2] and "kept the parent's text" in styles["note"][2]
    # the revision left out the answer line and the system appended it; the kept round is its parent byte for byte
    assert styles["instruction"][1].endswith(ANSWER_LINES["hash"] + "\n")
    assert styles["instruction"][2] == styles["instruction"][1]
    assert Path(styles["path"][2]).read_bytes() == Path(styles["path"][1]).read_bytes()
    original = (tmp_path / "styles" / "normal.yaml").read_text(encoding="utf-8")
    assert Path(styles["path"][0]).read_text(encoding="utf-8") == original
    for row in styles.filter(pl.col("round") > 0).iter_rows(named=True):
        shown = json.loads(row["motivating_failures"])
        parent_failures = failures.filter(pl.col("round_key") == row["parent_key"])
        assert shown and set(shown) <= set(parent_failures["failure_id"])
        # the written file is a style that loads, keeps the answer format, and is what the row says
        written = load_style(Path(row["path"]).parent, Path(row["path"]).stem)
        assert written.version == row["version"] and written.spec.answer_format == "hash"
        assert Path(row["path"]).name == f"normal-r{row['round']}.yaml"
    # one SQL query: the round-2 style's parent chain and the failure examples each revision was given
    assert lineage.select("round_key").unique(maintain_order=True)["round_key"].to_list() == [
        "normal_r2",
        "normal_r1",
        "normal_r0",
    ]
    given = lineage.filter(pl.col("failure_id").is_not_null())
    assert set(given["round_key"]) == {"normal_r2", "normal_r1"} and given["category"].null_count() == 0

    # failures are classified on validation only; the test split is evaluated for the report
    validation = set(problems.filter(pl.col("split") == "validation")["problem_id"])
    assert set(failures["problem_id"]) <= validation
    assert set(evals["split"]) == {"validation", "test"} and set(evals["round_key"]) == {"normal_r0", "normal_r1", "normal_r2"}
    # the test set never appears in a reviser prompt
    test_questions = problems.filter(pl.col("split") == "test")["question"].to_list()
    assert len(LoopBackend.reviser_prompts) == 4
    for prompt in LoopBackend.reviser_prompts:
        assert not any(q.strip() in prompt for q in test_questions)
    assert any(q.strip() in LoopBackend.reviser_prompts[-1] for q in problems.filter(pl.col("split") == "validation")["question"])
    # every round rebuilt the same recipes; the confidence recipe and its control are the same size
    for key, group in examples.group_by("round_key"):
        sizes = dict(group.group_by("dataset").len().iter_rows())
        assert sizes["G_step"] == sizes["G_mean"] > 0 and set(sizes) == {"G_normal", "G_step", "G_mean"}, key
    report = (tmp_path / "data" / "report" / "rounds.md").read_text()
    assert "## Accuracy by round" in report and "```diff" in report and "Revision 2" in report
    # the loop's finding on test: the last round against round 0, paired, one row per dataset x student
    test_section = report.split("## Test: the last round against round 0")[1].split("## Revisions")[0]
    for dataset in ("G_normal", "G_step", "G_mean"):
        assert f"| {dataset} | tiny | normal_r2 | normal_r0 |" in test_section
    kept_section = report.split("### normal_r2 (kept_parent)")[1]
    assert kept_section.split("```diff\n")[1].startswith("(no change)\n```")
    # the revision's diff shows the instruction's lines and nothing else of the file
    revised_diff = report.split("### normal_r1 (revised)")[1].split("```diff\n")[1].split("```")[0]
    assert [line for line in revised_diff.splitlines()[2:] if line[:1] in "+-"] == [
        *[f"-  {line}" for line in yaml.safe_load(original)["instruction"].splitlines()],
        *[f"+  {line}" for line in styles["instruction"][1].splitlines()],
    ]
    assert (tmp_path / "data" / "report" / "accuracy_by_round.png").stat().st_size > 1000


def test_a_reviser_prompt_with_a_test_question_is_refused():
    with pytest.raises(LeakedTestQuestion):
        check_no_test_text([{"role": "user", "content": "Problem: Ann has 3 cats. How many?"}], ["Ann has 3 cats. How many?"])


def reply(text: str, finish_reason: str = "stop", output_tokens: int = 40) -> Completion:
    return Completion("k", 0, text, finish_reason, 100, output_tokens)


NEW_GUIDANCE = "Restate each quantity before you use it, and say which operation combines them and why."


@pytest.mark.parametrize(
    "completion, reason",
    [
        (None, "no reply"),
        (reply("Sure! Here is a better instruction: be careful."), "not a JSON object"),
        # a guided reply cut off by max_tokens: named as such, not as "not JSON"
        (reply('{"instruction":"Solve the problem. Restate every quantity', "length", 160), "cut off at the token limit (160"),
        (reply('{"instruction":"Solve the problem. Restate every quantity'), "incomplete or malformed"),
        (reply('{"changes": "x"}'), "no instruction"),
        (
            reply(
                '{"instruction": "Solve the math word problem. Reason step by step, then give the final answer on its '
                'own last\\nline in the form \\"#### <number>\\"."}'
            ),
            "unchanged",
        ),
        (reply('{"instruction": "<the full instruction>", "changes": "<one sentence>"}'), "too short"),
        (reply('{"instruction": "' + "x" * 7000 + ' ####"}'), "characters, over"),
        # what SmolLM2-135M wrote in a real CPU run of experiments/loop.yaml (accepted before this check)
        (
            reply(
                json.dumps(
                    {"instruction": "Teach the steps. " + "The guidance is a bit different than the original instructions. " * 20}
                )
            ),
            "repeats itself",
        ),
    ],
)
def test_unusable_revisions_are_rejected_with_a_reason(completion, reason):
    parent = load_style(PROJECT_ROOT / "styles", "normal")
    outcome = parse_revision(completion, parent)
    assert outcome.spec is None and reason in outcome.reason


@pytest.mark.parametrize("style", ["normal", "titanium"])
def test_a_revision_without_the_answer_line_is_accepted_with_the_systems_line_appended(style):
    parent = load_style(PROJECT_ROOT / "styles", style)
    outcome = parse_revision(reply(json.dumps({"instruction": NEW_GUIDANCE, "changes": "restate quantities"})), parent)
    assert outcome.spec is not None, outcome.reason
    assert outcome.spec.instruction == f"{NEW_GUIDANCE}\n{ANSWER_LINES[parent.spec.answer_format]}\n"
    assert outcome.reason == "restate quantities"
    # everything but the instruction is the parent's
    assert outcome.spec.model_dump(exclude={"instruction"}) == parent.spec.model_dump(exclude={"instruction"})
    # the answer line is the system's: it ends every revision, whatever the reviser wrote about the answer form
    # (the first GPU loop's 135M reviser wrote a cut-off sentence mentioning the marker, which told the teacher
    # nothing about how to end), and the reviser's own sentences stay as written
    marker = "####" if style == "normal" else "ANSWER:"
    line = ANSWER_LINES[parent.spec.answer_format]
    for own in (
        f"{NEW_GUIDANCE}\nFinish with {marker} and the number.",
        f"Correctly avoid the last line: {marker} (You must add a {NEW_GUIDANCE}",
    ):
        kept = parse_revision(reply(json.dumps({"instruction": own, "changes": "x"})), parent)
        assert kept.spec is not None and kept.spec.instruction == f"{own}\n{line}\n"
    # a reviser that ends with the system's own line does not get it twice
    ended = parse_revision(reply(json.dumps({"instruction": f"{NEW_GUIDANCE}\n{line}"})), parent)
    assert ended.spec is not None and ended.spec.instruction == f"{NEW_GUIDANCE}\n{line}\n"
    # the parent echoed back, with or without the system's line, is no revision; one new sentence is
    for echo in (parent.spec.instruction, f"{parent.spec.instruction.rstrip()}\n{line}"):
        assert parse_revision(reply(json.dumps({"instruction": echo})), parent).reason == "the instruction is unchanged"
    wider = parse_revision(reply(json.dumps({"instruction": f"{parent.spec.instruction.rstrip()} {NEW_GUIDANCE}"})), parent)
    assert wider.spec is not None and parent.spec.instruction.split()[-1] in wider.spec.instruction  # nothing of it cut


def test_the_reviser_is_told_the_answer_line_is_the_systems_and_gets_room_for_its_json():
    parent = load_style(PROJECT_ROOT / "styles", "normal")
    prompt = reviser_messages(parent, {"arithmetic_slip": 1}, [])[-1]["content"]
    assert ANSWER_LINES["hash"] in prompt and "the system itself ends the instruction" in prompt
    teacher = Sampling(temperature=0.5, max_tokens=160, n=4, seed=3)
    sampling, request = revision_request([{"role": "user", "content": prompt}], "m", teacher, attempt=1)
    assert sampling.max_tokens == REVISION_MAX_TOKENS and sampling.n == 1 and sampling.seed == 4
    assert request.json_schema == REVISION_SCHEMA and request.key != revision_request(request.messages, "m", teacher, 0)[1].key
    # the grammar closes the JSON within the token floor: both strings bounded, nothing else allowed
    bounded = sum(field["maxLength"] for field in REVISION_SCHEMA["properties"].values())
    assert REVISION_SCHEMA["additionalProperties"] is False and bounded // 3 < REVISION_MAX_TOKENS
    large = Sampling(max_tokens=5000)
    assert revision_request([], "m", large, 0)[0].max_tokens == 5000  # an explicit larger budget is kept


def test_a_round_after_one_that_trained_nothing_revises_without_failures(tmp_path):
    """A revision whose traces kept no right answer leaves its round's datasets empty: nothing trained,
    no answers, no failures. The next round goes on from its text and the reviser is told why there are
    no failures (not "materialize the parent first", which stopped the CPU rehearsal of gpu_loop.yaml);
    the rounds table shows the empty round, without accuracy."""
    from trace_assets.loop.assets import parent_failures
    from trace_assets.loop.report import rounds_table
    from trace_assets.loop.revision import NOTHING_TRAINED
    from trace_assets.storage import connect

    database = tmp_path / "loop.duckdb"
    with connect(database) as db:
        db.execute("CREATE TABLE round_checkpoints (round_key VARCHAR, status VARCHAR)")
        db.execute("INSERT INTO round_checkpoints VALUES ('normal_r1', 'skipped_empty')")
    assert parent_failures(database, "normal_r1", pl.DataFrame()) is None
    with pytest.raises(RuntimeError, match="normal_r2 has no evaluations or failures yet"):
        parent_failures(database, "normal_r2", pl.DataFrame())  # not run at all: still an error

    parent = load_style(PROJECT_ROOT / "styles", "normal")
    prompt = reviser_messages(parent, {}, [], trained=False)[-1]["content"]
    assert NOTHING_TRAINED in prompt and NOTHING_TRAINED not in reviser_messages(parent, {}, [])[-1]["content"]

    styles = pl.DataFrame(
        {"style": ["normal"] * 2, "round": [0, 1], "round_key": ["normal_r0", "normal_r1"], "version": ["a", "b"]}
    ).with_columns(pl.Series("parent_key", [None, "normal_r0"], pl.Utf8), pl.Series("status", ["original", "revised"]))
    evals = pl.DataFrame(
        {
            "round_key": ["normal_r0"] * 4,
            "split": ["validation", "validation", "test", "test"],
            "dataset": ["G_normal"] * 4,
            "student": ["s"] * 4,
            "seed": [0] * 4,
            "problem_id": ["p1", "p2", "t1", "t2"],
            "is_correct": [True, False, True, True],
        }
    )
    table = rounds_table(styles, evals)
    assert table["round_key"].to_list() == ["normal_r0", "normal_r1"]
    assert table["validation_accuracy"].to_list() == [0.5, None] and table["dataset"].to_list() == ["G_normal", None]


@pytest.mark.parametrize("style", ["normal", "gold", "diamond", "titanium"])
def test_a_kept_round_is_its_parents_text_and_a_revised_round_changes_only_the_instruction(tmp_path, style):
    parent = load_style(PROJECT_ROOT / "styles", style)
    parent_text = parent.path.read_text(encoding="utf-8")
    kept = write_round_style(tmp_path, style, 1, parent_text, parent.spec)
    assert kept.path.read_bytes() == parent.path.read_bytes() and kept.version == parent.version
    assert style_diff(parent_text, kept.path.read_text(encoding="utf-8"), "r0", "r1") == ""

    revised_spec = parse_revision(reply(json.dumps({"instruction": NEW_GUIDANCE, "changes": "x"})), parent).spec
    revised = write_round_style(tmp_path, style, 2, parent_text, revised_spec)
    assert revised.spec == revised_spec
    changed = [
        line[1:]
        for line in style_diff(parent_text, revised.path.read_text(encoding="utf-8"), "r0", "r2").splitlines()[2:]
        if line[:1] in "+-"
    ]
    instruction_lines = {line.strip() for line in parent.spec.instruction.splitlines()} | {
        line.strip() for line in revised_spec.instruction.splitlines()
    }
    # only the instruction's lines changed (the key line itself stays); the rest is byte for byte the parent's
    assert changed and all(line.strip() in instruction_lines for line in changed), changed
    # a revision of the revision: the same in-place edit, from a file the loop wrote itself
    again = round_style_text(revised.path.read_text(encoding="utf-8"), parent.spec)
    assert again == parent_text


def test_a_parent_file_that_cannot_be_edited_in_place_is_written_whole_in_its_own_key_order(tmp_path):
    parent = load_style(PROJECT_ROOT / "styles", "normal")
    long_description = "A description long enough that a width-limited YAML dump would have wrapped it " * 3
    flow = json.dumps(
        {
            "rubric": [r.model_dump() for r in parent.spec.rubric],
            "description": long_description.strip(),
            "instruction": parent.spec.instruction,
            "answer_format": "hash",
        }
    )
    spec = parent.spec.model_copy(
        update={"instruction": NEW_GUIDANCE + "\n", "description": long_description.strip(), "format_checks": [], "example": None}
    )
    text = round_style_text(flow, spec)
    assert [line.split(":")[0] for line in text.splitlines() if line[:1].isalpha()] == [
        "rubric",
        "description",
        "instruction",
        "answer_format",
    ]
    assert long_description.strip() in text  # on one line: never rewrapped
    assert write_round_style(tmp_path, "normal", 1, flow, spec).spec == spec


def test_stop_rule():
    config = RevisionConfig(styles=["normal"], rounds=3, stop_after=2, gpu_hours=10)
    flat = [RoundOutcome(0, None), RoundOutcome(1, False)]
    assert stop_reason(flat, config, 1.0) is None
    assert "without a distinguishable gain" in stop_reason([*flat, RoundOutcome(2, False)], config, 1.0)
    assert stop_reason([*flat, RoundOutcome(2, True)], config, 1.0) is None
    assert "rounds done" in stop_reason([*flat, RoundOutcome(2, True), RoundOutcome(3, True)], config, 1.0)
    assert "budget" in stop_reason(flat, config, 4.0)  # round 2 would bring the chain to 3 x 4 h > 10 h


def test_loop_definitions_load_as_dagster_dev_loads_them(tmp_path, tiny_model):
    defs = loop_definitions(tmp_path, tiny_model)
    graph = defs.resolve_asset_graph()
    for name in ("round_styles", "round_traces", "round_examples", "round_checkpoints", "round_evals", "round_failures"):
        node = graph.get(dg.AssetKey(name))
        assert node.group_name == "loop" and node.description
        assert isinstance(node.partitions_def, dg.DynamicPartitionsDefinition) and node.partitions_def.name == "style_rounds"
        assert node.metadata["dagster/column_schema"].columns
    defs.get_repository_def().load_all_definitions()
    assert defs.resolve_sensor_def("next_round").job_name == "style_round"


class CountdownLoopBackend(ScriptedTasks):
    """ScriptedTasks, with the teacher's right answers written "#### (<expression>)": Countdown's form,
    which GSM8K's answer_line check ("#### <number>") refuses; records the students' prompts."""

    student_prompts: ClassVar[list[str]] = []

    def generate(self, spec, sampling, requests, on_batch, log=print):
        CountdownLoopBackend.student_prompts += [r.prompt for r in requests if r.prompt is not None]

        def parenthesized(batch):
            for completion in batch:
                head, marker, expression = completion.text.rpartition("#### ")
                if marker and expression and not expression.startswith("("):
                    completion.text = f"{head}#### ({expression.strip()})"
            on_batch(batch)

        return super().generate(spec, sampling, requests, parenthesized, log)


class CountdownLoopGeneration(GenerationResource):
    def backend(self, config):
        return CountdownLoopBackend()


def test_a_loop_on_countdown_is_judged_by_countdowns_checker_and_evaluated_few_shot(tmp_path, tiny_model, instance):
    """The loop's round_traces read answers with the problems' task, as judged_traces does (a trace
    ending "#### (3 + 4) * 2" declares a Countdown answer; GSM8K's answer_line rule would fail it), and
    round_evals prompts as evaluation.prompt_format says, as eval_results does."""
    from trace_assets.styles.library import failed_format_checks

    path = write_task_experiment(tmp_path, tiny_model, ["countdown"])
    text = path.read_text().replace("few_shot_k: 1}", "few_shot_k: 1, prompt_format: few_shot}")
    text += "revision: {styles: [normal], rounds: 1, validation_fraction: 0.25, stop_after: 1, max_attempts: 1}\n"
    path.write_text(text)
    defs = build_definitions(load_experiment(path), tmp_path / "data")
    resources = dict(defs.resources)
    resources["generation"] = CountdownLoopGeneration(gpu=resources["gpu"], data=resources["data"])
    defs = dg.Definitions(assets=list(defs.assets), resources=resources, sensors=list(defs.sensors))
    run_stage(defs, instance, ["problems"])
    database = tmp_path / "data" / "trace_assets.duckdb"
    with duckdb.connect(str(database), read_only=True) as db:
        problems = db.sql("SELECT * FROM problems").pl()
    ScriptedTasks.problems = {row["question"]: row for row in problems.iter_rows(named=True)}
    CountdownLoopBackend.student_prompts.clear()
    # round 0 started by an earlier call that was cut off (a device time limit): run again, not waited on
    instance.add_dynamic_partitions(ROUND_PARTITIONS, ["normal_r0"])
    lines, steps, per_round = [], {}, {}

    ran = run_loop(
        defs, instance, log=lines.append, step_seconds=steps, on_round=lambda *call: per_round.setdefault(call[0], call[1:])
    )
    assert ran == ["normal_r0", "normal_r1"]
    assert lines[0] == "loop: running round normal_r0 again (started in an earlier call, not finished)"
    assert set(steps) == {"round_styles", "round_traces", "round_examples", "round_checkpoints", "round_evals", "round_failures"}
    assert all(seconds > 0 for seconds in steps.values())  # both rounds' own step seconds, for dry-run's comparison
    # each round's own, as it ended, and whether it was run again: together they are the totals
    assert list(per_round) == ran and set(per_round["normal_r1"][0]) == set(steps)
    assert [again for _, again in per_round.values()] == [True, False]  # r0 was cut off in an earlier call
    assert sum(sum(seconds.values()) for seconds, _ in per_round.values()) == pytest.approx(sum(steps.values()))

    with duckdb.connect(str(database), read_only=True) as db:
        traces = db.sql("SELECT * FROM round_traces WHERE kind = 'solve'").pl()
        evals = db.sql("SELECT * FROM round_evals").pl()
    style = load_style(tmp_path / "styles", "normal")
    refused_by_gsm8k = [t for t in traces["completion"] if "answer_line" in failed_format_checks(t, style.spec.format_checks)]
    assert traces.height and len(refused_by_gsm8k) == traces.height  # every trace needs the task's reading to pass
    assert traces["rules_pass"].all() and set(traces["rules_failed"]) == {""}
    assert traces["is_correct"].any() and not traces["is_correct"].all()  # Countdown's verifier scored them
    # few-shot: every student prompt shows a train problem (never a validation or test one) before its question
    train = problems.filter(pl.col("split") == "train")["question"].to_list()
    held_out = problems.filter(pl.col("split") != "train")["question"].to_list()
    assert set(evals["split"]) == {"validation", "test"} and CountdownLoopBackend.student_prompts
    for prompt in CountdownLoopBackend.student_prompts:
        assert any(question in prompt for question in train)
        assert sum(question in prompt for question in held_out) == 1
