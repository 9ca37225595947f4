-- Replace the message of a scheduled task, if nobody changed it since the caller read it.
-- KEYS[1] task hash  KEYS[2] scheduled zset
-- ARGV[1] ID  ARGV[2] message the caller read  ARGV[3] new message
-- Returns 1 updated (or already updated by this same call re-sent), 0 not scheduled any more or
-- changed meanwhile (the caller re-reads).
local msg = redis.call("HGET", KEYS[1], "msg")
if msg == ARGV[3] then
  return 1
end
if msg ~= ARGV[2] or redis.call("HGET", KEYS[1], "state") ~= "scheduled"
    or not redis.call("ZSCORE", KEYS[2], ARGV[1]) then
  return 0
end
redis.call("HSET", KEYS[1], "msg", ARGV[3])
return 1
