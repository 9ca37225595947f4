"""protocol/topology.py reads CLUSTER SHARDS and INFO in every shape redis-py hands them over in.

The shapes below are the ones seen: the server's raw RESP2 reply (flat key/value lists, bytes), RESP3
maps, redis-py 8.1 (str shard keys, slots as one flat list of ints) and redis-py 8.2 (slots as
``(lo, hi)`` tuples). The live test reads the cluster the suite started, through whatever redis-py
version is installed, so a release that changes its callback fails here.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import redis
from conftest import RunningCluster

from asynq_aio import Inspector, RedisClusterClientOpt
from asynq_aio.protocol._redis.transport import Transport
from asynq_aio.protocol.admin import Admin
from asynq_aio.protocol.keys import queue_keys
from asynq_aio.protocol.topology import Shard, ShardNode, parse_cluster_shards, parse_info, shard_for_slot

_M = ShardNode(node_id="aaa", host="127.0.0.1", port=7000, role="master", health="online")
_R = ShardNode(node_id="bbb", host="127.0.0.1", port=7003, role="replica", health="loading")
_EXPECTED = [
    Shard(slot_ranges=((0, 5460), (10000, 10010)), nodes=(_M, _R)),
]


def _node_fields(node: ShardNode, as_bytes: bool) -> list[Any]:
    def t(x: str) -> str | bytes:
        return x.encode() if as_bytes else x

    return [
        t("id"), t(node.node_id), t("port"), node.port, t("ip"), t(node.host), t("endpoint"),
        t(node.host), t("role"), t(node.role), t("replication-offset"), 0, t("health"), t(node.health),
    ]  # fmt: skip


def _as_dict(flat: list[Any]) -> dict[Any, Any]:
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}


# The replica is listed first on purpose: the parser puts the master first.
_RAW_RESP2 = [
    [
        b"slots", [0, 5460, 10000, 10010],
        b"nodes", [_node_fields(_R, True), _node_fields(_M, True)],
    ]
]  # fmt: skip
_RESP3 = [
    {
        b"slots": [0, 5460, 10000, 10010],
        b"nodes": [_as_dict(_node_fields(_R, True)), _as_dict(_node_fields(_M, True))],
    }
]
_REDIS_PY_81 = [
    {
        "slots": [0, 5460, 10000, 10010],
        "nodes": [_as_dict(_node_fields(_R, True)), _as_dict(_node_fields(_M, True))],
    }
]
_REDIS_PY_82 = [
    {
        "slots": [(0, 5460), (10000, 10010)],
        "nodes": [_as_dict(_node_fields(_R, True)), _as_dict(_node_fields(_M, True))],
    }
]
_DECODED = [
    {
        "slots": [["0", "5460"], ["10000", "10010"]],
        "nodes": [_as_dict(_node_fields(_R, False)), _as_dict(_node_fields(_M, False))],
    }
]


@pytest.mark.parametrize(
    "reply",
    [_RAW_RESP2, _RESP3, _REDIS_PY_81, _REDIS_PY_82, _DECODED],
    ids=["raw-resp2", "resp3", "redis-py-8.1", "redis-py-8.2", "decoded-strings"],
)
def test_every_cluster_shards_shape_reads_the_same(reply: Any) -> None:
    shards = parse_cluster_shards(reply)
    assert shards == _EXPECTED
    assert shard_for_slot(shards, 10005) == _EXPECTED[0]
    assert shard_for_slot(shards, 7000) is None
    assert shards[0].master == _M and _M.addr == "127.0.0.1:7000"


def test_tls_port_is_used_when_the_plain_port_is_zero() -> None:
    node = {
        b"id": b"x",
        b"port": 0,
        b"tls-port": 17000,
        b"ip": b"::1",
        b"role": b"master",
        b"health": b"online",
    }
    (shard,) = parse_cluster_shards([{"slots": [(0, 16383)], "nodes": [node]}])
    assert shard.nodes[0].port == 17000 and shard.nodes[0].host == "::1"


@pytest.mark.parametrize(
    "reply, message",
    [
        (b"ERR unknown", "expected a list of shards"),
        ([[b"slots"]], "flat key/value list"),
        ([{"slots": [0, 1, 2], "nodes": []}], "odd number of slot bounds"),
        ([{"slots": [object()], "nodes": []}], "unexpected slot value"),
        ([42], "expected a map"),
    ],
)
def test_malformed_cluster_shards_is_a_clear_error(reply: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_cluster_shards(reply)


def test_info_from_text_and_from_a_parsed_dict() -> None:
    text = (
        "# Server\r\nredis_version:7.0.15\r\nuptime_in_days:3\r\n\r\n# Keyspace\r\ndb0:keys=1,expires=0\r\n"
    )
    assert parse_info(text) == {"redis_version": "7.0.15", "uptime_in_days": "3", "db0": "keys=1,expires=0"}
    assert parse_info(text.encode()) == parse_info(text)
    parsed = {"redis_version": "7.0.15", "uptime_in_days": 3, b"used_memory": 1024}
    assert parse_info(parsed) == {"redis_version": "7.0.15", "uptime_in_days": "3", "used_memory": "1024"}


@pytest.mark.anyio
@pytest.mark.cluster
async def test_live_cluster_shards_cover_every_slot(redis_cluster: RunningCluster) -> None:
    """The installed redis-py's own CLUSTER SHARDS reply parses, and the queue lands where Redis says."""
    transport = Transport.connect(RedisClusterClientOpt(addrs=redis_cluster.addrs))
    try:
        shards = await Admin(transport).cluster_shards()
    finally:
        await transport.aclose()
    host, port = redis_cluster.addrs[0].rsplit(":", 1)
    with redis.Redis(host=host, port=int(port)) as node:  # Redis' own word on the slot
        assert int(node.execute_command("CLUSTER", "KEYSLOT", queue_keys("images").pending)) == 9450
    covered = sorted(r for s in shards for r in s.slot_ranges)
    assert covered[0][0] == 0 and covered[-1][1] == 16383
    assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(covered))
    assert len([s for s in shards if s.master is not None]) == 3
    assert all(n.port > 0 and len(n.node_id) == 40 for s in shards for n in s.nodes)
    async with Inspector(RedisClusterClientOpt(addrs=redis_cluster.addrs)) as insp:
        (loc,) = await insp.cluster_locations(["images"])
        assert loc.slot == 9450 == Inspector.queue_slot("images")
        assert loc.nodes[0].role == "master" and {n.role for n in loc.nodes[1:]} <= {"replica"}
        nodes, cluster_info = await insp.redis_info()
        assert cluster_info["cluster_state"] == "ok"
        assert len(nodes) == 6 and all(n.version != "?" for n in nodes)
