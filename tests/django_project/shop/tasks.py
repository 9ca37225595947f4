"""Django @task functions, run by an asynq-aio worker in the tests."""

import os
from pathlib import Path

from django.tasks import TaskContext, task


@task  # type: ignore[untyped-decorator]  # Django is not installed where mypy runs
def add(a: int, b: int) -> int:
    """Writes a marker file (the side effect the test looks for) and returns the sum."""
    Path(os.environ["ASYNQ_TEST_OUT"], f"add-{a}-{b}").write_text(str(a + b))
    return a + b


@task(queue_name="slow")  # type: ignore[untyped-decorator]  # Django is not installed where mypy runs
async def greet(name: str, punctuation: str = "!") -> dict[str, str]:
    """A coroutine task on the other queue: awaited by the worker, its dict is the result."""
    return {"greeting": f"hello {name}{punctuation}"}


@task  # type: ignore[untyped-decorator]  # Django is not installed where mypy runs
def explode(reason: str) -> None:
    """Fails: its error must come back through get_result()."""
    raise ValueError(f"exploded: {reason}")


@task(takes_context=True)  # type: ignore[untyped-decorator]  # Django is not installed where mypy runs
def attempt(context: TaskContext) -> dict[str, object]:
    """Returns what Django's TaskContext reports: the attempt number and the result's ID."""
    return {"attempt": context.attempt, "id": context.task_result.id}


@task  # type: ignore[untyped-decorator]  # Django is not installed where mypy runs
def later() -> str:
    """Enqueued with run_after an hour ahead: it must still be waiting."""
    return "too early"


NOT_A_TASK = "a module attribute that is not a @task"
