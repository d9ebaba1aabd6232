import numpy as np
import polars as pl
import pytest

from trace_assets.evaluation.degeneration import is_degenerate_loop, repeated_ngram_ratio
from trace_assets.reporting.failures import arithmetic_slips, classify_by_rules, parse_failure_category
from trace_assets.reporting.stats import accuracy_table, bootstrap_ci, mcnemar_exact, paired_tests


def test_loop_detection():
    loop = "So she has 5 apples and then " * 12
    assert is_degenerate_loop(loop)
    assert is_degenerate_loop("C1: 41 pencils\nC1: 41 pencils\nC1: 41 pencils\nANSWER: 4")
    normal = "She starts with 12 apples. She buys 3 boxes of 4, which is 12 more, so 24 apples.\n#### 24"
    assert not is_degenerate_loop(normal)
    assert repeated_ngram_ratio(normal) < 0.1
    assert not is_degenerate_loop("")


def test_arithmetic_slips_are_found_by_re_evaluating():
    assert arithmetic_slips("3 * 4 = 12 and 12 + 5 = 18") == ["12 + 5 = 18"]
    assert arithmetic_slips("1,200 / 4 = 300 then 300 x 2 = 600") == []
    assert arithmetic_slips("10 / 0 = 5") == []


@pytest.mark.parametrize(
    ("text", "extracted", "degenerate", "limit", "category"),
    [
        ("a a a", None, True, False, "loop_degeneration"),
        ("I am not sure", None, False, True, "no_answer_format"),
        ("4 * 6 = 25\n#### 25", "25", False, False, "arithmetic_slip"),
        ("4 * 6 = 24, minus 2 is 22 so 24 - 2 = 22... wait #### 26", "26", False, False, "answer_overwritten"),
        ("She has 4 + 3 = 7 apples\n#### 7", "7", False, False, None),
    ],
)
def test_rule_classification(text, extracted, degenerate, limit, category):
    assert classify_by_rules(text, extracted, "22", degenerate, limit).category == category


def test_failure_judge_parsing():
    assert parse_failure_category('{"category": "scope_confused", "reason": "per box"}') == ("scope_confused", "per box")
    assert parse_failure_category('{"category": "made_up"}')[0] == "unclassified"
    assert parse_failure_category("garbage")[0] == "unclassified"


def test_bootstrap_ci_contains_the_estimate_and_narrows_with_n():
    rng = np.random.default_rng(0)
    small = rng.random(40) < 0.6
    large = rng.random(4000) < 0.6
    lo_s, hi_s = bootstrap_ci(small)
    lo_l, hi_l = bootstrap_ci(large)
    assert lo_s <= small.mean() <= hi_s and lo_l <= large.mean() <= hi_l
    assert (hi_l - lo_l) < (hi_s - lo_s) / 3
    assert bootstrap_ci(np.ones(10)) == (1.0, 1.0)


def test_mcnemar_exact():
    a = np.array([1] * 30 + [0] * 70, dtype=bool)
    b = np.array([0] * 30 + [0] * 70, dtype=bool)
    only_a, only_b, p = mcnemar_exact(a, b)
    assert (only_a, only_b) == (30, 0) and p < 1e-6
    assert mcnemar_exact(a, a)[2] == 1.0
    assert mcnemar_exact(np.array([1, 0], bool), np.array([0, 1], bool))[2] == 1.0


def _evals():
    rows = []
    for dataset, hits in {"base": [0, 0, 0, 0], "A": [1, 1, 1, 0], "B": [1, 0, 0, 0]}.items():
        for seed in (0, 1):
            for i, hit in enumerate(hits):
                rows.append({"dataset": dataset, "student": "s", "seed": seed, "problem_id": f"p{i}",
                             "is_correct": bool(hit), "is_correct_strict": bool(hit), "difficulty": 1})
    return pl.DataFrame(rows)


def test_accuracy_table_and_paired_tests():
    table = accuracy_table(_evals())
    by_dataset = {r["dataset"]: r for r in table.iter_rows(named=True)}
    assert by_dataset["A"]["accuracy"] == 0.75 and by_dataset["A"]["n"] == 4 and by_dataset["A"]["n_seeds"] == 2
    assert by_dataset["A"]["ci_low"] <= 0.75 <= by_dataset["A"]["ci_high"]
    tests = paired_tests(_evals(), table)
    assert set(tests["best"]) == {"A"}
    assert not tests["distinguishable"].any()  # 4 problems cannot tell these apart
