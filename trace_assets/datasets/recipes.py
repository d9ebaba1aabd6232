"""Dataset recipes over judged traces: pure functions from tables to an SFT table.

- ``G``: correct and conforming teacher traces of a style.
- ``W``: teacher traces of a style whose (declared, complete) final answer is wrong.
- ``H``: the human reference solutions.
- ``H_style``: the teacher's paraphrases of the human solutions into a style that kept the answer.
- ``mixture``: ``G`` with a fraction of examples replaced by flawed ones (a wrong-answer trace for
  the same problem, or the G trace with one calculation result deliberately changed).
Any recipe can trim what a trace says after its final answer (``trim_after_answer``) and be
subsampled to the training-token budget of another dataset (``match_tokens_with``).
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from trace_assets.experiment import DatasetRecipe

SFT_SCHEMA = {
    "dataset": pl.Utf8, "example_id": pl.Utf8, "problem_id": pl.Utf8, "prompt": pl.Utf8, "completion": pl.Utf8,
    "source": pl.Utf8, "trace_id": pl.Utf8, "style": pl.Utf8, "style_version": pl.Utf8, "is_correct": pl.Boolean,
    "conforms": pl.Boolean, "flaw": pl.Utf8, "trimmed_chars": pl.Int64, "n_tokens": pl.Int64,
}

_ANSWER_LINE = re.compile(r"^[ \t]*(?:####|\**ANSWER\**\s*:).*?-?\$?\d[^\n]*$", re.MULTILINE | re.IGNORECASE)
_RESULT = re.compile(r"(=\s*\$?)(-?\d+(?:\.\d+)?)")

TokenCounter = Callable[[str], int]


@dataclass
class RecipeReport:
    candidates: int = 0
    flawed_requested: int = 0
    flawed_made: int = 0
    token_target: int | None = None
    token_shortfall: bool = False


def stable_order_key(seed: int, dataset: str, item: str) -> str:
    """A seeded sort key that does not depend on row order, so choices are reproducible."""
    return hashlib.sha1(f"{seed}:{dataset}:{item}".encode()).hexdigest()


def choose_per_problem(candidates: pl.DataFrame, per_problem: int, seed: int, dataset: str) -> pl.DataFrame:
    """At most ``per_problem`` candidates per problem, chosen by a seeded hash of the trace id."""
    if candidates.is_empty():
        return candidates
    keyed = candidates.with_columns(
        pl.col("trace_id").map_elements(lambda t: stable_order_key(seed, dataset, t), return_dtype=pl.Utf8).alias("_order")
    )
    return (
        keyed.sort(["problem_id", "_order"]).group_by("problem_id", maintain_order=True).head(per_problem).drop("_order")
    )


def trim_after_answer(text: str) -> tuple[str, int]:
    """Cut everything after the first final-answer line; returns (text, characters removed)."""
    match = _ANSWER_LINE.search(text)
    if match is None:
        return text, 0
    kept = text[: match.end()]
    return kept, len(text) - len(kept)


def corrupt_trace(text: str, rng: random.Random) -> str | None:
    """Change one intermediate calculation result (not the final answer line); None if there is none."""
    answer = _ANSWER_LINE.search(text)
    body_end = answer.start() if answer else len(text)
    results = [m for m in _RESULT.finditer(text[:body_end])]
    if not results:
        return None
    target = rng.choice(results)
    value = float(target.group(2))
    delta = rng.choice([-1, 1]) * max(1, round(abs(value) * rng.uniform(0.1, 0.3)))
    new_value = value + delta
    new_text = f"{int(new_value)}" if new_value.is_integer() else f"{new_value:g}"
    return text[: target.start(2)] + new_text + text[target.end(2):]


def _teacher_rows(selected: pl.DataFrame, source: str) -> pl.DataFrame:
    return selected.select(
        pl.col("problem_id"), pl.col("completion"), pl.lit(source).alias("source"), pl.col("trace_id"),
        pl.col("style"), pl.col("style_version"), pl.col("is_correct"), pl.col("conforms"),
        pl.lit("none").alias("flaw"),
    )


def _human_rows(problems: pl.DataFrame) -> pl.DataFrame:
    return problems.select(
        pl.col("problem_id"), pl.col("reference_solution").alias("completion"), pl.lit("human").alias("source"),
        pl.lit(None, pl.Utf8).alias("trace_id"), pl.lit(None, pl.Utf8).alias("style"),
        pl.lit(None, pl.Utf8).alias("style_version"), pl.lit(True).alias("is_correct"),
        pl.lit(None, pl.Boolean).alias("conforms"), pl.lit("none").alias("flaw"),
    )


def _of_style(judged: pl.DataFrame, style: str | None, kind: str) -> pl.DataFrame:
    return judged.filter((pl.col("style") == style) & (pl.col("kind") == kind))


def _wrong_candidates(judged: pl.DataFrame, style: str | None) -> pl.DataFrame:
    return _of_style(judged, style, "solve").filter(
        ~pl.col("is_correct") & pl.col("extracted_answer").is_not_null() & (pl.col("finish_reason") == "stop")
    )


def _mix_flaws(
    name: str, recipe: DatasetRecipe, base: pl.DataFrame, judged: pl.DataFrame, seed: int, report: RecipeReport
) -> pl.DataFrame:
    rng = random.Random(stable_order_key(seed, name, "flaws"))
    problems = sorted(base["problem_id"].unique().to_list(), key=lambda p: stable_order_key(seed, name, p))
    n_flawed = round(recipe.flawed_fraction * len(problems))
    report.flawed_requested = n_flawed
    flawed_problems = set(problems[:n_flawed])
    wrong = choose_per_problem(_wrong_candidates(judged, recipe.style), 1, seed, name)
    wrong_by_problem = {row["problem_id"]: row for row in _teacher_rows(wrong, "teacher").iter_rows(named=True)}
    rows = []
    for row in base.iter_rows(named=True):
        if row["problem_id"] in flawed_problems:
            if recipe.flaw in ("wrong", "both") and row["problem_id"] in wrong_by_problem:
                row = {**wrong_by_problem[row["problem_id"]], "flaw": "wrong"}
                report.flawed_made += 1
            elif recipe.flaw in ("corrupted", "both"):
                corrupted = corrupt_trace(row["completion"], rng)
                if corrupted is not None:
                    row = {**row, "completion": corrupted, "flaw": "corrupted", "is_correct": False}
                    report.flawed_made += 1
        rows.append(row)
    return pl.DataFrame(rows, schema=base.schema)


def select_examples(
    name: str, recipe: DatasetRecipe, judged: pl.DataFrame, train: pl.DataFrame, seed: int, report: RecipeReport
) -> pl.DataFrame:
    """The recipe's examples before trimming and token matching."""
    if recipe.recipe == "H":
        report.candidates = train.height
        return _human_rows(train)
    if recipe.recipe == "H_style":
        candidates = _of_style(judged, recipe.style, "paraphrase").filter(pl.col("is_correct"))
        source = "paraphrase"
    elif recipe.recipe == "W":
        candidates, source = _wrong_candidates(judged, recipe.style), "teacher"
    else:  # G and mixture start from correct, conforming traces
        candidates = _of_style(judged, recipe.style, "solve").filter(pl.col("is_correct") & pl.col("conforms"))
        source = "teacher"
    report.candidates = candidates.height
    selected = _teacher_rows(choose_per_problem(candidates, recipe.per_problem, seed, name), source)
    if recipe.recipe == "mixture":
        selected = _mix_flaws(name, recipe, selected, judged, seed, report)
    return selected


