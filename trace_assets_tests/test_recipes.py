import json
import random

import polars as pl
import pytest

from trace_assets.answers import extract_answer, extract_label, extract_strict
from trace_assets.datasets.flaws import corrupt_final_step, is_flawed_version, reasoning
from trace_assets.datasets.recipes import (
    TokenBudgetError,
    build_datasets,
    datasets_affected_by_style,
    exclusion_counts,
)
from trace_assets.datasets.schemas import EXCLUSION_REASONS, DatasetExclusionSchema, SftExampleSchema
from trace_assets.datasets.selection import declared_answers, intermediate_quantities, paraphrase_coverage
from trace_assets.datasets.stats import gzip_ratio, template_line_share
from trace_assets.datasets.trimming import find_conclusion
from trace_assets.experiment import ComparisonsConfig, DatasetRecipe, EligibilityPolicy, TokenMatchGroup
from trace_assets.tasks import task_of


def words(text: str) -> int:
    return len(text.split())


def chars(text: str) -> int:  # a second "tokenizer": about four characters a token
    return (len(text) + 3) // 4


def problem(i: int) -> dict:
    a, b = 10 + i, 3 + i % 5
    c = a + b
    return {
        "problem_id": f"p{i:02d}",
        "question": f"Ava has {a} apples and finds {b} more. She then doubles them. How many?",
        "reference_solution": f"Ava has {a}+{b}={c} apples.\nDoubling gives {c}*2={2 * c}.\n#### {2 * c}",
        "answer": str(2 * c),
        "a": a,
        "b": b,
        "c": c,
        "d": 2 * c,
    }


def train_frame(problems: list[dict]) -> pl.DataFrame:
    return pl.DataFrame([{k: p[k] for k in ("problem_id", "question", "reference_solution", "answer")} for p in problems])


def trace(trace_id, p, text, kind="solve", style="normal", finish="stop", parsed=True, conforms=True, **extra):
    return {
        "trace_id": trace_id,
        "problem_id": p["problem_id"] if isinstance(p, dict) else p,
        "style": style,
        "kind": kind,
        "style_version": "v1",
        "completion": text,
        "finish_reason": finish,
        "n_tokens": words(text),
        "judge_parsed": parsed,
        "conforms": conforms and parsed,
        "judge_faithful": True if kind == "paraphrase" else None,
        **extra,
    }


def right(p, variant=0):
    return (
        f"Ava starts with {p['a']} apples and finds {p['b']}, so {p['a']} + {p['b']} = {p['c']} apples (way {variant}). "
        f"Doubling that gives {p['c']} * 2 = {p['d']}.\n#### {p['d']}"
    )


def wrong(p, variant=0):
    return (
        f"Ava has {p['a']} apples and finds {p['b']}, making {p['a']} + {p['b']} = {p['c'] + 1} (way {variant}). "
        f"Twice that is {p['c'] + 1} * 2 = {2 * p['c'] + 2}.\n#### {2 * p['c'] + 2}"
    )


def lucky(p):
    """The right answer reached through a wrong first step (as the fourth GPU run's 135M teacher wrote them)."""
    return f"Ava has {p['a']} + {p['b']} = {p['c'] + 1} apples.\nDoubling gives {p['c']} * 2 = {p['d']}.\n#### {p['d']}"


def wrong_but_true(p):
    """A wrong answer whose every calculation is true (tripled, not doubled)."""
    return f"Ava has {p['a']} + {p['b']} = {p['c']} apples.\nTripling gives {p['c']} * 3 = {3 * p['c']}.\n#### {3 * p['c']}"


def build(recipes, judged, train, seed=0, policy=None, comparisons=None, token_matching=(), counters=None, formats=None):
    return build_datasets(
        recipes,
        policy or EligibilityPolicy(),
        pl.DataFrame(judged) if isinstance(judged, list) else judged,
        train,
        seed,
        counters or {"s": words},
        formats or {"normal": "hash", "gold": "hash", "titanium": "label"},
        comparisons or ComparisonsConfig(intersect_problems=False),
        token_matching,
    )


def picks(build_result, dataset):
    rows = build_result.examples.filter(pl.col("dataset") == dataset)
    return dict(zip(rows["problem_id"], rows["trace_id"]))


PROBLEMS = [problem(i) for i in range(20)]
TRAIN = train_frame(PROBLEMS)
# Four samples per problem: three right (different wording), one wrong.
SAMPLES = [trace(f"{p['problem_id']}-{k}", p, right(p, k) if k < 3 else wrong(p, k)) for p in PROBLEMS for k in range(4)]


