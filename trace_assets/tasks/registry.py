"""The names of the tasks; light, so schemas and the experiment's validation can import it."""

TASK_NAMES = ("gsm8k", "countdown", "math", "mbpp")
