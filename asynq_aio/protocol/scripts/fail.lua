-- An attempt failed (or its lease expired): move the task from active to retry or archived.
-- KEYS[1] active  KEYS[2] lease  KEYS[3] task hash  KEYS[4] destination zset (retry or archived)
-- KEYS[5] processed total  KEYS[6] failed total  KEYS[7] processed today  KEYS[8] failed today
-- ARGV[1] id  ARGV[2] updated msg  ARGV[3] destination score  ARGV[4] new state (retry|archived)
-- ARGV[5] count as failure (1/0)  ARGV[6] expire-at for today's counters
-- ARGV[7] only if the lease expired at or before this time (unix s; 0 = no such check: the owner calls)
-- ARGV[8] attempt token from the dequeue ("" = no check: recovery, which owns no attempt)
-- Returns 1 moved, 0 no-op (not active, lease still alive for a recovery call, or another attempt
-- owns the task now).
local lease = redis.call("ZSCORE", KEYS[2], ARGV[1])
if not lease then
  return 0
end
if ARGV[8] ~= "" and redis.call("HGET", KEYS[3], "aio_attempt") ~= ARGV[8] then
  return 0
end
if tonumber(ARGV[7]) > 0 and tonumber(lease) > tonumber(ARGV[7]) then
  return 0
end
if redis.call("EXISTS", KEYS[3]) == 0 then
  -- the hash is gone (deleted by an operator): just clear the bookkeeping
  redis.call("LREM", KEYS[1], 0, ARGV[1])
  redis.call("ZREM", KEYS[2], ARGV[1])
  return 1
end
redis.call("LREM", KEYS[1], 0, ARGV[1])
redis.call("ZREM", KEYS[2], ARGV[1])
redis.call("ZADD", KEYS[4], ARGV[3], ARGV[1])
redis.call("HSET", KEYS[3], "msg", ARGV[2], "state", ARGV[4])
if ARGV[4] == "archived" and redis.call("HEXISTS", KEYS[3], "aio_waiter") == 1 then -- see ack.lua
  redis.call("PUBLISH", "asynq-aio:done", KEYS[3])
end
-- the attempt is over: a late outcome or lease extension of it must find no token
redis.call("HDEL", KEYS[3], "aio_attempt")
if ARGV[5] == "1" then
  redis.call("INCR", KEYS[5])
  redis.call("INCR", KEYS[6])
  if redis.call("INCR", KEYS[7]) == 1 then
    redis.call("EXPIREAT", KEYS[7], ARGV[6])
  end
  if redis.call("INCR", KEYS[8]) == 1 then
    redis.call("EXPIREAT", KEYS[8], ARGV[6])
  end
end
return 1
