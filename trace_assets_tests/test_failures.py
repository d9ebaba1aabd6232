"""The failure taxonomy checked against a labelled fixture, plus the judge protocol and per-seed summary."""

import json
import time
from collections import Counter
from pathlib import Path

import polars as pl
import pytest
import yaml

from trace_assets.answers import numbers_match
from trace_assets.evaluation.degeneration import is_degenerate_loop
from trace_assets.reporting.failures import (
    CATEGORIES,
    FAILURE_SCHEMA,
    JUDGE_CATEGORIES,
    RULE_CATEGORIES,
    SOURCES,
    RuleProposal,
    arithmetic_slips,
    classify_by_rules,
    decide,
    evaluate_text,
    failure_judge_messages,
    failure_summary,
    parse_failure_category,
)

FIXTURE = Path(__file__).parent / "fixtures" / "failure_taxonomy.yaml"
MIN_PRECISION, MIN_RECALL = 0.9, 0.8


def _cases() -> list[dict]:
    cases = yaml.safe_load(FIXTURE.read_text())
    for case in cases:
        text = case["completion"] + case.get("loop_unit", "") * case.get("loop_times", 0)
        if case.get("cut_off"):
            text += case["loop_unit"][: len(case["loop_unit"]) // 2]
        case["text"] = text + case.get("tail", "")
    return cases


CASES = _cases()


def _predict(case: dict) -> str:
    degenerate = is_degenerate_loop(case["text"])
    proposal = classify_by_rules(case["text"], case["final"], case["reference"], degenerate, case["hit_length_limit"])
    return proposal.category or "none"


def test_fixture_is_well_formed():
    assert len(CASES) >= 60
    assert len({case["id"] for case in CASES}) == len(CASES)
    labels = Counter(case["expected"] for case in CASES)
    assert set(labels) <= set(RULE_CATEGORIES) | {"none"}
    judged = [case for case in CASES if "judge" in case]
    assert all(case["expected"] == "none" and case["judge"] in JUDGE_CATEGORIES for case in judged)
    for category in RULE_CATEGORIES:
        assert labels[category] >= 8, category
    assert labels["none"] >= 30
    for case in CASES:  # the taxonomy only ever sees wrong answers
        assert case["final"] is None or not numbers_match(case["final"], case["reference"]), case["id"]


def test_rule_precision_and_recall_on_the_fixture():
    predictions = {case["id"]: _predict(case) for case in CASES}
    rows, misses = [], []
    for category in RULE_CATEGORIES:
        expected = {case["id"] for case in CASES if case["expected"] == category}
        predicted = {case_id for case_id, label in predictions.items() if label == category}
        hits = len(expected & predicted)
        precision = hits / len(predicted) if predicted else 1.0
        recall = hits / len(expected) if expected else 1.0
        rows.append((category, len(expected), len(predicted), hits, precision, recall))
    for case in CASES:
        if predictions[case["id"]] != case["expected"]:
            misses.append(f"  {case['id']}: expected {case['expected']}, rules said {predictions[case['id']]}")
    none_right = sum(1 for c in CASES if c["expected"] == "none" and predictions[c["id"]] == "none")
    print(f"\nfailure taxonomy fixture: {len(CASES)} labelled wrong answers")
    print(f"{'category':<20} {'labelled':>8} {'fired':>6} {'right':>6} {'precision':>10} {'recall':>7}")
    for category, labelled, fired, hits, precision, recall in rows:
        print(f"{category:<20} {labelled:>8} {fired:>6} {hits:>6} {precision:>10.3f} {recall:>7.3f}")
    labelled_none = sum(1 for c in CASES if c["expected"] == "none")
    print(f"{'none (no rule)':<20} {labelled_none:>8} {'':>6} {none_right:>6}")
    print("misses:\n" + ("\n".join(misses) if misses else "  (none)"))
    for category, _, _, _, precision, recall in rows:
        assert precision >= MIN_PRECISION, (category, precision)
        assert recall >= MIN_RECALL, (category, recall)


@pytest.mark.parametrize(
    ("text", "slips"),
    [
        ("10 / 3 = 3.33", []),
        ("10/3 = 3.333", []),
        ("10 / 3 = 3.3", []),
        ("2/3 = 0.66", []),
        ("17 / 5 = 3 full boxes", []),
        ("45 / 4 = 12 vans", []),
        ("10 // 3 = 3", []),
        ("17 / 5 = 3 remainder 2", []),
        ("17 / 5 = 3 R 2", []),
        ("17 ÷ 5 = 3 r2", []),
        ("17 / 5 = 3 with 2 left over", []),
        ("17 / 5 = 3 remainder 1", ["17 / 5 = 3 remainder 1"]),
        ("2:30 + 1:15 = 3:45", []),
        ("5:00 - 2:30 = 2:30", []),
        ("2 1/2 + 1 1/2 = 4", []),
        ("2½ * 2 = 5", []),
        ("2 1/2 + 1 3/4 = 3 3/4", ["2 1/2 + 1 3/4 = 3 3/4"]),
        ("5 − 8 = −3", []),
        ("15 − 7 = 9", ["15 - 7 = 9"]),
        ("1,200 / 4 = 300", []),
        ("1,250 + 375 = 1,525", ["1,250 + 375 = 1,525"]),
        ("20% of 50 = 10", []),
        ("50 * 20% = 10", []),
        ("50 + 20% = 60", []),
        ("8 / 40 = 0.2 = 20%", []),
        ("100% - 20% = 80%", []),
        ("20% of 80 = 14", ["20% of 80 = 14"]),
        ("$1.50 × 4 = $6.00", []),
        ("$12.50 * 4 = $48", ["$12.50 * 4 = $48"]),
        ("50¢ * 3 = $1.50", []),
        ("Let x = 5", []),
        ("2x + 3 = 13", []),
        ("5 x 3 = 15", []),
        ("3 x 14 = 52", ["3 x 14 = 52"]),
        ("3.33 * 3 = 10", []),
        ("0.5 * 10 = 6", ["0.5 * 10 = 6"]),
        ("10 / 3 = 3.35", ["10 / 3 = 3.35"]),
        ("3 * 4 = 12 * 2 = 24", []),
        ("5 + 3 * 2 = 16", []),
        ("2 * (3 + 4) = 2 * 7 = 14", []),
        ("**4 * 6 = 24**", []),
        ("$9 \\times 7 = 63$", []),
        ("$\\frac{10}{4} = 2.5$", []),
        ("5^2 = 25", []),
        ("1 dozen = 12", []),
        ("Step 1: 5 * 3 = 15", []),
        ("10 / 0 = 5", []),
        ("2(3 + 4) = 14", []),
        ("Step 2 (3 + 4) = 7", []),
        ("2020 5 + 3 = 8", []),
        ("2 (3 + 4) = 15", ["2 (3 + 4) = 15"]),
        ("48+24 = <<48+24=72>>72", []),
        ("1/4 = 25%", []),
        ("-$5 + $20 = $15", []),
        ("3 * 4 = 12 and 12 + 5 = 18", ["12 + 5 = 18"]),
    ],
)
def test_arithmetic_slip_look_alikes(text, slips):
    assert arithmetic_slips(text) == slips


def test_the_evaluator_never_runs_model_text():
    assert evaluate_text("__import__('os').system('true')") is None
    assert evaluate_text("(1 + 2) * 3") == 9
    assert evaluate_text("−3 + 2 1/2") == -0.5
    assert evaluate_text("2 ^ 1000") is None  # exponents are capped
    assert evaluate_text("1 / 0") is None


def test_loop_detector_is_fast_and_keeps_its_signature():
    long_list = "\n".join(f"Day {i}: she saves 5 dollars, total {5 * i} dollars." for i in range(1, 400))
    start = time.perf_counter()
    assert not is_degenerate_loop(long_list)
    assert is_degenerate_loop("So the total is 45. " * 300)
    assert time.perf_counter() - start < 2.0
    assert not is_degenerate_loop("") and not is_degenerate_loop("   ")


def test_rules_propose_and_say_whether_the_judge_is_needed():
    loop = classify_by_rules("x", None, "3", True, True)
    assert loop.category == "loop_degeneration" and loop.decisive and not loop.needs_judge
    missing = classify_by_rules("no idea", None, "3", False, False)
    assert missing.category == "no_answer_format" and missing.decisive
    slip = classify_by_rules("4 * 6 = 26\n#### 26", "26", "24", False, False)
    assert slip.category == "arithmetic_slip" and not slip.decisive and "4 * 6 = 26" in slip.evidence
    nothing = classify_by_rules("4 * 6 = 24\n#### 24", "24", "30", False, False)
    assert nothing.category is None and nothing.needs_judge


def test_judge_messages_show_the_proposal_and_every_category():
    proposal = RuleProposal("arithmetic_slip", "4 * 6 = 26")
    messages = failure_judge_messages("Q?", "A.\n#### 24", "4 * 6 = 26\n#### 26", proposal)
    text = messages[0]["content"] + messages[1]["content"]
    assert all(category in text for category in CATEGORIES)
    assert "arithmetic_slip (evidence: 4 * 6 = 26)" in messages[1]["content"]
    assert "No automatic check fired" in failure_judge_messages("Q?", "A", "B")[1]["content"]
    assert FAILURE_SCHEMA["properties"]["category"]["enum"] == CATEGORIES
    assert set(RULE_CATEGORIES) | set(JUDGE_CATEGORIES) < set(CATEGORIES)


def _reply(category: str, reason: str = "why") -> str:
    return "Sure! " + json.dumps({"category": category, "reason": reason})


def test_state_tracking_examples_are_left_to_the_judge_who_can_name_them():
    cases = [case for case in CASES if case.get("judge") == "state_tracking"]
    assert len(cases) >= 3
    for case in cases:
        assert _predict(case) == "none", case["id"]  # the right value as an intermediate is no overwritten answer
        assert decide(RuleProposal(None, ""), _reply("state_tracking", case["note"]))[:2] == ("state_tracking", "judge")
    assert "state_tracking: loses track of a quantity" in failure_judge_messages("Q?", "A", "B")[0]["content"]


def test_decide():
    slip = RuleProposal("arithmetic_slip", "4 * 6 = 26")
    loop = RuleProposal("loop_degeneration", "repeats", decisive=True)
    none = RuleProposal(None, "")
    assert decide(slip, None) == ("arithmetic_slip", "rules", "4 * 6 = 26")  # no judge configured
    assert decide(loop, _reply("scope_confused")) == ("loop_degeneration", "rules", "repeats")  # decisive
    category, source, evidence = decide(slip, _reply("arithmetic_slip", "6 fours are 24"))
    assert (category, source) == ("arithmetic_slip", "rules+judge") and "6 fours are 24" in evidence
    category, source, evidence = decide(slip, _reply("scope_confused", "per box"))
    assert (category, source) == ("scope_confused", "judge") and "overrode rules' arithmetic_slip" in evidence
    assert decide(none, _reply("premise_forgotten"))[:2] == ("premise_forgotten", "judge")
    assert decide(slip, "garbage")[:2] == ("arithmetic_slip", "unparsable")
    assert decide(none, '{"category": "made_up", "reason": ""}')[:2] == ("unclassified", "unparsable")
    assert decide(none, None)[:2] == ("unclassified", "rules")
    assert {
        decide(p, r)[1]
        for p, r in [(slip, None), (slip, _reply("scope_confused")), (slip, _reply("arithmetic_slip")), (slip, "")]
    } == set(SOURCES)
    assert parse_failure_category(_reply("answer_overwritten")) == ("answer_overwritten", "why")
    assert parse_failure_category("garbage")[0] == "unclassified"


def _summary_inputs():
    evals, failures = [], []
    # base fails 4 of 10 problems by loops on both seeds; "A" has 1 loop on seed 0 and 3 on seed 1,
    # and one arithmetic slip on seed 1. A category seen only for "A" must still appear for "base".
    plan = {
        ("base", 0): {"loop_degeneration": 4},
        ("base", 1): {"loop_degeneration": 4},
        ("A", 0): {"loop_degeneration": 1},
        ("A", 1): {"loop_degeneration": 3, "arithmetic_slip": 1},
    }
    for (dataset, seed), counts in plan.items():
        problems = [f"p{i}" for i in range(10)]
        wrong = iter(problems)
        for category, count in counts.items():
            for _ in range(count):
                failures.append(
                    {
                        "dataset": dataset,
                        "student": "s",
                        "seed": seed,
                        "problem_id": next(wrong),
                        "category": category,
                        "source": "rules",
                        "evidence": "",
                    }
                )
        failed = {f["problem_id"] for f in failures if f["dataset"] == dataset and f["seed"] == seed}
        evals += [
            {"dataset": dataset, "student": "s", "seed": seed, "problem_id": p, "is_correct": p not in failed} for p in problems
        ]
    return pl.DataFrame(failures), pl.DataFrame(evals)


def test_failure_summary_per_seed_with_deltas():
    failures, evals = _summary_inputs()
    summary = failure_summary(failures, evals, n_resamples=500)
    print("\n" + str(summary))
    rows = {(r["dataset"], r["category"]): r for r in summary.iter_rows(named=True)}
    assert set(rows) == {(d, c) for d in ("A", "base") for c in ("arithmetic_slip", "loop_degeneration")}
    loop = rows[("A", "loop_degeneration")]
    assert loop["n_seeds"] == 2 and loop["count_mean"] == 2.0 and loop["count_sd"] == pytest.approx(2**0.5)
    assert loop["rate_mean"] == pytest.approx(0.2)
    assert loop["delta_vs_base"] == pytest.approx(-0.2)
    assert loop["delta_ci_low"] <= -0.2 <= loop["delta_ci_high"] and loop["delta_ci_high"] < 0.05
    base_slip = rows[("base", "arithmetic_slip")]
    assert base_slip["count_mean"] == 0 and base_slip["delta_vs_base"] is None  # zero-filled, base has no delta
    slip = rows[("A", "arithmetic_slip")]
    assert slip["rate_mean"] == pytest.approx(0.05) and slip["delta_vs_base"] == pytest.approx(0.05)
    assert slip["delta_ci_low"] <= 0.05 <= slip["delta_ci_high"]
    no_base = failure_summary(failures.filter(pl.col("dataset") == "A"), evals.filter(pl.col("dataset") == "A"))
    assert no_base["delta_vs_base"].null_count() == no_base.height
    assert failure_summary(failures.clear(), evals).is_empty()
