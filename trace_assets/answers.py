"""Final-answer extraction and numeric comparison: pure functions, no Dagster.

Three extractors are reported separately, because they fail differently on real model output
(``ACCEPTED_FORMATS`` says the same in one line each, for the report):

- ``strict``: a ``#### N`` line, GSM8K's own format and the one the student prompt asks for.
  Nothing else counts: not ``ANSWER: N``, not "the answer is N", not ``\\boxed{N}``.
- ``label``: an ``ANSWER: N`` line (the titanium style's schema).
- ``flexible``: the last ``\\boxed{N}`` or "the answer is N" / "Final Answer: N" phrase in the
  ending (the last ``FLEXIBLE_TAIL_CHARS`` characters), otherwise the last number there. It does
  not look for ``####``, and numbers recited after a declared answer fool its fallback, by design:
  comparing it against ``strict`` shows how often that happens.

Which declaration counts. A completion can declare an answer more than once. ``strict`` and
``label`` take the **last** declaration, so a trace that later changes its answer is judged by
the answer it ended on, not credited for its first one; ``Extraction.declared_answers`` keeps all
of them in order and ``Extraction.changed_answer`` says whether they disagree. A base model
given the few-shot ``Question: ... Answer: ...`` frame often goes on to invent the next question
and answer it too; so declarations are only read up to the first line that starts a new turn
(``Question:``, ``Problem 2:``, ``Q:``, ``User:``, ``Human:``) after the completion's first line of
text. A markdown heading such as ``#### 2. Add the boxes`` is a heading, not a declaration.

What a declared answer N may look like (the same reader serves all three extractors):

- decoration around the number: ``**18**``, ``$18``, ``€5``, ``£3.50``, ``45%`` (reads 45),
  ``12 apples``, ``1,234`` and ``1 234`` with a thin or no-break space, ``18.`` at a sentence end;
- signs: ``-3``, and Unicode minus, en dash, figure dash and the other hyphen-minus look-alikes
  before a number when used as a sign (``#### −3`` is -3; ``10 – 3`` is still a subtraction);
- exact values: decimals, ``3/4``, mixed numbers ``2 1/2`` and ``2½`` (5/2, only when the
  fraction is proper), LaTeX ``\\frac{3}{4}``, ``\\dfrac``, ``\\boxed{}``, ``\\( \\)``, ``$ $``,
  ``\\text{}``, ``\\$``, ``\\%``, ``{,}``;
- arithmetic after the declaration: ``#### 120 - 36 = 84`` and "the answer is 3 × 4 = 12" read
  the result after the last ``=``; a bare expression (``#### 120 - 36``) is evaluated by a small
  parser over ``+ - * / × ÷ x`` and parentheses (never ``eval``);
- not numbers: times and ratios (``3:30``, ``2:1``) read as no answer rather than as 3, and so
  do a bare unspaced ``5-6`` (a range, or a date) after a declaration;
  ordinals (``3rd``) and numbers of more than ``_MAX_DIGITS`` digits are skipped.

LaTeX the fast path cannot read (``\\sqrt{16}``, ``2^{10}``, ``\\frac{1}{2}+\\frac{1}{4}``) goes
to Hugging Face's math-verify, whose SymPy tree is then evaluated here by a bounded evaluator
(exact rationals only; no huge powers), so hostile input cannot hang it. math-verify's own
timeout uses ``signal.alarm``, which only works in the main thread: it is used there and turned
off elsewhere, where the length cap on its input is the guard.

Model output is untrusted: ``None``, empty, huge or looping text returns ``None`` answers quickly.
Declarations are looked for in the last ``MAX_SCAN_CHARS`` characters.
"""

from __future__ import annotations

import enum
import re
import threading
from dataclasses import dataclass
from fractions import Fraction
from typing import Final, NamedTuple

from trace_assets.arithmetic import Token, evaluate

MAX_SCAN_CHARS = 100_000  # declarations (####, ANSWER:) are looked for in this many trailing characters
FLEXIBLE_TAIL_CHARS = 2_000  # the flexible extractor reads only the ending
_CLAUSE_CHARS = 240  # how much of a line after a declaration marker is read
_LATEX_CHARS = 300  # longest LaTeX handed to math-verify
_MAX_DIGITS = 60  # a longer digit run is not an answer (and would only cost time)
_MAX_TOKENS = 64  # longest arithmetic after a declaration
_MAX_DECLARATIONS = 64  # declarations kept per completion (the last ones)
_MAX_SKIPPED_WORDS = 4  # "the answer is [therefore a total of] 18"

