"""The admin CLI (queue, task, group, server, stats, cron, dash) against real Redis, single and cluster:
what each command prints, its --json output, and one-line errors. Go asynq's own CLI output on Go's
data (tests/fixtures/asynq-go-0.26) is the reference for the layouts."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
from conftest import RedisTarget
from gofixtures import load_json, task_record
from google.protobuf.timestamp_pb2 import Timestamp
from test_inspector import Populated, populate, queue_key_names
from typer.testing import CliRunner, Result
from workerproc import RawRedis

from asynq_aio import Client, Task
from asynq_aio.cli.app import app
from asynq_aio.cli.render import fmt_duration, fmt_payload, fmt_time
from asynq_aio.protocol.asynq_pb2 import SchedulerEnqueueEvent, SchedulerEntry
from asynq_aio.protocol.codec import ServerRecord, WorkerRecord
from asynq_aio.protocol.keys import ALL_QUEUES, queue_keys

pytestmark = pytest.mark.anyio

runner = CliRunner()


def env_of(target: RedisTarget) -> dict[str, str | None]:
    if target.kind == "single":
        assert target.url is not None
        return {"ASYNQ_REDIS_URL": target.url, "ASYNQ_CLUSTER_ADDRS": None}
    assert target.addrs is not None
    return {"ASYNQ_CLUSTER_ADDRS": ",".join(target.addrs), "ASYNQ_REDIS_URL": None}


class Cli:
    def __init__(self, target: RedisTarget) -> None:
        self.env = env_of(target)

    async def __call__(self, *args: str, code: int = 0) -> Result:
        result = await anyio.to_thread.run_sync(lambda: runner.invoke(app, list(args), env=self.env))
        assert result.exit_code == code, f"{args}: exit {result.exit_code}\n{result.output}"
        assert "Traceback" not in result.output
        return result

    async def json(self, *args: str) -> Any:
        return json.loads((await self(*args, "--json")).output)

    async def error(self, *args: str) -> str:
        """An expected failure: exit 1 and exactly one line, ``error: ...``."""
        result = await self(*args, code=1)
        lines = [ln for ln in result.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), result.output
        return lines[0]


@pytest.fixture
def cli(redis_target: RedisTarget) -> Cli:
    return Cli(redis_target)


@pytest.fixture
async def pop(client: Client, unique_queue: str) -> Populated:
    return await populate(client, unique_queue)


# Columns are separated by two or more spaces, but Go's time layout ``Mon Jan _2 15:04:05 MST 2006``
# pads a one-digit day with a space (``Sun Dec  6 16:27:22 UTC 2026``): two spaces followed by a
# digit, a space and a clock time are part of the date, not a column break.
_COLUMN_BREAK = re.compile(r"\s{2,}(?!\d \d\d:\d\d:\d\d)")


def cells(line: str) -> list[str]:
    """A table row split into cells."""
    return [c for c in _COLUMN_BREAK.split(line.strip()) if c]


def test_cells_keep_a_space_padded_go_date_whole() -> None:
    row = "abc  t:retry  Sun Dec  6 16:27:22 UTC 2026  boom  Mon Dec 16 01:02:03 UTC 2026"
    assert cells(row) == [
        "abc", "t:retry", "Sun Dec  6 16:27:22 UTC 2026", "boom", "Mon Dec 16 01:02:03 UTC 2026"
    ]  # fmt: skip


def rows(output: str) -> list[list[str]]:
    """The rows of a table printed alone, header first (rule lines dropped)."""
    return [cells(ln) for ln in output.splitlines() if ln.strip() and not set(ln.strip()) <= {"─", "-", " "}]


# -- queue ----------------------------------------------------------------------------------------


async def test_queue_inspect(cli: Cli, pop: Populated) -> None:
    got = await cli.json("queue", "inspect", pop.queue)
    assert {k: got[k] for k in ("size", "groups", "paused", "processed", "failed")} == {
        "size": 11, "groups": 1, "paused": False, "processed": 3, "failed": 2,
    }  # fmt: skip
    counts = {
        s: got[s] for s in ("active", "pending", "aggregating", "scheduled", "retry", "archived", "completed")
    }
    assert counts == {
        "active": 1, "pending": 3, "aggregating": 2, "scheduled": 2, "retry": 1, "archived": 1, "completed": 1
    }  # fmt: skip
    assert got["memory_usage"] > 0 and got["latency"] >= 0

    out = (await cli("queue", "inspect", pop.queue)).output
    lines = out.splitlines()
    # Go's lines, in Go's layout
    for expected in ("Queue Info", f"Name:   {pop.queue}", "Size:   11", "Groups: 1", "Paused: false"):
        assert expected in lines
    i = lines.index("Task Count by State")
    assert cells(lines[i + 1]) == [
        "active",
        "pending",
        "aggregating",
        "scheduled",
        "retry",
        "archived",
        "completed",
    ]
    assert cells(lines[i + 3]) == ["1", "3", "2", "2", "1", "1", "1"]
    i = lines.index(f"Daily Stats {datetime.now(tz=UTC):%Y-%m-%d} UTC")
    assert cells(lines[i + 1]) == ["processed", "failed", "error rate"]
    assert cells(lines[i + 3]) == ["3", "2", "66.67%"]
    assert any(ln.startswith("Latency:") for ln in lines) and any(ln.startswith("Memory:") for ln in lines)

    assert 'queue "nope_q" not found' in await cli.error("queue", "inspect", "nope_q")
    assert "invalid queue name" in await cli.error("queue", "inspect", "bad{q}")


async def test_queue_history(cli: Cli, pop: Populated, raw: RawRedis) -> None:
    yesterday = datetime.now(tz=UTC) - timedelta(days=1)
    await raw.cmd("SET", queue_keys(pop.queue).processed_on(yesterday), 4)
    got = await cli.json("queue", "history", pop.queue, "--days", "3")
    assert [(d["processed"], d["failed"]) for d in got[pop.queue]] == [(3, 2), (4, 0), (0, 0)]
    assert got[pop.queue][1]["date"] == yesterday.date().isoformat()
    table = rows((await cli("queue", "history", pop.queue, "--days", "2")).output)
    assert table[0] == [f"Queue: {pop.queue}"]
    assert table[1] == ["date (UTC)", "processed", "failed", "error rate"]
    assert table[2][1:] == ["3", "2", "66.67%"] and table[3][1:] == ["4", "0", "0.00%"]


async def test_queue_pause_unpause_and_rm(cli: Cli, client: Client, raw: RawRedis, unique_queue: str) -> None:
    await client.enqueue_many([Task("x"), Task("y")], queue=unique_queue, retention=60)
    assert (
        await cli("queue", "pause", unique_queue)
    ).output == f'Successfully paused queue "{unique_queue}"\n'
    assert (await cli.json("queue", "inspect", unique_queue))["paused"] is True
    assert "already paused" in (await cli("queue", "pause", unique_queue)).output
    assert "unpaused" in (await cli("queue", "unpause", unique_queue)).output
    assert (await cli.json("queue", "inspect", unique_queue))["paused"] is False
    assert "not found" in await cli.error("queue", "pause", "nope_q")

    assert "not empty (2 task(s))" in await cli.error("queue", "rm", unique_queue)
    assert unique_queue in await cli.json("queue", "ls")
    out = (await cli("queue", "rm", unique_queue, "--force")).output
    assert out.startswith(f'Successfully removed queue "{unique_queue}"')
    assert unique_queue not in await cli.json("queue", "ls")
    assert await queue_key_names(raw, unique_queue) == []
    assert "not found" in await cli.error("queue", "rm", unique_queue)


async def test_queue_rm_refuses_active_tasks(cli: Cli, pop: Populated, raw: RawRedis) -> None:
    line = await cli.error("queue", "rm", pop.queue, "--force")
    assert "1 active task(s)" in line
    assert await raw.cmd("SISMEMBER", ALL_QUEUES, pop.queue) == 1
    assert (await cli.json("queue", "inspect", pop.queue))["size"] == 11


# -- task -----------------------------------------------------------------------------------------


async def test_task_ls_every_state(cli: Cli, pop: Populated) -> None:
    q = pop.queue
    expected = {
        "pending": pop.pending,
        "active": [pop.active],
        "scheduled": pop.scheduled,
        "retry": [pop.retry],
        "archived": [pop.archived],
        "completed": [pop.completed],
    }
    for state, ids in expected.items():
        got = await cli.json("task", "ls", "--queue", q, "--state", state)
        assert [t["id"] for t in got] == ids, state
        assert {t["state"] for t in got} == {state}
    agg = await cli.json("task", "ls", "-q", q, "-s", "aggregating", "--group", "grp")
    assert sorted(t["id"] for t in agg) == pop.aggregating
    page = await cli.json("task", "ls", "-q", q, "-s", "pending", "--page", "2", "--size", "2")
    assert [t["id"] for t in page] == pop.pending[2:]
    done = (await cli.json("task", "ls", "-q", q, "-s", "completed"))[0]
    assert done["result"] == "the result" and done["payload"] == '{"id":"completed-1"}'
    assert base64.b64decode(done["payload_b64"]) == b'{"id":"completed-1"}'

    # tables: Go's columns for each state
    headers = {
        "pending": ["ID", "Type", "Payload"],
        "active": ["ID", "Type", "Payload", "Orphaned"],
        "scheduled": ["ID", "Type", "Payload", "Process In"],
        "retry": ["ID", "Type", "Payload", "Next Retry", "Last Error", "Last Failed", "Retried", "Max Retry"],
        "archived": ["ID", "Type", "Payload", "Last Failed", "Last Error"],
        "completed": ["ID", "Type", "Payload", "CompletedAt", "Result"],
    }
    for state, header in headers.items():
        table = rows((await cli("task", "ls", "-q", q, "-s", state)).output)
        assert table[0] == header, state
        assert [r[0] for r in table[1:]] == expected[state]
    retry = rows((await cli("task", "ls", "-q", q, "-s", "retry")).output)[1]
    assert retry[1:3] == ["t:retry", '{"id":"retry-1"}'] and re.fullmatch(r"in (59m\d+s|1h0m0s)", retry[3])
    assert retry[4] == "boom" and retry[6:] == ["1", "5"]
    assert re.fullmatch(r"\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d UTC \d{4}", retry[5])
    sched = rows((await cli("task", "ls", "-q", q, "-s", "scheduled")).output)
    assert [r[2] for r in sched[1:]] == ["soon", "late"]
    assert re.fullmatch(r"in (59m\d+s|1h0m0s)", sched[1][3])
    assert re.fullmatch(r"in (1h59m\d+s|2h0m0s)", sched[2][3])
    agg_table = rows((await cli("task", "ls", "-q", q, "-s", "aggregating", "-g", "grp")).output)
    assert agg_table[0] == ["ID", "Type", "Payload", "Group"] and {r[3] for r in agg_table[1:]} == {"grp"}

    empty = await cli("task", "ls", "-q", q, "-s", "aggregating", "-g", "none")
    assert empty.output == f'No aggregating tasks in group "none" of "{q}" queue\n'
    assert "unknown task state 'bogus'" in await cli.error("task", "ls", "-q", q, "-s", "bogus")
    assert "--group" in await cli.error("task", "ls", "-q", q, "-s", "aggregating")
    assert "not found" in await cli.error("task", "ls", "-q", "nope_q", "-s", "pending")


async def test_task_inspect(cli: Cli, pop: Populated) -> None:
    q = pop.queue
    got = await cli.json("task", "inspect", q, pop.retry)
    assert (got["state"], got["retried"], got["max_retry"], got["last_err"]) == ("retry", 1, 5, "boom")
    assert got["next_process_at"] == datetime.fromtimestamp(int(pop.retry_at), tz=UTC).isoformat()

    lines = (await cli("task", "inspect", q, pop.retry)).output.splitlines()
    assert lines[:6] == [
        "Task Info", f"Queue:   {q}", f"ID:      {pop.retry}", "Type:    t:retry", "State:   retry",
        "Retried: 1/5",
    ]  # fmt: skip
    nxt = datetime.fromtimestamp(int(pop.retry_at), tz=UTC)
    pattern = re.escape(f"Next process time: {fmt_time(nxt)} ") + r"\(in (59m\d+s|1h0m0s)\)"
    assert any(re.fullmatch(pattern, ln) for ln in lines), lines
    i = lines.index("Last Failure")
    assert lines[i + 1].startswith("Failed at:     ") and lines[i + 2] == "Error message: boom"

    pending = (await cli("task", "inspect", q, pop.pending[0])).output.splitlines()
    assert "Next process time: now" in pending
    completed = (await cli("task", "inspect", q, pop.completed)).output.splitlines()
    assert "Next process time: n/a" in completed and "Result:       the result" in completed
    active = (await cli("task", "inspect", q, pop.active)).output.splitlines()
    assert "State:   active" in active and "Orphaned: false" in active

    assert f'task "nope" not found in queue "{q}"' in await cli.error("task", "inspect", q, "nope")
    assert 'queue "nope_q" not found' in await cli.error("task", "inspect", "nope_q", "x")


async def test_task_delete_run_archive_cancel(cli: Cli, pop: Populated, raw: RawRedis) -> None:
    q = pop.queue
    k = queue_keys(q)
    assert (await cli("task", "delete", q, pop.scheduled[0])).output == f"Task {pop.scheduled[0]} deleted\n"
    assert await raw.cmd("EXISTS", k.task(pop.scheduled[0])) == 0
    assert "moved to pending" in (await cli("task", "run", q, pop.retry)).output
    assert (await cli.json("task", "inspect", q, pop.retry))["state"] == "pending"
    assert "archived" in (await cli("task", "archive", q, pop.pending[0])).output
    assert (await cli.json("task", "inspect", q, pop.pending[0]))["state"] == "archived"

    assert "is active: cancel it instead" in await cli.error("task", "delete", q, pop.active)
    assert "already pending" in await cli.error("task", "run", q, pop.pending[1])
    assert "already archived" in await cli.error("task", "archive", q, pop.pending[0])
    assert "not found" in await cli.error("task", "delete", q, "nope")
    assert "not found" in await cli.error("task", "run", "nope_q", "nope")

    # the fixture's IDs repeat across this session's queues: name the queue (find-by-ID alone is
    # tested in test_cancel_by_id.py)
    out = (await cli("task", "cancel", "--queue", q, pop.active)).output
    assert out == f"Sent cancelation signal for task {pop.active} (running in queue {q})\n"
    # a waiting task is not running: cancel deletes it and says so (Go's CLI would claim a signal)
    out = (await cli("task", "cancel", "-q", q, pop.scheduled[1])).output
    assert out == f"Deleted task {pop.scheduled[1]} from queue {q}: it was scheduled, not running\n"
    assert await raw.cmd("EXISTS", k.task(pop.scheduled[1])) == 0
    assert "not found in any queue" in await cli.error("task", "cancel", "no-such-id")
    assert "already finished (archived)" in await cli.error("task", "cancel", "-q", q, pop.pending[0])


async def test_task_bulk_commands(cli: Cli, pop: Populated, raw: RawRedis) -> None:
    q = pop.queue
    assert (
        await cli("task", "runall", q, "--state", "scheduled")
    ).output == "2 scheduled tasks moved to pending\n"
    assert (await cli("task", "archiveall", q, "--state", "pending")).output == "5 pending tasks archived\n"
    assert (await cli("task", "deleteall", q, "--state", "archived")).output == "6 archived tasks deleted\n"
    out = (await cli("task", "archiveall", q, "-s", "aggregating", "-g", "grp")).output
    assert out == "2 aggregating tasks archived\n"
    assert await raw.cmd("SMEMBERS", queue_keys(q).groups) == set()
    assert (await cli("task", "runall", q, "-s", "archived")).output == "2 archived tasks moved to pending\n"
    info = await cli.json("queue", "inspect", q)
    assert (info["pending"], info["archived"], info["scheduled"], info["aggregating"]) == (2, 0, 0, 0)
    assert "cannot delete all active tasks" in await cli.error("task", "deleteall", q, "-s", "active")
    assert "--group" in await cli.error("task", "runall", q, "-s", "aggregating")


# -- group, server, cron, stats, dash -------------------------------------------------------------


async def test_group_ls(cli: Cli, pop: Populated, client: Client) -> None:
    await client.enqueue(Task("t:agg"), queue=pop.queue, group="b-group")
    assert await cli.json("group", "ls", pop.queue) == [
        {"group": "b-group", "size": 1},
        {"group": "grp", "size": 2},
    ]
    assert rows((await cli("group", "ls", pop.queue)).output) == [
        ["Group", "Size"],
        ["b-group", "1"],
        ["grp", "2"],
    ]
    assert "not found" in await cli.error("group", "ls", "nope_q")


async def test_server_ls(cli: Cli, client: Client, unique_queue: str) -> None:
    now = datetime.now(tz=UTC).replace(microsecond=0)
    server = ServerRecord(
        host="testhost", pid=4242, server_id=f"srv-{unique_queue}", concurrency=4,
        queues={unique_queue: 3, "other": 1}, strict_priority=False, status="active",
        started=now - timedelta(seconds=42), active_worker_count=1,
    )  # fmt: skip
    worker = WorkerRecord(
        host="testhost", pid=4242, server_id=server.server_id, task_id="task-running", task_type="slow",
        task_payload=b'{"n":1}', queue=unique_queue, started=now - timedelta(seconds=5),
        deadline=now + timedelta(minutes=30),
    )  # fmt: skip
    await client._broker.write_server_state(server, [worker], ttl=30)
    try:
        got = [s for s in await cli.json("server", "ls") if s["id"] == server.server_id]
        assert len(got) == 1
        s = got[0]
        assert (s["host"], s["pid"], s["concurrency"], s["status"]) == ("testhost", 4242, 4, "active")
        assert s["queues"] == {unique_queue: 3, "other": 1}
        assert s["started"] == (now - timedelta(seconds=42)).isoformat()
        (w,) = s["active_workers"]
        assert (w["task_id"], w["task_type"], w["queue"], w["task_payload"]) == (
            "task-running", "slow", unique_queue, '{"n":1}'
        )  # fmt: skip

        table = rows((await cli("server", "ls", "--workers")).output)
        assert table[0] == ["Host", "PID", "State", "Active Workers", "Queues", "Started", "ID"]
        mine = [r for r in table if server.server_id in r]
        assert mine[0][:5] == ["testhost", "4242", "active", "1/4", f"other:1 {unique_queue}:3"]
        assert re.fullmatch(r"4\ds ago", mine[0][5])
        assert any("task-running" in r for r in table)
    finally:
        await client._broker.clear_server_state(server)
    assert server.server_id not in {s["id"] for s in await cli.json("server", "ls")}


def _ts(dt: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(dt)
    return ts


async def test_cron_ls_and_history(cli: Cli, raw: RawRedis, unique_queue: str) -> None:
    now = datetime.now(tz=UTC).replace(microsecond=0)
    eid = f"entry-{unique_queue}"
    entry = SchedulerEntry(
        id=eid, spec="@every 1m", task_type="cron:ping", task_payload=b"{}", enqueue_options=['Queue("q")'],
        next_enqueue_time=_ts(now + timedelta(seconds=60)), prev_enqueue_time=_ts(now),
    )  # fmt: skip
    key = f"asynq:schedulers:{{sched-{unique_queue}}}"
    hist = f"asynq:scheduler_history:{eid}"
    await raw.cmd("RPUSH", key, entry.SerializeToString())
    await raw.cmd("ZADD", "asynq:schedulers", int(time.time()) + 60, key)
    ev = SchedulerEnqueueEvent(task_id="task-1", enqueue_time=_ts(now))
    await raw.cmd("ZADD", hist, int(now.timestamp()), ev.SerializeToString())
    try:
        got = [e for e in await cli.json("cron", "ls") if e["id"] == eid]
        assert got and got[0]["spec"] == "@every 1m" and got[0]["options"] == ['Queue("q")']
        table = rows((await cli("cron", "ls")).output)
        assert table[0] == ["EntryID", "Spec", "Type", "Payload", "Options", "Next Enqueue", "Prev Enqueue"]
        (mine,) = [r for r in table if r[0] == eid]
        assert mine[1:5] == ["@every 1m", "cron:ping", "{}", 'Queue("q")'] and mine[5].startswith("in ")

        events = await cli.json("cron", "history", eid)
        assert events[eid] == [{"task_id": "task-1", "enqueued_at": now.isoformat()}]
        table = rows((await cli("cron", "history", eid)).output)
        assert table == [[f"Entry: {eid}"], ["Enqueued At", "TaskID"], [fmt_time(now), "task-1"]]
    finally:
        await raw.cmd("DEL", key)
        await raw.cmd("DEL", hist)
        await raw.cmd("ZREM", "asynq:schedulers", key)


async def test_stats(cli: Cli, redis_target: RedisTarget, pop: Populated) -> None:
    got = await cli.json("stats")
    (mine,) = [q for q in got["queues"] if q["queue"] == pop.queue]
    assert (mine["size"], mine["pending"], mine["aggregating"]) == (11, 3, 2)
    for state in ("active", "pending", "aggregating", "scheduled", "retry", "archived", "completed"):
        assert got["states"][state] == sum(q[state] for q in got["queues"])
        assert got["states"][state] >= mine[state]
    assert got["daily"]["processed"] >= 3 and got["daily"]["failed"] >= 2
    nodes = got["redis"]["nodes"]
    assert all(n["version"].count(".") == 2 for n in nodes)

    out = (await cli("stats")).output
    lines = out.splitlines()
    for heading in ("Task Count by State", "Task Count by Queue", "Redis Info"):
        assert heading in lines
    assert f"Daily Stats {datetime.now(tz=UTC):%Y-%m-%d} UTC" in lines
    (row,) = [cells(ln) for ln in lines if ln.startswith(pop.queue + " ")]
    assert row == [pop.queue, "11", "1", "3", "2", "2", "1", "1", "1", "false"]
    if redis_target.kind == "cluster":
        assert len(nodes) == 6 and got["redis"]["cluster"]["cluster_state"] == "ok"
        assert "Redis Cluster Info" in lines
        assert sum(1 for ln in lines if " master " in ln) == 3
    else:
        assert len(nodes) == 1 and got["redis"]["cluster"] == {}


async def test_dash_once(cli: Cli, pop: Populated, client: Client) -> None:
    await client._broker.pause(pop.queue)
    out = (await cli("dash", "--once")).output
    lines = out.splitlines()
    assert lines[0].startswith("asynq-aio dash · ")
    header = cells(next(ln for ln in lines if ln.startswith("Queue ")))
    assert header[:4] == ["Queue", "State", "Size", "Pending"] and header[-1] == "Throughput"
    (row,) = [cells(ln) for ln in lines if ln.startswith(pop.queue + " ")]
    assert row[:9] == [pop.queue, "paused", "11", "3", "1", "2", "1", "1", "1"]
    assert row[11:14] == ["3", "2", "66.67%"]
    assert any("servers" in ln and "workers busy" in ln for ln in lines)


# -- Go's data, Go's output -----------------------------------------------------------------------


def go_stdout(*args: str) -> str | None:
    """What Go's ``asynq`` printed for ``args`` on its own data (the last capture of that command)."""
    outs = [r["stdout"] for r in load_json("cli.json") if r["args"][: len(args)] == list(args)]
    return str(outs[-1]) if outs else None


