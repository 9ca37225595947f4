"""The one enqueue path's option handling, without Redis: layering defaults, and every producer
(client, typed definitions, scheduler entries, the group aggregator) building the same message."""

from __future__ import annotations

import uuid
from dataclasses import fields
from datetime import UTC, datetime, timedelta

import pytest

from asynq_aio import InvalidTaskError, Task, TaskState
from asynq_aio._options import DEFAULT_MAX_RETRY, DEFAULT_TIMEOUT_S, EnqueueOptions, new_task_id, prepare
from asynq_aio._scheduler import EntryOptions
from asynq_aio.protocol.codec import TIMEOUT_MS_HEADER, exact_deadline, exact_timeout
from asynq_aio.server.aggregator import merged_message

NOW = 1_800_000_000.0


def test_over_fills_only_what_the_call_left_unset() -> None:
    defaults = EnqueueOptions(queue="q", max_retry=3, timeout=10, group="g")
    call = EnqueueOptions(max_retry=0, timeout=None, retention=5)
    merged = call.over(defaults)
    assert merged == EnqueueOptions(queue="q", max_retry=0, timeout=10, retention=5, group="g")
    assert merged.given() == {"queue": "q", "max_retry": 0, "timeout": 10, "retention": 5, "group": "g"}


def test_a_scheduler_entry_carries_every_option_it_has() -> None:
    """EntryOptions must name only enqueue options (a new field there that EnqueueOptions lacks
    fails here, not at the first fire)."""
    entry = EntryOptions(
        queue="q", max_retry=1, timeout=2, deadline=datetime(2030, 1, 1, tzinfo=UTC),
        process_in=3, unique=4, retention=5, group="g",
    )  # fmt: skip
    opts = entry.enqueue_options("e:1")
    assert opts.task_id == "e:1"
    for f in fields(entry):
        assert getattr(opts, f.name) == getattr(entry, f.name)


def test_prepare_builds_the_message_and_the_info() -> None:
    req, info = prepare(Task("t", b"p"), EnqueueOptions(queue="q", unique=60, process_in=30), now=NOW)
    msg = req.msg
    assert (msg.type, msg.payload, msg.queue) == ("t", b"p", "q")
    assert (msg.retry, msg.timeout, msg.deadline) == (DEFAULT_MAX_RETRY, DEFAULT_TIMEOUT_S, 0)
    assert msg.unique_key.startswith("asynq:{q}:unique:t:")
    assert req.process_at == NOW + 30 and req.unique_ttl == 90  # the lock outlives the wait
    assert info.state is TaskState.SCHEDULED and info.id == msg.id
    _, info = prepare(Task("t"), EnqueueOptions(group="g"), now=NOW)
    assert info.state is TaskState.AGGREGATING and info.next_process_at is None


def test_prepare_rejects_bad_input_before_anything_is_written() -> None:
    with pytest.raises(InvalidTaskError, match="not both"):
        prepare(Task("t"), EnqueueOptions(process_in=1, process_at=datetime.now(UTC)), now=NOW)
    with pytest.raises(InvalidTaskError, match="over the limit"):
        prepare(Task("t", b"xx"), EnqueueOptions(), now=NOW, max_payload=1)
    with pytest.raises(InvalidTaskError, match="takes a Task"):
        prepare("t", EnqueueOptions(), now=NOW)  # type: ignore[arg-type]
    with pytest.raises(InvalidTaskError, match="at least one second"):
        prepare(Task("t"), EnqueueOptions(unique=timedelta(milliseconds=300)), now=NOW)


def test_the_aggregator_builds_its_task_as_the_client_does() -> None:
    merged = merged_message(Task("batch", b"123", headers={"k": "v"}), "q", NOW)
    req, _ = prepare(Task("batch", b"123", headers={"k": "v"}), EnqueueOptions(queue="q"), now=NOW)
    merged.id = req.msg.id = "same"
    assert merged == req.msg


def test_sub_second_timeouts_and_deadlines_keep_their_milliseconds_for_our_worker() -> None:
    """Go reads whole seconds, rounded up (never 0: that means "none" to Go); an asynq-aio worker
    reads the exact value from the headers."""
    req, _ = prepare(Task("t"), EnqueueOptions(timeout=0.3), now=NOW)
    assert req.msg.timeout == 1 and req.msg.headers[TIMEOUT_MS_HEADER] == "300"
    assert exact_timeout(req.msg) == 0.3
    at = datetime.fromtimestamp(NOW + 10.25, tz=UTC)
    req, _ = prepare(Task("t"), EnqueueOptions(deadline=at), now=NOW)
    assert req.msg.deadline == int(NOW) + 11 and exact_deadline(req.msg) == NOW + 10.25
    assert req.msg.timeout == 0  # a deadline alone: no default timeout, as Go
    req, _ = prepare(Task("t", headers={"k": "v"}), EnqueueOptions(timeout=2), now=NOW)
    assert dict(req.msg.headers) == {"k": "v"}  # whole seconds need no header
    assert exact_timeout(req.msg) == 2.0


def test_delays_keep_their_fraction_and_too_small_a_timeout_is_an_error() -> None:
    req, info = prepare(Task("t"), EnqueueOptions(process_in=0.5), now=NOW)
    assert req.process_at == NOW + 0.5
    assert info.next_process_at is not None and info.next_process_at.timestamp() == NOW + 0.5
    with pytest.raises(InvalidTaskError, match="at least a millisecond"):
        prepare(Task("t"), EnqueueOptions(timeout=0.0004), now=NOW)
    req, _ = prepare(Task("t"), EnqueueOptions(unique=1.5), now=NOW)
    assert req.unique_ttl == 2  # whole seconds for Redis, rounded up


def test_the_exact_limit_headers_come_from_the_options_only() -> None:
    req, _ = prepare(Task("t", headers={TIMEOUT_MS_HEADER: "100"}), EnqueueOptions(timeout=3), now=NOW)
    assert TIMEOUT_MS_HEADER not in req.msg.headers and exact_timeout(req.msg) == 3.0
    # a foreign producer's header that is not a number: the whole seconds rule
    req.msg.headers[TIMEOUT_MS_HEADER] = "soon"
    assert exact_timeout(req.msg) == 3.0


def test_the_default_timeout_needs_no_header() -> None:
    req, _ = prepare(Task("t"), EnqueueOptions(), now=NOW)
    assert req.msg.timeout == DEFAULT_TIMEOUT_S and not req.msg.headers


def test_task_ids_are_random_version_4_uuids_in_their_canonical_text() -> None:
    """IDs are made by hand from 16 random bytes (cheaper than ``uuid.uuid4()``): each must still be
    what uuid4 prints, version 4 and the RFC variant, and all distinct; over 4,000 IDs every
    variant character (8, 9, a, b) shows up."""
    ids = [new_task_id() for _ in range(4000)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
    assert {text[19] for text in ids} == set("89ab")
    info = prepare(Task("t"), EnqueueOptions(), now=NOW)[1]
    assert uuid.UUID(info.id).version == 4
