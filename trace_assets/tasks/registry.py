"""The tasks, by name. Adding a task is one module with a class that follows
:class:`~trace_assets.tasks.base.Task` and one ``register`` line here; the experiment's settings,
the problems and evaluation tables, dry-run and input checks all read this registry."""

from __future__ import annotations

from trace_assets.tasks.base import Task
from trace_assets.tasks.competition_math import MathTask
from trace_assets.tasks.countdown import CountdownTask
from trace_assets.tasks.gsm8k import Gsm8kTask
from trace_assets.tasks.mbpp import MbppTask

TASKS: dict[str, Task] = {}  # name -> task, in the order registered


def register(task: Task) -> Task:
    """Add ``task`` under its name (an error if another task has the name or one of its settings' keys)."""
    if task.name in TASKS and TASKS[task.name] is not task:
        raise ValueError(f"a task named {task.name!r} is already registered")
    taken = {key: other.name for other in TASKS.values() if other is not task for key in other.settings}
    taken |= dict.fromkeys(("tasks", "n_train", "n_test"), "every task")
    clashes = sorted(key for key in task.settings if key in taken)
    if clashes:
        raise ValueError(f"task {task.name!r}: settings key(s) {clashes} belong to {sorted({taken[k] for k in clashes})}")
    TASKS[task.name] = task
    return task


register(Gsm8kTask())
register(CountdownTask())
register(MathTask())
register(MbppTask())

TASK_NAMES = tuple(TASKS)  # the project's own tasks (a test may register more)