async def load_go_queue(raw: RawRedis, go_queue: str, queue: str) -> dict[str, Any]:
    """Write a Go fixture record's keys verbatim, under our own queue name (``{fx_x}`` -> ``{queue}``)."""
    rec = task_record(go_queue)
    old, new = f"asynq:{{{go_queue}}}:", f"asynq:{{{queue}}}:"

    def rn(key: str) -> str:
        assert key.startswith(old)
        return new + key[len(old) :]

    hashes: Mapping[str, Any] = {rec["hash_key"]: rec["hash"], **rec.get("other_hashes", {})}
    for key, fields in hashes.items():
        for name, value in fields.items():
            await raw.cmd("HSET", rn(key), name, base64.b64decode(value["b64"]))
    for key, members in rec.get("zsets", {}).items():
        for member, score in members.items():
            await raw.cmd("ZADD", rn(key), score, member)
    for key, ids in rec.get("lists", {}).items():
        if ids:
            await raw.cmd("RPUSH", rn(key), *ids)
    for key, names in rec.get("sets", {}).items():
        await raw.cmd("SADD", rn(key), *names)
    for key, meta in rec.get("strings", {}).items():
        await raw.cmd("SET", rn(key), base64.b64decode(meta["value"]["b64"]))
    await raw.cmd("SADD", ALL_QUEUES, queue)
    return rec


