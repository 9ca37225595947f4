-- Put an active task back at the head of pending (the next one dequeued): shutdown, lost lease.
-- KEYS[1] active  KEYS[2] lease  KEYS[3] pending  KEYS[4] task hash
-- ARGV[1] id  ARGV[2] now (unix ns)  ARGV[3] attempt token from the dequeue ("" = no check)
-- Returns 1 requeued, 0 no-op (not active any more, or another attempt owns it now).
if not redis.call("ZSCORE", KEYS[2], ARGV[1]) then
  return 0
end
if ARGV[3] ~= "" and redis.call("HGET", KEYS[4], "aio_attempt") ~= ARGV[3] then
  return 0
end
redis.call("LREM", KEYS[1], 0, ARGV[1])
redis.call("ZREM", KEYS[2], ARGV[1])
if redis.call("EXISTS", KEYS[4]) == 0 then
  return 1
end
redis.call("RPUSH", KEYS[3], ARGV[1])
redis.call("HSET", KEYS[4], "state", "pending", "pending_since", ARGV[2])
redis.call("HDEL", KEYS[4], "aio_attempt")
return 1
