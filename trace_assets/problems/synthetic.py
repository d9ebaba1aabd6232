"""A seeded generator of grade-school word problems with known answers.

Each problem is a chain of ``steps`` operations on one running quantity; its reference solution
has one line per operation, in GSM8K's format (calculator annotations and a ``#### N`` line), so
the same normalisation and difficulty code serves synthetic and real problems.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

NAMES = ["Ava", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jamal", "Kira", "Liam"]
ITEMS = ["apples", "marbles", "stickers", "pencils", "cookies", "stamps", "shells", "cards"]
FRIENDS = ["Mia", "Noah", "Omar", "Priya", "Quinn", "Rosa", "Sam", "Tariq"]


@dataclass(frozen=True)
class SyntheticProblem:
    question: str
    solution: str
    answer: int
    steps: int


def _divisors(value: int, low: int, high: int) -> list[int]:
    return [d for d in range(low, high + 1) if value % d == 0]


OPERATIONS = ("find", "buy", "give", "gift_multiple", "share", "lose_fraction")


def _step(
    rng: random.Random, current: int, item: str, name: str, operations: tuple[str, ...] = OPERATIONS, max_number: int = 60
) -> tuple[str, str, int] | None:
    """One operation: (sentence for the question, solution line, new value), or None if it can't apply."""
    kind = rng.choice(operations)
    if kind == "find":
        found = rng.randint(1, max(2, min(15, max_number)))
        new = current + found
        return (
            f"Then {name} finds {found} more {item}.",
            f"{name} now has {current}+{found}=<<{current}+{found}={new}>>{new} {item}.",
            new,
        )
    if kind == "buy":
        boxes, per_box = rng.randint(2, 6), rng.randint(2, 9)
        bought = boxes * per_box
        new = current + bought
        return (
            f"Then {name} buys {boxes} boxes with {per_box} {item} in each box.",
            f"The boxes hold {boxes}*{per_box}=<<{boxes}*{per_box}={bought}>>{bought} {item}, "
            f"so the total becomes {current}+{bought}=<<{current}+{bought}={new}>>{new}.",
            new,
        )
    if kind == "give" and current > 2:
        given = rng.randint(1, current - 2)
        new = current - given
        friend = rng.choice(FRIENDS)
        return (
            f"Then {name} gives {given} {item} to {friend}.",
            f"After giving {given} away, {current}-{given}=<<{current}-{given}={new}>>{new} remain.",
            new,
        )
    if kind == "gift_multiple" and current <= 200:
        factor = rng.randint(2, 3)
        word = {2: "twice", 3: "three times"}[factor]
        gift = current * factor
        new = current + gift
        return (
            f"Then a cousin gives {name} {word} as many {item} as {name} has at that point.",
            f"The cousin gives {current}*{factor}=<<{current}*{factor}={gift}>>{gift}, "
            f"so there are {current}+{gift}=<<{current}+{gift}={new}>>{new}.",
            new,
        )
    if kind == "share":
        groups = _divisors(current, 2, 6)
        if not groups or current // max(groups) < 1:
            return None
        people = rng.choice(groups)
        new = current // people
        return (
            f"Then {name} splits all the {item} equally between {name} and {people - 1} "
            f"{'friend' if people == 2 else 'friends'} "
            f"and keeps one share.",
            f"Splitting among {people} people leaves {current}/{people}=<<{current}/{people}={new}>>{new}.",
            new,
        )
    if kind == "lose_fraction":
        for denominator, word in ((2, "half"), (3, "a third"), (4, "a quarter")):
            if current % denominator == 0 and current >= 2 * denominator:
                lost = current // denominator
                new = current - lost
                return (
                    f"Then {name} loses {word} of the {item}.",
                    f"They lose {current}/{denominator}=<<{current}/{denominator}={lost}>>{lost}, "
                    f"leaving {current}-{lost}=<<{current}-{lost}={new}>>{new}.",
                    new,
                )
    return None


def _applies(kind: str, current: int) -> bool:
    """Whether operation ``kind`` can act on ``current`` (mirrors the guards in ``_step``)."""
    if kind in ("find", "buy"):
        return True
    if kind == "give":
        return current > 2
    if kind == "gift_multiple":
        return current <= 200
    if kind == "share":
        return bool(_divisors(current, 2, 6))
    if kind == "lose_fraction":
        return any(current % d == 0 and current >= 2 * d for d in (2, 3, 4))
    return False


def generate_problem(
    rng: random.Random, steps: int, operations: tuple[str, ...] = OPERATIONS, max_number: int = 60
) -> SyntheticProblem | None:
    """A problem of ``steps`` operations, or None when the running amount reaches a value that none of
    ``operations`` can act on (e.g. only ``give`` and 2 left, only ``share`` and a prime)."""
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    current = rng.randint(min(6, max_number // 2 + 1), max_number)
    sentences = [f"{name} has {current} {item}."]
    lines: list[str] = []
    while len(lines) < steps:
        # Without this test the retry loop below spins forever on a dead end. Drawing stays as before
        # (a random operation, retried until one applies), so every problem that could be generated
        # before comes out the same for the same seed.
        if not any(_applies(kind, current) for kind in operations):
            return None
        step = _step(rng, current, item, name, operations, max_number)
        if step is None:
            continue
        sentence, line, current = step
        sentences.append(sentence)
        lines.append(line)
    sentences.append(f"How many {item} does {name} have at the end?")
    solution = "\n".join(lines) + f"\n#### {current}"
    return SyntheticProblem(" ".join(sentences), solution, current, steps)


def generate_problems(
    count: int, seed: int, min_steps: int, max_steps: int, operations: tuple[str, ...] = OPERATIONS, max_number: int = 60
) -> list[SyntheticProblem]:
    """``count`` distinct problems, reproducible from ``seed``, each step drawn from ``operations``."""
    rng = random.Random(seed)
    problems: list[SyntheticProblem] = []
    seen: set[str] = set()
    attempts = 0
    while len(problems) < count:
        attempts += 1
        if attempts > count * 50:
            raise RuntimeError(
                f"could not generate {count} distinct problems with steps {min_steps}..{max_steps}, "
                f"operations {list(operations)} and max_number {max_number} in {count * 50} attempts"
            )
        problem = generate_problem(rng, rng.randint(min_steps, max_steps), operations, max_number)
        if problem is not None and problem.question not in seen:
            seen.add(problem.question)
            problems.append(problem)
    return problems
