"""Dataset recipes: judged teacher traces -> the SFT datasets of a whole experiment, in one pure call.

``build_datasets`` builds every dataset (arm) together, because fairness is a property of the set:

1. Eligibility (``selection.policy_reason``): one policy for every synthetic arm: not truncated, a
   final answer declared in the style's own format and never changed, a parseable judge verdict and
   (if required) conformance. The arm then asks for a right answer (G, mixture, H_style) or a wrong
   one (W); H_style paraphrases must also contain the human solution's intermediate quantities. An arm
   that excludes arithmetic slips (its own ``exclude_arithmetic_slips``, else the policy's) finally drops
   traces with a calculation whose stated result is wrong (``reporting.failures.arithmetic_slips``).
2. Selection (``selection.rank_key``): the samples of each (seed, style, kind, problem) have one fixed
   ranking; an arm takes the best-ranked eligible ones. Dataset names play no part, so two arms of one
   style take the same traces (a trimmed arm and its source, every mixture and G).
3. Common problems: the arms of a comparison group keep only the problems where every non-empty arm
   of the group has an eligible trace, task by task (an arm with none of a task's problems, such as a
   'complete' mixture on MBPP, is left out of that task's intersection); what each arm loses is recorded.
4. Mixtures: flawed problems are a prefix of one seeded problem order, so the flawed set of a smaller
   fraction is inside that of a larger one and the correct part is the same traces throughout. The
   flawed version is the style's wrong trace (``wrong``) or the correct trace corrupted (``corrupted``:
   its final step; ``complete``: every step, or ``flaw_level`` of them: ``flaws.degrade``).
5. Trimming (``trimming``): cut after the conclusion, or (control) remove as many tokens from a random
   span of the reasoning before it.
6. Token matching (``matching``): per student, under its own tokenizer, the larger datasets of a group
   are subsampled to the smallest; failure to get within the tolerance is an error.

Every trace or problem an arm did not use is a ``dataset_exclusions`` row with its reason.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property

import polars as pl

from trace_assets.answers import numbers_match
from trace_assets.datasets.flaws import corrupt_final_step, degrade, is_flawed_version
from trace_assets.datasets.matching import TokenBudgetError, match_token_totals
from trace_assets.datasets.schemas import EXCLUSION_REASONS, DatasetExclusionSchema, SftExampleSchema, student_rows
from trace_assets.datasets.selection import (
    AnswerFormat,
    Declaration,
    answer_line,
    declared_answers,
    paraphrase_coverage,
    policy_reason,
    problem_key,
    rank_key,
    task_declaration,
)
from trace_assets.datasets.trimming import find_conclusion, remove_random_span, trim_after_conclusion
from trace_assets.experiment import ComparisonsConfig, DatasetRecipe, EligibilityPolicy, TokenMatchGroup
from trace_assets.reporting.failures import arithmetic_slips
from trace_assets.tables import polars_schema
from trace_assets.tasks import task_of

__all__ = [
    "EXCLUSION_SCHEMA",
    "SFT_SCHEMA",
    "SUMMARY_SCHEMA",
    "DatasetBuild",
    "TokenBudgetError",
    "build_datasets",
    "comparison_groups",
    "datasets_affected_by_style",
    "exclusion_counts",
    "student_rows",
]

TokenCounter = Callable[[str], int]

SFT_SCHEMA = polars_schema(SftExampleSchema)
EXCLUSION_SCHEMA = polars_schema(DatasetExclusionSchema)
SUMMARY_SCHEMA = {
    "dataset": pl.Utf8,
    "student": pl.Utf8,
    "recipe": pl.Utf8,
    "style": pl.Utf8,
    "candidates": pl.Int64,
    "eligible_problems": pl.Int64,
    "problems_lost": pl.Int64,
    "problems": pl.Int64,
    "examples": pl.Int64,
    "flawed": pl.Int64,
    "tokens": pl.Int64,
    "removed_tokens": pl.Int64,
    "token_target": pl.Int64,
    "matched_to": pl.Utf8,
}
JUDGED_COLUMNS = (
    "trace_id",
    "problem_id",
    "style",
    "kind",
    "style_version",
    "completion",
    "finish_reason",
    "judge_parsed",
    "conforms",
)
TRAIN_COLUMNS = ("problem_id", "question", "reference_solution", "answer")


@dataclass
class DatasetBuild:
    """What ``build_datasets`` returns (see its docstring for the columns)."""

    examples: pl.DataFrame
    exclusions: pl.DataFrame
    summary: pl.DataFrame


@dataclass(frozen=True)
class _Trace:
    row: dict
    declaration: Declaration
    final: str | None  # the declared final answer (the fallback extraction when the policy allows none)
    correct: bool
    reason: str | None  # the eligibility policy's verdict
    rank: str

    @cached_property
    def slips(self) -> list[str]:
        """The trace's calculations whose stated result is wrong, read once (only for arms that check)."""
        return arithmetic_slips(self.row["completion"])