# --- 1. selection does not depend on a dataset's name ---------------------------------------------


def test_same_style_datasets_with_different_names_take_the_same_traces():
    recipes = {
        "G_gold": DatasetRecipe(recipe="G", style="normal"),
        "zzz_other_name": DatasetRecipe(recipe="G", style="normal"),
        "G_gold_trimmed": DatasetRecipe(recipe="G", style="normal", trim="conclusion"),
        "mix0": DatasetRecipe(recipe="mixture", style="normal", flawed_fraction=0.0),
    }
    result = build(recipes, SAMPLES, TRAIN)
    chosen = picks(result, "G_gold")
    assert len(chosen) == 20
    assert picks(result, "zzz_other_name") == chosen == picks(result, "G_gold_trimmed") == picks(result, "mix0")
    # with three right samples per problem, the ranking really chooses among them
    assert len({trace_id[-1] for trace_id in chosen.values()}) > 1
    # the order of the input rows plays no part; the seed does
    shuffled = pl.DataFrame(SAMPLES).sample(fraction=1.0, shuffle=True, seed=7)
    assert picks(build(recipes, shuffled, TRAIN), "G_gold") == chosen
    assert picks(build(recipes, SAMPLES, TRAIN, seed=1), "G_gold") != chosen


# --- 2. one eligibility policy, every exclusion reason -------------------------------------------


def reasons_fixture():
    """Problems 0-4 each have one solve and one paraphrase trace with the same defect; every
    exclusion reason of the vocabulary occurs in the build below."""
    ps = [problem(i) for i in range(10)]
    defects = {
        0: dict(finish="length"),  # truncated
        1: dict(text=lambda p: f"So the answer is {p['d']}."),  # only the fallback extractor finds it
        2: dict(text=lambda p: right(p) + f"\nHmm, no.\n#### {p['d'] + 1}"),  # answer_changed
        3: dict(parsed=False),  # judge_unparsable
        4: dict(conforms=False),  # not_conforming
    }
    rows = []
    for i, p in enumerate(ps[:5]):
        d = defects[i]
        text = d.get("text", right)(p)
        for kind in ("solve", "paraphrase"):
            rows.append(
                trace(
                    f"{kind}-defect-{i}",
                    p,
                    text,
                    kind=kind,
                    finish=d.get("finish", "stop"),
                    parsed=d.get("parsed", True),
                    conforms=d.get("conforms", True),
                )
            )
    for p in ps[:8]:
        rows.append(trace(f"solve-right-{p['problem_id']}", p, right(p)))
        rows.append(trace(f"paraphrase-{p['problem_id']}", p, p["reference_solution"], kind="paraphrase"))
    for p in ps[:6]:
        rows.append(trace(f"solve-wrong-{p['problem_id']}", p, wrong(p)))
    p = ps[0]
    rows.append(trace("solve-right-2nd", p, right(p, 9)))  # not_selected
    rows.append(trace("paraphrase-wrong", ps[5], wrong(ps[5]), kind="paraphrase"))  # wrong_answer for H_style
    rows.append(
        trace("paraphrase-unfaithful", ps[6], f"Double it: the total is {ps[6]['d']}.\n#### {ps[6]['d']}", kind="paraphrase")
    )  # skips the intermediate quantity
    # p08: a right trace whose answer no calculation yields (nothing to corrupt); a long tail after the
    # conclusion (the control can't remove that much before it); p09: not in train.
    p8 = ps[8]
    rows.append(
        trace(
            "solve-p08", p8, f"So the result is {p8['d']}. " + "I will now verify this very carefully " * 4 + f"\n#### {p8['d']}"
        )
    )
    rows.append(trace("solve-outside", ps[9], right(ps[9])))
    rows.append(trace("gold-lucky", ps[0], lucky(ps[0]), style="gold"))  # arithmetic_slip for G_checked
    rows.append(trace("gold-right", ps[1], right(ps[1]), style="gold"))
    for row in rows:  # keep_by: the right solves have a step-level confidence, the rest no log-probabilities
        row["step_confidence"] = -0.1 * len(row["trace_id"]) if row["trace_id"].startswith("solve-right-p") else None
    return train_frame(ps[:9]), rows


