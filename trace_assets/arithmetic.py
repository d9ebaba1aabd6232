"""One exact arithmetic evaluator for the whole project: recursive descent over tokens (numbers,
operators, parentheses), exact ``Fraction`` arithmetic, never ``eval``. The answer reader
(trace_assets/answers.py: ``120 - 36 = 84`` declares 84) and the failure rules
(trace_assets/reporting/failures.py: the arithmetic-slip check) both evaluate with it."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True)
class Token:
    kind: str  # num, op, lp, rp, eq, word, other, nl
    text: str
    start: int
    end: int
    value: Fraction | None = None
    decimals: int = 0  # digits after the point, for rounding tolerance
    percent: bool = False


class _Unparsable(Exception):
    pass


class _Parser:
    """Parses ``tokens`` (num/op/lp/rp only) to an exact Fraction.

    ``precedence=False`` reads binary operators strictly left to right (how models often chain
    ``5 + 3 * 2 = 16``); ``relative_percent=True`` reads ``50 + 20%`` as 50 * 1.2.
    ``values`` overrides number values by token index (for rounding intervals).
    """

    def __init__(
        self,
        tokens: list[Token],
        precedence: bool = True,
        relative_percent: bool = False,
        values: dict[int, Fraction] | None = None,
    ):
        self.tokens, self.precedence, self.relative_percent = tokens, precedence, relative_percent
        self.values = values or {}
        self.index = 0
        self.binary_ops = 0

    def parse(self) -> Fraction:
        value = self.expression()
        if self.index != len(self.tokens):
            raise _Unparsable
        return value

    def peek(self) -> Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def expression(self) -> Fraction:
        if not self.precedence:
            return self.flat()
        value = self.term()
        while (token := self.peek()) is not None and token.kind == "op" and token.text in "+-":
            self.index += 1
            right_token = self.peek()
            right = self.term()
            value = self.apply(value, token.text, right, right_token)
        return value

    def flat(self) -> Fraction:
        value = self.unary()
        while (token := self.peek()) is not None and token.kind in ("op", "lp"):
            if token.kind == "lp":  # implicit multiplication: 2(3 + 4)
                value = self.apply(value, "*", self.unary(), None)
                continue
            self.index += 1
            right_token = self.peek()
            right = self.unary()
            value = self.apply(value, token.text, right, right_token)
        return value

    def term(self) -> Fraction:
        value = self.unary()
        while (token := self.peek()) is not None and (
            token.kind == "lp" or (token.kind == "op" and token.text in ("*", "/", "//", "mod"))
        ):
            if token.kind == "lp":  # implicit multiplication: 2(3 + 4)
                value = self.apply(value, "*", self.unary(), None)
                continue
            self.index += 1
            value = self.apply(value, token.text, self.unary(), None)
        return value

    def unary(self) -> Fraction:
        token = self.peek()
        if token is not None and token.kind == "op" and token.text == "-":
            self.index += 1
            return -self.unary()
        return self.power()

    def power(self) -> Fraction:
        base = self.atom()
        token = self.peek()
        if token is not None and token.kind == "op" and token.text == "^":
            self.index += 1
            exponent = self.unary()
            self.binary_ops += 1
            if exponent.denominator != 1 or abs(exponent) > 12 or (base == 0 and exponent < 0):
                raise _Unparsable
            return base ** int(exponent)
        return base

    def atom(self) -> Fraction:
        token = self.peek()
        if token is None:
            raise _Unparsable
        if token.kind == "num":
            self.index += 1
            value = self.values.get(self.index - 1, token.value)
            if value is None:  # a number token always has a value; this keeps the type exact
                raise _Unparsable
            return value
        if token.kind == "lp":
            self.index += 1
            value = self.expression()
            closing = self.peek()
            if closing is None or closing.kind != "rp":
                raise _Unparsable
            self.index += 1
            return value
        raise _Unparsable

    def apply(self, left: Fraction, op: str, right: Fraction, right_token: Token | None) -> Fraction:
        self.binary_ops += 1
        relative = (
            self.relative_percent and op in "+-" and right_token is not None and right_token.kind == "num" and right_token.percent
        )  # "50 + 20%" read as 50 * 1.2
        if op == "+":
            return left * (1 + right) if relative else left + right
        if op == "-":
            return left * (1 - right) if relative else left - right
        if op == "*":
            return left * right
        if op == "^":
            if right.denominator != 1 or abs(right) > 12 or (left == 0 and right < 0):
                raise _Unparsable
            return left ** int(right)
        if right == 0:
            raise _Unparsable
        if op == "/":
            return left / right
        if op == "//":
            return Fraction(left // right)
        return left % right  # mod


def evaluate(
    tokens: list[Token], precedence: bool = True, relative_percent: bool = False, values: dict[int, Fraction] | None = None
) -> tuple[Fraction, int]:
    """(value, number of binary operations) of an arithmetic token list; raises ValueError if unparsable."""
    parser = _Parser(tokens, precedence, relative_percent, values)
    try:
        return parser.parse(), parser.binary_ops
    except (_Unparsable, ZeroDivisionError, OverflowError, RecursionError) as error:
        raise ValueError("not an arithmetic expression") from error