@dataclass(frozen=True)
class _Example:
    problem_id: str
    completion: str
    source: str
    trace_id: str | None
    style: str | None
    style_version: str | None
    is_correct: bool
    conforms: bool | None
    final: str | None = None
    flaw: str = "none"
    trimmed_chars: int = 0
    removed_tokens: int = 0
    score: float | None = None  # keep_by: the confidence the arm ranks this example by


@dataclass
class _Arm:
    name: str
    recipe: DatasetRecipe
    candidates: int = 0
    chosen: dict[str, list[_Example]] = field(default_factory=dict)
    flawed: dict[str, _Example] = field(default_factory=dict)
    exclusions: list[dict] = field(default_factory=list)
    eligible_problems: int = 0
    problems_lost: int = 0
    n_flawed: int = 0

    def exclude(self, problem_id: str, trace_id: str | None, reason: str, detail: str | None = None, student=None):
        assert reason in EXCLUSION_REASONS, reason
        self.exclusions.append(
            {
                "dataset": self.name,
                "student": student,
                "problem_id": problem_id,
                "trace_id": trace_id,
                "reason": reason,
                "detail": detail,
            }
        )

    def drop(self, problem_id: str, reason: str, detail: str | None = None) -> None:
        for example in self.chosen.pop(problem_id, []):
            self.exclude(problem_id, example.trace_id, reason, detail)


class _Counter:
    """Token counts cached per (counter, text): students that share a tokenizer count once."""

    def __init__(self) -> None:
        self._cache: dict[tuple[int, str], int] = {}

    def __call__(self, counter: TokenCounter, text: str) -> int:
        key = (id(counter), text)
        if key not in self._cache:
            self._cache[key] = int(counter(text))
        return self._cache[key]


def comparison_groups(recipes: Mapping[str, DatasetRecipe], comparisons: ComparisonsConfig) -> list[list[str]]:
    """The groups of arms that share a problem set; an arm in no group is a group of its own."""
    if not comparisons.intersect_problems:
        return [[name] for name in recipes]
    if comparisons.groups is None:
        return [list(recipes)]
    grouped = {name for group in comparisons.groups for name in group}
    return [list(group) for group in comparisons.groups] + [[name] for name in recipes if name not in grouped]


def datasets_affected_by_style(
    recipes: Mapping[str, DatasetRecipe], comparisons: ComparisonsConfig, token_matching: Iterable[TokenMatchGroup], style: str
) -> list[str]:
    """Datasets whose rows can change when ``style``'s traces change: those of the style, and every
    dataset that shares a comparison group or a token-matching group with one of them."""
    affected = {name for name, recipe in recipes.items() if recipe.style == style}
    links = comparison_groups(recipes, comparisons) + [g.datasets for g in token_matching]
    changed = True
    while changed:
        changed = False
        for group in links:
            if affected & set(group) and not set(group) <= affected:
                affected |= set(group)
                changed = True
    return [name for name in recipes if name in affected]


def _check_columns(frame: pl.DataFrame, needed: Iterable[str], what: str) -> None:
    missing = [column for column in needed if column not in frame.columns]
    if missing:
        raise ValueError(f"build_datasets: {what} lacks column(s) {missing}")