REASON_RECIPES = {
    "G": DatasetRecipe(recipe="G", style="normal"),
    "W": DatasetRecipe(recipe="W", style="normal"),
    "HS": DatasetRecipe(recipe="H_style", style="normal"),
    "H": DatasetRecipe(recipe="H"),
    "G_pair": DatasetRecipe(recipe="G", style="normal", pair_correct_wrong=True),
    "mix": DatasetRecipe(recipe="mixture", style="normal", flawed_fraction=0.5, flaw="corrupted"),
    "G_control": DatasetRecipe(recipe="G", style="normal", trim="control"),
    "G_tok": DatasetRecipe(recipe="G", style="normal"),
    "H_tok": DatasetRecipe(recipe="H"),
    "G_conf": DatasetRecipe(recipe="G", style="normal", keep_by="step_confidence", keep_fraction=0.5),
    "G_checked": DatasetRecipe(recipe="G", style="gold", exclude_arithmetic_slips=True),
}


def test_every_exclusion_reason_and_one_policy_for_g_w_and_h_style():
    train, rows = reasons_fixture()
    result = build(
        REASON_RECIPES,
        rows,
        train,
        comparisons=ComparisonsConfig(groups=[["G", "W", "HS", "H"]]),
        token_matching=[TokenMatchGroup(datasets=["G_tok", "H_tok"])],
    )
    exclusions = result.exclusions
    assert set(exclusions["reason"]) == set(EXCLUSION_REASONS)
    DatasetExclusionSchema.validate(exclusions)
    SftExampleSchema.validate(result.examples)

    def reason_of(dataset, trace_id):
        found = exclusions.filter((pl.col("dataset") == dataset) & (pl.col("trace_id") == trace_id))["reason"].to_list()
        return found[0] if found else None

    expected = ["truncated", "no_declared_answer", "answer_changed", "judge_unparsable", "not_conforming"]
    for i, reason in enumerate(expected):
        assert reason_of("G", f"solve-defect-{i}") == reason
        assert reason_of("W", f"solve-defect-{i}") == reason
        assert reason_of("HS", f"paraphrase-defect-{i}") == reason
    # past the policy, G and W differ only in whether the declared answer is right
    assert reason_of("G", "solve-wrong-p00") == "wrong_answer" and reason_of("W", "solve-right-p00") == "right_answer"
    assert reason_of("HS", "paraphrase-wrong") == "wrong_answer"
    assert reason_of("HS", "paraphrase-unfaithful") == "unfaithful_paraphrase"
    assert reason_of("G", "solve-outside") == "not_a_train_problem"
    assert reason_of("G_checked", "gold-lucky") == "arithmetic_slip" and reason_of("G_checked", "gold-right") is None
    # the comparison group {G, W, HS, H} keeps p00-p05: W has nothing eligible for p06-p08
    common = {"p00", "p01", "p02", "p03", "p04", "p05"}
    for dataset in ("G", "W", "HS", "H"):
        assert set(result.examples.filter(pl.col("dataset") == dataset)["problem_id"]) == common
    summary = {row["dataset"]: row for row in result.summary.filter(pl.col("student").is_null()).iter_rows(named=True)}
    assert summary["G"]["eligible_problems"] == 9 and summary["G"]["problems_lost"] == 3
    assert summary["HS"]["eligible_problems"] == 8 and summary["H"]["problems_lost"] == 3
    lost = exclusions.filter(pl.col("reason") == "not_in_common_problems")
    assert lost.filter(pl.col("dataset") == "H")["trace_id"].is_null().all()
    counts = exclusion_counts(exclusions)
    g_counts = counts.filter(pl.col("dataset") == "G").row(0, named=True)
    assert g_counts["truncated"] == 1 and g_counts["not_in_common_problems"] == 3
    assert list(counts.columns[1:]) == [r for r in EXCLUSION_REASONS if r in counts.columns]


