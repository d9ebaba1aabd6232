import random

import polars as pl

from trace_assets.datasets.recipes import build_dataset, corrupt_trace, trim_after_answer
from trace_assets.datasets.stats import gzip_ratio, template_line_share
from trace_assets.experiment import DatasetRecipe


def words(text: str) -> int:
    return len(text.split())


TRAIN = pl.DataFrame({
    "problem_id": ["p1", "p2", "p3", "p4"],
    "question": ["Q1?", "Q2?", "Q3?", "Q4?"],
    "reference_solution": ["1+1=2\n#### 2", "2*3=6\n#### 6", "9-4=5\n#### 5", "8/2=4\n#### 4"],
})


def trace(trace_id, problem, correct, conforms, text, kind="solve", style="normal", answer="2", finish="stop"):
    return {
        "trace_id": trace_id, "problem_id": problem, "style": style, "kind": kind, "style_version": "v1",
        "completion": text, "finish_reason": finish, "n_tokens": words(text), "extracted_answer": answer,
        "is_correct": correct, "conforms": conforms,
    }


JUDGED = pl.DataFrame([
    trace("a1", "p1", True, True, "So 1+1=2.\n#### 2\nAlso note that 3 is odd."),
    trace("a2", "p1", True, True, "We add: 1+1=2.\n#### 2"),
    trace("b1", "p2", True, True, "Multiply 2*3=6 here.\n#### 6"),
    trace("b2", "p2", False, True, "Multiply 2*3=5.\n#### 5", answer="5"),
    trace("c1", "p3", True, False, "9-4=5 so 5"),
    trace("c2", "p3", False, True, "9-4=4\n#### 4", answer="4"),
    trace("d1", "p4", False, False, "8/2=", answer=None, finish="length"),
    trace("e1", "p1", True, True, "Problem: add.\nStep 1: 1+1=2\n#### 2", kind="paraphrase"),
    trace("e2", "p2", False, True, "Step 1: 2*3=7\n#### 7", kind="paraphrase", answer="7"),
])

RECIPES = {
    "G": DatasetRecipe(recipe="G", style="normal"),
    "W": DatasetRecipe(recipe="W", style="normal"),
    "H": DatasetRecipe(recipe="H"),
    "HS": DatasetRecipe(recipe="H_style", style="normal"),
    "mix": DatasetRecipe(recipe="mixture", style="normal", flawed_fraction=1.0, flaw="both"),
    "trim": DatasetRecipe(recipe="G", style="normal", trim_after_answer=True),
    "matched": DatasetRecipe(recipe="H", match_tokens_with="tiny"),
    "tiny": DatasetRecipe(recipe="G", style="normal", trim_after_answer=True, per_problem=1),
}


def build(name, seed=0):
    frame, report = build_dataset(name, RECIPES, JUDGED, TRAIN, seed, words)
    return frame, report


def test_g_is_correct_and_conforming_one_per_problem():
    frame, report = build("G")
    assert report.candidates == 3
    assert sorted(frame["problem_id"]) == ["p1", "p2"]
    assert frame["trace_id"].to_list()[1] == "b1"
    assert frame["is_correct"].all() and frame["conforms"].all()
    assert set(frame["prompt"]) == {"Q1?", "Q2?"}


def test_choice_among_candidates_is_seeded():
    chosen = {seed: build("G", seed)[0].filter(pl.col("problem_id") == "p1")["trace_id"][0] for seed in range(12)}
    assert set(chosen.values()) == {"a1", "a2"}  # both get picked for some seed
    assert build("G", 3)[0].equals(build("G", 3)[0])


def test_w_takes_complete_wrong_answers_only():
    frame, _ = build("W")
    assert sorted(frame["trace_id"]) == ["b2", "c2"]  # d1 is truncated with no answer
    assert not frame["is_correct"].any()


def test_h_and_h_style():
    human, _ = build("H")
    assert human.height == 4 and (human["source"] == "human").all() and human["trace_id"].is_null().all()
    paraphrased, _ = build("HS")
    assert paraphrased["trace_id"].to_list() == ["e1"]  # e2 changed the answer
    assert (paraphrased["source"] == "paraphrase").all()


def test_mixture_replaces_the_fraction_with_flawed_examples():
    frame, report = build("mix")
    assert report.flawed_requested == 2 and report.flawed_made == 2
    flaws = dict(zip(frame["problem_id"], frame["flaw"]))
    assert flaws["p2"] == "wrong"  # a real wrong trace exists for p2
    assert flaws["p1"] == "corrupted"  # none for p1: a step is corrupted instead
    corrupted = frame.filter(pl.col("problem_id") == "p1")["completion"][0]
    assert "#### 2" in corrupted and "=2." not in corrupted.split("####")[0]


def test_trimming_cuts_after_the_answer_line():
    frame, _ = build("trim")
    originals = dict(zip(JUDGED["trace_id"], JUDGED["completion"]))
    for row in frame.iter_rows(named=True):
        assert row["completion"].splitlines()[-1].startswith("####")
        assert row["trimmed_chars"] == len(originals[row["trace_id"]]) - len(row["completion"])
    assert trim_after_answer("So 1+1=2.\n#### 2\nAlso note that 3 is odd.") == ("So 1+1=2.\n#### 2", 25)
    assert trim_after_answer("x\nANSWER: 5\nmore words") == ("x\nANSWER: 5", len("\nmore words"))
    assert trim_after_answer("no answer here") == ("no answer here", 0)


def test_token_matching_subsamples_to_the_budget():
    target, _ = build("tiny")
    matched, report = build("matched")
    assert report.token_target == int(target["n_tokens"].sum())
    assert int(matched["n_tokens"].sum()) <= report.token_target
    assert 0 < matched.height < 4


def test_corrupt_trace_changes_one_intermediate_result_only():
    text = "3*4=12 and 12+5=17\n#### 17"
    changed = {corrupt_trace(text, random.Random(seed)) for seed in range(20)}
    assert all(c.endswith("#### 17") for c in changed)
    assert all(c != text for c in changed)
    assert corrupt_trace("no arithmetic\n#### 3", random.Random(0)) is None


def test_text_statistics():
    labelled = ["GOAL: x\nF1: 3\nC1: 3 * 2 = 6\nANSWER: 6"]
    prose = ["She has three apples and doubles them, which gives six apples in total."]
    assert template_line_share(labelled) == 1.0
    assert template_line_share(prose) == 0.0
    assert gzip_ratio(["abc " * 200]) < gzip_ratio(prose)