def _annotate(
    judged: pl.DataFrame,
    train: dict[str, dict],
    policy: EligibilityPolicy,
    seed: int,
    answer_formats: Mapping[str, AnswerFormat],
) -> tuple[dict[tuple[str, str], dict[str, list[_Trace]]], list[_Trace]]:
    """Every judged trace with its declared answer, correctness, policy verdict and rank, pooled by
    (style, kind) and problem, best-ranked first; plus the traces of problems not in train."""
    pools: dict[tuple[str, str], dict[str, list[_Trace]]] = {}
    outside = []
    has_fallback = "extracted_answer" in judged.columns
    for row in judged.iter_rows(named=True):
        answer_format = answer_formats.get(row["style"])
        if answer_format is None:
            continue  # a style no recipe uses
        problem = train.get(row["problem_id"])
        if problem is None or task_of(problem).name == "gsm8k":
            declaration = declared_answers(row["completion"], answer_format)
            final = declaration.final
            if final is None and not policy.require_declared_answer and has_fallback:
                final = row["extracted_answer"]
            correct = problem is not None and numbers_match(final, problem["answer"])
        else:
            declaration, final, correct = task_declaration(row["completion"], problem, policy.require_declared_answer)
        trace = _Trace(
            row=row,
            declaration=declaration,
            final=final,
            correct=correct,
            reason=policy_reason(row, declaration, policy),
            rank=rank_key(seed, row["style"], row["kind"], row["problem_id"], row["trace_id"]),
        )
        if problem is None:
            outside.append(trace)
            continue
        pools.setdefault((row["style"], row["kind"]), {}).setdefault(row["problem_id"], []).append(trace)
    for by_problem in pools.values():
        for traces in by_problem.values():
            traces.sort(key=lambda t: t.rank)
    return pools, outside


def _arm_reason(trace: _Trace, recipe: DatasetRecipe, policy: EligibilityPolicy, problem: dict) -> tuple[str | None, str | None]:
    """Why this arm can't use an annotated trace (reason, detail), or (None, None)."""
    if trace.reason is not None:
        return trace.reason, None
    reason, detail = _recipe_reason(trace, recipe, policy, problem)
    if reason is None and recipe.excludes_arithmetic_slips(policy) and trace.slips:
        # last, so that the count is of traces the arm would have used but for the slip
        more = len(trace.slips) - 3
        return "arithmetic_slip", "; ".join(trace.slips[:3]) + (f" (+{more} more)" if more > 0 else "")
    return reason, detail


def _recipe_reason(
    trace: _Trace, recipe: DatasetRecipe, policy: EligibilityPolicy, problem: dict
) -> tuple[str | None, str | None]:
    if recipe.recipe == "W":
        return ("right_answer", None) if trace.correct else (None, None)
    if not trace.correct:
        return "wrong_answer", f"declared {trace.final}, reference {problem['answer']}"
    if recipe.recipe == "H_style":
        coverage, missing = paraphrase_coverage(trace.row["completion"], problem["reference_solution"], problem["question"])
        if coverage < policy.paraphrase_min_coverage:
            return "unfaithful_paraphrase", f"misses {', '.join(missing)} of the human solution"
        if policy.paraphrase_judge:
            verdict = trace.row.get("judge_faithful")
            if verdict is None:
                return "judge_unparsable", "no faithfulness verdict"
            if not verdict:
                return "unfaithful_paraphrase", "judge: different steps"
    return None, None


def _example(trace: _Trace, source: str, flaw: str = "none") -> _Example:
    row = trace.row
    return _Example(
        problem_id=row["problem_id"],
        completion=row["completion"],
        source=source,
        trace_id=row["trace_id"],
        style=row["style"],
        style_version=row["style_version"],
        is_correct=trace.correct,
        conforms=row["conforms"],
        final=trace.final,
        flaw=flaw,
    )


def _eligible(pool: dict[str, list[_Trace]], recipe: DatasetRecipe, policy: EligibilityPolicy, train: dict[str, dict]):
    """Per problem, the arm's eligible traces (best-ranked first), and (trace, reason, detail) for the rest."""
    eligible: dict[str, list[_Trace]] = {}
    rejected = []
    for problem_id, traces in pool.items():
        for trace in traces:
            reason, detail = _arm_reason(trace, recipe, policy, train[problem_id])
            if reason is None:
                eligible.setdefault(problem_id, []).append(trace)
            else:
                rejected.append((trace, reason, detail))
    return eligible, rejected


