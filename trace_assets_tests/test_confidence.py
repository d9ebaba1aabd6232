"""Step-level confidence, the confidence recipes and their control, early stopping, and log-probabilities
through the generation cache (old rows without them included)."""

import math

import polars as pl
import pytest

from trace_assets.datasets.recipes import build_datasets
from trace_assets.experiment import PROJECT_ROOT, ComparisonsConfig, DatasetRecipe, EarlyStopConfig, EligibilityPolicy
from trace_assets.generation.cache_store import cached_completions, store_completions
from trace_assets.generation.cached import CachedGeneration
from trace_assets.generation.types import Completion, GenerationStats, ModelSpec, Sampling
from trace_assets.problems.validation import carve_validation
from trace_assets.storage import connect
from trace_assets.styles.library import load_style
from trace_assets.traces.build import teacher_requests
from trace_assets.traces.confidence import lowest_window_mean, step_spans, trace_confidence
from trace_assets.traces.sampling import sample_traces
from trace_assets_tests.test_recipes import problem, right, trace, train_frame, words


def tokens_of(text: str, logprob_of) -> tuple[list[float], list[int]]:
    """Whitespace-separated 'tokens' (each with its leading space) and their log-probabilities."""
    values, ends, position = [], [], 0
    for piece in text.replace("\n", " \n ").split(" "):
        if not piece:
            position += 1
            continue
        start = text.find(piece, position)
        values.append(logprob_of(piece))
        ends.append(start + len(piece))
        position = start + len(piece)
    return values, ends


def test_steps_are_lines_and_sentences():
    text = "First I add 2.5 and 3. Then I double it.\n\nSo 11 in all.\n#### 11"
    spans = [text[a:b] for a, b in step_spans(text)]
    assert spans == ["First I add 2.5 and 3.", "Then I double it.", "So 11 in all.", "#### 11"]


def test_one_unsure_stretch_lowers_step_confidence_more_than_the_mean():
    assert lowest_window_mean([0, 0, -4, -4, 0, 0], 2) == -4
    assert lowest_window_mean([-1, -3], 8) == -2  # a step shorter than the window: its mean
    fluent = "Ava has 12 apples.\nShe finds 3 more so 15.\nDoubling gives 30.\n#### 30"
    unsure_word = "more"
    values, ends = tokens_of(fluent, lambda piece: -3.0 if piece == unsure_word else -0.2)
    steady_values = [sum(values) / len(values)] * len(values)  # the same mean, spread evenly
    spiky = trace_confidence(fluent, values, ends, window=2)
    steady = trace_confidence(fluent, steady_values, ends, window=2)
    assert spiky.mean == pytest.approx(steady.mean)
    assert spiky.step < steady.step  # the step-level score sees the unsure stretch; the mean does not
    assert fluent.splitlines()[spiky.weakest_step] == "She finds 3 more so 15."
    assert spiky.steps == 4


@pytest.mark.parametrize(
    "logprobs, ends",
    [(None, None), ([], []), ([-0.1, -0.2], [3]), ([-0.1, math.nan], [1, 2]), ([-0.1], None)],
)
def test_missing_or_malformed_logprobs_give_no_confidence(logprobs, ends):
    confidence = trace_confidence("a b", logprobs, ends)
    assert confidence.step is None and confidence.mean is None


