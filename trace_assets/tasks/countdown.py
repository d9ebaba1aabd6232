"""Countdown: reach a target from given numbers with + - * / and parentheses, each number at most once.

Problems are generated from a seed and are solvable by construction: the numbers are combined by a
random expression tree whose value (every intermediate a positive integer, as in the game) becomes
the target, so the tree is a reference solution. Difficulty is the count of numbers.

The verifier never evaluates model text with ``eval``: it parses the declared expression with
``ast`` and walks only the nodes it allows (integer literals, ``+ - * /``, parentheses), checks the
literals against the given numbers (each used at most as often as given) before computing anything,
and computes with exact ``Fraction``s. Anything else (names, calls, attributes, powers, floats,
strings over ``MAX_EXPRESSION_CHARS``) is an invalid expression, scored as wrong.
"""

from __future__ import annotations

import ast
import json
import random
import re
from collections import Counter
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

from pydantic import Field, model_validator

from trace_assets.answers import Extraction
from trace_assets.problems.records import LoadReport, problem_id
from trace_assets.settings import MAX_SYNTHETIC_PROBLEMS, Section, SettingsError
from trace_assets.tasks.base import Check, line_extraction, metadata, sizes

MAX_EXPRESSION_CHARS = 200
INSTRUCTION = (
    "Write your reasoning, then give the expression on its own last line as "
    '"#### <expression>" using only the given numbers, + - * / and parentheses.'
)
_OPERATORS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
_SPELLINGS = str.maketrans({"×": "*", "·": "*", "÷": "/", "−": "-", "–": "-", "\u2009": " ", "\u00a0": " "})
_LATEX = [(re.compile(r"\\(?:times|cdot)"), "*"), (re.compile(r"\\div"), "/"), (re.compile(r"\\left|\\right|\$|\\[()\[\]]"), "")]


class InvalidExpression(ValueError):
    pass


class CountdownSource(Section):
    """Seeded Countdown problems: reach ``target`` from the given numbers with + - * / (each at most once)."""

    min_numbers: int = Field(3, ge=2, le=8, description="fewest numbers in a problem (its difficulty)")
    max_numbers: int = Field(4, ge=2, le=8)
    max_number: int = Field(25, ge=2, le=1000, description="largest given number")
    max_target: int = Field(200, ge=1, le=100_000, description="largest target")
    n_train: int = Field(32, ge=1, le=MAX_SYNTHETIC_PROBLEMS, description="train problems when problems.n_train is null")
    n_test: int = Field(16, ge=1, le=MAX_SYNTHETIC_PROBLEMS, description="test problems when problems.n_test is null")

    @model_validator(mode="after")
    def _ordered(self) -> CountdownSource:
        if self.min_numbers > self.max_numbers:
            raise ValueError(f"min_numbers ({self.min_numbers}) must be <= max_numbers ({self.max_numbers})")
        return self


def question_text(numbers: list[int], target: int) -> str:
    listed = ", ".join(str(n) for n in numbers)
    return (
        f"Using the numbers {listed}, make {target}. You may use +, -, * and / with parentheses; each number "
        f"can be used at most once, and not every number has to be used.\n\n{INSTRUCTION}"
    )


