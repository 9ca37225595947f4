-- A handler succeeded: delete the task, or keep it as completed when it has a retention.
-- KEYS[1] active  KEYS[2] lease  KEYS[3] task hash  KEYS[4] completed  KEYS[5] processed total
-- KEYS[6] processed today  KEYS[7] unique lock (optional)
-- ARGV[1] id  ARGV[2] msg with completed_at ("" = delete)  ARGV[3] completed zset score
-- ARGV[4] expire-at for today's counter (unix s)
-- ARGV[5] attempt token from the dequeue ("" = no check: a caller that owns no attempt)
-- Returns 1 acked, 0 no-op (not active any more: already acked, or recovered by another server,
-- or another attempt owns it now).
if not redis.call("ZSCORE", KEYS[2], ARGV[1]) then
  return 0
end
if ARGV[5] ~= "" and redis.call("HGET", KEYS[3], "aio_attempt") ~= ARGV[5] then
  return 0
end
redis.call("LREM", KEYS[1], 0, ARGV[1])
redis.call("ZREM", KEYS[2], ARGV[1])
-- a caller waits for this task (Client.wait_result set the flag): tell it, before the hash may go
if redis.call("HEXISTS", KEYS[3], "aio_waiter") == 1 then
  redis.call("PUBLISH", "asynq-aio:done", KEYS[3])
end
if ARGV[2] == "" then
  redis.call("DEL", KEYS[3])
else
  redis.call("HSET", KEYS[3], "msg", ARGV[2], "state", "completed")
  redis.call("HDEL", KEYS[3], "aio_attempt")
  redis.call("ZADD", KEYS[4], ARGV[3], ARGV[1])
end
redis.call("INCR", KEYS[5])
if redis.call("INCR", KEYS[6]) == 1 then
  redis.call("EXPIREAT", KEYS[6], ARGV[4])
end
if KEYS[7] and redis.call("GET", KEYS[7]) == ARGV[1] then
  redis.call("DEL", KEYS[7])
end
return 1
