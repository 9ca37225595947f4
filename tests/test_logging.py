"""Structured logging: task records carry task_id/type/queue/retries as attributes, the formatters
print them, and ``asynq-aio worker --log-format json`` writes one JSON object per line."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import pytest
from typer.testing import CliRunner

from asynq_aio import Client, Config, ServeMux, Server, SkipRetry, Task, parse_redis_url
from asynq_aio.cli.app import app
from asynq_aio.logfmt import (
    JsonFormatter,
    KeyValueFormatter,
    TaskContextFilter,
    configure_logging,
    extra_fields,
)

SERVER_LOGGER = "asynq_aio.server"


def _server(url: str, queue: str) -> Server:
    return Server(
        parse_redis_url(url),
        Config(
            concurrency=2,
            queues={queue: 1},
            shutdown_timeout=1.0,
            heartbeat_interval=0.5,
            retry_delay_func=lambda n, err, task: 60.0,
        ),
    )


async def _wait_record(
    caplog: pytest.LogCaptureFixture, task_id: str, timeout: float = 10.0
) -> logging.LogRecord:
    deadline = time.monotonic() + timeout
    while True:
        for rec in caplog.records:
            if rec.name == SERVER_LOGGER and getattr(rec, "task_id", None) == task_id:
                return rec
        assert time.monotonic() < deadline, f"no {SERVER_LOGGER} record for task {task_id}"
        await anyio.sleep(0.02)


@pytest.mark.anyio
async def test_failing_task_record_carries_task_fields(
    single_redis_url: str, unique_queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=SERVER_LOGGER)
    mux = ServeMux()

    async def flaky(task: Task) -> None:
        raise ValueError("smtp down")

    async def fatal(task: Task) -> None:
        raise SkipRetry("bad address")

    mux.handle_func("email:flaky", flaky)
    mux.handle_func("email:fatal", fatal)
    with anyio.fail_after(20):
        async with (
            Client(parse_redis_url(single_redis_url)) as client,
            _server(single_redis_url, unique_queue).serve(mux),
        ):
            retried = await client.enqueue(Task("email:flaky", b"{}"), queue=unique_queue, max_retry=3)
            archived = await client.enqueue(Task("email:fatal", b"{}"), queue=unique_queue)
            rec_retry = await _wait_record(caplog, retried.id)
            rec_archive = await _wait_record(caplog, archived.id)

    assert rec_retry.levelno == logging.INFO
    assert extra_fields(rec_retry) == {
        "task_id": retried.id,
        "task_type": "email:flaky",
        "queue": unique_queue,
        "retried": 0,
        "max_retry": 3,
        "error": "smtp down",
        "archived": False,
    }
    assert "will retry" in rec_retry.getMessage()

    assert rec_archive.levelno == logging.WARNING
    assert rec_archive.__dict__["task_type"] == "email:fatal"
    assert rec_archive.__dict__["queue"] == unique_queue
    assert rec_archive.__dict__["archived"] is True
    assert rec_archive.__dict__["error"] == "bad address"


@pytest.mark.anyio
async def test_task_context_filter_tags_user_records_inside_a_handler(
    single_redis_url: str, unique_queue: str
) -> None:
    """A record the application logs inside a handler gets the running task's fields; one logged
    outside any handler gets none."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(TaskContextFilter())
    user_log = logging.getLogger("tests.logging.userapp")
    user_log.addHandler(handler)
    user_log.setLevel(logging.INFO)
    user_log.propagate = False
    done = anyio.Event()
    mux = ServeMux()

    async def send(task: Task) -> None:
        user_log.info("sending %s", task.payload.decode())
        done.set()

    mux.handle_func("email:send", send)
    try:
        user_log.info("outside")
        with anyio.fail_after(20):
            async with (
                Client(parse_redis_url(single_redis_url)) as client,
                _server(single_redis_url, unique_queue).serve(mux),
            ):
                info = await client.enqueue(Task("email:send", b"hi"), queue=unique_queue, max_retry=5)
                await done.wait()
    finally:
        user_log.removeHandler(handler)
        user_log.propagate = True

    outside, inside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert outside["message"] == "outside"
    assert "task_id" not in outside
    assert inside["message"] == "sending hi"
    assert inside["logger"] == "tests.logging.userapp"
    assert (inside["task_id"], inside["task_type"], inside["queue"]) == (info.id, "email:send", unique_queue)
    assert (inside["retried"], inside["max_retry"]) == (0, 5)


def _record(msg: str = "task %s failed", *, exc: bool = False, **extra: object) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError("kaboom")
        except RuntimeError:
            exc_info = sys.exc_info()
    rec = logging.getLogger("asynq_aio.server").makeRecord(
        "asynq_aio.server", logging.WARNING, __file__, 1, msg, ("t1",), exc_info, extra=extra
    )
    return rec