ACCEPTED_FORMATS = {
    "strict": "`#### N` only (GSM8K's format, which the student prompt asks for); the last one; `#### 120 - 36 = 84` reads 84",
    "label": "`ANSWER: N` at the start of a line (titanium's schema); the last one",
    "flexible": f"the last `\\boxed{{N}}` or 'the answer is N' / 'Answer: N' phrase in the last "
    f"{FLEXIBLE_TAIL_CHARS:,} characters, else the last number there",
    "answer": "strict, else label, else flexible",
}
"""Which formats each accuracy column accepts, for the report. In every format N may carry a sign
(Unicode minus too), currency, thousands separators, %, units, bold or LaTeX, and may be a
decimal, fraction or mixed number; times like 3:30 are not numbers."""

_CURRENCY = "$€£¥₹"


class _NotNumeric(enum.Enum):
    """A number-like answer that is not a number: a time or ratio such as ``3:30``.

    A one-member enum rather than a plain object, so that ``value is _NOT_NUMERIC`` narrows types.
    """

    NOT_NUMERIC = "NOT_NUMERIC"

    def __repr__(self) -> str:
        return "NOT_NUMERIC"


_NOT_NUMERIC: Final = _NotNumeric.NOT_NUMERIC

# --------------------------------------------------------------------------------------------
# Normalisation: one plain-text spelling of numbers and operators.

_TRANSLATE = str.maketrans(
    {
        **dict.fromkeys("\u2212\u2012\u2013\u2010\u2011\ufe63\uff0d", "-"),  # minus and dash look-alikes
        **dict.fromkeys("\u00b7\u22c5\u2217\u2219", "*"),  # dot operators
        "\uff05": "%",
        "\u2248": "=",
        "\u2044": "/",
        "\u2215": "/",  # fullwidth %, ≈, fraction slashes
        **{chr(0xFF10 + d): str(d) for d in range(10)},  # fullwidth digits
    }
)
VULGAR_FRACTIONS = {
    "½": "1/2",
    "⅓": "1/3",
    "⅔": "2/3",
    "¼": "1/4",
    "¾": "3/4",
    "⅕": "1/5",
    "⅖": "2/5",
    "⅗": "3/5",
    "⅘": "4/5",
    "⅙": "1/6",
    "⅚": "5/6",
    "⅛": "1/8",
    "⅜": "3/8",
    "⅝": "5/8",
    "⅞": "7/8",
}
_VULGAR_RE = re.compile(r"(\d?)([" + "".join(VULGAR_FRACTIONS) + "])")
_THOUSANDS_RE = re.compile(r"(?<=\d)(?:[\u00a0\u202f\u2009\u2007\u200a]|\\[,!;: ]|\\thinspace *|\{,\})(?=\d{3}(?!\d))")
_LATEX_FRAC_RE = re.compile(r"\\[dt]?frac\s*(?:\{\s*(-?[\d.,]+)\s*\}|(\d))\s*(?:\{\s*([\d.,]+)\s*\}|(\d))")
_LATEX_SUBS = [
    (re.compile(r"\\(?:text|textbf|textrm|textit|mathrm|mathbf|mathit|mbox|operatorname)\s*\{([^{}]*)\}"), r" \1 "),
    (re.compile(r"\\(?:boxed|fbox)\b|\\(?:left|right)\b|\\displaystyle\b"), " "),
    (re.compile(r"\\(?:times|cdot|ast)(?![A-Za-z])"), " × "),
    (re.compile(r"\\div(?![A-Za-z])"), " ÷ "),
    (re.compile(r"\\approx(?![A-Za-z])"), " = "),
    (re.compile(r"\\([$%])"), r"\1"),
    (re.compile(r"\{,\}"), ","),
    (re.compile(r"\\[()\[\]]|\$\$|\\[,;:! ]|\\q?quad(?![A-Za-z])|~"), " "),
    (re.compile(r"[{}]"), " "),
    (re.compile(r"\$(?! ?[-+]? ?\.?\d)"), " "),  # a math delimiter, not a currency sign
]
_MARKDOWN_RE = re.compile(r"(?<!\d)\*\*|\*\*(?!\d)|__|`")


def _frac(match: re.Match) -> str:
    numerator = match.group(1) or match.group(2)
    denominator = match.group(3) or match.group(4)
    before = match.string[match.start() - 1] if match.start() else ""
    return (" " if before.isdigit() else "") + f"{numerator}/{denominator} "


