"""``asynq-aio task ...``: list, inspect, cancel, delete, run and archive tasks (one or all)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from asynq_aio._inspector import Inspector
from asynq_aio._task import TaskInfo, TaskState
from asynq_aio.cli.common import ConnectionFlags, clean_errors, connection_flags
from asynq_aio.cli.render import (
    JsonOption,
    PageOption,
    QueueArgument,
    console,
    echo_json,
    fmt_payload,
    fmt_relative,
    fmt_time,
    for_each,
    print_lines,
    table,
    with_inspector,
)

task_app = typer.Typer(help="Inspect and manage tasks.", no_args_is_help=True)

STATES = ", ".join(s.value for s in TaskState)

QueueOption = Annotated[str, typer.Option("--queue", "-q", help="Queue name.")]
StateOption = Annotated[str, typer.Option("--state", "-s", help=f"Task state: {STATES}.")]
GroupOption = Annotated[
    str | None, typer.Option("--group", "-g", help="Group name (needed for aggregating tasks).")
]
TaskIDArgument = Annotated[str, typer.Argument(metavar="ID", help="Task ID.")]


def _state(value: str) -> TaskState:
    try:
        return TaskState(value.lower())
    except ValueError:
        raise ValueError(f"unknown task state {value!r}: use one of {STATES}") from None


@task_app.command("ls")
@clean_errors
@connection_flags
def ls(
    conn: ConnectionFlags,
    queue: QueueOption,
    state: StateOption,
    group: GroupOption = None,
    page: PageOption = 1,
    size: Annotated[int, typer.Option("--size", "-n", min=1, help="Tasks per page.")] = 30,
    as_json: JsonOption = False,
) -> None:
    """List one page of a queue's tasks in a state (pending in dequeue order)."""
    st = _state(state)
    if st is TaskState.AGGREGATING and not group:
        raise ValueError("listing aggregating tasks needs --group (see `asynq-aio group ls QUEUE`)")

    async def go(insp: Inspector) -> list[TaskInfo]:
        return await insp.list_tasks(queue, st, group=group, page=page, size=size)

    tasks = with_inspector(conn, go)
    if as_json:
        echo_json(tasks)
        return
    c = console()
    if not tasks:
        where = f'group "{group}" of ' if st is TaskState.AGGREGATING else ""
        c.print(f'No {st.value} tasks in {where}"{queue}" queue', markup=False)
        return
    now = datetime.now(tz=UTC)
    extra: dict[TaskState, tuple[str, ...]] = {
        TaskState.ACTIVE: ("Orphaned",),
        TaskState.SCHEDULED: ("Process In",),
        TaskState.RETRY: ("Next Retry", "Last Error", "Last Failed", "Retried", "Max Retry"),
        TaskState.ARCHIVED: ("Last Failed", "Last Error"),
        TaskState.COMPLETED: ("CompletedAt", "Result"),
        TaskState.AGGREGATING: ("Group",),
    }
    t = table("ID", "Type", "Payload", *extra.get(st, ()))
    for task in tasks:
        cols = {
            TaskState.ACTIVE: (str(task.is_orphaned).lower(),),
            TaskState.SCHEDULED: (fmt_relative(task.next_process_at, now),),
            TaskState.RETRY: (
                fmt_relative(task.next_process_at, now),
                task.last_err,
                fmt_time(task.last_failed_at),
                str(task.retried),
                str(task.max_retry),
            ),
            TaskState.ARCHIVED: (fmt_time(task.last_failed_at), task.last_err),
            TaskState.COMPLETED: (fmt_time(task.completed_at), fmt_payload(task.result)),
            TaskState.AGGREGATING: (task.group,),
        }.get(st, ())
        t.add_row(task.id, task.type, fmt_payload(task.payload), *cols)
    c.print(t)


@task_app.command("inspect")
@clean_errors
@connection_flags
def inspect(
    conn: ConnectionFlags, queue: QueueArgument, task_id: TaskIDArgument, as_json: JsonOption = False
) -> None:
    """Show one task: state, retries, next process time, last failure, result."""

    async def go(insp: Inspector) -> TaskInfo:
        return await insp.get_task_info(queue, task_id)

    info = with_inspector(conn, go)
    if as_json:
        echo_json(info)
        return
    print_task_info(info)


