"""Property-based tests of the protobuf codec (asynq_aio/protocol/codec.py).

Example tests (test_go_fixtures.py) pin what Go wrote for 15 concrete records; these check the
codec over the whole input space: every TaskMessage field survives a round trip at its extremes,
any bytes a producer could store either decode or raise MalformedTaskError (never another
exception that would escape the worker), and every Go-written record, corrupted or not, obeys the
same rules. No Redis is needed: the codec is pure.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from gofixtures import b64, task_records
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from asynq_aio._errors import MalformedTaskError
from asynq_aio._task import TaskInfo, TaskState
from asynq_aio.protocol.codec import (
    ServerRecord,
    TaskMessage,
    WorkerRecord,
    decode_fetched_message,
    decode_server_info,
    decode_task_message,
    decode_worker_info,
    encode_server_info,
    encode_worker_info,
    new_task_message,
    task_info,
)

# Pure CPU work, so a few hundred examples cost well under a second each test.
PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

INT32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
# proto3 strings are UTF-8: any Python str without lone surrogates (which cannot be encoded)
TEXT = st.text(st.characters(codec="utf-8"), max_size=40)

GO_MSGS: list[tuple[str, bytes]] = [
    (f"{rec['queue']}/{key}", b64(fields["msg"]))
    for rec in task_records()
    for key, fields in [(rec["hash_key"], rec["hash"]), *rec.get("other_hashes", {}).items()]
    if "msg" in fields
]


@st.composite
def task_messages(draw: st.DrawFn) -> TaskMessage:
    """A TaskMessage with all 15 fields drawn independently, extremes included."""
    msg = new_task_message(
        task_id=draw(TEXT),
        task_type=draw(TEXT),
        payload=draw(st.binary(max_size=200)),
        queue=draw(TEXT),
        max_retry=draw(INT32),
        timeout_s=draw(INT64),
        deadline_unix=draw(INT64),
        unique_key=draw(TEXT),
        retention_s=draw(INT64),
        group=draw(TEXT),
        headers=draw(st.dictionaries(TEXT, TEXT, max_size=5)),
    )
    msg.retried = draw(INT32)
    msg.error_msg = draw(TEXT)
    msg.last_failed_at = draw(INT64)
    msg.completed_at = draw(INT64)
    return msg


def fields_of(msg: TaskMessage) -> dict[str, Any]:
    """Every field by name (defaults included), headers as a plain dict."""
    out: dict[str, Any] = {}
    for fd in TaskMessage.DESCRIPTOR.fields:
        value = getattr(msg, fd.name)
        out[fd.name] = dict(value) if fd.name == "headers" else value
    return out


def test_the_generator_covers_every_field_of_the_wire_message() -> None:
    # if asynq.proto grows a field, the strategy above must learn it, or the round trip proves less
    assert len(TaskMessage.DESCRIPTOR.fields) == 15
    assert set(fields_of(TaskMessage())) == {
        "type",
        "payload",
        "id",
        "queue",
        "retry",
        "retried",
        "error_msg",
        "timeout",
        "deadline",
        "unique_key",
        "last_failed_at",
        "retention",
        "completed_at",
        "group_key",
        "headers",
    }


@PROPS
@given(task_messages())
def test_every_field_survives_encode_and_decode(msg: TaskMessage) -> None:
    data = msg.SerializeToString()
    back = decode_task_message(data)
    assert fields_of(back) == fields_of(msg)
    # deterministic except for map order, which protobuf does not fix (Go does not sort either)
    if len(msg.headers) <= 1:
        assert back.SerializeToString() == data


@PROPS
@given(task_messages())
def test_a_fetched_message_is_accepted_exactly_when_it_names_its_own_queue_and_id(msg: TaskMessage) -> None:
    data = msg.SerializeToString()
    assert fields_of(decode_fetched_message(data, queue=msg.queue, task_id=msg.id)) == fields_of(msg)
    with pytest.raises(MalformedTaskError, match="is stored as"):
        decode_fetched_message(data, queue=msg.queue + "x", task_id=msg.id)
    with pytest.raises(MalformedTaskError, match="is stored as"):
        decode_fetched_message(data, queue=msg.queue, task_id=msg.id + "x")


UNIX_S = st.integers(min_value=0, max_value=253402300799)  # up to 9999-12-31, datetime's limit


@PROPS
@given(
    task_messages(),
    st.sampled_from(list(TaskState)),
    UNIX_S,
    UNIX_S,
    UNIX_S,
    st.integers(min_value=0, max_value=10**9),
    st.integers(min_value=0, max_value=10**9),
)
def test_task_info_reports_what_the_message_says(
    msg: TaskMessage,
    state: TaskState,
    deadline: int,
    last_failed: int,
    completed: int,
    timeout: int,
    retention: int,
) -> None:
    msg.deadline, msg.last_failed_at, msg.completed_at = deadline, last_failed, completed
    msg.timeout, msg.retention = timeout, retention
    info = task_info(decode_task_message(msg.SerializeToString()), state)

    def when(s: int) -> datetime | None:
        return datetime.fromtimestamp(s, tz=UTC) if s else None  # 0 is proto3's "unset"

    assert (info.id, info.queue, info.type, info.payload) == (msg.id, msg.queue, msg.type, msg.payload)
    assert info.headers == dict(msg.headers)
    assert info.state == state
    assert (info.max_retry, info.retried, info.last_err) == (msg.retry, msg.retried, msg.error_msg)
    assert (info.group, info.unique_key) == (msg.group_key, msg.unique_key)
    assert info.deadline == when(deadline)
    assert info.last_failed_at == when(last_failed)
    assert info.completed_at == when(completed)
    assert info.timeout == (timedelta(seconds=timeout) if timeout else None)
    assert info.retention == (timedelta(seconds=retention) if retention else None)
    # built without pydantic's model_construct: it must be the same model as a validated one
    validated = TaskInfo.model_validate(info.model_dump())
    assert info == validated
    assert info.model_fields_set == validated.model_fields_set == set(TaskInfo.model_fields)
    as_json = json.loads(info.model_dump_json())  # binary payloads too: never a serialisation error
    assert as_json["id"] == msg.id
    try:
        text = msg.payload.decode()
    except UnicodeDecodeError:
        pass
    else:
        assert as_json["payload"] == text
        assert TaskInfo.model_validate_json(info.model_dump_json()) == info
    with pytest.raises(ValidationError):  # still frozen
        info.id = "other"  # type: ignore[misc]


def assert_decodes_or_is_malformed(data: bytes) -> None:
    """What the worker relies on: MalformedTaskError (archived) or a message, nothing else."""
    try:
        msg = decode_task_message(data)
    except MalformedTaskError:
        return
    # whatever parsed re-encodes to something that parses to the same message
    assert decode_task_message(msg.SerializeToString()) == msg


@PROPS
@given(st.binary(max_size=300))
def test_arbitrary_bytes_decode_or_raise_malformed(data: bytes) -> None:
    assert_decodes_or_is_malformed(data)


# -- Go-written records ---------------------------------------------------------------------------


def test_the_go_fixtures_hold_task_messages() -> None:
    assert len(GO_MSGS) >= 15  # one per record, plus the extra hashes of group/active records


@pytest.mark.parametrize(("where", "data"), GO_MSGS, ids=[w for w, _ in GO_MSGS])
def test_every_go_record_decodes_as_fetched_and_reports_its_info(where: str, data: bytes) -> None:
    msg = decode_task_message(data)
    assert msg.type and msg.id and msg.queue
    # the worker's own check: Go always writes the queue and ID it stores the record under
    assert decode_fetched_message(data, queue=msg.queue, task_id=msg.id) == msg
    info = task_info(msg, TaskState.PENDING)
    assert (info.id, info.queue, info.type, info.payload) == (msg.id, msg.queue, msg.type, msg.payload)
    assert info.max_retry == msg.retry


@st.composite
def corrupted_go_record(draw: st.DrawFn) -> bytes:
    data = draw(st.sampled_from([d for _, d in GO_MSGS]))
    how = draw(st.sampled_from(["truncate", "flip", "insert", "append"]))
    i = draw(st.integers(min_value=0, max_value=len(data) - 1))
    if how == "truncate":
        return data[:i]
    if how == "flip":
        return data[:i] + bytes([data[i] ^ draw(st.integers(1, 255))]) + data[i + 1 :]
    if how == "insert":
        return data[:i] + draw(st.binary(min_size=1, max_size=8)) + data[i:]
    return data + draw(st.binary(min_size=1, max_size=8))


@PROPS
@given(corrupted_go_record())
def test_corrupted_go_records_decode_or_raise_malformed(data: bytes) -> None:
    assert_decodes_or_is_malformed(data)


# -- heartbeat records ----------------------------------------------------------------------------

MOMENTS = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 1, 1), timezones=st.just(UTC))


@PROPS
@given(
    st.builds(
        ServerRecord,
        host=TEXT,
        pid=INT32,
        server_id=TEXT,
        concurrency=INT32,
        queues=st.dictionaries(TEXT, INT32, max_size=5),
        strict_priority=st.booleans(),
        status=TEXT,
        started=MOMENTS,
        active_worker_count=INT32,
    )
)
def test_server_info_round_trips(rec: ServerRecord) -> None:
    assert decode_server_info(encode_server_info(rec)) == rec


@PROPS
@given(
    st.builds(
        WorkerRecord,
        host=TEXT,
        pid=INT32,
        server_id=TEXT,
        task_id=TEXT,
        task_type=TEXT,
        task_payload=st.binary(max_size=100),
        queue=TEXT,
        started=MOMENTS,
        deadline=MOMENTS,
    )
)
def test_worker_info_round_trips(rec: WorkerRecord) -> None:
    assert decode_worker_info(encode_worker_info(rec)) == rec