def _normalise(text: str) -> str:
    """Plain text for the number reader: Unicode signs, LaTeX and markdown removed or spelled out."""
    text = text.translate(_TRANSLATE)
    text = _VULGAR_RE.sub(lambda m: (m.group(1) + " " if m.group(1) else "") + VULGAR_FRACTIONS[m.group(2)], text)
    text = _THOUSANDS_RE.sub(",", text)
    if "\\" in text or "{" in text or "$" in text:
        text = _LATEX_FRAC_RE.sub(_frac, text)
        for pattern, replacement in _LATEX_SUBS:
            text = pattern.sub(replacement, text)
    return _MARKDOWN_RE.sub("", text)


# --------------------------------------------------------------------------------------------
# Reading one number, and arithmetic after a declaration.

_NUMBER_AT = re.compile(r"(?P<cur>[" + _CURRENCY + r"] ?)?(?P<neg>-)?(?P<int>\d{1,3}(?:,\d{3})+(?!\d)|\d+)?(?P<dec>\.\d+)?")
_ORDINAL_AFTER = re.compile(r"(?:st|nd|rd|th)\b", re.IGNORECASE)
_MIXED_AFTER = re.compile(r"[ \t]+(\d{1,9})/(\d{1,9})(?![\d/]|\.\d|,\d)")
_FRACTION_AFTER = re.compile(r"/(\d{1,3}(?:,\d{3})+(?!\d)|\d+)(\.\d+)?(?![\d/])")
_PERCENT_AFTER = re.compile(r" ?%")
_TIME_RUN = re.compile(r"(?::\d+)+(?:\s?[ap]\.?m\.?\b)?", re.IGNORECASE)
_SPACES = re.compile(r"[ \t]*")
_OP_AT = re.compile(r"[ \t]*([-+*/×÷xX=])[ \t]*")
_VALUE_AHEAD = re.compile(r"(?:[-+][ \t]?)?(?:\(|[" + _CURRENCY + r"]|\.?\d)")
_CLOSE_AT = re.compile(r"[ \t]*\)")
_UNIT_THEN_OP = re.compile(r"[ \t]*[^\W\d_]+(?:[ \t]+[^\W\d_]+)?(?=[ \t]*(?:[=+*/×÷]|-[ \t]))")
_LEADING_JUNK = re.compile(r"[\s*_\"'“”‘’:=>]*")
_LEADING_WORDS = re.compile(rf"(?:[A-Za-z][A-Za-z'’]*[ \t]*[:,]?[ \t]+){{1,{_MAX_SKIPPED_WORDS}}}")
_UNRELIABLE_AFTER = re.compile(r"[ \t]*(?:\^|\\[A-Za-z]|\*|_\{)")
_LATEX_HINT = re.compile(r"[\\^{]")
_OPS = {"+": "+", "-": "-", "*": "*", "×": "*", "x": "*", "X": "*", "/": "/", "÷": "/", "=": "="}


def _skip(pattern: re.Pattern[str], text: str, pos: int = 0) -> int:
    """Where the run of ``pattern`` starting at ``pos`` ends; for patterns that match the empty string."""
    match = pattern.match(text, pos)
    assert match is not None, f"{pattern.pattern!r} matches the empty string, so always matches"
    return match.end()


def _read_number(text: str, pos: int, fractions: bool):
    """The number starting at ``pos``: ``(Fraction | _NOT_NUMERIC | None, end)``, or None if none starts there.

    ``None`` as the value means "skip it" (an ordinal or an absurdly long digit run).
    ``fractions`` reads ``3/4`` as one number (the arithmetic reader treats ``/`` as division instead).
    """
    match = _NUMBER_AT.match(text, pos)
    if match is None or not (match["int"] or match["dec"]):
        return None
    end = match.end()
    whole = (match["int"] or "").replace(",", "")
    if len(whole) + len(match["dec"] or "") > _MAX_DIGITS:
        return None, end
    time = _TIME_RUN.match(text, end)  # 3:30, 3:30 pm, 2:1
    if time or (pos >= 2 and text[pos - 1] == ":" and text[pos - 2].isdigit()):
        return _NOT_NUMERIC, time.end() if time else end
    if _ORDINAL_AFTER.match(text, end):
        return None, end
    value = Fraction(whole + (match["dec"] or "") if whole else "0" + match["dec"])
    plain_integer = match["int"] and not match["dec"] and "," not in match["int"]
    mixed = _MIXED_AFTER.match(text, end) if plain_integer else None
    if mixed and 0 < int(mixed.group(1)) < int(mixed.group(2)):
        value += Fraction(int(mixed.group(1)), int(mixed.group(2)))
        end = mixed.end()
    elif fractions and (fraction := _FRACTION_AFTER.match(text, end)):
        denominator = Fraction(fraction.group(1).replace(",", "") + (fraction.group(2) or ""))
        if denominator == 0:
            return None, fraction.end()
        value /= denominator
        end = fraction.end()
    if percent := _PERCENT_AFTER.match(text, end):
        end = percent.end()
    return (-value if match["neg"] else value), end


