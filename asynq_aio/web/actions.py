"""The changes the dashboard makes, all through ``POST /action``: run, archive or delete one task,
the selected tasks or every task in a state; cancel a running task; pause or unpause a queue.

Each takes two POSTs: the first shows what is about to happen with a Confirm button, the second
(with ``confirmed=yes``) does it and says what was done. Both pass :func:`guard.check_post`: in a
read-only dashboard, from another site or without the form token, nothing is shown or done.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import Response

from asynq_aio._errors import FailedPreconditionError, TaskNotFoundError
from asynq_aio._inspector import Inspector
from asynq_aio._task import TaskState
from asynq_aio.web.context import BadRequest, Dashboard, link
from asynq_aio.web.guard import Refused, check_post
from asynq_aio.web.pages import ACTIONS, MAX_PARAM, MAX_SIZE

__all__ = ["Form", "post_action"]

MAX_BODY = 256 * 1024
TASK_OPS = ("run", "archive", "delete", "cancel")
QUEUE_OPS = ("pause", "unpause")
TARGETS = ("task", "selected", "all", "queue")
PAST = {"run": "moved to pending", "archive": "archived", "delete": "deleted", "cancel": "cancelled"}


@dataclass(frozen=True, slots=True)
class Form:
    """A validated action form: what to do (``op``) to what (``target``), and where."""

    op: str
    target: str
    queue: str
    state: TaskState | None
    group: str
    ids: list[str]
    confirmed: bool

    def describe(self) -> str:
        """The sentence the confirm step asks about, e.g. ``Delete all 12 archived tasks of queue "q"``."""
        verb = self.op.capitalize()
        where = f'queue "{self.queue}"'
        if self.group:
            where = f'group "{self.group}" of {where}'
        state = self.state.value if self.state else ""
        if self.target == "queue":
            return f'{verb} queue "{self.queue}"'
        if self.target == "task":
            return f'{verb} {state} task "{self.ids[0]}" of {where}'
        if self.target == "selected":
            return f"{verb} the {len(self.ids)} selected {state} task(s) of {where}"
        return f"{verb} every {state} task of {where}"


async def read_form(request: Request) -> dict[str, list[str]]:
    """The URL-encoded body (what the dashboard's forms send); anything else is a BadRequest."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise BadRequest("actions are posted as application/x-www-form-urlencoded forms")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise BadRequest(f"the form is larger than {MAX_BODY} bytes")
    try:
        return parse_qs(body.decode(), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise BadRequest("the form is not UTF-8") from None


def parse_form(fields: dict[str, list[str]]) -> Form:
    """Check the fields name a known action with what it needs; raise BadRequest saying what is wrong."""

    def one(name: str) -> str:
        value = (fields.get(name) or [""])[0]
        if len(value) > MAX_PARAM:
            raise BadRequest(f'"{name}" is longer than {MAX_PARAM} characters')
        return value

    op, target, queue = one("op"), one("target"), one("q")
    if target not in TARGETS:
        raise BadRequest(f"unknown target {target[:40]!r}: use one of {', '.join(TARGETS)}")
    if not queue:
        raise BadRequest('the "q" (queue) field is missing')
    state: TaskState | None = None
    ids = [i for i in fields.get("id", []) if i]
    if target == "queue":
        if op not in QUEUE_OPS:
            raise BadRequest(f"a queue can be paused or unpaused, not {op[:40]!r}")
    else:
        if op not in TASK_OPS:
            raise BadRequest(f"unknown action {op[:40]!r}: use one of {', '.join(TASK_OPS)}")
        try:
            state = TaskState(one("state"))
        except ValueError:
            raise BadRequest(f"unknown task state {one('state')[:40]!r}") from None
        if op not in ACTIONS[state]:
            raise BadRequest(f"{state.value} tasks cannot be {PAST[op]}")
        if target == "task" and len(ids) != 1:
            raise BadRequest("name exactly one task")
        if target == "selected" and not ids:
            raise BadRequest("select at least one task first")
        if len(ids) > MAX_SIZE or any(len(i) > MAX_PARAM for i in ids):
            raise BadRequest(f"at most {MAX_SIZE} task IDs of up to {MAX_PARAM} characters each")
        if target == "all" and op == "cancel":
            raise BadRequest("running tasks are cancelled one at a time")
    return Form(op, target, queue, state, one("group"), ids, one("confirmed") == "yes")


async def _one(insp: Inspector, form: Form, task_id: str) -> str:
    if form.op == "cancel":
        outcome = await insp.cancel(task_id, queue=form.queue)
        if outcome.action == "signalled":
            return f'Sent the cancel signal to running task "{task_id}".'
        return f'Deleted task "{task_id}": it was {outcome.state.value}, not running.'
    method = {"run": insp.run_task, "archive": insp.archive_task, "delete": insp.delete_task}[form.op]
    await method(form.queue, task_id)
    return f'Task "{task_id}" {PAST[form.op]}.'


async def perform(insp: Inspector, form: Form) -> str:
    """Do what the form asks; returns the sentence that says what was done."""
    if form.target == "queue":
        if form.op == "pause":
            changed = await insp.pause_queue(form.queue)
            return f'Queue "{form.queue}" paused.' if changed else f'Queue "{form.queue}" was already paused.'
        changed = await insp.unpause_queue(form.queue)
        return f'Queue "{form.queue}" unpaused.' if changed else f'Queue "{form.queue}" was not paused.'
    assert form.state is not None
    if form.target == "task":
        return await _one(insp, form, form.ids[0])
    if form.target == "all":
        bulk = {"run": insp.run_all_tasks, "archive": insp.archive_all_tasks, "delete": insp.delete_all_tasks}
        n = await bulk[form.op](form.queue, form.state, group=form.group or None)
        return f"{n} {form.state.value} task(s) {PAST[form.op]}."
    done, failed = 0, []
    for task_id in form.ids:
        try:
            await _one(insp, form, task_id)
            done += 1
        except (TaskNotFoundError, FailedPreconditionError) as exc:
            failed.append(f"{task_id}: {exc}")
    message = f"{done} of {len(form.ids)} selected task(s) {PAST[form.op]}."
    if failed:
        message += " Not changed: " + "; ".join(failed)
    return message


async def post_action(d: Dashboard, request: Request) -> Response:
    """``POST /action``: the confirm step, then the change and a page saying what happened."""
    if d.read_only:  # before reading the body: a read-only dashboard refuses every change
        raise Refused(403, "This dashboard is read-only: it does not change queues or tasks.")
    fields = await read_form(request)
    check_post(request, (fields.get("token") or [""])[0], token=d.token, read_only=d.read_only)
    form = parse_form(fields)
    state = form.state.value if form.state else None
    back = link(request, "/queue", {"q": form.queue, "state": state, "group": form.group})
    if not form.confirmed:
        question = form.describe()
        return d.render(
            request, "confirm.html", nav="queues", form=form, question=question, back=back, live_queue=""
        )
    message = await perform(d.inspector(), form)
    return d.render(
        request, "result.html", nav="queues", message=message, back=back, q=form.queue, live_queue=""
    )
