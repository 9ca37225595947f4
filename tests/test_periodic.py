"""PeriodicTaskManager: entries synced from a provider function, on real Redis (single and cluster)."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest
from test_scheduler import fire_unix, heartbeat_entries, pending_ids, tasks_of_type
from typer.testing import CliRunner
from workerproc import RawRedis, wait_until

from asynq_aio import Inspector, RedisClientOpt, Task, parse_redis_url
from asynq_aio._connection import RedisConnOpt
from asynq_aio._periodic import PeriodicTaskConfig, PeriodicTaskManager
from asynq_aio._scheduler import EntryOptions, Scheduler
from asynq_aio.cli.app import app
from asynq_aio.protocol.codec import decode_task_message
from asynq_aio.protocol.keys import queue_keys, scheduler_history_key


@pytest.mark.anyio
async def test_manager_sync_diffs_entries_and_skips_invalid_configs() -> None:
    sched = Scheduler(RedisClientOpt())
    manual = sched.register("@hourly", Task("manual"))
    configs: list[PeriodicTaskConfig] = [
        PeriodicTaskConfig("@daily", Task("a")),
        PeriodicTaskConfig("@daily", Task("a")),  # duplicate: one entry
        PeriodicTaskConfig("@hourly", Task("manual")),  # the app's own entry: not taken over
        PeriodicTaskConfig("bogus", Task("bad")),
    ]

    def provider() -> Sequence[PeriodicTaskConfig]:  # a plain function works too
        return list(configs)

    mgr = PeriodicTaskManager(sched, provider, sync_interval=60)
    r1 = await mgr.sync()
    assert len(r1.added) == 1 and r1.removed == [] and r1.invalid == 1
    a_id = r1.added[0]
    assert {e.id for e in sched.entries()} == {manual, a_id}
    configs[:] = [PeriodicTaskConfig("@daily", Task("b"), EntryOptions(queue="x"))]
    r2 = await mgr.sync()
    assert r2.removed == [a_id] and len(r2.added) == 1
    assert {e.id for e in sched.entries()} == {manual, r2.added[0]}  # the manual entry stays
    assert mgr.entry_ids == set(r2.added)
    assert (await mgr.sync()).added == []  # unchanged config: nothing to do

    def broken() -> Sequence[PeriodicTaskConfig]:
        raise RuntimeError("config store down")

    with pytest.raises(RuntimeError, match="config store down"):
        async with PeriodicTaskManager(sched, broken).serve():
            pass  # pragma: no cover - the first sync fails before the body runs


@pytest.mark.anyio
async def test_a_failing_provider_keeps_the_entries(caplog: pytest.LogCaptureFixture) -> None:
    sched = Scheduler(RedisClientOpt())
    calls = 0

    async def flaky() -> Sequence[PeriodicTaskConfig]:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise ConnectionError("config database unreachable")
        return [PeriodicTaskConfig("@daily", Task("kept"))]

    mgr = PeriodicTaskManager(sched, flaky, sync_interval=0.01)
    (kept,) = (await mgr.sync()).added
    with pytest.raises(ConnectionError):
        await mgr.sync()
    assert [e.id for e in sched.entries()] == [kept] and mgr.entry_ids == {kept}
    with caplog.at_level(logging.ERROR, logger="asynq_aio.periodic"):
        await mgr._sync_loop_once()
    assert "keeping the current entries" in caplog.text
    assert [e.id for e in sched.entries()] == [kept]
    with pytest.raises(ValueError, match="sync_interval"):
        PeriodicTaskManager(sched, flaky, sync_interval=0)


@pytest.mark.anyio
async def test_periodic_task_manager_adds_and_removes_entries_as_the_provider_changes(
    opt: RedisConnOpt, raw: RawRedis, unique_queue: str
) -> None:
    q = unique_queue
    configs = [PeriodicTaskConfig("0 0 1 1 *", Task("report:a"), EntryOptions(queue=q))]

    async def provider() -> Sequence[PeriodicTaskConfig]:
        return list(configs)

    sched = Scheduler(opt, heartbeat_interval=30)
    manual = sched.register("0 0 1 1 *", Task("manual"), queue=q)
    mgr = PeriodicTaskManager(sched, provider, sync_interval=0.1)

    async def listed() -> set[str]:
        return {e.id for e in await heartbeat_entries(raw, sched.id)}

    async with mgr.serve():
        (a_id,) = mgr.entry_ids

        async def initial() -> bool:
            return await listed() == {manual, a_id}

        await wait_until(initial, 5, what="the provider's first entry")

        configs.append(PeriodicTaskConfig("@every 1s", Task("report:b"), EntryOptions(queue=q, max_retry=1)))
        configs.append(PeriodicTaskConfig("not a spec", Task("bad")))  # skipped, the rest still syncs

        async def added() -> bool:
            return len(await listed()) == 3

        await wait_until(added, 5, what="the added entry")
        (b_id,) = mgr.entry_ids - {a_id}

        async def b_fired() -> bool:
            return len(await tasks_of_type(raw, q, "report:b")) >= 1

        await wait_until(b_fired, 5, what="a task from the synced @every entry")
        msg = decode_task_message(
            await raw.cmd("HGET", queue_keys(q).task((await pending_ids(raw, q))[0]), "msg")
        )
        assert msg.retry == 1

        configs[:] = [configs[1]]  # the provider drops report:a

        async def removed() -> bool:
            return await listed() == {manual, b_id}

        await wait_until(removed, 5, what="the removed entry")
        assert mgr.entry_ids == {b_id}
    await raw.cmd("DEL", scheduler_history_key(b_id))


@pytest.mark.anyio
async def test_two_managers_on_one_provider_enqueue_each_fire_once(
    opt: RedisConnOpt, raw: RawRedis, unique_queue: str
) -> None:
    q = unique_queue

    def provider() -> Sequence[PeriodicTaskConfig]:
        return [PeriodicTaskConfig("@every 1s", Task("report:both", {"q": q}), EntryOptions(queue=q))]

    one = PeriodicTaskManager(Scheduler(opt), provider, sync_interval=0.2)
    two = PeriodicTaskManager(Scheduler(opt), provider, sync_interval=0.2)
    async with one.serve(), two.serve():
        assert one.entry_ids == two.entry_ids  # same config, same entry ID in every process

        async def three() -> bool:
            return len(await pending_ids(raw, q)) >= 3

        await wait_until(three, 8, what="three fires")
    fired = sorted(fire_unix(i) for i in await pending_ids(raw, q))
    assert fired == list(range(fired[0], fired[0] + len(fired))), f"duplicate or lost fire: {fired}"
    (eid,) = one.entry_ids
    await raw.cmd("DEL", scheduler_history_key(eid))


# -- asynq-aio scheduler MODULE:ATTRIBUTE ------------------------------------------------------------

_ENTRIES_MODULE = """
import os
from asynq_aio import EntryOptions, PeriodicTaskConfig, Task

