"""redispy.send_batch (asynq_aio/protocol/_redis/redispy.py), the hot path's shortcut past redis-py's
pipeline, against real servers: replies in order, an error reply kept in its own slot, nodes of a
cluster answered apart, and a batch cancelled mid-read leaving no stale reply for the connection's
next user."""

from __future__ import annotations

import socket

import anyio
import pytest
from conftest import RedisTarget
from faultproxy import fault_proxy
from redis import exceptions as rx
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from test_transport import opt_for

from asynq_aio import RedisClientOpt, parse_redis_url
from asynq_aio.protocol._redis.ops import LuaScript, Op
from asynq_aio.protocol._redis.redispy import _lanes, send_batch
from asynq_aio.protocol._redis.transport import Transport
from asynq_aio.protocol.keys import queue_keys

pytestmark = pytest.mark.anyio

TAG = LuaScript("tag_echo", "return {KEYS[1], ARGV[1]}")
FAILS = LuaScript("fails", "return redis.error_reply('ERR no such thing: ' .. ARGV[1])")
# a script that keeps its node busy for ARGV[1] ms (Redis runs one script at a time)
SLOW = LuaScript(
    "slow",
    "local t = redis.call('TIME'); local until_us = (t[1] * 1000000 + t[2]) + ARGV[1] * 1000\n"
    "repeat t = redis.call('TIME') until (t[1] * 1000000 + t[2]) >= until_us\nreturn ARGV[2]",
)


def _client(tr: Transport) -> Redis | RedisCluster:
    client = tr.client
    assert isinstance(client, Redis | RedisCluster)
    return client


async def _load(tr: Transport, *scripts: LuaScript) -> None:
    """Every script into every master's cache (redis-py sends SCRIPT LOAD to all primaries)."""
    for script in scripts:
        await _client(tr).script_load(script.source)


async def test_replies_come_back_in_order_with_errors_in_their_own_slot(redis_target: RedisTarget) -> None:
    tr = Transport.connect(opt_for(redis_target))
    try:
        await _load(tr, TAG, FAILS)
        queues = [f"direct-{i}" for i in range(12)]  # several slots: several nodes in the cluster
        ops = [Op.eval(TAG, [queue_keys(q).pending], [f"v{i}"]) for i, q in enumerate(queues)]
        ops.insert(5, Op.eval(FAILS, [queue_keys(queues[5]).pending], ["five"]))
        ops.insert(7, Op(("EVALSHA", "0" * 40, 1, queue_keys(queues[6]).pending, "x"), None, 0))
        route = [str(op.args[3] if op.script is None else op.args[0]) for op in ops]
        replies = await send_batch(_client(tr), [op.wire() for op in ops], route)
        assert len(replies) == len(ops)
        assert isinstance(replies[5], rx.ResponseError) and "no such thing: five" in str(replies[5])
        assert isinstance(replies[7], rx.NoScriptError)
        good = [r for i, r in enumerate(replies) if i not in (5, 7)]
        assert [bytes(r[1]) for r in good] == [f"v{i}".encode() for i in range(12)]
        assert [bytes(r[0]).decode() for r in good] == [queue_keys(q).pending for q in queues]
    finally:
        await tr.aclose()


async def test_a_batch_cancelled_mid_read_leaves_no_stale_reply(redis_target: RedisTarget) -> None:
    """The slow reply of a cancelled batch must never be read as the reply of the next batch on
    the same connection (redis-py disconnects a connection whose read was cancelled)."""
    tr = Transport.connect(opt_for(redis_target))
    client = _client(tr)
    key = queue_keys("direct-cancel").pending
    try:
        await _load(tr, SLOW, TAG)
        with anyio.move_on_after(0.05) as scope:
            await send_batch(client, [Op.eval(SLOW, [key], [300, "stale"]).wire()], [key])
        assert scope.cancelled_caught
        for i in range(5):
            (reply,) = await send_batch(client, [Op.eval(TAG, [key], [f"fresh{i}"]).wire()], [key])
            assert bytes(reply[1]) == f"fresh{i}".encode()
    finally:
        await tr.aclose()