def build_dataset(
    name: str,
    recipes: dict[str, DatasetRecipe],
    judged: pl.DataFrame,
    train: pl.DataFrame,
    seed: int,
    count_tokens: TokenCounter,
) -> tuple[pl.DataFrame, RecipeReport]:
    """The ``sft_examples`` rows of dataset ``name``."""
    recipe = recipes[name]
    report = RecipeReport()
    examples = select_examples(name, recipe, judged, train, seed, report)
    trimmed = [trim_after_answer(text) if recipe.trim_after_answer else (text, 0) for text in examples["completion"]]
    questions = dict(zip(train["problem_id"], train["question"]))
    examples = examples.with_columns(
        pl.Series("completion", [t for t, _ in trimmed], pl.Utf8),
        pl.Series("trimmed_chars", [n for _, n in trimmed], pl.Int64),
    )
    examples = examples.with_columns(
        pl.Series("n_tokens", [count_tokens(t) for t in examples["completion"]], pl.Int64),
        pl.col("problem_id").replace_strict(questions, return_dtype=pl.Utf8).alias("prompt"),
        pl.lit(name).alias("dataset"),
    )
    examples = examples.with_columns(
        (pl.col("dataset") + ":" + pl.col("problem_id") + ":" + pl.int_range(pl.len()).over("problem_id").cast(pl.Utf8)).alias("example_id")
    )
    if recipe.match_tokens_with is not None:
        target, _ = build_dataset(recipe.match_tokens_with, recipes, judged, train, seed, count_tokens)
        examples = match_token_budget(examples, int(target["n_tokens"].sum()), seed, name, report)
    return examples.select(list(SFT_SCHEMA)).cast(SFT_SCHEMA).sort("example_id"), report


def match_token_budget(examples: pl.DataFrame, budget: int, seed: int, name: str, report: RecipeReport) -> pl.DataFrame:
    """A seeded subsample whose training tokens do not exceed ``budget`` (all of it if it is already below)."""
    report.token_target = budget
    total = int(examples["n_tokens"].sum())
    if total <= budget:
        report.token_shortfall = total < budget
        return examples
    order = sorted(range(examples.height), key=lambda i: stable_order_key(seed, name, examples["example_id"][i]))
    kept, used = [], 0
    for index in order:
        tokens = int(examples["n_tokens"][index])
        if used + tokens <= budget:
            kept.append(index)
            used += tokens
    return examples[sorted(kept)]