def test_json_formatter_writes_fields_exception_and_unserialisable_values() -> None:
    rec = _record(exc=True, task_id="t1", queue="q", retried=2, obj=object(), text="naïve")
    out = json.loads(JsonFormatter().format(rec))
    assert out["level"] == "WARNING"
    assert out["logger"] == "asynq_aio.server"
    assert out["message"] == "task t1 failed"
    assert (out["task_id"], out["queue"], out["retried"]) == ("t1", "q", 2)
    assert out["obj"].startswith("<object object at")
    assert out["text"] == "naïve"
    assert "RuntimeError: kaboom" in out["exc_info"]
    assert out["time"].endswith("Z")
    assert "args" not in out and "msg" not in out and "levelno" not in out


def test_key_value_formatter_appends_quoted_fields_before_traceback() -> None:
    plain = KeyValueFormatter().format(_record())
    assert plain.endswith("WARNING asynq_aio.server: task t1 failed")
    line = KeyValueFormatter().format(_record(exc=True, task_id="t1", error="smtp down", n=3))
    first, *rest = line.splitlines()
    assert first.endswith('task t1 failed task_id=t1 error="smtp down" n=3')
    assert "RuntimeError: kaboom" in rest[-1]


@contextmanager
def bare_root() -> Iterator[logging.Logger]:
    """The root logger without its handlers (pytest's capture handlers are put back afterwards).

    A context manager used inside the test body: pytest attaches its handlers only around the call.
    """
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    for h in saved:
        root.removeHandler(h)
    try:
        yield root
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved:
            root.addHandler(h)
        root.setLevel(level)


def test_configure_logging_respects_existing_handlers_unless_forced() -> None:
    with bare_root() as root:
        existing = logging.NullHandler()
        root.addHandler(existing)
        assert configure_logging("INFO", "json") is None
        assert root.handlers == [existing]

        stream = io.StringIO()
        installed = configure_logging("DEBUG", "json", stream=stream, force=True)
        assert root.handlers == [installed]
        assert root.level == logging.DEBUG
        logging.getLogger("asynq_aio.client").debug("enqueued", extra={"task_id": "abc"})
        assert json.loads(stream.getvalue())["task_id"] == "abc"
        with pytest.raises(ValueError, match="log format"):
            configure_logging("INFO", "xml", force=True)  # type: ignore[arg-type]


def test_worker_rejects_unknown_log_format() -> None:
    result = CliRunner().invoke(app, ["worker", "asynq_aio:ServeMux", "--log-format", "xml"])
    assert result.exit_code != 0
    assert "--log-format must be text or json" in result.output


WORKER_APP = """
import logging
from asynq_aio import ServeMux, Task
mux = ServeMux()
log = logging.getLogger("jsonapp")

async def handle(task: Task) -> None:
    log.info("handling %s", task.type)
    raise ValueError("always fails")

mux.handle_func("json:", handle)
"""


@pytest.mark.anyio
async def test_worker_log_format_json_end_to_end(
    single_redis_url: str, unique_queue: str, tmp_path: Path
) -> None:
    """The worker CLI with --log-format json: every stderr line is a JSON object; the handler's own
    record and the server's failure record both carry the task's fields."""
    (tmp_path / "jsonapp.py").write_text(WORKER_APP)
    env = dict(os.environ, ASYNQ_REDIS_URL=single_redis_url, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "asynq_aio.cli", "worker", "jsonapp:mux", "--queue", unique_queue]
    proc = subprocess.Popen(
        [*cmd, "--log-format", "json", "--shutdown-timeout", "1"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        async with Client(parse_redis_url(single_redis_url)) as client:
            info = await client.enqueue(Task("json:x", b"{}"), queue=unique_queue, max_retry=0)
            qk = client._broker.queue_keys(unique_queue)
            deadline = time.monotonic() + 20
            while not await client._broker.transport.call("ZSCORE", qk.archived, info.id):
                assert time.monotonic() < deadline, "task not archived within 20 s"
                await anyio.sleep(0.05)
        proc.terminate()
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()
    assert out == b""
    lines = [json.loads(line) for line in err.decode().splitlines()]  # every line is JSON
    by_logger = {(r["logger"], r.get("task_id")): r for r in lines}
    user = by_logger[("jsonapp", info.id)]
    assert (user["message"], user["task_type"], user["queue"]) == ("handling json:x", "json:x", unique_queue)
    failed = by_logger[(SERVER_LOGGER, info.id)]
    assert failed["level"] == "WARNING"
    assert (failed["error"], failed["archived"], failed["max_retry"]) == ("always fails", True, 0)
    assert any(r["logger"] == "asynq_aio.cli" and "concurrency" in r["message"] for r in lines)
