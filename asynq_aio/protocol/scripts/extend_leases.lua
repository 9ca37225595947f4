-- Extend the leases of running tasks of one queue, each only while its attempt still owns the task.
-- A lease that recovery (ours or Go's) already took, or a task another attempt now runs, is left
-- alone and reported, so the worker cancels that handler instead of carrying on with a task it
-- no longer owns (ZADD XX alone would report success for neither case).
-- KEYS[1] lease  KEYS[1+i] hash of the i-th task
-- ARGV[1] new lease expiry (unix s)  then per task: id, attempt token
-- Returns one 1 (extended) or 0 (lost) per task, in order.
local out = {}
local n = (#ARGV - 1) / 2
for i = 1, n do
  local id = ARGV[2 * i]
  local token = ARGV[2 * i + 1]
  if redis.call("ZSCORE", KEYS[1], id) and redis.call("HGET", KEYS[1 + i], "aio_attempt") == token then
    redis.call("ZADD", KEYS[1], "XX", ARGV[1], id)
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