def _tokens(text: str, pos: int) -> list | _NotNumeric | None:
    """Numbers, operators, parentheses and ``=`` from ``pos`` on, stopping at the first thing that isn't.

    Unit words between a number and an operator are skipped ("3 boxes × 4 = 12"). Returns
    ``_NOT_NUMERIC`` if a number read is a time or ratio, None if there is no number at all.
    """
    tokens: list = []
    expect_value, depth = True, 0
    while len(tokens) < _MAX_TOKENS:
        if expect_value:
            pos = _skip(_SPACES, text, pos)
            if pos >= len(text):
                break
            char = text[pos]
            if char == "(":
                tokens.append("(")
                depth += 1
                pos += 1
                continue
            if char in "-+" and _VALUE_AHEAD.match(text, pos):
                tokens.append("u" + char)
                pos += 1
                continue
            read = _read_number(text, pos, fractions=False)
            if read is None or read[0] is None:
                break
            if read[0] is _NOT_NUMERIC:
                return _NOT_NUMERIC
            tokens.append(read[0])
            pos, expect_value = read[1], False
        else:
            if depth and (close := _CLOSE_AT.match(text, pos)):
                tokens.append(")")
                depth -= 1
                pos = close.end()
                continue
            operator = _OP_AT.match(text, pos)
            if operator and _VALUE_AHEAD.match(text, operator.end()):
                hyphen = operator.group(0) == "-" and text[operator.end()].isdigit()  # 5-6: maybe a range
                tokens.append("r-" if hyphen else _OPS[operator.group(1)])
                pos, expect_value = operator.end(), True
                continue
            unit = _UNIT_THEN_OP.match(text, pos)
            if unit and unit.end() > pos:
                pos = unit.end()
                continue
            break
    while tokens and not isinstance(tokens[-1], Fraction) and tokens[-1] != ")":
        tokens.pop()
    if not tokens:
        return None
    if _UNRELIABLE_AFTER.match(text, pos):  # 2^{10}, \sqrt..., 2**10: the fast path would misread it
        return None
    return tokens


def _evaluate(tokens: list) -> Fraction | _NotNumeric | None:
    """Value of ``a op b ... = c = d``: the last ``=`` segment that evaluates.

    An unspaced hyphen between numbers is a subtraction in ``120-36=84`` but a range or a date
    in a bare ``5-6`` or ``2024-05-01``: without an ``=`` that is not a number.
    """
    if "r-" in tokens:
        if "=" not in tokens:
            return _NOT_NUMERIC
        tokens = ["-" if token == "r-" else token for token in tokens]
    segments: list[list] = []
    current: list = []
    for token in tokens:
        if token == "=":
            segments.append(current)
            current = []
        else:
            current.append(token)
    segments.append(current)
    for segment in reversed(segments):
        if segment:
            value = _value(segment)
            if value is not None:
                return _bounded(value)
    return None


_TOKEN_KINDS = {"(": "lp", ")": "rp", "+": "op", "-": "op", "*": "op", "/": "op", "u-": "op"}


def _value(segment: list) -> Fraction | None:
    """The exact value of numbers, ``+ - * /``, unary signs and parentheses, by the shared evaluator."""
    tokens = [
        Token("num", "", 0, 0, token) if isinstance(token, Fraction) else Token(_TOKEN_KINDS[token], token.lstrip("u"), 0, 0)
        for token in segment
        if token != "u+"  # a unary plus changes nothing
    ]
    try:
        return evaluate(tokens)[0]
    except ValueError:
        return None


