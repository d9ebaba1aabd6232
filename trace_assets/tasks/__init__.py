"""Tasks: GSM8K, Countdown, MATH and MBPP behind one interface (see ``base.Task``)."""

from __future__ import annotations

import functools

from trace_assets.tasks.base import Check, Task
from trace_assets.tasks.registry import TASK_NAMES

__all__ = ["TASK_NAMES", "Check", "Task", "get_task", "grade", "task_of"]


@functools.cache
def get_task(name: str) -> Task:
    """The task called ``name`` (one of ``TASK_NAMES``)."""
    if name == "gsm8k":
        from trace_assets.tasks.gsm8k import Gsm8kTask

        return Gsm8kTask()
    if name == "countdown":
        from trace_assets.tasks.countdown import CountdownTask

        return CountdownTask()
    if name == "math":
        from trace_assets.tasks.competition_math import MathTask

        return MathTask()
    if name == "mbpp":
        from trace_assets.tasks.mbpp import MbppTask

        return MbppTask()
    raise ValueError(f"unknown task {name!r}; tasks are {list(TASK_NAMES)}")


def task_of(problem) -> Task:
    """The task of a ``problems`` row (rows written before tasks existed are gsm8k)."""
    return get_task(problem.get("task") or "gsm8k")


def grade(completion: str | None, problem) -> tuple:
    """``(extraction, check, strict_check)`` of a completion to a ``problems`` row under its task's
    verifier: what it declares, whether its answer is right (and why), and whether the strict reading
    alone (the form the prompt asks for) is right."""
    task = task_of(problem)
    extraction = task.read(completion)
    check = task.check(extraction.answer, problem)
    strict = check if extraction.strict == extraction.answer else task.check(extraction.strict, problem)
    return extraction, check, strict
