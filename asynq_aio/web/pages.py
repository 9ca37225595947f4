"""The read-only pages: each reads what it shows through the Inspector, never more than one page of
tasks, and renders one template.

Queue names and task IDs travel in the query string (``/queue?q=...``), not in the path: a queue
name may hold a ``/`` or any other character a Go producer chose.
"""

from __future__ import annotations

import math
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from asynq_aio._errors import FailedPreconditionError, TaskNotFoundError
from asynq_aio._inspection import QueueInfo
from asynq_aio._task import TaskInfo, TaskState
from asynq_aio.web import present
from asynq_aio.web.chart import daily_totals, history_svg
from asynq_aio.web.context import SECURITY_HEADERS, BadRequest, Dashboard, link

__all__ = [
    "api_stats",
    "overview",
    "queue",
    "redis",
    "scheduler",
    "scheduler_history",
    "search",
    "servers",
    "task",
]

HISTORY_DAYS = 7
DEFAULT_SIZE = 20
MAX_SIZE = 200
MAX_PARAM = 1024  # longest queue name, task ID or group accepted in a query

# what each state's tasks can be made to do (the Inspector refuses the rest)
ACTIONS: dict[TaskState, tuple[str, ...]] = {
    TaskState.ACTIVE: ("cancel",),
    TaskState.PENDING: ("archive", "delete"),
    TaskState.AGGREGATING: ("run", "archive", "delete"),
    TaskState.SCHEDULED: ("run", "archive", "delete"),
    TaskState.RETRY: ("run", "archive", "delete"),
    TaskState.ARCHIVED: ("run", "delete"),
    TaskState.COMPLETED: ("delete",),
}


def text_param(request: Request, name: str, *, required: bool = True) -> str:
    """A query parameter as text; a missing required one, or one over 1 KiB, is a BadRequest."""
    value = request.query_params.get(name, "")
    if required and not value:
        raise BadRequest(f'the "{name}" parameter is missing')
    if len(value) > MAX_PARAM:
        raise BadRequest(f'the "{name}" parameter is longer than {MAX_PARAM} characters')
    return value