def test_arithmetic_slips_exclude_lucky_traces_per_dataset_or_by_policy():
    """A right answer reached through a wrong calculation is dropped (reason arithmetic_slip, the slip as
    detail) by an arm that checks, and kept by its unchecked twin in the same build; the policy's setting
    is the default, a dataset's own one overrides it."""
    ps = PROBLEMS[:6]
    train = train_frame(ps)
    rows = [trace(f"{p['problem_id']}-lucky", p, lucky(p)) for p in ps]
    rows += [trace(f"{p['problem_id']}-right", p, right(p)) for p in ps[:4]]  # p04, p05: only lucky right traces
    rows += [trace(f"{p['problem_id']}-wrong", p, wrong(p)) for p in ps]  # wrong answers, with a slip
    rows += [trace("p00-wrong-true", ps[0], wrong_but_true(ps[0]))]  # the one wrong trace without a slip
    recipes = {
        "G": DatasetRecipe(recipe="G", style="normal"),
        "G_checked": DatasetRecipe(recipe="G", style="normal", exclude_arithmetic_slips=True),
        "W_checked": DatasetRecipe(recipe="W", style="normal", exclude_arithmetic_slips=True),
        "G_pair": DatasetRecipe(recipe="G", style="normal", pair_correct_wrong=True),
        "G_pair_checked": DatasetRecipe(recipe="G", style="normal", pair_correct_wrong=True, exclude_arithmetic_slips=True),
    }
    result = build(recipes, rows, train)
    DatasetExclusionSchema.validate(result.exclusions)
    SftExampleSchema.validate(result.examples)
    unchecked = picks(result, "G")
    assert set(unchecked) == {p["problem_id"] for p in ps}
    assert unchecked["p04"] == "p04-lucky" and unchecked["p05"] == "p05-lucky"
    assert any(unchecked[p["problem_id"]].endswith("-lucky") for p in ps[:4])  # the ranking took a lucky one over a true one
    assert picks(result, "G_checked") == {p["problem_id"]: f"{p['problem_id']}-right" for p in ps[:4]}
    assert picks(result, "W_checked") == {"p00": "p00-wrong-true"}
    assert set(picks(result, "G_pair")) == {p["problem_id"] for p in ps}
    assert set(picks(result, "G_pair_checked")) == {"p00"}  # the partner (a wrong trace) must pass the check too

    def excluded(dataset: str) -> dict[str, tuple[str, str | None]]:
        rows = result.exclusions.filter(pl.col("dataset") == dataset)
        return {row["trace_id"]: (row["reason"], row["detail"]) for row in rows.iter_rows(named=True)}

    checked = excluded("G_checked")
    for p in ps:
        reason, detail = checked[f"{p['problem_id']}-lucky"]
        assert reason == "arithmetic_slip" and detail == f"{p['a']} + {p['b']} = {p['c'] + 1}"
        assert checked[f"{p['problem_id']}-wrong"][0] == "wrong_answer"  # the arm's own test comes first
    assert excluded("W_checked")["p01-wrong"][0] == "arithmetic_slip"
    assert excluded("W_checked")["p01-lucky"][0] == "right_answer"
    assert "arithmetic_slip" not in {reason for reason, _ in excluded("G").values()}
    assert excluded("G_pair_checked")["p01-right"][0] == "no_correct_wrong_pair"
    counts = {row["dataset"]: row for row in exclusion_counts(result.exclusions).iter_rows(named=True)}
    assert counts["G_checked"]["arithmetic_slip"] == 6 and counts["G"]["arithmetic_slip"] == 0

    by_policy = build(
        {"G": recipes["G"], "G_unchecked": DatasetRecipe(recipe="G", style="normal", exclude_arithmetic_slips=False)},
        rows,
        train,
        policy=EligibilityPolicy(exclude_arithmetic_slips=True),
    )
    assert picks(by_policy, "G") == picks(result, "G_checked")
    assert picks(by_policy, "G_unchecked") == unchecked


def test_changed_and_fallback_answers_are_detected():
    assert declared_answers("x\n#### 5\nWait, the answer is 6.", "hash").changed
    assert declared_answers("#### 5\nANSWER: 6", "hash").changed
    assert not declared_answers("So the answer is 5.\n#### 5\nThe answer is 5.", "hash").changed
    assert declared_answers("So the answer is 5.", "hash").final is None  # fallback only: not declared
    assert declared_answers("GOAL: x\nC1: 2 = 2\nANSWER: 2", "hash").final is None  # the other style's format
    assert declared_answers("GOAL: x\nC1: 2 = 2\n**ANSWER:** 2", "label").final == "2"


