"""The completely flawed trace and the degradation ladder (trace_assets/datasets/flaws.py: degrade)."""

import math

import pytest

from trace_assets.datasets.flaws import calculations, degrade, is_flawed_version
from trace_assets.datasets.selection import declared_answers

PROSE = (
    "Ava buys 3 boxes of 4 apples, so 3 * 4 = 12 apples. With her own 12 she has 12 + 12 = 24. "
    "She gives away 6, and 24 - 6 = 18 are left. She shares them between 2 friends: 18 / 2 = 9 each. "
    "So each friend gets 9 apples.\n#### 9"
)
SCHEMA = "GOAL: total cost\nF1: 3 pens at $5\nC1: $5 x 3 = $15\nC2: 15 + 4 = 19\nANSWER: 19"


def step_texts(text: str) -> list[tuple[str, str, str]]:
    """(operands, operators, result) of each step, as written."""
    return [
        (
            " ".join(text[s:e] for s, e, _ in step.operands),
            " ".join(text[s:e] for s, e, _ in step.operators),
            text[step.result[0] : step.result[1]],
        )
        for step in calculations(text)
    ]


@pytest.mark.parametrize(("text", "answer", "answer_format"), [(PROSE, "9", "hash"), (SCHEMA, "19", "label")])
def test_a_completely_flawed_trace_changes_every_step_and_the_answer(text, answer, answer_format):
    before = step_texts(text)
    assert len(before) == (4 if answer_format == "hash" else 2)
    for seed in range(10):
        flawed = degrade(text, answer, 1.0, f"s{seed}")
        after = step_texts(flawed)
        assert len(after) == len(before)
        for old, new in zip(before, after):  # numbers, operation and result of every step
            assert old[0] != new[0] and old[1] != new[1] and old[2] != new[2]
        declaration = declared_answers(flawed, answer_format)
        assert declaration.final != answer and not declaration.changed
        # the answer line is the corrupted last step's result
        assert declaration.final == after[-1][2].lstrip("$")
        assert is_flawed_version(text, flawed, answer, answer_format)
        assert flawed == degrade(text, answer, 1.0, f"s{seed}")  # deterministic
    assert len({degrade(text, answer, 1.0, f"s{seed}") for seed in range(10)}) > 1  # the seed matters
    assert "$" in degrade(SCHEMA, "19", 1.0, "x").splitlines()[2]  # a dollar amount stays one


def test_the_ladder_corrupts_a_growing_nested_share_of_steps_and_always_the_answer():
    before = step_texts(PROSE)
    corrupted: dict[float, set[int]] = {}
    for level in (0.25, 0.5, 0.75, 1.0):
        flawed = degrade(PROSE, "9", level, "seed")
        after = step_texts(flawed)
        changed = {i for i, (old, new) in enumerate(zip(before, after)) if old != new}
        assert len(changed) == math.ceil(level * 4)
        assert 3 in changed  # the step yielding the answer is always corrupted: the answer is wrong at every level
        assert is_flawed_version(PROSE, flawed, "9", "hash")
        corrupted[level] = changed
        # a step corrupted at this level is corrupted the same way at every higher one
        for lower, steps in corrupted.items():
            assert steps <= changed
            lower_steps = step_texts(degrade(PROSE, "9", lower, "seed"))
            assert all(after[i][:2] == lower_steps[i][:2] for i in steps)
    assert degrade(PROSE, "9", 1.0, "seed") == degrade(PROSE, "9", 1, "seed")


def test_a_final_answer_no_step_yields_is_moved_with_the_steps():
    text = "First 2 + 3 = 5, then 5 * 2 = 10. Counting the extras by hand, there are 14.\n#### 14"
    flawed = degrade(text, "14", 0.5, "s")
    assert sum(old != new for old, new in zip(step_texts(text), step_texts(flawed))) == 1
    assert is_flawed_version(text, flawed, "14", "hash")
    assert f"there are {declared_answers(flawed, 'hash').final}." in flawed


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("", "9"),  # empty
        (None, None),
        ("There are 9 apples.\n#### 9", "9"),  # no calculation step
        ("I think the answer is large.", None),  # number-free, no answer
        ("So 3 * 4 = 12 and then 12 +", None),  # truncated before its answer
        ("It drops 3 - 5 = 2 degrees below.\n#### -2", "-2"),  # negative answer
        ("3 + 4 = 7\n```python\ndef f():\n    return 7\n```", "def f():\n    return 7"),  # code answer
    ],
)
def test_unusable_traces_give_none(text, answer):
    assert degrade(text, answer, 1.0, "s") is None


def test_levels_outside_the_ladder_give_none():
    assert degrade(PROSE, "9", 0.0, "s") is None and degrade(PROSE, "9", 1.5, "s") is None


def test_an_expression_answer_is_corrupted_like_a_step():
    text = "25 + 5 = 30, and 30 * 3 = 90.\n#### (25 + 5) * 3"
    flawed = degrade(text, "(25 + 5) * 3", 1.0, "s")
    answer = flawed.rsplit("#### ", 1)[1]
    assert answer != "(25 + 5) * 3" and all(old != new for old, new in zip(step_texts(text), step_texts(flawed)))
