import polars as pl
import pytest

from trace_assets.experiment import PROJECT_ROOT
from trace_assets.generation.types import Completion, Sampling
from trace_assets.judging.build import faithfulness_requests, judge_requests, verdict_rows
from trace_assets.judging.verdicts import parse_verdict
from trace_assets.styles.library import load_style

IDS = ["restates_problem", "numbered_steps"]


@pytest.mark.parametrize(
    ("text", "parsed", "conforms", "failed"),
    [
        ('{"conforms": true, "failed_criteria": [], "reason": "fine"}', True, True, ()),
        (
            'Sure! ```json\n{"conforms": false, "failed_criteria": ["numbered_steps"], "reason": "no steps"}\n```',
            True,
            False,
            ("numbered_steps",),
        ),
        ('{"conforms": "yes", "failed_criteria": "restates_problem", "reason": "x"}', True, False, ("restates_problem",)),
        (
            '{"conforms": true, "failed_criteria": ["numbered_steps"], "reason": "contradicts itself"}',
            True,
            False,
            ("numbered_steps",),
        ),
        ('{"conforms": true, "failed_criteria": ["not_a_criterion"], "reason": "y"}', True, True, ()),
        ('{"conforms": tru', False, None, ()),
        ('{"failed_criteria": [], "reason": "no verdict"}', False, None, ()),
        ("The solution looks good to me.", False, None, ()),
        ("", False, None, ()),
        ('{"reason": "brace } inside a string", "conforms": false, "failed_criteria": []}', True, False, ()),
    ],
)
def test_parse_verdict(text, parsed, conforms, failed):
    verdict = parse_verdict(text, IDS)
    assert verdict.parsed is parsed
    assert verdict.conforms is conforms
    assert verdict.failed_criteria == failed
    if not parsed:
        assert verdict.error


def _traces(completions):
    return pl.DataFrame(
        {
            "trace_id": [f"t{i}" for i in range(len(completions))],
            "problem_id": ["p1"] * len(completions),
            "style": ["normal"] * len(completions),
            "kind": ["solve"] * len(completions),
            "style_version": ["v"] * len(completions),
            "completion": completions,
            "finish_reason": ["stop"] * len(completions),
            "n_tokens": [5] * len(completions),
            "extracted_answer": ["4"] * len(completions),
            "is_correct": [True] * len(completions),
        }
    )


def test_unparsable_judge_output_is_never_a_pass():
    style = load_style(PROJECT_ROOT / "styles", "normal")
    traces = _traces(["2+2=4\n#### 4", "Adding: 2+2=4\n#### 4", "2+2=4 so 4", "So 2+2=4\n#### 4"])
    sampling = Sampling(temperature=0, n=1)
    requests = judge_requests(traces, {"p1": "What is 2+2?"}, {"normal": style}, "judge", sampling, max_chars=1000)
    enum = requests["t0"].json_schema["properties"]["failed_criteria"]["items"]["enum"]
    assert enum == [item.id for item in style.spec.rubric]  # the judge can only name this style's criteria
    replies = [
        '{"conforms": true, "failed_criteria": [], "reason": "ok"}',
        "I think it is fine",
        '{"conforms": true, "failed_criteria": [], "reason": "ok"}',
        None,
    ]
    completions = {
        (requests[f"t{i}"].key, 0): Completion(requests[f"t{i}"].key, 0, text, "stop", 10, 10)
        for i, text in enumerate(replies)
        if text is not None
    }
    rows = verdict_rows(traces, {"normal": style}, requests, completions, "judge", max_chars=1000)
    assert rows["conforms"].to_list() == [True, False, False, False]
    assert rows["verdict_source"].to_list() == ["both", "rules", "both", "rules"]
    assert rows["judge_parsed"].to_list() == [True, False, True, False]
    assert rows["rules_failed"][2] == "answer_line"  # rules fail even though the judge said yes
    assert rows["judge_error"][3] == "judge generation failed"


def test_a_trace_the_judge_saw_only_in_part_never_passes():
    style = load_style(PROJECT_ROOT / "styles", "normal")
    long_trace = "First, 2 + 2 = 4. " * 80 + "\n#### 4"  # about 1,450 characters
    traces = _traces(["2+2=4\n#### 4", long_trace])
    sampling = Sampling(temperature=0, n=1)
    requests = judge_requests(traces, {"p1": "What is 2+2?"}, {"normal": style}, "judge", sampling, max_chars=1000)
    shown = requests["t1"].messages[-1]["content"]
    assert shown.endswith("[...truncated]") and long_trace[:1000] in shown and long_trace not in shown
    assert (
        long_trace
        in judge_requests(traces, {"p1": "q"}, {"normal": style}, "judge", sampling, 2000)["t1"].messages[-1]["content"]
    )
    yes = '{"conforms": true, "failed_criteria": [], "reason": "ok"}'
    completions = {(r.key, 0): Completion(r.key, 0, yes, "stop", 10, 10) for r in requests.values()}
    rows = verdict_rows(traces, {"normal": style}, requests, completions, "judge", max_chars=1000)
    assert rows["judge_truncated"].to_list() == [False, True]
    assert rows["conforms"].to_list() == [True, False]  # the judge said yes to both; the cut one cannot pass


def test_the_judge_says_whether_a_paraphrase_follows_the_human_solution():
    style = load_style(PROJECT_ROOT / "styles", "normal")
    traces = _traces(["2+2=4\n#### 4", "Two and two: 2+2=4.\n#### 4", "2*2=4\n#### 4", "4\n#### 4"]).with_columns(
        pl.Series("kind", ["solve", "paraphrase", "paraphrase", "paraphrase"])
    )
    problems = {"p1": {"question": "What is 2+2?", "reference_solution": "2+2=4\n#### 4"}}
    sampling = Sampling(temperature=0, n=1)
    faithful = faithfulness_requests(traces, problems, "judge", sampling, max_chars=1000)
    assert sorted(faithful) == ["t1", "t2", "t3"]  # paraphrases only
    assert "Original solution:\n2+2=4" in faithful["t1"].messages[-1]["content"]
    requests = judge_requests(traces, {"p1": "What is 2+2?"}, {"normal": style}, "judge", sampling, max_chars=1000)
    replies = {
        "t1": '{"faithful": true, "reason": "same"}',
        "t2": '{"faithful": false, "reason": "multiplies"}',
        "t3": "it is fine",
    }
    completions = {(faithful[t].key, 0): Completion(faithful[t].key, 0, text, "stop", 5, 5) for t, text in replies.items()}
    rows = verdict_rows(traces, {"normal": style}, requests, completions, "judge", 1000, faithful)
    assert rows["judge_faithful"].to_list() == [None, True, False, None]