def print_task_info(info: TaskInfo) -> None:
    """Print one task's info: Go's ``asynq task inspect`` lines first, then those only asynq-aio shows."""
    c = console()
    c.print("[bold]Task Info[/bold]")
    lines = [
        ("Queue", info.queue),
        ("ID", info.id),
        ("Type", info.type),
        ("State", info.state.value),
        ("Retried", f"{info.retried}/{info.max_retry}"),
    ]
    print_lines(c, lines)  # Go's lines, in Go's layout; ours follow
    lines = [("Payload", fmt_payload(info.payload, limit=2000))]
    if info.headers:
        lines.append(("Headers", ", ".join(f"{k}={v}" for k, v in sorted(info.headers.items()))))
    if info.group:
        lines.append(("Group", info.group))
    if info.timeout is not None:
        lines.append(("Timeout", f"{int(info.timeout.total_seconds())}s"))
    if info.deadline is not None:
        lines.append(("Deadline", fmt_time(info.deadline)))
    if info.state is TaskState.ACTIVE:
        lines.append(("Orphaned", str(info.is_orphaned).lower()))
    print_lines(c, lines)
    c.print()
    if info.state is TaskState.PENDING:
        nxt = "now"
    elif info.next_process_at is not None:
        nxt = f"{fmt_time(info.next_process_at)} ({fmt_relative(info.next_process_at)})"
    else:
        nxt = "n/a"
    c.print(f"Next process time: {nxt}", markup=False, highlight=False)
    if info.last_err:
        c.print()
        c.print("[bold]Last Failure[/bold]")
        print_lines(c, [("Failed at", fmt_time(info.last_failed_at)), ("Error message", info.last_err)])
    if info.state is TaskState.COMPLETED or info.result is not None:
        c.print()
        c.print("[bold]Result[/bold]")
        lines = [("Completed at", fmt_time(info.completed_at))]
        if info.retention is not None:
            lines.append(("Retention", f"{int(info.retention.total_seconds())}s"))
        lines.append(("Result", fmt_payload(info.result, limit=2000) or "(none)"))
        print_lines(c, lines)


@task_app.command("cancel")
@clean_errors
@connection_flags
def cancel(
    conn: ConnectionFlags,
    task_ids: Annotated[list[str], typer.Argument(metavar="ID...", help="Task IDs (any queue).")],
    queue: Annotated[
        str | None, typer.Option("--queue", "-q", help="Look in this queue only (an ID in several).")
    ] = None,
) -> None:
    """Stop tasks by ID: a running task gets the cancel signal (PUBLISH asynq:cancel, as Go's CLI
    sends), a waiting one (pending, scheduled, retry, aggregating) is deleted. Says which."""
    for tid, done in for_each(conn, task_ids, lambda insp, tid: insp.cancel(tid, queue=queue)):
        if done.action == "signalled":
            typer.echo(f"Sent cancelation signal for task {tid} (running in queue {done.queue})")
        else:
            typer.echo(f"Deleted task {tid} from queue {done.queue}: it was {done.state.value}, not running")


ONE_HELP = {
    "delete": "Delete a task (any state but active).",
    "run": "Run a scheduled, retry, archived or aggregating task now (move it to pending).",
    "archive": "Archive a pending, scheduled, retry or aggregating task.",
}
ALL_HELP = {
    "delete": "Delete all tasks in a state (not active), in batches.",
    "run": "Run all scheduled, retry, archived or aggregating tasks now, in batches.",
    "archive": "Archive all pending, scheduled, retry or aggregating tasks, in batches.",
}


def _one(action: str, past: str) -> None:
    @task_app.command(action, help=ONE_HELP[action])
    @clean_errors
    @connection_flags
    def command(conn: ConnectionFlags, queue: QueueArgument, task_id: TaskIDArgument) -> None:
        async def go(insp: Inspector) -> None:
            method = {"delete": insp.delete_task, "run": insp.run_task, "archive": insp.archive_task}[action]
            await method(queue, task_id)

        with_inspector(conn, go)
        typer.echo(f"Task {task_id} {past}")


def _all(action: str, past: str) -> None:
    @task_app.command(f"{action}all", help=ALL_HELP[action])
    @clean_errors
    @connection_flags
    def command(
        conn: ConnectionFlags, queue: QueueArgument, state: StateOption, group: GroupOption = None
    ) -> None:
        st = _state(state)
        if st is TaskState.AGGREGATING and not group:
            raise ValueError("aggregating tasks are handled per group: add --group")

        async def go(insp: Inspector) -> int:
            method = {
                "delete": insp.delete_all_tasks,
                "run": insp.run_all_tasks,
                "archive": insp.archive_all_tasks,
            }[action]
            return await method(queue, st, group=group)

        n = with_inspector(conn, go)
        typer.echo(f"{n} {st.value} tasks {past}")


ACTIONS = (("delete", "deleted"), ("run", "moved to pending"), ("archive", "archived"))
for _action, _past in ACTIONS:
    _one(_action, _past)
for _action, _past in ACTIONS:  # after the single-task commands: the order --help lists them in
    _all(_action, _past)