def _draft(
    name: str,
    recipe: DatasetRecipe,
    pools,
    outside: list[_Trace],
    policy: EligibilityPolicy,
    train: dict[str, dict],
    seed: int,
    answer_formats: Mapping[str, AnswerFormat],
    count: Callable[[str], int],
) -> _Arm:
    """An arm's examples per eligible problem, before the common-problem intersection."""
    arm = _Arm(name, recipe)
    if recipe.recipe == "H":
        arm.candidates = len(train)
        for problem_id, problem in train.items():
            arm.chosen[problem_id] = [_Example(problem_id, problem["reference_solution"], "human", None, None, None, True, None)]
        arm.eligible_problems = len(arm.chosen)
        return arm
    style = recipe.style
    assert style is not None, "DatasetRecipe's validator requires a style for every recipe but H"
    kind = "paraphrase" if recipe.recipe == "H_style" else "solve"
    pool = pools.get((style, kind), {})
    arm.candidates = sum(len(traces) for traces in pool.values())
    for trace in outside:
        if trace.row["style"] == style and trace.row["kind"] == kind:
            arm.exclude(trace.row["problem_id"], trace.row["trace_id"], "not_a_train_problem")
    eligible, rejected = _eligible(pool, recipe, policy, train)
    for trace, reason, detail in rejected:
        arm.exclude(trace.row["problem_id"], trace.row["trace_id"], reason, detail)
    source = "paraphrase" if recipe.recipe == "H_style" else "teacher"
    if recipe.keep_by != "all":
        eligible = _by_confidence(arm, eligible, recipe.keep_by)
    for problem_id, traces in eligible.items():
        arm.chosen[problem_id] = [
            replace(_example(t, source), score=t.row.get(recipe.keep_by) if recipe.keep_by != "all" else None)
            for t in traces[: recipe.per_problem]
        ]
        for trace in traces[recipe.per_problem :]:
            arm.exclude(problem_id, trace.row["trace_id"], "not_selected")

    # The arm's partner traces (the other half of a pair, a mixture's wrong version) pass its slip rule too.
    checked = recipe.excludes_arithmetic_slips(policy)
    if recipe.pair_correct_wrong:
        right, _ = _eligible(pool, DatasetRecipe(recipe="G", style=style, exclude_arithmetic_slips=checked), policy, train)
        wrong, _ = _eligible(pool, DatasetRecipe(recipe="W", style=style, exclude_arithmetic_slips=checked), policy, train)
        for problem_id in [p for p in arm.chosen if not (p in right and p in wrong)]:
            arm.drop(problem_id, "no_correct_wrong_pair")

    answer_format = answer_formats[style]
    if recipe.recipe == "mixture":
        wrong, _ = _eligible(pool, DatasetRecipe(recipe="W", style=style, exclude_arithmetic_slips=checked), policy, train)
        for problem_id in list(arm.chosen):
            source_example = arm.chosen[problem_id][0]
            flawed, why = _flawed_version(
                source_example, wrong.get(problem_id, []), recipe, train[problem_id], answer_format, seed
            )
            if flawed is None:
                arm.drop(problem_id, "no_flawed_version", f"flaw '{recipe.flaw}'" + (f": {why}" if why else ""))
            else:
                arm.flawed[problem_id] = flawed

    if recipe.trim != "none":
        for problem_id in list(arm.chosen):
            trimmed = [_trim(example, recipe.trim, answer_format, seed, count) for example in arm.chosen[problem_id]]
            for example, result in zip(arm.chosen[problem_id], trimmed):
                if result is None:
                    arm.exclude(problem_id, example.trace_id, "control_span_too_short")
            kept = [result for result in trimmed if result is not None]
            if kept:
                arm.chosen[problem_id] = kept
            else:
                del arm.chosen[problem_id]
    arm.eligible_problems = len(arm.chosen)
    return arm