def _combine(rng: random.Random, left: tuple[int, str], right: tuple[int, str]) -> tuple[int, str, str]:
    """A random operation on two (value, expression) items: (value, expression, solution line)."""
    (a, a_text), (b, b_text) = left, right
    if a < b:
        (a, a_text), (b, b_text) = (b, b_text), (a, a_text)
    choices = ["+", "*"] + (["-"] if a > b else []) + (["/"] if b > 1 and a % b == 0 else [])
    op = rng.choice(choices)
    value = {"+": a + b, "-": a - b, "*": a * b, "/": a // b if b else 0}[op]
    return value, f"({a_text} {op} {b_text})", f"{a} {op} {b} = {value}"


def generate_problem(rng: random.Random, count: int, max_number: int, max_target: int, attempts: int = 200) -> dict | None:
    """``count`` numbers and a target their random expression tree reaches; None if none fits ``max_target``."""
    for _ in range(attempts):
        numbers = [rng.randint(1, max_number) for _ in range(count)]
        items = [(n, str(n)) for n in numbers]
        lines = []
        while len(items) > 1:
            i, j = sorted(rng.sample(range(len(items)), 2))
            right, left = items.pop(j), items.pop(i)
            value, text, line = _combine(rng, left, right)
            items.append((value, text))
            lines.append(line)
        target, expression = items[0]
        if 1 <= target <= max_target and target not in numbers:
            expression = expression[1:-1] if expression.startswith("(") else expression
            return {"numbers": sorted(numbers), "target": target, "expression": expression, "lines": lines}
    return None


def generate_problems(count: int, seed: int, min_numbers: int, max_numbers: int, max_number: int, max_target: int) -> list[dict]:
    """``count`` distinct problems reproducible from ``seed``; RuntimeError if the settings can't make them."""
    rng = random.Random(f"countdown:{seed}")
    problems: list[dict] = []
    seen: set[tuple] = set()
    for _ in range(count * 50):
        if len(problems) == count:
            break
        problem = generate_problem(rng, rng.randint(min_numbers, max_numbers), max_number, max_target)
        if problem is not None and (key := (tuple(problem["numbers"]), problem["target"])) not in seen:
            seen.add(key)
            problems.append(problem)
    if len(problems) < count:
        raise RuntimeError(
            f"could only generate {len(problems)} of {count} distinct Countdown problems with {min_numbers}..{max_numbers} "
            f"numbers up to {max_number} and targets up to {max_target}"
        )
    return problems


def parse_expression(text: str) -> ast.expr:
    """The expression's syntax tree, restricted to integer literals, + - * / and parentheses."""
    text = text.translate(_SPELLINGS)
    for pattern, replacement in _LATEX:
        text = pattern.sub(replacement, text)
    text = text.split("=", 1)[0].strip()  # "(6 - 2) * 5 = 20" declares the expression on the left
    if not text:
        raise InvalidExpression("empty expression")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise InvalidExpression(f"longer than {MAX_EXPRESSION_CHARS} characters")
    if not re.fullmatch(r"[0-9+\-*/() \t]+", text):
        bad = sorted(set(re.sub(r"[0-9+\-*/() \t]", "", text)))[:5]
        raise InvalidExpression(f"characters other than digits, + - * / and parentheses: {''.join(bad)!r}")
    if "**" in text or "//" in text:
        raise InvalidExpression("only + - * / are allowed")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as error:
        raise InvalidExpression(f"not an expression ({type(error).__name__})") from None
    _check_nodes(tree.body, depth=0)
    return tree.body


def _check_nodes(node: ast.AST, depth: int) -> None:
    if depth > 50:
        raise InvalidExpression("nested too deeply")
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        _check_nodes(node.left, depth + 1)
        _check_nodes(node.right, depth + 1)
    elif isinstance(node, ast.Constant) and type(node.value) is int:
        return
    else:
        raise InvalidExpression(f"{type(node).__name__} is not allowed (only numbers, + - * / and parentheses)")


def literals(node: ast.expr) -> list[int]:
    if isinstance(node, ast.BinOp):
        return literals(node.left) + literals(node.right)
    assert isinstance(node, ast.Constant) and type(node.value) is int
    return [node.value]


def evaluate(node: ast.expr) -> Fraction:
    """Exact value of a tree that passed ``parse_expression``; ZeroDivisionError on a division by zero."""
    if isinstance(node, ast.Constant):
        assert type(node.value) is int
        return Fraction(node.value)
    assert isinstance(node, ast.BinOp)
    left, right = evaluate(node.left), evaluate(node.right)
    op = _OPERATORS[type(node.op)]
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    return left / right


def verify(expression: str | None, numbers: list[int], target: int) -> Check:
    """Whether ``expression`` reaches ``target`` exactly using each of ``numbers`` at most as often as given."""
    if expression is None or not expression.strip():
        return Check(False, "no_answer")
    try:
        tree = parse_expression(expression)
    except InvalidExpression as error:
        return Check(False, f"invalid_expression: {error}")
    used, given = Counter(literals(tree)), Counter(numbers)
    not_given = sorted(n for n in used if n not in given)
    if not_given:
        return Check(False, f"number_misuse: {not_given[:5]} not among the given numbers")
    reused = sorted(n for n, times in used.items() if times > given[n])
    if reused:
        return Check(False, f"number_misuse: {reused[:5]} used more often than given")
    try:
        value = evaluate(tree)
    except ZeroDivisionError:
        return Check(False, "invalid_expression: division by zero")
    if value != target:
        return Check(False, f"wrong_value: {value} != {target}")
    return Check(True, "ok")


class CountdownTask:
    name = "countdown"
    instruction = INSTRUCTION
    failure_categories: tuple[str, ...] = ("invalid_expression", "number_misuse", "wrong_value")
    reference_note = "the generator's step lines (each operation and its result), not a human-written explanation"
    numbers_matter = True
    judges_wrong_answers = False  # the verifier names every wrong expression's fault
    numeric_answers = True
    settings: Mapping[str, tuple[Any, Any]] = {"countdown": (CountdownSource, CountdownSource())}

    def check_settings(self, problems) -> None:
        total = sum(sizes(self, problems))
        if total > MAX_SYNTHETIC_PROBLEMS:
            raise ValueError(f"n_train + n_test is at most {MAX_SYNTHETIC_PROBLEMS:,} Countdown problems (got {total:,})")

    def full_sizes(self, problems) -> tuple[int, int]:
        return problems.countdown.n_train, problems.countdown.n_test

    def check_problems(self, problems, seed: int) -> int:
        try:
            return len(self.load(problems, seed, LoadReport())["train"])
        except RuntimeError as error:
            raise SettingsError(
                "countdown", f"{error}; allow more numbers, larger numbers or targets, or ask for fewer"
            ) from None

    def load(self, problems, seed: int, report: LoadReport) -> dict[str, list[dict]]:
        config = problems.countdown
        n_train, n_test = sizes(self, problems)
        generated = generate_problems(
            n_train + n_test, seed, config.min_numbers, config.max_numbers, config.max_number, config.max_target
        )
        rows: dict[str, list[dict]] = {"train": [], "test": []}
        for index, problem in enumerate(generated):
            split = "train" if index < n_train else "test"
            question = question_text(problem["numbers"], problem["target"])
            rows[split].append(
                {
                    "problem_id": problem_id(question, self.name),
                    "split": split,
                    "question": question,
                    "reference_solution": "\n".join(problem["lines"]) + f"\n#### {problem['expression']}",
                    "answer": str(problem["target"]),
                    "difficulty": len(problem["numbers"]),
                    "source": "synthetic",
                    "task": self.name,
                    "task_metadata": json.dumps({"numbers": problem["numbers"], "target": problem["target"]}),
                }
            )
        return rows

    def read(self, completion: str | None) -> Extraction:
        return line_extraction(completion)

    def check(self, answer: str | None, problem: Mapping) -> Check:
        fields = metadata(problem)
        return verify(answer, fields["numbers"], fields["target"])

    def failure_rule(self, check: Check) -> tuple[str, str] | None:
        return (check.code, check.reason) if check.code in self.failure_categories else None
