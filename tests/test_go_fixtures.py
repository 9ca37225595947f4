"""Compatibility with what Go asynq v0.26 writes, checked against its golden fixtures.

The fixtures (``tests/fixtures/asynq-go-0.26``) record every key, hash field and protobuf message Go
asynq wrote for 15 task states/option combinations, its server heartbeats and its stats counters.
These tests prove that

1. our codec decodes every Go task record field by field (against ``protoc --decode_raw``) and
   re-encodes it to the same bytes;
2. our codec decodes Go's ServerInfo and WorkerInfo heartbeats;
3. for the same inputs, our client (and broker, for the states a server produces) writes the same
   keys, key types, TTLs, hash fields, states and protobuf fields as Go, on a single Redis and on a
   cluster;
4. a Go-written task loaded verbatim into Redis reads correctly with our codec, and our client's ID
   and unique-lock checks respect it;
5. our stats counter key names are Go's.

Every Redis test runs against a real server; nothing is mocked.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, cast

import anyio
import pytest
from conftest import RedisTarget
from gofixtures import (
    FIXTURES_DIR,
    b64,
    enqueue_kwargs,
    hash_bytes,
    load_json,
    message_field_values,
    parse_decode_raw,
    parse_go_options,
    raw_to_field_values,
    task_record,
    task_records,
)
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from asynq_aio import Config, ServeMux, Server, TaskContext, current_task
from asynq_aio._client import Client
from asynq_aio._connection import RedisClusterClientOpt, RedisConnOpt, parse_redis_url, split_addr
from asynq_aio._errors import DuplicateTaskError, TaskIDConflictError
from asynq_aio._task import Task, TaskState
from asynq_aio.protocol.codec import (
    ServerInfo,
    TaskMessage,
    WorkerInfo,
    decode_server_info,
    decode_task_message,
    decode_worker_info,
    encode_server_info,
    encode_worker_info,
    task_info,
)
from asynq_aio.protocol.keys import (
    ALL_QUEUES,
    ALL_SERVERS,
    ALL_WORKERS,
    queue_from_key,
    queue_keys,
    server_info_key,
    workers_key,
)

GO_DATE = "2026-11-23"  # the UTC date of the capture; daily counter keys carry it
SCORE_SLACK_S = 5.0  # our clock vs Go's, for scores relative to "now"
PTTL_SLACK_MS = 5_000
TASK_HASH_FIELDS = {"msg", "state", "pending_since", "unique_key", "group", "result"}


def test_fixtures_are_present() -> None:
    assert FIXTURES_DIR.is_dir(), f"Go fixtures not found at {FIXTURES_DIR}"
    assert len(task_records()) == 15


# ---------------------------------------------------------------------------------------------
# 1. Go task records decode
# ---------------------------------------------------------------------------------------------


def _record_id(rec: dict[str, Any]) -> str:
    return str(rec["queue"])


def _all_go_hashes(rec: dict[str, Any]) -> dict[str, dict[str, bytes]]:
    """Every task hash of a record (the main one and ``other_hashes``), key -> field -> bytes."""
    out = {str(rec["hash_key"]): hash_bytes(rec["hash"])}
    for key, fields in rec.get("other_hashes", {}).items():
        out[key] = hash_bytes(fields)
    return out


@pytest.mark.parametrize("rec", task_records(), ids=_record_id)
def test_go_task_message_decodes_field_by_field(rec: dict[str, Any]) -> None:
    raw = b64(rec["hash"]["msg"])
    msg = decode_task_message(raw)

    expected = raw_to_field_values(parse_decode_raw(rec["msg_decoded"]), TaskMessage)
    assert message_field_values(msg) == expected
    # the same set of present (non-default) fields, by number
    printed_numbers = {num for num, _ in parse_decode_raw(rec["msg_decoded"])}
    assert {fd.number for fd, _ in msg.ListFields()} == printed_numbers
    assert msg.id == rec["task_id"]
    assert msg.queue == rec["queue"]
    assert rec["hash_key"] == queue_keys(rec["queue"]).task(rec["task_id"])


@pytest.mark.parametrize("rec", task_records(), ids=_record_id)
def test_go_task_message_reencodes_to_the_same_bytes(rec: dict[str, Any]) -> None:
    for key, fields in _all_go_hashes(rec).items():
        raw = fields["msg"]
        msg = decode_task_message(raw)
        again = msg.SerializeToString()
        if len(msg.headers) > 1:
            # Go does not sort map entries, so only the decoded message is comparable
            assert decode_task_message(again) == msg, key
            assert dict(decode_task_message(again).headers) == dict(msg.headers)
        else:
            assert again == raw, key


@pytest.mark.parametrize("rec", task_records(), ids=_record_id)
def test_go_task_hash_fields(rec: dict[str, Any]) -> None:
    captured_ns = rec["captured_at_unix_ms"] * 1_000_000
    queue = rec["queue"]
    qk = queue_keys(queue)
    for key, fields in _all_go_hashes(rec).items():
        msg = decode_task_message(fields["msg"])
        assert key == qk.task(msg.id)
        assert msg.queue == queue
        assert set(fields) <= TASK_HASH_FIELDS, key
        assert "result" not in fields  # no Go binary wrote a result
        state = TaskState(fields["state"].decode())

        # pending_since: present exactly for pending tasks, unix ns shortly before the dump
        if state is TaskState.PENDING:
            since = int(fields["pending_since"].decode())
            assert captured_ns - 60 * 10**9 < since <= captured_ns, key
        else:
            assert "pending_since" not in fields, key

        # unique_key: the lock name, equal to msg field 10 and to our key builder's name
        if msg.unique_key:
            assert fields["unique_key"].decode() == msg.unique_key
            assert msg.unique_key == qk.unique(msg.type, msg.payload)
        else:
            assert "unique_key" not in fields, key

        # group: the group name, equal to msg field 14
        if msg.group_key:
            assert fields["group"].decode() == msg.group_key
            assert state is TaskState.AGGREGATING
        else:
            assert "group" not in fields, key

        info = task_info(msg, state)
        assert info.id == msg.id
        assert info.state is state
        assert info.type == rec["go_inputs"]["type"]
        assert info.max_retry == msg.retry
        assert info.unique_key == msg.unique_key
        assert info.group == msg.group_key
        assert info.headers == dict(msg.headers)

    # the main record's state as the description says
    main_state = rec["hash"]["state"]["utf8"]
    expected_state = {
        "fx_scheduled": "scheduled",
        "fx_scheduled_at": "scheduled",
        "fx_retry": "retry",
        "fx_archived": "archived",
        "fx_completed": "completed",
        "fx_group": "aggregating",
        "fx_active": "active",
    }.get(queue, "pending")
    assert main_state == expected_state


@pytest.mark.parametrize("rec", task_records(), ids=_record_id)
def test_go_key_names_are_what_our_key_builder_makes(rec: dict[str, Any]) -> None:
    queue = rec["queue"]
    qk = queue_keys(queue)
    day = datetime(2026, 11, 23, 12, tzinfo=UTC)
    ours = {
        qk.pending: "list",
        qk.active: "list",
        qk.lease: "zset",
        qk.scheduled: "zset",
        qk.retry: "zset",
        qk.archived: "zset",
        qk.completed: "zset",
        qk.paused: "string",
        qk.processed: "string",
        qk.failed: "string",
        qk.processed_on(day): "string",
        qk.failed_on(day): "string",
        qk.groups: "set",
    }
    for fields in _all_go_hashes(rec).values():
        msg = decode_task_message(fields["msg"])
        ours[qk.task(msg.id)] = "hash"
        if msg.unique_key:
            ours[qk.unique(msg.type, msg.payload)] = "string"
        if msg.group_key:
            ours[qk.group(msg.group_key)] = "zset"
    for key, meta in rec["redis_keys"].items():
        assert queue_from_key(key) == queue
        assert key in ours, f"Go key {key} is not a key our key builder makes"
        assert ours[key] == meta["type"], key
    assert queue in rec["global_keys"][ALL_QUEUES]
    assert ALL_QUEUES == "asynq:queues"


def test_go_unique_lock_and_paused_flag_values() -> None:
    rec = task_record("fx_unique")
    lock = queue_keys("fx_unique").unique(rec["go_inputs"]["type"], rec["go_inputs"]["payload"].encode())
    assert lock == "asynq:{fx_unique}:unique:fixture:unique:5c0aba72b55ae6f770c8129dfb9b85a8"
    assert rec["strings"][lock]["value"]["utf8"] == rec["task_id"]
    # Go's base.UniqueKey(qname, tasktype, nil) is "asynq:{q}:unique:t:" (PROTOCOL.md, checked against
    # a real Go Asynq v0.26 client): a Python task without a payload must take the same lock.
    assert queue_keys("q").unique("t", b"") == "asynq:{q}:unique:t:"

    paused = task_record("fx_paused")
    flag = paused["strings"][queue_keys("fx_paused").paused]
    assert flag["pttl_ms"] == -1
    assert abs(int(flag["value"]["utf8"]) - paused["captured_at_unix_ms"] / 1000) < 60


# ---------------------------------------------------------------------------------------------
# 2. Go server heartbeats decode
# ---------------------------------------------------------------------------------------------


def _snapshots() -> list[dict[str, Any]]:
    snaps: list[dict[str, Any]] = load_json("servers.json")["snapshots"]
    assert len(snaps) == 2
    return snaps


def _ts(fields: dict[str, Any]) -> datetime:
    """A decode_raw Timestamp ``{seconds, nanos}`` as a datetime (microseconds, like protobuf's)."""
    return datetime.fromtimestamp(fields["seconds"], tz=UTC) + timedelta(
        microseconds=fields.get("nanos", 0) // 1000
    )


@pytest.mark.parametrize("snap_index", [0, 1])
def test_go_server_info_decodes(snap_index: int) -> None:
    doc = load_json("servers.json")
    snap = _snapshots()[snap_index]
    pid = doc["worker_pid"]
    (member,) = snap[ALL_SERVERS]["members"]
    keys = snap["server_info_keys"]
    assert list(keys) == [member["member"]]
    key = member["member"]
    value = keys[key]
    raw = b64(value["value"])

    rec = decode_server_info(raw)
    assert rec.host == "vm"
    assert rec.pid == pid
    assert rec.concurrency == 2
    assert rec.queues == {"fx_active": 1, "fx_idle": 1}
    assert rec.strict_priority is False
    assert rec.status == "active"
    assert rec.active_worker_count == 2
    assert key == server_info_key(rec.host, rec.pid, rec.server_id)
    started_ms = doc["worker_started_at_unix_ms"]
    assert abs(rec.started.timestamp() * 1000 - started_ms) < 1000

    expected = raw_to_field_values(parse_decode_raw(value["decode_raw"]), ServerInfo)
    assert expected["host"] == rec.host
    assert expected["pid"] == rec.pid
    assert expected["server_id"] == rec.server_id
    assert expected["concurrency"] == rec.concurrency
    assert expected["queues"] == rec.queues
    assert expected["status"] == rec.status
    assert expected["active_worker_count"] == rec.active_worker_count
    assert "strict_priority" not in expected  # false is left out on the wire
    assert _ts(expected["start_time"]) == rec.started

    # our encoder writes a message that decodes to the same record (nanos below 1 us aside)
    assert decode_server_info(encode_server_info(rec)) == rec
    ours = ServerInfo()
    ours.ParseFromString(encode_server_info(rec))
    assert {fd.name for fd, _ in ours.ListFields()} == set(expected)


@pytest.mark.parametrize("snap_index", [0, 1])
def test_go_worker_info_decodes(snap_index: int) -> None:
    doc = load_json("servers.json")
    snap = _snapshots()[snap_index]
    pid = doc["worker_pid"]
    (server_key,) = snap["server_info_keys"]
    server = decode_server_info(b64(snap["server_info_keys"][server_key]["value"]))
    (wmember,) = snap[ALL_WORKERS]["members"]
    wkey = wmember["member"]
    assert wkey == workers_key("vm", pid, server.server_id)
    fields = snap["worker_keys"][wkey]["fields"]
    assert set(fields) == set(snap["asynq:{fx_active}:active"])
    assert len(fields) == 2

    for task_id, value in fields.items():
        rec = decode_worker_info(b64(value))
        assert rec.host == "vm"
        assert rec.pid == pid
        assert rec.server_id == server.server_id
        assert rec.task_id == task_id
        assert rec.task_type == "fixture:slow"
        assert rec.queue == "fx_active"
        assert json.loads(rec.task_payload)["state"] == "active"
        # Deadline = start + Timeout (30 min); Go computes both from separate clock reads, so the
        # nanoseconds differ by a few dozen
        assert abs((rec.deadline - rec.started) - timedelta(seconds=1800)) < timedelta(milliseconds=1)

        expected = raw_to_field_values(parse_decode_raw(value["decode_raw"]), WorkerInfo)
        assert expected["task_id"] == rec.task_id
        assert expected["task_type"] == rec.task_type
        assert expected["task_payload"] == rec.task_payload
        assert expected["queue"] == rec.queue
        assert expected["server_id"] == rec.server_id
        assert _ts(expected["start_time"]) == rec.started
        assert _ts(expected["deadline"]) == rec.deadline
        assert expected["deadline"]["seconds"] - expected["start_time"]["seconds"] == 1800

        assert decode_worker_info(encode_worker_info(rec)) == rec


def test_go_heartbeat_scores_and_ttls() -> None:
    for snap in _snapshots():
        for zkey in (ALL_SERVERS, ALL_WORKERS):
            (m,) = snap[zkey]["members"]
            assert 0 < m["score_minus_now_s"] <= 10
        for value in snap["server_info_keys"].values():
            assert 0 < value["pttl_ms"] <= 10_000
    assert load_json("servers.json")["after_worker_exit"]["server_and_worker_keys_left"] == {}


# ---------------------------------------------------------------------------------------------
# Redis access for the write-side tests
# ---------------------------------------------------------------------------------------------


class RawRedis:
    """Plain redis-py access to read back what our code wrote (bytes in, bytes out)."""

    def __init__(self, target: RedisTarget) -> None:
        self.r: Redis | RedisCluster
        if target.kind == "single":
            assert target.url is not None
            self.r = Redis.from_url(target.url)
        else:
            assert target.addrs is not None
            self.r = RedisCluster(startup_nodes=[ClusterNode(*split_addr(a)) for a in target.addrs])

    async def aclose(self) -> None:
        await self.r.aclose()

    async def cmd(self, *args: Any) -> Any:
        execute: Callable[..., Awaitable[Any]] = self.r.execute_command
        return await execute(*args)

    async def queue_key_names(self, queue: str) -> set[str]:
        """Every ``asynq:{queue}:*`` key: KEYS on the one node that owns the queue's slot."""
        pattern = f"asynq:{{{queue}}}:*"
        if isinstance(self.r, RedisCluster):
            await self.r.initialize()
            node = self.r.get_node_from_key(queue_keys(queue).pending)
            keys = await self.r.execute_command("KEYS", pattern, target_nodes=node)
        else:
            keys = await self.cmd("KEYS", pattern)
        # asynq-aio's enqueue fences (aio:fence:<producer>:<epoch>, expiring) are not part of
        # Go's layout; test_client checks them on their own
        return {_s(k) for k in keys if b":aio:fence:" not in k}

    async def hgetall(self, key: str) -> dict[str, bytes]:
        raw: dict[bytes, bytes] = cast(Any, await self.r.hgetall(key))
        return {_s(k): v for k, v in raw.items()}

    async def zscores(self, key: str) -> dict[str, float]:
        pairs: list[tuple[bytes, float]] = cast(Any, await self.r.zrange(key, 0, -1, withscores=True))
        return {_s(m): float(s) for m, s in pairs}

    async def lrange(self, key: str) -> list[str]:
        return [_s(x) for x in await self.r.lrange(key, 0, -1)]

    async def smembers(self, key: str) -> set[str]:
        return {_s(x) for x in await self.r.smembers(key)}

    async def delete_queue(self, queue: str) -> None:
        for key in await self.queue_key_names(queue):
            await self.cmd("DEL", key)


def _s(x: bytes | str) -> str:
    return x.decode() if isinstance(x, bytes) else x


@asynccontextmanager
async def _connect(target: RedisTarget) -> AsyncIterator[tuple[Client, RawRedis]]:
    if target.kind == "single":
        assert target.url is not None
        client = Client(parse_redis_url(target.url))
    else:
        assert target.addrs is not None
        client = Client(RedisClusterClientOpt(addrs=target.addrs))
    raw = RawRedis(target)
    try:
        yield client, raw
    finally:
        await client.aclose()
        await raw.aclose()


# ---------------------------------------------------------------------------------------------
# 3. What we write for the same inputs is what Go wrote
# ---------------------------------------------------------------------------------------------

_ENQUEUED_ID = re.compile(r"^enqueued id=(\S+) ")


def _go_task_order(rec: dict[str, Any]) -> list[str]:
    """The record's task IDs in Go's enqueue order."""
    ids: list[str] = []
    for cmd in rec["go_commands"]:
        for line in (cmd.get("stdout") or "").splitlines():
            m = _ENQUEUED_ID.match(line)
            if m:
                ids.append(m.group(1))
    if ids:
        return ids
    return list(rec["go_inputs"].get("task_ids", [rec["task_id"]]))


class Mapping:
    """Translates Go's names (queue ``fx_*``, task IDs, capture date) into ours."""

    def __init__(self, go_queue: str, our_queue: str, id_map: dict[str, str], our_date: str) -> None:
        self.go_prefix = f"asynq:{{{go_queue}}}:"
        self.our = queue_keys(our_queue)
        self.our_queue = our_queue
        self.ids = id_map
        self.date = our_date

    def key(self, go_key: str) -> str:
        assert go_key.startswith(self.go_prefix), go_key
        suffix = go_key[len(self.go_prefix) :]
        if suffix.startswith("t:"):
            suffix = "t:" + self.ids[suffix[2:]]
        suffix = suffix.replace(GO_DATE, self.date)
        return self.our.prefix + suffix

    def msg_values(self, go_msg: TaskMessage) -> dict[str, Any]:
        values = message_field_values(go_msg)
        values["id"] = self.ids[go_msg.id]
        values["queue"] = self.our_queue
        if "unique_key" in values:
            values["unique_key"] = self.key(values["unique_key"])
        return values


def _is_daily(key: str) -> bool:
    return re.search(r":(processed|failed):\d{4}-\d{2}-\d{2}$", key) is not None


async def _assert_same_layout(
    rec: dict[str, Any],
    raw: RawRedis,
    m: Mapping,
    *,
    t0: float,
    exact_scores: dict[str, float] | None = None,
) -> None:
    """Compare every key Go wrote for ``rec`` with ours: names, types, TTLs, contents."""
    t1 = time.time()
    go_captured_s = rec["captured_at_unix_ms"] / 1000
    exact_scores = exact_scores or {}

    # same key names (mapped) and types
    expected_keys = {m.key(k): meta for k, meta in rec["redis_keys"].items()}
    ours = await raw.queue_key_names(m.our_queue)
    assert ours == set(expected_keys)
    for key, meta in expected_keys.items():
        assert _s(await raw.cmd("TYPE", key)) == meta["type"], key
        pttl = int(await raw.cmd("PTTL", key))
        if meta["pttl_ms"] == -1:
            assert pttl == -1, key
        elif _is_daily(key):
            # Go: EXPIREAT creation + 90 days; we: the start of that UTC day + 90 days
            assert 89 * 86_400_000 - PTTL_SLACK_MS < pttl <= 90 * 86_400_000, (key, pttl)
        else:
            assert abs(pttl - meta["pttl_ms"]) <= PTTL_SLACK_MS, (key, pttl, meta["pttl_ms"])

    # task hashes: same field names and values
    for go_key, go_fields in _all_go_hashes(rec).items():
        key = m.key(go_key)
        fields = await raw.hgetall(key)
        # the one field we add: the attempt token while a task is active (Go ignores it)
        if fields.get("state") == b"active":
            assert fields.pop("aio_attempt", None) is not None, key
        assert set(fields) == set(go_fields), key
        assert fields["state"] == go_fields["state"], key
        if "group" in go_fields:
            assert fields["group"] == go_fields["group"]
        if "unique_key" in go_fields:
            assert fields["unique_key"].decode() == m.key(go_fields["unique_key"].decode())
        if "pending_since" in go_fields:
            since = int(fields["pending_since"])
            assert int((t0 - 1) * 1e9) <= since <= int((t1 + 1) * 1e9), key
        go_msg = decode_task_message(go_fields["msg"])
        our_msg = decode_task_message(fields["msg"])
        expected = m.msg_values(go_msg)
        actual = message_field_values(our_msg)
        assert set(actual) == set(expected), key
        for name in ("last_failed_at", "completed_at"):  # times: our clock, not Go's
            if name in expected:
                assert t0 - 1 <= actual[name] <= t1 + 1, name
                expected[name] = actual[name]
        assert actual == expected, key

    # zsets: same members (mapped), scores as far from "now" as Go's were (or exactly as given)
    for go_key, members in rec["zsets"].items():
        key = m.key(go_key)
        scores = await raw.zscores(key)
        assert set(scores) == {m.ids[i] for i in members}, key
        for go_id, go_score in members.items():
            ours_score = scores[m.ids[go_id]]
            # Go writes whole seconds; ours keep milliseconds (process_in=0.5 is due in half a
            # second), which Go's forwarder and inspector read as well (tests/test_go_live.py)
            assert ours_score == round(ours_score, 3), "scores are unix seconds to the millisecond"
            if key in exact_scores:
                assert ours_score == exact_scores[key], key
            else:
                delay = go_score - go_captured_s
                assert t0 + delay - SCORE_SLACK_S <= ours_score <= t1 + delay + SCORE_SLACK_S, (
                    key,
                    ours_score,
                    delay,
                )

    # lists: same IDs in the same order (head first)
    for go_key, ids in rec["lists"].items():
        assert await raw.lrange(m.key(go_key)) == [m.ids[i] for i in ids], go_key

    # sets (groups)
    for go_key, members in rec.get("sets", {}).items():
        assert await raw.smembers(m.key(go_key)) == set(members), go_key

    # strings: unique lock (value = task id), counters, paused flag
    for go_key, meta in rec.get("strings", {}).items():
        key = m.key(go_key)
        value = _s(await raw.cmd("GET", key))
        go_value = meta["value"]["utf8"]
        if go_value in m.ids:
            assert value == m.ids[go_value], key
        elif key == m.our.paused:
            assert t0 - 1 <= int(value) <= t1 + 1
        else:
            assert value == go_value, key

    # the queue is registered like Go registers it
    assert await raw.cmd("SISMEMBER", ALL_QUEUES, m.our_queue) == 1


async def _enqueue_like_go(
    client: Client, rec: dict[str, Any], queue: str
) -> tuple[dict[str, str], dict[str, float], float]:
    """Enqueue the record's tasks (same type, payload bytes, headers, options) into ``queue``.

    Returns the Go->our task ID map, exact expected zset scores, and the time before the first call.
    """
    go_opts = parse_go_options(rec["go_inputs"]["options"])
    assert go_opts.pop("Queue") == rec["queue"]
    kwargs = enqueue_kwargs(go_opts)
    exact: dict[str, float] = {}
    if "ProcessAt" in go_opts:
        # Go's fixed ProcessAt is in the past by now: use a whole second three hours ahead instead
        at = datetime.fromtimestamp(int(time.time()) + 3 * 3600, tz=UTC)
        kwargs["process_at"] = at
        exact[queue_keys(queue).scheduled] = at.timestamp()
    go_msgs = {
        decode_task_message(f["msg"]).id: decode_task_message(f["msg"]) for f in _all_go_hashes(rec).values()
    }
    order = _go_task_order(rec)
    assert set(order) == set(go_msgs)
    id_map: dict[str, str] = {}
    t0 = time.time()
    for go_id in order:
        go_msg = go_msgs[go_id]
        task = Task(go_msg.type, go_msg.payload, headers=dict(go_msg.headers))
        info = await client.enqueue(task, queue=queue, **kwargs)
        assert info.queue == queue
        assert info.type == go_msg.type
        assert info.payload == go_msg.payload
        id_map[go_id] = info.id
    return id_map, exact, t0


_ENQUEUE_ONLY = [
    "fx_pending",
    "fx_headers",
    "fx_headers_multi",
    "fx_scheduled",
    "fx_scheduled_at",
    "fx_unique",
    "fx_group",
    "fx_opts_timeout",
    "fx_opts_deadline",
    "fx_opts_all",
]


@pytest.mark.anyio
@pytest.mark.parametrize("go_queue", _ENQUEUE_ONLY)
async def test_enqueue_writes_what_go_writes(
    go_queue: str, redis_target: RedisTarget, unique_queue: str
) -> None:
    rec = task_record(go_queue)
    async with _connect(redis_target) as (client, raw):
        id_map, exact, t0 = await _enqueue_like_go(client, rec, unique_queue)
        if go_queue == "fx_opts_all":
            assert id_map == {"fixture-task-0001": "fixture-task-0001"}
        m = Mapping(go_queue, unique_queue, id_map, datetime.now(UTC).strftime("%Y-%m-%d"))
        await _assert_same_layout(rec, raw, m, t0=t0, exact_scores=exact)


@pytest.mark.anyio
async def test_unique_lock_written_like_go(redis_target: RedisTarget, unique_queue: str) -> None:
    """The lock's name, value and TTL, and the duplicate refusal Go's CLI showed."""
    rec = task_record("fx_unique")
    inputs = rec["go_inputs"]
    async with _connect(redis_target) as (client, raw):
        task = Task(inputs["type"], inputs["payload"].encode())
        info = await client.enqueue(task, queue=unique_queue, unique=3600)
        lock = queue_keys(unique_queue).unique(inputs["type"], inputs["payload"].encode())
        assert lock.endswith(":unique:fixture:unique:5c0aba72b55ae6f770c8129dfb9b85a8")
        assert info.unique_key == lock
        assert _s(await raw.cmd("GET", lock)) == info.id
        assert 3600 - 5 <= int(await raw.cmd("TTL", lock)) <= 3600
        with pytest.raises(DuplicateTaskError):
            await client.enqueue(task, queue=unique_queue, unique=3600)
        # the refused enqueue left nothing behind, as in Go
        assert await raw.lrange(queue_keys(unique_queue).pending) == [info.id]
        assert len(await raw.queue_key_names(unique_queue)) == 3


@pytest.mark.anyio
async def test_dequeue_writes_what_go_writes(redis_target: RedisTarget, unique_queue: str) -> None:
    """fx_active: 4 tasks, a concurrency-2 server took 2 of them (active list, lease, no pending_since)."""
    rec = task_record("fx_active")
    async with _connect(redis_target) as (client, raw):
        id_map, _, t0 = await _enqueue_like_go(client, rec, unique_queue)
        lease_until = int(time.time()) + 30
        got = await client._broker.dequeue(unique_queue, 2, lease_until)
        assert isinstance(got, list)
        assert len(got) == 2
        m = Mapping("fx_active", unique_queue, id_map, datetime.now(UTC).strftime("%Y-%m-%d"))
        lease = queue_keys(unique_queue).lease
        await _assert_same_layout(rec, raw, m, t0=t0, exact_scores={lease: lease_until})


@pytest.mark.anyio
@pytest.mark.parametrize("go_queue", ["fx_retry", "fx_archived", "fx_completed", "fx_paused"])
async def test_outcomes_write_what_go_writes(
    go_queue: str, redis_target: RedisTarget, unique_queue: str
) -> None:
    """Retry (delay 1h), archive (MaxRetry 0), completion (Retention 24h) and pause, as Go left them."""
    rec = task_record(go_queue)
    async with _connect(redis_target) as (client, raw):
        broker = client._broker
        id_map, _, t0 = await _enqueue_like_go(client, rec, unique_queue)
        exact: dict[str, float] = {}
        if go_queue == "fx_paused":
            assert await broker.pause(unique_queue)
        else:
            got = await broker.dequeue(unique_queue, 1, time.time() + 30)
            assert isinstance(got, list)
            (d,) = got
            msg = decode_task_message(d.raw)
            now = time.time()
            qk = queue_keys(unique_queue)
            if go_queue == "fx_retry":
                op = broker.fail_op(
                    msg, error="intentional failure", archive=False, retry_at=now + 3600, now=now
                )
                exact[qk.retry] = int(now) + 3600
            elif go_queue == "fx_archived":
                op = broker.fail_op(msg, error="intentional failure", archive=True, now=now)
                exact[qk.archived] = int(now)
            else:
                op = broker.ack_op(msg, now=now)
                exact[qk.completed] = int(now) + 86400
            (reply,) = await broker.run([op])
            assert reply == 1
        m = Mapping(go_queue, unique_queue, id_map, datetime.now(UTC).strftime("%Y-%m-%d"))
        await _assert_same_layout(rec, raw, m, t0=t0, exact_scores=exact)


# ---------------------------------------------------------------------------------------------
# 4. A Go-written task loaded verbatim
# ---------------------------------------------------------------------------------------------


async def _load_verbatim(raw: RawRedis, rec: dict[str, Any]) -> None:
    """Write the record's keys exactly as Go left them, in Go's own queue name (msg field 4 names it)."""
    queue = rec["queue"]
    await raw.delete_queue(queue)
    for key, fields in _all_go_hashes(rec).items():
        await raw.r.hset(key, mapping=fields)  # type: ignore[arg-type]
    for key, ids in rec["lists"].items():
        for task_id in reversed(ids):  # LPUSH the tail first so the head ends up first
            await raw.cmd("LPUSH", key, task_id)
    for key, meta in rec.get("strings", {}).items():
        await raw.cmd("SET", key, b64(meta["value"]))
        if meta["pttl_ms"] > 0:
            await raw.cmd("PEXPIRE", key, meta["pttl_ms"])
    await raw.cmd("SADD", ALL_QUEUES, queue)


@pytest.mark.anyio
async def test_go_pending_task_loaded_verbatim_reads_with_our_codec(redis_target: RedisTarget) -> None:
    rec = task_record("fx_pending")
    queue = rec["queue"]
    qk = queue_keys(queue)
    go_id = rec["task_id"]
    async with _connect(redis_target) as (client, raw):
        try:
            await _load_verbatim(raw, rec)
            assert await raw.lrange(qk.pending) == [go_id]

            fields = await raw.hgetall(qk.task(go_id))
            assert fields["msg"] == b64(rec["hash"]["msg"])
            info = task_info(decode_task_message(fields["msg"]), TaskState(fields["state"].decode()))
            assert info.id == go_id
            assert info.queue == "fx_pending"
            assert info.type == "fixture:pending"
            assert json.loads(info.payload) == {"state": "pending", "i": 0}
            assert info.state is TaskState.PENDING
            assert info.max_retry == 25
            assert info.retried == 0
            assert info.timeout == timedelta(seconds=1800)
            assert info.deadline is None
            assert info.unique_key == ""
            assert info.group == ""
            assert info.headers == {}

            # our client sees Go's task: the same ID is a conflict, and nothing changes
            with pytest.raises(TaskIDConflictError):
                await client.enqueue(Task("fixture:pending", b"{}"), queue=queue, task_id=go_id)
            assert await raw.lrange(qk.pending) == [go_id]
            assert await raw.hgetall(qk.task(go_id)) == fields

            # our broker dequeues Go's task and hands over Go's exact bytes
            got = await client._broker.dequeue(queue, 1, time.time() + 30)
            assert isinstance(got, list)
            (d,) = got
            assert d.task_id == go_id
            assert d.raw == b64(rec["hash"]["msg"])
            after = await raw.hgetall(qk.task(go_id))
            assert set(after) == {"msg", "state", "aio_attempt"}  # our attempt token, ignored by Go
            assert after["aio_attempt"].decode() == d.attempt
            assert after["state"] == b"active"
        finally:
            await raw.delete_queue(queue)
            await raw.cmd("SREM", ALL_QUEUES, queue)


@pytest.mark.anyio
async def test_go_unique_lock_blocks_our_duplicate(redis_target: RedisTarget) -> None:
    rec = task_record("fx_unique")
    queue = rec["queue"]
    inputs = rec["go_inputs"]
    lock = queue_keys(queue).unique(inputs["type"], inputs["payload"].encode())
    async with _connect(redis_target) as (client, raw):
        try:
            await _load_verbatim(raw, rec)
            info = task_info(
                decode_task_message(b64(rec["hash"]["msg"])), TaskState(rec["hash"]["state"]["utf8"])
            )
            assert info.unique_key == lock
            with pytest.raises(DuplicateTaskError):
                await client.enqueue(
                    Task(inputs["type"], inputs["payload"].encode()), queue=queue, unique=3600
                )
            assert _s(await raw.cmd("GET", lock)) == rec["task_id"]
            assert await raw.lrange(queue_keys(queue).pending) == [rec["task_id"]]
        finally:
            await raw.delete_queue(queue)
            await raw.cmd("SREM", ALL_QUEUES, queue)


@pytest.mark.anyio
async def test_go_pending_task_is_processed_by_our_server(redis_target: RedisTarget) -> None:
    """A Go-written task, byte for byte, is run by our Server and acked the way Go acks it."""
    rec = task_record("fx_pending")
    queue = rec["queue"]
    qk = queue_keys(queue)
    go_id = rec["task_id"]
    if redis_target.kind == "single":
        assert redis_target.url is not None
        opt: RedisConnOpt = parse_redis_url(redis_target.url)
    else:
        assert redis_target.addrs is not None
        opt = RedisClusterClientOpt(addrs=redis_target.addrs)
    seen: list[tuple[Task, TaskContext]] = []
    handled = anyio.Event()

    async def handler(task: Task) -> None:
        seen.append((task, current_task()))
        handled.set()

    mux = ServeMux()
    mux.handle_func("fixture:pending", handler)
    raw = RawRedis(redis_target)
    try:
        await _load_verbatim(raw, rec)
        server = Server(opt, Config(concurrency=2, queues={queue: 1}))
        async with server.serve(mux):
            with anyio.fail_after(15):
                await handled.wait()
            # wait for the ack: the task hash goes (no retention), as Go's ack does
            with anyio.fail_after(15):
                while True:  # polled: nothing signals an ack to an outside observer
                    if not await raw.cmd("EXISTS", qk.task(go_id)):
                        break
                    await anyio.sleep(0.02)

        (task, ctx) = seen[0]
        assert len(seen) == 1
        assert task.type == "fixture:pending"
        assert task.payload == b'{"state":"pending","i":0}'
        assert task.json() == {"state": "pending", "i": 0}
        assert task.headers == {}
        assert ctx.id == go_id
        assert ctx.queue == queue
        assert ctx.max_retry == 25
        assert ctx.retry_count == 0

        assert await raw.lrange(qk.pending) == []
        assert await raw.lrange(qk.active) == []
        assert await raw.zscores(qk.lease) == {}
        today = datetime.now(UTC)
        assert _s(await raw.cmd("GET", qk.processed)) == "1"
        assert _s(await raw.cmd("GET", qk.processed_on(today))) == "1"
        assert await raw.cmd("EXISTS", qk.failed) == 0
        # what remains of the queue is exactly what Go leaves after one success (fx_completed minus
        # the retention-kept task): the two processed counters
        assert await raw.queue_key_names(queue) == {qk.processed, qk.processed_on(today)}
    finally:
        await raw.delete_queue(queue)
        await raw.cmd("SREM", ALL_QUEUES, queue)
        await raw.aclose()


# ---------------------------------------------------------------------------------------------
# 5. Stats counters
# ---------------------------------------------------------------------------------------------


def test_counter_key_names_match_go() -> None:
    stats = load_json("stats.json")
    assert stats["utc_date"] == GO_DATE
    captured = datetime.fromtimestamp(stats["captured_at_unix_ms"] / 1000, tz=UTC)
    days = [
        datetime(2026, 11, 23, tzinfo=UTC),
        captured,
        datetime(2026, 11, 23, 23, 59, 59, tzinfo=UTC),
        # the UTC date counts, not the local one
        datetime(2026, 11, 24, 1, 0, tzinfo=timezone(timedelta(hours=5))),
        datetime(2026, 11, 22, 20, 0, tzinfo=timezone(timedelta(hours=-5))),
    ]
    counters = stats["counters"]
    assert "asynq:{fx_stats}:processed:2026-11-23" in counters
    for key, meta in counters.items():
        queue = queue_from_key(key)
        assert queue is not None
        qk = queue_keys(queue)
        suffix = key[len(qk.prefix) :]
        for day in days:
            ours = {
                "processed": qk.processed,
                "failed": qk.failed,
                f"processed:{GO_DATE}": qk.processed_on(day),
                f"failed:{GO_DATE}": qk.failed_on(day),
            }[suffix]
            assert ours == key
        if ":" in suffix:
            assert 89 * 86400 < meta["ttl_s"] <= 90 * 86400
        else:
            assert meta["ttl_s"] == -1
    assert (
        queue_keys("fx_stats")
        .processed_on(datetime(2026, 11, 24, 0, 0, tzinfo=UTC))
        .endswith(":processed:2026-11-24")
    )
    assert int(counters["asynq:{fx_stats}:processed"]["value"]) == 5
    assert int(counters["asynq:{fx_stats}:failed"]["value"]) == 2


@pytest.mark.anyio
async def test_stats_counters_written_like_go(redis_target: RedisTarget, unique_queue: str) -> None:
    """fx_stats: 3 successes then 2 archived failures (MaxRetry 0) give processed=5, failed=2."""
    stats = load_json("stats.json")
    go_queue = "fx_stats"
    async with _connect(redis_target) as (client, raw):
        broker = client._broker
        archived: list[str] = []
        for ok, n in ((True, 3), (False, 2)):
            for i in range(n):
                payload = {"stats": "ok" if ok else "fail", "i": i}
                info = await client.enqueue(Task("fixture:stats", payload), queue=unique_queue, max_retry=0)
                if not ok:
                    archived.append(info.id)
            got = await broker.dequeue(unique_queue, n, time.time() + 30)
            assert isinstance(got, list)
            assert len(got) == n
            ops = [
                broker.ack_op(decode_task_message(d.raw))
                if ok
                else broker.fail_op(decode_task_message(d.raw), error="intentional failure", archive=True)
                for d in got
            ]
            assert await broker.run(ops) == [1] * n

        today = datetime.now(UTC).strftime("%Y-%m-%d")
        go_prefix = f"asynq:{{{go_queue}}}:"
        qk = queue_keys(unique_queue)
        # Go's key set with its two archived task IDs replaced by ours
        go_ids = [
            k[len(go_prefix) + 2 :] for k in stats["fx_stats_all_keys"] if k.startswith(go_prefix + "t:")
        ]
        m = Mapping(go_queue, unique_queue, dict(zip(go_ids, archived, strict=True)), today)
        expected = {m.key(k): t for k, t in stats["fx_stats_all_keys"].items()}
        assert await raw.queue_key_names(unique_queue) == set(expected)
        for key, kind in expected.items():
            assert _s(await raw.cmd("TYPE", key)) == kind, key
        for go_key, meta in stats["counters"].items():
            if not go_key.startswith(go_prefix):
                continue
            key = m.key(go_key)
            assert _s(await raw.cmd("GET", key)) == meta["value"], key
            ttl = int(await raw.cmd("TTL", key))
            if meta["ttl_s"] == -1:
                assert ttl == -1, key
            else:
                assert 0 < ttl <= 90 * 86400, key
        now = datetime.now(UTC)
        assert {qk.processed, qk.failed, qk.processed_on(now), qk.failed_on(now)} <= set(expected)