def _by_confidence(arm: _Arm, eligible: dict[str, list[_Trace]], score: str) -> dict[str, list[_Trace]]:
    """keep_by: each problem's eligible traces, most confident first (ties by the fixed rank); traces
    without a score (no recorded log-probabilities) are excluded."""
    ranked = {}
    for problem_id, traces in eligible.items():
        scored = [t for t in traces if t.row.get(score) is not None]
        for trace in traces:
            if trace.row.get(score) is None:
                arm.exclude(problem_id, trace.row["trace_id"], "no_logprobs")
        if scored:
            ranked[problem_id] = sorted(scored, key=lambda t: (-t.row[score], t.rank))
    return ranked


def _keep_confident(arm: _Arm, seed: int) -> None:
    """keep_by: the round(keep_fraction x problems) problems whose (first) example is most confident.
    Applied after the common-problem intersection, so an arm and its control (same fraction, the other
    score) choose from the same problems and end with as many."""
    recipe = arm.recipe
    order = sorted(arm.chosen, key=lambda p: (-(arm.chosen[p][0].score or 0.0), problem_key(seed, "confidence", p)))
    keep = math.floor(recipe.keep_fraction * len(order) + 0.5)
    for problem_id in order[keep:]:
        arm.drop(problem_id, "low_confidence", f"{recipe.keep_by} {arm.chosen[problem_id][0].score:.3f}")


def _flawed_version(
    source: _Example, wrong: list[_Trace], recipe: DatasetRecipe, problem: dict, answer_format: AnswerFormat, seed: int
) -> tuple[_Example | None, str | None]:
    """The problem's flawed version under the recipe's declared procedure, checked to differ in reasoning
    and answer, or (None, why not). Tasks other than gsm8k have no numeric answer line to corrupt: their
    ``wrong`` / ``both`` flawed version is the style's wrong trace, whose declared answer the task's
    verifier found wrong; ``complete`` corrupts their steps where their reference answers are numbers
    (Countdown) and the task's verifier must find the corrupted answer wrong."""
    flaw = recipe.flaw
    if flaw == "complete":
        return _completely_flawed(source, recipe.flaw_level, problem, answer_format, seed)
    reference = problem["answer"]
    if task_of(problem).name != "gsm8k":
        candidate = _example(wrong[0], "teacher", flaw="wrong") if flaw in ("wrong", "both") and wrong else None
        if candidate is not None and candidate.final is not None and candidate.completion.strip() != source.completion.strip():
            return replace(candidate, is_correct=False), None
        return None, None
    if flaw in ("wrong", "both") and wrong:
        candidate = _example(wrong[0], "teacher", flaw="wrong")
        if is_flawed_version(source.completion, candidate.completion, reference, answer_format):
            return replace(candidate, is_correct=False), None
    if flaw in ("corrupted", "both") and source.final is not None:  # no final answer, no step yielding it
        rng = random.Random(f"{seed}:corrupt:{source.trace_id}")
        corrupted = corrupt_final_step(source.completion, source.final, answer_format, rng)
        if corrupted is not None and is_flawed_version(source.completion, corrupted, reference, answer_format):
            final = declared_answers(corrupted, answer_format).final
            return replace(source, completion=corrupted, flaw="corrupted", is_correct=False, final=final), None
    return None, None


def _completely_flawed(
    source: _Example, level: float, problem: dict, answer_format: AnswerFormat, seed: int
) -> tuple[_Example | None, str | None]:
    """``flaw: complete``: the source with ``level`` of its calculation steps corrupted and a wrong answer
    (``flaws.degrade``), or (None, why not): a task without numeric answers, a trace without
    calculation steps, or a result the check rejects."""
    task = task_of(problem)
    if not task.numeric_answers:
        return None, f"task '{task.name}' has no numeric answers to corrupt"
    degraded = degrade(source.completion, source.final, level, f"{seed}:complete:{source.trace_id}")
    if degraded is None:
        return None, "no calculation step to corrupt"
    if task.name == "gsm8k":
        final = declared_answers(degraded, answer_format).final
        flawed = is_flawed_version(source.completion, degraded, problem["answer"], answer_format)
    else:
        declaration, final, correct = task_declaration(degraded, problem, require_declared=True)
        flawed = final is not None and not correct and len(set(declaration.values)) == 1 and degraded != source.completion
    if not flawed:
        return None, "the corrupted trace did not pass the flaw check"
    kind = "complete" if level == 1 else "degraded"
    return replace(source, completion=degraded, flaw=kind, is_correct=False, final=final), None


