"""The reply helpers of protocol/replies.py against a real Redis: NamedBatch reads replies by name."""

from __future__ import annotations

import pytest
from workerproc import RawRedis

from asynq_aio import Client
from asynq_aio.protocol._redis.ops import Op
from asynq_aio.protocol.replies import NamedBatch

pytestmark = pytest.mark.anyio


async def test_named_batch_reads_each_reply_by_its_name(
    client: Client, raw: RawRedis, unique_queue: str
) -> None:
    key = f"asynq:{{{unique_queue}}}:named"
    await raw.cmd("RPUSH", key, "a", "b", "c")
    batch = NamedBatch()
    batch.add("length", Op.command("LLEN", key))
    batch.add(("item", 0), Op.command("LINDEX", key, 0))
    batch.add(("item", -1), Op.command("LINDEX", key, -1))
    replies = await batch.run(client._broker.transport)
    assert replies == {"length": 3, ("item", 0): b"a", ("item", -1): b"c"}


async def test_named_batch_rejects_a_name_twice_and_raises_an_error_reply(
    client: Client, raw: RawRedis, unique_queue: str
) -> None:
    key = f"asynq:{{{unique_queue}}}:named"
    await raw.cmd("SET", key, "not a list")
    batch = NamedBatch()
    batch.add("x", Op.command("GET", key))
    with pytest.raises(ValueError, match="already in this batch"):
        batch.add("x", Op.command("GET", key))
    batch.add("wrong type", Op.command("LLEN", key))
    with pytest.raises(Exception, match="WRONGTYPE"):
        await batch.run(client._broker.transport)
    assert await NamedBatch().run(client._broker.transport) == {}