# Traces on which the dataset builder's own line regexes and answers.py used to disagree.
TRICKY_TRACES = [
    "so 3\n#### 3#### 17",  # a second #### mid-line: the last declaration wins
    "#### 2. Add the boxes\n3 + 4 = 7\n#### 7",  # a markdown heading is not a declaration
    "#### 120 - 36 = 84",  # arithmetic after the marker reads its result
    "#### 5\n\nQuestion: Tom has 2 apples.\n#### 7",  # declarations stop at an invented next turn
    "#### 3:30",  # a time is not a number
    "#### 5\n#### 3:30",
    "> ANSWER: 5",  # a quoted label line
    "**####** 5\nANSWER: 2 1/2",
    "The total is #### −3",  # mid-line marker, Unicode minus
    "ANSWER: 3 × 4 = 12\n#### 4",
    "#### five",
    "",
]


@pytest.mark.parametrize("text", TRICKY_TRACES)
def test_declared_answers_read_as_the_extractors_do(text):
    assert declared_answers(text, "hash").final == extract_strict(text)
    assert declared_answers(text, "label").final == extract_label(text)


def test_declared_answers_follow_the_one_reader():
    second = declared_answers("so 3\n#### 3#### 17", "hash")
    assert second.final == "17" == extract_answer("so 3\n#### 3#### 17").answer
    assert second.values == ("3", "17") and second.changed and second.last_line == "#### 3#### 17"
    text = "#### 2. Add the boxes\n3 + 4 = 7\n#### 7"
    heading = declared_answers(text, "hash")
    assert heading.values == ("7",) and not heading.changed and heading.first_start == text.index("#### 7")
    invented = declared_answers("#### 5\nQuestion: next one?\nThe answer is 7.\n#### 7", "hash")
    assert invented.final == "5" and not invented.changed  # neither the #### nor the phrase after the new turn count
    time = declared_answers("#### 5\n#### 3:30", "hash")
    assert time.values == ("5", None) and time.final is None
    long = "x " * 60_000 + "\n  #### 12\nANSWER: 13"  # longer than answers.MAX_SCAN_CHARS: offsets in the whole text
    both = declared_answers(long, "label")
    assert both.final == "13" and both.other_values == ("12",) and long[both.first_start :].startswith("  #### 12")
    assert find_conclusion("so 3\n#### 3#### 17", "17", "hash").end == len("so 3\n#### 3#### 17")
    assert reasoning("a\n#### 3#### 17\nb\n**####** 4", "hash") == "a b"


def test_pairs_and_intersection_can_be_turned_off():
    train, rows = reasons_fixture()
    recipes = {"G": REASON_RECIPES["G"], "W": REASON_RECIPES["W"], "G_pair": REASON_RECIPES["G_pair"]}
    separate = build(recipes, rows, train)
    g, w, pair = (set(picks(separate, name)) for name in ("G", "W", "G_pair"))
    assert pair == g & w and g != w
    together = build(recipes, rows, train, comparisons=ComparisonsConfig())
    assert set(picks(together, "G")) == set(picks(together, "W")) == g & w


def test_an_empty_arm_does_not_empty_its_group():
    recipes = {
        "G": DatasetRecipe(recipe="G", style="normal"),
        "G_gold": DatasetRecipe(recipe="G", style="gold"),
        "H": DatasetRecipe(recipe="H"),
    }
    result = build(recipes, SAMPLES, TRAIN, comparisons=ComparisonsConfig())
    assert len(picks(result, "G")) == 20 and len(picks(result, "H")) == 20 and not picks(result, "G_gold")


def test_h_style_must_follow_the_human_solution():
    p = PROBLEMS[0]
    assert intermediate_quantities(p["reference_solution"], p["question"]) == {str(p["c"]), str(p["d"])}
    faithful = f"Problem: apples.\nStep 1: {p['a']} + {p['b']} = {p['c']}.\nStep 2: {p['c']} * 2 = {p['d']}.\n#### {p['d']}"
    skipping = f"Problem: apples.\nStep 1: double the total to get {p['d']}.\n#### {p['d']}"
    assert paraphrase_coverage(faithful, p["reference_solution"], p["question"])[0] == 1.0
    assert paraphrase_coverage(skipping, p["reference_solution"], p["question"]) == (0.5, [str(p["c"])])
    rows = [
        trace("f", p, faithful, kind="paraphrase", judge_faithful=False),
        trace("s", PROBLEMS[1], skipping.replace(str(p["d"]), PROBLEMS[1]["answer"]), kind="paraphrase", judge_faithful=True),
    ]
    recipes = {"HS": DatasetRecipe(recipe="H_style", style="normal")}
    train = train_frame(PROBLEMS[:2])
    # The number rule alone keeps f (it has every quantity) and drops s; the judge (on by default) drops f too.
    assert picks(build(recipes, rows, train, policy=EligibilityPolicy(paraphrase_judge=False)), "HS") == {"p00": "f"}
    judged = build(recipes, rows, train)
    assert picks(judged, "HS") == {}
    assert judged.exclusions["detail"].to_list() == ["judge: different steps", f"misses {PROBLEMS[1]['c']} of the human solution"]
    loose = EligibilityPolicy(paraphrase_min_coverage=0.5, paraphrase_judge=False)
    assert picks(build(recipes, rows, train, policy=loose), "HS") == {"p00": "f", "p01": "s"}
    with pytest.raises(ValueError, match="judge_faithful"):
        build(
            recipes,
            [{k: v for k, v in r.items() if k != "judge_faithful"} for r in rows],
            train,
            policy=EligibilityPolicy(paraphrase_judge=True),
        )


