-- Put an active task back at the head of pending (the next one dequeued): shutdown, lost lease.
-- KEYS[1] active  KEYS[2] lease  KEYS[3] pending  KEYS[4] task hash
-- ARGV[1] id  ARGV[2] now (unix ns)
-- Returns 1 requeued, 0 no-op (not active any more).
if not redis.call("ZSCORE", KEYS[2], ARGV[1]) then
  return 0
end
redis.call("LREM", KEYS[1], 0, ARGV[1])
redis.call("ZREM", KEYS[2], ARGV[1])
if redis.call("EXISTS", KEYS[4]) == 0 then
  return 1
end
redis.call("RPUSH", KEYS[3], ARGV[1])
redis.call("HSET", KEYS[4], "state", "pending", "pending_since", ARGV[2])
return 1