def _trim(example: _Example, trim: str, answer_format: AnswerFormat, seed: int, count: Callable[[str], int]) -> _Example | None:
    """The example trimmed after its conclusion, or (control) with as many tokens removed before it;
    None when the control can't remove that many."""
    text = example.completion
    if example.final is None:
        return example
    conclusion = find_conclusion(text, example.final, answer_format)
    if conclusion is None:
        return example
    line = declared_answers(text, answer_format).last_line or answer_line(example.final, answer_format)
    trimmed = trim_after_conclusion(text, conclusion, line)
    removed = count(text) - count(trimmed)
    if removed <= 0:
        trimmed, removed = text, 0
    if trim == "conclusion":
        return replace(example, completion=trimmed, trimmed_chars=max(0, len(text) - len(trimmed)), removed_tokens=removed)
    rng = random.Random(f"{seed}:trim-control:{example.trace_id}")
    result = remove_random_span(text, conclusion.start, removed, count, rng)
    if result is None:
        return None
    controlled, removed_here = result
    return replace(
        example, completion=controlled, trimmed_chars=max(0, len(text) - len(controlled)), removed_tokens=max(0, removed_here)
    )


def _intersect(arms: dict[str, _Arm], groups: list[list[str]], train: Mapping[str, dict]) -> None:
    """Every arm of a group keeps, task by task, the problems all its arms with problems of that task
    have. An arm with none of a task's problems is left out of that task's intersection, as an empty
    arm is of the group's (it is skipped downstream, and would otherwise empty the group): a 'complete'
    mixture, which has no MBPP problems, leaves G, W and H their MBPP problems."""

    def task(problem_id: str) -> str:
        return task_of(train[problem_id]).name

    for group in groups:
        members = [arms[name] for name in group]
        for name in sorted({task(p) for arm in members for p in arm.chosen}):
            present = [arm for arm in members if any(task(p) == name for p in arm.chosen)]
            if len(present) < 2:
                continue
            common = set.intersection(*({p for p in arm.chosen if task(p) == name} for arm in present))
            for arm in present:
                lost = sorted(p for p in arm.chosen if task(p) == name and p not in common)
                arm.problems_lost += len(lost)
                others = [other.name for other in present if other is not arm]
                for problem_id in lost:
                    missing = [other.name for other in present if problem_id not in other.chosen]
                    arm.drop(problem_id, "not_in_common_problems", f"no eligible trace in {', '.join(missing or others)}")


def _apply_flaws(arm: _Arm, seed: int) -> None:
    """Give the first round(fraction x problems) problems, in the style's seeded flaw order, their
    flawed version: the same order for every fraction, so mixtures nest."""
    recipe = arm.recipe
    order = sorted(arm.chosen, key=lambda p: problem_key(seed, f"flaw-order:{recipe.style}", p))
    arm.n_flawed = math.floor(recipe.flawed_fraction * len(order) + 0.5)
    used = set()
    for problem_id in order[: arm.n_flawed]:
        original, flawed = arm.chosen[problem_id][0], arm.flawed[problem_id]
        arm.exclude(problem_id, original.trace_id, "replaced_by_flawed", f"flaw '{flawed.flaw}'")
        arm.chosen[problem_id] = [flawed]
        used.add(flawed.trace_id)
    # A wrong trace taken as a flawed version is used, not excluded (it was listed as 'wrong_answer').
    arm.exclusions = [row for row in arm.exclusions if not (row["reason"] == "wrong_answer" and row["trace_id"] in used)]