# --- 3. nested mixtures ---------------------------------------------------------------------------

FRACTIONS = [0.0, 0.1, 0.25, 0.5, 0.75, 1.0]


@pytest.mark.parametrize("flaw", ["wrong", "corrupted", "complete", "both"])
def test_mixtures_nest_and_keep_the_same_correct_traces(flaw):
    recipes = {"G": DatasetRecipe(recipe="G", style="normal")}
    recipes |= {
        f"mix{int(f * 100)}": DatasetRecipe(recipe="mixture", style="normal", flawed_fraction=f, flaw=flaw) for f in FRACTIONS
    }
    result = build(recipes, SAMPLES, TRAIN, comparisons=ComparisonsConfig())
    g = picks(result, "G")
    previous: set[str] = set()
    for fraction in FRACTIONS:
        frame = result.examples.filter(pl.col("dataset") == f"mix{int(fraction * 100)}")
        assert frame.height == 20
        flawed = frame.filter(pl.col("flaw") != "none")
        assert flawed.height == int(fraction * 20 + 0.5)
        assert previous <= set(flawed["problem_id"])  # nested
        previous = set(flawed["problem_id"])
        correct = frame.filter(pl.col("flaw") == "none")
        assert dict(zip(correct["problem_id"], correct["trace_id"])) == {p: g[p] for p in correct["problem_id"]}
        assert correct["is_correct"].all() and not flawed["is_correct"].any()
        for row in flawed.iter_rows(named=True):  # really flawed: another reasoning and a wrong declared answer
            reference = TRAIN.filter(pl.col("problem_id") == row["problem_id"])["answer"][0]
            source = next(s["completion"] for s in SAMPLES if s["trace_id"] == g[row["problem_id"]])
            assert is_flawed_version(source, row["completion"], reference, "hash")
            assert row["flaw"] == (flaw if flaw in ("corrupted", "complete") else "wrong")
    assert len(previous) == 20


def test_corruption_changes_the_reasoning_and_the_final_answer():
    text = "3*4=12 and 12+5=17, so she has 17 in all.\n#### 17"
    changed = {corrupt_final_step(text, "17", "hash", random.Random(seed)) for seed in range(20)}
    for result in changed:
        assert result.startswith("3*4=12 and 12+5=")
        final = declared_answers(result, "hash").final
        assert final != "17" and f"has {final} in all" in result and not declared_answers(result, "hash").changed
        assert is_flawed_version(text, result, "17", "hash")
    assert corrupt_final_step("There are 17 of them.\n#### 17", "17", "hash", random.Random(0)) is None
    # a "flaw" that keeps the answer, or only rewrites the answer line, is not a flawed version
    assert not is_flawed_version(text, text.replace("3*4", "4*3"), "17", "hash")
    assert not is_flawed_version(text, text.replace("#### 17", "#### 18"), "17", "hash")


