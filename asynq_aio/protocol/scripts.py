"""The Lua scripts, loaded once from ``scripts/*.lua``."""

from __future__ import annotations

from asynq_aio.protocol._redis.ops import LuaScript

ENQUEUE = LuaScript.load("enqueue")
DEQUEUE = LuaScript.load("dequeue")
DEQUEUE_LIMITED = LuaScript.load("dequeue_limited")
ACK = LuaScript.load("ack")
ACK_MANY = LuaScript.load("ack_many")
FAIL = LuaScript.load("fail")
REQUEUE = LuaScript.load("requeue")
EXTEND_LEASES = LuaScript.load("extend_leases")
WRITE_RESULT = LuaScript.load("write_result")
WATCH_TASK = LuaScript.load("watch_task")
FORWARD = LuaScript.load("forward")
NEXT_DUE = LuaScript.load("next_due")
DELETE_EXPIRED = LuaScript.load("delete_expired")
CLEANUP_DUE = LuaScript.load("cleanup_due")
HEAL_ORPHAN = LuaScript.load("heal_orphan")
HOLDS_TASKS = LuaScript.load("holds_tasks")
SWEEP_STATE = LuaScript.load("sweep_state")
