-- A caller starts waiting for a task's outcome: flag the hash (field aio_waiter, ignored by Go) so
-- the script that completes or archives it publishes on asynq-aio:done, and report its state now,
-- so an outcome that came before the flag is not waited for.
-- KEYS[1] task hash
-- Returns the state ("" when the task does not exist; nothing is written then).
local state = redis.call("HGET", KEYS[1], "state")
if not state then
  return ""
end
redis.call("HSET", KEYS[1], "aio_waiter", "1")
return state