def test_completely_flawed_mixtures_and_the_ladder_build_per_task():
    countdown = {
        "problem_id": "cd0",
        "question": "Use 25, 5 and 3 to make 90.",
        "reference_solution": "25 + 5 = 30\n30 * 3 = 90\n#### (25 + 5) * 3",
        "answer": "90",
        "task": "countdown",
        "task_metadata": json.dumps({"numbers": [25, 5, 3], "target": 90}),
    }
    competition = {
        "problem_id": "math0",
        "question": "What is half of one?",
        "reference_solution": "It is \\boxed{\\frac{1}{2}}.",
        "answer": "\\frac{1}{2}",
        "task": "math",
        "task_metadata": json.dumps({"level": 1, "type": "Algebra"}),
    }
    gsm = [{**{k: p[k] for k in TRAIN.columns}, "task": "gsm8k", "task_metadata": None} for p in PROBLEMS[:5]]
    train = pl.DataFrame([*gsm, countdown, competition])
    rows = [trace(f"{p['problem_id']}-0", p, right(p)) for p in PROBLEMS[:4]]
    rows += [
        trace("p04-0", PROBLEMS[4], f"Ava ends with {PROBLEMS[4]['d']} apples.\n#### {PROBLEMS[4]['d']}"),  # no step
        trace("cd0-0", countdown, "First 25 + 5 = 30, then 30 * 3 = 90.\n#### (25 + 5) * 3"),
        trace("math0-0", competition, "Half of 1 is 1 / 2 = 0.5.\n#### \\frac{1}{2}"),
    ]
    recipes = {
        "G": DatasetRecipe(recipe="G", style="normal"),
        "H": DatasetRecipe(recipe="H"),
        "mix50": DatasetRecipe(recipe="mixture", style="normal", flawed_fraction=0.5, flaw="complete"),
        "deg50": DatasetRecipe(recipe="mixture", style="normal", flawed_fraction=1.0, flaw="complete", flaw_level=0.5),
    }
    result = build(recipes, rows, train, comparisons=ComparisonsConfig())
    SftExampleSchema.validate(result.examples)
    examples = result.examples

    def problems_of(dataset):
        return set(examples.filter(pl.col("dataset") == dataset)["problem_id"])

    usable = {"p00", "p01", "p02", "p03", "cd0"}
    assert problems_of("mix50") == problems_of("deg50") == usable
    # MATH has no numeric answers to corrupt: the mixtures lack it, and G and H keep it (task by task)
    assert problems_of("G") == problems_of("H") == usable | {"math0"}
    excluded = result.exclusions.filter((pl.col("reason") == "no_flawed_version") & (pl.col("dataset") == "deg50"))
    details = dict(zip(excluded["problem_id"], excluded["detail"]))
    assert details == {
        "math0": "flaw 'complete': task 'math' has no numeric answers to corrupt",
        "p04": "flaw 'complete': no calculation step to corrupt",
    }
    ladder = examples.filter(pl.col("dataset") == "deg50")
    assert ladder["flaw"].to_list() == ["degraded"] * 5 and not ladder["is_correct"].any()
    mix = examples.filter(pl.col("dataset") == "mix50")
    assert sorted(mix["flaw"].to_list()) == ["complete"] * 3 + ["none"] * 2  # 0.5 x 5 problems, rounded half up
    flawed = {row["problem_id"]: row["completion"] for row in examples.filter(pl.col("flaw") != "none").iter_rows(named=True)}
    countdown_trace = flawed["cd0"]
    assert (
        "(25 + 5) * 3" not in countdown_trace
        and not task_of(countdown).check(task_of(countdown).read(countdown_trace).strict, countdown).correct
    )


# --- 4. trimming and its control --------------------------------------------------------------------

PROSE = (
    "Ava starts with 12 apples. She buys 3 boxes of 4 apples, which is 3 * 4 = 12 more apples. "
    "Altogether she has 12 + 12 = 24 apples, so the answer is 24. Let me double-check that once more: "
    "12 and 12 make 24, and nothing was given away, so 24 is right.\n#### 24"
)


def test_a_prose_concluded_trace_is_trimmed_and_its_control_loses_as_many_tokens():
    p = {"problem_id": "p00", "question": "Q?", "reference_solution": "3*4=12\n12+12=24\n#### 24", "answer": "24"}
    conclusion = find_conclusion(PROSE, "24", "hash")
    assert PROSE[conclusion.start : conclusion.end] == "Altogether she has 12 + 12 = 24 apples, so the answer is 24."
    recipes = {
        "G": DatasetRecipe(recipe="G", style="normal"),
        "trim": DatasetRecipe(recipe="G", style="normal", trim="conclusion"),
        "control": DatasetRecipe(recipe="G", style="normal", trim="control"),
    }
    for seed in range(5):
        result = build(recipes, [trace("t", p, PROSE)], train_frame([p]), seed=seed)
        rows = {row["dataset"]: row for row in result.examples.iter_rows(named=True)}
        trimmed, control = rows["trim"], rows["control"]
        assert trimmed["completion"] == PROSE[: conclusion.end] + "\n#### 24"
        tail = words(PROSE) - words(trimmed["completion"])
        assert tail == trimmed["removed_tokens"] == control["removed_tokens"] == 20
        assert words(control["completion"]) == words(PROSE) - tail
        # the control keeps the conclusion, the tail and the answer line, and cuts before the conclusion
        assert control["completion"].endswith(PROSE[conclusion.start :])
        assert control["completion"] != PROSE and trimmed["trace_id"] == control["trace_id"] == "t"
        summary = dict(zip(result.summary["dataset"], result.summary["removed_tokens"]))
        assert summary == {"G": 0, "trim": 20, "control": 20}
    starts = {build(recipes, [trace("t", p, PROSE)], train_frame([p]), seed=s).examples["completion"][2] for s in range(8)}
    assert len(starts) > 1  # the span is random, by seed