def _rows(
    arm: _Arm,
    questions: dict[str, str],
    counter: TokenCounter,
    count: _Counter,
    student: str | None,
    problems: Iterable[str] | None = None,
) -> list[dict]:
    rows = []
    for problem_id in sorted(arm.chosen if problems is None else problems):
        for index, example in enumerate(arm.chosen[problem_id]):
            prefix = arm.name if student is None else f"{arm.name}:{student}"
            rows.append(
                {
                    "dataset": arm.name,
                    "example_id": f"{prefix}:{problem_id}:{index}",
                    "problem_id": problem_id,
                    "prompt": questions[problem_id],
                    "completion": example.completion,
                    "source": example.source,
                    "trace_id": example.trace_id,
                    "style": example.style,
                    "style_version": example.style_version,
                    "is_correct": example.is_correct,
                    "conforms": example.conforms,
                    "flaw": example.flaw,
                    "trimmed_chars": example.trimmed_chars,
                    "n_tokens": count(counter, example.completion),
                    "removed_tokens": example.removed_tokens,
                    "student": student,
                }
            )
    return rows


def _summary(arm: _Arm, rows: list[dict], student: str | None, target: int | None = None, matched_to: str | None = None) -> dict:
    return {
        "dataset": arm.name,
        "student": student,
        "recipe": arm.recipe.recipe,
        "style": arm.recipe.style,
        "candidates": arm.candidates,
        "eligible_problems": arm.eligible_problems,
        "problems_lost": arm.problems_lost,
        "problems": len({row["problem_id"] for row in rows}),
        "examples": len(rows),
        "flawed": sum(1 for row in rows if row["flaw"] != "none"),
        "tokens": sum(row["n_tokens"] for row in rows),
        "removed_tokens": sum(row["removed_tokens"] for row in rows),
        "token_target": target,
        "matched_to": matched_to,
    }