async def test_transport_scripts_go_direct_and_survive_a_script_cache_flush(
    redis_target: RedisTarget,
) -> None:
    """Script calls through the transport (sent by send_batch) on nodes that lost their scripts: the
    NOSCRIPT reply comes back in its slot and the transport re-sends the call as EVAL."""
    tr = Transport.connect(opt_for(redis_target))
    client = _client(tr)
    try:
        nodes = client.get_nodes() if isinstance(client, RedisCluster) else [None]
        for node in nodes:
            if node is None:
                await tr.call("SCRIPT", "FLUSH")
            else:
                await client.execute_command("SCRIPT FLUSH", target_nodes=node)
        key = queue_keys("direct-flush").pending
        assert bytes((await tr.script(TAG, [key], ["one"]))[1]) == b"one"
        ops = [Op.eval(TAG, [queue_keys(f"direct-flush-{i}").pending], [str(i)]) for i in range(8)]
        assert [bytes(r[1]) for r in await tr.batch(ops)] == [str(i).encode() for i in range(8)]
    finally:
        await tr.aclose()


async def test_a_single_redis_lane_replaces_a_connection_killed_while_idle_and_closes_with_its_transport(
    single_redis_url: str,
) -> None:
    """On a single Redis the batches go on connections of their own (not borrowed from redis-py's
    pool each time). One the server closed while it sat idle must be found dead before it is used
    (the batch succeeds at once, with no error to retry), and closing the transport closes them."""
    tr = Transport.connect(parse_redis_url(single_redis_url))
    client = _client(tr)
    key = queue_keys("direct-lane").pending
    try:
        await _load(tr, TAG)
        (first,) = await send_batch(client, [("CLIENT", "ID")], [key])
        assert await tr.call("CLIENT", "KILL", "ID", first) == 1
        await anyio.sleep(1.2)  # idle for longer than the lane's probe threshold
        (reply,) = await send_batch(client, [Op.eval(TAG, [key], ["after-kill"]).wire()], [key])
        assert bytes(reply[1]) == b"after-kill"
        (second,) = await send_batch(client, [("CLIENT", "ID")], [key])
        assert second != first
    finally:
        await tr.aclose()
    raw = Redis.from_url(single_redis_url)
    try:
        ids = {int(c["id"]) for c in await raw.client_list()}
    finally:
        await raw.aclose()
    assert second not in ids


async def test_a_single_redis_lane_keeps_one_connection_object_while_redis_is_down() -> None:
    """Every batch sent while Redis is down fails to connect; the lane must reuse its connection
    object for the next attempt, not make a new one each time (an outage of hours would pile them up)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket is closed
    tr = Transport.connect(parse_redis_url(f"redis://127.0.0.1:{port}/0"))
    client = _client(tr)
    key = queue_keys("direct-down").pending
    try:
        for _ in range(20):
            with pytest.raises(rx.ConnectionError):
                await send_batch(client, [("PING",)], [key])
        assert isinstance(client, Redis)
        assert len(_lanes[client]._made) == 1
    finally:
        await tr.aclose()


async def test_a_write_into_a_stalled_node_times_out_and_leaves_the_connection_closed(
    single_redis_url: str,
) -> None:
    """A batch bigger than the socket buffers, sent to a node that reads nothing (stalled), cannot be
    written in full: the write must give up after the read timeout with redis-py's TimeoutError and
    close the connection (half a command is on the wire), not wait for the node for ever. Once the
    node runs again, the next batch goes through on a new connection."""
    url = parse_redis_url(single_redis_url)
    assert isinstance(url, RedisClientOpt)
    host, port = url.addr.rsplit(":", 1)
    key = queue_keys("direct-stalled").pending
    with fault_proxy(host, int(port)) as proxy:
        proxied = url.model_copy(update={"addr": f"127.0.0.1:{proxy.port}", "read_timeout": 0.5})
        tr = Transport.connect(proxied)
        client = _client(tr)
        try:
            (before,) = await send_batch(client, [("CLIENT", "ID")], [key])
            proxy.stall()
            big = [("ECHO", b"x" * (1 << 20)) for _ in range(64)]  # 64 MiB: more than any socket buffer
            with anyio.fail_after(30):  # a hang guard, not a speed limit: the timeout is 0.5 s
                with pytest.raises(rx.TimeoutError, match="writing"):
                    await send_batch(client, big, [key] * len(big))
            assert isinstance(client, Redis)
            assert not any(c.is_connected for c in _lanes[client]._made)
            proxy.resume()
            (after,) = await send_batch(client, [("CLIENT", "ID")], [key])
            assert after != before
        finally:
            await tr.aclose()