def strip_relative(line: str) -> str:
    """Drop what depends on the clock: ``(in 59m15s)`` and ``in 59m16s`` cells."""
    return re.sub(r"\s*\((in [\dhms]+|[\dhms]+ ago)\)", "", line).strip()


GO_CASES = [
    "fx_pending",
    "fx_retry",
    "fx_archived",
    "fx_completed",
    "fx_scheduled",
    "fx_group",
    "fx_opts_all",
]


async def test_go_data_prints_what_go_prints(cli: Cli, raw: RawRedis, unique_queue: str) -> None:
    for n, go_queue in enumerate(GO_CASES):
        queue = f"{unique_queue}_{n}"
        rec = await load_go_queue(raw, go_queue, queue)
        state = rec["hash"]["state"]["utf8"]

        # task inspect: every line Go prints, in order (clock-relative parts aside)
        go_inspect = go_stdout("task", "inspect", "--queue", go_queue, "--id", rec["task_id"])
        assert go_inspect is not None
        go_lines = [strip_relative(ln) for ln in go_inspect.splitlines()]
        ours = [
            strip_relative(ln)
            for ln in (await cli("task", "inspect", queue, rec["task_id"])).output.splitlines()
        ]
        it = iter(ours)
        missing = [ln for ln in go_lines if ln and not any(ln == o for o in it)]
        assert not missing, f"{go_queue}: {missing}\n--- ours:\n" + "\n".join(ours)

        # queue inspect: Go's counts table
        go_queue_inspect = go_stdout("queue", "inspect", go_queue)
        assert go_queue_inspect is not None
        go_q = go_queue_inspect.splitlines()
        our_q = (await cli("queue", "inspect", queue)).output.splitlines()
        i, j = go_q.index("Task Count by State"), our_q.index("Task Count by State")
        assert cells(our_q[j + 1]) == cells(go_q[i + 1]) and cells(our_q[j + 3]) == cells(go_q[i + 3])
        for label in ("Size:", "Groups:", "Paused:"):
            assert [ln for ln in our_q if ln.startswith(label)] == [ln for ln in go_q if ln.startswith(label)]

        # task ls: Go's columns and cells (ours may add columns after Go's)
        args = ["task", "ls", "--queue", go_queue, "--state", state]
        if state == "aggregating":
            args += ["--group", "batch-1"]
        go_ls = go_stdout(*args)
        if go_ls is None:  # Go's CLI was not run on this one
            continue
        go_table = rows(go_ls)
        our_args = ["task", "ls", "-q", queue, "-s", state] + (
            ["-g", "batch-1"] if state == "aggregating" else []
        )
        our_table = rows((await cli(*our_args)).output)
        assert our_table[0][: len(go_table[0])] == go_table[0], go_queue
        clock_cols = {"Process In", "Next Retry"}
        for go_row, our_row in zip(go_table[1:], our_table[1:], strict=True):
            for col, go_cell, our_cell in zip(go_table[0], go_row, our_row, strict=False):
                if col in clock_cols:
                    continue
                if col == "Result" and go_cell == "non-printable bytes":  # Go's label for an empty result
                    assert our_cell in ("", go_cell)
                    continue
                assert our_cell == go_cell, (go_queue, col)

    assert (
        rows((await cli("group", "ls", f"{unique_queue}_{GO_CASES.index('fx_group')}")).output)[1][0]
        == "batch-1"
    )
    for n in range(len(GO_CASES)):
        await cli("queue", "rm", f"{unique_queue}_{n}", "--force")


def test_go_time_and_duration_formats() -> None:
    assert fmt_time(datetime(2026, 11, 23, 11, 23, 53, tzinfo=UTC)) == "Mon Nov 23 11:23:53 UTC 2026"
    assert fmt_time(datetime(2026, 11, 2, 1, 2, 3, tzinfo=UTC)) == "Mon Nov  2 01:02:03 UTC 2026"
    assert fmt_duration(timedelta(hours=4, minutes=35, seconds=22)) == "4h35m22s"
    assert fmt_duration(timedelta(minutes=59, seconds=16)) == "59m16s"
    assert fmt_duration(timedelta(seconds=6)) == "6s"
    assert fmt_payload(b"\x00\xff") == "non-printable bytes" and fmt_payload(b'{"a":1}') == '{"a":1}'