def build_datasets(
    recipes: Mapping[str, DatasetRecipe],
    policy: EligibilityPolicy,
    judged: pl.DataFrame,
    train: pl.DataFrame,
    seed: int,
    token_counters: Mapping[str, TokenCounter],
    answer_formats: Mapping[str, AnswerFormat],
    comparisons: ComparisonsConfig | None = None,
    token_matching: Iterable[TokenMatchGroup] = (),
) -> DatasetBuild:
    """Every dataset of an experiment from its judged traces.

    - ``recipes``: dataset name -> recipe (``experiment.datasets``; no ``base``).
    - ``judged``: ``judged_traces`` rows; needs trace_id, problem_id, style, kind, style_version,
      completion, finish_reason, judge_parsed, conforms; uses extracted_answer only when the policy
      allows undeclared answers, and judge_faithful (bool, null: unparsed) when
      ``policy.paraphrase_judge``.
    - ``train``: the train problems; needs problem_id, question, reference_solution, answer.
    - ``token_counters``: student name -> completion-token counter, in the experiment's student order;
      the first counts every dataset that is not token-matched.
    - ``answer_formats``: style -> "hash" | "label" (``style_prompts.answer_format``).

    Returns a ``DatasetBuild``: ``examples`` (``SftExampleSchema``; token-matched datasets have one
    set of rows per student, all others ``student`` null), ``exclusions``
    (``DatasetExclusionSchema``) and ``summary`` (``SUMMARY_SCHEMA``: one row per dataset, per
    student for token-matched ones). Raises ``TokenBudgetError`` when token matching misses its
    tolerance and ``ValueError`` on missing columns, counters or answer formats.
    """
    comparisons = comparisons or ComparisonsConfig()
    token_matching = list(token_matching)
    order = {name: index for index, name in enumerate(recipes)}
    replicates = {name: recipe.replicate_of for name, recipe in recipes.items() if recipe.replicate_of}
    recipes = {name: recipe for name, recipe in recipes.items() if name not in replicates}
    _check_columns(judged, JUDGED_COLUMNS, "judged")
    _check_columns(train, TRAIN_COLUMNS, "train")
    if policy.paraphrase_judge:
        _check_columns(judged, ["judge_faithful"], "judged (eligibility.paraphrase_judge is on)")
    if not token_counters:
        raise ValueError("build_datasets: token_counters is empty; pass one counter per student")
    styles = {recipe.style for recipe in recipes.values() if recipe.style is not None}
    missing_formats = sorted(styles - set(answer_formats))
    if missing_formats:
        raise ValueError(f"build_datasets: no answer format for style(s) {missing_formats}")
    unknown = sorted({name for group in token_matching for name in group.datasets} - set(recipes))
    if unknown:
        raise ValueError(f"build_datasets: token_matching names unknown dataset(s) {unknown}")

    problems = {row["problem_id"]: row for row in train.iter_rows(named=True)}
    questions = {problem_id: row["question"] for problem_id, row in problems.items()}
    students = list(token_counters.items())
    primary = students[0][1]
    count = _Counter()

    def count_primary(text: str) -> int:
        return count(primary, text)

    pools, outside = _annotate(
        judged.filter(pl.col("style").is_in(sorted(styles))),
        problems,
        policy,
        seed,
        {style: answer_formats[style] for style in styles},
    )
    arms = {
        name: _draft(name, recipe, pools, outside, policy, problems, seed, answer_formats, count_primary)
        for name, recipe in recipes.items()
    }
    _intersect(arms, comparison_groups(recipes, comparisons), problems)
    for arm in arms.values():
        if arm.recipe.recipe == "mixture":
            _apply_flaws(arm, seed)
        if arm.recipe.keep_by != "all":
            _keep_confident(arm, seed)

    matched = {name: group for group in token_matching for name in group.datasets}
    rows, summary = [], []
    for name, arm in arms.items():
        if name not in matched:
            arm_rows = _rows(arm, questions, primary, count, None)
            rows += arm_rows
            summary.append(_summary(arm, arm_rows, None))
    for group in token_matching:
        for student, counter in students:
            tokens = {
                name: {p: sum(count(counter, e.completion) for e in examples) for p, examples in arms[name].chosen.items()}
                for name in group.datasets
            }
            kept, budget, target = match_token_totals(
                tokens, group.tolerance, lambda p: problem_key(seed, "token-match", p), student
            )
            for name in group.datasets:
                arm = arms[name]
                for problem_id in sorted(set(arm.chosen) - kept[name]):
                    for example in arm.chosen[problem_id]:
                        arm.exclude(
                            problem_id, example.trace_id, "over_token_budget", f"{budget} tokens of {target}", student=student
                        )
                arm_rows = _rows(arm, questions, counter, count, student, kept[name])
                rows += arm_rows
                summary.append(_summary(arm, arm_rows, student, budget, target))
    exclusions = [row for arm in arms.values() for row in arm.exclusions]
    rows, exclusions, summary = (_with_replicates(part, replicates) for part in (rows, exclusions, summary))
    return DatasetBuild(
        examples=pl.DataFrame(rows, schema=SFT_SCHEMA).sort(
            pl.col("dataset").replace_strict(order, return_dtype=pl.Int64), "example_id"
        ),
        exclusions=pl.DataFrame(exclusions, schema=EXCLUSION_SCHEMA).sort(
            pl.col("dataset").replace_strict(order, return_dtype=pl.Int64), "student", "problem_id", "trace_id", nulls_last=True
        ),
        summary=pl.DataFrame(summary, schema=SUMMARY_SCHEMA).sort(
            pl.col("dataset").replace_strict(order, return_dtype=pl.Int64), "student", nulls_last=True
        ),
    )


def _with_replicates(rows: list[dict], replicates: Mapping[str, str]) -> list[dict]:
    """``rows`` plus, for each replicate (an A/A control), its original's rows under its own name."""
    copies = []
    for name, source in replicates.items():
        for row in rows:
            if row["dataset"] == source:
                copy = {**row, "dataset": name}
                if "example_id" in copy:
                    copy["example_id"] = name + copy["example_id"][len(source) :]
                copies.append(copy)
    return rows + copies


def exclusion_counts(exclusions: pl.DataFrame) -> pl.DataFrame:
    """Per dataset, how many traces (or problems) each reason excluded: one column per reason that
    occurs, in the vocabulary's order. Token-matching drops count once per student."""
    if exclusions.is_empty():
        return pl.DataFrame(schema={"dataset": pl.Utf8})
    wide = exclusions.group_by("dataset", "reason").len().pivot(on="reason", index="dataset", values="len")
    reasons = [reason for reason in EXCLUSION_REASONS if reason in wide.columns]
    return wide.select("dataset", *[pl.col(r).fill_null(0).cast(pl.Int64) for r in reasons]).sort("dataset")
