import threading
import time

import pytest

from trace_assets.answers import (
    ACCEPTED_FORMATS,
    MAX_SCAN_CHARS,
    answer_region,
    canonical_number,
    count_reasoning_steps,
    declarations,
    extract_answer,
    extract_flexible,
    extract_label,
    extract_strict,
    numbers_match,
    parse_number,
    reference_answer,
    strip_calculator_annotations,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("18", "18"),
        ("18.00", "18"),
        ("$1,234", "1234"),
        ("1,234.50", "1234.5"),
        ("3.50", "3.5"),
        ("18.", "18"),
        ("-7", "-7"),
        ("$-3", "-3"),
        ("1/4", "0.25"),
        ("2/3", "2/3"),
        (".5", "0.5"),
        ("-0.125", "-0.125"),
        ("abc", None),
        ("", None),
        ("1/0", None),
    ],
)
def test_canonical_number(raw, expected):
    assert canonical_number(raw) == expected


@pytest.mark.parametrize(
    ("left", "right", "same"),
    [
        ("3.50", "3.5", True),
        ("$1,000", "1000", True),
        ("0.5", "1/2", True),
        ("-2", "2", False),
        (None, "2", False),
        ("x", "x", False),
    ],
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


# --------------------------------------------------------------------------------------------
# Realistic model endings: (text, strict, label, flexible).

JANET_GSM8K = (
    "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\n"
    "She makes 9 * 2 = $<<9*2=18>>18 every day at the farmer’s market.\n#### 18"
)
FEW_SHOT_RUN_ON = (
    "She has 4 × 6 = 24 apples.\n#### 24\n\n"
    "Question: Tom has 7 pens and buys 3 more. How many pens does he have?\n"
    "Answer: Tom has 7 + 3 = 10 pens.\n#### 10"
)
ENDINGS = [
    # GSM8K format, as the student prompt asks
    pytest.param(JANET_GSM8K, "18", None, "18", id="gsm8k-annotated"),
    pytest.param("So she pays 3 x 4 = 12 dollars.\n#### 12", "12", None, "12", id="gsm8k-plain"),
    pytest.param("#### $18.00", "18", None, "18", id="hash-currency-decimals"),
    pytest.param("####-5", "-5", None, "-5", id="hash-no-space-negative"),
    pytest.param("#### 1,234", "1234", None, "1234", id="hash-thousands"),
    pytest.param("#### 0.75", "0.75", None, "0.75", id="hash-decimal"),
    pytest.param("#### 12 apples", "12", None, "12", id="hash-unit"),
    pytest.param("#### €5", "5", None, "5", id="hash-euro"),
    pytest.param("The store takes 45% off.\n#### 45%", "45", None, "45", id="hash-percent"),
    pytest.param("#### 2 1/2", "2.5", None, "2.5", id="hash-mixed-number"),
    pytest.param("#### **18**", "18", None, "18", id="hash-bold"),
    # a declared answer followed by arithmetic reads the result
    pytest.param("#### 120 - 36 = 84", "84", None, "84", id="hash-arithmetic"),
    # (flexible does not read ####, by design: its fallback takes the last number)
    pytest.param("#### 120 - 36", "84", None, "36", id="hash-bare-expression"),
    pytest.param("#### (120 - 36) / 2 = 42", "42", None, "42", id="hash-parenthesised"),
    pytest.param("#### 120-36=84", "84", None, "84", id="hash-unspaced-arithmetic"),
    pytest.param("#### 3-(-2)=5", "5", None, "5", id="hash-nested-negative"),
    pytest.param("#### 18. So she makes 18.", "18", None, "18", id="hash-restated-same-line"),
    pytest.param("The answer is 5-6 hours.", None, None, None, id="range-is-not-a-number"),
    pytest.param("#### 5 x 3 = 15 dollars", "15", None, "15", id="hash-x-times-unit"),
    pytest.param("The answer is 120 - 36 = 84.", None, None, "84", id="phrase-arithmetic"),
    pytest.param("So the answer is 3 × 4 = 12", None, None, "12", id="phrase-times-sign"),
    pytest.param("The answer is 3 boxes × 4 apples = 12 apples.", None, None, "12", id="phrase-units-in-arithmetic"),
    pytest.param("The answer is 5 x 3 = 15 dollars.", None, None, "15", id="phrase-x-times"),
    # signs: Unicode minus and dashes make negatives only where they are signs
    pytest.param("#### −3", "-3", None, "-3", id="unicode-minus"),
    pytest.param("The temperature fell to −3 degrees.\n#### −3", "-3", None, "-3", id="unicode-minus-prose"),
    pytest.param("#### –7", "-7", None, "-7", id="en-dash-sign"),
    pytest.param("His balance changed by −$15.\nThe answer is −$15.", None, None, "-15", id="minus-currency"),
    pytest.param("The answer is -$5.", None, None, "-5", id="ascii-minus-currency"),
    pytest.param("He has 10 – 3 = 7 marbles left.", None, None, "7", id="en-dash-subtraction"),
    pytest.param("She had 10 apples and gave away 3, so 10 - 3", None, None, "3", id="binary-minus-is-not-a-sign"),
    # times and ratios are not numbers
    pytest.param("The movie ends at 3:30 PM.", None, None, None, id="time-prose"),
    pytest.param("The answer is 3:30.", None, None, None, id="time-phrase"),
    pytest.param("It leaves at 2:15.\n#### 3:30", None, None, None, id="time-hash"),
    pytest.param("It takes 75 minutes, so they arrive at 3:30 pm", None, None, None, id="time-last"),
    # currency, percentages, thousands, units, bold
    pytest.param("The tax is 8%, so she pays 0.08 × 50 = $4.", None, None, "4", id="percent-then-dollars"),
    pytest.param("The total is $1,234.50.", None, None, "1234.5", id="dollars-thousands"),
    pytest.param("Apples cost £3.50 a kilo, so 2 kg cost £7.00", None, None, "7", id="pounds"),
    pytest.param("Le total est 1\u202f234 €.", None, None, "1234", id="narrow-nbsp-thousands"),
    pytest.param("The answer is 1,000,000.", None, None, "1000000", id="millions"),
    pytest.param("She ends up with 12 apples.", None, None, "12", id="trailing-unit"),
    pytest.param("Therefore, Janet makes **$18** every day.", None, None, "18", id="bold-dollars"),
    pytest.param("**Step 3:** Multiply.\n9 × $2 = $18\n\n**Final Answer:** **$18**", None, None, "18", id="qwen-bold-final"),
    pytest.param("The answer is: **$1,234.50**", None, None, "1234.5", id="phrase-bold-dollars"),
    pytest.param("It takes .5 hours.", None, None, "0.5", id="leading-dot-decimal"),
    pytest.param("The answer is approximately 3.5 hours.", None, None, "3.5", id="phrase-with-adverb"),
    pytest.param("He scored 14 points and finished 3rd.", None, None, "14", id="ordinal-skipped"),
    # fractions and mixed numbers
    pytest.param("Each person drinks 3/4 of a liter.", None, None, "0.75", id="fraction"),
    pytest.param("She needs 2 1/2 cups of flour.", None, None, "2.5", id="mixed-number"),
    pytest.param("She walks 2½ miles.", None, None, "2.5", id="vulgar-fraction"),
    pytest.param("Each gets 2/3 of a pie.", None, None, "2/3", id="non-terminating-fraction"),
    # LaTeX
    pytest.param(
        "Janet makes \\( 9 \\times 2 = 18 \\) dollars.\n\nThe final answer is \\(\\boxed{18}\\).",
        None,
        None,
        "18",
        id="qwen-boxed",
    ),
    pytest.param("Thus she makes $18 a day.\n\n\\[\n\\boxed{18}\n\\]", None, None, "18", id="display-boxed"),
    pytest.param("Final Answer: The final answer is $18$. I hope it is correct.", None, None, "18", id="minerva"),
    pytest.param("\\boxed{\\dfrac{1}{2}}", None, None, "0.5", id="boxed-dfrac"),
    pytest.param("So each friend gets \\(\\frac{3}{4}\\) of a pizza.", None, None, "0.75", id="inline-frac"),
    pytest.param("\\[\n\\boxed{1{,}234}\n\\]", None, None, "1234", id="boxed-latex-thousands"),
    pytest.param("\\boxed{45\\%}", None, None, "45", id="boxed-percent"),
    pytest.param("\\boxed{12 \\text{ apples}}", None, None, "12", id="boxed-text-unit"),
    pytest.param("\\boxed{\\$45}", None, None, "45", id="boxed-dollar"),
    pytest.param("\\boxed{2\\frac{1}{2}}", None, None, "2.5", id="boxed-mixed"),
    pytest.param("\\boxed{-\\frac{3}{4}}", None, None, "-0.75", id="boxed-negative-frac"),
    pytest.param("The answer is \\(\\sqrt{16}\\) meters.", None, None, "4", id="math-verify-sqrt"),
    pytest.param("\\boxed{2^{10}}", None, None, "1024", id="math-verify-power"),
    pytest.param("\\boxed{\\frac{1}{2}+\\frac{1}{4}}", None, None, "0.75", id="math-verify-sum"),
    pytest.param("We found 3 and 4, so \\boxed{x + 1}", None, None, None, id="boxed-not-a-number"),
    pytest.param("Solving gives \\boxed{x = 5}", None, None, "5", id="boxed-equation"),
    # restated answers
    pytest.param("The answer is 18. So, 18 eggs.", None, None, "18", id="restated"),
    pytest.param("The answer is 42. Check: 6 * 7 = 42 and 2 + 3 = 5", None, None, "42", id="phrase-then-check"),
    pytest.param("#### 18\n\nI hope this helps! Let me know if you have other questions. 😊", "18", None, "18", id="chatty-tail"),
    pytest.param("The answer is 5. The answer is 5. " * 50, None, None, "5", id="loop"),
    # labels (titanium)
    pytest.param("GOAL: eggs sold\nF1: 16 eggs\nC1: 16 - 3 - 4 = 9\nC2: 9 * 2 = 18\nANSWER: 18", None, "18", "18", id="titanium"),
    pytest.param("**ANSWER:** $45", None, "45", "45", id="label-bold"),
    pytest.param("ANSWER: 12 apples", None, "12", "12", id="label-unit"),
    pytest.param("Answer: 1/3", None, "1/3", "1/3", id="label-fraction"),
    pytest.param("C1: 3 * 4 = 12\nANSWER: 12\n#### 12", "12", "12", "12", id="label-and-hash"),
    # changed answers, run-on few-shot, headings
    pytest.param("#### 24\nWait, I forgot a box: 4 × 7 = 28.\n#### 28", "28", None, "28", id="changed-answer"),
    pytest.param("ANSWER: 7\nANSWER: 9", None, "9", "9", id="changed-label"),
    pytest.param(FEW_SHOT_RUN_ON, "24", None, "10", id="few-shot-run-on"),
    pytest.param("#### 18\nNote: she has 3 ducks.", "18", None, "3", id="number-after-declaration"),
    pytest.param(
        "#### Step 1: Eggs left\n16 - 3 - 4 = 9\n#### Step 2: Money\n9 × 2 = 18\n#### 18", "18", None, "18", id="md-headings"
    ),
    pytest.param(
        "#### 1. Eggs left\n16 - 3 - 4 = 9\n#### 2. Money\n9 × 2 = 18\n\n#### 18", "18", None, "18", id="md-numbered-headings"
    ),
    # empty, garbage, truncated
    pytest.param("", None, None, None, id="empty"),
    pytest.param("asdf qwerty", None, None, None, id="garbage"),
    pytest.param("She has 5 apples.\n#### ", None, None, "5", id="truncated-after-marker"),
    pytest.param("Half is 48 / 2 = 24.\n#### 120 - 36 =", "84", None, "36", id="truncated-after-equals"),
    pytest.param("She has twelve.\n#### twelve", None, None, None, id="words-only"),
    pytest.param("9" * 5000, None, None, None, id="digit-flood"),
]


@pytest.mark.parametrize(("text", "strict", "label", "flexible"), ENDINGS)
def test_model_endings(text, strict, label, flexible):
    extraction = extract_answer(text)
    assert (extraction.strict, extraction.label, extraction.flexible) == (strict, label, flexible)
    assert (extract_strict(text), extract_label(text), extract_flexible(text)) == (strict, label, flexible)
    assert extraction.answer == (strict or label or flexible)


def test_table_is_big_enough():
    assert len(ENDINGS) >= 50


@pytest.mark.parametrize(
    ("text", "declared", "changed"),
    [
        ("#### 24\nWait, I forgot a box: 4 × 7 = 28.\n#### 28", ("24", "28"), True),
        ("#### 18\n#### 18.00", ("18", "18"), False),
        (FEW_SHOT_RUN_ON, ("24",), False),  # the invented next question's answer is not the model's
        ("C1: 3 * 4 = 12\nANSWER: 12\n#### 12", ("12", "12"), False),
        ("ANSWER: 7\nANSWER: 9", ("7", "9"), True),
        ("#### 1. Eggs left\n9 × 2 = 18\n#### 18", ("18",), False),
        ("No declaration, just 18.", (), False),
    ],
)
def test_declared_answers_and_changed_answer(text, declared, changed):
    extraction = extract_answer(text)
    assert extraction.declared_answers == declared
    assert extraction.changed_answer is changed


def test_declarations_give_kind_value_and_place_in_the_whole_text():
    prefix = "x " * 60_000  # longer than MAX_SCAN_CHARS: the answer region starts inside the text
    text = prefix + "so 3\n#### 3#### 17\n> ANSWER:\n 4\n#### 3:30\nQuestion: next\n#### 9"
    found = declarations(text)
    assert [(d.kind, d.value) for d in found] == [("strict", "3"), ("strict", "17"), ("label", "4"), ("strict", None)]
    assert [text[d.start : d.start + 4] for d in found[:2]] == ["####", "####"]
    assert found[0].line == found[1].line == "#### 3#### 17" and text[found[1].line_start : found[1].line_end] == found[1].line
    assert found[2].line == "> ANSWER:\n 4"  # the answer read from the next line belongs to the declaration
    assert answer_region(text) == (len(text) - MAX_SCAN_CHARS, text.index("Question: next"))


def test_new_turn_only_cuts_after_the_completion_started():
    # A restated problem at the very top is not an invented next turn.
    assert extract_strict("Problem: 3 boxes of 4.\nSo 3 * 4 = 12.\n#### 12") == "12"
    assert extract_strict("So 3 * 4 = 12.\n\nProblem 2: 5 boxes of 2.\n#### 10") is None


def test_accepted_formats_cover_every_column():
    assert set(ACCEPTED_FORMATS) == {"strict", "label", "flexible", "answer"}
    assert "####" in ACCEPTED_FORMATS["strict"] and "ANSWER" not in ACCEPTED_FORMATS["strict"]
    assert "ANSWER:" in ACCEPTED_FORMATS["label"]
    # strict accepts only ####: a label or a phrase alone leaves it empty
    assert extract_strict("ANSWER: 12") is None
    assert extract_strict("The answer is 12. \\boxed{12}") is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("−3", "-3"),
        ("–3", "-3"),
        ("2 1/2", "2.5"),
        ("2 3/2", None),
        ("45%", "45"),
        ("€5", "5"),
        ("\\frac{3}{4}", "0.75"),
        ("--5", None),
        ("+5", "5"),
        ("1e5", None),
        ("1 + 1", None),
        (None, None),
    ],
)
def test_parse_number_new_spellings(raw, expected):
    assert canonical_number(raw) == expected


