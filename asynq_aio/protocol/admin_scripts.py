"""The admin Lua scripts (inspector operations), loaded once from ``scripts/admin_*.lua``.

Every one of them takes all the keys it touches in KEYS (task hashes included), checks before its
first write, and is safe to run twice.
"""

from __future__ import annotations

from asynq_aio.protocol._redis.ops import LuaScript

DELETE = LuaScript.load("admin_delete")
RUN = LuaScript.load("admin_run")
ARCHIVE = LuaScript.load("admin_archive")
TRIM_ARCHIVED = LuaScript.load("admin_trim_archived")
UPDATE_PAYLOAD = LuaScript.load("admin_update_payload")