def confident_traces(n_problems: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Two right traces per problem; step and global confidence disagree on their order."""
    problems = [problem(i) for i in range(n_problems)]
    rows = []
    for i, p in enumerate(problems):
        for sample in range(2):
            rows.append(
                trace(
                    f"t{i}-{sample}",
                    p,
                    right(p, sample),
                    step_confidence=-0.1 * ((i * 7 + sample) % 11),
                    mean_logprob=-0.1 * ((i * 3 + 5 * sample) % 13),
                    extracted_answer=p["answer"],
                )
            )
    rows.append(trace("nolog", problems[0], right(problems[0], 9), step_confidence=None, mean_logprob=None))
    return pl.DataFrame(rows), train_frame(problems)


def test_confidence_recipe_and_its_control_build_datasets_of_equal_size():
    judged, train = confident_traces(13)
    recipes = {
        "G": DatasetRecipe(recipe="G", style="normal"),
        "G_step": DatasetRecipe(recipe="G", style="normal", keep_by="step_confidence", keep_fraction=0.4),
        "G_mean": DatasetRecipe(recipe="G", style="normal", keep_by="mean_logprob", keep_fraction=0.4),
    }
    build = build_datasets(
        recipes, EligibilityPolicy(require_judge_verdict=False), judged, train, 0, {"s": words}, {"normal": "hash"}
    )
    sizes = build.summary.select("dataset", "examples").rows()
    assert dict(sizes) == {"G": 13, "G_step": 5, "G_mean": 5}  # round(0.4 x 13) each
    examples = build.examples
    step = examples.filter(pl.col("dataset") == "G_step")
    mean = examples.filter(pl.col("dataset") == "G_mean")
    assert set(step["trace_id"]) != set(mean["trace_id"])  # the two scores choose differently
    # The step arm kept its problems' most step-confident traces, and the most confident problems.
    scores = dict(zip(judged["trace_id"], judged["step_confidence"]))
    kept = sorted(scores[t] for t in step["trace_id"])
    best_per_problem = (
        judged.filter(pl.col("step_confidence").is_not_null()).group_by("problem_id").agg(pl.col("step_confidence").max())
    )
    assert kept == sorted(best_per_problem["step_confidence"].sort(descending=True).head(5).to_list())
    reasons = build.exclusions.filter(pl.col("dataset") == "G_step").group_by("reason").len()
    assert dict(reasons.rows())["no_logprobs"] == 1 and dict(reasons.rows())["low_confidence"] == 8
    # in separate comparison groups too (no intersection), the arm and its control stay equal
    apart = build_datasets(
        recipes,
        EligibilityPolicy(require_judge_verdict=False),
        judged,
        train,
        0,
        {"s": words},
        {"normal": "hash"},
        ComparisonsConfig(intersect_problems=False),
    )
    assert (
        dict(apart.summary.select("dataset", "examples").rows())["G_step"]
        == 5
        == dict(apart.summary.select("dataset", "examples").rows())["G_mean"]
    )


def test_keep_by_is_checked():
    with pytest.raises(ValueError, match="go together"):
        DatasetRecipe(recipe="G", style="normal", keep_fraction=0.5)
    with pytest.raises(ValueError, match="applies to recipes G, W and H_style"):
        DatasetRecipe(recipe="H", keep_by="step_confidence", keep_fraction=0.5)


def test_validation_is_a_seeded_share_of_train_never_test():
    frame = pl.DataFrame({"problem_id": [f"p_{i:012x}" for i in range(200)], "split": ["train"] * 150 + ["test"] * 50})
    carved = carve_validation(frame, 0.2, seed=3)
    validation = set(carved.filter(pl.col("split") == "validation")["problem_id"])
    assert 15 <= len(validation) <= 45
    assert validation <= set(frame.filter(pl.col("split") == "train")["problem_id"])
    assert carved.filter(pl.col("split") == "test").height == 50
    # membership depends on the problem and the seed, not on the other rows or their order
    subset = frame.reverse().head(120)
    again = carve_validation(subset, 0.2, seed=3)
    assert set(again.filter(pl.col("split") == "validation")["problem_id"]) == validation & set(subset["problem_id"])
    assert set(carve_validation(frame, 0.2, seed=4).filter(pl.col("split") == "validation")["problem_id"]) != validation
    tiny = carve_validation(frame.head(2), 0.01, seed=0)
    assert (tiny["split"] == "validation").sum() == 1  # at least one, never all


def test_logprobs_go_through_the_cache_and_old_rows_still_serve(tmp_path):
    database = tmp_path / "trace_assets.duckdb"
    store_completions(database, "m", [Completion("k1", 0, "a b", "stop", 3, 2, token_logprobs=[-0.5, -0.25], token_ends=[1, 3])])
    with connect(database) as db:  # a row written before log-probabilities were recorded
        db.execute(
            "INSERT INTO generation_cache (request_hash, sample_index, model, text, finish_reason, prompt_tokens, output_tokens) "
            "VALUES ('k0', 0, 'm', 'old', 'stop', 1, 1)"
        )
    cached = cached_completions(database, ["k0", "k1"])
    assert cached[("k1", 0)].token_logprobs == [-0.5, -0.25] and cached[("k1", 0)].token_ends == [1, 3]
    assert cached[("k0", 0)].text == "old" and cached[("k0", 0)].token_logprobs is None


def test_early_stop_ends_sampling_of_confident_problems_and_counts_what_it_saved():
    style = load_style(PROJECT_ROOT / "styles", "normal")
    problems = pl.DataFrame(
        [{k: problem(i)[k] for k in ("problem_id", "question", "reference_solution", "answer")} for i in range(4)]
    )
    sampling = Sampling(temperature=0.7, n=4, seed=10)
    planned = teacher_requests([style], problems, "m", sampling)
    seen: list[tuple[int, int]] = []

    def generate(spec, wave_sampling, requests, log):
        # problems p00 and p01 are answered confidently from the first sample on; the others never are
        seen.append((wave_sampling.seed, len(requests)))
        completions = {}
        for request in requests:
            confident = (
                "Ava has 10 apples" in request.messages[-1]["content"] or "Ava has 11 apples" in request.messages[-1]["content"]
            )
            value = -0.1 if confident else -3.0
            completions[(request.key, 0)] = Completion(
                request.key, 0, "x y\n#### 1", "stop", 1, 3, token_logprobs=[value] * 3, token_ends=[1, 3, 10]
            )
        return CachedGeneration(completions, len(requests), 0, 0, GenerationStats())

    rule = EarlyStopConfig(confident_traces=1, min_step_confidence=-1.0)
    result = sample_traces(generate, ModelSpec("m", "m"), sampling, planned, "m", 8, rule, lambda _: None)
    assert seen == [(10, 4), (11, 2), (12, 2), (13, 2)]  # a wave per sample, seeded, only open problems
    assert result.saved == 2 * 3 and result.waves == 4
    assert result.frame.height == 4 + 2 * 3
    assert result.frame["trace_id"].n_unique() == result.frame.height
    assert sorted(result.frame.filter(pl.col("problem_id") == problems["problem_id"][2])["sample_index"]) == [0, 1, 2, 3]
    assert result.metadata()["generations_saved_by_early_stop"] == 6


def test_the_report_compares_each_confidence_arm_with_its_control():
    from trace_assets.reporting.report import confidence_section

    rows = []
    for dataset, correct in (("G_step", 14), ("G_mean", 9)):
        for seed in (0, 1):
            for i in range(20):
                rows.append({"dataset": dataset, "student": "s", "seed": seed, "problem_id": f"p{i}", "is_correct": i < correct})
    examples = pl.DataFrame({"dataset": ["G_step"] * 5 + ["G_mean"] * 5})
    text = "\n".join(confidence_section([("G_step", "G_mean")], pl.DataFrame(rows), examples))
    assert "| G_step | G_mean | 5 | 5 |" in text and "0.250" in text
    assert confidence_section([], pl.DataFrame(rows), examples) == []