def test_math_verify_path_works_off_the_main_thread():
    result = []
    worker = threading.Thread(target=lambda: result.append(extract_flexible("\\boxed{2^{10}} and \\(\\sqrt{16}\\)")))
    worker.start()
    worker.join(timeout=30)
    assert result == ["1024"]


@pytest.mark.parametrize(
    "text",
    [
        "#### " * 20000,
        "\\boxed{" * 5000,
        "\\boxed{9^{9^{9^{9}}}}",
        "\\boxed{10000000!}",
        "\\boxed{2^{-10000}}",
        "\\boxed{\\frac{1}{0}}",
        "#### 1" + " * 99999999999" * 500,
        "((((((((" * 10000 + "1",
        "1,000," * 20000,
        "3:30 " * 20000,
        "-" * 100000,
        "$" * 100000,
        "ANSWER: 5\n" * 20000,
        "The answer is " * 5000,
        "The answer is \\(" + "\\sqrt{" * 60 + "2" + "}" * 60 + "\\)",
    ],
)
def test_hostile_outputs_are_fast_and_do_not_crash(text):
    start = time.perf_counter()
    extraction = extract_answer(text)
    assert time.perf_counter() - start < 3
    for value in (extraction.strict, extraction.label, extraction.flexible):
        assert value is None or parse_number(value) is not None
    assert len(extraction.declared_answers) <= 64