Q = os.environ.get("CRON_TEST_QUEUE", "default")
entries = [PeriodicTaskConfig("@every 1s", Task("cli:tick", b"t"), EntryOptions(queue=Q, max_retry=1))]
bad_spec = [PeriodicTaskConfig("0 25 * * *", Task("cli:bad"))]
not_a_list = 42
wrong_items = ["@every 1s"]

async def provider():
    return entries
"""


def _cli_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str) -> str:
    (tmp_path / "cronentries_err.py").write_text(_ENTRIES_MODULE)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["scheduler", target, "--redis-url", "redis://127.0.0.1:1/0"])
    assert result.exit_code == 1, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_scheduler_cli_rejects_bad_targets_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def err(target: str) -> str:
        return _cli_error(tmp_path, monkeypatch, target)

    assert "invalid cron spec '0 25 * * *': hour field '25'" in err("cronentries_err:bad_spec")
    assert "not a list of PeriodicTaskConfig" in err("cronentries_err:not_a_list")
    assert "holds a str, not a PeriodicTaskConfig" in err("cronentries_err:wrong_items")
    assert "has no attribute 'nope'" in err("cronentries_err:nope")
    assert "cannot import 'no_such_module_x'" in err("no_such_module_x:entries")
    assert "expected MODULE:ATTRIBUTE" in err("cronentries_err")


@pytest.mark.slow
@pytest.mark.anyio
async def test_scheduler_cli_runs_a_provider_until_sigterm(
    single_redis_url: str, unique_queue: str, tmp_path: Path
) -> None:
    q = unique_queue
    (tmp_path / "cronentries_run.py").write_text(_ENTRIES_MODULE)
    raw = RawRedis("single", single_redis_url, None)
    env = {**os.environ, "CRON_TEST_QUEUE": q, "ASYNQ_REDIS_URL": single_redis_url}
    args = [
        sys.executable,
        "-m",
        "asynq_aio.cli",
        "scheduler",
        "cronentries_run:provider",
        "--sync-interval",
        "1",
    ]
    proc = await anyio.open_process(args, cwd=tmp_path, env=env)
    insp = Inspector(parse_redis_url(single_redis_url))
    try:

        async def ticked() -> bool:
            return len(await tasks_of_type(raw, q, "cli:tick")) >= 1

        await wait_until(ticked, 10, what="a task from the scheduler command")
        entries = await insp.scheduler_entries()
        (mine,) = [e for e in entries if e.task_type == "cli:tick" and f'Queue("{q}")' in e.options]
        proc.send_signal(signal.SIGTERM)
        with anyio.fail_after(10):
            assert await proc.wait() == 0
        gone = await insp.scheduler_entries()
        assert mine.id not in [e.id for e in gone]  # a clean stop withdraws the entries
        await raw.cmd("DEL", scheduler_history_key(mine.id))
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.aclose()
        await raw.aclose()
        await insp.aclose()
