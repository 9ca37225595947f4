"""Bad input a worker must survive: records a buggy or foreign producer wrote, oversized payloads,
and handlers that exit the process or ignore their timeout. Each test proves one row of
docs/bad-input.md; the rows already proven elsewhere (garbage bytes in ``msg``, payload validation,
unknown type, plain timeout, bad queue names in the Client) are linked from there, not repeated.

Run as a script, this file is a worker whose handler calls ``os._exit`` (see ``_exiting_worker``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import RedisTarget
from pydantic import ValidationError
from workerproc import RawRedis, conn_opt, wait_until

from asynq_aio import (
    Client,
    Config,
    InvalidTaskError,
    ServeMux,
    Server,
    Task,
    current_task,
    parse_redis_url,
)
from asynq_aio._errors import PayloadTooLargeError
from asynq_aio.protocol.codec import TaskMessage, decode_task_message

pytestmark = pytest.mark.anyio

EXIT_CODE = 17


def k(queue: str) -> Callable[[str], str]:
    return lambda suffix: f"asynq:{{{queue}}}:{suffix}"


def fast_config(queue: str, **changes: Any) -> Config:
    settings: dict[str, Any] = {
        "concurrency": 2,
        "queues": {queue: 1},
        "shutdown_timeout": 1.0,
        "heartbeat_interval": 0.5,
        "forward_interval": 0.2,
        "recovery_interval": 0.5,
        "recovery_skew": 0.0,
        "retry_delay_func": lambda n, err, task: 60.0,
    }
    settings.update(changes)
    return Config(**settings)


@asynccontextmanager
async def serving(server: Server, mux: ServeMux, limit: float = 20.0) -> AsyncIterator[Server]:
    with anyio.fail_after(limit):
        async with server.serve(mux) as s:
            yield s


@pytest.fixture
async def single_raw(single_redis_url: str) -> AsyncIterator[RawRedis]:
    r = RawRedis("single", single_redis_url, None)
    try:
        yield r
    finally:
        await r.aclose()


async def hgetall(raw: RawRedis, key: str) -> dict[str, bytes]:
    reply = await raw.cmd("HGETALL", key)
    if isinstance(reply, dict):
        return {kk.decode(): bytes(v) for kk, v in reply.items()}
    return {reply[i].decode(): bytes(reply[i + 1]) for i in range(0, len(reply), 2)}


async def stored(raw: RawRedis, queue: str, task_id: str) -> tuple[str, TaskMessage]:
    fields = await hgetall(raw, k(queue)(f"t:{task_id}"))
    return fields["state"].decode(), decode_task_message(fields["msg"])


async def counter(raw: RawRedis, key: str) -> int:
    v = await raw.cmd("GET", key)
    return int(v) if v is not None else 0


def in_zset(raw: RawRedis, key: str, member: str) -> Callable[[], Any]:
    async def check() -> bool:
        return await raw.cmd("ZSCORE", key, member) is not None

    return check


def gone(raw: RawRedis, key: str) -> Callable[[], Any]:
    async def check() -> bool:
        return bool(await raw.cmd("EXISTS", key) == 0)

    return check


async def write_pending(raw: RawRedis, queue: str, task_id: str, msg: bytes) -> None:
    """What a producer with raw Redis access does: a task hash plus its ID in pending."""
    q = k(queue)
    await raw.cmd("HSET", q(f"t:{task_id}"), "msg", msg, "state", "pending", "pending_since", time.time_ns())
    await raw.cmd("LPUSH", q("pending"), task_id)


# -- payload size ---------------------------------------------------------------------------------


async def test_client_refuses_a_payload_over_its_limit_and_writes_nothing(
    single_redis_url: str, single_raw: RawRedis, unique_queue: str
) -> None:
    q = k(unique_queue)
    async with Client(parse_redis_url(single_redis_url), max_payload_bytes=1000) as client:
        with pytest.raises(PayloadTooLargeError) as caught:
            await client.enqueue(Task("big", b"x" * 1001), queue=unique_queue, task_id="too-big")
        assert isinstance(caught.value, InvalidTaskError)  # old `except InvalidTaskError` still works
        assert "1001 bytes" in str(caught.value)
        assert "limit of 1000 bytes" in str(caught.value)
        with pytest.raises(PayloadTooLargeError):
            await client.enqueue_many([Task("ok", b"x"), Task("big", b"x" * 1001)], queue=unique_queue)
        assert await single_raw.cmd("EXISTS", q("t:too-big")) == 0
        assert await single_raw.cmd("LLEN", q("pending")) == 0
        at_limit = await client.enqueue(Task("big", b"x" * 1000), queue=unique_queue)
    assert await single_raw.cmd("LRANGE", q("pending"), 0, -1) == [at_limit.id.encode()]


def test_the_worker_limit_is_validated_and_defaults_to_the_client_limit() -> None:
    from asynq_aio._client import DEFAULT_MAX_PAYLOAD

    assert Config().max_payload_bytes == DEFAULT_MAX_PAYLOAD == 16 * 1024 * 1024
    with pytest.raises(ValidationError):
        Config(max_payload_bytes=0)


async def test_worker_archives_a_payload_over_its_limit_unrun_and_keeps_running(
    redis_target: RedisTarget, raw: RawRedis, unique_queue: str
) -> None:
    q = k(unique_queue)
    mux = ServeMux()
    ran: list[bytes] = []

    async def handler(task: Task) -> None:
        ran.append(task.payload)

    mux.handle_func("job", handler)
    opt = conn_opt(redis_target.kind, redis_target.url, redis_target.addrs)
    big = os.urandom(5000)
    # A producer without this worker's limit (Go, or a Client configured with a larger one).
    async with Client(opt, max_payload_bytes=10_000) as producer:
        server = Server(opt, fast_config(unique_queue, max_payload_bytes=4096))
        async with serving(server, mux):
            oversized = await producer.enqueue(Task("job", big), queue=unique_queue, max_retry=5)
            await wait_until(in_zset(raw, q("archived"), oversized.id), 5, what="oversized task archived")
            small = await producer.enqueue(Task("job", b"small"), queue=unique_queue)
            await wait_until(gone(raw, q(f"t:{small.id}")), 5, what="next task done")

    assert ran == [b"small"]
    state, msg = await stored(raw, unique_queue, oversized.id)
    assert state == "archived"
    assert msg.error_msg == (
        "payload of 5000 bytes is over this worker's limit of 4096 bytes (Config.max_payload_bytes)"
    )
    assert msg.payload == big  # kept whole: runnable again after raising the limit
    assert msg.type == "job"
    assert msg.retried == 0
    assert await counter(raw, q("failed")) == 1
    assert await raw.cmd("LLEN", q("active")) == 0
    assert await raw.cmd("ZCARD", q("lease")) == 0


# -- records a buggy producer wrote --------------------------------------------------------------


async def test_records_that_decode_but_cannot_be_this_task_are_archived_as_malformed(
    redis_target: RedisTarget, raw: RawRedis, unique_queue: str
) -> None:
    """A message that parses but names another queue or ID would make every later write (ack,
    retry, lease) touch another task's keys; an empty ``msg`` parses as an all-defaults message;
    bad UTF-8 in a string field does not parse. Each is archived with its bytes kept."""
    q = k(unique_queue)
    other_queue = TaskMessage(type="job", id="wrong-queue", queue="someone_else", retry=3).SerializeToString()
    other_id = TaskMessage(type="job", id="not-me", queue=unique_queue, retry=3).SerializeToString()
    bad_utf8 = bytes([0x0A, 2, 0xFF, 0xFE])  # field 1 (type), a string, with invalid UTF-8
    bad_queue_name = TaskMessage(type="job", id="brace", queue="a{b}").SerializeToString()
    cases = {
        "wrong-queue": (other_queue, "names queue 'someone_else'"),
        "wrong-id": (other_id, "ID 'not-me'"),
        "empty": (b"", "names queue '' and ID ''"),
        "utf8": (bad_utf8, "bad UTF-8"),
        "brace": (bad_queue_name, "names queue 'a{b}'"),
    }
    for task_id, (data, _) in cases.items():
        await write_pending(raw, unique_queue, task_id, data)

    mux = ServeMux()
    ran: list[str] = []

    async def handler(task: Task) -> None:
        ran.append(current_task().id)

    mux.handle_func("job", handler)
    opt = conn_opt(redis_target.kind, redis_target.url, redis_target.addrs)
    async with Client(opt) as client, serving(Server(opt, fast_config(unique_queue)), mux):
        for task_id in cases:
            await wait_until(in_zset(raw, q("archived"), task_id), 5, what=f"{task_id} archived")
        good = await client.enqueue(Task("job"), queue=unique_queue)
        await wait_until(gone(raw, q(f"t:{good.id}")), 5, what="a good task after them")

    assert ran == [good.id]
    for task_id, (data, expected) in cases.items():
        state, msg = await stored(raw, unique_queue, task_id)
        assert state == "archived", task_id
        assert msg.error_msg.startswith("malformed task message: "), task_id
        assert expected in msg.error_msg, (task_id, msg.error_msg)
        assert msg.payload == data  # the original bytes, for inspection
        assert (msg.id, msg.queue) == (task_id, unique_queue)
    # nothing leaked into the queue the bad record named
    assert await raw.cmd("EXISTS", "asynq:{someone_else}:archived") == 0
    assert await raw.cmd("LLEN", q("active")) == 0
    assert await raw.cmd("ZCARD", q("lease")) == 0


async def test_ids_in_pending_without_a_task_record_are_dropped(
    single_redis_url: str, single_raw: RawRedis, unique_queue: str
) -> None:
    """An ID with no hash, or a hash with no ``msg``, carries nothing to run or archive."""
    q = k(unique_queue)
    raw = single_raw
    await raw.cmd("LPUSH", q("pending"), "no-hash")
    await raw.cmd("HSET", q("t:no-msg"), "state", "pending")
    await raw.cmd("LPUSH", q("pending"), "no-msg")
    mux = ServeMux()
    ran: list[str] = []

    async def handler(task: Task) -> None:
        ran.append(current_task().id)

    mux.handle_func("job", handler)
    opt = parse_redis_url(single_redis_url)
    async with Client(opt) as client, serving(Server(opt, fast_config(unique_queue)), mux):
        good = await client.enqueue(Task("job"), queue=unique_queue)
        await wait_until(gone(raw, q(f"t:{good.id}")), 5, what="the good task behind them")

    assert ran == [good.id]
    assert await raw.cmd("LLEN", q("pending")) == 0
    assert await raw.cmd("LLEN", q("active")) == 0
    assert await raw.cmd("ZCARD", q("archived")) == 0
    assert await raw.cmd("HGETALL", q("t:no-msg")) == {b"state": b"pending"}  # left for an operator


async def test_nonsense_numbers_from_a_producer_do_not_break_the_worker(
    single_redis_url: str, single_raw: RawRedis, unique_queue: str
) -> None:
    """Negative timeout and deadline mean "unset" (30 min default); a negative max retry archives
    on the first failure instead of retrying forever."""
    q = k(unique_queue)
    raw = single_raw
    msg = TaskMessage(type="job", id="weird", queue=unique_queue, retry=-3, timeout=-5, deadline=-1)
    await write_pending(raw, unique_queue, "weird", msg.SerializeToString())
    mux = ServeMux()
    ran: list[str] = []

    async def handler(task: Task) -> None:
        ran.append(current_task().id)
        await anyio.sleep(0.2)  # a negative timeout taken literally would cancel here
        raise RuntimeError("boom")

    mux.handle_func("job", handler)
    async with serving(Server(parse_redis_url(single_redis_url), fast_config(unique_queue)), mux):
        await wait_until(in_zset(raw, q("archived"), "weird"), 5, what="task archived")

    assert ran == ["weird"]
    _, stored_msg = await stored(raw, unique_queue, "weird")
    assert stored_msg.error_msg == "boom"
    assert stored_msg.retried == 0


def test_invalid_queue_names_fail_at_worker_configuration() -> None:
    for bad in ["a{b", "}", "", " "]:
        with pytest.raises(ValidationError, match="queue"):
            Config(queues={bad: 1})


# -- handlers that misbehave ----------------------------------------------------------------------


async def test_sys_exit_in_a_handler_is_a_failed_attempt_and_the_worker_keeps_running(
    single_redis_url: str, single_raw: RawRedis, unique_queue: str
) -> None:
    q = k(unique_queue)
    raw = single_raw
    mux = ServeMux()
    ran: list[str] = []

    async def exits(task: Task) -> None:
        sys.exit(3)

    async def fine(task: Task) -> None:
        ran.append(current_task().id)

    mux.handle_func("exits", exits)
    mux.handle_func("fine", fine)
    opt = parse_redis_url(single_redis_url)
    async with Client(opt) as client, serving(Server(opt, fast_config(unique_queue)), mux) as server:
        bad = await client.enqueue(Task("exits"), queue=unique_queue)
        await wait_until(in_zset(raw, q("retry"), bad.id), 5, what="exiting task in retry")
        good = await client.enqueue(Task("fine"), queue=unique_queue)
        await wait_until(gone(raw, q(f"t:{good.id}")), 5, what="the next task done")
        assert server.running_tasks == 0

    assert ran == [good.id]
    state, msg = await stored(raw, unique_queue, bad.id)
    assert state == "retry"
    assert msg.error_msg == "SystemExit: 3"
    assert msg.retried == 1
    assert await counter(raw, q("failed")) == 1


async def test_a_handler_that_swallows_its_timeout_is_still_stopped(
    single_redis_url: str, single_raw: RawRedis, unique_queue: str
) -> None:
    """Cancellation is level-triggered: catching it once does not buy the handler more time, and
    returning normally after the timeout still counts as a timeout, not a success."""
    q = k(unique_queue)
    raw = single_raw
    mux = ServeMux()
    finished: list[str] = []

    async def stubborn(task: Task) -> None:
        try:
            await anyio.sleep(30)
        except anyio.get_cancelled_exc_class():
            if task.payload == b"keep-waiting":
                await anyio.sleep(30)  # cancelled again at once
                finished.append("kept waiting")
            return  # swallowed: the handler "succeeds" after its timeout
        finished.append("slept")

    mux.handle_func("stubborn", stubborn)
    opt = parse_redis_url(single_redis_url)
    async with Client(opt) as client, serving(Server(opt, fast_config(unique_queue)), mux):
        ids = []
        for payload in (b"keep-waiting", b"return"):
            info = await client.enqueue(Task("stubborn", payload), queue=unique_queue, timeout=1)
            ids.append(info.id)
        for tid in ids:
            await wait_until(in_zset(raw, q("retry"), tid), 8, what="timed-out task in retry")

    assert finished == []
    for tid in ids:
        state, msg = await stored(raw, unique_queue, tid)
        assert state == "retry"
        assert "timed out" in msg.error_msg
        assert msg.retried == 1


@pytest.mark.slow
async def test_os_exit_in_a_handler_kills_the_worker_and_the_lease_recovers_the_task(
    single_redis_url: str, single_raw: RawRedis, unique_queue: str, tmp_path: Path
) -> None:
    """``os._exit`` (like a segfault or the OOM killer) ends the process with no chance to
    report: the task stays active until its lease expires, then any server retries it, with the
    lost attempt counted as a failure."""
    q = k(unique_queue)
    raw = single_raw
    opt = parse_redis_url(single_redis_url)
    async with Client(opt) as client:
        info = await client.enqueue(Task("exits", b"data"), queue=unique_queue, max_retry=3)
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--url", single_redis_url, "--queue", unique_queue],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        with anyio.fail_after(30):
            while proc.poll() is None:
                await anyio.sleep(0.05)
        assert proc.returncode == EXIT_CODE, log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # The dead worker left the task active under a lease nobody extends.
    assert await raw.cmd("LRANGE", q("active"), 0, -1) == [info.id.encode()]
    assert await raw.cmd("ZSCORE", q("lease"), info.id) is not None

    mux = ServeMux()
    ran: list[int] = []

    async def survives(task: Task) -> None:
        ran.append(current_task().retry_count)

    mux.handle_func("exits", survives)
    server = Server(opt, fast_config(unique_queue, lease_duration=2.0, retry_delay_func=lambda n, e, t: 0.0))
    async with serving(server, mux, limit=25):
        await wait_until(gone(raw, q(f"t:{info.id}")), 15, what="the recovered task to run")

    assert ran == [1]  # the second attempt: the lost one was counted
    assert await counter(raw, q("processed")) == 2
    assert await counter(raw, q("failed")) == 1
    assert await raw.cmd("LLEN", q("active")) == 0
    assert await raw.cmd("ZCARD", q("lease")) == 0


# -- the worker process for the os._exit test ----------------------------------------------------


async def _exiting_worker(url: str, queue: str) -> None:
    async def handler(task: Task) -> None:
        os._exit(EXIT_CODE)

    mux = ServeMux()
    mux.handle_func("exits", handler)
    config = Config(concurrency=1, queues={queue: 1}, lease_duration=1.5, heartbeat_interval=0.5)
    await Server(parse_redis_url(url), config).run(mux)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--queue", required=True)
    args = parser.parse_args()
    anyio.run(_exiting_worker, args.url, args.queue)