def test_label_style_conclusion_is_its_answer_line():
    text = "GOAL: books\nC1: 3 * 6 = 18\nC2: 45 + 18 = 63\nANSWER: 63\nC3: 63 - 0 = 63"
    conclusion = find_conclusion(text, "63", "label")
    assert conclusion.is_answer_line and text[conclusion.start : conclusion.end] == "ANSWER: 63"


# --- 5. token matching ------------------------------------------------------------------------------


def styled(p, style, k=0):
    padding = " Carefully," * (2 + (int(p["problem_id"][1:]) * 7 + k) % 9)
    return trace(f"{style}-{p['problem_id']}-{k}", p, ("" if style == "normal" else padding) + right(p, k), style=style)


def test_token_matching_equalises_every_students_tokens_or_raises():
    judged = [styled(p, style) for p in PROBLEMS for style in ("normal", "gold")]
    recipes = {"G_normal": DatasetRecipe(recipe="G", style="normal"), "G_gold": DatasetRecipe(recipe="G", style="gold")}
    result = build(
        recipes,
        judged,
        TRAIN,
        counters={"words": words, "chars": chars},
        token_matching=[TokenMatchGroup(datasets=["G_normal", "G_gold"])],
    )
    SftExampleSchema.validate(result.examples)
    for student, counter in (("words", words), ("chars", chars)):
        rows = result.examples.filter(pl.col("student") == student)
        normal = rows.filter(pl.col("dataset") == "G_normal")
        gold = rows.filter(pl.col("dataset") == "G_gold")
        assert normal.height == 20  # the smaller side is whole
        assert gold.height < 20 and set(gold["problem_id"]) <= set(normal["problem_id"])
        budget = sum(counter(c) for c in normal["completion"])
        assert gold["n_tokens"].to_list() == [counter(c) for c in gold["completion"]]  # this student's own counts
        assert abs(gold["n_tokens"].sum() - budget) <= 0.01 * budget
        summary = result.summary.filter((pl.col("student") == student) & (pl.col("dataset") == "G_gold")).row(0, named=True)
        assert summary["token_target"] == budget and summary["matched_to"] == "G_normal"
    assert result.examples["student"].is_not_null().all()
    assert result.exclusions.filter(pl.col("reason") == "over_token_budget")["student"].is_not_null().all()

    few = [styled(p, "normal") for p in PROBLEMS[:2]] + [
        trace(f"gold-{p['problem_id']}", p, " long" * 60 + right(p), style="gold") for p in PROBLEMS[:2]
    ]
    with pytest.raises(TokenBudgetError, match=r"G_gold \(1\d\d tokens\).*\b\d\d tokens of G_normal within 1\.0%"):
        build(recipes, few, TRAIN, token_matching=[TokenMatchGroup(datasets=["G_normal", "G_gold"])])


# --- the legacy bridge, schemas and other pieces -----------------------------------------------------


def test_a_style_change_reaches_the_datasets_that_share_its_problems(smoke_experiment):
    e = smoke_experiment
    affected = datasets_affected_by_style(e.datasets, e.comparisons, e.token_matching, "diamond")
    assert "H_to_diamond" in affected and "H" in affected
    assert "G_normal" not in affected


def test_text_statistics():
    labelled = ["GOAL: x\nF1: 3\nC1: 3 * 2 = 6\nANSWER: 6"]
    prose = ["She has three apples and doubles them, which gives six apples in total."]
    assert template_line_share(labelled) == 1.0
    assert template_line_share(prose) == 0.0
    assert gzip_ratio(["abc " * 200]) < gzip_ratio(prose)
