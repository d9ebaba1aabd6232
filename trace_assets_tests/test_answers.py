import pytest

from trace_assets.answers import (
    canonical_number,
    count_reasoning_steps,
    extract_answer,
    extract_flexible,
    extract_label,
    extract_strict,
    numbers_match,
    reference_answer,
    strip_calculator_annotations,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("18", "18"), ("18.00", "18"), ("$1,234", "1234"), ("1,234.50", "1234.5"), ("3.50", "3.5"),
        ("18.", "18"), ("-7", "-7"), ("$-3", "-3"), ("1/4", "0.25"), ("2/3", "2/3"), (".5", "0.5"),
        ("-0.125", "-0.125"), ("abc", None), ("", None), ("1/0", None),
    ],
)
def test_canonical_number(raw, expected):
    assert canonical_number(raw) == expected


@pytest.mark.parametrize(
    ("left", "right", "same"),
    [("3.50", "3.5", True), ("$1,000", "1000", True), ("0.5", "1/2", True), ("-2", "2", False), (None, "2", False), ("x", "x", False)],
)
def test_numbers_match(left, right, same):
    assert numbers_match(left, right) is same


def test_strict_keeps_declared_answer_when_model_recites_numbers_after_it():
    text = "She has 4*6=24 apples.\n#### 24\n\nQuestion 2: Tom has 7 pens and buys 3 more, so 10."
    assert extract_strict(text) == "24"
    assert extract_flexible(text) == "10"  # the fallback is fooled; reported separately on purpose
    assert extract_answer(text).answer == "24"
    assert extract_answer(text).method == "strict"


def test_strict_variants_real_models_produce():
    assert extract_strict("so the total is $1,200.\n#### $1,200.00") == "1200"
    assert extract_strict("####-5") == "-5"
    assert extract_strict("The answer is #### 3.50 dollars") == "3.5"
    assert extract_strict("#### twelve") is None
    assert extract_strict("") is None


def test_label_extraction_for_titanium():
    text = "GOAL: total apples\nF1: 3 boxes\nC1: 3 * 4 = 12\nANSWER: 12\n"
    assert extract_label(text) == "12"
    assert extract_strict(text) is None
    assert extract_answer(text).method == "label"
    assert extract_label("**ANSWER:** $45") == "45"


def test_flexible_prefers_answer_phrase_over_trailing_numbers():
    assert extract_flexible("The answer is 42. Check: 6 * 7 = 42 and 2 + 3 = 5") == "42"
    assert extract_flexible("so \\boxed{17} is it, 3 steps") == "17"
    assert extract_flexible("first 3 then 4 then 5.") == "5"
    assert extract_flexible("no numbers at all") is None


@pytest.mark.parametrize("text", ["", "   ", "####", "#### #### ####", "9" * 5000, "1 1 1 1 " * 2000])
def test_degenerate_outputs_do_not_crash(text):
    extraction = extract_answer(text)
    assert extraction.method in {"strict", "label", "flexible", "none"}


def test_reference_solution_helpers():
    solution = "Half is 48/2 = <<48/2=24>>24.\nTotal 48+24 = <<48+24=72>>72.\n#### 72"
    clean = strip_calculator_annotations(solution)
    assert "<<" not in clean and "24" in clean
    assert reference_answer(clean) == "72"
    assert count_reasoning_steps(clean) == 2
    with pytest.raises(ValueError, match="####"):
        reference_answer("no final line")