def int_param(request: Request, name: str, default: int, *, most: int | None = None) -> int:
    """A positive integer query parameter; anything else is a BadRequest that says what is allowed."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f'"{name}" must be a whole number from 1, got {raw[:40]!r}') from None
    if value < 1 or (most is not None and value > most):
        upper = f" to {most}" if most is not None else ""
        raise BadRequest(f'"{name}" must be from 1{upper}, got {value}')
    return value


def state_param(request: Request) -> TaskState:
    """The ``state`` parameter (default pending); an unknown state is a BadRequest naming the valid ones."""
    raw = request.query_params.get("state") or TaskState.PENDING.value
    try:
        return TaskState(raw)
    except ValueError:
        valid = ", ".join(s.value for s in TaskState)
        raise BadRequest(f"unknown task state {raw[:40]!r}: use one of {valid}") from None


async def overview(d: Dashboard, request: Request) -> Response:
    """Every queue with its sizes by state, today's counts, latency, memory; the last days' chart."""
    insp = d.inspector()
    names = await insp.queues()
    infos = await insp.get_queue_infos_with_memory(names)
    history = [row for rows in (await insp.histories(names, HISTORY_DAYS)).values() for row in rows]
    servers = await insp.servers()
    chart = history_svg(daily_totals(history), label="All queues, processed and failed per day (UTC)")
    totals = {s.value: sum(i.count(s) for i in infos) for s in TaskState}
    return d.render(
        request,
        "overview.html",
        nav="queues",
        queues=infos,
        chart=chart,
        totals=totals,
        processed=sum(i.processed for i in infos),
        failed=sum(i.failed for i in infos),
        servers=len(servers),
        busy=sum(len(s.active_workers) for s in servers),
        error_rate=present.error_rate,
        live_queue="",
    )


async def queue(d: Dashboard, request: Request) -> Response:
    """One queue: counts by state, one page of tasks in the chosen state, groups, recent days."""
    insp = d.inspector()
    name = text_param(request, "q")
    state = state_param(request)
    page = int_param(request, "page", 1)
    size = int_param(request, "size", DEFAULT_SIZE, most=MAX_SIZE)
    info = await insp.get_queue_info(name)
    groups = await insp.groups(name)
    history = await insp.history(name, HISTORY_DAYS)
    group = text_param(request, "group", required=False)
    notice = ""
    tasks: list[TaskInfo] = []
    if state is TaskState.AGGREGATING:
        if not group and groups:
            group = groups[0].group
        sizes = {g.group: g.size for g in groups}
        if group and group not in sizes:  # aggregated or deleted since the link was made: not an error
            notice = f'Group "{group}" has no tasks waiting for aggregation (any more).'
            group = ""
        total = sizes.get(group, 0)
    else:
        total = info.count(state)
    pages = max(1, math.ceil(total / size))
    if page > pages:
        return d.render(
            request,
            "error.html",
            status=404,
            nav="queues",
            heading="No such page",
            message=f"Page {page} is past the last page ({pages}) of {state.value} tasks in {name!r}.",
            back=link(request, "/queue", {"q": name, "state": state.value, "group": group, "page": pages}),
        )
    if state is not TaskState.AGGREGATING or group:
        tasks = await insp.list_tasks(name, state, group=group or None, page=page, size=size)
    chart = history_svg(daily_totals(history), label=f"Queue {name}, processed and failed per day (UTC)")
    return d.render(
        request,
        "queue.html",
        nav="queues",
        q=info,
        state=state,
        tasks=tasks,
        page=page,
        pages=pages,
        size=size,
        total=total,
        groups=groups,
        group=group,
        chart=chart,
        actions=ACTIONS[state],
        error_rate=present.error_rate,
        notice=notice,
        live_queue=name,
    )


async def task(d: Dashboard, request: Request) -> Response:
    """One task: payload (pretty JSON), headers, retries, last error, result and its times."""
    name = text_param(request, "q")
    task_id = text_param(request, "id")
    info = await d.inspector().get_task_info(name, task_id)
    return d.render(
        request,
        "task.html",
        nav="queues",
        t=info,
        payload=present.payload(info.payload),
        result=present.payload(info.result) if info.result is not None else None,
        actions=ACTIONS[info.state],
        live_queue="",
    )


async def search(d: Dashboard, request: Request) -> Response:
    """Find a task by ID in whichever queue holds it, and go to its page."""
    task_id = text_param(request, "id", required=False).strip()
    if not task_id:
        return d.render(request, "search.html", nav="search", live_queue="")
    try:
        info = await d.inspector().find_task(task_id)
    except TaskNotFoundError:
        return d.render(
            request,
            "search.html",
            status=404,
            nav="search",
            task_id=task_id,
            message=f'No task with ID "{task_id}" in any queue.',
            live_queue="",
        )
    except FailedPreconditionError as exc:
        return d.render(
            request, "search.html", status=409, nav="search", task_id=task_id, message=str(exc), live_queue=""
        )
    return RedirectResponse(link(request, "/task", {"q": info.queue, "id": info.id}), status_code=303)


async def servers(d: Dashboard, request: Request) -> Response:
    """Live servers (from their heartbeats) and the task each busy worker runs now."""
    found = await d.inspector().servers()
    return d.render(request, "servers.html", nav="servers", servers=found, live_queue="")


_QUEUE_OPTION = re.compile(r'^Queue\("(.*)"\)$')


def entry_queue(options: list[str]) -> str:
    """The queue a scheduler entry enqueues into, from its Go option strings (``default`` if unset)."""
    for opt in options:
        m = _QUEUE_OPTION.match(opt)
        if m:
            return m.group(1)
    return "default"


async def scheduler(d: Dashboard, request: Request) -> Response:
    """Periodic task entries of every live scheduler, with their last and next enqueue times."""
    entries = await d.inspector().scheduler_entries()
    return d.render(
        request, "scheduler.html", nav="scheduler", entries=entries, entry_queue=entry_queue, live_queue=""
    )


async def scheduler_history(d: Dashboard, request: Request) -> Response:
    """When one scheduler entry enqueued which task, newest first, one page at a time."""
    entry_id = text_param(request, "entry")
    page = int_param(request, "page", 1)
    size = int_param(request, "size", DEFAULT_SIZE, most=MAX_SIZE)
    events = await d.inspector().list_scheduler_enqueue_events(entry_id, page=page, size=size)
    return d.render(
        request,
        "history.html",
        nav="scheduler",
        entry_id=entry_id,
        events=events,
        page=page,
        size=size,
        live_queue="",
    )


async def redis(d: Dashboard, request: Request) -> Response:
    """Each Redis node's INFO summary; for a cluster, its state and where every queue lives."""
    insp = d.inspector()
    nodes, cluster = await insp.redis_info()
    locations = await insp.cluster_locations(await insp.queues()) if insp.is_cluster else []
    return d.render(
        request,
        "redis.html",
        nav="redis",
        nodes=nodes,
        cluster=cluster,
        locations=locations,
        is_cluster=insp.is_cluster,
        live_queue="",
    )


def _figures(info: QueueInfo) -> dict[str, Any]:
    counts: dict[str, Any] = {s.value: info.count(s) for s in TaskState}
    return counts | {
        "size": info.size,
        "processed": info.processed,
        "failed": info.failed,
        "error_rate": present.error_rate(info.processed, info.failed),
        "latency": present.fmt_duration(info.latency),
        "paused": "paused" if info.paused else "running",
    }


async def api_stats(d: Dashboard, request: Request) -> Response:
    """The live figures the pages refresh: every queue's counts (or one queue's, with ``q``)."""
    insp = d.inspector()
    name = text_param(request, "q", required=False)
    infos = await insp.get_queue_infos([name] if name else None)
    when = present.fmt_time(infos[0].timestamp) if infos else ""
    body = {"queues": {i.queue: _figures(i) for i in infos}, "time": when}
    return JSONResponse(body, headers=SECURITY_HEADERS)
