"""Failure taxonomy for wrong answers: rules propose, the LLM judge (where configured) decides.

Rule categories and how they are detected (all pure functions on the completion text):

- ``loop_degeneration``: the completion repeats a word sequence verbatim (``is_degenerate_loop``).
  Decisive: no judge is asked.
- ``no_answer_format``: no final answer could be extracted, or the completion hit the length limit
  without ever declaring one. Decisive.
- ``arithmetic_slip``: an explicit calculation ``a op b ... = c`` whose stated result is wrong, checked
  by a small exact evaluator (no ``eval`` of model text). Rounding to the stated precision, integer
  division / floor / ceiling, remainders, times, mixed numbers, percentages, currency and thousands
  separators are read as a person would read them and are not slips. A proposal: the judge confirms.
- ``answer_overwritten``: the correct value was reached as a *result* (of a calculation, or a declared
  answer) and the final answer then differs. The correct number appearing as an input, or as an
  intermediate that the solution goes on to use, does not count. A proposal: the judge confirms.

Judge categories (``JUDGE_CATEGORIES``) have no rules; the judge picks them when no rule fires or when it
overrides a proposal. ``unclassified`` is what remains.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import polars as pl

from trace_assets.answers import ANSWER_LABEL, VULGAR_FRACTIONS, numbers_match, parse_number
from trace_assets.arithmetic import Token, evaluate
from trace_assets.experiment import BASE_DATASET, BASE_DATASETS
from trace_assets.judging.verdicts import json_reply
from trace_assets.tasks import TASKS, grade, task_of

RULE_CATEGORIES = ["loop_degeneration", "no_answer_format", "arithmetic_slip", "answer_overwritten"]
JUDGE_CATEGORIES = [
    "relation_inverted",
    "premise_forgotten",
    "intermediate_dropped",
    "state_tracking",
    "scope_confused",
    "aggregation_error",
    "operation_omitted",
]
CATEGORIES = RULE_CATEGORIES + JUDGE_CATEGORIES + ["unclassified"]
# What the verifiers of the other tasks decide by themselves (Countdown: invalid_expression, ...; MBPP:
# test_failed, timeout, ...); the judge is never asked to pick these.


def all_categories() -> list[str]:
    """The shared categories, then those the registered tasks' verifiers decide (each once, in order)."""
    return CATEGORIES + list(dict.fromkeys(c for task in TASKS.values() for c in task.failure_categories if c not in CATEGORIES))


TASK_CATEGORIES = [c for c in all_categories() if c not in CATEGORIES]  # of the project's own tasks
ALL_CATEGORIES = CATEGORIES + TASK_CATEGORIES
DECISIVE_CATEGORIES = ["loop_degeneration", "no_answer_format"]  # the judge is not asked about these
SOURCES = ["rules", "judge", "rules+judge", "unparsable"]

CATEGORY_DESCRIPTIONS = {
    "loop_degeneration": "the output repeats the same text over and over instead of finishing",
    "no_answer_format": "no final answer was given (e.g. cut off before answering)",
    "arithmetic_slip": "the setup is right but a calculation is computed wrongly (e.g. 4 * 6 = 26)",
    "answer_overwritten": "the correct value was reached, then replaced by a different final answer",
    "relation_inverted": "a relation is reversed (more/less, times/divided, who has what)",
    "premise_forgotten": "a fact or condition stated in the problem is ignored",
    "intermediate_dropped": "a needed intermediate result is computed but not carried into the next step",
    "state_tracking": "loses track of a quantity that changes: uses its value from before a change, or applies a "
    "change to the wrong person or thing",
    "scope_confused": "answers a different quantity than asked (per item vs total, one person vs all, wrong unit)",
    "aggregation_error": "the parts are combined wrongly (missing or double-counted parts, wrong total)",
    "operation_omitted": "a required operation or step is left out entirely",
    "unclassified": "none of the above fits",
}


# --------------------------------------------------------------------------------------------------
# Text normalisation and tokens
# --------------------------------------------------------------------------------------------------