def _read_plain(raw: str, skip_words: bool) -> Fraction | _NotNumeric | None:
    """The number or arithmetic at the start of ``raw``, without math-verify."""
    text = _normalise(raw)
    start = _skip(_LEADING_JUNK, text)
    tokens = _tokens(text, start)
    if tokens is None and skip_words and (words := _LEADING_WORDS.match(text, start)):
        tokens = _tokens(text, _skip(_LEADING_JUNK, text, words.end()))
    if tokens is _NOT_NUMERIC:
        return _NOT_NUMERIC
    return _evaluate(tokens) if tokens else None


def _read_declared(raw: str, skip_words: bool) -> Fraction | _NotNumeric | None:
    """The answer at the start of ``raw`` (the text after a declaration marker)."""
    value = _read_plain(raw, skip_words)
    if value is None and _LATEX_HINT.search(raw):
        value = _latex_value(raw)
    return value


def _read_boxed(content: str) -> Fraction | _NotNumeric | None:
    """A ``\\boxed{}`` declares its answer: one that reads as no number is a non-numeric answer."""
    if not content.strip():
        return None
    value = None if "!" in content else _read_plain(content, skip_words=False)  # 5! is a factorial here
    if value is None:
        value = _latex_value("\\boxed{" + content + "}")
    return _NOT_NUMERIC if value is None else value


# --------------------------------------------------------------------------------------------
# LaTeX through math-verify, evaluated here without SymPy's unbounded arithmetic.


def _latex_value(latex: str) -> Fraction | None:
    latex = latex.strip()
    if not latex or len(latex) > _LATEX_CHARS:
        return None
    from math_verify import LatexExtractionConfig, parse  # imports SymPy: only when LaTeX needs it

    main_thread = threading.current_thread() is threading.main_thread()
    try:
        parsed = parse(
            latex,
            extraction_config=[LatexExtractionConfig(boxed_match_priority=0)],
            fallback_mode="no_fallback",
            parsing_timeout=1 if main_thread else None,  # signal.alarm only works in the main thread
        )
    except Exception:
        return None
    for expression in parsed:
        value = _sympy_value(expression, depth=0)
        if value is not None:
            return value
    return None


def _bounded(value: Fraction) -> Fraction | None:
    limit = 10**_MAX_DIGITS
    return value if abs(value.numerator) < limit and value.denominator < limit else None


def _sympy_value(expression, depth: int) -> Fraction | None:
    """An exact rational value of a SymPy tree, or None; refuses anything that could blow up."""
    if depth > 32 or isinstance(expression, str):
        return None
    try:
        if getattr(expression, "is_Relational", False):
            return _sympy_value(expression.rhs, depth + 1)
        if getattr(expression, "is_Integer", False) or getattr(expression, "is_Rational", False):
            return _bounded(Fraction(int(expression.p), int(expression.q)))
        if getattr(expression, "is_Float", False):
            return _bounded(Fraction(str(expression)))
        values = [_sympy_value(argument, depth + 1) for argument in getattr(expression, "args", ())]
        args = [value for value in values if value is not None]
        if not args or len(args) < len(values):
            return None
        if getattr(expression, "is_Add", False):
            return _bounded(sum(args, Fraction(0)))
        if getattr(expression, "is_Mul", False):
            product = Fraction(1)
            for argument in args:
                bounded = _bounded(product * argument)
                if bounded is None:
                    return None
                product = bounded
            return product
        if getattr(expression, "is_Pow", False):
            base, exponent = args
            return _power(base, exponent)
        if type(expression).__name__ == "factorial" and args[0].denominator == 1 and 0 <= args[0] <= 40:
            result = 1
            for factor in range(2, int(args[0]) + 1):
                result *= factor
            return Fraction(result)
    except (ValueError, ZeroDivisionError, TypeError, AttributeError, OverflowError):
        return None
    return None


def _power(base: Fraction, exponent: Fraction) -> Fraction | None:
    if exponent.denominator == 1:
        if abs(exponent) > 200 or (base == 0 and exponent < 0):
            return None
        if abs(base) > 1 and abs(exponent) * max(len(str(base.numerator)), len(str(base.denominator))) > 2 * _MAX_DIGITS:
            return None
        return _bounded(base**exponent.numerator)
    if exponent.denominator == 2 and base >= 0 and abs(exponent.numerator) <= 4:  # square roots of perfect squares
        from math import isqrt

        root_n, root_d = isqrt(base.numerator), isqrt(base.denominator)
        if root_n * root_n == base.numerator and root_d * root_d == base.denominator:
            return _power(Fraction(root_n, root_d), Fraction(exponent.numerator))
    return None


# --------------------------------------------------------------------------------------------
# Numbers as strings: parse, canonical form, comparison.