def test_huge_values_are_refused_not_computed():
    assert extract_flexible("\\boxed{9^{9^{9^{9}}}}") is None
    assert extract_strict("#### 1" + " * 99999999999" * 500) is None
    assert extract_answer(None).method == "none"


# --------------------------------------------------------------------------------------------
# GSM8K reference solutions (written in GSM8K's format; the dataset is not on disk).

GSM8K_REFERENCES = [
    (
        "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72",
        "72",
    ),
    (
        "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = $<<0.2*50=10>>10.\n#### 10",
        "10",
    ),
    (
        "In the beginning, Betty has only 100 / 2 = $<<100/2=50>>50.\nBetty's grandparents gave her 15 * 2 = $<<15*2=30>>30.\n"
        "This means, Betty needs 100 - 50 - 30 - 15 = $<<100-50-30-15=5>>5 more.\n#### 5",
        "5",
    ),
    (
        "Maila read 12 x 2 = <<12*2=24>>24 pages today.\nSo she was able to read a total of 12 + 24 = <<12+24=36>>36 pages since yesterday.\n"
        "There are 120 - 36 = <<120-36=84>>84 pages left to be read.\nSince she wants to read half of the remaining pages tomorrow, "
        "then she should read 84/2 = <<84/2=42>>42 pages.\n#### 42",
        "42",
    ),
    (
        "He writes each friend 3*2=<<3*2=6>>6 pages a week\nSo he writes 6*2=<<6*2=12>>12 pages every week\n"
        "That means he writes 12*52=<<12*52=624>>624 pages a year\n#### 624",
        "624",
    ),
    (
        "There are 80/100 * 10 = <<80/100*10=8>>8 more purple flowers than yellow flowers.\nSo in Mark's garden, there are 10 + 8 = "
        "<<10+8=18>>18 purple flowers.\nPurple and yellow flowers sum up to 10 + 18 = <<10+18=28>>28 flowers.\n"
        "That means in Mark's garden there are 25/100 * 28 = <<25/100*28=7>>7 green flowers.\nSo in total Mark has 28 + 7 = <<28+7=35>>35 plants in his garden.\n#### 35",
        "35",
    ),
    (
        "The house cost 80,000 + 50,000 = $<<80000+50000=130000>>130,000.\nThe repairs increased its value by 80,000 * 1.5 = "
        "<<80000*1.5=120000>>120,000.\nSo the new value is 120,000 + 80,000 = $<<120000+80000=200000>>200,000.\n"
        "So he made a profit of 200,000 - 130,000 = $<<200000-130000=70000>>70,000.\n#### 70000",
        "70000",
    ),
    (
        "The company pays 1,000 workers $1.25 an hour for 8 hours, so 1000 * 1.25 * 8 = $<<1000*1.25*8=10000>>10,000 a day.\n"
        "Over 5 days that is 10,000 * 5 = $<<10000*5=50000>>50,000.\n#### 50,000",
        "50000",
    ),
    (
        "The store had 1,500 + 734 = <<1500+734=2234>>2,234 books.\nAfter the sale it has 2,234 - 1,000 = <<2234-1000=1234>>1,234 books.\n#### 1,234",
        "1234",
    ),
    ("At noon it is 5 degrees. By 8 pm it fell 8 degrees, so it is 5 - 8 = <<5-8=-3>>-3 degrees.\n#### -3", "-3"),
    ("She spent 20 + 35 = $<<20+35=55>>55 but had only $50.\nHer balance is 50 - 55 = <<50-55=-5>>-5 dollars.\n#### -5", "-5"),
    ("Each slice costs 3/4 = $<<3/4=0.75>>0.75.\nTwo slices cost 0.75 * 2 = $<<0.75*2=1.5>>1.5.\n#### 1.5", "1.5"),
    ("The recipe needs 2.5 cups per batch, so 3 batches need 2.5 * 3 = <<2.5*3=7.5>>7.5 cups.\n#### 7.5", "7.5"),
    ("A quarter of the 9 pies is 9/4 = <<9/4=2.25>>2.25 pies.\n#### 2.25", "2.25"),
    ("The train leaves at 3:30 pm and the trip takes 2 hours, so it covers 60 * 2 = <<60*2=120>>120 miles.\n#### 120", "120"),
    ("The discount is 25% of $80, which is 80 * 0.25 = $<<80*0.25=20>>20.\nShe pays 80 - 20 = $<<80-20=60>>60.\n#### 60", "60"),
    ("Tom is 3rd in line and each person ahead takes 4 minutes, so he waits 2 * 4 = <<2*4=8>>8 minutes.\n#### 8", "8"),
    ("John has 3 boxes of 12 = <<3*12=36>>36 pencils and gives away 36 - 6 = <<36-6=30>>30.\n#### 30", "30"),
    ("The answer is 0 because 7 - 7 = <<7-7=0>>0.\n#### 0", "0"),
    ("They raised 1,250,000 / 50 = $<<1250000/50=25000>>25,000 per school.\n#### 25000", "25000"),
    ("Half an hour is 0.5 hours, so she earns 0.5 * 18 = $<<0.5*18=9>>9.\n#### 9.00", "9"),
    ("The ratio is 2:3, so 2/5 * 40 = <<2/5*40=16>>16 are boys.\n#### 16", "16"),
]


@pytest.mark.parametrize(("solution", "answer"), GSM8K_REFERENCES)
def test_every_gsm8k_reference_extracts_exactly(solution, answer):
    clean = strip_calculator_annotations(solution)
    assert "<<" not in clean
    for text in (solution, clean):
        assert reference_answer(text) == answer
        extraction = extract_answer(text)
        assert extraction.strict == answer and extraction.method == "strict"
        assert extraction.declared_answers == (answer,) and not extraction.changed_answer
        assert numbers_match(extraction.answer, answer)
    assert count_reasoning_steps(clean) == len(clean.split("####")[0].strip().splitlines())
