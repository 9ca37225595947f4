"""The Lua scripts of group aggregation, loaded once from ``scripts/aggregation_*.lua``."""

from __future__ import annotations

from asynq_aio.protocol._redis.ops import LuaScript

AGGREGATION_CHECK = LuaScript.load("aggregation_check")
AGGREGATION_FINISH = LuaScript.load("aggregation_finish")
AGGREGATION_RECLAIM = LuaScript.load("aggregation_reclaim")
