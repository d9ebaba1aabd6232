import pytest

from trace_assets.evaluation.degeneration import is_degenerate_loop, repeated_ngram_ratio
from trace_assets.reporting.failures import arithmetic_slips, classify_by_rules, parse_failure_category


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


def test_aa_section_and_conditional_contrasts_read_plainly():
    import numpy as np
    import polars as pl

    from trace_assets.reporting.report import aa_section, contrasts_section
    from trace_assets.reporting.stats import NoiseSettings, contrast_table

    rng = np.random.default_rng(0)
    rows = [
        {"dataset": dataset, "student": "s", "seed": seed, "problem_id": f"p{j:03d}", "is_correct": bool(rng.random() < p)}
        for dataset, p, seeds in (("A", 0.5, 1), ("A_aa", 0.5, 1), ("B", 0.9, 1))
        for seed in range(seeds)
        for j in range(300)
    ]
    evals = pl.DataFrame(rows)
    conditional = contrast_table(evals, [("B", "A"), ("A_aa", "A")])
    text = "\n".join(contrasts_section(conditional.head(1)) + aa_section(conditional.tail(1)))
    assert "needs at least two seeds" in text and "Per-run test, conditional on these runs" in text
    assert "## A/A control" in text and "not checkable yet" in text
    declared = contrast_table(evals, [("B", "A"), ("A_aa", "A")], settings=NoiseSettings(declared_sd=0.15))
    text = "\n".join(contrasts_section(declared.head(1)) + aa_section(declared.tail(1)))
    assert "**B** > **A**" in text and "not distinguishable, as it should be" in text
    off = declared.tail(1).with_columns(pl.lit(True).alias("distinguishable"))
    assert "DISTINGUISHABLE" in "\n".join(aa_section(off)) and aa_section(declared.head(0)) == []


def test_results_per_task_say_what_h_is_where_it_is_no_human_explanation():
    import polars as pl

    from trace_assets.reporting.report import task_sections

    rows = [
        {"dataset": dataset, "student": "s", "seed": 0, "problem_id": f"{task}{j}", "is_correct": j % 2 == 0, "task": task}
        for task in ("gsm8k", "countdown", "mbpp")
        for dataset in ("H", "G")
        for j in range(6)
    ]
    text = "\n".join(task_sections(pl.DataFrame(rows), [("G", "H")], None))
    assert "**H on countdown** is the generator's step lines" in text
    assert "**H on mbpp** is the bare reference code" in text
    assert "H on gsm8k" not in text  # its references are human-written
    only_math = [{**row, "task": "math" if row["task"] == "countdown" else row["task"]} for row in rows if row["task"] != "mbpp"]
    assert "**H on" not in "\n".join(task_sections(pl.DataFrame(only_math), [("G", "H")], None))


def test_easy_medium_hard_are_unions_of_the_step_buckets():
    import polars as pl

    from trace_assets.reporting.report import by_difficulty
    from trace_assets.reporting.stats import difficulty_bucket, difficulty_level

    assert [difficulty_level(steps) for steps in (1, 2, 3, 4, 5, 8)] == ["1 Easy"] * 2 + ["2 Medium"] * 2 + ["3 Hard"] * 2
    rows = [
        {"dataset": "G", "student": "s", "seed": 0, "problem_id": f"p{steps}_{j}", "difficulty": steps, "is_correct": steps <= 4}
        for steps in range(1, 9)
        for j in range(5)
    ]
    levels = by_difficulty(pl.DataFrame(rows), difficulty_level)
    assert levels["bucket"].to_list() == ["1 Easy", "2 Medium", "3 Hard"] and levels["n"].to_list() == [10, 10, 20]
    assert levels["accuracy"].to_list() == [1.0, 1.0, 0.0]
    fine = by_difficulty(pl.DataFrame(rows))
    assert fine["bucket"].n_unique() == 4 and {difficulty_bucket(s) for s in (5, 8)} == {"5-6 steps", "7+ steps"}


def test_loss_table_gives_the_plots_numbers_per_arm():
    import polars as pl
    import pytest

    from trace_assets.reporting.report import loss_table

    rows = [
        {"dataset": "G", "student": "s", "seed": seed, "step": step, "train_loss": train, "eval_loss": evaluation}
        for seed, shift in ((0, 0.0), (1, 0.2))
        for step, train, evaluation in (
            (1, 2.0 + shift, None),
            (5, 1.5 + shift, 1.8 + shift),
            (10, 1.0 + shift, None),
            (10, None, 1.6 + shift),
        )
    ]
    # shuffled: the table reads the steps in order, not the rows
    frame = pl.DataFrame(rows).sample(fraction=1.0, shuffle=True, seed=3)
    row = loss_table(frame).row(0, named=True)
    assert (row["dataset"], row["student"], row["seeds"], row["steps"]) == ("G", "s", 2, 10)
    assert row["train_loss_first"] == pytest.approx(2.1) and row["train_loss_last"] == pytest.approx(1.1)
    assert row["eval_loss_last"] == pytest.approx(1.7) and row["eval_loss_lowest"] == pytest.approx(1.7)
    assert row["eval_loss_last_sd"] == pytest.approx(0.1414, abs=1e-3)
    assert loss_table(frame.head(0)).is_empty()