_WHOLE_NUMBER_RE = re.compile(
    r"[ \t]*(?P<s1>[-+])?[ \t]*(?:[" + _CURRENCY + r"][ \t]*)?(?P<s2>[-+])?[ \t]*"
    r"(?:(?P<whole>\d+)[ \t]+(?P<mixed_n>\d+)[ \t]*/[ \t]*(?P<mixed_d>\d+)"
    r"|(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)(?:[ \t]*/[ \t]*(?P<den>\d+(?:\.\d+)?))?)"
    r"[ \t]*%?[ \t]*\.?[ \t]*"
)


_CALC_ANNOTATION_RE = re.compile(r"<<[^<>]*>>")


def strip_calculator_annotations(text: str) -> str:
    """Remove GSM8K's ``<<48/2=24>>`` calculator annotations."""
    return _CALC_ANNOTATION_RE.sub("", text)


def parse_number(text: str | None) -> Fraction | None:
    """One number as an exact Fraction: ``"$1,234.50"``, ``"18."``, ``"−3"``, ``"3/4"``, ``"2 1/2"``,
    ``"45%"`` (45), ``"\\frac{3}{4}"``; None if the text is not exactly one number (``"1/0"``, ``"--5"``)."""
    if text is None:
        return None
    text = str(text)
    if len(text) > 4 * _MAX_DIGITS:
        return None
    match = _WHOLE_NUMBER_RE.fullmatch(_normalise(text))
    if match is None or (match["s1"] and match["s2"]):
        return None
    try:
        if match["whole"] is not None:
            whole, numerator, denominator = int(match["whole"]), int(match["mixed_n"]), int(match["mixed_d"])
            if not 0 < numerator < denominator:
                return None
            value = whole + Fraction(numerator, denominator)
        else:
            digits = match["num"].replace(",", "")
            if len(digits) > _MAX_DIGITS + 1:
                return None
            value = Fraction(digits)
            if match["den"] is not None:
                value /= Fraction(match["den"])
    except (ValueError, ZeroDivisionError):
        return None
    return -value if "-" in (match["s1"] or "", match["s2"] or "") else value


def canonical_number(text: str | None) -> str | None:
    """Canonical string of a number: ``"$1,200.00"`` -> ``"1200"``, ``"3.50"`` -> ``"3.5"``, ``"1/4"`` -> ``"0.25"``."""
    value = parse_number(text)
    return None if value is None else _canonical(value)


