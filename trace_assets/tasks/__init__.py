"""Tasks: GSM8K, Countdown, MATH and MBPP behind one interface (see ``base.Task``), registered in
``registry``."""

from __future__ import annotations

from trace_assets.tasks.base import Check, Task
from trace_assets.tasks.registry import TASK_NAMES, TASKS, register

__all__ = ["TASKS", "TASK_NAMES", "Check", "Task", "get_task", "grade", "register", "task_of"]


def get_task(name: str) -> Task:
    """The registered task called ``name``."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; tasks are {list(TASKS)}") from None


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
