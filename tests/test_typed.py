"""Typed task definitions: one declaration used by producer and worker, checked by mypy."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import RedisTarget
from pydantic import BaseModel, ConfigDict, Field
from workerproc import RawRedis, conn_opt, wait_until

from asynq_aio import Client, Config, InvalidTaskError, PayloadValidationError, ServeMux, Server, Task
from asynq_aio._taskdef import TaskDef

REPO = Path(__file__).resolve().parent.parent


class EmailPayload(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    to: str
    from_: str = Field(alias="from")
    subject: str = ""


class SmsPayload(BaseModel):
    phone: str


send_email = TaskDef("email:send", EmailPayload, max_retry=5, timeout=60)
send_sms = TaskDef("sms:send", SmsPayload)


# -- unit -----------------------------------------------------------------------------------------


def test_task_is_a_plain_task_with_the_json_go_would_write() -> None:
    task = send_email.task(EmailPayload(to="a@x", from_="b@x"), headers={"trace": "1"})
    assert isinstance(task, Task)
    assert task.type == "email:send"
    assert task.json() == {"to": "a@x", "from": "b@x", "subject": ""}  # by alias, as Go reads it
    assert task.headers == {"trace": "1"}
    assert send_email.parse(task) == EmailPayload(to="a@x", from_="b@x")
    assert repr(send_email) == "TaskDef('email:send', EmailPayload)"


def test_wrong_model_is_rejected_at_runtime_too() -> None:
    with pytest.raises(InvalidTaskError, match="takes a EmailPayload payload, got SmsPayload"):
        send_email.task(SmsPayload(phone="1"))  # type: ignore[arg-type]
    with pytest.raises(PayloadValidationError, match=r"does not match EmailPayload: 1 error\(s\): to:"):
        send_email.parse(Task("email:send", {"from": "b@x"}))
    with pytest.raises(TypeError, match="pydantic model class"):
        TaskDef("x", dict)  # type: ignore[type-var]
    with pytest.raises(InvalidTaskError):
        TaskDef(" ", SmsPayload)


def test_mypy_rejects_a_payload_of_another_model(tmp_path: Path) -> None:
    snippet = tmp_path / "producer.py"
    snippet.write_text(
        textwrap.dedent(
            """
            from pydantic import BaseModel

            from asynq_aio import Client, ServeMux
            from asynq_aio._taskdef import TaskDef


            class EmailPayload(BaseModel):
                to: str


            class SmsPayload(BaseModel):
                phone: str


            send_email = TaskDef("email:send", EmailPayload)
            mux = ServeMux()


            async def produce(client: Client) -> None:
                await send_email.enqueue(client, EmailPayload(to="a"), queue="q")
                await send_email.enqueue(client, SmsPayload(phone="1"))
                send_email.task(SmsPayload(phone="1"))


            @send_email.handler(mux)
            async def wrong_handler(payload: SmsPayload) -> None:
                pass
            """
        )
    )
    (tmp_path / "none.ini").write_text("[mypy]\n")  # keep the project's config (and its files=) out
    env = {**os.environ, "MYPYPATH": str(REPO)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--follow-imports=silent",
            "--no-error-summary",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--config-file",
            str(tmp_path / "none.ini"),
            str(snippet),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    errors = [line for line in proc.stdout.splitlines() if ": error:" in line]
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert len(errors) == 3, proc.stdout
    wanted = 'incompatible type "SmsPayload"; expected "EmailPayload"'
    assert errors[0].startswith('producer.py:22: error: Argument 2 to "enqueue" of "TaskDef"'), errors
    assert wanted in errors[0]
    assert errors[1].startswith('producer.py:23: error: Argument 1 to "task" of "TaskDef"'), errors
    assert wanted in errors[1]
    assert errors[2].startswith("producer.py:26: error: Argument 1 has incompatible type"), errors
    assert 'expected "Callable[[EmailPayload], Awaitable[Any]]"' in errors[2]


# -- end to end -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_typed_tasks_end_to_end(
    redis_target: RedisTarget, client: Client, raw: RawRedis, unique_queue: str
) -> None:
    """Producer and worker share the definitions; a raw Task (as a Go producer writes it) reaches
    the same handler; a payload that does not match the model is archived, not retried."""
    email = TaskDef("email:send", EmailPayload, queue=unique_queue, max_retry=5, timeout=60)
    sms = TaskDef("sms:send", SmsPayload, queue=unique_queue)
    mux = ServeMux()
    emails: list[EmailPayload] = []
    texts: list[SmsPayload] = []

    @email.handler(mux)
    async def handle_email(payload: EmailPayload) -> None:
        emails.append(payload)

    async def handle_sms(payload: SmsPayload) -> None:
        texts.append(payload)

    mux.handle_func(sms.type, handle_sms)  # the plain mux API reads the model from the annotation

    info = await email.enqueue(client, EmailPayload(to="a@x", from_="b@x", subject="hi"))
    assert (info.queue, info.max_retry, info.timeout is not None and info.timeout.total_seconds()) == (
        unique_queue,
        5,
        60,
    )
    override = await email.enqueue(client, EmailPayload(to="c@x", from_="d@x"), max_retry=1)
    assert override.max_retry == 1
    many = await sms.enqueue_many(client, [SmsPayload(phone="1"), SmsPayload(phone="2")])
    assert all(not isinstance(r, Exception) for r in many)
    go_written = await client.enqueue(
        Task("email:send", b'{"to":"go@x","from":"gopher@x"}'), queue=unique_queue
    )
    bad = await client.enqueue(Task("email:send", b'{"from":"x"}'), queue=unique_queue)

    settings: dict[str, Any] = {
        "concurrency": 2,
        "queues": {unique_queue: 1},
        "shutdown_timeout": 1.0,
        "heartbeat_interval": 0.5,
    }
    server = Server(conn_opt(redis_target.kind, redis_target.url, redis_target.addrs), Config(**settings))
    archived = f"asynq:{{{unique_queue}}}:archived"

    async def all_done() -> bool:
        return len(emails) == 3 and len(texts) == 2 and await raw.cmd("ZSCORE", archived, bad.id) is not None

    with anyio.fail_after(20):
        async with server.serve(mux):
            await wait_until(all_done, 8, what="every typed task handled")

    assert sorted(e.to for e in emails) == ["a@x", "c@x", "go@x"]
    assert all(isinstance(e, EmailPayload) for e in emails)
    assert sorted(t.phone for t in texts) == ["1", "2"]
    assert await raw.cmd("EXISTS", f"asynq:{{{unique_queue}}}:t:{go_written.id}") == 0
    state = await raw.cmd("HGET", f"asynq:{{{unique_queue}}}:t:{bad.id}", "state")
    assert state == b"archived"