_REPLACEMENTS = [
    ("\u2212", "-"),
    ("\u2013", "-"),
    ("\u2012", "-"),
    ("\ufe63", "-"),
    ("\uff0d", "-"),  # minus signs, dashes
    ("\u00a0", " "),
    ("\u2009", " "),
    ("\u202f", " "),
    ("\uff1d", "="),
    ("\\times", " × "),
    ("\\cdot", " × "),
    ("\\div", " ÷ "),
    ("⋅", " × "),
    ("·", " × "),
    ("✕", " × "),
    ("\\$", "$"),
    ("\\%", "%"),
    ("\\left", ""),
    ("\\right", ""),
    ("\\,", ""),
    ("\\!", ""),
    ("\\(", " "),
    ("\\)", " "),
    ("\\[", " "),
    ("\\]", " "),
    ("²", "^2"),
    ("³", "^3"),
]
_FRAC = re.compile(r"\\d?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_TEXT = re.compile(r"\\(?:text|mathrm|textbf|mbox)\s*\{([^{}]*)\}")


def normalize(text: str) -> str:
    """Plain-text arithmetic: Unicode minus and operators, LaTeX, vulgar fractions, markdown bold."""
    text = text or ""
    for old, new in _REPLACEMENTS:
        text = text.replace(old, new)
    text = _TEXT.sub(r" \1 ", text)
    text = _FRAC.sub(r"(\1)/(\2)", text)
    for glyph, fraction in VULGAR_FRACTIONS.items():
        text = re.sub(r"(\d)\s*" + glyph, r"\1 " + fraction, text)
        text = text.replace(glyph, fraction)
    text = text.replace("**", " ").replace("__", " ")
    return text


_TIME = re.compile(r"\d{1,2}:\d{2}(?::\d{2})?(?:\s*[ap]\.?m\b\.?)?|\d+:\d+", re.IGNORECASE)
_MIXED = re.compile(r"(\d+)[ ]+(\d+)/(\d+)(?![\d.,/])")
_NUM = re.compile(r"[$€£]?[ ]?(?:(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?(?![\d,]\d)|\.(\d+))")
_SPACED_PERCENT = re.compile(r"[ ]+%(?=\s*(?:of\b|[^\d\s(]|$))")
_EQ = re.compile(r"(?<![<>!=])=(?![=>])")
_WORD = re.compile(r"[^\W\d_][\w']*")
_MULT_X = re.compile(r"[xX](?=\s*[\d($.])")


def _number_token(match: re.Match, text: str) -> Token:
    integer, fraction, bare = match.group(1), match.group(2), match.group(3)
    digits = (integer or "0").replace(",", "") + ("." + (fraction or bare) if (fraction or bare) else "")
    value = Fraction(digits)
    decimals = len(fraction or bare or "")
    end = match.end()
    percent = False
    if text.startswith("%", end):
        percent, end = True, end + 1
    elif spaced := _SPACED_PERCENT.match(text, end):
        percent, end = True, spaced.end()
    elif text.startswith("¢", end):
        value, end = value / 100, end + 1
    if percent:
        value /= 100
    return Token("num", text[match.start() : end], match.start(), end, value, decimals, percent)


def tokenize(text: str) -> list[Token]:
    """Tokens of normalised text: numbers (exact), operators, parentheses, ``=``, words, other symbols."""
    tokens: list[Token] = []
    position, length = 0, len(text)
    while position < length:
        char = text[position]
        if char == "\n":
            tokens.append(Token("nl", char, position, position + 1))
            position += 1
            continue
        if char.isspace():
            position += 1
            continue
        previous = tokens[-1] if tokens else None
        after_operand = previous is not None and previous.kind in ("num", "rp")
        if match := _TIME.match(text, position):
            tokens.append(Token("other", match.group(), position, match.end()))
        elif (match := _MIXED.match(text, position)) and int(match.group(2)) < int(match.group(3)) and int(match.group(3)) > 0:
            whole, numerator, denominator = (int(g) for g in match.groups())
            tokens.append(Token("num", match.group(), position, match.end(), whole + Fraction(numerator, denominator)))
        elif (char.isdigit() or char in "$€£.") and (match := _NUM.match(text, position)) and match.group(0).strip("$€£ "):
            tokens.append(_number_token(match, text))
        elif text.startswith("//", position):
            tokens.append(Token("op", "//", position, position + 2))
        elif char in "+-*/^×÷":
            tokens.append(Token("op", {"×": "*", "÷": "/"}.get(char, char), position, position + 1))
        elif char == "%" and after_operand:
            tokens.append(Token("op", "mod", position, position + 1))
        elif char in "xX" and after_operand and (match := _MULT_X.match(text, position)):
            tokens.append(Token("op", "*", position, position + 1))
        elif char == "(":
            tokens.append(Token("lp", char, position, position + 1))
        elif char == ")":
            tokens.append(Token("rp", char, position, position + 1))
        elif match := _EQ.match(text, position):
            tokens.append(Token("eq", "=", position, position + 1))
        elif match := _WORD.match(text, position):
            word = match.group()
            nxt = re.match(r"\s*[$€£]?\d", text[match.end() : match.end() + 4])
            if (
                word.lower() == "of"
                and nxt
                and previous is not None
                and previous.kind == "num"
                and (previous.percent or (len(tokens) >= 2 and tokens[-2].text == "/"))
            ):
                tokens.append(Token("op", "*", position, match.end()))  # "20% of 50", "2/3 of 12"
            elif word.lower() == "mod" and after_operand and nxt:
                tokens.append(Token("op", "mod", position, match.end()))
            else:
                tokens.append(Token("word", word, position, match.end()))
            position = match.end()
            continue
        else:
            tokens.append(Token("other", char, position, position + 1))
            position += 1
            continue
        position = tokens[-1].end
    return tokens


def evaluate_text(expression: str) -> Fraction | None:
    """The exact value of a plain arithmetic expression in text (``"1,200 × 3"``, ``"−3 + 2 1/2"``), or None."""
    tokens = tokenize(normalize(expression))
    try:
        return evaluate(tokens)[0]
    except ValueError:
        return None


# --------------------------------------------------------------------------------------------------
# Equations in the text and the arithmetic-slip rule
# --------------------------------------------------------------------------------------------------

_ARITH = ("num", "op", "lp", "rp")
MAX_EXPRESSION_TOKENS = 40  # longer runs are not calculations a person checks by eye (and would be slow)
_REMAINDER = re.compile(  # "3 remainder 2", "3 R 2", "3 r2", "3 with a remainder of 2", "3 with 2 left over"
    r"\s*,?\s*(?:(?:remainder|rem\.?|r)\s*(?:of\s*)?(\d+)\b|with\s+a\s+remainder\s+of\s+(\d+)"
    r"|with\s+(\d+)\s+(?:left|remaining|leftover|extra|remainder|over)\b)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Equation:
    """``left = right`` where ``left`` is an arithmetic expression with at least one operator."""

    left_text: str
    stated_text: str
    value: Fraction  # of the left side, standard precedence
    left: tuple[Token, ...]
    stated: tuple[Fraction, ...]  # readings of the right side: its first number, and its full value if it parses
    stated_token: Token | None  # the right side's first number
    position: int  # character offset of the stated result
    end: int  # character offset just after the right side
    operands: tuple[Fraction, ...]
    alternatives: tuple[tuple[Token, ...], ...] = ()  # other readings of the left side (see equations)

    @property
    def result(self) -> Fraction:
        return self.stated[0]


def _strip_to_parsable(run: list[Token], from_left: bool) -> tuple[list[Token], Fraction, int] | None:
    """The longest suffix (or prefix) of ``run`` that parses, with its value and operator count."""
    for cut in range(len(run)):
        part = run[cut:] if from_left else run[: len(run) - cut]
        if not part:
            break
        try:
            value, ops = evaluate(part)
        except ValueError:
            continue
        return part, value, ops
    return None


def equations(text: str) -> list[Equation]:
    """Every ``expression = result`` in the text whose left side is real arithmetic (has an operator)."""
    normalized = normalize(text)
    tokens = tokenize(normalized)
    found = []
    for index, token in enumerate(tokens):
        if token.kind != "eq":
            continue
        start = index
        while start > 0 and tokens[start - 1].kind in _ARITH and index - start < MAX_EXPRESSION_TOKENS:
            start -= 1
        stop = index + 1
        while stop < len(tokens) and tokens[stop].kind in _ARITH and stop - index <= MAX_EXPRESSION_TOKENS:
            stop += 1
        left_run, right_run = tokens[start:index], tokens[index + 1 : stop]
        left = _strip_to_parsable(left_run, from_left=True)
        if left is None or left[2] == 0 or not right_run:
            continue
        left_tokens, value, _ = left
        # A number or "(" right after an operand may start a new expression ("Step 2 (3 + 4) = 7",
        # "2020 5 + 3 = 8"): the part from there on is another reading of the left side.
        alternatives = []
        for cut in range(1, len(left_tokens)):
            if left_tokens[cut - 1].kind in ("num", "rp") and left_tokens[cut].kind in ("num", "lp"):
                try:
                    if evaluate(left_tokens[cut:])[1] > 0:
                        alternatives.append(tuple(left_tokens[cut:]))
                except ValueError:
                    pass
        stated: list[Fraction] = []
        first = right_run[0]
        stated_token = None
        if first.kind == "num":
            stated_token = first
            stated.append(first.value)
        elif first.kind == "op" and first.text == "-" and len(right_run) > 1 and right_run[1].kind == "num":
            stated_token = right_run[1]
            stated.append(-right_run[1].value)
        right = _strip_to_parsable(right_run, from_left=False)
        if right is not None and right[2] > 0:
            stated.append(right[1])
        if not stated:
            continue
        end = stated_token.end if stated_token is not None else right_run[-1].end
        found.append(
            Equation(
                left_text=normalized[left_tokens[0].start : left_tokens[-1].end].strip(),
                stated_text=normalized[right_run[0].start : end].strip(),
                value=value,
                left=tuple(left_tokens),
                stated=tuple(stated),
                stated_token=stated_token,
                position=right_run[0].start,
                end=end,
                operands=tuple(t.value for t in left_tokens if t.kind == "num"),
                alternatives=tuple(alternatives),
            )
        )
    return found


def _close(value: Fraction, stated: Fraction, token: Token | None) -> bool:
    """``stated`` is ``value`` as a person would write it: exact, rounded or truncated to its precision."""
    if value == stated:
        return True
    if token is not None and token.percent and value == stated * 100:
        return True  # "0.2 * 100 = 20%"
    decimals = token.decimals if token is not None else 0
    if token is not None and token.percent:
        decimals += 2
    if decimals:
        return abs(value - stated) < Fraction(1, 10**decimals)  # 10/3 = 3.33, 3.333, 3.3; 2/3 = 0.66
    # 17/5 = 3 full boxes; 45/4 = 12 vans (floor, ceiling or rounding of a non-integer to a whole number)
    return stated.denominator == 1 and value.denominator != 1 and abs(value - stated) < 1


def _interval(left: list[Token], precedence: bool, relative: bool) -> tuple[Fraction, Fraction] | None:
    """Range of an expression when its decimal operands are read as rounded (3.33 stands for 10/3)."""
    rounded = [i for i, t in enumerate(left) if t.kind == "num" and t.decimals][:6]
    if not rounded:
        return None
    values = []
    for signs in itertools.product((-1, 1), repeat=len(rounded)):
        overrides = {
            i: left[i].value + sign * Fraction(1, 2 * 10 ** (left[i].decimals + (2 if left[i].percent else 0)))
            for i, sign in zip(rounded, signs)
        }
        try:
            values.append(evaluate(left, precedence, relative, overrides)[0])
        except ValueError:
            continue
    return (min(values), max(values)) if values else None


def _remainder_ok(equation: Equation, text: str) -> bool | None:
    """For ``a / b = q remainder r``: whether q and r are right; None when no remainder is stated."""
    match = _REMAINDER.match(text, equation.end)
    if match is None or len(equation.left) != 3 or equation.left[1].text not in ("/", "//"):
        return None
    a, b = equation.left[0].value, equation.left[2].value
    if a.denominator != 1 or b.denominator != 1 or b == 0:
        return None
    remainder = int(match.group(1) or match.group(2) or match.group(3))
    return equation.result == a // b and remainder == a % b


def is_slip(equation: Equation, text: str) -> bool:
    """Whether the stated result of ``equation`` is wrong under every reasonable reading."""
    remainder = _remainder_ok(equation, text)
    if remainder is not None:
        return not remainder
    readings = [(True, False), (False, False)]
    if any(t.percent for t in equation.left):
        readings += [(True, True), (False, True)]
    for left, (precedence, relative) in itertools.product([list(equation.left), *map(list, equation.alternatives)], readings):
        try:
            value = evaluate(left, precedence, relative)[0]
        except ValueError:
            continue
        for index, stated in enumerate(equation.stated):
            token = equation.stated_token if index == 0 else None
            if _close(value, stated, token):
                return False
            bounds = _interval(left, precedence, relative)
            if bounds is not None:
                decimals = token.decimals if token is not None else 0
                slack = Fraction(1, 10**decimals) if decimals else Fraction(0)  # the result's own rounding
                if bounds[0] - slack <= stated <= bounds[1] + slack:  # 3.33 * 3 = 10; 3.3 * 3 = 10
                    return False
    return True


def arithmetic_slips(text: str) -> list[str]:
    """Calculations ``a op b ... = c`` in the text whose stated result is wrong, as ``"a op b = c"``."""
    normalized = normalize(text)
    slips = []
    for equation in equations(text):
        if is_slip(equation, normalized):
            evidence = _evidence(equation, normalized)
            if evidence not in slips:
                slips.append(evidence)
    return slips


def _evidence(equation: Equation, normalized: str) -> str:
    """``"a op b = c"`` as written (with a stated remainder), whitespace collapsed."""
    stated = equation.stated_text
    if match := _REMAINDER.match(normalized, equation.end):
        stated += match.group(0)
    return re.sub(r"\s+", " ", f"{equation.left_text} = {stated}").strip()


# --------------------------------------------------------------------------------------------------
# The answer-overwritten rule
# --------------------------------------------------------------------------------------------------

_NUMBER_TEXT = r"(-?[$€£]?\s?-?\d[\d,]*(?:\.\d+)?)"
_DECLARATION = re.compile(
    r"(?:####\s*|" + ANSWER_LABEL + r"\s*|\\boxed\{\s*|\b(?:final answer|the answer|answer)\s*(?:is|:|=)\s*(?:\$\s*)?"
    r"|\bthat\s+(?:makes|gives)\s+(?:us\s+)?)" + _NUMBER_TEXT,
    re.IGNORECASE | re.MULTILINE,
)
_FOLLOWED_BY_OPERATOR = re.compile(r"\s*(?:[-+*/×÷x]\s*[$€£]?\d|%)")
_FINAL_DECLARATION = re.compile(
    r"(?:####\s*|" + ANSWER_LABEL + r"\s*|\\boxed\{\s*|\b(?:final answer|the answer)\s*(?:is|:|=)\s*(?:\$\s*)?)" + _NUMBER_TEXT,
    re.IGNORECASE | re.MULTILINE,
)


_STRICT_DECLARATION = re.compile(r"####\s*" + _NUMBER_TEXT)
_LABEL_DECLARATION = re.compile(ANSWER_LABEL + r"\s*" + _NUMBER_TEXT, re.IGNORECASE | re.MULTILINE)
_NUMBER_IN_TEXT = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def _final_position(normalized: str, final: str) -> int:
    """Where the final answer is declared, mirroring the extractors: its first ``####``, else its first
    ``ANSWER:`` line, else its last answer phrase, else its last occurrence; the text's end if not found."""
    for pattern, pick in ((_STRICT_DECLARATION, 0), (_LABEL_DECLARATION, 0), (_FINAL_DECLARATION, -1), (_NUMBER_IN_TEXT, -1)):
        matches = [m for m in pattern.finditer(normalized) if numbers_match(m.group(m.lastindex or 0), final)]
        if matches:
            return matches[pick].start()
    return len(normalized)


_OPERAND_AFTER = re.compile(r"\s*(?:[^\W\d_]+\s+){0,3}(?:[-+*/×÷^]|x\s)\s*[$€£]?\(?\d")


def _used_as_operand(normalized: str, target: Fraction, start: int, stop: int) -> bool:
    """Whether ``target`` appears between ``start`` and ``stop`` followed, within three words, by an
    operator and a number (``210 minutes / 60``): the value was carried on into another calculation."""
    for match in _NUMBER_IN_TEXT.finditer(normalized, start, stop):
        if parse_number(match.group()) == target and _OPERAND_AFTER.match(normalized, match.end()):
            return True
    return False


def answer_reached(text: str, reference: str, before: int | None = None) -> tuple[int, str] | None:
    """The last place the correct value is reached as a result before ``before``, and how, if it is.

    A result is the right side of a calculation with an operator (``24 - 2 = 22``) or a declared answer
    (``the answer is 22``, ``#### 22``, ``\\boxed{22}``, ``that makes 22``). A calculation result that is
    used later as an operand (``22 * 3``, ``22 apples / 2``) was an intermediate, not an answer, and does
    not count; nor does a number that only restates an input (``students = 22``, ``1 dozen = 12``).
    """
    target = parse_number(reference)
    if target is None:
        return None
    normalized = normalize(text)
    limit = len(normalized) if before is None else before
    found = equations(text)
    reached: list[tuple[int, str]] = []
    for equation in found:
        if equation.position >= limit or not any(value == target for value in equation.stated):
            continue
        used_later = any(later.position > equation.end and target in later.operands for later in found) or _used_as_operand(
            normalized, target, equation.end, len(normalized)
        )
        if not used_later:
            reached.append((equation.position, _evidence(equation, normalized)))
    for match in _DECLARATION.finditer(normalized):
        if match.start() >= limit or _FOLLOWED_BY_OPERATOR.match(normalized, match.end()):
            continue
        if parse_number(match.group(1)) == target:
            reached.append((match.start(), match.group(0).strip()))
    return max(reached) if reached else None


def reached_then_overwritten(text: str, reference: str, final: str | None) -> bool:
    """The right value was reached as a result, and then a different final answer was given."""
    if final is None or numbers_match(final, reference):
        return False
    return answer_reached(text, reference, _final_position(normalize(text), final)) is not None


# --------------------------------------------------------------------------------------------------
# Rules propose
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleProposal:
    """What the rules say about one wrong answer.

    ``category`` is None when no rule fired. ``decisive`` proposals (loops, missing answers) are final;
    the others are proposals that the judge, where one is configured, confirms or overrides.
    """

    category: str | None
    evidence: str
    decisive: bool = False

    @property
    def needs_judge(self) -> bool:
        """Whether a configured judge should be asked (everything except decisive rule categories)."""
        return not self.decisive


def _declares_answer(text: str) -> bool:
    return _FINAL_DECLARATION.search(normalize(text)) is not None


def classify_by_rules(text: str, extracted: str | None, reference: str, degenerate: bool, hit_limit: bool) -> RuleProposal:
    """The rules' proposal for a wrong answer (``extracted`` is the final answer, None if none was found).

    Order: a loop, then no answer, then an arithmetic slip before the correct value was reached (or
    with no correct value reached), then the correct value reached and overwritten. A slip that happens
    only before the correct value was reached did not cause the wrong answer, so the overwrite wins.
    """
    text = text or ""
    if degenerate:
        return RuleProposal("loop_degeneration", "the completion repeats itself verbatim", decisive=True)
    if extracted is None:
        return RuleProposal("no_answer_format", "hit the length limit" if hit_limit else "no number to extract", decisive=True)
    if hit_limit and not _declares_answer(text):
        return RuleProposal(
            "no_answer_format", f"hit the length limit before declaring an answer (last number {extracted})", decisive=True
        )
    normalized = normalize(text)
    final_at = _final_position(normalized, extracted)
    slips = [
        (eq.position, _evidence(eq, normalized)) for eq in equations(text) if eq.position < final_at and is_slip(eq, normalized)
    ]
    reached = None if numbers_match(extracted, reference) else answer_reached(text, reference, final_at)
    if reached is not None and all(position < reached[0] for position, _ in slips):
        return RuleProposal("answer_overwritten", f"reached {reference} ({reached[1][:80]}) but answered {extracted}")
    if slips:
        unique = list(dict.fromkeys(evidence for _, evidence in slips))
        return RuleProposal("arithmetic_slip", "; ".join(unique[:3]))
    return RuleProposal(None, "")


def classify_task_failure(text: str, problem: Mapping, degenerate: bool, hit_limit: bool) -> RuleProposal:
    """The rules' proposal for a wrong answer to a problem of a task other than gsm8k.

    Loops and missing answers as for gsm8k; then the category the task's verifier already decided
    (Countdown: invalid expression, number misuse, wrong value; MBPP: the sandbox's outcome; MATH: an
    answer math-verify could not read), decisive; otherwise (a wrong MATH answer) the gsm8k rules'
    proposal, for the judge to confirm or override."""
    text = text or ""
    if degenerate:
        return RuleProposal("loop_degeneration", "the completion repeats itself verbatim", decisive=True)
    extraction, check, _ = grade(text, problem)
    if extraction.answer is None:
        return RuleProposal(
            "no_answer_format", "hit the length limit" if hit_limit else "no answer in the task's form", decisive=True
        )
    if hit_limit and extraction.strict is None and extraction.label is None:
        return RuleProposal("no_answer_format", "hit the length limit before declaring an answer", decisive=True)
    decided = task_of(problem).failure_rule(check)
    if decided is not None:
        return RuleProposal(decided[0], decided[1][:300], decisive=True)
    return classify_by_rules(text, extraction.answer, problem["answer"], degenerate, hit_limit)


# --------------------------------------------------------------------------------------------------
# The judge decides
# --------------------------------------------------------------------------------------------------

FAILURE_SCHEMA = {
    "type": "object",
    "properties": {"category": {"type": "string", "enum": CATEGORIES}, "reason": {"type": "string", "maxLength": 100}},
    "required": ["category", "reason"],
    "additionalProperties": False,
}


def failure_judge_messages(
    question: str, reference_solution: str, completion: str, proposal: RuleProposal | None = None
) -> list[dict]:
    """Messages asking the judge for one category out of all of them, showing the rules' proposal if any."""
    listing = "\n".join(f"- {name}: {CATEGORY_DESCRIPTIONS[name]}" for name in CATEGORIES)
    if proposal is not None and proposal.category:
        hint = (
            f"\n\nAn automatic check proposes: {proposal.category} (evidence: {proposal.evidence[:300]}). "
            "Confirm it if it is the main reason the final answer is wrong; otherwise pick the right category."
        )
    else:
        hint = "\n\nNo automatic check fired; decide from the solution."
    return [
        {
            "role": "system",
            "content": "You diagnose why a student's solution to a math word problem got the wrong "
            f"answer. Pick the one category that best explains the wrong final answer:\n{listing}\n"
            'Reply with JSON only: {"category": "<one category>", "reason": "<a few words>"}',
        },
        {
            "role": "user",
            "content": f"Problem:\n{question}\n\nCorrect solution:\n{reference_solution}\n\n"
            f"Student's wrong solution:\n{completion[:3000]}{hint}",
        },
    ]


def parse_judge_reply(text: str | None) -> tuple[str, str] | None:
    """(category, reason) from the judge's reply; None when it is not JSON with a known category."""
    data = json_reply(text)
    if data is None or data.get("category") not in CATEGORIES:
        return None
    return data["category"], str(data.get("reason") or "")[:200]


def parse_failure_category(text: str) -> tuple[str, str]:
    """(category, reason) from the judge; ``unclassified`` when its reply is not a valid category."""
    return parse_judge_reply(text) or ("unclassified", "judge reply not a valid category")


def decide(proposal: RuleProposal, judge_reply: str | None) -> tuple[str, str, str]:
    """The final (category, source, evidence) of one wrong answer.

    ``judge_reply`` is the judge's raw reply, or None when no judge was asked (none configured, or the
    proposal is decisive). Sources: ``rules`` (rules alone), ``rules+judge`` (the judge confirmed the
    proposal), ``judge`` (no proposal, or the judge overrode it; the evidence names the overridden
    proposal), ``unparsable`` (the judge's reply was not valid; the proposal stands if there was one).
    """
    if proposal.decisive or judge_reply is None:
        if proposal.category:
            return proposal.category, "rules", proposal.evidence
        return "unclassified", "rules", "no rule fired and no judge was asked"
    parsed = parse_judge_reply(judge_reply)
    if parsed is None:
        fallback = proposal.category or "unclassified"
        note = f"judge reply unparsable; rules: {proposal.evidence}" if proposal.category else "judge reply unparsable"
        return fallback, "unparsable", note
    category, reason = parsed
    if proposal.category is None:
        return category, "judge", reason
    if category == proposal.category:
        return category, "rules+judge", f"{proposal.evidence} | judge: {reason}"
    return category, "judge", f"{reason} | overrode rules' {proposal.category}: {proposal.evidence}"


# --------------------------------------------------------------------------------------------------
# Per-seed counts and deltas against the base model
# --------------------------------------------------------------------------------------------------

SUMMARY_SCHEMA = {
    "student": pl.Utf8,
    "dataset": pl.Utf8,
    "category": pl.Utf8,
    "n_seeds": pl.Int64,
    "problems": pl.Float64,
    "count_mean": pl.Float64,
    "count_sd": pl.Float64,
    "rate_mean": pl.Float64,
    "rate_sd": pl.Float64,
    "delta_vs_base": pl.Float64,
    "delta_ci_low": pl.Float64,
    "delta_ci_high": pl.Float64,
}


def _side(
    eval_results: pl.DataFrame,
    failure_modes: pl.DataFrame,
    student: str,
    dataset: str,
    problems: list[str],
    categories: list[str],
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(evaluated, {category: failed}) as seeds x problems 0/1 matrices of one student x dataset."""
    evaluated = eval_results.filter((pl.col("student") == student) & (pl.col("dataset") == dataset))
    seeds = sorted(evaluated["seed"].unique().to_list())
    seed_index = {seed: i for i, seed in enumerate(seeds)}
    problem_index = {problem: j for j, problem in enumerate(problems)}
    mask = np.zeros((len(seeds), len(problems)))
    for seed, problem in evaluated.select("seed", "problem_id").iter_rows():
        mask[seed_index[seed], problem_index[problem]] = 1.0
    failed = {category: np.zeros_like(mask) for category in categories}
    rows = failure_modes.filter((pl.col("student") == student) & (pl.col("dataset") == dataset))
    for seed, problem, category in rows.select("seed", "problem_id", "category").iter_rows():
        if seed in seed_index and problem in problem_index:
            failed[category][seed_index[seed], problem_index[problem]] = 1.0
    return mask, failed


def _bootstrap_rates(mask: np.ndarray, failed: np.ndarray, weights: np.ndarray, seed_draws: np.ndarray) -> np.ndarray:
    """Per-resample rate: mean over drawn seeds of (failed / evaluated) on the resampled problems."""
    evaluated = mask @ weights.T  # seeds x resamples
    counts = failed @ weights.T
    rates = np.divide(counts, evaluated, out=np.full_like(counts, np.nan), where=evaluated > 0)
    drawn = rates[seed_draws, np.arange(weights.shape[0])[:, None]]  # resamples x seeds drawn
    return np.nanmean(drawn, axis=1)


def failure_summary(
    failure_modes: pl.DataFrame,
    eval_results: pl.DataFrame,
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    baselines: Mapping[str, str] | None = None,
) -> pl.DataFrame:
    """Failure counts per student x dataset x category, per seed, and their change against the base model.

    For each training seed: ``count`` = wrong answers in the category, ``rate`` = count / problems that
    seed evaluated. Reported over seeds as mean and SD (SD is null with one seed). Every category seen
    anywhere appears for every student x dataset, with zeros, so a failure that disappears shows as a
    negative delta rather than vanishing.

    ``delta_vs_base`` = rate_mean(dataset) - rate_mean(base) for the same student; null for the base
    rows and for students without a base. Its interval (``level``, percentile) comes from a paired
    two-level bootstrap: each resample draws test problems with replacement (the same draw for the
    dataset and the base, which answered the same problems) and, within each side, draws seeds with
    replacement; a side's rate in the resample is the mean over its drawn seeds of count / evaluated on
    the drawn problems. So the interval covers both problem sampling and seed-to-seed variation (with a
    single seed per side only the former).
    """
    evaluated = eval_results.group_by(["student", "dataset", "seed"]).agg(
        pl.col("problem_id").n_unique().cast(pl.Float64).alias("problems")
    )
    categories = sorted(failure_modes["category"].unique().to_list())
    if evaluated.is_empty() or not categories:
        return pl.DataFrame(schema=SUMMARY_SCHEMA)
    counts = failure_modes.group_by(["student", "dataset", "seed", "category"]).agg(pl.len().cast(pl.Float64).alias("count"))
    per_seed = (
        evaluated.join(pl.DataFrame({"category": categories}), how="cross")
        .join(counts, on=["student", "dataset", "seed", "category"], how="left")
        .with_columns(pl.col("count").fill_null(0.0))
        .with_columns((pl.col("count") / pl.col("problems")).alias("rate"))
    )
    summary = per_seed.group_by(["student", "dataset", "category"]).agg(
        pl.len().cast(pl.Int64).alias("n_seeds"),
        pl.col("problems").mean(),
        pl.col("count").mean().alias("count_mean"),
        pl.col("count").std().alias("count_sd"),
        pl.col("rate").mean().alias("rate_mean"),
        pl.col("rate").std().alias("rate_sd"),
    )
    baselines = dict(baselines or {})
    baseline_of = pl.col("student").replace_strict(baselines, default=BASE_DATASET, return_dtype=pl.Utf8)
    untrained = pl.col("dataset").is_in(list(BASE_DATASETS))
    base = summary.filter(pl.col("dataset") == baseline_of).select("student", "category", pl.col("rate_mean").alias("base_rate"))
    summary = summary.join(base, on=["student", "category"], how="left").with_columns(
        pl.when(~untrained).then(pl.col("rate_mean") - pl.col("base_rate")).otherwise(None).alias("delta_vs_base")
    )

    rng = np.random.default_rng(seed)
    alpha = (1 - level) / 2
    intervals = []
    pairs = (
        summary.filter(~untrained & pl.col("base_rate").is_not_null())
        .select("student", "dataset")
        .unique()
        .sort(["student", "dataset"])
    )
    for student, dataset in pairs.iter_rows():
        baseline = baselines.get(student, BASE_DATASET)
        both = eval_results.filter((pl.col("student") == student) & pl.col("dataset").is_in([dataset, baseline]))
        problems = sorted(both["problem_id"].unique().to_list())
        mask_d, failed_d = _side(eval_results, failure_modes, student, dataset, problems, categories)
        mask_b, failed_b = _side(eval_results, failure_modes, student, baseline, problems, categories)
        picks = rng.integers(0, len(problems), size=(n_resamples, len(problems)))
        weights = np.zeros((n_resamples, len(problems)))
        np.add.at(weights, (np.arange(n_resamples)[:, None], picks), 1.0)
        seeds_d = rng.integers(0, mask_d.shape[0], size=(n_resamples, mask_d.shape[0]))
        seeds_b = rng.integers(0, mask_b.shape[0], size=(n_resamples, mask_b.shape[0]))
        for category in categories:
            deltas = _bootstrap_rates(mask_d, failed_d[category], weights, seeds_d) - _bootstrap_rates(
                mask_b, failed_b[category], weights, seeds_b
            )
            deltas = deltas[~np.isnan(deltas)]
            low, high = (
                (float(np.quantile(deltas, alpha)), float(np.quantile(deltas, 1 - alpha))) if deltas.size else (None, None)
            )
            intervals.append(
                {"student": student, "dataset": dataset, "category": category, "delta_ci_low": low, "delta_ci_high": high}
            )
    interval_frame = pl.DataFrame(
        intervals,
        schema={
            "student": pl.Utf8,
            "dataset": pl.Utf8,
            "category": pl.Utf8,
            "delta_ci_low": pl.Float64,
            "delta_ci_high": pl.Float64,
        },
    )
    return (
        summary.join(interval_frame, on=["student", "dataset", "category"], how="left")
        .select(list(SUMMARY_SCHEMA))
        .cast(SUMMARY_SCHEMA)
        .sort(["student", "dataset", "category"])
    )