def _canonical(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    # Terminating decimals print as decimals; others keep the exact fraction.
    denominator = value.denominator
    for prime in (2, 5):
        while denominator % prime == 0:
            denominator //= prime
    if denominator == 1:
        digits = 0
        scaled = value
        while scaled.denominator != 1:
            scaled *= 10
            digits += 1
        sign = "-" if value < 0 else ""
        whole = abs(scaled.numerator)
        text_digits = str(whole).rjust(digits + 1, "0")
        return f"{sign}{text_digits[:-digits]}.{text_digits[-digits:]}"
    return f"{value.numerator}/{value.denominator}"


def numbers_match(predicted: str | None, reference: str | None) -> bool:
    """Exact numeric equality after normalisation; anything unparsable is not a match."""
    left, right = parse_number(predicted), parse_number(reference)
    return left is not None and right is not None and left == right


# --------------------------------------------------------------------------------------------
# Declarations: ``#### N`` and ``ANSWER: N``.

_STRICT_MARK_RE = re.compile(r"(?<!#)####(?!#)")
# An ``ANSWER:`` label at the start of a line (quoted, bulleted or in bold allowed), up to its colon;
# compile it with re.IGNORECASE | re.MULTILINE. The one definition: the tasks' line reader
# (trace_assets/tasks/base.py) and the failure rules (trace_assets/reporting/failures.py) use it too.
ANSWER_LABEL = r"^[ \t>*_-]*(?:\*\*|__)?ANSWER[ \t]*(?:\*\*|__)?[ \t]*:"
_LABEL_MARK_RE = re.compile(ANSWER_LABEL + r"(?:[ \t]*(?:\*\*|__))?", re.IGNORECASE | re.MULTILINE)
_NEW_TURN_RE = re.compile(
    r"^[ \t]*(?:\*\*|#+[ \t]*)?(?:(?:Question|Problem)[ \t]*\d*[ \t]*(?:\*\*)?[ \t]*[:.)]|Q[ \t]*\d*[ \t]*:|(?:User|Human)[ \t]*:)",
    re.IGNORECASE | re.MULTILINE,
)
_HEADING_RE = re.compile(r"[ \t]*\d{1,2}[.)][ \t]+[A-Za-z]")
_CLAUSE_START_RE = re.compile(r"[ \t]*(?:\r?\n[ \t]*)?")


def answer_region(text: str | None) -> tuple[int, int]:
    """``(start, end)`` of the part of ``text`` where declarations count: its last ``MAX_SCAN_CHARS``
    characters, up to the first line that starts a new turn after the completion's first line of text."""
    text = text or ""
    start = max(0, len(text) - MAX_SCAN_CHARS)
    tail = text[start:]  # sliced, so that ``^`` matches at its start
    for turn in _NEW_TURN_RE.finditer(tail):
        if tail[: turn.start()].strip():
            return start, start + turn.start()
    return start, len(text)


def _clause(text: str, end: int) -> str:
    start = _skip(_CLAUSE_START_RE, text, end)
    stop = text.find("\n", start, start + _CLAUSE_CHARS)
    return text[start : stop if stop != -1 else start + _CLAUSE_CHARS]


class Declared(NamedTuple):
    """One ``####`` or ``ANSWER:`` declaration as the extractors read it; offsets are in the whole text."""

    kind: str  # "strict" (``####``) or "label" (``ANSWER:``)
    value: str | None  # canonical; None for a declared answer that is not a number (``#### 3:30``)
    start: int  # where its marker starts
    line_start: int  # where the marker's line starts
    line: str  # the marker's line through the line its answer is read from ("####\n17" is one), as written

    @property
    def line_end(self) -> int:
        return self.line_start + len(self.line)


def _scan(text: str | None) -> list[tuple[str, Fraction | _NotNumeric, int, int, int]]:
    """``(kind, value, marker start, line start, line end)`` of each ``####`` (kind "strict") and
    ``ANSWER:`` ("label") in the answer region that has an answer, in order (the last ``_MAX_DECLARATIONS``)."""
    text = text or ""
    offset, region_end = answer_region(text)
    region = text[offset:region_end]
    found = []
    for mark in _STRICT_MARK_RE.finditer(region):
        at_line_start = not region[region.rfind("\n", 0, mark.start()) + 1 : mark.start()].strip()
        line_end = region.find("\n", mark.end())
        if at_line_start and _HEADING_RE.match(region, mark.end()) and line_end != -1 and region[line_end:].strip():
            continue  # "#### 2. Add the boxes" with the solution going on below is a markdown heading
        found.append((mark.start(), "strict", mark.end()))
    found += [(mark.start(), "label", mark.end()) for mark in _LABEL_MARK_RE.finditer(region)]
    declarations = []
    for start, kind, end in sorted(found)[-_MAX_DECLARATIONS:]:
        value = _read_declared(_clause(region, end), skip_words=False)
        if value is not None:
            line_start = region.rfind("\n", 0, start) + 1
            line_end = region.find("\n", _skip(_CLAUSE_START_RE, region, end))
            line_end = len(region) if line_end == -1 else line_end
            declarations.append((kind, value, offset + start, offset + line_start, offset + line_end))
    return declarations


def _declarations(text: str | None) -> list[tuple[str, Fraction | _NotNumeric]]:
    """``(kind, value)`` of each declaration that has an answer, in order (see ``_scan``)."""
    return [(kind, value) for kind, value, *_ in _scan(text)]


def declarations(text: str | None) -> list[Declared]:
    """Every ``####`` and ``ANSWER:`` declaration that ``extract_strict`` and ``extract_label`` read, in
    order: the one reader of declared answers, for the dataset builder as for the judged traces."""
    text = text or ""
    return [
        Declared(kind, None if value is _NOT_NUMERIC else _canonical(value), start, line_start, text[line_start:line_end])
        for kind, value, start, line_start, line_end in _scan(text)
    ]


def _last(declarations: list, kind: str) -> str | None:
    values = [value for found_kind, value in declarations if found_kind == kind]
    if not values or values[-1] is _NOT_NUMERIC:
        return None
    return _canonical(values[-1])


def extract_strict(text: str | None) -> str | None:
    """The last ``#### N`` declaration (see the module docstring), canonical; None if there is none."""
    return _last(_declarations(text), "strict")


def extract_label(text: str | None) -> str | None:
    """The last ``ANSWER: N`` line, canonical; None if there is none."""
    return _last(_declarations(text), "label")


# --------------------------------------------------------------------------------------------
# Flexible: answer phrases and \boxed{}, else the last number of the ending.

_PHRASE_RE = re.compile(
    r"\b(?:final[ \t]+answer|answer)(?:[ \t]+to[ \t]+(?:the|this)[ \t]+(?:question|problem))?"
    r"[ \t]*(?:\*\*|__)?[ \t]*(?:is\b|was\b|would[ \t]+be\b|will[ \t]+be\b|[:=])(?:[ \t]*(?:\*\*|__))?[ \t]*:?",
    re.IGNORECASE,
)
_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_SCAN_RE = re.compile(r"(?<![\w.,/])(?P<sign>-)?(?=[" + _CURRENCY + r"]? ?-?\.?\d)")


def _boxed_contents(text: str) -> list[tuple[int, str]]:
    found = []
    for match in _BOXED_RE.finditer(text):
        depth, index = 1, match.end()
        limit = min(len(text), index + _LATEX_CHARS)
        while index < limit and depth:
            depth += {"{": 1, "}": -1}.get(text[index], 0)
            index += 1
        if depth == 0:
            found.append((match.start(), text[match.end() : index - 1]))
    return found


def _is_sign(text: str, index: int) -> bool:
    """Whether the ``-`` at ``index`` is a sign rather than a subtraction ("10 - 3")."""
    before = index - 1
    while before >= 0 and text[before] in " \t":
        before -= 1
    return before < 0 or not (text[before].isdigit() or text[before] in ")%")


def _last_number(text: str) -> Fraction | _NotNumeric | None:
    text = _normalise(text)
    last, pos = None, 0
    while pos < len(text):
        match = _SCAN_RE.search(text, pos)
        if match is None:
            break
        start = match.end()
        read = _read_number(text, start, fractions=True)
        if read is None:
            pos = max(start, match.start()) + 1
            continue
        value, pos = read
        if value is not None:
            last = -value if match["sign"] and value is not _NOT_NUMERIC and _is_sign(text, match.start()) else value
    return last


def extract_flexible(text: str | None) -> str | None:
    """The last answer phrase or ``\\boxed{}`` in the ending, else its last number; canonical."""
    tail = (text or "")[-FLEXIBLE_TAIL_CHARS:]
    candidates = [(start, content, True) for start, content in _boxed_contents(tail)]
    candidates += [(match.start(), _clause(tail, match.end()), False) for match in _PHRASE_RE.finditer(tail)]
    for _, clause, boxed in sorted(candidates, key=lambda candidate: candidate[0], reverse=True):
        value = _read_boxed(clause) if boxed else _read_declared(clause, skip_words=True)
        if value is _NOT_NUMERIC:
            return None
        if value is not None:
            return _canonical(value)
    value = _last_number(tail)
    return None if value is None or value is _NOT_NUMERIC else _canonical(value)


# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Extraction:
    strict: str | None
    label: str | None
    flexible: str | None
    declared_answers: tuple[str, ...] = ()
    """Every numeric ``####`` and ``ANSWER:`` declaration, canonical, in the order written."""

    @property
    def answer(self) -> str | None:
        """Best single answer: a declared one (``####`` or ``ANSWER:``) wins over the fallback."""
        return self.strict or self.label or self.flexible

    @property
    def method(self) -> str:
        if self.strict is not None:
            return "strict"
        if self.label is not None:
            return "label"
        return "flexible" if self.flexible is not None else "none"

    @property
    def changed_answer(self) -> bool:
        """The completion declared more than one different answer (strict/label take the last)."""
        return len(set(self.declared_answers)) > 1


def extract_answer(text: str | None) -> Extraction:
    declarations = _declarations(text)
    return Extraction(
        strict=_last(declarations, "strict"),
        label=_last(declarations, "label"),
        flexible=extract_flexible(text),
        declared_answers=tuple(_canonical(value) for _, value in declarations if value is not _NOT_NUMERIC),
    )


def reference_answer(solution: str) -> str:
    """The canonical final answer of a GSM8K-format reference solution; raises ValueError if absent."""
    answer = extract_strict(solution)
    if answer is None:
        raise ValueError("reference solution has no '#### <number>' final answer")
    return answer


def count_reasoning_steps(solution: str) -> int:
    """Difficulty of a reference solution: its non-empty lines before the ``####`` line."""
    body = solution.split("####", 1)[0]
    return sum(1 for line in body.splitlines() if line.strip())
